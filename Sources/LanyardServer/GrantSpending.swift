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
        var agent: String
        var limited: [(capability: Capability, limits: GrantLimits)]
        var amount: (value: Int64, unit: String)?
        var nowMicros: Int64

        /// Nil when no capability of the request has a limited grant.
        init?(agent: Agent, capabilities: [Capability], amount: (value: Int64, unit: String)?, nowMicros: Int64) {
            limited = capabilities.compactMap { cap in agent.limits[cap].map { (cap, $0) } }
            guard !limited.isEmpty else { return nil }
            self.agent = agent.name
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

    /// `verdict` once the use is checked against the counters stored now, and the limits
    /// whose overrun it waits on an approver for (empty unless it does). They go into the
    /// approval's digest: an approval asked for something else never lifts a limit.
    func check(_ verdict: Verdict, _ use: Use) throws -> (verdict: Verdict, overruns: [ReasonCode]) {
        var out = verdict
        var overruns: Set<ReasonCode> = []
        for (capability, limits) in use.limited {
            let used = try store.limitUsage(agent: use.agent, capability: capability.name, limits: limits, nowMicros: use.nowMicros)
            let over = limits.overs(amount: use.amount, used: used, nowMicros: use.nowMicros)
            let step = out.limited(by: LimitCheck(overs: over))
            out = step.verdict
            if step.overrun { overruns.formUnion(over.map(\.code)) }
        }
        return (out, out.decision == .deny ? [] : overruns.sorted { $0.rawValue < $1.rawValue })
    }

    /// `then` followed by counting the use, refused with `LimitReached` when a count would
    /// pass a limit — every limit, except an overrun of one that routes to approval and is
    /// in `approved` (the overruns of the approval the decision used up).
    func count(_ use: Use, approved: Set<ReasonCode>, then: Mutation?) -> Mutation {
        let store = self.store
        return { db in
            try then?(db)
            for (capability, limits) in use.limited {
                let used = try store.limitUsage(agent: use.agent, capability: capability.name, limits: limits, nowMicros: use.nowMicros, on: db)
                if let over = limits.overs(amount: use.amount, used: used, nowMicros: use.nowMicros)
                    .first(where: { !($0.needsApproval && approved.contains($0.code)) }) {
                    throw LimitReached(code: over.code, reason: over.reason,
                                       retryAfterSeconds: over.code == .rateLimited ? limits.rate.map { UInt64($0.waitSeconds(nowMicros: use.nowMicros)) } : nil)
                }
                try store.countUse(agent: use.agent, capability: capability.name, limits: limits, amount: use.amount?.value ?? 0,
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
