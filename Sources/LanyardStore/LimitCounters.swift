import LanyardCore

/// One counter of a grant's use (issue 19): `calls` (rate) or `spent` (budget), in the
/// period that starts at `periodStartMicros`.
public struct LimitCounter: Sendable, Equatable {
    public var agentID: String
    public var capability: String
    public var kind: String
    public var periodStartMicros: Int64
    public var used: Int64
}

extension Store {
    static let callsKind = "calls"
    static let spentKind = "spent"

    /// What `capability`'s grant to `agentID` used in the periods holding `nowMicros`
    /// (`on`: inside the writer's transaction). A counter row that does not authenticate
    /// throws `SealError`: a counter edited at rest never gives an agent more.
    package func limitUsage(agentID: String, capability: String, limits: GrantLimits, nowMicros: Int64,
                            on db: SQLiteConnection? = nil) throws -> LimitUsage {
        func run(_ db: SQLiteConnection) throws -> LimitUsage {
            var usage = LimitUsage()
            let s = try db.prepare("SELECT \(AuthenticatedTable.limitCounters.selection) FROM limit_counters WHERE agent_id = ? AND capability = ?")
            try s.bind(.text(agentID), .text(capability))
            try s.rows { row in
                try authentic(.limitCounters, row, remedy: "an admin resets the counter: lanyardctl limits reset --agent AGENT") { row in
                    let (kind, start, used) = (row.text(2), row.int(3), row.int(4))
                    if kind == Self.callsKind, let rate = limits.rate, rate.period.start(of: nowMicros) == start { usage.calls = used }
                    if kind == Self.spentKind, let budget = limits.budget, budget.period.start(of: nowMicros) == start { usage.spent = used }
                }
                return true
            }
            return usage
        }
        if let db { return try run(db) }
        return try read(run)
    }

    /// Counts one decision (and its `amount` against a budget) on the writer's connection,
    /// starting a fresh period when the stored one has ended.
    package func countUse(agentID: String, capability: String, limits: GrantLimits, amount: Int64, nowMicros: Int64,
                          used: LimitUsage, on db: SQLiteConnection) throws {
        func add(_ kind: String, _ start: Int64, _ value: Int64) throws {
            try db.prepare("""
                INSERT INTO limit_counters(agent_id, capability, kind, period_start, used) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT(agent_id, capability, kind) DO UPDATE SET period_start = excluded.period_start, used = excluded.used
                """)
                .bind(.text(agentID), .text(capability), .text(kind), .int(start), .int(value)).run()
            try authenticate(db, .limitCounters, key: [.text(agentID), .text(capability), .text(kind)])
        }
        if let rate = limits.rate { try add(Self.callsKind, rate.period.start(of: nowMicros), used.calls + 1) }
        if let budget = limits.budget { try add(Self.spentKind, budget.period.start(of: nowMicros), used.spent + amount) }
    }

    /// The stored counters (of one agent, or all), in key order.
    public func limitCounters(agentID: String? = nil) throws -> [LimitCounter] {
        try read { db in
            let s = try db.prepare("SELECT \(AuthenticatedTable.limitCounters.selection) FROM limit_counters"
                                   + (agentID == nil ? "" : " WHERE agent_id = ?") + " ORDER BY agent_id, capability, kind")
            if let agentID { try s.bind(.text(agentID)) }
            var out: [LimitCounter] = []
            try s.rows { row in
                if rows.isAuthentic(.limitCounters, row) {
                    out.append(LimitCounter(agentID: row.text(0), capability: row.text(1), kind: row.text(2), periodStartMicros: row.int(3), used: row.int(4)))
                } else {
                    reportTampered(.limitCounters, row)
                }
                return true
            }
            return out
        }
    }

    /// Removes an agent's counters (of one capability, or all): an admin's reset, committed with its audit record.
    package func resetLimits(agentID: String, capability: String?) -> Mutation {
        { db in
            let s = try db.prepare("DELETE FROM limit_counters WHERE agent_id = ?" + (capability == nil ? "" : " AND capability = ?"))
            try s.bind([.text(agentID)] + (capability.map { [SQLValue.text($0)] } ?? []))
            try s.run()
        }
    }
}
