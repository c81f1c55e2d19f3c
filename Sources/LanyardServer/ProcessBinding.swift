#if canImport(Glibc)
import Glibc
#endif
import CLanyardSys
import LanyardCore
import LanyardStore
import NIOConcurrencyHelpers

/// Watches the processes that leases are bound to (`bind_to_process`): a pidfd polls
/// readable when its process exits, so each process is one oneshot registration on the
/// shared epoll thread (`SocketReactor`), holding one pidfd however many connections or
/// leases it has. Bounded: at most `limit` leases in all, and a uid at most `perUIDLimit`
/// of them, so one agent cannot take binding away from the others.
final class ProcessWatcher: Sendable {
    private struct Watch {
        var pidfd: PidFD
        var token: UInt64
        var uid: UInt32?
        /// Each thing watched (a lease, an approval) with what to call when the process exits.
        var leases: [String: @Sendable ([String]) -> Void]
    }

    /// Watched processes by identity (pid and start time: never two processes at once).
    private let watches = NIOLockedValueBox<[BoundProcess: Watch]>([:])
    let limit: Int
    let perUIDLimit: Int

    /// Process-bound leases watched at once, host-wide (each distinct process holds one pidfd).
    static let defaultLimit = 1024

    init(limit: Int = defaultLimit) {
        self.limit = limit
        perUIDLimit = max(limit / 8, 1)
    }

    /// Leases watched now.
    var count: Int { watches.withLockedValue { $0.values.reduce(0) { $0 + $1.leases.count } } }

    /// Whether a lease of `uid` can be watched now.
    func hasRoom(uid: UInt32) -> Bool { watches.withLockedValue { Self.room(in: $0, uid: uid, limit: limit, perUID: perUIDLimit) } }

    private static func room(in all: [BoundProcess: Watch], uid: UInt32?, limit: Int, perUID: Int) -> Bool {
        guard all.values.reduce(0, { $0 + $1.leases.count }) < limit else { return false }
        guard let uid else { return true }
        return all.values.filter { $0.uid == uid }.reduce(0) { $0 + $1.leases.count } < perUID
    }

    func isWatching(_ leaseID: String) -> Bool { watches.withLockedValue { $0.values.contains { $0.leases[leaseID] != nil } } }

    /// Calls `onExit` with the leases bound to `process` once it has exited (at once if it
    /// already has). `pidfd` is kept only for a process not watched yet. False when a bound
    /// is reached or epoll refuses the descriptor. `uid` nil: not counted against a uid's share
    /// (leases re-watched at startup, which were counted when they were made).
    func watch(_ leaseID: String, _ process: BoundProcess, _ pidfd: PidFD, uid: UInt32?, onExit: @escaping @Sendable ([String]) -> Void) -> Bool {
        let reactor = SocketReactor.shared
        return watches.withLockedValue { all in
            guard Self.room(in: all, uid: uid, limit: limit, perUID: perUIDLimit) else { return false }
            if all[process] != nil {
                all[process]!.leases[leaseID] = onExit
                return true
            }
            // Strong (the watcher lives as long as the daemon; the reactor drops this at the exit).
            let token = reactor.register(pidfd.fd, persistent: false) { self.exited(process) }
            guard token != 0 else { return false }
            all[process] = Watch(pidfd: pidfd, token: token, uid: uid, leases: [leaseID: onExit])
            reactor.arm(pidfd.fd, token: token)
            return true
        }
    }

    private func exited(_ process: BoundProcess) {
        guard let watch = watches.withLockedValue({ $0.removeValue(forKey: process) }) else { return }
        SocketReactor.shared.deregister(watch.pidfd.fd, token: watch.token)
        for (id, onExit) in watch.leases.sorted(by: { $0.key < $1.key }) { onExit([id]) }
    }

    /// Stops watching leases that are no longer in `active` (ended otherwise); a process
    /// left with none is no longer watched (and its pidfd closed).
    func keep(only active: Set<String>) {
        let dropped = watches.withLockedValue { all -> [Watch] in
            var dropped: [Watch] = []
            for (process, var watch) in all {
                watch.leases = watch.leases.filter { active.contains($0.key) }
                if watch.leases.isEmpty { dropped.append(watch); all[process] = nil } else { all[process] = watch }
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
        guard processWatcher.hasRoom(uid: caller.credentials.uid) else {
            return .failure(CallError(.resourceExhausted,
                "lanyardd already watches \(processWatcher.limit) process-bound leases, or \(processWatcher.perUIDLimit) of uid \(caller.credentials.uid); "
                + "revoke leases no longer needed or let them expire, then provision again"))
        }
        return .success((BoundProcess(pid: peer.facts.pid, startTime: start), pidfd))
    }

    /// Watches the process of a lease just made durable; if it cannot be watched, the lease
    /// ends at once (a binding that is not enforced is no binding).
    func watchProcess(of leaseID: String, _ binding: (process: BoundProcess, pidfd: PidFD), uid: UInt32) async throws {
        if processWatcher.watch(leaseID, binding.process, binding.pidfd, uid: uid, onExit: processExited) { return }
        await endForProcessExit([leaseID], reason: "the process it was bound to could not be watched")
        throw CallError(.resourceExhausted, "lanyardd cannot watch this process (limit \(processWatcher.limit) process-bound leases, \(processWatcher.perUIDLimit) per uid, "
                        + "or epoll refused it); the lease was revoked: provision again later")
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
            if let process = lease.process, let pidfd = reopenPidFD(process), processWatcher.watch(lease.id, process, pidfd, uid: nil, onExit: processExited) { continue }
            gone.append(lease.id)
        }
        if !gone.isEmpty { await endForProcessExit(gone, reason: reason) }
    }
}
