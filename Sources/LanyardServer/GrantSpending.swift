import LanyardCore
import LanyardStore

/// Grant limits on the decision path (issue 19), one piece for Authorize and Provision:
/// checked before routing, then checked again and counted in the transaction of the
/// decision's audit record, so concurrent calls cannot pass a limit together and an
/// acknowledged decision is counted exactly once.
struct GrantSpending: Sendable {
    let store: Store

    /// One request's use of the limited grants among its capabilities.
    struct Use: Sendable {
        var agentID: String
        var limited: [(capability: Capability, limits: GrantLimits)]
        var amount: (value: Int64, unit: String)?
        var nowMicros: Int64

        /// Nil when no capability of the request has a limited grant.
        init?(agent: Agent, capabilities: [Capability], amount: (value: Int64, unit: String)?, nowMicros: Int64) {
            limited = capabilities.compactMap { cap in agent.limits[cap].map { (cap, $0) } }
            guard !limited.isEmpty else { return nil }
            agentID = agent.id
            self.amount = amount
            self.nowMicros = nowMicros
        }

        /// Whole seconds until a rate-limited call is possible again.
        func retryAfterSeconds(_ verdict: Verdict) -> UInt64? {
            guard verdict.code == .rateLimited else { return nil }
            let waits = limited.compactMap { $0.limits.rate?.waitSeconds(nowMicros: nowMicros) }
            return waits.max().map { UInt64($0) }
        }
    }

    /// `verdict` once the use is checked against the counters stored now.
    func check(_ verdict: Verdict, _ use: Use) throws -> (verdict: Verdict, overrun: Bool) {
        var (out, overrun) = (verdict, false)
        for (capability, limits) in use.limited {
            let used = try store.limitUsage(agentID: use.agentID, capability: capability.name, limits: limits, nowMicros: use.nowMicros)
            let step = out.limited(by: limits.check(amount: use.amount, used: used, nowMicros: use.nowMicros))
            out = step.verdict
            overrun = overrun || step.overrun
        }
        return (out, overrun && out.decision != .deny)
    }

    /// `then` followed by counting the use, refused with `LimitReached` when a count would
    /// pass a limit. `approvedOverrun`: an approver allowed it, so a limit whose overrun
    /// routes to approval counts it without refusing.
    func count(_ use: Use, approvedOverrun: Bool, then: Mutation?) -> Mutation {
        let store = self.store
        return { db in
            try then?(db)
            for (capability, limits) in use.limited {
                let used = try store.limitUsage(agentID: use.agentID, capability: capability.name, limits: limits, nowMicros: use.nowMicros, on: db)
                if case .over(let code, let reason, let needsApproval) = limits.check(amount: use.amount, used: used, nowMicros: use.nowMicros),
                   !(needsApproval && approvedOverrun) {
                    throw LimitReached(code: code, reason: reason,
                                       retryAfterSeconds: code == .rateLimited ? limits.rate.map { UInt64($0.waitSeconds(nowMicros: use.nowMicros)) } : nil)
                }
                try store.countUse(agentID: use.agentID, capability: capability.name, limits: limits, amount: use.amount?.value ?? 0,
                                   nowMicros: use.nowMicros, used: used, on: db)
            }
        }
    }
}

/// A grant limit found reached inside the transaction that would have counted past it.
struct LimitReached: Error {
    var code: ReasonCode
    var reason: String
    var retryAfterSeconds: UInt64?
}
