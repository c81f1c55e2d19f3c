#if canImport(Glibc)
import Glibc
#endif
import CLanyardSys
import LanyardCore
import LanyardWire
import Logging
import NIOConcurrencyHelpers
import NIOPosix

/// systemd's `LoadCredential=ID:/run/lanyard/credentials.sock` provider. systemd (PID 1 of
/// lanyardd's pid namespace) connects from a process it forked for the unit — as root, from
/// the abstract address `\0RANDOM/unit/UNIT/ID` (systemd.exec(5)), inside the unit's own
/// cgroup (systemd 252: `(sd-mkdcreds)`). Only a root peer whose cgroup is exactly that
/// unit's (`/SLICE.slice/.../UNIT`, no sub-cgroup: `CredentialRequestAddress.isUnitsOwnCgroup`)
/// is answered, with the credential `service_units:` maps to that unit and id, issued as a
/// lease of the entry's agent and audited like any provision; then the connection closes.
/// systemd 252 starts a unit with an empty credential when the connection closes without
/// data, so every refusal of a root peer (not systemd's form, another cgroup, no policy
/// entry, not issued, a write that did not finish) sends more bytes than systemd takes for
/// a credential: systemd fails the start ("Failed to set up credentials", 243/CREDENTIALS).
/// A non-root peer (the socket is 0600, so none should get here) is closed without a byte.
final class CredentialProvider: Sendable {
    /// Connections accepted and not yet answered; more are closed at once (only root can
    /// connect through the socket unit's mode, and systemd asks one credential at a time per unit).
    static let queueBound = 64
    /// Connections answered at once (one slow peer does not hold up other units' starts).
    static let workers = 4
    /// When, after accept, the writes of an answer must have ended (a slow reader is cut off);
    /// issuing has its own bounds (an OpenBao call: the service's `timeout_ms`).
    static let answerDeadline = Duration.seconds(10)
    /// One byte more than systemd reads for a credential (CREDENTIAL_SIZE_MAX, 1 MiB): the refusal.
    static let refusalBytes = 1024 * 1024 + 1
    /// The refusal's bytes, made once (zeros: they carry nothing), shared by every answer.
    static let refusal = [UInt8](repeating: 0, count: refusalBytes)

    /// An accepted connection: its socket, when (for the deadline) and the boot-time clock
    /// tick then (a peer that started later is a reused pid, not the one that connected).
    struct Accepted: Sendable {
        var fd: Int32
        var at: ContinuousClock.Instant
        var bootTicks: UInt64
    }

    let descriptor: Int32
    private let accepted: AsyncStream<Accepted>
    private let stopAccepting: @Sendable () -> Void
    private let policy: PolicyHolder
    private let credentials: CredentialService
    private let attestor: any Attestor
    private let logger: Logger
    /// The lease last delivered for each `unit/UNIT/ID` (one a policy entry; since lanyardd started).
    private let delivered = NIOLockedValueBox<[String: String]>([:])

    init(descriptor: Int32, policy: PolicyHolder, credentials: CredentialService, attestor: any Attestor, logger: Logger) throws {
        let flags = fcntl(descriptor, F_GETFL)
        guard flags >= 0, fcntl(descriptor, F_SETFL, flags | O_NONBLOCK) == 0 else {
            throw StartupError("cannot prepare the credentials socket (non-blocking): \(errnoText())")
        }
        let (stream, continuation) = AsyncStream.makeStream(of: Accepted.self, bufferingPolicy: .bufferingOldest(Self.queueBound))
        let reactor = SocketReactor.shared
        let token = reactor.register(descriptor, persistent: true) {
            while true {
                let fd = lanyard_accept(descriptor)
                guard fd >= 0 else { return }
                switch continuation.yield(Accepted(fd: fd, at: .now, bootTicks: Self.bootTicks())) {
                case .enqueued: break
                case .dropped, .terminated: Glibc.close(fd)
                @unknown default: Glibc.close(fd)
                }
            }
        }
        guard token != 0 else { throw StartupError("cannot watch the credentials socket: \(errnoText())") }
        self.descriptor = descriptor
        accepted = stream
        stopAccepting = {
            reactor.deregister(descriptor, token: token)
            continuation.finish()
        }
        self.policy = policy
        self.credentials = credentials
        self.attestor = attestor
        self.logger = logger
    }

    /// Answers connections, `workers` at a time, until `close`.
    func run() async {
        await withTaskGroup(of: Void.self) { group in
            var running = 0
            for await connection in accepted {
                if running == Self.workers, await group.next() != nil { running -= 1 }
                group.addTask {
                    await self.answer(connection.fd, accepted: connection)
                    Glibc.close(connection.fd)
                }
                running += 1
            }
        }
    }

    /// Stops accepting and closes the listening socket.
    func close() {
        stopAccepting()
        Glibc.close(descriptor)
    }

    private func answer(_ fd: Int32, accepted: Accepted) async {
        let deadline = accepted.at + Self.answerDeadline
        var cred = UCred()
        var len = socklen_t(MemoryLayout<UCred>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 else { return }
        let who: Logger.Metadata = ["caller.uid": "\(cred.uid)", "caller.pid": "\(cred.pid)"]
        guard cred.uid == 0 else {
            logger.warning("credentials socket: refused a peer that is not root (only systemd, as root, asks for a unit's credential); nothing was sent",
                           metadata: who)
            return
        }
        // From here every refusal is the oversized one: a bare close would start the unit with an empty credential.
        func refuse(_ what: String, _ metadata: Logger.Metadata) async {
            logger.warning("credentials socket: \(what); refused, the unit's start fails", metadata: metadata.merging(who) { a, _ in a })
            _ = await Self.write(fd, Self.refusal, until: deadline)
        }
        // The pidfd and start time first: what /proc says below is then checked to be this process's.
        var pidfdNumber: Int32 = -1
        var pidfdLen = socklen_t(MemoryLayout<Int32>.size)
        let pidfd = getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD_, &pidfdNumber, &pidfdLen) == 0 && pidfdNumber >= 0 ? PidFD(fd: pidfdNumber) : nil
        let peer = attestor.attest(PeerCredentials(uid: cred.uid, gid: cred.gid, pid: cred.pid), pidfd: pidfd)
        // Advisory (any root process can be orphaned to PID 1): the cgroup below is the boundary.
        guard Self.forkedByPID1(cred.pid) else {
            return await refuse("a root peer that PID 1 did not fork (not systemd's credential request)", [:])
        }
        guard let address = Self.peerAddress(fd).flatMap(CredentialRequestAddress.parse) else {
            return await refuse("a root peer connected from an address that is not systemd's LoadCredential= form (\\0RANDOM/unit/UNIT/ID)", [:])
        }
        let unitMeta: Logger.Metadata = ["unit": "\(address.unit)", "credential": "\(address.id)"]
        guard address.isUnitsOwnCgroup(peer.facts.cgroup) else {
            return await refuse("the peer is not in the unit's own cgroup (SLICE.slice/.../UNIT, no sub-cgroup) its address names",
                          unitMeta.merging(["cgroup": "\(peer.facts.cgroup ?? "unknown")"]) { a, _ in a })
        }
        // Without a pidfd (kernels before 6.5) the pid may have been reused since accept.
        guard let started = peer.startTime, started <= accepted.bootTicks, attestor.isStillSame(peer) else {
            return await refuse("the peer could not be attested (it started after the connection was accepted, changed or left while checked)", unitMeta)
        }
        let snapshot = policy.current
        let caller = Caller(connection: Connection(peer: peer, credentials: PeerCredentials(uid: cred.uid, gid: cred.gid, pid: cred.pid), sender: cred.pid),
                            agent: nil, snapshot: snapshot)
        let resource = "unit/\(address.unit)/\(address.id)"
        guard let entry = snapshot.policy.serviceUnitCredential(unit: address.unit, id: address.id),
              let agent = snapshot.policy.agent(named: entry.agent) else {
            var record = caller.record("provision")
            record.resource = resource
            record.decision = Decision.deny.rawValue
            record.outcome = "not_found"
            record.reason = "the policy names no credential '\(address.id)' for unit \(address.unit) under service_units:"
            record.reasonCode = ReasonCode.notInPolicy.rawValue
            do { try await credentials.store.audit.append(record) } catch {
                logger.error("cannot audit a refused unit credential", metadata: ["error": "\(error)"])
            }
            return await refuse("no credential for this unit and id under service_units: in the policy. Add service_units.UNIT.ID to the policy to give it one", unitMeta)
        }
        await endPrevious(resource, of: agent, caller)
        var request = Lanyard_V1_ProvisionRequest()
        request.service = entry.capability.service
        request.scope = [entry.capability.name]
        request.ttlSeconds = UInt64(entry.ttlSeconds ?? 0)
        request.resource = resource
        let secret: String, leaseID: String
        do {
            let response = try await credentials.provision(request, Caller(connection: caller.connection, agent: agent, snapshot: snapshot), agent)
            guard response.provision.hasLease, !response.provision.lease.secret.isEmpty else {
                return await refuse("the unit's credential was not issued", unitMeta.merging(["reason": "\(response.status.message)"]) { a, _ in a })
            }
            secret = response.provision.lease.secret
            leaseID = response.provision.lease.leaseID
        } catch {
            let reason = (error as? CallError)?.message ?? "\(error)"
            return await refuse("the unit's credential was refused", unitMeta.merging(["reason": "\(reason)"]) { a, _ in a })
        }
        delivered.withLockedValue { $0[resource] = leaseID }
        // Invariant 2, as the agent socket's dispatch does it: the attested process is still
        // the one on the socket when the secret is sent (issuing can take an OpenBao call).
        guard attestor.isStillSame(peer) else {
            await endPrevious(resource, of: agent, caller)
            return await refuse("the peer changed or left while its credential was issued (its lease was revoked)", unitMeta)
        }
        let failure = await Self.write(fd, Array(secret.utf8), until: deadline)
        if failure == 0 {
            logger.info("credentials socket: credential delivered to the unit", metadata: unitMeta.merging(["agent": "\(agent.name)"]) { a, _ in a })
        } else {
            // Part of it may be written: without more, systemd would take a truncated credential.
            await refuse("systemd did not take the whole credential in time (its lease ends at its expiry)",
                         unitMeta.merging(["error": "\(String(cString: strerror(failure)))"]) { a, _ in a })
        }
    }

    /// A unit runs once at a time: its new start ends the lease its previous start got, so
    /// a unit that restarts holds one lease per credential, not one per start, of its agent's cap.
    private func endPrevious(_ resource: String, of agent: Agent, _ caller: Caller) async {
        guard let previous = delivered.withLockedValue({ $0[resource] }) else { return }
        do {
            // The one lease by its id (not every active lease of the agent, up to its cap).
            guard let lease = try credentials.store.lease(id: previous), lease.agentID == agent.id, lease.state == .active else { return }
            _ = try await credentials.revokeAll([lease], actor: caller.record("revoke"), reason: "replaced: \(resource) started again")
        } catch {
            logger.error("credentials socket: cannot end the unit's previous lease; it ends at its expiry", metadata: ["error": "\(error)", "lease.id": "\(previous)"])
        }
    }

    /// CLOCK_BOOTTIME in clock ticks: the clock of /proc/PID/stat's start time (field 22).
    static func bootTicks() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_BOOTTIME, &now)
        let hz = UInt64(max(sysconf(Int32(_SC_CLK_TCK)), 1))
        return UInt64(now.tv_sec) * hz + UInt64(now.tv_nsec) * hz / 1_000_000_000
    }

    /// Whether `pid` is PID 1 or a process PID 1 forked (directly, or through the unit's exec
    /// child): the parent chain reaches PID 1 within two steps.
    static func forkedByPID1(_ pid: Int32) -> Bool {
        var current = pid
        for _ in 0..<2 {
            if current == 1 { return true }
            guard current > 1, let parent = parentPID(current) else { return false }
            current = parent
        }
        return current == 1
    }

    /// Field 4 of /proc/PID/stat.
    static func parentPID(_ pid: Int32) -> Int32? {
        guard let text = readSmallFile("/proc/\(pid)/stat"), let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        return fields.count > 1 ? Int32(fields[1]) : nil
    }

    /// The peer's `sun_path` bytes, as long as the kernel says (abstract: leading NUL).
    static func peerAddress(_ fd: Int32) -> [UInt8]? {
        var addr = sockaddr_un()
        var len = socklen_t(MemoryLayout<sockaddr_un>.size)
        let rc = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &len) }
        }
        let offset = MemoryLayout<sa_family_t>.size
        guard rc == 0, addr.sun_family == sa_family_t(AF_UNIX), Int(len) > offset,
              Int(len) <= MemoryLayout<sockaddr_un>.size else { return nil }
        return withUnsafeBytes(of: &addr.sun_path) { Array($0.prefix(Int(len) - offset)) }
    }

    /// Writes `bytes` before `deadline`, off the cooperative pool (the wait blocks a thread); 0 or the errno.
    private static func write(_ fd: Int32, _ bytes: [UInt8], until deadline: ContinuousClock.Instant) async -> Int32 {
        (try? await NIOThreadPool.singleton.runIfActive { writeAll(fd, bytes, until: deadline) }) ?? ECANCELED
    }

    /// Writes `bytes` before `deadline` (the whole write, not each send); 0 when all were written, else the errno.
    private static func writeAll(_ fd: Int32, _ bytes: [UInt8], until deadline: ContinuousClock.Instant) -> Int32 {
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0, fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0 else { return errno }
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if n >= 0 { sent += n; continue }
            guard errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK else { return errno }
            let left = deadline - .now
            guard left > .zero else { return ETIMEDOUT }
            let ms = Int32(clamping: left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1)
            var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            _ = poll(&pfd, 1, ms)
        }
        return 0
    }
}
