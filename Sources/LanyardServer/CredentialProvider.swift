#if canImport(Glibc)
import Glibc
#endif
import CLanyardSys
import LanyardCore
import LanyardWire
import Logging

/// systemd's `LoadCredential=ID:/run/lanyard/credentials.sock` provider. systemd (PID 1 of
/// lanyardd's pid namespace) connects from a process it forked for the unit — as root, from
/// the abstract address `\0RANDOM/unit/UNIT/ID` (systemd.exec(5)), inside the unit's cgroup
/// (systemd 252: `(sd-mkdcreds)`, a child of the unit's exec child, whose parent is PID 1).
/// Only such a peer is answered, with the credential `service_units:` maps to that unit and
/// id, issued as a lease of the entry's agent and audited like any provision; then the
/// connection closes. Any other peer gets the connection closed without a byte. systemd
/// 252 starts a unit with an empty credential when the connection closes without data, so
/// a unit the policy does not name (or whose credential cannot be issued) is refused with
/// more bytes than systemd takes for a credential: systemd fails the start
/// ("Failed to set up credentials", status 243/CREDENTIALS).
final class CredentialProvider: Sendable {
    /// Connections accepted and not yet answered; more are closed at once (only root can
    /// connect through the socket unit's mode, and systemd asks one credential at a time per unit).
    static let queueBound = 64
    /// How long a write to systemd may block.
    static let writeTimeoutSeconds = 5
    /// One byte more than systemd reads for a credential (CREDENTIAL_SIZE_MAX, 1 MiB): the refusal.
    static let refusalBytes = 1024 * 1024 + 1

    let descriptor: Int32
    private let accepted: AsyncStream<Int32>
    private let stopAccepting: @Sendable () -> Void
    private let policy: PolicyHolder
    private let credentials: CredentialService
    private let attestor: any Attestor
    private let logger: Logger

    init(descriptor: Int32, policy: PolicyHolder, credentials: CredentialService, attestor: any Attestor, logger: Logger) throws {
        let flags = fcntl(descriptor, F_GETFL)
        guard flags >= 0, fcntl(descriptor, F_SETFL, flags | O_NONBLOCK) == 0 else {
            throw StartupError("cannot prepare the credentials socket (non-blocking): \(errnoText())")
        }
        let (stream, continuation) = AsyncStream.makeStream(of: Int32.self, bufferingPolicy: .bufferingOldest(Self.queueBound))
        let reactor = SocketReactor.shared
        let token = reactor.register(descriptor, persistent: true) {
            while true {
                let fd = lanyard_accept(descriptor)
                guard fd >= 0 else { return }
                switch continuation.yield(fd) {
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

    /// Answers connections one at a time until `close`.
    func run() async {
        for await fd in accepted {
            await answer(fd)
            Glibc.close(fd)
        }
    }

    /// Stops accepting and closes the listening socket.
    func close() {
        stopAccepting()
        Glibc.close(descriptor)
    }

    private func answer(_ fd: Int32) async {
        var cred = UCred()
        var len = socklen_t(MemoryLayout<UCred>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 else { return }
        let who: Logger.Metadata = ["caller.uid": "\(cred.uid)", "caller.pid": "\(cred.pid)"]
        // The pidfd and start time first: what /proc says below is then checked to be this process's.
        var pidfdNumber: Int32 = -1
        var pidfdLen = socklen_t(MemoryLayout<Int32>.size)
        let pidfd = getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD_, &pidfdNumber, &pidfdLen) == 0 && pidfdNumber >= 0 ? PidFD(fd: pidfdNumber) : nil
        let peer = attestor.attest(PeerCredentials(uid: cred.uid, gid: cred.gid, pid: cred.pid), pidfd: pidfd)
        guard cred.uid == 0, Self.forkedByPID1(cred.pid) else {
            logger.warning("credentials socket: refused a peer that is not systemd (only root processes PID 1 forked to start a unit are answered); nothing was sent",
                           metadata: who)
            return
        }
        guard let address = Self.peerAddress(fd).flatMap(CredentialRequestAddress.parse) else {
            logger.warning("credentials socket: a systemd process connected from an address that is not systemd's LoadCredential= form (\\0RANDOM/unit/UNIT/ID); nothing was sent",
                           metadata: who)
            return
        }
        let unitMeta: Logger.Metadata = ["unit": "\(address.unit)", "credential": "\(address.id)"]
        // The unit the address names is the one whose cgroup the peer is in.
        guard peer.facts.unit?.sameBytes(as: address.unit) == true else {
            logger.warning("credentials socket: the peer is not in the cgroup of the unit its address names; nothing was sent",
                           metadata: unitMeta.merging(who) { a, _ in a })
            return
        }
        guard peer.startTime != nil, attestor.isStillSame(peer) else {
            logger.warning("credentials socket: the peer could not be attested (it changed or left while checked); nothing was sent", metadata: who)
            return
        }
        let snapshot = policy.current
        let caller = Caller(connection: Connection(peer: peer, credentials: PeerCredentials(uid: cred.uid, gid: cred.gid, pid: cred.pid), sender: cred.pid),
                            agent: nil, snapshot: snapshot)
        let resource = "unit/\(address.unit)/\(address.id)"
        guard let entry = snapshot.policy.serviceUnitCredential(unit: address.unit, id: address.id),
              let agent = snapshot.policy.agent(named: entry.agent) else {
            logger.warning("credentials socket: no credential for this unit and id under service_units: in the policy; the unit's start fails. Add service_units.UNIT.ID to the policy to give it one",
                           metadata: unitMeta)
            defer { Self.refuse(fd) }
            var record = caller.record("provision")
            record.resource = resource
            record.decision = Decision.deny.rawValue
            record.outcome = "not_found"
            record.reason = "the policy names no credential '\(address.id)' for unit \(address.unit) under service_units:"
            record.reasonCode = ReasonCode.notInPolicy.rawValue
            do { try await credentials.store.audit.append(record) } catch {
                logger.error("cannot audit a refused unit credential", metadata: ["error": "\(error)"])
            }
            return
        }
        var request = Lanyard_V1_ProvisionRequest()
        request.service = entry.capability.service
        request.scope = [entry.capability.name]
        request.ttlSeconds = UInt64(entry.ttlSeconds ?? 0)
        request.resource = resource
        let secret: String
        do {
            let response = try await credentials.provision(request, Caller(connection: caller.connection, agent: agent, snapshot: snapshot), agent)
            guard response.provision.hasLease, !response.provision.lease.secret.isEmpty else {
                logger.warning("credentials socket: the unit's credential was not issued; the unit's start fails", metadata: unitMeta.merging([
                    "reason": "\(response.status.message)"]) { a, _ in a })
                Self.refuse(fd)
                return
            }
            secret = response.provision.lease.secret
        } catch {
            let reason = (error as? CallError)?.message ?? "\(error)"
            logger.warning("credentials socket: the unit's credential was refused; the unit's start fails", metadata: unitMeta.merging(["reason": "\(reason)"]) { a, _ in a })
            Self.refuse(fd)
            return
        }
        if Self.writeAll(fd, Array(secret.utf8)) {
            logger.info("credentials socket: credential delivered to the unit", metadata: unitMeta.merging(["agent": "\(agent.name)"]) { a, _ in a })
        } else {
            logger.warning("credentials socket: systemd did not take the credential (write failed); its lease ends at its expiry",
                           metadata: unitMeta.merging(["error": "\(errnoText())"]) { a, _ in a })
        }
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

    /// Makes systemd fail the unit's start: more than a credential's worth of zero bytes.
    private static func refuse(_ fd: Int32) {
        _ = writeAll(fd, [UInt8](repeating: 0, count: refusalBytes))
    }

    /// Writes `bytes` with a bounded wait; true when all were written.
    private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0, fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) == 0 else { return false }
        var timeout = timeval(tv_sec: writeTimeoutSeconds, tv_usec: 0)
        guard setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size)) == 0 else { return false }
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if n < 0 { if errno == EINTR { continue }; return false }
            sent += n
        }
        return true
    }
}
