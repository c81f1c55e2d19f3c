import LanyardCore
import LanyardCrypto
@testable import LanyardStore
import LanyardTestSupport
import Logging
import Testing

/// Grant counters against someone with the disk but not the master key (issue 19): each
/// row's MAC stops an edit, and their digest in the authenticated audit head stops what a
/// MAC cannot — a row deleted (absence would mean "nothing used") or an older authentic
/// copy restored. Either leaves limited grants refused until an admin resets every counter.
@Suite(.serialized)
struct LimitCounterAnchorTests {
    let logger = Logger(label: "test")
    static let limits = { var l = GrantLimits(); l.rate = .init(count: 100, period: .day); return l }()

    /// Counts `n` uses of agent `agentID`'s grant, each committed with its record as the daemon does.
    func count(_ store: Store, _ n: Int, agentID: String = "agent-a") async throws {
        for _ in 0..<n {
            let used = try store.limitUsage(agentID: agentID, capability: "pay:charge", limits: Self.limits, nowMicros: 1)
            try await store.audit.append(AuditRecord(event: "authorize"), with: { db in
                try store.countUse(agentID: agentID, capability: "pay:charge", limits: Self.limits, amount: 0, nowMicros: 1, used: used, on: db)
            })
        }
    }

    func calls(_ store: Store, agentID: String = "agent-a") throws -> Int64 {
        try store.limitUsage(agentID: agentID, capability: "pay:charge", limits: Self.limits, nowMicros: 1).calls
    }

    @Test(arguments: ["none", "delete", "rollback", "delete one of two"])
    func deletedOrRolledBackCountersAreRefusedUntilResetAll(attack: String) async throws {
        let dir = TestSupport.tempDir("limits")
        defer { TestSupport.remove(dir) }
        var saved = ""
        do {
            let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
            try await count(store, 2)
            try await count(store, 1, agentID: "agent-b")
            saved = try store.read { db in
                try db.prepare("SELECT used, hex(mac) FROM limit_counters WHERE agent_id = 'agent-a'").one { "used = \($0.int(0)), mac = X'\($0.text(1))'" } ?? ""
            }
            try await count(store, 3)
            #expect(try calls(store) == 5)
            store.audit.close()
        }
        let db = try SQLiteConnection(path: dir + "/lanyard.db")
        switch attack {
        case "delete": try db.exec("DELETE FROM limit_counters")
        case "rollback": try db.exec("UPDATE limit_counters SET \(saved) WHERE agent_id = 'agent-a'")  // an authentic row, 3 uses ago
        case "delete one of two": try db.exec("DELETE FROM limit_counters WHERE agent_id = 'agent-b'")
        default: break
        }

        let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        #expect(store.audit.isAnchored)
        guard attack != "none" else {
            #expect(try calls(store) == 5 && calls(store, agentID: "agent-b") == 1)
            store.audit.close()
            return
        }
        #expect(throws: SealError.self, "\(attack)") { try calls(store) }
        #expect(throws: SealError.self, "\(attack)") { try calls(store, agentID: "agent-b") }
        #expect(Store.unanchoredCounters.description.contains("lanyardctl limits reset --all"))
        // An admin's reset of one agent does not vouch for the others; a reset of every counter does.
        try await store.audit.append(AuditRecord(event: "admin.limits.reset"), with: store.resetLimits(agentID: "agent-b", capability: nil))
        #expect(throws: SealError.self) { try calls(store) }
        try await store.audit.append(AuditRecord(event: "admin.limits.reset"), with: store.resetLimits(agentID: nil, capability: nil))
        store.limitCountersReset()
        #expect(try calls(store) == 0)
        try await count(store, 1)
        #expect(try store.verifyAudit().ok)
        store.audit.close()

        let reopened = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        defer { reopened.audit.close() }
        #expect(try calls(reopened) == 1, "the counters after reset --all are anchored again")
    }

    /// A reset of one agent's counters keeps the others anchored across a restart.
    @Test func aResetOfOneAgentKeepsTheDigest() async throws {
        let dir = TestSupport.tempDir("limits")
        defer { TestSupport.remove(dir) }
        do {
            let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
            try await count(store, 2)
            try await count(store, 4, agentID: "agent-b")
            try await store.audit.append(AuditRecord(event: "admin.limits.reset"), with: store.resetLimits(agentID: "agent-a", capability: "pay:charge"))
            store.audit.close()
        }
        let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        defer { store.audit.close() }
        #expect(try calls(store) == 0 && calls(store, agentID: "agent-b") == 4)
    }

    /// A database whose head predates the digest (migration 12 on a store with counters)
    /// adopts the rows as they are, once: the next restart checks them.
    @Test func anOlderHeadAdoptsTheCountersOnce() async throws {
        let dir = TestSupport.tempDir("limits")
        defer { TestSupport.remove(dir) }
        do {
            let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
            try await count(store, 3)
            store.audit.close()
            try store.read { db in
                try db.exec("UPDATE audit_head SET limits_digest = NULL")
                try store.rows.authenticate(db, .auditHead, key: [.int(1)])  // as the version before wrote it
            }
        }
        do {
            let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
            #expect(try calls(store) == 3)
            store.audit.close()
        }
        try SQLiteConnection(path: dir + "/lanyard.db").exec("DELETE FROM limit_counters")
        let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        defer { store.audit.close() }
        #expect(throws: SealError.self) { try calls(store) }
    }
}
