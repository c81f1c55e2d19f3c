import CLanyardSys
import LanyardWire
import Logging
import NIOCore
import NIOConcurrencyHelpers

/// Per-peer bounds (DESIGN.md section 13). A misbehaving peer hits these, not the others.
/// Each is a `lanyardd` flag and config key (README, `lanyardd --help`).
public struct ServerLimits: Sendable {
    public var maxFrame = 64 * 1024
    public var maxInFlight = 64
    /// Calls of one uid being worked on at once, across all its connections to a socket
    /// (long polls aside): a uid's pipelined flood queues behind itself, not before others.
    public var maxRunningPerUID = 8
    public var maxConnectionsPerUID = 64
    /// Connections to the agent socket in all.
    public var maxConnections = 1024
    /// Connections to the admin socket in all: a budget of its own, so agents' peers never lock admins out.
    public var maxAdminConnections = 64
    /// Of `maxAdminConnections`, the last ones only admins (root, `admins:`) may take.
    public var adminReserve = 8
    /// Connections of uids that are no agent (admin socket: that hold no role), per socket in all:
    /// strangers share this, and never crowd out agents and admins.
    public var maxUnknownConnections = 256
    /// Once a frame's first byte arrives the whole frame must arrive within this.
    public var frameDeadline: TimeAmount = .seconds(5)
    public var idleTimeout: TimeAmount = .minutes(10)
    /// An executable larger than this is not hashed: its exe_sha256 selectors do not match.
    public var maxExeHashBytes: Int64 = 256 * 1024 * 1024
    /// Executables hashed at once for one uid (the others wait their turn).
    public var exeHashesPerUID = 1
    /// A connection of a uid that is no agent (agent socket) or has no role (admin socket)
    /// is closed after being idle this long.
    public var unknownIdleTimeout: TimeAmount = .seconds(10)
    /// Reply bytes a connection may leave unread before the daemon stops reading its requests.
    public var maxUnsentReplyBytes = 256 * 1024
    /// Once a peer leaves more than `maxUnsentReplyBytes` unread, it must read within this, or
    /// its connection closes: a peer that stops reading holds neither its connection, its
    /// unsent replies nor the daemon's graceful shutdown for longer.
    public var replyDeadline: TimeAmount = .seconds(10)
    /// Live PENDING approvals one agent may have at once.
    public var maxPendingApprovalsPerAgent = 16
    /// Active leases one agent may hold at once.
    public var maxLeasesPerAgent = 1000
    /// Bytes of a stored request field: resource, each args key and value, amount unit.
    public var maxFieldBytes = 1024
    /// Args entries of one request.
    public var maxArgs = 16
    /// Refused calls of callers that match no agent: one audit record per uid and interval, with a count.
    public var unknownAuditInterval: Duration = .seconds(60)
    public init() {}

    /// What one reply may take, so it fits in the clients' default 64 KiB frame cap.
    static let replyBudget = 48 * 1024

    /// Open files the limits need: a socket and a pidfd per connection, a pidfd per process
    /// with bound leases or process-lifetime approvals, plus the daemon's own.
    public var descriptorsNeeded: Int {
        2 * (maxConnections + maxAdminConnections) + ProcessWatcher.defaultLimit + ProcessApprovals.defaultLimit + 128
    }

    func budget(_ socket: ConnectionRegistry.Socket) -> (total: Int, reserve: Int) {
        socket == .agent ? (maxConnections, 0) : (maxAdminConnections, adminReserve)
    }
}

extension ServerLimits {
    /// Why a request's fields that an approval stores are over their caps, or nil. Checked
    /// before anything is stored; the text names the cap and never echoes the field.
    func fieldProblem(resource: String, args: [String: String], unit: String) -> String? {
        let cap = "(limit \(maxFieldBytes) bytes, --max-field-bytes); shorten it"
        if resource.utf8.count > maxFieldBytes { return "resource is \(resource.utf8.count) bytes \(cap)" }
        if unit.utf8.count > maxFieldBytes { return "amount.unit is \(unit.utf8.count) bytes \(cap)" }
        if args.count > maxArgs { return "args has \(args.count) entries (limit \(maxArgs), --max-args); send fewer" }
        for (key, value) in args {
            if key.utf8.count > maxFieldBytes { return "an args key is \(key.utf8.count) bytes \(cap)" }
            if value.utf8.count > maxFieldBytes { return "an args value is \(value.utf8.count) bytes \(cap)" }
        }
        return nil
    }
}

/// Counts live connections per socket, per uid and in all, and remembers them for shutdown.
/// Each socket has its own budget; the admin socket keeps a reserve for admins.
public final class ConnectionRegistry: Sendable {
    public enum Socket: Sendable, Hashable { case agent, admin }

    private struct State {
        var perUID: [Key: Int] = [:]
        var total: [Socket: Int] = [:]
        var unknown: [Socket: Int] = [:]
        var channels: [ObjectIdentifier: any Channel] = [:]
        var lastTrim = ContinuousClock.now
    }

    private struct Key: Hashable {
        var socket: Socket
        var uid: UInt32
    }

    public enum Admission: Equatable {
        case admitted
        /// Refused: the limit reached and the flag that sets it.
        case refused(limit: Int, bound: String)
    }

    private let state = NIOLockedValueBox(State())
    private let limits: ServerLimits

    public init(limits: ServerLimits) { self.limits = limits }

    /// `known`: the uid is an agent's (admin socket: holds a role); others share
    /// `maxUnknownConnections`. `privileged` (asked only once the reserve is reached) says
    /// whether the peer may take the admin reserve.
    public func admit(uid: UInt32, socket: Socket, known: Bool, channel: any Channel, privileged: () -> Bool = { false }) -> Admission {
        let (max, reserve) = limits.budget(socket)
        let key = Key(socket: socket, uid: uid)
        return state.withLockedValue { s in
            let total = s.total[socket, default: 0]
            if total >= max { return .refused(limit: max, bound: socket == .agent ? "--max-connections" : "--max-admin-connections") }
            if total >= max - reserve, !privileged() { return .refused(limit: max - reserve, bound: "--max-admin-connections less --admin-reserve, kept for admins") }
            if !known, s.unknown[socket, default: 0] >= limits.maxUnknownConnections {
                return .refused(limit: limits.maxUnknownConnections, bound: "--max-unknown-connections, shared by uids that are no agent")
            }
            if s.perUID[key, default: 0] >= limits.maxConnectionsPerUID { return .refused(limit: limits.maxConnectionsPerUID, bound: "--max-connections-per-uid") }
            s.total[socket] = total + 1
            if !known { s.unknown[socket, default: 0] += 1 }
            s.perUID[key, default: 0] += 1
            s.channels[ObjectIdentifier(channel)] = channel
            return .admitted
        }
    }

    public func release(uid: UInt32, socket: Socket, known: Bool, channel: any Channel) {
        let key = Key(socket: socket, uid: uid)
        let idle = state.withLockedValue { s in
            s.total[socket, default: 1] -= 1
            if !known { s.unknown[socket, default: 1] -= 1 }
            s.perUID[key, default: 1] -= 1
            if s.perUID[key] == 0 { s.perUID[key] = nil }
            s.channels[ObjectIdentifier(channel)] = nil
            guard s.channels.isEmpty, ContinuousClock.now - s.lastTrim > .seconds(1) else { return false }
            s.lastTrim = .now
            return true
        }
        // The last connection is gone: give the memory of the burst back (at most once a second).
        if idle { lanyard_release_free_memory() }
    }

    /// Live connections on both sockets.
    public var count: Int { state.withLockedValue { $0.channels.count } }

    /// Stops reading on every connection: in-flight calls finish and are answered.
    public func closeAllInputs() {
        let channels = state.withLockedValue { Array($0.channels.values) }
        for c in channels { c.triggerUserOutboundEvent(StopReading(), promise: nil) }
    }
}

/// Enforces the frame deadline (from a frame's first byte to its last, while the daemon reads) and the reply
/// deadline (from the moment a peer's unread replies pass the bound until it reads again),
/// and closes idle connections (never one waiting for an answer). Driven by the decoder's
/// `FrameProgress` events and the channel's writability.
final class DeadlineHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Requests read and not yet answered: a connection waiting for its answer is not idle.
    private var unanswered = 0

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        unanswered += 1
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        unanswered = max(0, unanswered - 1)
        context.write(data, promise: promise)
    }

    private let frameDeadline: TimeAmount
    private let replyDeadline: TimeAmount
    private let makeTimeoutFrame: @Sendable () -> ByteBuffer?
    private let readsHeld: @Sendable () -> Bool
    private let logger: Logger
    private var timer: Scheduled<Void>?
    private var replyTimer: Scheduled<Void>?

    /// `logger`: with the connection's uid in its metadata. `readsHeld`: whether the daemon
    /// holds the connection's reads now (`CallDispatcher.holdsReads`; called on the loop).
    init(frameDeadline: TimeAmount, replyDeadline: TimeAmount, logger: Logger, readsHeld: @escaping @Sendable () -> Bool,
         timeoutFrame: @escaping @Sendable () -> ByteBuffer?) {
        self.frameDeadline = frameDeadline
        self.replyDeadline = replyDeadline
        self.logger = logger
        self.readsHeld = readsHeld
        self.makeTimeoutFrame = timeoutFrame
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            replyTimer?.cancel()
            replyTimer = nil
        } else if replyTimer == nil {
            let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
            let (logger, deadline) = (logger, replyDeadline)
            replyTimer = context.eventLoop.scheduleTask(in: replyDeadline) {
                logger.notice("peer left its replies unread past the reply deadline; connection closed",
                              metadata: ["deadline.ms": "\(deadline.nanoseconds / 1_000_000)"])
                loopBound.value.close(promise: nil)
            }
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case FrameProgress.started:
            timer?.cancel()
            armFrameDeadline(context)
        case FrameProgress.completed:
            timer?.cancel()
            timer = nil
        case is IdleStateHandler.IdleStateEvent:
            if unanswered == 0 { context.close(promise: nil) }
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    /// Closes the connection `frameDeadline` from now unless the frame completes first. While
    /// the daemon itself holds the reads (the rest of the frame waits in the socket by its
    /// choice: calls running, or replies unread), the deadline moves on instead.
    private func armFrameDeadline(_ context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: frameDeadline) {
            let (handler, context) = loopBound.value
            if handler.readsHeld() { return handler.armFrameDeadline(context) }
            if let buffer = handler.makeTimeoutFrame() { context.writeAndFlush(NIOAny(buffer), promise: nil) }
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        replyTimer?.cancel()
        replyTimer = nil
        context.fireChannelInactive()
    }
}
