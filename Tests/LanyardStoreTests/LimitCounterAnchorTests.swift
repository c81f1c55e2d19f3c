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
    func count(_ store: Store, _ n: Int, agent: String = "agent-a", nowMicros: Int64 = 1) async throws {
        for _ in 0..<n {
            try await store.audit.append(AuditRecord(event: "authorize"), with: { db in
                let used = try store.limitUsage(agent: agent, capability: "pay:charge", limits: Self.limits, nowMicros: nowMicros, on: db)
                try store.countUse(agent: agent, capability: "pay:charge", limits: Self.limits, amount: 0, nowMicros: nowMicros, used: used, on: db)
            })
        }
    }

    func calls(_ store: Store, agent: String = "agent-a", nowMicros: Int64 = 1) throws -> Int64 {
        try store.limitUsage(agent: agent, capability: "pay:charge", limits: Self.limits, nowMicros: nowMicros).calls
    }

    @Test(arguments: ["none", "delete", "rollback", "delete one of two", "delete the head too", "roll the head back too"])
    func deletedOrRolledBackCountersAreRefusedUntilResetAll(attack: String) async throws {
        let dir = TestSupport.tempDir("limits")
        defer { TestSupport.remove(dir) }
        var (saved, savedHead) = ("", "")
        do {
            let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
            try await count(store, 2)
            try await count(store, 1, agent: "agent-b")
            saved = try store.read { db in
                try db.prepare("SELECT used, hex(mac) FROM limit_counters WHERE agent = 'agent-a'").one { "used = \($0.int(0)), mac = X'\($0.text(1))'" } ?? ""
            }
            savedHead = try store.read { db in
                try db.prepare("SELECT seq, hash, hex(limits_digest), hex(mac) FROM audit_head").one {
                    "seq = \($0.int(0)), hash = '\($0.text(1))', limits_digest = X'\($0.text(2))', mac = X'\($0.text(3))'"
                } ?? ""
            }
            try await count(store, 3)
            #expect(try calls(store) == 5)
            store.audit.close()
        }
        let db = try SQLiteConnection(path: dir + "/lanyard.db")
        switch attack {
        case "delete": try db.exec("DELETE FROM limit_counters")
        case "rollback": try db.exec("UPDATE limit_counters SET \(saved) WHERE agent = 'agent-a'")  // an authentic row, 3 uses ago
        case "delete one of two": try db.exec("DELETE FROM limit_counters WHERE agent = 'agent-b'")
        case "delete the head too": try db.exec("DELETE FROM audit_head; DELETE FROM limit_counters")
        case "roll the head back too":  // the head and the counters of 3 uses ago, all authentic; the chain left as it is
            try db.exec("UPDATE audit_head SET \(savedHead); UPDATE limit_counters SET \(saved) WHERE agent = 'agent-a'")
        default: break
        }

        let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        let headAttacked = attack.hasSuffix("too")
        #expect(store.audit.isAnchored == !headAttacked)
        guard attack != "none" else {
            #expect(try calls(store) == 5 && calls(store, agent: "agent-b") == 1)
            store.audit.close()
            return
        }
        #expect(throws: SealError.self, "\(attack)") { try calls(store) }
        #expect(throws: SealError.self, "\(attack)") { try calls(store, agent: "agent-b") }
        #expect(Store.unanchoredCounters.description.contains("lanyardctl limits reset --all"))
        // An admin's reset of one agent does not vouch for the others; a reset of every counter does.
        try await store.audit.append(AuditRecord(event: "admin.limits.reset"), with: store.resetLimits(agent: "agent-b", capability: nil))
        #expect(throws: SealError.self) { try calls(store) }
        try await store.audit.append(AuditRecord(event: "admin.limits.reset"), with: store.resetLimits(agent: nil, capability: nil))
        store.limitCountersReset()
        #expect(try calls(store) == 0)
        try await count(store, 1)
        #expect(try store.verifyAudit().ok == !headAttacked)
        store.audit.close()
        guard !headAttacked else { return }  // the head never moves over a broken chain: `audit verify` is the operator's next step

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
            try await count(store, 4, agent: "agent-b")
            try await store.audit.append(AuditRecord(event: "admin.limits.reset"), with: store.resetLimits(agent: "agent-a", capability: "pay:charge"))
            store.audit.close()
        }
        let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        defer { store.audit.close() }
        #expect(try calls(store) == 0 && calls(store, agent: "agent-b") == 4)
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

    /// A count committed after its period ended (its time read before the boundary, or a
    /// clock stepped back) goes into the later period stored, never back over it.
    @Test func aLateCommitCountsIntoTheLaterPeriod() async throws {
        let dir = TestSupport.tempDir("limits")
        defer { TestSupport.remove(dir) }
        let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        defer { store.audit.close() }
        let day: Int64 = 86_400 * 1_000_000
        try await count(store, 3, nowMicros: day + 5)     // day 2: 3 uses
        try await count(store, 1, nowMicros: day - 5)     // read in day 1, committed after
        #expect(try calls(store, nowMicros: day + 6) == 4)
        #expect(try calls(store, nowMicros: day - 4) == 4, "the later period is what counts")
    }

    /// A trigger (or view) planted at rest could rewrite a row between the daemon's write and
    /// its MAC: a database holding one is refused at startup, naming it.
    @Test func aPlantedTriggerIsRefusedAtStartup() async throws {
        let dir = TestSupport.tempDir("limits")
        defer { TestSupport.remove(dir) }
        do {
            let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
            try await count(store, 1)
            store.audit.close()
        }
        try SQLiteConnection(path: dir + "/lanyard.db").exec("""
            CREATE TRIGGER zero AFTER UPDATE OF used ON limit_counters BEGIN UPDATE limit_counters SET used = 0 WHERE rowid = NEW.rowid; END;
            """)
        #expect { try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger) } throws: {
            "\($0)".contains("trigger 'zero' that Lanyard never creates")
        }
    }
}
