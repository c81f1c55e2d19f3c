/// A minimal JSON writer and a strict, bounded reader: CLI `--json` output (numbers stay
/// numbers, unlike proto3 JSON's int64), JWT headers and claims, MCP tool arguments.
/// Keys keep their order.
public enum JSON: Sendable {
    case string(String)
    case int(Int64)
    /// A number as written (RFC 8259 grammar), from `read(_:maxDepth:numbers: .asWritten)`.
    case number(String)
    case bool(Bool)
    case array([JSON])
    case object([(String, JSON)])
    case null

    public var text: String {
        switch self {
        case .string(let s): return Self.quote(s)
        case .int(let n): return String(n)
        case .number(let n): return n
        case .bool(let b): return b ? "true" : "false"
        case .null: return "null"
        case .array(let items): return "[" + items.map(\.text).joined(separator: ",") + "]"
        case .object(let pairs): return "{" + pairs.map { Self.quote($0.0) + ":" + $0.1.text }.joined(separator: ",") + "}"
        }
    }

    /// The value of member `name` of an object (names compared byte for byte), or nil.
    public subscript(member name: String) -> JSON? {
        guard case .object(let pairs) = self else { return nil }
        return pairs.first { $0.0.sameBytes(as: name) }?.1
    }

    public static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            // Exact JSON whose bytes are inert too (invariant 14): controls, C1, bidi and
            // other format characters as \u escapes, which decode to the same string.
            case _ where Inert.mustEscape(u):
                for unit in String(u).utf16 {
                    let hex = String(unit, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                }
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }
}

/// Why bytes are not JSON the reader accepts, and the byte offset where it stopped reading.
public struct JSONReadError: Error, Equatable, CustomStringConvertible {
    public var reason: String
    public var offset: Int
    public var description: String { "\(reason) at byte \(offset)" }
}

extension JSON {
    /// Reads untrusted JSON (RFC 8259) in one pass, without backtracking: time linear in
    /// the input, recursion at most `maxDepth` deep (a value nested deeper is refused where
    /// it starts). Stricter than the RFC where leniency has bitten JOSE: duplicate member
    /// names, invalid UTF-8 and lone surrogates are refused, and a number must be an
    /// integer that fits in 64 bits (no fraction or exponent: no `Double` to convert).
    public static func read(_ bytes: [UInt8], maxDepth: Int, numbers: Numbers = .integers) throws(JSONReadError) -> JSON {
        var reader = Reader(bytes: bytes, maxDepth: maxDepth, numbers: numbers)
        let value = try reader.value(depth: 1)
        reader.skipSpace()
        guard reader.at == bytes.count else { throw reader.fail("trailing bytes after the value") }
        return value
    }

    /// How numbers are read: 64-bit integers only (`.int`), or any RFC 8259 number kept
    /// as written (`.number`, never converted: nothing is lost or rounded).
    public enum Numbers: Sendable { case integers, asWritten }

    private struct Reader {
        let bytes: [UInt8]
        let maxDepth: Int
        let numbers: Numbers
        var at = 0

        init(bytes: [UInt8], maxDepth: Int, numbers: Numbers) {
            self.bytes = bytes
            self.maxDepth = maxDepth
            self.numbers = numbers
        }

        func fail(_ reason: String) -> JSONReadError { JSONReadError(reason: reason, offset: at) }

        var next: UInt8? { at < bytes.count ? bytes[at] : nil }

        mutating func skipSpace() {
            while let b = next, b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D { at += 1 }
        }

        mutating func expect(_ byte: UInt8) throws(JSONReadError) {
            guard next == byte else { throw fail(next == nil ? "unexpected end" : "expected '\(Character(Unicode.Scalar(byte)))'") }
            at += 1
        }

        mutating func value(depth: Int) throws(JSONReadError) -> JSON {
            skipSpace()
            guard let b = next else { throw fail("unexpected end") }
            switch b {
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                guard depth <= maxDepth else { throw fail("nested deeper than \(maxDepth)") }
                return b == UInt8(ascii: "{") ? try object(depth: depth) : try array(depth: depth)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): try literal("true"); return .bool(true)
            case UInt8(ascii: "f"): try literal("false"); return .bool(false)
            case UInt8(ascii: "n"): try literal("null"); return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                return numbers == .integers ? .int(try integer()) : .number(try numberAsWritten())
            default: throw fail("not a JSON value")
            }
        }

        mutating func object(depth: Int) throws(JSONReadError) -> JSON {
            at += 1
            var pairs: [(String, JSON)] = []
            var names = Set<[UInt8]>()
            skipSpace()
            if next == UInt8(ascii: "}") { at += 1; return .object(pairs) }
            while true {
                skipSpace()
                guard next == UInt8(ascii: "\"") else { throw fail("expected a member name") }
                let start = at
                let name = try string()
                guard names.insert(Array(name.utf8)).inserted else {
                    throw JSONReadError(reason: "duplicate member name", offset: start)
                }
                skipSpace()
                try expect(UInt8(ascii: ":"))
                pairs.append((name, try value(depth: depth + 1)))
                skipSpace()
                if next == UInt8(ascii: ",") { at += 1; continue }
                try expect(UInt8(ascii: "}"))
                return .object(pairs)
            }
        }

        mutating func array(depth: Int) throws(JSONReadError) -> JSON {
            at += 1
            var items: [JSON] = []
            skipSpace()
            if next == UInt8(ascii: "]") { at += 1; return .array(items) }
            while true {
                items.append(try value(depth: depth + 1))
                skipSpace()
                if next == UInt8(ascii: ",") { at += 1; continue }
                try expect(UInt8(ascii: "]"))
                return .array(items)
            }
        }

        mutating func literal(_ word: StaticString) throws(JSONReadError) {
            let w = UnsafeBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount)
            guard bytes.count - at >= w.count, bytes[at..<(at + w.count)].elementsEqual(w) else { throw fail("not a JSON value") }
            at += w.count
        }

        /// `-?(0|[1-9][0-9]*)`, accumulated with overflow checks (negative, to reach Int64.min).
        mutating func integer() throws(JSONReadError) -> Int64 {
            let start = at
            let negative = next == UInt8(ascii: "-")
            if negative { at += 1 }
            guard let first = next, first >= UInt8(ascii: "0"), first <= UInt8(ascii: "9") else { throw fail("a number needs digits") }
            var n: Int64 = 0
            while let b = next, b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") {
                if n == 0, at > start + (negative ? 1 : 0) { throw fail("a number has a leading zero") }
                let (times, o1) = n.multipliedReportingOverflow(by: 10)
                let (sum, o2) = times.subtractingReportingOverflow(Int64(b - UInt8(ascii: "0")))
                guard !o1, !o2 else { throw JSONReadError(reason: "a number out of the 64-bit integer range", offset: start) }
                n = sum
                at += 1
            }
            if let b = next, b == UInt8(ascii: ".") || b == UInt8(ascii: "e") || b == UInt8(ascii: "E") {
                throw JSONReadError(reason: "a number that is not an integer", offset: start)
            }
            if negative { return n }
            guard n != .min else { throw JSONReadError(reason: "a number out of the 64-bit integer range", offset: start) }
            return -n
        }

        /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, returned as written.
        mutating func numberAsWritten() throws(JSONReadError) -> String {
            let start = at
            func isDigit(_ b: UInt8?) -> Bool { b.map { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") } ?? false }
            func digits() throws(JSONReadError) {
                guard isDigit(next) else { throw fail("a number needs digits") }
                while isDigit(next) { at += 1 }
            }
            if next == UInt8(ascii: "-") { at += 1 }
            if next == UInt8(ascii: "0") {
                at += 1
                if isDigit(next) { throw fail("a number has a leading zero") }
            } else {
                try digits()
            }
            if next == UInt8(ascii: ".") { at += 1; try digits() }
            if next == UInt8(ascii: "e") || next == UInt8(ascii: "E") {
                at += 1
                if next == UInt8(ascii: "+") || next == UInt8(ascii: "-") { at += 1 }
                try digits()
            }
            return String(decoding: bytes[start..<at], as: UTF8.self)
        }

        mutating func string() throws(JSONReadError) -> String {
            at += 1
            var out: [UInt8] = []
            while true {
                guard let b = next else { throw fail("unterminated string") }
                switch b {
                case UInt8(ascii: "\""):
                    at += 1
                    guard let s = String(validating: out, as: UTF8.self) else { throw fail("a string that is not UTF-8") }
                    return s
                case UInt8(ascii: "\\"):
                    at += 1
                    guard let e = next else { throw fail("unterminated string") }
                    at += 1
                    switch e {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"): out += try unicodeEscape()
                    default: throw fail("an invalid escape")
                    }
                case 0..<0x20: throw fail("a control character in a string")
                default:
                    out.append(b)
                    at += 1
                }
            }
        }

        /// The UTF-8 of `\uXXXX` (the `\u` already read), a surrogate pair taken whole.
        mutating func unicodeEscape() throws(JSONReadError) -> [UInt8] {
            var scalar = try hex4()
            if (0xD800..<0xDC00).contains(scalar) {
                guard next == UInt8(ascii: "\\"), at + 1 < bytes.count, bytes[at + 1] == UInt8(ascii: "u") else { throw fail("a lone surrogate") }
                at += 2
                let low = try hex4()
                guard (0xDC00..<0xE000).contains(low) else { throw fail("a lone surrogate") }
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            } else if (0xDC00..<0xE000).contains(scalar) {
                throw fail("a lone surrogate")
            }
            return Array(String(Character(Unicode.Scalar(scalar)!)).utf8)
        }

        mutating func hex4() throws(JSONReadError) -> UInt32 {
            guard bytes.count - at >= 4 else { throw fail("a short \\u escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let b = bytes[at]
                let d: UInt8
                switch b {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = b - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): d = b - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): d = b - UInt8(ascii: "A") + 10
                default: throw fail("a bad \\u escape")
                }
                v = v << 4 | UInt32(d)
                at += 1
            }
            return v
        }
    }
}
