#if canImport(Glibc)
import Glibc
#endif
import LanyardCore
import LanyardWire
import Logging
import NIOCore
import NIOPosix

/// A connection as the service sees it: the attested peer and which socket it came in on.
public struct Connection: Sendable {
    public var peer: AttestedPeer
    public var credentials: PeerCredentials
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
/// enforces the bounds, and answers each request (pipelined, by id) with `handler`.
struct FramedListener<Request: Envelope, Response: ResponseEnvelope>: Sendable {
    typealias Handler = @Sendable (Request, Connection) async -> Response
    typealias Accepted = (channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>, connection: Connection)?

    let name: String
    let server: NIOAsyncChannel<Accepted, Never>
    let limits: ServerLimits
    let registry: ConnectionRegistry
    let logger: Logger

    /// Binds to an existing listening socket (ours or systemd's).
    static func start(name: String, descriptor: Int32, group: any EventLoopGroup, limits: ServerLimits,
                      registry: ConnectionRegistry, rules: PeerRules, attestor: any Attestor,
                      needsExeHash: @escaping @Sendable (UInt32) -> Bool, logger: Logger) async throws -> Self {
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            // A client may send its requests and shut down its write side: it still gets answers.
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            // Past this many unsent reply bytes the channel is unwritable and `serve` stops taking requests.
            .childChannelOption(.writeBufferWaterMark, value: .init(low: limits.maxUnsentReplyBytes / 2, high: limits.maxUnsentReplyBytes))
            .bind(descriptor) { (channel: any Channel) -> EventLoopFuture<Accepted> in
                guard let provider = channel as? any SocketOptionProvider else {
                    channel.close(promise: nil)
                    return channel.eventLoop.makeSucceededFuture(Accepted.none)
                }
                let credentials: EventLoopFuture<UCred> = provider.unsafeGetSocketOption(level: .socket, name: .init(rawValue: SO_PEERCRED))
                let pidfd: EventLoopFuture<Int32> = provider.unsafeGetSocketOption(level: .socket, name: .init(rawValue: SO_PEERPIDFD_))
                return credentials.and(pidfd.map(Optional.some).recover { _ in nil }).flatMapThrowing { cred, fd in
                    try accept(channel, cred: cred, pidfd: fd.flatMap { $0 > 0 ? PidFD(fd: $0) : nil },
                               limits: limits, registry: registry, rules: rules, attestor: attestor,
                               needsExeHash: needsExeHash, logger: logger)
                }.recover { _ -> Accepted in
                    // No kernel credentials: there is no default caller.
                    channel.close(promise: nil)
                    return nil
                }
            }
        return Self(name: name, server: server, limits: limits, registry: registry, logger: logger)
    }

    /// Runs on the event loop at accept: kernel credentials first, then the caps, then the pipeline.
    private static func accept(_ channel: any Channel, cred: UCred, pidfd: PidFD?, limits: ServerLimits, registry: ConnectionRegistry,
                               rules: PeerRules, attestor: any Attestor, needsExeHash: (UInt32) -> Bool, logger: Logger) throws -> Accepted {
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

        let peer = attestor.attest(creds, pidfd: pidfd, needsExeHash: needsExeHash(creds.uid))
        let timeoutFrame: @Sendable () -> ByteBuffer? = {
            try? Framing.frame(Response.failure(id: 0, .deadlineExceeded, "frame not completed within the deadline; connection closed"))
        }
        try channel.pipeline.syncOperations.addHandlers([
            IdleStateHandler(readTimeout: known ? limits.idleTimeout : limits.unknownIdleTimeout),
            ByteToMessageHandler(FrameDecoder(maxFrame: limits.maxFrame)),
            DeadlineHandler(frameDeadline: limits.frameDeadline, timeoutFrame: timeoutFrame),
        ])
        let async = try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
        return (async, Connection(peer: peer, credentials: creds))
    }

    /// Serves connections until the listener is closed; one connection's failure never
    /// reaches the others.
    func run(_ handler: @escaping Handler) async {
        do {
            try await server.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await accepted in inbound {
                        guard let accepted else { continue }
                        group.addTask { await serve(accepted.channel, accepted.connection, handler) }
                    }
                }
            }
        } catch {
            logger.error("listener stopped", metadata: ["socket": "\(name)", "error": "\(error)"])
        }
    }

    func close() {
        server.channel.close(promise: nil)
    }

    /// Answers a connection's requests, at most `maxInFlight` at once. Backpressure: while the
    /// peer leaves more than `maxUnsentReplyBytes` unread (the channel is unwritable), no
    /// further request is read, and none read is processed, until the peer reads; a reply
    /// waiting to be written is held as its frame only.
    private func serve(_ channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>, _ connection: Connection, _ handler: @escaping Handler) async {
        let maxInFlight = limits.maxInFlight
        let logger = self.logger
        let socket = channel.channel
        let writability = ChangeSignal()
        try? await socket.pipeline.addHandler(WritabilityHandler(writability), position: .first).get()
        do {
            try await channel.executeThenClose { inbound, outbound in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    var unreaped = 0
                    do {
                        for try await frame in inbound {
                            let body = Array(frame.readableBytesView)
                            let request: Request
                            do {
                                request = try Request(serializedBytes: body)
                            } catch {
                                let id = Request.peekID(body) ?? 0
                                try await outbound.write(Framing.frame(Response.failure(id: id, .invalidArgument, "request does not decode as a \(Request.protoMessageName): \(error)")))
                                break
                            }
                            while unreaped >= maxInFlight || (unreaped > 0 && !socket.isWritable) {
                                try await group.next()
                                unreaped -= 1
                            }
                            unreaped += 1
                            group.addTask {
                                await writability.wait { socket.isWritable || !socket.isActive }
                                let frame = try Framing.frame(await handler(request, connection))
                                try await outbound.write(frame)
                            }
                        }
                    } catch let error as FrameError {
                        let code: Lanyard_V1_Code = if case .tooLarge = error { .resourceExhausted } else { .invalidArgument }
                        try? await outbound.write(Framing.frame(Response.failure(id: 0, code, "\(error); connection closed")))
                        logger.info("peer sent a bad frame", metadata: ["caller.uid": "\(connection.credentials.uid)", "error": "\(error)"])
                    }
                    try await group.waitForAll()
                }
            }
        } catch {
            logger.debug("connection ended", metadata: ["caller.uid": "\(connection.credentials.uid)", "error": "\(error)"])
        }
    }
}

/// Moves `signal` whenever the channel's writability changes or it closes, so that `serve`
/// can wait, off the event loop, for a peer to read its replies.
private final class WritabilityHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    let signal: ChangeSignal

    init(_ signal: ChangeSignal) { self.signal = signal }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        signal.bump()
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        signal.bump()
        context.fireChannelInactive()
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
