#if canImport(Glibc)
import Glibc
#endif
import LanyardCore
import LanyardCrypto

/// An authenticated statement "the audit chain had `seq` records ending in `hash`",
/// written to the state dir at every start, periodically and at shutdown. Its MAC is
/// under a key derived from the master key, so without the key nobody can write one:
/// deleting records from the end of the chain, or the checkpoint itself, shows in
/// `audit verify`. (A consistent rollback of the whole state directory cannot be seen
/// locally: see docs/security.md.)
public enum AuditCheckpoint {
    static let fileName = "audit.checkpoint"
    static let domain = "audit.checkpoint"
    static let header = "lanyard-checkpoint-v2"

    struct Contents: Equatable {
        var seq: UInt64
        var hash: String
        var timeMicros: Int64
        var mac: String

        func expectedMAC(_ rows: RowAuthenticator) -> String {
            Hex.encode(rows.mac(domain: AuditCheckpoint.domain, [String(seq), hash, String(timeMicros)]))
        }

        var text: String { "\(header)\nseq=\(seq)\nhash=\(hash)\ntime_us=\(timeMicros)\nmac=\(mac)\n" }

        /// Parses a checkpoint of `version` (the MAC may be absent from older ones).
        init?(text: String, version: String = header) {
            var fields: [String: String] = [:]
            let lines = text.split(separator: "\n")
            guard lines.first.map(String.init) == version else { return nil }
            for line in lines.dropFirst() {
                guard let eq = line.firstIndex(of: "=") else { return nil }
                fields[String(line[..<eq])] = String(line[line.index(after: eq)...])
            }
            guard let seq = fields["seq"].flatMap(UInt64.init), let hash = fields["hash"], let time = fields["time_us"].flatMap(Int64.init)
            else { return nil }
            self.init(seq: seq, hash: hash, timeMicros: time, mac: fields["mac"] ?? "")
        }

        init(seq: UInt64, hash: String, timeMicros: Int64, mac: String) {
            (self.seq, self.hash, self.timeMicros, self.mac) = (seq, hash, timeMicros, mac)
        }
    }

    enum Found: Equatable {
        case absent, malformed, forged
        case valid(Contents)
    }

    static func load(directory: String, rows: RowAuthenticator) -> Found {
        guard let text = readFile(directory + "/" + fileName) else { return .absent }
        guard let c = Contents(text: text) else { return .malformed }
        return ConstantTime.equal(Array(c.mac.utf8), Array(c.expectedMAC(rows).utf8)) ? .valid(c) : .forged
    }

    /// Anchors the current head. Refuses to replace a checkpoint that is missing, forged,
    /// or ahead of (or not part of) the chain: that evidence must stay.
    public static func write(store: Store) throws {
        let head = store.audit.headRecord
        let anomaly = "; run `lanyardctl audit verify` and see docs/security.md"
        switch load(directory: store.directory, rows: store.rows) {
        case .absent:
            throw StoreError("the audit checkpoint is missing but the chain has \(head.seq) records: it was deleted\(anomaly)")
        case .malformed, .forged:
            throw StoreError("the audit checkpoint does not authenticate: it was altered or forged\(anomaly)")
        case .valid(let c):
            if c.seq > head.seq {
                throw StoreError("the audit chain ends at record \(head.seq) but its checkpoint covers \(c.seq): records were removed\(anomaly)")
            }
            if c.seq > 0, try store.read({ db in try hashAt(db, c.seq) }) != c.hash {
                throw StoreError("record \(c.seq) differs from the audit checkpoint: the chain was rewritten\(anomaly)")
            }
            if c.seq == head.seq, c.hash == head.hash { return }
        }
        guard store.audit.isAnchored else {
            throw StoreError("the audit chain's end does not match its authenticated head: records were appended, removed or rewritten\(anomaly)")
        }
        try anchor(directory: store.directory, rows: store.rows, head: head, nowMicros: store.clock.nowMicros())
    }

    /// At the upgrade that introduces authenticated checkpoints (inside its migration): the
    /// head is anchored unless an older checkpoint contradicts the chain, which is then
    /// left for `audit verify` to report.
    static func adopt(directory: String, rows: RowAuthenticator, head: (seq: UInt64, hash: String), nowMicros: Int64,
                      hashAt: (UInt64) throws -> String?) throws {
        if let text = readFile(directory + "/" + fileName), let old = Contents(text: text, version: "lanyard-checkpoint-v1") {
            let linked = try old.seq == 0 || hashAt(old.seq) == old.hash
            guard old.seq <= head.seq, linked else { return }
        }
        try anchor(directory: directory, rows: rows, head: head, nowMicros: nowMicros)
    }

    private static func anchor(directory: String, rows: RowAuthenticator, head: (seq: UInt64, hash: String), nowMicros: Int64) throws {
        var c = Contents(seq: head.seq, hash: head.hash, timeMicros: nowMicros, mac: "")
        c.mac = c.expectedMAC(rows)
        let path = directory + "/" + fileName
        let tmp = path + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw StoreError("cannot write \(tmp): \(String(cString: strerror(errno)))") }
        let bytes = Array(c.text.utf8)
        let ok = Glibc.write(fd, bytes, bytes.count) == bytes.count && fsync(fd) == 0
        close(fd)
        guard ok, rename(tmp, path) == 0 else { throw StoreError("cannot write the audit checkpoint \(path): \(String(cString: strerror(errno)))") }
    }

    static func hashAt(_ db: SQLiteConnection, _ seq: UInt64) throws -> String? {
        try db.prepare("SELECT hash FROM audit WHERE seq = ?").bind(.int(Int64(seq))).one { $0.text(0) }
    }

    private static func readFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = Glibc.read(fd, &buf, buf.count)
        return String(decoding: buf[0..<max(n, 0)], as: UTF8.self)
    }

    /// Checks a verified chain of `records` records against the checkpoint. A chain
    /// without an authentic checkpoint is broken: its tail cannot be vouched for.
    static func check(store: Store, records: UInt64, hashAt: (UInt64) throws -> String?) throws -> AuditVerification? {
        let path = store.directory + "/" + fileName
        func broken(_ seq: UInt64, _ why: String) -> AuditVerification {
            AuditVerification(ok: false, records: records, firstBrokenSeq: seq, reason: why, headHash: "")
        }
        switch load(directory: store.directory, rows: store.rows) {
        case .absent:
            return broken(records + 1, "the audit checkpoint \(path) is missing: it was deleted, and records after it may have been removed")
        case .malformed:
            return broken(records + 1, "the audit checkpoint \(path) is unreadable or malformed")
        case .forged:
            return broken(records + 1, "the audit checkpoint does not authenticate: the checkpoint was forged or altered")
        case .valid(let c):
            if c.seq > records {
                return broken(records + 1, "the chain was truncated: the checkpoint covers \(c.seq) records but the chain has \(records)")
            }
            if c.seq > 0, try hashAt(c.seq) != c.hash {
                return broken(c.seq, "record \(c.seq) differs from the checkpoint")
            }
            return nil
        }
    }
}
