import LanyardCore
import NIOConcurrencyHelpers

/// Process-lifetime approvals (issue 19, `approvals approve ID --for-process`): a MEDIUM
/// approval that also covers the same agent + capability + resource for the process that
/// asked, while that exact process (pid and start time, watched through a pidfd) lives.
/// Held in memory only: a restart of lanyardd ends them all (deny by default).
final class ProcessApprovals: Sendable {
    struct Key: Hashable, Sendable {
        var agentID: String
        var capability: String
        var resource: String
        var pid: Int32
        var startTime: UInt64
    }

    /// The process that asked for each live approval (pruned when decided or expired).
    private let requesters = NIOLockedValueBox<[String: BoundProcess]>([:])
    /// What each process-lifetime approval covers, with who approved it.
    private let covered = NIOLockedValueBox<[Key: (approvalID: String, approver: String)]>([:])
    let watcher: ProcessWatcher

    /// Process-lifetime approvals at once, host-wide (each distinct process holds one pidfd).
    static let defaultLimit = 256

    init(limit: Int = defaultLimit) { watcher = ProcessWatcher(limit: limit) }

    func noteRequester(_ approvalID: String, _ process: BoundProcess?) {
        guard let process else { return }
        requesters.withLockedValue { $0[approvalID] = process }
    }

    /// The process that asked for `approvalID`, forgotten now (its approval is being decided or expired).
    func takeRequester(_ approvalID: String) -> BoundProcess? {
        requesters.withLockedValue { $0.removeValue(forKey: approvalID) }
    }

    func requesterIfKnown(_ approvalID: String) -> BoundProcess? {
        requesters.withLockedValue { $0[approvalID] }
    }

    func forget(_ approvalIDs: [String]) {
        requesters.withLockedValue { all in for id in approvalIDs { all[id] = nil } }
    }

    /// Covers `capabilities` on `resource` for `process` until it exits; `onExit` is called
    /// then (at once if it already has). False when the process cannot be watched.
    func cover(approvalID: String, agentID: String, capabilities: [String], resource: String, process: BoundProcess, pidfd: PidFD,
               approver: String, onExit: @escaping @Sendable () -> Void) -> Bool {
        let keys = capabilities.map { Key(agentID: agentID, capability: $0, resource: resource, pid: process.pid, startTime: process.startTime) }
        covered.withLockedValue { all in for k in keys { all[k] = (approvalID, approver) } }
        let watching = watcher.watch(approvalID, process, pidfd, uid: nil) { [weak self] _ in
            self?.covered.withLockedValue { all in for k in keys where all[k]?.approvalID == approvalID { all[k] = nil } }
            onExit()
        }
        if !watching { covered.withLockedValue { all in for k in keys { all[k] = nil } } }
        return watching
    }

    /// Who approved `capability` on `resource` for this process of the agent, if covered.
    func approver(agentID: String, capability: String, resource: String, process: BoundProcess) -> String? {
        covered.withLockedValue {
            $0[Key(agentID: agentID, capability: capability, resource: resource, pid: process.pid, startTime: process.startTime)]?.approver
        }
    }

    /// Process-lifetime approvals in force now.
    var count: Int { covered.withLockedValue { $0.count } }
}
