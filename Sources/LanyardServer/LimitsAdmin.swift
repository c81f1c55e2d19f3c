import LanyardCore
import LanyardStore
import LanyardWire

/// `lanyardctl limits show` / `limits reset` (issue 19): the grant limit counters of the
/// policy in force, and an admin's audited reset.
extension AdminService {
    func limitsShow(_ c: Lanyard_V1_LimitsShowRequest, _ policy: Policy) throws -> Lanyard_V1_LimitsShowResponse {
        let agents = try limitedAgents(c.agent, policy)
        let now = clock.nowMicros()
        var out = Lanyard_V1_LimitsShowResponse()
        for agent in agents {
            for (cap, limits) in agent.limits.sorted(by: { $0.key < $1.key }) {
                let used = try store.limitUsage(agent: agent.name, capability: cap.name, limits: limits, nowMicros: now)
                if let rate = limits.rate {
                    out.counters.append(.with {
                        $0.agent = agent.name
                        $0.capability = cap.name
                        $0.kind = "calls"
                        $0.used = used.calls
                        $0.limit = rate.count
                        $0.period = rate.period.rawValue
                        $0.periodEndsAt = rate.period.end(of: now) / 1_000_000
                    })
                }
                if let budget = limits.budget {
                    out.counters.append(.with {
                        $0.agent = agent.name
                        $0.capability = cap.name
                        $0.kind = "spent"
                        $0.used = used.spent
                        $0.limit = budget.amount
                        $0.unit = budget.unit
                        $0.period = budget.period.rawValue
                        $0.periodEndsAt = budget.period.end(of: now) / 1_000_000
                    })
                }
            }
        }
        return out
    }

    /// Removes an agent's counters (of one grant, or all), committed with its `admin.limits.reset` record.
    func limitsReset(_ c: Lanyard_V1_LimitsResetRequest, _ connection: Connection, _ snapshot: PolicySnapshot) async throws -> Lanyard_V1_LimitsResetResponse {
        if c.all {
            guard c.agent.isEmpty, c.capability.isEmpty else { throw CallError(.invalidArgument, "reset every counter (all) or one agent's, not both") }
            let count = try store.limitCounterRows()
            var r = record("limits.reset", connection, snapshot)
            r.decision = Decision.allow.rawValue
            r.outcome = "reset"
            r.reason = "every counter (\(count)) reset by admin uid \(connection.credentials.uid)"
            try await store.audit.append(r, with: store.resetLimits(agent: nil, capability: nil))
            store.limitCountersReset()
            return .with { $0.reset = UInt32(count) }
        }
        guard !c.agent.isEmpty, let agent = snapshot.policy.agent(named: c.agent) else {
            throw CallError(.notFound, "no agent '\(Inert.capped(c.agent, limit: 64))' in the policy; name one with --agent (see: lanyardctl agents list)")
        }
        let capability = c.capability.isEmpty ? nil : c.capability
        if let capability, !agent.limits.keys.contains(where: { $0.name == capability }) {
            throw CallError(.notFound, "agent '\(agent.name)' has no limits on '\(Inert.capped(capability, limit: 256))'; see: lanyardctl limits show --agent \(agent.name)")
        }
        let count = try store.limitCounters(agent: agent.name).filter { capability == nil || $0.capability == capability }.count
        var r = record("limits.reset", connection, snapshot)
        r.agent = agent.name
        r.agentID = agent.id
        r.capability = capability ?? ""
        r.decision = Decision.allow.rawValue
        r.outcome = "reset"
        r.reason = "\(count) counter(s) reset by admin uid \(connection.credentials.uid)"
        try await store.audit.append(r, with: store.resetLimits(agent: agent.name, capability: capability))
        return .with { $0.reset = UInt32(count) }
    }

    private func limitedAgents(_ name: String, _ policy: Policy) throws -> [Agent] {
        if name.isEmpty { return policy.agents.filter { !$0.limits.isEmpty }.sorted { $0.name < $1.name } }
        guard let agent = policy.agent(named: name) else {
            throw CallError(.notFound, "no agent '\(Inert.capped(name, limit: 64))' in the policy; see: lanyardctl agents list")
        }
        return [agent]
    }
}
