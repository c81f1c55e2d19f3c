import LanyardWire
import NIOCore
import NIOPosix
import SwiftProtobuf
import NIOConcurrencyHelpers

/// An error status from lanyardd, or a transport failure (UNAVAILABLE).
/// `response` carries whatever result explains the error (for example a Provision's
/// `approval_id` with FAILED_PRECONDITION).
public struct LanyardError: Error, CustomStringConvertible, Sendable {
    public var code: Lanyard_V1_Code
    public var message: String
    public var response: (any ResponseEnvelope & Sendable)?

    public init(code: Lanyard_V1_Code, message: String, response: (any ResponseEnvelope & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.response = response
    }

    public var description: String { "\(code.name): \(message)" }
}

extension Lanyard_V1_Code {
    /// The gRPC-style name, e.g. PERMISSION_DENIED.
    public var name: String {
        switch self {
        case .ok: "OK"
        case .cancelled: "CANCELLED"
        case .unknown: "UNKNOWN"
        case .invalidArgument: "INVALID_ARGUMENT"
        case .deadlineExceeded: "DEADLINE_EXCEEDED"
        case .notFound: "NOT_FOUND"
        case .alreadyExists: "ALREADY_EXISTS"
        case .permissionDenied: "PERMISSION_DENIED"
        case .resourceExhausted: "RESOURCE_EXHAUSTED"
        case .failedPrecondition: "FAILED_PRECONDITION"
        case .aborted: "ABORTED"
        case .outOfRange: "OUT_OF_RANGE"
        case .unimplemented: "UNIMPLEMENTED"
        case .internal: "INTERNAL"
        case .unavailable: "UNAVAILABLE"
        case .dataLoss: "DATA_LOSS"
        case .unauthenticated: "UNAUTHENTICATED"
        case .UNRECOGNIZED(let n): "CODE_\(n)"
        }
    }
}

/// One framed, pipelined connection: requests carry ids, responses are matched by id
/// in whatever order they come back. Reconnects on the next call after a failure.
public final class FramedConnection<Request: Envelope, Response: ResponseEnvelope & Sendable>: Sendable {
    public enum Endpoint: Sendable {
        case path(String)
        case descriptor(Int32)
    }

    private let endpoint: Endpoint
    private let maxFrame: Int
    private let group: any EventLoopGroup
    private struct State {
        var channel: (any Channel)?
        var connecting: EventLoopFuture<any Channel>?
        var nextID: UInt64 = 1
        var descriptorUsed = false
    }
    private let state = NIOLockedValueBox(State())

    public init(_ endpoint: Endpoint, maxFrame: Int = Framing.defaultMaxFrame, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.endpoint = endpoint
        self.maxFrame = maxFrame
        self.group = group
    }

    deinit {
        state.withLockedValue { $0.channel }?.close(promise: nil)
    }

    /// Sends `request` (its id is assigned here) and returns the response with the same id,
    /// whatever its status. Throws only `LanyardError` (a transport failure is UNAVAILABLE).
    public func send(_ request: Request) async throws -> Response {
        var request = request
        let channel = try await connectedChannel()
        request.id = state.withLockedValue { s in
            defer { s.nextID &+= 1 }
            return s.nextID
        }
        let buffer: ByteBuffer
        do {
            buffer = try Framing.frame(request, allocator: channel.allocator)
        } catch {
            throw LanyardError(code: .invalidArgument, message: "request does not encode: \(error)")
        }
        let promise = channel.eventLoop.makePromise(of: Response.self)
        let id = request.id
        channel.eventLoop.execute {
            do {
                let router = try channel.pipeline.syncOperations.handler(type: ResponseRouter<Response>.self)
                router.expect(id, promise)
                channel.writeAndFlush(buffer).whenFailure {
                    promise.fail(LanyardError(code: .unavailable, message: "cannot send to lanyardd: \($0)"))
                }
            } catch {
                promise.fail(LanyardError(code: .unavailable, message: "connection to lanyardd is closed"))
            }
        }
        return try await promise.futureResult.get()
    }

    /// Closes the connection and returns once NIO has finished with it: its teardown
    /// (which drops the cached socket addresses) runs on the event loop after
    /// `closeFuture`, and one more turn of the loop waits for that.
    public func close() async {
        let (channel, connecting) = state.withLockedValue { s in
            defer { (s.channel, s.connecting) = (nil, nil) }
            return (s.channel, s.connecting)
        }
        for channel in [channel, try? await connecting?.get()].compactMap({ $0 }) {
            try? await channel.close()
            try? await channel.closeFuture.get()
            try? await channel.eventLoop.submit {}.get()
        }
    }

    /// The live channel, connecting first if needed. Concurrent first calls share one
    /// connection attempt; a passed-in descriptor is wrapped exactly once.
    private func connectedChannel() async throws -> any Channel {
        let pending: EventLoopFuture<any Channel> = try state.withLockedValue { s in
            if let channel = s.channel, channel.isActive { return channel.eventLoop.makeSucceededFuture(channel) }
            if let connecting = s.connecting { return connecting }
            let maxFrame = self.maxFrame
            let bootstrap = ClientBootstrap(group: group).channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(FrameDecoder(maxFrame: maxFrame)),
                        ResponseRouter<Response>(),
                    ])
                }
            }
            let next: EventLoopFuture<any Channel>
            switch endpoint {
            case .path(let path):
                next = bootstrap.connect(unixDomainSocketPath: path)
            case .descriptor(let fd):
                guard !s.descriptorUsed else {
                    throw LanyardError(code: .unavailable, message: "the connection to lanyardd is closed (a passed-in socket cannot reconnect)")
                }
                s.descriptorUsed = true
                next = bootstrap.withConnectedSocket(fd)
            }
            s.channel = nil
            s.connecting = next
            return next
        }
        do {
            let channel = try await pending.get()
            state.withLockedValue { s in
                if s.connecting === pending {
                    s.connecting = nil
                    s.channel = channel
                }
            }
            return channel
        } catch {
            state.withLockedValue { s in if s.connecting === pending { s.connecting = nil } }
            let target = if case .path(let p) = endpoint { p } else { "the given socket" }
            throw LanyardError(code: .unavailable, message: "cannot connect to lanyardd at \(target): \(error); is the daemon running and the socket path right?")
        }
    }
}

/// Completes each pending call when the response with its id arrives; fails them all
/// when the connection drops.
final class ResponseRouter<Response: ResponseEnvelope & Sendable>: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private var pending: [UInt64: EventLoopPromise<Response>] = [:]
    private var refusal: LanyardError?

    func expect(_ id: UInt64, _ promise: EventLoopPromise<Response>) {
        pending[id] = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let body = unwrapInboundIn(data)
        guard let response = try? Response(serializedBytes: Array(body.readableBytesView)) else {
            failAll(LanyardError(code: .internal, message: "lanyardd sent a response that does not decode"))
            context.close(promise: nil)
            return
        }
        if response.id == 0, response.status.code != .ok {
            // A connection-level error (cap reached, bad frame, deadline): fails every call.
            refusal = LanyardError(code: response.status.code, message: response.status.message)
            failAll(refusal!)
            return
        }
        pending.removeValue(forKey: response.id)?.succeed(response)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(LanyardError(code: .unavailable, message: "connection to lanyardd failed: \(error)"))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(refusal ?? LanyardError(code: .unavailable, message: "lanyardd closed the connection"))
        context.fireChannelInactive()
    }

    private func failAll(_ error: LanyardError) {
        let calls = pending
        pending.removeAll()
        for (_, p) in calls { p.fail(error) }
    }
}
