import CLanyardSys
import LanyardWire
import NIOCore
import NIOConcurrencyHelpers

/// Per-peer bounds (DESIGN.md section 13). A misbehaving peer hits these, not the others.
public struct ServerLimits: Sendable {
    public var maxFrame = 64 * 1024
    public var maxInFlight = 64
    public var maxConnectionsPerUID = 64
    public var maxConnections = 1024
    /// Once a frame's first byte arrives the whole frame must arrive within this.
    public var frameDeadline: TimeAmount = .seconds(5)
    public var idleTimeout: TimeAmount = .minutes(10)
    /// An executable larger than this is not hashed: its exe_sha256 selectors do not match.
    public var maxExeHashBytes: Int64 = 256 * 1024 * 1024
    /// Executables hashed at once for one uid (the others wait their turn).
    public var exeHashesPerUID = 1
    public init() {}
}

/// Counts live connections per uid and in all, and remembers them for shutdown.
public final class ConnectionRegistry: Sendable {
    private struct State {
        var perUID: [UInt32: Int] = [:]
        var total = 0
        var channels: [ObjectIdentifier: any Channel] = [:]
        var lastTrim = ContinuousClock.now
    }

    public enum Admission: Equatable {
        case admitted
        case tooManyForUID(Int)
        case tooMany(Int)
    }

    private let state = NIOLockedValueBox(State())
    private let limits: ServerLimits

    public init(limits: ServerLimits) { self.limits = limits }

    public func admit(uid: UInt32, channel: any Channel) -> Admission {
        state.withLockedValue { s in
            if s.total >= limits.maxConnections { return .tooMany(limits.maxConnections) }
            if s.perUID[uid, default: 0] >= limits.maxConnectionsPerUID { return .tooManyForUID(limits.maxConnectionsPerUID) }
            s.total += 1
            s.perUID[uid, default: 0] += 1
            s.channels[ObjectIdentifier(channel)] = channel
            return .admitted
        }
    }

    public func release(uid: UInt32, channel: any Channel) {
        let idle = state.withLockedValue { s in
            s.total -= 1
            s.perUID[uid, default: 1] -= 1
            if s.perUID[uid] == 0 { s.perUID[uid] = nil }
            s.channels[ObjectIdentifier(channel)] = nil
            guard s.total == 0, ContinuousClock.now - s.lastTrim > .seconds(1) else { return false }
            s.lastTrim = .now
            return true
        }
        // The last connection is gone: give the memory of the burst back (at most once a second).
        if idle { lanyard_release_free_memory() }
    }

    public var count: Int { state.withLockedValue { $0.total } }

    /// Stops reading on every connection: in-flight calls finish and are answered.
    public func closeAllInputs() {
        let channels = state.withLockedValue { Array($0.channels.values) }
        for c in channels { c.triggerUserOutboundEvent(StopReading(), promise: nil) }
    }
}

/// Enforces the frame deadline (from a frame's first byte to its last) and closes
/// idle connections. Driven by the decoder's `FrameProgress` events.
final class DeadlineHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let frameDeadline: TimeAmount
    private let makeTimeoutFrame: @Sendable () -> ByteBuffer?
    private var timer: Scheduled<Void>?

    init(frameDeadline: TimeAmount, timeoutFrame: @escaping @Sendable () -> ByteBuffer?) {
        self.frameDeadline = frameDeadline
        self.makeTimeoutFrame = timeoutFrame
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case FrameProgress.started:
            timer?.cancel()
            let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
            let frame = makeTimeoutFrame
            timer = context.eventLoop.scheduleTask(in: frameDeadline) {
                let context = loopBound.value
                if let buffer = frame() { context.writeAndFlush(NIOAny(buffer), promise: nil) }
                context.close(promise: nil)
            }
        case FrameProgress.completed:
            timer?.cancel()
            timer = nil
        case is IdleStateHandler.IdleStateEvent:
            context.close(promise: nil)
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }
}
