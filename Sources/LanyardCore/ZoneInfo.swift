#if canImport(Glibc)
import Glibc
#endif

/// A named time zone read from the system's tz database (`/usr/share/zoneinfo`,
/// Debian's tzdata): its UTC offset at any instant, from the file's transitions and,
/// after the last of them, its POSIX TZ rule (RFC 8536). What a grant's `window`
/// reads local time with, without Foundation's ICU in the daemon.
public struct ZoneInfo: Sendable, Equatable {
    public let identifier: String
    /// Transition instants (UTC seconds), ascending, and the offset (seconds east of UTC) from each on.
    let transitions: [Int64]
    let offsets: [Int32]
    /// The offset before the first transition (local time type 0).
    let initialOffset: Int32
    /// The rule after the last transition, from the file's footer.
    let rule: Rule?

    public static let directory = "/usr/share/zoneinfo"

    /// The zone `identifier` (`Europe/Berlin`, `UTC`), or nil when the name is not a
    /// plain zone name or the database has no valid file for it.
    public init?(identifier: String, directory: String = ZoneInfo.directory) {
        guard Self.isZoneName(identifier), let bytes = Self.contents(of: "\(directory)/\(identifier)") else { return nil }
        self.init(identifier: identifier, tzif: bytes)
    }

    /// A zone from the bytes of a TZif file.
    public init?(identifier: String, tzif: [UInt8]) {
        var r = ByteReader(bytes: tzif)
        guard let v1 = r.header(), r.skip(v1.dataLength(timeSize: 4)) else { return nil }
        var header = v1
        var timeSize = 4
        if v1.version >= 2 {  // the 64-bit data that follows the 32-bit
            guard let v2 = r.header() else { return nil }
            header = v2
            timeSize = 8
        }
        guard header.dataLength(timeSize: timeSize) <= tzif.count else { return nil }
        var transitions: [Int64] = []
        transitions.reserveCapacity(header.timeCount)
        for _ in 0..<header.timeCount {
            guard let t = timeSize == 8 ? r.int64() : r.int32().map(Int64.init) else { return nil }
            transitions.append(t)
        }
        var typeIndex: [Int] = []
        for _ in 0..<header.timeCount {
            guard let i = r.byte(), Int(i) < header.typeCount else { return nil }
            typeIndex.append(Int(i))
        }
        var typeOffsets: [Int32] = []
        for _ in 0..<header.typeCount {
            guard let off = r.int32(), r.skip(2) else { return nil }  // utoff, then isdst and the name's index
            typeOffsets.append(off)
        }
        // Leap seconds (the right/ zones) are not UTC as the daemon's clock counts it: refused.
        guard header.leapCount == 0, !typeOffsets.isEmpty, r.skip(header.charCount + header.leapCount * (timeSize + 4) + header.stdCount + header.utCount) else { return nil }
        var rule: Rule?
        if header.version >= 2 {
            guard r.byte() == UInt8(ascii: "\n"), let footer = r.line() else { return nil }
            if !footer.isEmpty {
                guard let parsed = Rule(footer) else { return nil }
                rule = parsed
            }
        }
        self.identifier = identifier
        self.transitions = transitions
        self.offsets = typeIndex.map { typeOffsets[$0] }
        self.initialOffset = typeOffsets[0]
        self.rule = rule
    }

    /// Seconds east of UTC at the instant `utc` (Unix seconds).
    public func offset(at utc: Int64) -> Int {
        if let last = transitions.last, utc >= last, let rule { return rule.offset(at: utc) }
        if transitions.isEmpty { return rule?.offset(at: utc) ?? Int(initialOffset) }
        // The last transition at or before `utc`.
        var lo = 0, hi = transitions.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if transitions[mid] <= utc { lo = mid + 1 } else { hi = mid }
        }
        return Int(lo == 0 ? initialOffset : offsets[lo - 1])
    }

    /// `Area/Location` names of letters, digits, `_`, `+`, `-`: never a path out of the database.
    static func isZoneName(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 64 else { return false }
        return s.split(separator: "/", omittingEmptySubsequences: false).allSatisfy { part in
            guard let first = part.utf8.first, first != UInt8(ascii: "-"), first != UInt8(ascii: "+") else { return false }
            return part.utf8.allSatisfy { c in
                (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39)
                    || c == UInt8(ascii: "_") || c == UInt8(ascii: "-") || c == UInt8(ascii: "+")
            }
        }
    }

    static func contents(of path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)  // tzdata links names (UTC -> Etc/UTC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        let limit = 1 << 20
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_size <= limit else { return nil }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
        var filled = 0
        while filled < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + filled, $0.count - filled) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { return nil }
            filled += n
        }
        return bytes
    }
}

extension ZoneInfo {
    /// A POSIX TZ rule (`CET-1CEST,M3.5.0,M10.5.0/3`): a standard offset and, if the
    /// zone keeps daylight time, that offset and the two yearly changes.
    struct Rule: Sendable, Equatable {
        var standard: Int  // seconds east of UTC
        var daylight: Daylight?

        struct Daylight: Sendable, Equatable {
            var offset: Int
            var start: Change  // in local standard time
            var end: Change  // in local daylight time
        }

        /// A day of the year and the local time of day (seconds, may be negative or past 24 h).
        struct Change: Sendable, Equatable {
            enum Day: Sendable, Equatable {
                case julian(Int)  // Jn: 1...365, February 29th never counted
                case zeroBased(Int)  // n: 0...365
                case weekday(month: Int, week: Int, day: Int)  // Mm.w.d: w = 5 is the last
            }
            var day: Day
            var time: Int

            /// The change's instant in `year`, as seconds of local time since the epoch.
            func localSeconds(year: Int) -> Int64 {
                let days: Int64
                switch day {
                case .julian(let n):
                    days = Civil.days(year: year, month: 1, day: 1) + Int64(n - 1) + (Civil.isLeap(year) && n >= 60 ? 1 : 0)
                case .zeroBased(let n):
                    days = Civil.days(year: year, month: 1, day: 1) + Int64(n)
                case .weekday(let month, let week, let weekday):
                    let first = Civil.days(year: year, month: month, day: 1)
                    var dom = 1 + (weekday - Civil.weekday(first) + 7) % 7 + 7 * (week - 1)
                    while dom > Civil.daysIn(year: year, month: month) { dom -= 7 }
                    days = first + Int64(dom - 1)
                }
                return days * 86_400 + Int64(time)
            }
        }

        /// The offset of the last change at or before `utc`, among those of its year and the
        /// years beside it: a change may fall in another UTC year than its local one, and a
        /// rule may keep daylight time all year (`EST5EDT,0/0,J365/25`: a year's end is the
        /// next one's start, which wins).
        func offset(at utc: Int64) -> Int {
            guard let dst = daylight else { return standard }
            let year = Civil.year(ofDay: utc >= 0 ? utc / 86_400 : (utc - 86_399) / 86_400)
            var last: (at: Int64, offset: Int) = (.min, standard)
            func consider(_ at: Int64, _ offset: Int) {
                if at <= utc && at >= last.at { last = (at, offset) }
            }
            for y in year - 1...year + 1 {  // no allocation: a window is checked on the decision path
                consider(dst.end.localSeconds(year: y) - Int64(dst.offset), standard)
                consider(dst.start.localSeconds(year: y) - Int64(standard), dst.offset)
            }
            return last.offset
        }

        init?(_ text: String) {
            var s = Substring(text)
            guard Self.name(&s), let std = Self.clock(&s) else { return nil }
            standard = -std  // POSIX offsets are west of UTC
            if s.isEmpty { daylight = nil; return }
            guard Self.name(&s) else { return nil }
            var offset = standard + 3_600
            if let first = s.first, first != "," {
                guard let d = Self.clock(&s) else { return nil }
                offset = -d
            }
            guard Self.skip(",", &s), let start = Self.change(&s), Self.skip(",", &s), let end = Self.change(&s), s.isEmpty else { return nil }
            daylight = Daylight(offset: offset, start: start, end: end)
        }

        /// Whether `s` starts with `c`, which is then taken off.
        static func skip(_ c: Character, _ s: inout Substring) -> Bool {
            guard s.first == c else { return false }
            s = s.dropFirst()
            return true
        }

        /// `CET` or `<+0330>`.
        static func name(_ s: inout Substring) -> Bool {
            if s.first == "<" {
                guard let close = s.firstIndex(of: ">") else { return false }
                s = s[s.index(after: close)...]
                return true
            }
            let letters = s.prefix { $0.isASCII && $0.isLetter }
            guard letters.count >= 3 else { return false }
            s = s.dropFirst(letters.count)
            return true
        }

        /// `[+-]h[h][:mm[:ss]]` as seconds; times of a change may run to ±167 hours (RFC 8536).
        static func clock(_ s: inout Substring) -> Int? {
            var sign = 1
            if let c = s.first, c == "+" || c == "-" {
                sign = c == "-" ? -1 : 1
                s = s.dropFirst()
            }
            var parts: [Int] = []
            while true {
                let digits = s.prefix { $0.isASCII && $0.isNumber }
                guard !digits.isEmpty, digits.count <= 3, let v = Int(digits) else { return nil }
                parts.append(v)
                s = s.dropFirst(digits.count)
                guard parts.count < 3, s.first == ":" else { break }
                s = s.dropFirst()
            }
            guard parts[0] <= 167, parts.count < 2 || parts[1] < 60, parts.count < 3 || parts[2] < 60 else { return nil }
            return sign * (parts[0] * 3_600 + (parts.count > 1 ? parts[1] * 60 : 0) + (parts.count > 2 ? parts[2] : 0))
        }

        /// `M3.5.0[/3]`, `J60[/2]` or `59[/2]`.
        static func change(_ s: inout Substring) -> Change? {
            func number(_ s: inout Substring) -> Int? {
                let digits = s.prefix { $0.isASCII && $0.isNumber }
                guard !digits.isEmpty, digits.count <= 3 else { return nil }
                s = s.dropFirst(digits.count)
                return Int(digits)
            }
            let day: Change.Day
            switch s.first {
            case "M":
                s = s.dropFirst()
                guard let m = number(&s), (1...12).contains(m), skip(".", &s), let w = number(&s), (1...5).contains(w),
                      skip(".", &s), let d = number(&s), (0...6).contains(d) else { return nil }
                day = .weekday(month: m, week: w, day: d)
            case "J":
                s = s.dropFirst()
                guard let n = number(&s), (1...365).contains(n) else { return nil }
                day = .julian(n)
            default:
                guard let n = number(&s), (0...365).contains(n) else { return nil }
                day = .zeroBased(n)
            }
            var time = 7_200
            if s.first == "/" {
                s = s.dropFirst()
                guard let t = clock(&s) else { return nil }
                time = t
            }
            return Change(day: day, time: time)
        }
    }
}

/// Proleptic Gregorian calendar arithmetic on days since 1970-01-01 (H. Hinnant's algorithms).
enum Civil {
    static func isLeap(_ y: Int) -> Bool { y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) }

    static func daysIn(year: Int, month: Int) -> Int {
        [31, isLeap(year) ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
    }

    static func days(year: Int, month: Int, day: Int) -> Int64 {
        let y = Int64(month <= 2 ? year - 1 : year)
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let m = Int64(month)
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + Int64(day) - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func year(ofDay z0: Int64) -> Int {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        return Int(yoe + era * 400 + (mp >= 10 ? 1 : 0))
    }

    /// 0 = Sunday ... 6 = Saturday.
    static func weekday(_ days: Int64) -> Int { Int(((days % 7) + 11) % 7) }
}

/// Big-endian reads over a TZif file's bytes; nil past the end.
private struct ByteReader {
    let bytes: [UInt8]
    var at = 0

    struct Header {
        var version: Int
        var utCount, stdCount, leapCount, timeCount, typeCount, charCount: Int
        func dataLength(timeSize: Int) -> Int {
            timeCount * timeSize + timeCount + typeCount * 6 + charCount + leapCount * (timeSize + 4) + stdCount + utCount
        }
    }

    mutating func header() -> Header? {
        guard at + 44 <= bytes.count, bytes[at..<at + 4].elementsEqual("TZif".utf8) else { return nil }
        let v = bytes[at + 4]
        let version = v == 0 ? 1 : Int(v) - 0x30
        guard (1...9).contains(version) else { return nil }
        at += 20
        var counts: [Int] = []
        for _ in 0..<6 {
            guard let c = int32(), c >= 0, c < 1 << 20 else { return nil }
            counts.append(Int(c))
        }
        return Header(version: version, utCount: counts[0], stdCount: counts[1], leapCount: counts[2],
                      timeCount: counts[3], typeCount: counts[4], charCount: counts[5])
    }

    mutating func skip(_ n: Int) -> Bool {
        guard n >= 0, at + n <= bytes.count else { return false }
        at += n
        return true
    }

    mutating func byte() -> UInt8? {
        guard at < bytes.count else { return nil }
        defer { at += 1 }
        return bytes[at]
    }

    mutating func int32() -> Int32? {
        guard at + 4 <= bytes.count else { return nil }
        defer { at += 4 }
        return bytes[at..<at + 4].reduce(Int32(0)) { $0 << 8 | Int32($1) }
    }

    mutating func int64() -> Int64? {
        guard at + 8 <= bytes.count else { return nil }
        defer { at += 8 }
        return bytes[at..<at + 8].reduce(Int64(0)) { $0 << 8 | Int64($1) }
    }

    /// The text up to the next newline (the footer), or nil when none ends it.
    mutating func line() -> String? {
        guard let end = bytes[at...].firstIndex(of: UInt8(ascii: "\n")) else { return nil }
        defer { at = end + 1 }
        return String(decoding: bytes[at..<end], as: UTF8.self)
    }
}
