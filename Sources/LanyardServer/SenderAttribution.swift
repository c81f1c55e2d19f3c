#if canImport(Glibc)
import Glibc
#endif
import CLanyardSys
import NIOConcurrencyHelpers
import LanyardWire
import NIOCore

// Invariant 11: a request is answered only to the process the kernel attested. A
// connection's descriptor can be copied (pidfd_getfd), passed (SCM_RIGHTS) or inherited
// (fork), and SO_PEERCRED names only the process that connected. So lanyardd reads its
// sockets itself with recvmsg and SO_PASSCRED: the kernel reports the sender of every
// read and never returns the bytes of two senders in one. NIO keeps the rest (the
// pipeline, writes, event loops); its channel only writes (an output-only pipe channel
// on a duplicate of the socket).

/// Asks a connection to stop reading (graceful shutdown): calls already read are answered.
struct StopReading: Sendable {}

/// A frame body and the process that sent all of its bytes (nil when they came from
/// more than one process, or without credentials).
struct SentFrame {
    var body: ByteBuffer
    var sender: Int32?
}

/// One epoll thread that tells sockets when they are readable. Listening sockets stay
/// armed; connections are armed once per read the pipeline asks for (EPOLLONESHOT).
final class SocketReactor: @unchecked Sendable {
    static let shared = SocketReactor()

    private let epfd: Int32
    /// Who to tell, by token (epoll's data field).
    private let targets = NIOLockedValueBox<[UInt64: @Sendable () -> Void]>([:])
    private let nextToken = NIOLockedValueBox<UInt64>(1)

    private init() {
        epfd = lanyard_epoll_create()
        precondition(epfd >= 0, "epoll_create1 failed: \(errno)")
        var thread = pthread_t()
        let box = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&thread, nil, { arg in
            let reactor = Unmanaged<SocketReactor>.fromOpaque(arg!).takeRetainedValue()
            reactor.loop()
            return nil
        }, box)
        precondition(rc == 0, "cannot start the socket reactor thread: \(rc)")
        pthread_detach(thread)
    }

    /// Registers `fd`; `ready` runs on the reactor thread when it is readable (or hung up).
    func register(_ fd: Int32, persistent: Bool, ready: @escaping @Sendable () -> Void) -> UInt64 {
        let token = nextToken.withLockedValue { t in defer { t += 1 }; return t }
        targets.withLockedValue { $0[token] = ready }
        if lanyard_epoll_add(epfd, fd, token, persistent ? 0 : 1) != 0 {
            targets.withLockedValue { $0[token] = nil }
            return 0
        }
        return token
    }

    /// Asks for one readiness report on a connection registered with `persistent: false`.
    func arm(_ fd: Int32, token: UInt64) {
        lanyard_epoll_arm(epfd, fd, token)
    }

    /// Forgets `fd` (call before closing it).
    func deregister(_ fd: Int32, token: UInt64) {
        lanyard_epoll_remove(epfd, fd)
        _ = targets.withLockedValue { $0.removeValue(forKey: token) }
    }

    private func loop() {
        var tokens = [UInt64](repeating: 0, count: 64)
        while true {
            let n = tokens.withUnsafeMutableBufferPointer { lanyard_epoll_wait(epfd, $0.baseAddress, Int32($0.count)) }
            for token in tokens.prefix(max(0, Int(n))) {
                targets.withLockedValue { $0[token] }?()
            }
        }
    }
}

/// The bytes read and who sent them, in order, so that each decoded frame can be traced
/// to its senders. Used by two handlers of one pipeline (one event loop).
final class SenderLedger {
    private var runs = CircularBuffer<(count: Int, pid: Int32)>()

    func append(_ count: Int, from pid: Int32) {
        if let last = runs.last, last.pid == pid {
            runs[runs.index(before: runs.endIndex)].count += count
        } else {
            runs.append((count, pid))
        }
    }

    /// Consumes `count` bytes; returns their sender when all of them had the same one.
    func take(_ count: Int) -> Int32? {
        var left = count
        var sender: Int32?? = .none
        while left > 0, var run = runs.first {
            let used = min(left, run.count)
            left -= used
            run.count -= used
            sender = sender == .none ? .some(run.pid) : (sender == .some(run.pid) ? sender : .some(nil))
            if run.count == 0 { runs.removeFirst() } else { runs[runs.startIndex] = run }
        }
        guard left == 0, case .some(let s) = sender, let pid = s, pid > 0 else { return nil }
        return pid
    }
}

/// The head of a connection's pipeline: owns the socket for reading, reads it with
/// recvmsg when the pipeline asks for a read, and records each read's sender.
final class AttributedReader: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = Never
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let fd: Int32
    private let ledger: SenderLedger
    private let reactor: SocketReactor
    private var token: UInt64 = 0
    private var context: ChannelHandlerContext?
    private var wantsRead = false
    /// Inside `readable`, handing reads to the pipeline.
    private var inBatch = false
    private var inputClosed = false
    private var closed = false
    private static let readSize = 4 * 1024

    init(fd: Int32, ledger: SenderLedger, reactor: SocketReactor = .shared) {
        self.fd = fd
        self.ledger = ledger
        self.reactor = reactor
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let loop = context.eventLoop
        token = reactor.register(fd, persistent: false) { [self] in
            loop.execute { self.readable() }
        }
        if token == 0 { context.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        release()
    }

    func channelInactive(context: ChannelHandlerContext) {
        release()
        context.fireChannelInactive()
    }

    /// An output-only pipe channel reports its (absent) input closed at once: only this
    /// handler, which reads the socket, knows when input ends.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event as? ChannelEvent == .inputClosed { return }
        context.fireUserInboundEventTriggered(event)
    }

    func read(context: ChannelHandlerContext) {
        guard !inputClosed, !closed else { return }
        wantsRead = true
        // Asked for from inside a batch (a handler answering what it was given): taken once
        // the batch is done, never by reading deeper into the stack.
        if !inBatch { readable() }
    }

    /// NIO's notion of input is an output-only channel's absent one (its bootstrap closes
    /// it at once): the socket's input is this handler's, and ends with `StopReading`.
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard mode == .input else { return context.close(mode: mode, promise: promise) }
        promise?.succeed(())
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard event is StopReading else { return context.triggerUserOutboundEvent(event, promise: promise) }
        // Stop reading; requests already read are still answered.
        if !inputClosed {
            inputClosed = true
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
        promise?.succeed(())
    }

    /// One read per turn of the event loop: its frames wait in the dispatcher until answered.
    /// A further read the pipeline asks for is taken after what else the loop has queued (the
    /// other connections) when this one filled the buffer, else once the socket is readable.
    private func readable() {
        guard let context, wantsRead, !inputClosed, !closed else { return }
        wantsRead = false
        inBatch = true
        defer { inBatch = false }
        var buffer = context.channel.allocator.buffer(capacity: Self.readSize)
        var sender: pid_t = -1
        var result = 0
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: Self.readSize) { raw in
            result = lanyard_recv_attributed(fd, raw.baseAddress, raw.count, &sender)
            return max(0, result)
        }
        let err = errno
        if result == 0 {
            inputClosed = true
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
            return
        }
        if result < 0 {
            guard err == EAGAIN || err == EWOULDBLOCK else { return context.close(promise: nil) }
            wantsRead = true  // nothing read: still wanted
            reactor.arm(fd, token: token)
            return
        }
        ledger.append(result, from: sender)
        context.fireChannelRead(wrapInboundOut(buffer))
        context.fireChannelReadComplete()
        // What a socket channel does with autoRead: ask again, through the pipeline, so a
        // handler applying backpressure can hold the read back.
        if (try? context.channel.syncOptions?.getOption(.autoRead)) ?? false {
            context.pipeline.syncOperations.read()
        }
        guard wantsRead, !inputClosed, !closed else { return }
        // A short read most likely drained the socket (or met another sender's bytes):
        // re-arming tells if more is there, without a read that finds nothing.
        if result < Self.readSize {
            reactor.arm(fd, token: token)
        } else {
            context.eventLoop.execute { self.readable() }
        }
    }

    private func release() {
        guard !closed else { return }
        closed = true
        context = nil
        if token != 0 { reactor.deregister(fd, token: token) }
        Glibc.close(fd)
    }
}

/// After the frame decoder: tags each frame body with the process that sent it.
final class FrameAttribution: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = SentFrame

    private let ledger: SenderLedger
    init(ledger: SenderLedger) { self.ledger = ledger }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let body = unwrapInboundIn(data)
        let sender = ledger.take(Framing.headerSize + body.readableBytes)
        context.fireChannelRead(wrapInboundOut(SentFrame(body: body, sender: sender)))
    }
}
