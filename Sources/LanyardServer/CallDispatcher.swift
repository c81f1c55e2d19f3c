import LanyardWire
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// The tail of a connection's pipeline: turns each frame into a request and answers it with
/// a task that prefers `executor` (the connection's event loop, for the agent socket), or at
/// once where `immediate` has the reply (a call that needs neither the disk nor a wait). The
/// answers go out as their calls finish (pipelined, by id). At most `maxInFlight` calls run
/// at once. While they do, or while the peer leaves its replies unread (the channel is
/// unwritable), frames wait here and no more are read; a call started before waits for the
/// peer to read before it works: a reply not yet written is held as its frame only. Once
/// the input has ended (EOF, a bad frame, a graceful shutdown) and every call read is
/// answered, the connection closes.
///
/// When the connection closes, its long polls are cancelled (they answer at once, to nobody)
/// and a call still waiting for the peer to read is not run; at a graceful stop
/// (`StopReading`) long polls are cancelled too, so the stop waits for none of them.
///
/// Its state is touched on the event loop only; a call hops back to the loop to answer.
final class CallDispatcher<Request: Envelope, Response: ResponseEnvelope>: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = SentFrame
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    typealias Call = @Sendable (Request, Connection) async -> Response
    /// The framed reply to a call answered on the event loop as it is read, or nil.
    typealias Immediate = @Sendable (Request, Connection) -> ByteBuffer?

    private let loop: any EventLoop
    private let maxInFlight: Int
    private let executor: any TaskExecutor
    private let call: Call
    private let immediate: Immediate?
    private let uid: UInt32
    private let logger: Logger
    /// Moves when writability changes or the channel closes: a call waits on it for the peer to read.
    private let progress = ChangeSignal()
    /// Whether the channel is closed with none of its calls running, and who waits for that.
    private let ended = NIOLockedValueBox<(done: Bool, waiter: CheckedContinuation<Void, Never>?)>((false, nil))

    private var context: ChannelHandlerContext?
    /// The attested connection, once calls may be dispatched (`start`).
    private var connection: Connection?
    private var frames = CircularBuffer<SentFrame>()
    private var running = 0
    /// The running calls' tasks, by key, and whether each is a long poll.
    private var calls: [Int: (task: Task<Void, Never>, waitsLong: Bool)] = [:]
    private var nextCall = 0
    /// A graceful stop began: a long poll started from now on is cancelled as it starts.
    private var stopping = false
    private var inputEnded = false
    private var readHeld = false
    private var active = true
    /// A later turn of the loop continues with the frames left (`answersPerTurn`).
    private var continuing = false
    /// Immediate answers per turn of the event loop: a peer pipelining thousands of Hellos
    /// takes turns with the other connections of its loop, not the loop.
    private static var answersPerTurn: Int { 16 }

    init(loop: any EventLoop, maxInFlight: Int, executor: any TaskExecutor, uid: UInt32, logger: Logger,
         immediate: Immediate?, call: @escaping Call) {
        self.loop = loop
        self.maxInFlight = max(1, maxInFlight)
        self.executor = executor
        self.uid = uid
        self.logger = logger
        self.call = call
        self.immediate = immediate
    }

    /// Lets calls be dispatched, the connection's facts complete (its exe hash taken).
    func start(_ connection: Connection) {
        loop.execute {
            self.connection = connection
            self.dispatch()
        }
    }

    /// Returns once the connection is closed and every call it read has finished.
    func closed() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = ended.withLockedValue { s in
                if !s.done { s.waiter = c }
                return s.done
            }
            if now { c.resume() }
        }
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        frames.append(unwrapInboundIn(data))
    }

    /// The frames of one read are dispatched together, in turns of `answersPerTurn`.
    func channelReadComplete(context: ChannelHandlerContext) {
        dispatch()
    }

    func read(context: ChannelHandlerContext) {
        guard !inputEnded else { return }
        if connection != nil, frames.isEmpty { context.read() } else { readHeld = true }
    }

    /// Whether the daemon holds this connection's reads (frames wait for their calls, or for
    /// the peer to read its replies): the rest of a frame left unread then is not the peer's delay.
    var holdsReads: Bool { readHeld }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        if event is StopReading {
            stopping = true
            cancelLongPolls()
        }
        context.triggerUserOutboundEvent(event, promise: promise)
    }

    /// Long polls answer at once with what they have. Other calls run to their end: one
    /// cancelled half-way (an OpenBao token made, its lease not yet recorded) would leave
    /// what it did unrecorded.
    private func cancelLongPolls() {
        for call in calls.values where call.waitsLong { call.task.cancel() }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        progress.bump()
        dispatch()
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event as? ChannelEvent == .inputClosed else { return context.fireUserInboundEventTriggered(event) }
        inputEnded = true
        dispatch()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard let error = error as? FrameError else {
            logger.debug("connection ended", metadata: ["caller.uid": "\(uid)", "error": "\(error)"])
            return context.close(promise: nil)
        }
        let code: Lanyard_V1_Code = if case .tooLarge = error { .resourceExhausted } else { .invalidArgument }
        write(.failure(id: 0, code, "\(error); connection closed"))
        logger.info("peer sent a bad frame", metadata: ["caller.uid": "\(uid)", "error": "\(error)"])
        inputEnded = true
        dispatch()
    }

    func channelInactive(context: ChannelHandlerContext) {
        active = false
        frames.removeAll()
        cancelLongPolls()
        progress.bump()
        endIfIdle()
        context.fireChannelInactive()
    }

    /// Starts the calls there is room for; reads again once every frame read has its call;
    /// closes once the input has ended and every call is answered.
    private func dispatch() {
        guard let context, let connection, active else { return }
        let channel = context.channel
        var answered = 0
        // While the peer leaves its replies unread, nothing read is processed.
        while running < maxInFlight, channel.isWritable, let frame = frames.popFirst() {
            let body = Array(frame.body.readableBytesView)
            let request: Request
            do {
                request = try Request(serializedBytes: body)
            } catch {
                write(.failure(id: Request.peekID(body) ?? 0, .invalidArgument, "request does not decode as a \(Request.protoMessageName): \(error)"))
                frames.removeAll()
                inputEnded = true
                break
            }
            var sent = connection
            sent.sender = frame.sender
            if let reply = immediate?(request, sent) {
                context.writeAndFlush(wrapOutboundOut(reply), promise: nil)
                answered += 1
                if answered == Self.answersPerTurn, !frames.isEmpty {
                    if !continuing {
                        continuing = true
                        loop.execute {
                            self.continuing = false
                            self.dispatch()
                        }
                    }
                    return
                }
                continue
            }
            running += 1
            let key = nextCall
            nextCall += 1
            let progress = self.progress, call = self.call, loop = self.loop
            calls[key] = (Task(executorPreference: executor) { [sent] in
                await progress.wait { channel.isWritable || !channel.isActive }
                // The peer left (or was cut) while the call waited for it to read: nothing is done for it.
                let answer = channel.isActive ? try? Framing.frame(await call(request, sent)) : nil
                if loop.inEventLoop { self.answered(answer, key) } else { loop.execute { self.answered(answer, key) } }
            }, request.waitsLong)
            // Read before the stop, started after it: answered at once too.
            if stopping, request.waitsLong { calls[key]?.task.cancel() }
        }
        if frames.isEmpty, readHeld, !inputEnded {
            readHeld = false
            context.read()
        }
        if inputEnded, frames.isEmpty, running == 0 { context.close(promise: nil) }
    }

    /// Call `key`'s answer (nil: it did not encode, or its peer is gone; the connection closes).
    private func answered(_ frame: ByteBuffer?, _ key: Int) {
        running -= 1
        calls[key] = nil
        if let context {
            if let frame { context.writeAndFlush(wrapOutboundOut(frame), promise: nil) } else { context.close(promise: nil) }
        }
        dispatch()
        endIfIdle()
    }

    private func write(_ response: Response) {
        guard let context, let frame = try? Framing.frame(response, allocator: context.channel.allocator) else { return }
        context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
    }

    private func endIfIdle() {
        guard !active, running == 0 else { return }
        let waiter = ended.withLockedValue { s in
            defer { s = (true, nil) }
            return s.waiter
        }
        waiter?.resume()
    }
}
