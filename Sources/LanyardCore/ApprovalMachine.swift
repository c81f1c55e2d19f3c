/// An approval's life (DESIGN.md section 6): PENDING → APPROVED | DENIED | EXPIRED, and
/// APPROVED → CONSUMED by exactly one use whose digest matches. Pure: the caller passes
/// the time and persists the result; every method says what happened, or why not.
public struct ApprovalMachine: Sendable, Equatable {
    public enum State: String, Sendable, Equatable { case pending, approved, denied, expired, consumed }

    public var state: State
    public var risk: RiskLevel
    public var digest: String
    /// Requester's uid: it can never approve its own request.
    public var requesterUID: UInt32
    /// Distinct approvers needed (1 for MEDIUM; `high_risk_quorum` for HIGH).
    public var quorum: Int
    public var approvers: [UInt32]
    public var expiresMicros: Int64
    /// How long an approval, once granted, stays usable.
    public var timeoutMicros: Int64

    public init(state: State = .pending, risk: RiskLevel, digest: String, requesterUID: UInt32, quorum: Int,
                approvers: [UInt32] = [], expiresMicros: Int64, timeoutMicros: Int64) {
        self.state = state
        self.risk = risk
        self.digest = digest
        self.requesterUID = requesterUID
        self.quorum = quorum
        self.approvers = approvers
        self.expiresMicros = expiresMicros
        self.timeoutMicros = timeoutMicros
    }

    /// The state as of `now`: pending or approved past expiry reads as expired.
    public func state(atMicros now: Int64) -> State {
        (state == .pending || state == .approved) && now >= expiresMicros ? .expired : state
    }

    public enum Refusal: Error, Equatable, CustomStringConvertible {
        case notPending(State)
        case ownRequest
        case alreadyApprovedBy(UInt32)
        case notApproved(State)
        case differentOperation
        case riskRaised(from: RiskLevel, to: RiskLevel)
        case quorumRaised(have: Int, need: Int)

        public var description: String {
            switch self {
            case .notPending(let s): "the approval is \(s.rawValue), not pending"
            case .ownRequest: "the requester can never approve its own request"
            case .alreadyApprovedBy(let uid): "uid \(uid) already approved it; a different approver is needed"
            case .notApproved(.consumed): "the approval was already used; approvals are single-use"
            case .notApproved(.pending): "the approval is still pending: no approver has decided yet"
            case .notApproved(let s): "the approval is \(s.rawValue)"
            case .differentOperation: "the approval is for a different operation (agent, capabilities, resource, args or amount differ)"
            case .riskRaised(let from, let to): "the approval was granted for \(from) risk and the policy now rates this operation \(to): ask for a new approval"
            case .quorumRaised(let have, let need): "the approval has \(have) approver(s) and the policy now requires \(need) for this operation: ask for a new approval"
            }
        }

        /// The reason code of a use refused for this reason.
        public var code: ReasonCode {
            switch self {
            case .notApproved(.consumed): .approvalConsumed
            case .notApproved(.expired): .approvalExpired
            case .notApproved(.denied): .approvalDenied
            case .notApproved(.pending): .approvalPending
            default: .approvalMismatch
            }
        }
    }

    /// Records `approver`'s approval. Returns true once the quorum is reached.
    public mutating func approve(by approver: UInt32, atMicros now: Int64) throws(Refusal) -> Bool {
        let current = state(atMicros: now)
        guard current == .pending else { throw .notPending(current) }
        guard approver != requesterUID else { throw .ownRequest }
        guard !approvers.contains(approver) else { throw .alreadyApprovedBy(approver) }
        approvers.append(approver)
        guard approvers.count >= quorum else { return false }
        state = .approved
        expiresMicros = now + timeoutMicros
        return true
    }

    public mutating func deny(by approver: UInt32, atMicros now: Int64) throws(Refusal) {
        let current = state(atMicros: now)
        guard current == .pending else { throw .notPending(current) }
        guard approver != requesterUID else { throw .ownRequest }
        state = .denied
    }

    /// Uses the approval for an operation with `digest`: single use, exact match. The
    /// policy in force now decides what it must cover: an approval granted at a lower
    /// risk, or by fewer approvers than `quorum` now asks for HIGH, does not.
    public mutating func consume(digest other: String, atMicros now: Int64, risk required: RiskLevel, quorum: Int) throws(Refusal) {
        let current = state(atMicros: now)
        guard current == .approved else { throw .notApproved(current) }
        guard other == digest else { throw .differentOperation }
        guard required <= risk else { throw .riskRaised(from: risk, to: required) }
        let need = required == .high ? max(quorum, 1) : 1
        guard approvers.count >= need else { throw .quorumRaised(have: approvers.count, need: need) }
        state = .consumed
    }
}
