/// The outcome of a policy check: a value, never a thrown error.
public enum Decision: String, Sendable, Equatable {
    case allow, deny, pending
}

public struct Verdict: Sendable, Equatable {
    public var decision: Decision
    public var risk: RiskLevel?
    public var reason: String
    public var code: ReasonCode
    /// What decided it: the agent's own grant and where its risk came from (nil: no grant did).
    public var path: DecisionPath?
    /// Decided as a dry run: paths that open or consume approvals or count against limits
    /// must change nothing when this is set.
    public var dryRun = false

    public init(_ decision: Decision, risk: RiskLevel?, reason: String, code: ReasonCode = .unclassified, path: DecisionPath? = nil) {
        self.decision = decision
        self.risk = risk
        self.reason = reason
        self.code = code
        self.path = path
    }

    /// This verdict with another decision, reason and code, keeping what decided it.
    public func routed(_ decision: Decision, reason: String, code: ReasonCode) -> Verdict {
        var v = self
        v.decision = decision
        v.reason = reason
        v.code = code
        return v
    }
}

/// The grant that decided a verdict and where its risk came from.
public struct DecisionPath: Sendable, Equatable {
    public enum RiskSource: String, Sendable { case catalog, grant }

    public var grant: Capability
    public var risk: RiskLevel
    public var catalogRisk: RiskLevel
    /// `grant` when the grant raised the catalog's risk, else `catalog`.
    public var riskSource: RiskSource { risk == catalogRisk ? .catalog : .grant }

    public init(grant: Capability, risk: RiskLevel, catalogRisk: RiskLevel) {
        self.grant = grant
        self.risk = risk
        self.catalogRisk = catalogRisk
    }
}

/// Deny-by-default routing of `(agent, capability)` against a policy snapshot
/// (DESIGN.md section 6): LOW allows, MEDIUM and HIGH wait for humans, anything
/// not in the catalog or not granted is denied.
public enum Authorizer {
    public static func decide(_ capability: Capability, for agent: Agent, in policy: Policy) -> Verdict {
        guard let catalogRisk = policy.capabilities[capability] else {
            return Verdict(.deny, risk: nil, reason: "capability '\(capability)' is not in the policy catalog", code: .notInCatalog)
        }
        guard let risk = policy.grantedRisk(capability, to: agent) else {
            return Verdict(.deny, risk: catalogRisk, reason: "agent '\(agent.name)' is not granted '\(capability)'", code: .notGranted)
        }
        let path = DecisionPath(grant: capability, risk: risk, catalogRisk: catalogRisk)
        switch risk {
        case .low:
            return Verdict(.allow, risk: .low, reason: "low risk: auto-approved", code: .granted, path: path)
        case .medium:
            return Verdict(.pending, risk: .medium, reason: "medium risk: waiting for an approver", code: .needsApproval, path: path)
        case .high:
            guard let approvers = policy.approvers,
                  !(approvers.principals.uids.isEmpty && approvers.principals.groups.isEmpty) else {
                return Verdict(.deny, risk: .high, reason: "high risk and no approvers are configured: denied", code: .noApprovers, path: path)
            }
            let who = approvers.highRiskQuorum == 1 ? "an approver" : "\(approvers.highRiskQuorum) distinct approvers"
            return Verdict(.pending, risk: .high, reason: "high risk: waiting for \(who) to approve this exact operation", code: .needsApproval, path: path)
        }
    }

    /// The combined verdict for several capabilities (a Provision scope): the first
    /// denial wins; otherwise the highest risk decides the route.
    public static func decide(_ capabilities: [Capability], for agent: Agent, in policy: Policy) -> Verdict {
        var worst: Verdict?
        for cap in capabilities.sorted() {
            let v = decide(cap, for: agent, in: policy)
            if v.decision == .deny { return v }
            if worst == nil || (v.risk ?? .low) > (worst?.risk ?? .low) { worst = v }
        }
        return worst ?? Verdict(.deny, risk: nil, reason: "no capability requested", code: .invalidArgument)
    }
}
