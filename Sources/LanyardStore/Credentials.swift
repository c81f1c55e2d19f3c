import LanyardCore
import LanyardCrypto
import NIOConcurrencyHelpers

/// Lease, secret and signing-key storage. Secrets and private keys are sealed with
/// AES-256-GCM; the associated data binds each to its table, row and version, so a
/// value copied to another row fails to open.
extension Store {
    // MARK: Leases

    /// `upstream` names the lease's credential at its backend (an OpenBao token accessor),
    /// so that ending the lease can revoke it there.
    package func insertLease(_ l: Lease, secretHash: String?, upstream: String = "") -> Mutation {
        { db in
            try db.prepare("""
                INSERT INTO leases(id, agent_id, agent, service, kind, scope, secret_hash, version, issued_us, expires_us, state, single_use, upstream)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?)
                """)
                .bind(.text(l.id), .text(l.agentID), .text(l.agent), .text(l.service), .text(l.kind.rawValue),
                      .text(l.scope.joined(separator: " ")), secretHash.map { .text($0) } ?? .null, .int(Int64(l.version)),
                      .int(l.issuedMicros), .int(l.expiresMicros), .int(l.singleUse ? 1 : 0), .text(upstream))
                .run()
        }
    }

    /// Ends active leases (revoked or expired). Already-ended leases are left as they are.
    /// A lease with an upstream credential is queued for revocation there, in the same
    /// transaction: no ended lease is ever forgotten upstream.
    package func endLeases(_ ids: [String], as state: Lease.State, reason: String, nowMicros: Int64) -> Mutation {
        { db in
            for id in ids {
                try db.prepare("""
                    INSERT OR IGNORE INTO upstream_revocations(lease_id, service, upstream, queued_us, next_us)
                    SELECT id, service, upstream, ?, ? FROM leases WHERE id = ? AND state = 'active' AND upstream != ''
                    """).bind(.int(nowMicros), .int(nowMicros), .text(id)).run()
                try db.prepare("UPDATE leases SET state = ?, ended_us = ?, ended_reason = ? WHERE id = ? AND state = 'active'")
                    .bind(.text(state.rawValue), .int(nowMicros), .text(reason), .text(id)).run()
            }
        }
    }

    public func lease(id: String) throws -> Lease? {
        try read { db in try db.prepare("SELECT \(leaseColumns) FROM leases WHERE id = ?").bind(.text(id)).one(Self.lease) }
    }

    public func lease(secretHash: String) throws -> Lease? {
        try read { db in try db.prepare("SELECT \(leaseColumns) FROM leases WHERE secret_hash = ?").bind(.text(secretHash)).one(Self.lease) }
    }

    /// Leases still marked active (possibly past expiry until reaped), filtered, oldest first.
    /// A page: only those unexpired at `liveAt`, after `cursor`, at most `limit`.
    public func activeLeases(agentID: String? = nil, agent: String? = nil, service: String? = nil, liveAt nowMicros: Int64? = nil,
                             after cursor: LeaseCursor? = nil, limit: Int? = nil) throws -> [Lease] {
        var sql = "SELECT \(leaseColumns) FROM leases WHERE state = 'active'"
        var binds: [SQLValue] = []
        if let agentID { sql += " AND agent_id = ?"; binds.append(.text(agentID)) }
        if let agent { sql += " AND agent = ?"; binds.append(.text(agent)) }
        if let service { sql += " AND service = ?"; binds.append(.text(service)) }
        if let nowMicros { sql += " AND expires_us > ?"; binds.append(.int(nowMicros)) }
        if let cursor { sql += " AND (issued_us, id) > (?, ?)"; binds += [.int(cursor.issuedMicros), .text(cursor.id)] }
        sql += " ORDER BY issued_us, id"
        if let limit { sql += " LIMIT \(limit)" }
        return try read { db in
            let s = try db.prepare(sql)
            for (i, b) in binds.enumerated() { try s.bindAt(Int32(i + 1), b) }
            var out: [Lease] = []
            try s.rows { out.append(Self.lease($0)); return true }
            return out
        }
    }

    /// Active leases whose expiry has passed (for the reaper).
    public func expiredLeases(nowMicros: Int64, limit: Int = 500) throws -> [Lease] {
        try read { db in
            var out: [Lease] = []
            try db.prepare("SELECT \(leaseColumns) FROM leases WHERE state = 'active' AND expires_us <= ? ORDER BY expires_us LIMIT ?")
                .bind(.int(nowMicros), .int(Int64(limit))).rows { out.append(Self.lease($0)); return true }
            return out
        }
    }

    private var leaseColumns: String { "id, agent_id, agent, service, kind, scope, version, issued_us, expires_us, state, single_use" }

    private static func lease(_ s: Statement) -> Lease {
        Lease(id: s.text(0), agentID: s.text(1), agent: s.text(2), service: s.text(3),
              kind: Policy.Service.Kind(rawValue: s.text(4)) ?? .opaque,
              scope: s.text(5).split(separator: " ").map(String.init), version: Int(s.int(6)),
              issuedMicros: s.int(7), expiresMicros: s.int(8), state: Lease.State(rawValue: s.text(9)) ?? .revoked,
              singleUse: s.int(10) != 0)
    }

    // MARK: Upstream revocations

    /// Queued upstream revocations due at `nowMicros`, oldest first.
    public func dueRevocations(nowMicros: Int64, limit: Int = 100) throws -> [UpstreamRevocation] {
        try read { db in
            var out: [UpstreamRevocation] = []
            try db.prepare("SELECT lease_id, service, upstream, attempts FROM upstream_revocations WHERE next_us <= ? ORDER BY next_us LIMIT ?")
                .bind(.int(nowMicros), .int(Int64(limit)))
                .rows { out.append(.init(leaseID: $0.text(0), service: $0.text(1), upstream: $0.text(2), attempts: Int($0.int(3)))); return true }
            return out
        }
    }

    /// When the next queued revocation is due, and how many are queued.
    public func revocationQueue() throws -> (count: Int, nextMicros: Int64?) {
        try read { db in
            try db.prepare("SELECT count(*), min(next_us) FROM upstream_revocations").one { (Int($0.int(0)), $0.optionalInt(1)) } ?? (0, nil)
        }
    }

    /// Drops a revocation that took effect upstream.
    package func finishRevocation(_ leaseID: String) -> Mutation {
        { db in try db.prepare("DELETE FROM upstream_revocations WHERE lease_id = ?").bind(.text(leaseID)).run() }
    }

    /// Records a failed attempt; the next one waits until `nextMicros`.
    public func retryRevocation(_ leaseID: String, error: String, nextMicros: Int64) throws {
        try read { db in
            try db.prepare("UPDATE upstream_revocations SET attempts = attempts + 1, next_us = ?, last_error = ? WHERE lease_id = ?")
                .bind(.int(nextMicros), .text(String(error.prefix(300))), .text(leaseID)).run()
        }
    }

    // MARK: Service versions (rotation)

    /// The service's credential version and when it was last rotated (created at first use).
    public func serviceVersion(_ service: String) throws -> (version: Int, rotatedMicros: Int64) {
        try read { db in
            if let v = try db.prepare("SELECT version, rotated_us FROM service_versions WHERE service = ?").bind(.text(service))
                .one({ (Int($0.int(0)), $0.int(1)) }) {
                return v
            }
            let now = clock.nowMicros()
            try db.prepare("INSERT OR IGNORE INTO service_versions(service, version, rotated_us) VALUES (?, 1, ?)")
                .bind(.text(service), .int(now)).run()
            return try db.prepare("SELECT version, rotated_us FROM service_versions WHERE service = ?").bind(.text(service))
                .one({ (Int($0.int(0)), $0.int(1)) }) ?? (1, now)
        }
    }

    /// Moves the service to `version` (a rotation).
    package func setServiceVersion(_ service: String, _ version: Int, nowMicros: Int64) -> Mutation {
        { db in
            try db.prepare("INSERT INTO service_versions(service, version, rotated_us) VALUES (?, ?, ?) ON CONFLICT(service) DO UPDATE SET version = excluded.version, rotated_us = excluded.rotated_us")
                .bind(.text(service), .int(Int64(version)), .int(nowMicros)).run()
        }
    }

    // MARK: Static secrets

    /// Seals `value` as the service's next secret version; returns the version it will have.
    package func putSecret(service: String, value: [UInt8], nowMicros: Int64) throws -> (version: Int, mutation: Mutation) {
        let sealer = try requireSealer()
        let version = try read { db in
            Int(try db.prepare("SELECT coalesce(max(version), 0) FROM secrets WHERE service = ?").bind(.text(service)).one { $0.int(0) } ?? 0) + 1
        }
        let sealed = try sealer.seal(value, associatedData: Self.aad("secrets", service, version))
        return (version, { db in
            try db.prepare("INSERT INTO secrets(service, version, sealed, created_us) VALUES (?, ?, ?, ?)")
                .bind(.text(service), .int(Int64(version)), .blob(sealed), .int(nowMicros)).run()
        })
    }

    /// The newest secret of a static service, opened; nil when none was put. A row that
    /// does not authenticate throws: never garbage.
    public func currentSecret(service: String) throws -> (version: Int, value: [UInt8])? {
        let sealer = try requireSealer()
        guard let (version, sealed) = try read({ db in
            try db.prepare("SELECT version, sealed FROM secrets WHERE service = ? ORDER BY version DESC LIMIT 1")
                .bind(.text(service)).one { (Int($0.int(0)), $0.blob(1)) }
        }) else { return nil }
        do {
            return (version, try sealer.open(sealed, associatedData: Self.aad("secrets", service, version)))
        } catch {
            throw SealError(what: "secret \(version) of service '\(service)'",
                            remedy: "an admin must put it again (lanyardctl secret put \(service))")
        }
    }

    public func secretVersions() throws -> [(service: String, version: Int, createdMicros: Int64)] {
        try read { db in
            var out: [(String, Int, Int64)] = []
            try db.prepare("SELECT service, max(version), max(created_us) FROM secrets GROUP BY service ORDER BY service")
                .rows { out.append(($0.text(0), Int($0.int(1)), $0.int(2))); return true }
            return out
        }
    }

    // MARK: Signing keys

    /// The current Ed25519 signing key for `purpose` (a service's tokens, or identities),
    /// created on first use. Retired keys stay for verification until their tokens expire.
    public func signingKey(purpose: String) throws -> (kid: String, key: Ed25519PrivateKey) {
        if let current = openedSigningKeys.withLockedValue({ $0[purpose] }) { return current }
        let sealer = try requireSealer()
        if let (kid, sealed) = try read({ db in
            try db.prepare("SELECT kid, sealed_private FROM signing_keys WHERE purpose = ? AND retired_us IS NULL ORDER BY created_us DESC LIMIT 1")
                .bind(.text(purpose)).one { ($0.text(0), $0.blob(1)) }
        }) {
            let opened: (kid: String, key: Ed25519PrivateKey)
            do {
                opened = (kid, try Ed25519PrivateKey(rawRepresentation: sealer.open(sealed, associatedData: Self.aad("signing_keys", kid, 1))))
            } catch {
                throw SealError(what: "signing key \(kid)",
                                remedy: "an admin must replace it (lanyardctl keys rotate for identities, secret rotate SERVICE for a jwt service)")
            }
            // A rotation that raced this read has already put its newer key there: keep it.
            return openedSigningKeys.withLockedValue { cache in
                if let newer = cache[purpose] { return newer }
                cache[purpose] = opened
                return opened
            }
        }
        return try rotateSigningKey(purpose: purpose)
    }

    /// Adds a new signing key for `purpose` and retires the current one (its public key
    /// still verifies the tokens it signed until they expire).
    @discardableResult
    public func rotateSigningKey(purpose: String) throws -> (kid: String, key: Ed25519PrivateKey) {
        let (kid, key, _) = try installSigningKey(purpose: purpose, dropEarlier: false)
        return (kid, key)
    }

    /// A compromise rotation: adds a new signing key for `purpose` and deletes every earlier
    /// one in the same transaction, so none is published or verifies anything any more:
    /// every token they signed stops verifying at once. Returns the new kid and the dropped ones.
    public func rotateCompromisedSigningKey(purpose: String) throws -> (kid: String, dropped: [String]) {
        let (kid, _, dropped) = try installSigningKey(purpose: purpose, dropEarlier: true)
        return (kid, dropped)
    }

    private func installSigningKey(purpose: String, dropEarlier: Bool) throws -> (kid: String, key: Ed25519PrivateKey, dropped: [String]) {
        let sealer = try requireSealer()
        let key = try Ed25519PrivateKey()
        let kid = JWT.thumbprint(ed25519PublicKey: key.publicKey)
        let sealed = try sealer.seal(key.rawRepresentation, associatedData: Self.aad("signing_keys", kid, 1))
        let now = clock.nowMicros()
        var dropped: [String] = []
        try read { db in
            try db.transaction {
                if dropEarlier {
                    try db.prepare("SELECT kid FROM signing_keys WHERE purpose = ? ORDER BY created_us, rowid").bind(.text(purpose))
                        .rows { dropped.append($0.text(0)); return true }
                    try db.prepare("DELETE FROM signing_keys WHERE purpose = ?").bind(.text(purpose)).run()
                } else {
                    try db.prepare("UPDATE signing_keys SET retired_us = ? WHERE purpose = ? AND retired_us IS NULL").bind(.int(now), .text(purpose)).run()
                }
                try db.prepare("INSERT INTO signing_keys(kid, purpose, alg, public_key, sealed_private, created_us) VALUES (?, ?, 'EdDSA', ?, ?, ?)")
                    .bind(.text(kid), .text(purpose), .blob(key.publicKey), .blob(sealed), .int(now)).run()
            }
        }
        openedSigningKeys.withLockedValue { $0[purpose] = (kid, key) }
        return (kid, key, dropped)
    }

    /// Public keys for verification: current and retired, newest first.
    public func publicKeys(purpose: String? = nil) throws -> [(kid: String, publicKey: [UInt8], retiredMicros: Int64?)] {
        try read { db in
            var out: [(String, [UInt8], Int64?)] = []
            let s = try purpose.map { try db.prepare("SELECT kid, public_key, retired_us FROM signing_keys WHERE purpose = ? ORDER BY created_us DESC").bind(.text($0)) }
                ?? db.prepare("SELECT kid, public_key, retired_us FROM signing_keys ORDER BY created_us DESC")
            try s.rows { out.append(($0.text(0), $0.blob(1), $0.optionalInt(2))); return true }
            return out
        }
    }

    // MARK: Sealing

    private func requireSealer() throws -> AESGCM {
        guard let sealer else { throw StoreError("no master key is loaded, so secrets cannot be sealed or opened") }
        return sealer
    }

    static func aad(_ table: String, _ row: String, _ version: Int) -> [UInt8] {
        Array("lanyard/v1|\(table)|\(row)|\(version)".utf8)
    }
}

/// Where a page of leases ends: the next page starts after this lease. Its text form is the
/// page token clients pass back.
public struct LeaseCursor: Sendable, Equatable {
    public var issuedMicros: Int64
    public var id: String

    public init(after lease: Lease) {
        issuedMicros = lease.issuedMicros
        id = lease.id
    }

    /// nil when `token` is not one this daemon made.
    public init?(token: String) {
        let parts = token.split(separator: "/", maxSplits: 1)
        guard parts.count == 2, let micros = Int64(parts[0]), parts[1].count <= 64 else { return nil }
        issuedMicros = micros
        id = String(parts[1])
    }

    public var token: String { "\(issuedMicros)/\(id)" }
}

/// A lease's credential that must still be revoked at its backend.
public struct UpstreamRevocation: Sendable, Equatable {
    public var leaseID: String
    public var service: String
    /// The backend's handle on the credential (an OpenBao token accessor), never the secret.
    public var upstream: String
    public var attempts: Int
}

/// A sealed value that does not open: tampered, moved, or sealed under another key.
public struct SealError: Error, CustomStringConvertible {
    public var what: String
    /// What an operator does about it.
    public var remedy: String
    public var description: String {
        "\(what) failed its integrity check (tampered, moved, or sealed under another master key); it was not used; \(remedy)"
    }
}
