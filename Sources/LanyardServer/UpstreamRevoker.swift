import LanyardCore
import LanyardStore
import Logging
import ServiceLifecycle

/// Revokes ended leases' credentials at their backend (DESIGN.md section 7). Ending a
/// lease queues its revocation in the same transaction (`Store.endLeases`); this works the
/// queue until each revocation takes effect — retrying with capped backoff, across
/// restarts, since the queue lives in the database. Each success is audited.
final class UpstreamRevoker: Sendable {
    let store: Store
    let backend: OpenBaoBackend
    let policy: PolicyHolder
    let clock: any WallClock
    let logger: Logger
    private let queued = ChangeSignal()

    static let firstBackoffMicros: Int64 = 500_000
    static let maxBackoffMicros: Int64 = 5_000_000

    init(store: Store, backend: OpenBaoBackend, policy: PolicyHolder, clock: any WallClock, logger: Logger) {
        self.store = store
        self.backend = backend
        self.policy = policy
        self.clock = clock
        self.logger = logger
    }

    /// Wakes the worker: something was queued.
    func poke() { queued.bump() }

    /// Works the queue until graceful shutdown (what is left stays queued for the next start).
    func run() async {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let seen = queued.version
            await runDue()
            var wait = Duration.microseconds(Self.maxBackoffMicros)
            if let next = (try? store.revocationQueue())?.nextMicros {
                wait = min(wait, .microseconds(max(0, next - clock.nowMicros())))
            }
            let deadline = ContinuousClock.now + wait
            await cancelWhenGracefulShutdown { await self.queued.wait(since: seen, until: deadline) }
        }
    }

    /// One pass over the revocations that are due; returns how many took effect.
    @discardableResult
    func runDue() async -> Int {
        let due: [UpstreamRevocation]
        do {
            due = try store.dueRevocations(nowMicros: clock.nowMicros())
        } catch {
            logger.error("cannot read the upstream revocation queue; will retry", metadata: ["error": "\(error)"])
            return 0
        }
        var done = 0
        for item in due {
            do {
                guard let config = policy.current.policy.services[item.service]?.openbao else {
                    throw UpstreamError("service '\(item.service)' is no longer an openbao service in the policy; restore it so lanyardd can revoke the lease's token")
                }
                try await backend.revoke(accessor: item.upstream, config)
                var record = AuditRecord(event: "lease.upstream_revoke")
                record.leaseID = item.leaseID
                record.capability = "\(item.service):revoke"
                record.decision = Decision.allow.rawValue
                record.outcome = "revoked"
                record.reason = item.attempts == 0 ? "revoked at the backend" : "revoked at the backend after \(item.attempts + 1) attempts"
                record.policyVersion = policy.current.version
                try await store.audit.append(record, with: store.finishRevocation(item.leaseID))
                done += 1
            } catch {
                let backoff = min(Self.firstBackoffMicros << min(item.attempts, 20), Self.maxBackoffMicros)
                logger.warning("upstream revoke failed; will retry", metadata: [
                    "lease.id": "\(item.leaseID)", "service": "\(item.service)", "attempt": "\(item.attempts + 1)", "error": "\(error)",
                ])
                try? store.retryRevocation(item.leaseID, error: "\(error)", nextMicros: clock.nowMicros() + backoff)
            }
        }
        return done
    }
}
