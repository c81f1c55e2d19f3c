#if canImport(Glibc)
import Glibc
#endif
import LanyardCore
import LanyardCrypto
@testable import LanyardStore
import LanyardTestSupport
import Logging
import Testing

/// The storage barrier (docs/security.md, "someone with the disk but not the master key"):
/// every column of every authenticated row is covered by its MAC, and a row edited, copied
/// under another key, or inserted without the key does not authenticate.
@Suite(.serialized)
struct RowAuthenticationTests {
    let logger = Logger(label: "test")

    /// A store with one row in every authenticated table, written through the store's own API.
    func populatedStore(_ dir: String) throws -> Store {
        // One reader: the tests change a row in a savepoint and read it back through the store.
        let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger, readers: 1)
        func commit(_ m: Mutation) throws { try store.read { db in try db.transaction { try m(db) } } }
        _ = try store.recordPolicy(version: "v1", path: "p", source: "s", agentNames: ["a"], nowMicros: 1)
        let machine = ApprovalMachine(risk: .high, digest: "d1", requesterUID: 1000, quorum: 2, expiresMicros: 5, timeoutMicros: 3)
        try commit(store.insertApproval(StoredApproval(
            id: "ap1", machine: machine, bindingCode: "ABC-123", agentID: "agent-id", agent: "a", uid: 1000, pid: 42, exe: "/bin/x",
            capabilities: ["deploy:production"], resource: "r", args: ["to": "alice"], amount: "10 EUR", reason: "why",
            createdMicros: 1, decidedReason: "", unit: "agent.service")))
        var approved = machine
        approved.approvers = [2000]
        try commit(store.saveApproval("ap1", approved, from: .pending, decidedReason: "approved by uid 2000"))
        try commit(store.insertStanding(agentID: "agent-id", capability: "github:push", resource: "r", untilMicros: 9, approver: "uid 2000", approvalID: "ap2"))
        let lease = Lease(id: "l1", agentID: "agent-id", agent: "a", service: "vault", kind: .openbao, scope: ["vault:read"], version: 1,
                          issuedMicros: 1, expiresMicros: 2)
        try commit(store.insertLease(lease, secretHash: "h1", upstream: "accessor-1"))
        try commit(store.endLeases(["l1"], as: .revoked, reason: "test", nowMicros: 3))  // queues the upstream revocation
        let (_, put) = try store.putSecret(service: "openai", value: Array("sk-1".utf8), nowMicros: 1)
        try commit(put)
        _ = try store.signingKey(purpose: "identity")
        _ = try store.serviceVersion("github")
        try commit(store.recordIdentity(jti: String(repeating: "j", count: 32), agentID: "agent-id", audience: "svc", expiresMicros: 9))
        var limits = GrantLimits()
        limits.rate = .init(count: 5, period: .hour)
        try commit { [limits] db in try store.countUse(agent: "a", capability: "github:push", limits: limits, amount: 0, nowMicros: 1, used: LimitUsage(), on: db) }
        // The audit writer authenticates the head (which holds the counters' digest) as it commits; these commits bypass it.
        try store.read { db in try store.rows.authenticate(db, .auditHead, key: [.int(1)]) }
        return store
    }

    /// The key of the one row each table holds in `populatedStore`.
    func key(_ table: AuthenticatedTable, _ store: Store) throws -> [SQLValue] {
        try store.read { db in
            let typed = table.key.map { "typeof(\($0)), \($0)" }.joined(separator: ", ")
            let s = try db.prepare("SELECT \(typed) FROM \(table.name) LIMIT 1")
            return try #require(try s.one { row in
                (0..<Int32(table.key.count)).map { i in row.text(2 * i) == "integer" ? SQLValue.int(row.int(2 * i + 1)) : SQLValue.text(row.text(2 * i + 1)) }
            })
        }
    }

    /// The MAC covers every column of the table but `mac` and those declared informational.
    @Test(arguments: AuthenticatedTable.all.map(\.name))
    func everyColumnIsCovered(table name: String) throws {
        let dir = TestSupport.tempDir("rows")
        defer { TestSupport.remove(dir) }
        let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        defer { store.audit.close() }
        let table = try #require(AuthenticatedTable.all.first { $0.name == name })
        let columns = try store.read { db in
            var out: Set<String> = []
            try db.prepare("SELECT name FROM pragma_table_info('\(name)')").rows { out.insert($0.text(0)); return true }
            return out
        }
        #expect(columns == Set(table.columns + table.added + table.unauthenticated + ["mac"]))
    }

    /// Changing any one column of any authenticated row, or its MAC, is detected; restored,
    /// the row verifies again.
    @Test func changingAnyColumnIsDetected() throws {
        let dir = TestSupport.tempDir("rows")
        defer { TestSupport.remove(dir) }
        let store = try populatedStore(dir)
        defer { store.audit.close() }
        for table in AuthenticatedTable.all {
            let key = try key(table, store)
            #expect(try store.rowIsAuthentic(table, key: key) == true, "\(table.name): the untouched row")
            for column in table.columns + table.added + ["mac"] {
                let change = """
                    UPDATE \(table.name) SET \(column) = CASE
                      WHEN \(column) IS NULL THEN 0 WHEN typeof(\(column)) = 'integer' THEN \(column) + 1
                      WHEN typeof(\(column)) = 'blob' THEN \(column) || x'00' ELSE \(column) || 'x' END
                    """
                try store.read { db in try db.exec("SAVEPOINT flip; \(change)") }
                let changedKey = table.key.contains(column) ? try self.key(table, store) : key
                #expect(try store.rowIsAuthentic(table, key: changedKey) == false, "\(table.name).\(column) changed and still authenticates")
                try store.read { db in try db.exec("ROLLBACK TO flip; RELEASE flip") }
            }
            #expect(try store.rowIsAuthentic(table, key: key) == true, "\(table.name): restored")
        }
    }

    /// A row copied under another primary key with its MAC, or inserted without one, does
    /// not authenticate: a MAC binds its table and row.
    @Test func copiedAndInsertedRowsDoNotAuthenticate() throws {
        let dir = TestSupport.tempDir("rows")
        defer { TestSupport.remove(dir) }
        let store = try populatedStore(dir)
        defer { store.audit.close() }
        try store.read { db in
            try db.exec("""
                INSERT INTO approvals(\(AuthenticatedTable.approvals.selection))
                  SELECT 'ap-copy', \(AuthenticatedTable.approvals.selection.split(separator: ",").dropFirst().joined(separator: ","))
                  FROM approvals WHERE id = 'ap1';
                INSERT INTO signing_keys(kid, purpose, alg, public_key, sealed_private, created_us) VALUES ('planted', 'identity', 'EdDSA', x'00', x'00', 99);
                """)
        }
        #expect(try store.rowIsAuthentic(.approvals, key: [.text("ap-copy")]) == false)
        #expect(try store.approval(id: "ap1") != nil)
        #expect(throws: SealError.self) { try store.approval(id: "ap-copy") }
        #expect(try store.approvals(includeDecided: true, nowMicros: 0).map(\.id) == ["ap1"])
        #expect(try store.publicKeys(purpose: "identity").contains { $0.kid == "planted" } == false)
        #expect(try store.publicKeys(purpose: "identity").count == 1)
    }

    /// Deleting a queued upstream revocation, or altering it, does not spare the upstream
    /// credential: the next start queues it again from its lease. One done is not queued.
    /// A deleted rotation record of a used service makes it due for rotation at once.
    @Test func deletedQueueAndRotationRowsFailTowardRevoking() throws {
        let dir = TestSupport.tempDir("rows")
        defer { TestSupport.remove(dir) }
        let clock = ManualClock()
        do {
            let store = try populatedStore(dir)
            #expect(try store.dueRevocations(nowMicros: .max).map(\.leaseID) == ["l1"])
            try store.read { db in try db.exec("DELETE FROM upstream_revocations") }
            #expect(try store.dueRevocations(nowMicros: .max).isEmpty)
            store.audit.close()
        }
        do {
            let store = try Store(directory: dir, masterKey: testKey, clock: clock, logger: logger)
            defer { store.audit.close() }
            #expect(try store.dueRevocations(nowMicros: .max).map(\.upstream) == ["accessor-1"])
            try store.read { db in try db.exec("UPDATE upstream_revocations SET next_us = 9000000000000000000") }
            #expect(try store.dueRevocations(nowMicros: .max).isEmpty)  // altered: not trusted
        }
        do {
            let store = try Store(directory: dir, masterKey: testKey, clock: clock, logger: logger)
            defer { store.audit.close() }
            let due = try store.dueRevocations(nowMicros: clock.now)
            #expect(due.map(\.leaseID) == ["l1"])
            try store.read { db in try db.transaction { try store.finishRevocation("l1")(db) } }
            #expect(try store.rowIsAuthentic(.leases, key: [.text("l1")]) == true)

            try store.read { db in try db.exec("DELETE FROM service_versions") }
            try store.read { db in try db.transaction { try store.insertLease(Lease(id: "l2", agentID: "x", agent: "a", service: "github", kind: .opaque, scope: ["github:read_repo"], version: 4, issuedMicros: 1, expiresMicros: 2), secretHash: nil)(db) } }
            #expect(try store.serviceVersion("github") == (version: 5, rotatedMicros: 0))
        }
        let store = try Store(directory: dir, masterKey: testKey, clock: clock, logger: logger)
        defer { store.audit.close() }
        #expect(try store.dueRevocations(nowMicros: .max).isEmpty, "a finished revocation was queued again")
        #expect(try store.serviceVersion("github").version == 5)
    }

    /// The chain's end is authenticated in every commit: records deleted from the tail after
    /// the last checkpoint (a kill -9 leaves up to 30 s unanchored), or a well-formed record
    /// appended at rest, are reported, and neither head nor checkpoint moves over them.
    @Test func recordsRemovedOrAppendedAfterTheCheckpointAreReported() async throws {
        var r = AuditRecord(event: "authorize")
        r.decision = "allow"
        for attack in ["remove", "append"] {
            let dir = TestSupport.tempDir("rows")
            defer { TestSupport.remove(dir) }
            var last = AuditRecord(event: "")
            do {
                let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
                for _ in 0..<3 { last = try await store.audit.append(r) }
                try AuditCheckpoint.write(store: store)
                #expect(store.audit.isAnchored)
                if attack == "remove" { for _ in 0..<2 { last = try await store.audit.append(r) } }
                #expect(try store.verifyAudit().ok)
                store.audit.close()
            }
            let db = try SQLiteConnection(path: dir + "/lanyard.db")
            if attack == "remove" {
                try db.exec("DELETE FROM audit WHERE seq = 5")
            } else {
                var forged = r
                forged.seq = last.seq + 1
                forged.timeMicros = last.timeMicros
                forged.approver = "uid 4242"
                forged.prevHash = last.hash
                forged.hash = SHA256.hex(forged.canonicalBytes)
                try db.exec("""
                    INSERT INTO audit(seq, time_us, event, decision, approver, prev_hash, hash)
                    VALUES (\(forged.seq), \(forged.timeMicros), 'authorize', 'allow', 'uid 4242', '\(forged.prevHash)', '\(forged.hash)')
                    """)
            }
            let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
            #expect(!store.audit.isAnchored, "\(attack)")
            let v = try store.verifyAudit()
            #expect(!v.ok && v.reason.contains("authenticated head"), "\(attack): \(v)")
            var next = r
            next.decision = "deny"
            try await store.audit.append(next)
            let after = try store.verifyAudit()
            #expect(!after.ok, "\(attack): a new record anchored the tampered chain: \(after)")
            #expect(throws: StoreError.self) { try AuditCheckpoint.write(store: store) }
            #expect(TestSupport.readText(dir + "/audit.checkpoint")?.contains("seq=3\n") == true, "\(attack): the checkpoint moved")
            store.audit.close()
        }
    }

    /// Two agents' ids swapped at rest would hand each the other's approvals and leases:
    /// both get new ids instead, matching nothing of either.
    @Test func swappedAgentIDsAreReplaced() throws {
        let dir = TestSupport.tempDir("rows")
        defer { TestSupport.remove(dir) }
        let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        defer { store.audit.close() }
        let ids = try store.recordPolicy(version: "v1", path: "p", source: "s", agentNames: ["a", "b"], nowMicros: 1)
        #expect(try store.recordPolicy(version: "v1", path: "p", source: "s", agentNames: ["a", "b"], nowMicros: 2) == ids)
        try store.read { db in
            try db.exec("UPDATE agents SET id = 'tmp' WHERE name = 'a'; UPDATE agents SET id = '\(ids["a"]!)' WHERE name = 'b'; UPDATE agents SET id = '\(ids["b"]!)' WHERE name = 'a'")
        }
        let after = try store.recordPolicy(version: "v2", path: "p", source: "s", agentNames: ["a", "b"], nowMicros: 3)
        #expect(Set(after.values).isDisjoint(with: Set(ids.values)) && after.count == 2, "\(after) vs \(ids)")
    }

    /// Finding 11: deleting the newest version row of a static secret never serves the
    /// older value; deleting its current-version record fails closed too.
    @Test func deletingTheNewestSecretVersionFailsClosed() throws {
        let dir = TestSupport.tempDir("rows")
        defer { TestSupport.remove(dir) }
        let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        defer { store.audit.close() }
        for value in ["sk-old", "sk-new"] {
            let (_, put) = try store.putSecret(service: "openai", value: Array(value.utf8), nowMicros: 1)
            try store.read { db in try db.transaction { try put(db) } }
        }
        #expect(try store.currentSecret(service: "openai").map { String(decoding: $0.value, as: UTF8.self) } == "sk-new")
        try store.read { db in try db.exec("DELETE FROM secrets WHERE version = 2") }
        #expect(throws: SealError.self) { try store.currentSecret(service: "openai") }
        try store.read { db in try db.exec("DELETE FROM secret_heads") }
        #expect(throws: SealError.self) { try store.currentSecret(service: "openai") }
        // A new put starts past every version ever used, and is served.
        let (version, put) = try store.putSecret(service: "openai", value: Array("sk-third".utf8), nowMicros: 2)
        #expect(version == 2)
        try store.read { db in try db.transaction { try put(db) } }
        #expect(try store.currentSecret(service: "openai").map { String(decoding: $0.value, as: UTF8.self) } == "sk-third")
    }

    /// RFC 5869 test case 3 (no salt, no info), through libcrypto.
    @Test func hkdfMatchesRFC5869() throws {
        let okm = try HKDF.sha256(key: [UInt8](repeating: 0x0B, count: 22), info: "", count: 42)
        #expect(Hex.encode(okm) == "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8")
        #expect(try HKDF.sha256(key: testKey, info: "a") != HKDF.sha256(key: testKey, info: "b"))
    }

    /// Security II finding 3: args come back exactly as the digest covered them.
    @Test func approvalArgsRoundTripExactly() throws {
        let dir = TestSupport.tempDir("rows")
        defer { TestSupport.remove(dir) }
        let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        defer { store.audit.close() }
        let args = ["to": "mallory\nto=alice", "amount=1": "1000000", "": "", "nul": "a\u{0}b", "ünï": "3:x4:yy", "7": ""]
        let machine = ApprovalMachine(risk: .medium, digest: "d", requesterUID: 1, quorum: 1, expiresMicros: 5, timeoutMicros: 3)
        let approval = StoredApproval(id: "ap", machine: machine, bindingCode: "c", agentID: "i", agent: "a", uid: 1, pid: 1, exe: "",
                                      capabilities: ["github:push"], resource: "", args: args, amount: "", reason: "", createdMicros: 1, decidedReason: "")
        try store.read { db in try db.transaction { try store.insertApproval(approval)(db) } }
        #expect(try store.approval(id: "ap")?.args == args)
        #expect(ApprovalArgs.decode(ApprovalArgs.encode(args)) == args)
        #expect(ApprovalArgs.decode("5:abc") == nil)
    }

    /// The process a lease is bound to is covered by its MAC (set, changed or cleared at rest,
    /// the row fails), and leases written before those columns existed keep authenticating
    /// after the migration that adds them.
    @Test func boundProcessIsCoveredAndOlderLeasesSurviveTheMigration() throws {
        let dir = TestSupport.tempDir("rows")
        defer { TestSupport.remove(dir) }
        var store: Store? = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger, readers: 1)
        func commit(_ m: Mutation) throws { try store!.read { db in try db.transaction { try m(db) } } }
        let bound = Lease(id: "bound", agentID: "i", agent: "a", service: "github", kind: .opaque, scope: ["github:push"], version: 1,
                          issuedMicros: 1, expiresMicros: 2, process: BoundProcess(pid: 4242, startTime: 99))
        try commit(store!.insertLease(bound, secretHash: "h-bound"))
        #expect(try store!.lease(id: "bound")?.process == BoundProcess(pid: 4242, startTime: 99))
        for change in ["process_pid = NULL", "process_start = NULL", "process_pid = 4243", "process_start = 100"] {
            try store!.read { db in try db.exec("SAVEPOINT flip; UPDATE leases SET \(change)") }
            #expect(throws: SealError.self, "\(change) still authenticates") { try store!.lease(id: "bound") }
            try store!.read { db in try db.exec("ROLLBACK TO flip; RELEASE flip") }
        }
        #expect(try store!.processBoundLeases().map(\.id) == ["bound"])

        // An unbound lease, then the database as it was before the migration that adds the columns.
        let bindingMigration = try #require(Schema.migrations.firstIndex { $0.contains("ADD COLUMN process_pid") })
        try commit(store!.insertLease(Lease(id: "old", agentID: "i", agent: "a", service: "github", kind: .opaque, scope: ["github:push"],
                                            version: 1, issuedMicros: 1, expiresMicros: 2), secretHash: "h-old"))
        try store!.read { db in
            try db.exec("""
                DELETE FROM leases WHERE id = 'bound'; DROP INDEX leases_bound;
                ALTER TABLE leases DROP COLUMN process_pid; ALTER TABLE leases DROP COLUMN process_start;
                DROP TABLE IF EXISTS limit_counters; ALTER TABLE audit DROP COLUMN reason_code; ALTER TABLE audit_head DROP COLUMN limits_digest; ALTER TABLE approvals DROP COLUMN unit;
                PRAGMA user_version = \(bindingMigration);
                """)
        }
        store!.audit.close()
        store = nil
        let upgraded = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        defer { upgraded.audit.close() }
        #expect(try upgraded.rowIsAuthentic(.leases, key: [.text("old")]) == true)
        #expect(try upgraded.lease(id: "old")?.process == nil)
    }

    /// A database from before row MACs is adopted at the first start with the key: its rows
    /// authenticate, its args are rewritten losslessly (as well as the old format allowed),
    /// and the audit chain is anchored.
    @Test func anOlderDatabaseIsAdoptedOnce() async throws {
        let dir = TestSupport.tempDir("rows")
        defer { TestSupport.remove(dir) }
        let db = try SQLiteConnection(path: dir + "/lanyard.db")
        for (i, sql) in Schema.migrations.enumerated() where i < 5 { try db.exec(sql) }
        try db.exec("""
            PRAGMA user_version = 5;
            INSERT INTO approvals(id, digest, binding_code, agent_id, agent, uid, pid, capabilities, args, risk, state, created_us, expires_us)
              VALUES ('old', 'd', 'c', 'i', 'a', 1, 1, 'github:push', 'amount=5' || char(10) || 'to=bob', 2, 'pending', 1, 2);
            INSERT INTO secrets(service, version, sealed, created_us) VALUES ('openai', 1, x'00', 1), ('openai', 2, x'00', 2);
            """)
        let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        #expect(try store.approval(id: "old")?.args == ["amount": "5", "to": "bob"])
        #expect(try store.rowIsAuthentic(.secretHeads, key: [.text("openai")]) == true)
        #expect(try store.read { db in try db.prepare("SELECT version FROM secret_heads").one { $0.int(0) } } == 2)
        #expect(try store.verifyAudit().ok)
        store.audit.close()
        // Only once: a row inserted later without a MAC stays unauthenticated at every start.
        try db.exec("INSERT INTO approvals(id, digest, binding_code, agent_id, agent, uid, pid, capabilities, risk, state, created_us, expires_us) VALUES ('later', 'd', 'c', 'i', 'a', 1, 1, 'github:push', 2, 'approved', 1, 2)")
        let reopened = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        defer { reopened.audit.close() }
        #expect(throws: SealError.self) { try reopened.approval(id: "later") }
        #expect(try reopened.approval(id: "old") != nil)
    }

    /// Finding 10: a chain whose checkpoint is deleted, forged, or signed by a planted key is
    /// broken, and the daemon does not re-anchor it.
    @Test func aMissingOrForgedCheckpointIsABrokenChain() async throws {
        let dir = TestSupport.tempDir("rows")
        defer { TestSupport.remove(dir) }
        let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        defer { store.audit.close() }
        var r = AuditRecord(event: "authorize")
        r.decision = "allow"
        for _ in 0..<3 { try await store.audit.append(r) }
        try AuditCheckpoint.write(store: store)
        #expect(try store.verifyAudit().ok)
        let path = dir + "/audit.checkpoint"
        let good = try #require(TestSupport.readText(path))

        TestSupport.remove(path)
        var v = try store.verifyAudit()
        #expect(!v.ok && v.reason.contains("missing"), "\(v)")
        #expect(throws: StoreError.self) { try AuditCheckpoint.write(store: store) }
        #expect(access(path, F_OK) != 0, "a missing checkpoint was written again")

        // A checkpoint for a shorter chain, carrying the MAC of another: forged.
        TestSupport.write(good.replacingOccurrences(of: "seq=3", with: "seq=2"), to: path)
        v = try store.verifyAudit()
        #expect(!v.ok && v.reason.contains("does not authenticate"), "\(v)")
        #expect(throws: StoreError.self) { try AuditCheckpoint.write(store: store) }
        TestSupport.write(good, to: path)
        #expect(try store.verifyAudit().ok)
    }
}
