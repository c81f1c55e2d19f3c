#if canImport(Glibc)
import Glibc
#endif
import CLanyardSys
import LanyardCore
import LanyardStore
import NIOConcurrencyHelpers

/// Watches the processes that leases are bound to (`bind_to_process`): a pidfd polls
/// readable when its process exits, so each one is a oneshot registration on the shared
/// epoll thread (`SocketReactor`). Bounded: at most `limit` leases are watched at once.
final class ProcessWatcher: Sendable {
    private struct Watch {
        var pidfd: PidFD
        var token: UInt64
        var leases: Set<String>
        var onExit: @Sendable ([String]) -> Void
    }

    /// Watched processes by pidfd number (unique while we hold the pidfd open).
    private let watches = NIOLockedValueBox<[Int32: Watch]>([:])
    let limit: Int

    init(limit: Int = 4096) { self.limit = limit }

    /// Leases watched now.
    var count: Int { watches.withLockedValue { $0.values.reduce(0) { $0 + $1.leases.count } } }

    var hasRoom: Bool { count < limit }

    func isWatching(_ leaseID: String) -> Bool { watches.withLockedValue { $0.values.contains { $0.leases.contains(leaseID) } } }

    /// Calls `onExit` with the leases bound to `pidfd`'s process once it has exited (at once
    /// if it already has). False when the bound is reached or epoll refuses the descriptor.
    func watch(_ leaseID: String, _ pidfd: PidFD, onExit: @escaping @Sendable ([String]) -> Void) -> Bool {
        let reactor = SocketReactor.shared
        let fd = pidfd.fd
        return watches.withLockedValue { all in
            guard all.values.reduce(0, { $0 + $1.leases.count }) < limit else { return false }
            if all[fd] != nil {
                all[fd]!.leases.insert(leaseID)
                return true
            }
            let token = reactor.register(fd, persistent: false) { [weak self] in self?.exited(fd) }
            guard token != 0 else { return false }
            all[fd] = Watch(pidfd: pidfd, token: token, leases: [leaseID], onExit: onExit)
            reactor.arm(fd, token: token)
            return true
        }
    }

    private func exited(_ fd: Int32) {
        guard let watch = watches.withLockedValue({ $0.removeValue(forKey: fd) }) else { return }
        SocketReactor.shared.deregister(fd, token: watch.token)
        watch.onExit(watch.leases.sorted())
    }

    /// Stops watching leases that are no longer in `active` (ended otherwise); a process
    /// left with none is no longer watched.
    func keep(only active: Set<String>) {
        let dropped = watches.withLockedValue { all -> [Watch] in
            var dropped: [Watch] = []
            for (fd, var watch) in all {
                watch.leases.formIntersection(active)
                if watch.leases.isEmpty { dropped.append(watch); all[fd] = nil } else { all[fd] = watch }
            }
            return dropped
        }
        for watch in dropped { SocketReactor.shared.deregister(watch.pidfd.fd, token: watch.token) }
    }
}

/// A pidfd on `process` if it is still the one recorded (same pid and start time), else nil.
/// The start time is read after the pidfd is open: a pid recycled before cannot pass.
func reopenPidFD(_ process: BoundProcess) -> PidFD? {
    let fd = lanyard_pidfd_open(process.pid)
    guard fd >= 0 else { return nil }
    let pidfd = PidFD(fd: fd)
    guard pidfd.isAlive, ProcAttestor.startTime(process.pid) == process.startTime else { return nil }
    return pidfd
}

extension CredentialService {
    /// The process a `bind_to_process` lease is bound to, or the reason it cannot be bound.
    func bindableProcess(_ caller: Caller) -> Result<(BoundProcess, PidFD), CallError> {
        let peer = caller.connection.peer
        guard let pidfd = peer.pidfd, let start = peer.startTime else {
            return .failure(CallError(.failedPrecondition,
                "this lease must be bound to the calling process, but the kernel gave lanyardd no pidfd for it (SO_PEERPIDFD needs Linux 6.5 or later); "
                + "run lanyardd on a newer kernel, or provision without bind_to_process where the policy allows it"))
        }
        guard processWatcher.hasRoom else {
            return .failure(CallError(.resourceExhausted,
                "lanyardd already watches \(processWatcher.limit) process-bound leases; revoke leases no longer needed or let them expire, then provision again"))
        }
        return .success((BoundProcess(pid: peer.facts.pid, startTime: start), pidfd))
    }

    /// Watches the process of a lease just made durable; if it cannot be watched, the lease
    /// ends at once (a binding that is not enforced is no binding).
    func watchProcess(of leaseID: String, _ pidfd: PidFD) async throws {
        if processWatcher.watch(leaseID, pidfd, onExit: processExited) { return }
        await endForProcessExit([leaseID], reason: "the process it was bound to could not be watched")
        throw CallError(.resourceExhausted, "lanyardd cannot watch this process (limit \(processWatcher.limit) process-bound leases, or epoll refused it); the lease was revoked: provision again later")
    }

    /// What the watcher calls (on its thread) when a bound process has exited.
    private var processExited: @Sendable ([String]) -> Void {
        { ids in Task { await self.endForProcessExit(ids, reason: "the process it was bound to exited") } }
    }

    /// Ends those of `ids` still active, one `lease.process_exit` record each.
    func endForProcessExit(_ ids: [String], reason: String) async {
        do {
            let now = clock.nowMicros()
            let ending = try ids.compactMap { try store.lease(id: $0) }.filter { $0.isActive(atMicros: now) }
            guard !ending.isEmpty else { return }
            var actor = AuditRecord(event: "lease.process_exit")
            actor.policyVersion = policyVersion()
            var records = Self.records(ending: ending, by: actor, outcome: "revoked", reason: reason)
            for i in records.indices { records[i].pid = ending[i].process.map { Int64($0.pid) } }
            try await store.audit.append(records, with: store.endLeases(ending.map(\.id), as: .revoked, reason: reason, nowMicros: now))
            revoker.poke()
            logger.info("process-bound leases revoked", metadata: ["leases": "\(ending.map(\.id))", "reason": "\(reason)"])
        } catch {
            logger.error("cannot revoke process-bound leases; they end at their expiry", metadata: ["leases": "\(ids)", "error": "\(error)"])
        }
    }

    /// Makes the watches match the active bound leases: those ended otherwise are no longer
    /// watched; an unwatched one (at startup: all of them) is watched again if its process
    /// is still the recorded one, else revoked at once — its process exited while lanyardd
    /// was down, or its pid now names another process, or an earlier revocation failed.
    func reconcileProcessBindings(reason: String) async throws {
        let bound = try store.processBoundLeases()
        processWatcher.keep(only: Set(bound.map(\.id)))
        var gone: [String] = []
        for lease in bound where !processWatcher.isWatching(lease.id) {
            if let process = lease.process, let pidfd = reopenPidFD(process), processWatcher.watch(lease.id, pidfd, onExit: processExited) { continue }
            gone.append(lease.id)
        }
        if !gone.isEmpty { await endForProcessExit(gone, reason: reason) }
    }
}
