#if canImport(Glibc)
import Glibc
#endif
import Logging

/// Logs to journald's native socket when systemd connected stderr to the journal
/// (`$JOURNAL_STREAM`), so that every metadata key is a field of its own
/// (`journalctl -u lanyard LANYARD_AUDIT_EVENT=provision`): `audit.seq` becomes
/// `LANYARD_AUDIT_SEQ`. MESSAGE keeps the line's text (message, then `key=value` pairs). A
/// datagram the journal does not take is written to stderr instead. Wrap it in
/// `InertLogHandler`, which makes every value inert first.
package struct JournalLogHandler: LogHandler {
    package var logLevel: Logger.Level = .info
    package var metadata: Logger.Metadata = [:]
    package var metadataProvider: Logger.MetadataProvider?
    private let journal: JournalSocket
    private var fallback: StreamLogHandler

    /// A handler when stderr is the journal stream systemd named, else nil.
    package init?(label: String) {
        guard JournalSocket.stderrIsJournal, let journal = JournalSocket.shared else { return nil }
        self.journal = journal
        fallback = StreamLogHandler.standardError(label: label)
    }

    package subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    package func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let explicit = event.metadata { merged.merge(explicit) { $1 } }
        let pairs = merged.sorted { $0.key < $1.key }
        let text = ([event.message.description] + pairs.map { "\($0.key)=\($0.value)" }).joined(separator: " ")
        var fields: [(String, String)] = [("MESSAGE", text), ("PRIORITY", "\(Self.priority(event.level))"),
                                          ("SYSLOG_IDENTIFIER", "lanyardd"), ("LANYARD_SOURCE", event.source)]
        for (key, value) in pairs { fields.append((Self.fieldName(key), "\(value)")) }
        if !journal.send(fields) {
            var stream = fallback
            stream.logLevel = logLevel
            stream.log(event: event)
        }
    }

    /// `audit.seq` → `LANYARD_AUDIT_SEQ`: journal field names are [A-Z0-9_], at most 64 bytes.
    static func fieldName(_ key: String) -> String {
        let upper = key.utf8.map { c -> Character in
            switch c {
            case UInt8(ascii: "a")...UInt8(ascii: "z"): Character(Unicode.Scalar(c - 32))
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): Character(Unicode.Scalar(c))
            default: "_"
            }
        }
        return String(("LANYARD_" + String(upper)).prefix(64))
    }

    /// syslog(3) priorities.
    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }
}

/// A datagram socket to `/run/systemd/journal/socket` (the native protocol,
/// systemd.journal-fields(7)); shared by every handler of the process.
final class JournalSocket: Sendable {
    static let path = "/run/systemd/journal/socket"
    static let shared = JournalSocket()
    let fd: Int32

    init?() {
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
    }

    deinit { close(fd) }

    /// `$JOURNAL_STREAM` is `DEVICE:INODE` of the stream systemd gave as stderr.
    static var stderrIsJournal: Bool {
        guard let value = getenv("JOURNAL_STREAM").map({ String(cString: $0) }) else { return false }
        let parts = value.split(separator: ":")
        var st = stat()
        guard parts.count == 2, let dev = UInt64(parts[0]), let ino = UInt64(parts[1]), fstat(2, &st) == 0 else { return false }
        return UInt64(st.st_dev) == dev && UInt64(st.st_ino) == ino
    }

    /// One entry, every field in the binary form (`NAME\n`, little-endian 64-bit length,
    /// value, `\n`), so no value can add a field. True when the journal took it.
    func send(_ fields: [(String, String)]) -> Bool {
        var datagram: [UInt8] = []
        for (name, value) in fields {
            let bytes = Array(value.utf8)
            datagram += Array(name.utf8) + [0x0A]
            withUnsafeBytes(of: UInt64(bytes.count).littleEndian) { datagram += $0 }
            datagram += bytes + [0x0A]
        }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(Self.path.utf8) + [0]) }
        let sent = datagram.withUnsafeBytes { buffer in
            withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL), $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
        }
        return sent == datagram.count
    }
}
