/// Why a decision is what it is, for machines: stable names beside the human reason
/// (issue 19), in the wire response, the audit record and lanyardctl's output.
public enum ReasonCode: String, Sendable, CaseIterable {
    case granted
    case notGranted = "not_granted"
    case notInCatalog = "not_in_catalog"
    case needsApproval = "needs_approval"
    case noApprovers = "no_approvers"
    case approved
    case standingApproval = "standing_approval"
    case approvalConsumed = "approval_consumed"
    case approvalExpired = "approval_expired"
    case approvalDenied = "approval_denied"
    case approvalMismatch = "approval_mismatch"
    case approvalPending = "approval_pending"
    case rateLimited = "rate_limited"
    case budgetExceeded = "budget_exceeded"
    case outsideWindow = "outside_window"
    case unauthenticated
    case invalidArgument = "invalid_argument"
    case notInPolicy = "not_in_policy"
    /// Provision refusals after the decision allowed it: a bound, the process, the backend.
    case resourceExhausted = "resource_exhausted"
    case notBindable = "not_bindable"
    case noSecret = "no_secret"
    case backendUnavailable = "backend_unavailable"
    /// Stored state the decision needs failed its integrity check (DATA_LOSS).
    case integrityFailure = "integrity_failure"
    /// Not yet classified (a decision path that sets no code).
    case unclassified
}
