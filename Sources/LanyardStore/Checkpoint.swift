#if canImport(Glibc)
import Glibc
#endif
import LanyardCore
import LanyardCrypto

/// A signed statement "the audit chain had `seq` records ending in `hash`", written to
/// the state dir periodically and at shutdown. Deleting records from the end of the chain
/// cannot be hidden from `audit verify` without the daemon's private key.
public enum AuditCheckpoint {
    static let purpose = "audit-checkpoint"
    static let fileName = "audit.checkpoint"

    struct Contents: Equatable {
        var seq: UInt64
        var hash: String
        var timeMicros: Int64
        var kid: String
        var signature: String

        var signedBytes: [UInt8] { Array("lanyard-checkpoint-v1|\(seq)|\(hash)|\(timeMicros)".utf8) }

        var text: String {
            "lanyard-checkpoint-v1\nseq=\(seq)\nhash=\(hash)\ntime_us=\(timeMicros)\nkid=\(kid)\nsig=\(signature)\n"
        }

        init(seq: UInt64, hash: String, timeMicros: Int64, kid: String, signature: String) {
            (self.seq, self.hash, self.timeMicros, self.kid, self.signature) = (seq, hash, timeMicros, kid, signature)
        }

        init?(text: String) {
            var fields: [String: String] = [:]
            let lines = text.split(separator: "\n")
            guard lines.first == "lanyard-checkpoint-v1" else { return nil }
            for line in lines.dropFirst() {
                guard let eq = line.firstIndex(of: "=") else { return nil }
                fields[String(line[..<eq])] = String(line[line.index(after: eq)...])
            }
            guard let seq = fields["seq"].flatMap(UInt64.init), let hash = fields["hash"], let time = fields["time_us"].flatMap(Int64.init),
                  let kid = fields["kid"], let sig = fields["sig"] else { return nil }
            self.init(seq: seq, hash: hash, timeMicros: time, kid: kid, signature: sig)
        }
    }

    /// Signs the current head. Refuses to move the checkpoint backwards: a chain shorter
    /// than its last checkpoint has lost records, and that evidence must stay.
    public static func write(store: Store) throws {
        let head = store.audit.headRecord
        let path = store.directory + "/" + fileName
        if let existing = read(path), existing.seq > head.seq {
            throw StoreError("the audit chain ends at record \(head.seq) but its signed checkpoint covers \(existing.seq): records were removed; run `lanyardctl audit verify`")
        }
        if let existing = read(path), existing.seq == head.seq, existing.hash == head.hash { return }
        let (kid, key) = try store.signingKey(purpose: purpose)
        var c = Contents(seq: head.seq, hash: head.hash, timeMicros: store.clock.nowMicros(), kid: kid, signature: "")
        c.signature = Base64URL.encode(try key.signature(for: c.signedBytes))
        let tmp = path + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw StoreError("cannot write \(tmp): \(String(cString: strerror(errno)))") }
        let bytes = Array(c.text.utf8)
        let ok = Glibc.write(fd, bytes, bytes.count) == bytes.count && fsync(fd) == 0
        close(fd)
        guard ok, rename(tmp, path) == 0 else { throw StoreError("cannot write the audit checkpoint \(path): \(String(cString: strerror(errno)))") }
    }

    static func read(_ path: String) -> Contents? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = Glibc.read(fd, &buf, buf.count)
        guard n > 0 else { return nil }
        return Contents(text: String(decoding: buf[0..<n], as: UTF8.self))
    }

    /// Checks a verified chain of `records` records against the checkpoint, if there is one.
    static func check(store: Store, records: UInt64, hashAt: (UInt64) throws -> String?) throws -> AuditVerification? {
        let path = store.directory + "/" + fileName
        guard access(path, F_OK) == 0 else { return nil }
        func broken(_ seq: UInt64, _ why: String) -> AuditVerification {
            AuditVerification(ok: false, records: records, firstBrokenSeq: seq, reason: why, headHash: "")
        }
        guard let c = read(path) else { return broken(records + 1, "the audit checkpoint \(path) is unreadable or malformed") }
        guard let key = try store.publicKeys(purpose: purpose).first(where: { $0.kid == c.kid }),
              let sig = Base64URL.decode(c.signature), Ed25519.isValidSignature(sig, for: c.signedBytes, publicKey: key.publicKey) else {
            return broken(records + 1, "the audit checkpoint's signature does not verify: the checkpoint was forged or altered")
        }
        if c.seq > records {
            return broken(records + 1, "the chain was truncated: the signed checkpoint covers \(c.seq) records but the chain has \(records)")
        }
        if c.seq > 0, try hashAt(c.seq) != c.hash {
            return broken(c.seq, "record \(c.seq) differs from the signed checkpoint")
        }
        return nil
    }
}
