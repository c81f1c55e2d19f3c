import Foundation
import NIOConcurrencyHelpers

/// One newline-delimited message read from a stream, or why there is none.
enum Line {
    case message([UInt8])
    /// A line longer than the cap, discarded up to its newline: how many bytes it had.
    case oversized(Int)
}

/// Reads newline-delimited messages from a file descriptor on a thread of its own (a
/// blocking read never holds one of the few cooperative threads), each at most `cap`
/// bytes; a longer line is skipped to its end and reported, never buffered whole.
/// `onLine` runs on the reader thread, so a slow consumer slows the producer (backpressure).
final class LineReader: Sendable {
    let fd: Int32
    let cap: Int

    init(fd: Int32, cap: Int) {
        self.fd = fd
        self.cap = cap
    }

    /// Starts the thread; `onEnd` runs once when the stream ends or fails.
    func start(name: String, onLine: @escaping @Sendable (Line) -> Void, onEnd: @escaping @Sendable () -> Void) {
        let (fd, cap) = (self.fd, self.cap)
        let thread = Thread {
            var pending: [UInt8] = []
            var skipping = 0  // > 0: inside an oversized line, this many bytes so far
            var chunk = [UInt8](repeating: 0, count: 65_536)
            while true {
                let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0, errno == EINTR { continue }
                guard n > 0 else { break }
                var start = 0
                while start < n {
                    let newline = chunk[start..<n].firstIndex(of: UInt8(ascii: "\n"))
                    let end = newline ?? n
                    if skipping > 0 {
                        skipping += end - start
                    } else if pending.count + (end - start) > cap {
                        skipping = pending.count + (end - start)
                        pending = []
                    } else {
                        pending += chunk[start..<end]
                    }
                    guard newline != nil else { break }
                    if skipping > 0 {
                        onLine(.oversized(skipping))
                        skipping = 0
                    } else {
                        if pending.last == UInt8(ascii: "\r") { pending.removeLast() }
                        if !pending.isEmpty { onLine(.message(pending)) }
                        pending = []
                    }
                    start = end + 1
                }
            }
            if skipping > 0 { onLine(.oversized(skipping)) } else if !pending.isEmpty { onLine(.message(pending)) }
            onEnd()
        }
        thread.name = name
        thread.start()
    }
}

/// Writes newline-delimited messages to a file descriptor from a thread of its own, in
/// order. `send` never blocks: a peer that stops reading holds at most what was queued
/// for it, and `queuedBytes` lets a producer wait (backpressure) before it queues more.
final class LineWriter: Sendable {
    private struct State {
        var queue: [[UInt8]] = []
        var queuedBytes = 0
        var closed = false
        var failed = false
    }
    private let state = NIOLockedValueBox(State())
    private let ready = ConditionLock(value: 0)
    private let room = NSCondition()
    let fd: Int32
    let limit: Int
    /// Closes the descriptor once everything queued before `close()` is written (the
    /// reader then sees end of file); nil leaves it open.
    let closer: (@Sendable () -> Void)?

    init(fd: Int32, limit: Int, closer: (@Sendable () -> Void)? = nil) {
        self.fd = fd
        self.limit = limit
        self.closer = closer
    }

    func start(name: String, onFailure: @escaping @Sendable () -> Void) {
        let thread = Thread { [self] in
            while true {
                ready.lock(whenValue: 1)
                let (batch, closed) = state.withLockedValue { s -> ([[UInt8]], Bool) in
                    defer { s.queue = [] }
                    return (s.queue, s.closed)
                }
                ready.unlock(withValue: closed ? 1 : 0)
                for line in batch {
                    guard writeAll(line + [UInt8(ascii: "\n")]) else {
                        state.withLockedValue { $0.failed = true; $0.queue = [] }
                        signalRoom()
                        closer?()
                        onFailure()
                        return
                    }
                    state.withLockedValue { $0.queuedBytes -= line.count }
                    signalRoom()
                }
                if closed && batch.isEmpty {
                    closer?()
                    return
                }
            }
        }
        thread.name = name
        thread.start()
    }

    /// Queues one message (without its newline). False once the stream failed or closed.
    @discardableResult
    func send(_ line: [UInt8]) -> Bool {
        let ok = state.withLockedValue { s -> Bool in
            guard !s.closed, !s.failed else { return false }
            s.queue.append(line)
            s.queuedBytes += line.count
            return true
        }
        if ok { wake() }
        return ok
    }

    /// Whether at most `limit` bytes wait (and the stream still works).
    var hasRoom: Bool { state.withLockedValue { $0.queuedBytes <= limit && !$0.failed && !$0.closed } }

    /// Blocks the calling (non-cooperative) thread while more than `limit` bytes wait.
    func waitForRoom() {
        room.lock()
        while state.withLockedValue({ $0.queuedBytes > limit && !$0.failed && !$0.closed }) { room.wait() }
        room.unlock()
    }

    /// Writes what is queued, then stops.
    func close() {
        state.withLockedValue { $0.closed = true }
        wake()
        signalRoom()
    }

    private func wake() {
        ready.lock()
        ready.unlock(withValue: 1)
    }

    private func signalRoom() {
        room.lock()
        room.broadcast()
        room.unlock()
    }

    private func writeAll(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { return false }
            offset += n
        }
        return true
    }
}
