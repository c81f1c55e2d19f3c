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
                INSERT INTO leases(id, agent_id, agent, service, kind, scope, secret_hash, version, issued_us, expires_us, state, single_use, upstream,
                                   process_pid, process_start)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?, ?, ?)
                """)
                .bind(.text(l.id), .text(l.agentID), .text(l.agent), .text(l.service), .text(l.kind.rawValue),
                      .text(l.scope.joined(separator: " ")), secretHash.map { .text($0) } ?? .null, .int(Int64(l.version)),
                      .int(l.issuedMicros), .int(l.expiresMicros), .int(l.singleUse ? 1 : 0), .text(upstream),
                      l.process.map { .int(Int64($0.pid)) } ?? .null, l.process.map { .int(Int64(bitPattern: $0.startTime)) } ?? .null)
                .run()
            try self.authenticate(db, .leases, key: [.text(l.id)])
            self.leaseTally.added(l.agentID)
        }
    }

    /// Ends active leases (revoked or expired). Already-ended leases are left as they are.
    /// A lease with an upstream credential is queued for revocation there, in the same
    /// transaction: no ended lease is ever forgotten upstream.
    /// A lease whose row does not authenticate is left as it is (it is never honoured anyway).
    package func endLeases(_ ids: [String], as state: Lease.State, reason: String, nowMicros: Int64) -> Mutation {
        { db in
            for id in ids {
                let (changed, _) = try self.update(db, .leases, set: "state = ?, ended_us = ?, ended_reason = ?",
                                                   [.text(state.rawValue), .int(nowMicros), .text(reason)],
                                                   where: "id = ? AND state = 'active'", [.text(id)])
                if changed == 1 { try self.queueUpstreamRevocation(db, leaseID: id, nowMicros: nowMicros) }
            }
        }
    }

    /// Queues the upstream revocation of ended lease `leaseID` if it has an upstream credential.
    private func queueUpstreamRevocation(_ db: SQLiteConnection, leaseID: String, nowMicros: Int64) throws {
        try db.prepare("""
            INSERT OR REPLACE INTO upstream_revocations(lease_id, service, upstream, queued_us, next_us)
            SELECT id, service, upstream, ?, ? FROM leases WHERE id = ? AND upstream != ''
            """).bind(.int(nowMicros), .int(nowMicros), .text(leaseID)).run()
        if db.changes == 1 { try authenticate(db, .upstreamRevocations, key: [.text(leaseID)]) }
    }

    /// At startup: an ended lease whose upstream revocation is neither done nor queued (its
    /// queue row deleted or altered at rest) is queued again, so it is revoked upstream.
    func requeueForgottenRevocations() {
        do {
            try read { db in
                try db.transaction {
                    var forgotten: [String] = []
                    try db.prepare("""
                        SELECT \(AuthenticatedTable.leases.selection) FROM leases
                        WHERE state != 'active' AND upstream != '' AND upstream_revoked_us IS NULL
                        """).rows { row in
                        if rows.isAuthentic(.leases, row) { forgotten.append(row.text(0)) }
                        return true
                    }
                    for id in forgotten {
                        let queued = try db.prepare("SELECT \(AuthenticatedTable.upstreamRevocations.selection) FROM upstream_revocations WHERE lease_id = ?")
                            .bind(.text(id)).one { rows.isAuthentic(.upstreamRevocations, $0) }
                        guard queued != true else { continue }
                        logger.critical("an upstream revocation was missing or altered at rest; queued again", metadata: ["lease.id": "\(id)"])
                        try queueUpstreamRevocation(db, leaseID: id, nowMicros: clock.nowMicros())
                    }
                }
            }
        } catch {
            logger.critical("cannot check the upstream revocation queue", metadata: ["error": "\(error)"])
        }
    }

    /// The lease; throws `SealError` when its row does not authenticate.
    public func lease(id: String) throws -> Lease? {
        try read { db in
            try db.prepare("SELECT \(leaseColumns) FROM leases WHERE id = ?").bind(.text(id))
                .one { try authentic(.leases, $0, remedy: Self.leaseRemedy, Self.lease) }
        }
    }

    public func lease(secretHash: String) throws -> Lease? {
        try read { db in
            try db.prepare("SELECT \(leaseColumns) FROM leases WHERE secret_hash = ?").bind(.text(secretHash))
                .one { try authentic(.leases, $0, remedy: Self.leaseRemedy, Self.lease) }
        }
    }

    static let leaseRemedy = "the lease is not honoured; provision a new one"

    /// Authentic leases of `statement`'s rows; the others are logged and left out.
    private func authenticLeases(_ statement: Statement) throws -> [Lease] {
        var out: [Lease] = []
        try statement.rows { row in
            if rows.isAuthentic(.leases, row) { out.append(Self.lease(row)) } else { reportTampered(.leases, row) }
            return true
        }
        return out
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
            try s.bind(binds)
            return try authenticLeases(s)
        }
    }

    /// Active leases bound to a process (checked, and watched again, at startup).
    public func processBoundLeases() throws -> [Lease] {
        try read { db in
            try authenticLeases(db.prepare("SELECT \(leaseColumns) FROM leases WHERE state = 'active' AND process_pid IS NOT NULL ORDER BY issued_us"))
        }
    }

    /// Active leases whose expiry has passed (for the reaper).
    public func expiredLeases(nowMicros: Int64, limit: Int = 500) throws -> [Lease] {
        try read { db in
            try authenticLeases(db.prepare("SELECT \(leaseColumns) FROM leases WHERE state = 'active' AND expires_us <= ? ORDER BY expires_us LIMIT ?")
                .bind(.int(nowMicros), .int(Int64(limit))))
        }
    }

    private var leaseColumns: String { AuthenticatedTable.leases.selection }

    private static func lease(_ s: Statement) -> Lease {
        Lease(id: s.text(0), agentID: s.text(1), agent: s.text(2), service: s.text(3),
              kind: Policy.Service.Kind(rawValue: s.text(4)) ?? .opaque,
              scope: s.text(5).split(separator: " ").map(String.init), version: Int(s.int(6)),
              issuedMicros: s.int(7), expiresMicros: s.int(8), state: Lease.State(rawValue: s.text(9)) ?? .revoked,
              singleUse: s.int(10) != 0, process: boundProcess(s))
    }

    /// The `added` columns of a lease row: the process it is bound to, if any.
    private static func boundProcess(_ s: Statement) -> BoundProcess? {
        let at = Int32(AuthenticatedTable.leases.columns.count)
        guard let pid = s.optionalInt(at), let start = s.optionalInt(at + 1), let pid32 = Int32(exactly: pid) else { return nil }
        return BoundProcess(pid: pid32, startTime: UInt64(bitPattern: start))
    }

    // MARK: Upstream revocations

    /// Queued upstream revocations due at `nowMicros`, oldest first (authentic ones; the
    /// others are queued again from their lease at the next start).
    public func dueRevocations(nowMicros: Int64, limit: Int = 100) throws -> [UpstreamRevocation] {
        try read { db in
            var out: [UpstreamRevocation] = []
            try db.prepare("SELECT \(AuthenticatedTable.upstreamRevocations.selection) FROM upstream_revocations WHERE next_us <= ? ORDER BY next_us LIMIT ?")
                .bind(.int(nowMicros), .int(Int64(limit)))
                .rows { row in
                    if rows.isAuthentic(.upstreamRevocations, row) {
                        out.append(.init(leaseID: row.text(0), service: row.text(1), upstream: row.text(2), attempts: Int(row.int(4))))
                    } else {
                        reportTampered(.upstreamRevocations, row)
                    }
                    return true
                }
            return out
        }
    }

    /// When the next queued revocation is due, and how many are queued.
    public func revocationQueue() throws -> (count: Int, nextMicros: Int64?) {
        try read { db in
            try db.prepare("SELECT count(*), min(next_us) FROM upstream_revocations").one { (Int($0.int(0)), $0.optionalInt(1)) } ?? (0, nil)
        }
    }

    /// Drops a revocation that took effect upstream, and marks its lease as revoked there.
    package func finishRevocation(_ leaseID: String) -> Mutation {
        { db in
            try db.prepare("DELETE FROM upstream_revocations WHERE lease_id = ?").bind(.text(leaseID)).run()
            try self.update(db, .leases, set: "upstream_revoked_us = ?", [.int(self.clock.nowMicros())], where: "id = ?", [.text(leaseID)])
        }
    }

    /// Records a failed attempt; the next one waits until `nextMicros`.
    public func retryRevocation(_ leaseID: String, error: String, nextMicros: Int64) throws {
        try read { db in
            _ = try db.transaction {
                try update(db, .upstreamRevocations, set: "attempts = attempts + 1, next_us = ?, last_error = ?",
                           [.int(nextMicros), .text(String(error.prefix(300)))], where: "lease_id = ?", [.text(leaseID)])
            }
        }
    }

    // MARK: Service versions (rotation)

    /// The service's credential version and when it was last rotated (created at first
    /// use). A row deleted or altered at rest is replaced by one that makes the service due
    /// for rotation at once: tampering can only bring a rotation forward.
    public func serviceVersion(_ service: String) throws -> (version: Int, rotatedMicros: Int64) {
        try read { db in
            // The row as stored: nil when there is none, .some(nil) when it does not authenticate.
            func stored(report: Bool) throws -> (Int, Int64)?? {
                try db.prepare("SELECT \(AuthenticatedTable.serviceVersions.selection) FROM service_versions WHERE service = ?")
                    .bind(.text(service)).one { row -> (Int, Int64)? in
                        guard rows.isAuthentic(.serviceVersions, row) else {
                            if report { reportTampered(.serviceVersions, row) }
                            return nil
                        }
                        return (Int(row.int(1)), row.int(2))
                    }
            }
            if let found = try stored(report: false), let v = found { return v }
            return try db.transaction {
                // Again under the write lock: another call (a provision, the maintenance pass)
                // may have made the row since, with a lease of its version already written;
                // judged outside the lock, that lease made a fresh service look tampered with.
                let row = try stored(report: true)
                if let row, let v = row { return v }
                let lastLease = try db.prepare("SELECT max(version) FROM leases WHERE service = ?").bind(.text(service)).one { $0.optionalInt(0) } ?? nil
                let fresh = row == nil && lastLease == nil
                if !fresh {
                    logger.critical("the rotation record of a service was missing or altered at rest; it is due for rotation now",
                                    metadata: ["service": "\(service)"])
                }
                let v = (version: Int(lastLease ?? 0) + 1, rotatedMicros: fresh ? clock.nowMicros() : 0)
                try setServiceVersion(service, v.version, nowMicros: v.rotatedMicros)(db)
                return v
            }
        }
    }

    /// Moves the service to `version` (a rotation).
    package func setServiceVersion(_ service: String, _ version: Int, nowMicros: Int64) -> Mutation {
        { db in
            try db.prepare("INSERT INTO service_versions(service, version, rotated_us) VALUES (?, ?, ?) ON CONFLICT(service) DO UPDATE SET version = excluded.version, rotated_us = excluded.rotated_us")
                .bind(.text(service), .int(Int64(version)), .int(nowMicros)).run()
            try self.authenticate(db, .serviceVersions, key: [.text(service)])
        }
    }

    // MARK: Static secrets

    /// Seals `value` as the service's next secret version; returns the version it will have.
    /// The version becomes the service's authenticated current one (`secret_heads`).
    package func putSecret(service: String, value: [UInt8], nowMicros: Int64) throws -> (version: Int, mutation: Mutation) {
        let version = try read { db in
            Int(try db.prepare("""
                SELECT max(coalesce((SELECT max(version) FROM secrets WHERE service = ?1), 0), coalesce((SELECT version FROM secret_heads WHERE service = ?1), 0))
                """).bind(.text(service)).one { $0.int(0) } ?? 0) + 1
        }
        let sealed = try sealer.seal(value, associatedData: Self.aad("secrets", service, version))
        return (version, { db in
            try db.prepare("INSERT INTO secrets(service, version, sealed, created_us) VALUES (?, ?, ?, ?)")
                .bind(.text(service), .int(Int64(version)), .blob(sealed), .int(nowMicros)).run()
            try self.authenticate(db, .secrets, key: [.text(service), .int(Int64(version))])
            try db.prepare("INSERT INTO secret_heads(service, version) VALUES (?, ?) ON CONFLICT(service) DO UPDATE SET version = excluded.version")
                .bind(.text(service), .int(Int64(version))).run()
            try self.authenticate(db, .secretHeads, key: [.text(service)])
        })
    }

    /// The current secret of a static service, opened; nil when none was put. The current
    /// version comes from its authenticated record, and that version's row must exist and
    /// authenticate: deleting or altering rows never serves another value, it throws.
    public func currentSecret(service: String) throws -> (version: Int, value: [UInt8])? {
        let remedy = "an admin must put it again (lanyardctl secret put \(service))"
        guard let (version, sealed) = try read({ db -> (Int, [UInt8])? in
            let head = try db.prepare("SELECT \(AuthenticatedTable.secretHeads.selection) FROM secret_heads WHERE service = ?").bind(.text(service))
                .one { try authentic(.secretHeads, $0, remedy: remedy) { Int($0.int(1)) } }
            guard let head else {
                guard try db.prepare("SELECT 1 FROM secrets WHERE service = ?").bind(.text(service)).one({ _ in true }) == nil else {
                    logger.critical("the current-version record of a static secret is missing", metadata: ["service": "\(service)"])
                    throw SealError(what: "the current-version record of service '\(service)' is missing, so its secret", remedy: remedy)
                }
                return nil
            }
            let row = try db.prepare("SELECT \(AuthenticatedTable.secrets.selection) FROM secrets WHERE service = ? AND version = ?")
                .bind(.text(service), .int(Int64(head)))
                .one { try authentic(.secrets, $0, remedy: remedy) { (head, $0.blob(2)) } }
            guard let row else {
                logger.critical("the current version of a static secret is missing", metadata: ["service": "\(service)", "version": "\(head)"])
                throw SealError(what: "secret \(head) of service '\(service)' is missing, so it", remedy: remedy)
            }
            return row
        }) else { return nil }
        do {
            return (version, try sealer.open(sealed, associatedData: Self.aad("secrets", service, version)))
        } catch {
            throw SealError(what: "secret \(version) of service '\(service)'", remedy: remedy)
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

    static let signingKeyRemedy = "an admin must replace it (lanyardctl keys rotate for identities, secret rotate SERVICE for a jwt service)"

    /// The current signing key for `purpose` (a service's tokens, or identities), of `alg`:
    /// created on first use, and when the current key is of another algorithm (the policy
    /// changed it) that one is retired like in a rotation. Retired keys stay for verification
    /// until their tokens expire. A current key whose row does not authenticate (altered, or
    /// inserted without the master key) is never used: it throws until a rotation replaces it.
    public func signingKey(purpose: String, alg: JWSAlgorithm = .eddsa) throws -> (kid: String, key: SigningKey) {
        if let current = openedSigningKeys.withLockedValue({ $0[purpose] }), current.key.alg == alg { return current }
        if let (kid, rowAlg, sealed) = try read({ db in
            try db.prepare("SELECT \(AuthenticatedTable.signingKeys.selection) FROM signing_keys WHERE purpose = ? AND retired_us IS NULL ORDER BY created_us DESC LIMIT 1")
                .bind(.text(purpose)).one { try authentic(.signingKeys, $0, remedy: Self.signingKeyRemedy) { ($0.text(0), $0.text(2), $0.blob(4)) } }
        }), rowAlg == alg.rawValue {
            let opened: (kid: String, key: SigningKey)
            do {
                opened = (kid, try SigningKey(alg: alg, rawRepresentation: sealer.open(sealed, associatedData: Self.aad("signing_keys", kid, 1))))
            } catch {
                throw SealError(what: "signing key \(kid)", remedy: Self.signingKeyRemedy)
            }
            // A rotation that raced this read has already put its newer key there: keep it.
            return openedSigningKeys.withLockedValue { cache in
                if let newer = cache[purpose], newer.key.alg == alg { return newer }
                cache[purpose] = opened
                return opened
            }
        }
        return try rotateSigningKey(purpose: purpose, alg: alg)
    }

    /// Adds a new signing key of `alg` for `purpose` and retires the current one (its public
    /// key still verifies the tokens it signed until they expire). Rows of `purpose` that do
    /// not authenticate are deleted (and logged): a rotation is the remedy for them.
    @discardableResult
    public func rotateSigningKey(purpose: String, alg: JWSAlgorithm = .eddsa) throws -> (kid: String, key: SigningKey) {
        let (kid, key, _) = try installSigningKey(purpose: purpose, alg: alg, dropEarlier: false)
        return (kid, key)
    }

    /// A compromise rotation: adds a new signing key of `alg` for `purpose` and deletes every
    /// earlier one in the same transaction, so none is published or verifies anything any
    /// more: every token they signed stops verifying at once. Returns the new kid and the dropped ones.
    public func rotateCompromisedSigningKey(purpose: String, alg: JWSAlgorithm = .eddsa) throws -> (kid: String, dropped: [String]) {
        let (kid, _, dropped) = try installSigningKey(purpose: purpose, alg: alg, dropEarlier: true)
        return (kid, dropped)
    }

    private func installSigningKey(purpose: String, alg: JWSAlgorithm, dropEarlier: Bool) throws -> (kid: String, key: SigningKey, dropped: [String]) {
        let key = try SigningKey(generating: alg)
        let kid = JWT.thumbprint(publicKey: key.publicKey, alg: alg)
        let sealed = try sealer.seal(key.rawRepresentation, associatedData: Self.aad("signing_keys", kid, 1))
        let now = clock.nowMicros()
        var dropped: [String] = []
        try read { db in
            try db.transaction {
                var forged: [Int64] = []
                try db.prepare("SELECT \(AuthenticatedTable.signingKeys.selection), rowid FROM signing_keys WHERE purpose = ?").bind(.text(purpose)).rows { row in
                    if !rows.isAuthentic(.signingKeys, row) { reportTampered(.signingKeys, row); forged.append(row.int(AuthenticatedTable.signingKeys.macColumn + 1)) }
                    return true
                }
                for rowid in forged { try db.prepare("DELETE FROM signing_keys WHERE rowid = ?").bind(.int(rowid)).run() }
                if dropEarlier {
                    try db.prepare("SELECT kid FROM signing_keys WHERE purpose = ? ORDER BY created_us, rowid").bind(.text(purpose))
                        .rows { dropped.append($0.text(0)); return true }
                    try db.prepare("DELETE FROM signing_keys WHERE purpose = ?").bind(.text(purpose)).run()
                } else {
                    try update(db, .signingKeys, set: "retired_us = ?", [.int(now)], where: "purpose = ? AND retired_us IS NULL", [.text(purpose)])
                }
                try db.prepare("INSERT INTO signing_keys(kid, purpose, alg, public_key, sealed_private, created_us) VALUES (?, ?, ?, ?, ?, ?)")
                    .bind(.text(kid), .text(purpose), .text(alg.rawValue), .blob(key.publicKey), .blob(sealed), .int(now)).run()
                try authenticate(db, .signingKeys, key: [.text(kid)])
            }
        }
        openedSigningKeys.withLockedValue { $0[purpose] = (kid, key) }
        return (kid, key, dropped)
    }

    /// Public keys for verification and the JWKS: current and retired, newest first. Only
    /// rows that authenticate, of an algorithm the daemon knows: a key inserted without the
    /// master key verifies nothing.
    public func publicKeys(purpose: String? = nil) throws -> [(kid: String, alg: JWSAlgorithm, publicKey: [UInt8], retiredMicros: Int64?)] {
        try read { db in
            var out: [(String, JWSAlgorithm, [UInt8], Int64?)] = []
            let columns = AuthenticatedTable.signingKeys.selection
            let s = try purpose.map { try db.prepare("SELECT \(columns) FROM signing_keys WHERE purpose = ? ORDER BY created_us DESC").bind(.text($0)) }
                ?? db.prepare("SELECT \(columns) FROM signing_keys ORDER BY created_us DESC")
            try s.rows { row in
                if !rows.isAuthentic(.signingKeys, row) { reportTampered(.signingKeys, row) }
                else if let alg = JWSAlgorithm(rawValue: row.text(2)) { out.append((row.text(0), alg, row.blob(3), row.optionalInt(6))) }
                return true
            }
            return out
        }
    }

    // MARK: Sealing

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

/// A sealed value that does not open, or a stored row that does not authenticate:
/// tampered, moved, or written under another master key. Answered as DATA_LOSS.
public struct SealError: Error, CustomStringConvertible {
    public var what: String
    /// What an operator does about it.
    public var remedy: String
    public var description: String {
        "\(what) failed its integrity check (tampered, moved, or sealed under another master key); it was not used; \(remedy)"
    }
}
