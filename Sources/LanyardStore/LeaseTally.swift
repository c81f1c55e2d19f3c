import NIOConcurrencyHelpers

/// An upper bound, per agent, on its leases in state `active` (expired or not), so that a
/// provision checks `--max-leases-per-agent` without counting the agent's leases each time.
/// Only the audit writer moves it, inside its transactions: up by one with each lease
/// inserted, and to the exact figure whenever a check has to count because the bound is
/// near. Ended leases are not counted down, and a rolled-back insert stays counted: it
/// only ever over-counts, and an over-count costs one exact count, never a lease past the
/// bound. A batch whose commit fails may have set it from rows it then rolled back (an
/// end undone): it is forgotten, and the next checks count again.
final class LeaseTally: Sendable {
    private let upper = NIOLockedValueBox<[String: UInt64]>([:])

    /// The bound for `agentID`, or nil while it is unknown (no check has counted yet).
    func bound(_ agentID: String) -> UInt64? { upper.withLockedValue { $0[agentID] } }

    /// Writer only: the exact number of the agent's active rows, as its transaction sees them.
    func set(_ agentID: String, _ active: UInt64) { upper.withLockedValue { $0[agentID] = active } }

    /// Writer only: a batch's commit failed.
    func forgetAll() { upper.withLockedValue { $0.removeAll() } }

    /// Writer only: a lease of the agent was inserted.
    func added(_ agentID: String) { upper.withLockedValue { t in if let n = t[agentID] { t[agentID] = n + 1 } } }
}
