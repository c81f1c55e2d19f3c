import LanyardCore
import LanyardCrypto

/// One counter of a grant's use (issue 19): `calls` (rate) or `spent` (budget), in the
/// period that starts at `periodStartMicros`. Keyed by the agent's name in the policy, the
/// grant's identity: an agent's stored id can be re-assigned, its name cannot.
public struct LimitCounter: Sendable, Equatable {
    public var agent: String
    public var capability: String
    public var kind: String
    public var periodStartMicros: Int64
    public var used: Int64
}

extension Store {
    static let callsKind = "calls"
    static let spentKind = "spent"

    /// What `capability`'s grant to `agent` used in the periods holding `nowMicros` — or in
    /// a later period already stored (`LimitUsage`) — (`on`: inside the writer's
    /// transaction). A counter row that does not authenticate throws `SealError`: a counter
    /// edited at rest never gives an agent more.
    package func limitUsage(agent: String, capability: String, limits: GrantLimits, nowMicros: Int64,
                            on db: SQLiteConnection? = nil) throws -> LimitUsage {
        guard limitCountersAnchored.withLockedValue({ $0 }) else { throw Self.unanchoredCounters }
        func run(_ db: SQLiteConnection) throws -> LimitUsage {
            var usage = LimitUsage()
            let s = try db.prepare("SELECT \(AuthenticatedTable.limitCounters.selection) FROM limit_counters WHERE agent = ? AND capability = ?")
            try s.bind(.text(agent), .text(capability))
            try s.rows { row in
                try authentic(.limitCounters, row, remedy: "an admin resets every counter: lanyardctl limits reset --all") { row in
                    let (kind, start, used) = (row.text(2), row.int(3), row.int(4))
                    if kind == Self.callsKind, let rate = limits.rate, start >= rate.period.start(of: nowMicros) {
                        (usage.calls, usage.callsPeriodStart) = (used, start)
                    }
                    if kind == Self.spentKind, let budget = limits.budget, start >= budget.period.start(of: nowMicros) {
                        (usage.spent, usage.spentPeriodStart) = (used, start)
                    }
                }
                return true
            }
            return usage
        }
        if let db { return try run(db) }
        return try read(run)
    }

    /// Counts one decision (and its `amount` against a budget) on the writer's connection,
    /// into the period `used` was read in, or a fresh one when the stored one has ended.
    package func countUse(agent: String, capability: String, limits: GrantLimits, amount: Int64, nowMicros: Int64,
                          used: LimitUsage, on db: SQLiteConnection) throws {
        func add(_ kind: String, _ start: Int64, _ value: (partialValue: Int64, overflow: Bool)) throws {
            guard !value.overflow else { throw StoreError("the \(kind) counter of \(agent)'s \(capability) would overflow") }
            let key: [SQLValue] = [.text(agent), .text(capability), .text(kind)]
            var digest = try countersDigest(db)
            let old = try db.prepare("SELECT period_start, used FROM limit_counters WHERE \(AuthenticatedTable.limitCounters.keyMatch)")
            try old.bind(key)
            if let (oldStart, oldUsed) = try old.one({ ($0.int(0), $0.int(1)) }) {
                digest.toggle(rows.counterTerm(agent, capability, kind, oldStart, oldUsed))
            }
            digest.toggle(rows.counterTerm(agent, capability, kind, start, value.partialValue))
            try db.prepare("""
                INSERT INTO limit_counters(agent, capability, kind, period_start, used) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT(agent, capability, kind) DO UPDATE SET period_start = excluded.period_start, used = excluded.used
                """)
                .bind(.text(agent), .text(capability), .text(kind), .int(start), .int(value.partialValue)).run()
            try authenticate(db, .limitCounters, key: key)
            try setCountersDigest(db, digest)
        }
        if let rate = limits.rate {
            try add(Self.callsKind, used.callsPeriodStart ?? rate.period.start(of: nowMicros), used.calls.addingReportingOverflow(1))
        }
        if let budget = limits.budget {
            try add(Self.spentKind, used.spentPeriodStart ?? budget.period.start(of: nowMicros), used.spent.addingReportingOverflow(amount))
        }
    }

    /// The stored counters (of one agent, or all), in key order.
    public func limitCounters(agent: String? = nil) throws -> [LimitCounter] {
        try read { db in
            let s = try db.prepare("SELECT \(AuthenticatedTable.limitCounters.selection) FROM limit_counters"
                                   + (agent == nil ? "" : " WHERE agent = ?") + " ORDER BY agent, capability, kind")
            if let agent { try s.bind(.text(agent)) }
            var out: [LimitCounter] = []
            try s.rows { row in
                if rows.isAuthentic(.limitCounters, row) {
                    out.append(LimitCounter(agent: row.text(0), capability: row.text(1), kind: row.text(2), periodStartMicros: row.int(3), used: row.int(4)))
                } else {
                    reportTampered(.limitCounters, row)
                }
                return true
            }
            return out
        }
    }

    /// Removes an agent's counters (of one capability, or all; `agent` nil: every
    /// counter, which also anchors them again): an admin's reset, committed with its audit record.
    package func resetLimits(agent: String?, capability: String?) -> Mutation {
        { [self] db in
            guard let agent else {
                try db.run("DELETE FROM limit_counters")
                try setCountersDigest(db, CountersDigest())
                return
            }
            let match = "agent = ?" + (capability == nil ? "" : " AND capability = ?")
            let values = [.text(agent)] + (capability.map { [SQLValue.text($0)] } ?? [])
            var digest = try countersDigest(db)
            let s = try db.prepare("SELECT \(AuthenticatedTable.limitCounters.selection) FROM limit_counters WHERE \(match)")
            try s.bind(values)
            try s.rows { row in
                // A row edited at rest takes its unknown term with it: the digest stays unmatched until `reset --all`.
                if rows.isAuthentic(.limitCounters, row) { digest.toggle(rows.counterTerm(row.text(0), row.text(1), row.text(2), row.int(3), row.int(4))) }
                return true
            }
            try db.prepare("DELETE FROM limit_counters WHERE \(match)").bind(values).run()
            try setCountersDigest(db, digest)
        }
    }
}

extension Store {
    /// Every stored counter row, authentic or not.
    package func limitCounterRows() throws -> Int {
        try read { db in Int(try db.prepare("SELECT count(*) FROM limit_counters").one { $0.int(0) } ?? 0) }
    }

    /// After a committed reset of every counter: they match their digest again.
    package func limitCountersReset() { limitCountersAnchored.withLockedValue { $0 = true } }
}

// MARK: The counters' anchor

/// The XOR of one keyed term per counter row, kept in the authenticated audit head (and so
/// moved with the chain in every commit): a counter row deleted, or an older authentic copy
/// restored, at rest leaves the rows' digest different from it. The terms are MACs under
/// the row key, so without the master key no set of old rows can be chosen to match it.
struct CountersDigest: Equatable {
    var bytes = [UInt8](repeating: 0, count: 32)

    mutating func toggle(_ term: [UInt8]) {
        for i in bytes.indices { bytes[i] ^= term[i] }
    }
}

extension RowAuthenticator {
    /// One counter row's term of the digest.
    func counterTerm(_ agent: String, _ capability: String, _ kind: String, _ start: Int64, _ used: Int64) -> [UInt8] {
        mac(domain: "limit_counters digest", [agent, capability, kind, String(start), String(used)])
    }
}

extension Store {
    static let unanchoredCounters = SealError(
        what: "the grant limit counters (a counter row was deleted or an older copy restored at rest, so they do not match the audit head)",
        remedy: "limited grants are refused until an admin resets every counter: lanyardctl limits reset --all")

    /// The digest the audit head holds (no head yet, or none set: the empty set's).
    func countersDigest(_ db: SQLiteConnection) throws -> CountersDigest {
        let stored = try db.prepare("SELECT limits_digest FROM audit_head WHERE id = 1").one { $0.isNull(0) ? nil : $0.blob(0) } ?? nil
        return stored.map { CountersDigest(bytes: $0) } ?? CountersDigest()
    }

    /// Sets the head's digest; the writer authenticates the head when it moves it, in this commit.
    func setCountersDigest(_ db: SQLiteConnection, _ digest: CountersDigest) throws {
        try db.prepare("INSERT INTO audit_head(id, seq, hash, limits_digest) VALUES (1, 0, '', ?) ON CONFLICT(id) DO UPDATE SET limits_digest = excluded.limits_digest")
            .bind(.blob(digest.bytes)).run()
    }

    /// At startup: whether the counter rows match the digest in the authenticated audit
    /// head. A head from before the digest existed (NULL) adopts the rows as they are, once.
    static func countersAreAnchored(_ db: SQLiteConnection, rows: RowAuthenticator) throws -> Bool {
        var digest = CountersDigest()
        var count = 0
        try db.prepare("SELECT \(AuthenticatedTable.limitCounters.selection) FROM limit_counters").rows { row in
            count += 1
            if rows.isAuthentic(.limitCounters, row) { digest.toggle(rows.counterTerm(row.text(0), row.text(1), row.text(2), row.int(3), row.int(4))) }
            return true
        }
        let head = try db.prepare("SELECT \(AuthenticatedTable.auditHead.selection) FROM audit_head WHERE id = 1").one { row in
            (authentic: rows.isAuthentic(.auditHead, row), digest: row.isNull(3) ? nil : row.blob(3))
        }
        // Every database has its head from its first start (the migration that adopts rows):
        // one missing or forged was removed or replaced at rest.
        guard let head, head.authentic else { return false }
        guard let stored = head.digest else {
            if count > 0 {
                try db.prepare("UPDATE audit_head SET limits_digest = ? WHERE id = 1").bind(.blob(digest.bytes)).run()
                try rows.authenticate(db, .auditHead, key: [.int(1)])
            }
            return true
        }
        return ConstantTime.equal(stored, digest.bytes)
    }
}
