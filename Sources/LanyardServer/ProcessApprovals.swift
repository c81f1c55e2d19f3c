import LanyardCore
import NIOConcurrencyHelpers

/// Process-lifetime approvals (issue 19, `approvals approve ID --for-process`): a MEDIUM
/// approval that also covers the same agent + capability + resource for the process that
/// asked, while that exact process (pid and start time, watched through a pidfd) lives and
/// runs the executable file it asked from (an `exec` of another program ends the cover).
/// Held in memory only: a restart of lanyardd ends them all (deny by default).
final class ProcessApprovals: Sendable {
    struct Key: Hashable, Sendable {
        var agentID: String
        var capability: String
        var resource: String
        var pid: Int32
        var startTime: UInt64
        var exe: FileID?
    }

    /// A process that asked for an approval, and the executable file it ran then.
    struct Requester: Sendable {
        var process: BoundProcess
        var exe: FileID?
    }

    /// The process that asked for each live approval (pruned when decided or expired).
    private let requesters = NIOLockedValueBox<[String: Requester]>([:])
    /// What each process-lifetime approval covers, with who approved it.
    private let covered = NIOLockedValueBox<[Key: (approvalID: String, approver: String)]>([:])
    let watcher: ProcessWatcher

    /// Process-lifetime approvals at once, host-wide (each distinct process holds one pidfd).
    static let defaultLimit = 256

    init(limit: Int = defaultLimit) { watcher = ProcessWatcher(limit: limit) }

    func noteRequester(_ approvalID: String, _ process: BoundProcess?, exe: FileID?) {
        guard let process else { return }
        requesters.withLockedValue { $0[approvalID] = Requester(process: process, exe: exe) }
    }

    /// The process that asked for `approvalID`, forgotten now (its approval is being decided or expired).
    func takeRequester(_ approvalID: String) -> Requester? {
        requesters.withLockedValue { $0.removeValue(forKey: approvalID) }
    }

    func requesterIfKnown(_ approvalID: String) -> Requester? {
        requesters.withLockedValue { $0[approvalID] }
    }

    func forget(_ approvalIDs: [String]) {
        requesters.withLockedValue { all in for id in approvalIDs { all[id] = nil } }
    }

    /// Covers `capabilities` on `resource` for `process` until it exits; `onExit` is called
    /// then (at once if it already has). False when the process cannot be watched.
    func cover(approvalID: String, agentID: String, capabilities: [String], resource: String, requester: Requester, pidfd: PidFD,
               approver: String, onExit: @escaping @Sendable () -> Void) -> Bool {
        let process = requester.process
        let keys = capabilities.map {
            Key(agentID: agentID, capability: $0, resource: resource, pid: process.pid, startTime: process.startTime, exe: requester.exe)
        }
        covered.withLockedValue { all in for k in keys { all[k] = (approvalID, approver) } }
        // The table, not `self`, is captured: a weak reference would give this daemon-long
        // object a side table that only its reference count points to (LeakSanitizer reports it).
        let watching = watcher.watch(approvalID, process, pidfd, uid: nil) { [covered] _ in
            covered.withLockedValue { all in for k in keys where all[k]?.approvalID == approvalID { all[k] = nil } }
            onExit()
        }
        if !watching { covered.withLockedValue { all in for k in keys { all[k] = nil } } }
        return watching
    }

    /// Who approved `capability` on `resource` for this process of the agent running `exe`, if covered.
    func approver(agentID: String, capability: String, resource: String, process: BoundProcess, exe: FileID?) -> String? {
        covered.withLockedValue {
            $0[Key(agentID: agentID, capability: capability, resource: resource, pid: process.pid, startTime: process.startTime, exe: exe)]?.approver
        }
    }

    /// Process-lifetime approvals in force now.
    var count: Int { covered.withLockedValue { $0.count } }
}
