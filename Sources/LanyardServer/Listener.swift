#if canImport(Glibc)
import Glibc
#endif
import LanyardCore
import LanyardStore
import LanyardWire
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import CLanyardSys

/// A connection as the service sees it: the attested peer, and the process that sent the
/// request being answered.
public struct Connection: Sendable {
    public var peer: AttestedPeer
    public var credentials: PeerCredentials
    /// The sender of the current request's bytes, as the kernel reported them (nil: more
    /// than one process, or no credentials). Set by the listener for each request.
    public var sender: Int32?
    /// What this connection's answers that depend only on it and the policy encoded to.
    let memo = ConnectionMemo()

    /// Invariant 11: why this request must be refused because a process other than the
    /// attested one sent it (a copied, passed or inherited descriptor), or nil.
    var senderRefusal: String? {
        guard sender != credentials.pid else { return nil }
        let who = sender.map { "pid \($0)" } ?? "more than one process or without kernel credentials"
        return "this request was sent by \(who), not by pid \(credentials.pid) that opened the connection; "
            + "a connection answers only the process that opened it: connect from this process"
    }
}

/// A connection's Hello answer, encoded once for each policy version and agent it was
/// given under (the rest of the reply but its id): a Hello is answered from these bytes.
final class ConnectionMemo: Sendable {
    private struct Hello {
        var policy: String
        var agent: String?
        var rest: [UInt8]
    }
    private let memo = NIOLockedValueBox<Hello?>(nil)

    func hello(policy: String, agent: String?, encode: () -> [UInt8]?) -> [UInt8]? {
        if let m = memo.withLockedValue({ $0 }), m.policy == policy, m.agent == agent { return m.rest }
        guard let rest = encode() else { return nil }
        memo.withLockedValue { $0 = Hello(policy: policy, agent: agent, rest: rest) }
        return rest
    }
}

/// What a listener asks the policy about a peer at accept.
struct PeerRules: Sendable {
    var socket: ConnectionRegistry.Socket
    /// May take the admin socket's reserved connections.
    var privileged: @Sendable (PeerCredentials) -> Bool = { _ in false }
    /// The uid is an agent's (agent socket) or holds a role (admin socket). Other peers share
    /// a smaller connection budget and get the short idle timeout.
    var known: @Sendable (PeerCredentials) -> Bool
}

/// One Unix-socket listener speaking Lanyard framing: accepts, attests the peer,
/// enforces the bounds, and answers each request (pipelined, by id) with `handler` —
/// only when the attested process sent it (invariant 11, SenderAttribution.swift).
struct FramedListener<Request: Envelope, Response: ResponseEnvelope>: Sendable {
    typealias Handler = @Sendable (Request, Connection) async -> Response
    typealias Dispatcher = CallDispatcher<Request, Response>
    typealias Accepted = (channel: any Channel, dispatcher: Dispatcher, connection: Connection)?

    let name: String
    let descriptor: Int32
    let accepted: AsyncStream<Int32>
    let stopAccepting: @Sendable () -> Void
    let group: any EventLoopGroup
    let limits: ServerLimits
    let registry: ConnectionRegistry
    /// Handlers running at once per uid, across all its connections to this socket
    /// (`ServerLimits.maxRunningPerUID`).
    let gate: UIDGate
    /// Who counts as known on this socket, and who may use its reserve.
    let rules: PeerRules
    let attestor: any Attestor
    /// Hashes the executables of peers whose uid has exe_sha256 agents (nil: none on this socket).
    let exeHash: (hasher: ExeHasher, needed: @Sendable (UInt32) -> Bool)?
    /// Whether a connection's handlers run on its event loop (`EventLoopExecutor`): the agent
    /// socket, whose calls are short or suspend. The admin socket's (an audit query or
    /// verify reads the whole chain) run on the shared executor.
    let onEventLoop: Bool
    let logger: Logger

    /// Accepts on an existing listening socket (ours or systemd's).
    static func start(name: String, descriptor: Int32, group: any EventLoopGroup, limits: ServerLimits,
                      registry: ConnectionRegistry, rules: PeerRules, attestor: any Attestor,
                      exeHash: (hasher: ExeHasher, needed: @Sendable (UInt32) -> Bool)?, onEventLoop: Bool = false,
                      logger: Logger) async throws -> Self {
        // SO_PASSCRED on the listener: connections inherit it when they connect, so the kernel
        // attributes even the bytes a client sends before lanyardd accepts. Our own sockets
        // have it from before listen(); systemd's get it from PassCredentials=yes.
        var passcred: Int32 = 0
        var size = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(descriptor, SOL_SOCKET, SO_PASSCRED, &passcred, &size) == 0, passcred == 0 {
            logger.warning("the \(name) socket came without SO_PASSCRED: requests sent before it was set are refused; add PassCredentials=yes to its socket unit",
                           metadata: ["socket": "\(name)"])
        }
        let flags = fcntl(descriptor, F_GETFL)
        guard flags >= 0, fcntl(descriptor, F_SETFL, flags | O_NONBLOCK) == 0, lanyard_enable_passcred(descriptor) == 0 else {
            throw StartupError("cannot prepare the \(name) socket (non-blocking, SO_PASSCRED): \(errnoText())")
        }
        let (accepted, continuation) = AsyncStream.makeStream(of: Int32.self)
        let reactor = SocketReactor.shared
        let token = reactor.register(descriptor, persistent: true) {
            while true {
                let fd = lanyard_accept(descriptor)
                guard fd >= 0 else { return }  // EAGAIN, or an error the next readiness retries
                if case .terminated = continuation.yield(fd) { Glibc.close(fd) }
            }
        }
        guard token != 0 else { throw StartupError("cannot watch the \(name) socket: \(errnoText())") }
        let stop: @Sendable () -> Void = {
            reactor.deregister(descriptor, token: token)
            continuation.finish()
        }
        return Self(name: name, descriptor: descriptor, accepted: accepted, stopAccepting: stop, group: group, limits: limits,
                    registry: registry, gate: UIDGate(limit: limits.maxRunningPerUID), rules: rules, attestor: attestor, exeHash: exeHash,
                    onEventLoop: onEventLoop, logger: logger)
    }

    /// Sets up one accepted socket on `loop`: kernel credentials first, then the caps, then
    /// the pipeline, whose calls run on `executor`.
    private func setUp(_ fd: Int32, on loop: any EventLoop, executor: any TaskExecutor, _ handler: @escaping Handler,
                       immediate: Dispatcher.Immediate?) async -> Accepted {
        var peerCred = UCred()
        var len = socklen_t(MemoryLayout<UCred>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peerCred, &len) == 0, lanyard_enable_passcred(fd) == 0 else {
            // No kernel credentials: there is no default caller.
            Glibc.close(fd)
            return nil
        }
        var pidfdNumber: Int32 = -1
        var pidfdLen = socklen_t(MemoryLayout<Int32>.size)
        let pidfd = getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD_, &pidfdNumber, &pidfdLen) == 0 && pidfdNumber >= 0 ? PidFD(fd: pidfdNumber) : nil
        let output = fcntl(fd, F_DUPFD_CLOEXEC, 0)
        guard output >= 0 else {
            Glibc.close(fd)
            return nil
        }
        let cred = peerCred
        // The reader owns `fd` from the moment the initializer adds it; until then, we do.
        let owned = NIOLockedValueBox(false)
        let limits = self.limits, registry = self.registry, rules = self.rules, attestor = self.attestor, logger = self.logger
        let dispatcher = Dispatcher(loop: loop, maxInFlight: limits.maxInFlight, executor: executor, uid: cred.uid, logger: logger,
                                    immediate: immediate) {
            [self] request, sent in await answer(request, sent, handler)
        }
        do {
            // Past this many unsent reply bytes the channel is unwritable and `serve` stops taking requests.
            return try await NIOPipeBootstrap(group: loop)
                .channelOption(.writeBufferWaterMark, value: .init(low: limits.maxUnsentReplyBytes / 2, high: limits.maxUnsentReplyBytes))
                .takingOwnershipOfDescriptor(output: output) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let ledger = SenderLedger()
                    try channel.pipeline.syncOperations.addHandler(AttributedReader(fd: fd, ledger: ledger))
                    owned.withLockedValue { $0 = true }
                    return try Self.accept(channel, cred: cred, pidfd: pidfd, ledger: ledger, dispatcher: dispatcher, limits: limits,
                                           registry: registry, rules: rules, attestor: attestor, logger: logger)
                }
            }
        } catch {
            if !owned.withLockedValue({ $0 }) { Glibc.close(fd) }
            logger.debug("connection setup failed", metadata: ["caller.uid": "\(cred.uid)", "error": "\(error)"])
            return nil
        }
    }

    /// Runs on the event loop at accept: the caps, attestation, then the pipeline.
    private static func accept(_ channel: any Channel, cred: UCred, pidfd: PidFD?, ledger: SenderLedger, dispatcher: Dispatcher, limits: ServerLimits,
                               registry: ConnectionRegistry, rules: PeerRules, attestor: any Attestor, logger: Logger) throws -> Accepted {
        let creds = PeerCredentials(uid: cred.uid, gid: cred.gid, pid: cred.pid)

        let known = rules.known(creds)
        switch registry.admit(uid: creds.uid, socket: rules.socket, known: known, channel: channel, privileged: { rules.privileged(creds) }) {
        case .admitted:
            break
        case .refused(let n, let bound):
            logger.warning("connection refused: too many connections", metadata: ["caller.uid": "\(creds.uid)", "limit": "\(n)", "bound": "\(bound)"])
            let refusal = Response.failure(id: 0, .resourceExhausted, "too many connections (limit \(n), \(bound)); close idle connections and retry")
            if let buffer = try? Framing.frame(refusal, allocator: channel.allocator) {
                channel.writeAndFlush(buffer).whenComplete { _ in channel.close(promise: nil) }
            } else {
                channel.close(promise: nil)
            }
            return nil
        }
        channel.closeFuture.whenComplete { _ in registry.release(uid: creds.uid, socket: rules.socket, known: known, channel: channel) }

        let peer = attestor.attest(creds, pidfd: pidfd)
        var connectionLogger = logger
        connectionLogger[metadataKey: "caller.uid"] = "\(creds.uid)"
        connectionLogger[metadataKey: "caller.pid"] = "\(creds.pid)"
        let timeoutFrame: @Sendable () -> ByteBuffer? = {
            try? Framing.frame(Response.failure(id: 0, .deadlineExceeded, "frame not completed within the deadline; connection closed"))
        }
        try channel.pipeline.syncOperations.addHandlers([
            IdleStateHandler(readTimeout: known ? limits.idleTimeout : limits.unknownIdleTimeout),
            ByteToMessageHandler(FrameDecoder(maxFrame: limits.maxFrame)),
            DeadlineHandler(frameDeadline: limits.frameDeadline, replyDeadline: limits.replyDeadline, logger: connectionLogger,
                            readsHeld: { [weak dispatcher] in dispatcher?.holdsReads ?? false }, timeoutFrame: timeoutFrame),
            FrameAttribution(ledger: ledger),
            dispatcher,
        ])
        return (channel, dispatcher, Connection(peer: peer, credentials: creds, sender: nil))
    }

    /// Serves connections until the listener is closed; one connection's failure never
    /// reaches the others. `immediate` answers the calls it can on the event loop, as they are read.
    func run(_ handler: @escaping Handler, immediate: Dispatcher.Immediate? = nil) async {
        await withDiscardingTaskGroup { tasks in
            for await fd in accepted {
                // A connection is set up on the event loop that will own it, never queued on
                // Swift's shared threads behind the calls other peers keep busy there.
                let loop = group.next()
                let executor = EventLoopExecutor(loop)
                tasks.addTask(executorPreference: executor) {
                    guard let accepted = await setUp(fd, on: loop, executor: onEventLoop ? executor : globalConcurrentExecutor, handler,
                                                     immediate: immediate) else { return }
                    let connection = await withExeHash(accepted.connection, channel: accepted.channel)
                    accepted.dispatcher.start(connection)
                    await accepted.dispatcher.closed()
                }
            }
        }
    }

    /// Stops accepting and closes the listening socket; open connections go on.
    func close() {
        stopAccepting()
        Glibc.close(descriptor)
    }

    /// The connection with the peer's exe_sha256 where its uid needs one, taken before its
    /// first call is dispatched.
    private func withExeHash(_ connection: Connection, channel: any Channel) async -> Connection {
        guard let exeHash, exeHash.needed(connection.credentials.uid) else { return connection }
        var hashed = connection
        hashed.peer.facts.exeSHA256 = await hashExe(connection, exeHash.hasher, channel: channel)
        return hashed
    }

    /// The peer's exe_sha256; nil (the selector does not match) when the file is too large,
    /// writable by others than root, or the peer left.
    private func hashExe(_ connection: Connection, _ hasher: ExeHasher, channel: any Channel) async -> String? {
        let pidfd = connection.peer.pidfd
        let closed = NIOLockedValueBox(false)
        channel.closeFuture.whenComplete { _ in closed.withLockedValue { $0 = true } }
        let outcome = await hasher.hash(connection.peer) { !closed.withLockedValue { $0 } && pidfd?.isAlive != false }
        let who: Logger.Metadata = ["caller.uid": "\(connection.credentials.uid)", "caller.pid": "\(connection.credentials.pid)"]
        switch outcome {
        case .hash(let digest):
            return digest
        case .tooLarge(let size, let bound):
            logger.warning("exe_sha256 not taken: the executable is larger than --max-exe-hash-bytes; raise the bound or pin by exe",
                           metadata: who.merging(["exe.size": "\(size)", "bound": "\(bound)"]) { a, _ in a })
        case .writable(let writer):
            logger.warning("exe_sha256 not taken: the executable is writable by \(writer), not only root; install it root-owned, not group- or world-writable",
                           metadata: who)
        case .gone:
            logger.debug("exe_sha256 not taken: the peer left or changed while it was hashed", metadata: who)
        }
        return nil
    }

    /// One call: at its uid's gate, and off the event loop when it reads many rows, leaving
    /// the loop to the calls sharing it. A long poll that works only briefly (AwaitApproval)
    /// waits without taking a place; one that reads rows (an admin's approvals watch) works
    /// in its place, checks included, and is away from it only while it waits (`Place.away`).
    private func answer(_ request: Request, _ sent: Connection, _ handler: Handler) async -> Response {
        @Sendable func gated() async -> Response {
            if request.waitsLong, request.isBrief { return await handler(request, sent) }
            let place = await gate.enter(sent.credentials.uid)
            defer { place.leave() }
            func work() async -> Response { await AuditWait.$current.withValue(AuditWait(place.waitsOnDisk)) { await handler(request, sent) } }
            // Only a long poll steps away from its place (`Place.away`): the others pay no task-local.
            return request.waitsLong ? await UIDGate.Place.$current.withValue(place) { await work() } : await work()
        }
        return onEventLoop && !request.isBrief ? await withTaskExecutorPreference(globalConcurrentExecutor) { await gated() } : await gated()
    }
}

extension ChangeSignal {
    /// Returns once `condition` holds; it is checked again each time the signal moves.
    func wait(until condition: () -> Bool) async {
        while true {
            let seen = version
            if condition() || Task.isCancelled { return }
            await wait(since: seen, until: .now + .seconds(3600))
        }
    }
}

/// At most `limit` handlers work at once for one uid, across its connections; the rest
/// wait their turn in order. A uid that pipelines expensive calls on many connections
/// queues behind itself, not in front of every other peer. A call that waits for its audit
/// commit gives its place to the next (`Place.waitsOnDisk`), up to `diskLimit` such calls
/// of the uid at once, so that one agent's concurrent calls share one group commit.
final class UIDGate: Sendable {
    private struct State {
        var running: [UInt32: Int] = [:]
        var onDisk: [UInt32: Int] = [:]
        var waiting: [UInt32: [CheckedContinuation<Void, Never>]] = [:]
    }
    private let state = NIOLockedValueBox(State())
    let limit: Int
    let diskLimit: Int

    init(limit: Int, diskLimit: Int = 64) {
        self.limit = max(1, limit)
        self.diskLimit = max(0, diskLimit)
    }

    /// One call's place: working, then perhaps waiting for the disk (or away from it while
    /// it waits for a change, and working again), then left.
    final class Place: Sendable {
        /// The place of the long poll this task works on, while it works at its uid's gate.
        @TaskLocal static var current: Place?

        private enum Stage { case working, onDisk, away, left }
        private let gate: UIDGate
        private let uid: UInt32
        private let stage = NIOLockedValueBox(Stage.working)

        fileprivate init(_ gate: UIDGate, _ uid: UInt32) {
            self.gate = gate
            self.uid = uid
        }

        /// The call waits for its audit commit: its working place goes to the next call, if
        /// fewer than `diskLimit` of the uid's calls wait so already.
        @Sendable func waitsOnDisk() {
            // The next call is resumed once this place's lock is released.
            let next = stage.withLockedValue { s -> CheckedContinuation<Void, Never>? in
                guard s == .working, case .moved(let next) = gate.moveToDisk(uid) else { return nil }
                s = .onDisk
                return next
            }
            next?.resume()
        }

        /// Runs `body`, a wait that is not work (an approvals watch), without the place, which
        /// goes to the next call; then takes a place again, in turn, for the work after it.
        func away<T>(while body: () async -> T) async -> T {
            let working = stage.withLockedValue { s in
                guard s == .working else { return false }
                s = .away
                return true
            }
            guard working else { return await body() }
            gate.leave(uid)
            let result = await body()
            await gate.take(uid)
            stage.withLockedValue { $0 = .working }
            return result
        }

        func leave() {
            let was = stage.withLockedValue { s in
                defer { s = .left }
                return s
            }
            switch was {
            case .working: gate.leave(uid)
            case .onDisk: gate.leaveDisk(uid)
            case .away, .left: break
            }
        }
    }

    func enter(_ uid: UInt32) async -> Place {
        await take(uid)
        return Place(self, uid)
    }

    /// Takes a working place of `uid`, in turn.
    fileprivate func take(_ uid: UInt32) async {
        // The common case takes a free place without suspending.
        let entered = state.withLockedValue { s in
            guard s.running[uid, default: 0] < limit, s.waiting[uid] == nil else { return false }
            s.running[uid, default: 0] += 1
            return true
        }
        if entered { return }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLockedValue { s in
                guard s.running[uid, default: 0] < limit else {
                    s.waiting[uid, default: []].append(c)
                    return false
                }
                s.running[uid, default: 0] += 1
                return true
            }
            if now { c.resume() }
        }
    }

    /// Calls of `uid` working, waiting for the disk, and waiting for a place (for tests).
    func counts(_ uid: UInt32) -> (working: Int, onDisk: Int, queued: Int) {
        state.withLockedValue { ($0.running[uid] ?? 0, $0.onDisk[uid] ?? 0, $0.waiting[uid]?.count ?? 0) }
    }

    /// Hands the place to the next waiter of `uid`, or frees it.
    fileprivate func leave(_ uid: UInt32) {
        state.withLockedValue { s in Self.handOn(uid, &s) }?.resume()
    }

    fileprivate enum DiskMove {
        /// `diskLimit` of the uid's calls wait for the disk already: the call keeps its place.
        case refused
        /// The place went to `next` (for the caller to resume), or was freed.
        case moved(next: CheckedContinuation<Void, Never>?)
    }

    /// Moves one working call of `uid` to the disk wait, handing its place on.
    fileprivate func moveToDisk(_ uid: UInt32) -> DiskMove {
        state.withLockedValue { s in
            guard s.onDisk[uid, default: 0] < diskLimit else { return .refused }
            s.onDisk[uid, default: 0] += 1
            return .moved(next: Self.handOn(uid, &s))
        }
    }

    fileprivate func leaveDisk(_ uid: UInt32) {
        state.withLockedValue { s in
            s.onDisk[uid, default: 1] -= 1
            if s.onDisk[uid] == 0 { s.onDisk[uid] = nil }
        }
    }

    /// The next waiter of `uid`, who takes the place; or nil, and the place is freed.
    private static func handOn(_ uid: UInt32, _ s: inout State) -> CheckedContinuation<Void, Never>? {
        if var queue = s.waiting[uid], !queue.isEmpty {
            let c = queue.removeFirst()
            s.waiting[uid] = queue.isEmpty ? nil : queue
            return c
        }
        s.running[uid, default: 1] -= 1
        if s.running[uid] == 0 { s.running[uid] = nil }
        return nil
    }
}
