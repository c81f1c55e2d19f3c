import Foundation
import LanyardTestSupport
import LanyardWire
import Testing

/// Misbehaving peers against a real lanyardd (issue 8): a storm of malformed frames, and
/// peers that trickle one byte a second. Good clients keep being served, and the daemon's
/// descriptors and memory come back. `LANYARD_LONG_TESTS=1` runs the long variants.
@Suite(.serialized, .enabled(if: TestSupport.isRoot, "needs root for the peers' uids"))
struct AbuseTests {
    static let long = ProcessInfo.processInfo.environment["LANYARD_LONG_TESTS"] == "1"

    static func frame(_ request: some Envelope) -> [UInt8] {
        TestSupport.frame(try! request.serializedBytes())
    }

    static let authorize: [UInt8] = {
        var r = Lanyard_V1_Request()
        r.id = 9
        r.authorize = .with { $0.capability = "github:read_repo" }
        return frame(r)
    }()

    /// Sends without SIGPIPE (the peer may be gone); false once the socket is closed.
    @discardableResult
    static func send(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count
    }

    /// A good client: `calls` Authorize round trips on one connection, each answered ALLOW.
    static func goodClient(_ socket: String, calls: Int) -> (ok: Int, slowest: TimeInterval) {
        let agent = E2EUsers.agent!
        let fd = TestSupport.connect(socket, asUID: agent.uid, gid: agent.gid)
        defer { close(fd) }
        var ok = 0
        var slowest: TimeInterval = 0
        for _ in 0..<calls {
            let started = Date()
            send(fd, authorize)
            guard let body = TestSupport.readFrame(fd), let r = try? Lanyard_V1_Response(serializedBytes: body) else { break }
            slowest = max(slowest, Date().timeIntervalSince(started))
            if r.authorize.decision == .allow { ok += 1 }
        }
        return (ok, slowest)
    }

    /// The malformed inputs of the storm, by kind.
    static func badInput(_ i: Int) -> [UInt8] {
        var garbage = [UInt8](repeating: 0, count: 1 + i % 300)
        for j in garbage.indices { garbage[j] = UInt8(truncatingIfNeeded: (i &* 2_654_435_761) >> (j % 24) &+ j) }
        switch i % 6 {
        case 0: return TestSupport.frame(garbage)                            // not protobuf
        case 1: return [0x7F, 0xFF, 0xFF, 0xFF] + garbage                   // a 2 GiB length
        case 2: return [0, 0, 0, 0]                                           // an empty frame
        case 3: return Array(TestSupport.frame(garbage).dropLast())           // truncated, then closed
        case 4: return authorize + TestSupport.frame([0x62, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F])  // a length beyond the body
        default: return [0x0A, 0x0D, 0x0A] + garbage                          // not even a header's worth of sense
        }
    }

    @Test func malformedStormLeavesGoodClientsServedAndNothingBehind() async throws {
        try await onThread {
            let d = try DaemonProcess(policy: E2EUsers.policy())
            d.extraArguments = ["--max-connections-per-uid", "200", "--frame-deadline-ms", "1000"]
            defer { d.cleanup() }
            try d.start()
            // Warm up (thread pools, statement caches), then take the baseline.
            #expect(Self.goodClient(d.agentSocket, calls: 50).ok == 50)
            DispatchQueue.concurrentPerform(iterations: 100) { i in
                let fd = TestSupport.connect(d.agentSocket)
                Self.send(fd, Self.badInput(i))
                _ = TestSupport.read(fd, count: 1 << 20)
                close(fd)
            }
            try waitForConnections(0, d)
            let before = try d.footprint()

            let connections = 100, perConnection = Self.long ? 200 : 30
            let good = Thread.detachedResult { Self.goodClient(d.agentSocket, calls: 300) }
            DispatchQueue.concurrentPerform(iterations: connections) { c in
                for k in 0..<perConnection {
                    let fd = TestSupport.connect(d.agentSocket)
                    Self.send(fd, Self.badInput(c * perConnection + k))
                    shutdown(fd, Int32(SHUT_WR))
                    _ = TestSupport.read(fd, count: 1 << 20)  // until the daemon closes it
                    close(fd)
                }
            }
            let served = good.wait()
            #expect(served.ok == 300, "good client served \(served.ok)/300 during the storm")
            #expect(served.slowest < TestSupport.latencyBound(2), "slowest good answer took \(served.slowest) s")

            try waitForConnections(0, d)
            let after = try d.footprint()
            #expect(after.fds == before.fds, "descriptors: \(before.fds) before, \(after.fds) after \(connections * perConnection) bad frames")
            // (ASan keeps freed memory in quarantine on purpose: RSS says nothing under a sanitizer.)
            if !TestSupport.sanitized {
                #expect(after.rssKiB <= before.rssKiB + 8 * 1024, "RSS: \(before.rssKiB) KiB before, \(after.rssKiB) KiB after")
            }
            print("storm: \(connections * perConnection) bad frames; fds \(before.fds) → \(after.fds); RSS \(before.rssKiB) → \(after.rssKiB) KiB")
        }
    }

    @Test func slowPeersAreCutAtTheirDeadlineWithinPerUIDCaps() async throws {
        try await onThread {
            let d = try DaemonProcess(policy: E2EUsers.policy())
            d.extraArguments = ["--frame-deadline-ms", "2000"]  // per-uid cap: the default 64
            defer { d.cleanup() }
            try d.start()
            let uids = [(UInt32(0), UInt32(0))] + ["lanyard-test-b", "lanyard-test-c", "lanyard-test-d"].compactMap { TestSupport.user($0) }
            let count = Self.long ? 1000 : 300

            // Open them all, round robin over the uids, then each sends its first byte (the
            // frame deadline runs from a frame's first byte).
            struct Peer { var fd: Int32; var uid: UInt32; var sent = 1; var closedAfter: TimeInterval?; var code: Lanyard_V1_Code? }
            // A 4 KiB frame, one byte at a time: it would take over an hour to complete.
            let trickle: [UInt8] = [0, 0, 0x10, 0] + [UInt8](repeating: 0x0A, count: 4096)
            var peers: [Peer] = (0..<count).map { i in
                let (uid, gid) = uids[i % uids.count]
                let fd = TestSupport.connect(d.agentSocket, asUID: uid, gid: gid)
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
                return Peer(fd: fd, uid: uid)
            }
            for p in peers { Self.send(p.fd, [trickle[0]]) }
            let started = Date()
            let good = Thread.detachedResult { Self.goodClient(d.agentSocket, calls: 200) }

            // One more byte a second to each; note when the daemon closes each one, and why.
            while peers.contains(where: { $0.closedAfter == nil }), Date().timeIntervalSince(started) < 10 {
                var fds = peers.map { pollfd(fd: $0.closedAfter == nil ? $0.fd : -1, events: Int16(POLLIN), revents: 0) }
                _ = poll(&fds, nfds_t(fds.count), 1000)
                for i in peers.indices where peers[i].closedAfter == nil {
                    var buf = [UInt8](repeating: 0, count: 4096)
                    var got: [UInt8] = []
                    while true {
                        let n = recv(peers[i].fd, &buf, buf.count, 0)
                        if n > 0 { got += buf[0..<n]; continue }
                        if n == 0 { peers[i].closedAfter = Date().timeIntervalSince(started) }
                        break
                    }
                    if got.count > 4, let r = try? Lanyard_V1_Response(serializedBytes: Array(got.dropFirst(4))) { peers[i].code = r.status.code }
                    if peers[i].closedAfter == nil {
                        Self.send(peers[i].fd, [trickle[peers[i].sent]])
                        peers[i].sent += 1
                    }
                }
            }
            let served = good.wait()
            peers.forEach { close($0.fd) }

            #expect(peers.allSatisfy { $0.closedAfter != nil }, "\(peers.filter { $0.closedAfter == nil }.count) slow peers still open after 10 s")
            let cut = peers.filter { $0.code == .deadlineExceeded }, refused = peers.filter { $0.code == .resourceExhausted }
            #expect(cut.count + refused.count == count, "every slow peer is cut or refused (\(cut.count) + \(refused.count) of \(count))")
            // Every peer connected before any sent a byte, so none was cut while others were
            // still being admitted: the peers admitted are the peers held at once.
            for (uid, _) in uids {
                #expect(cut.filter { $0.uid == uid }.count <= 64, "uid \(uid) held more than its 64 connections")
            }
            #expect(cut.allSatisfy { $0.closedAfter! < TestSupport.latencyBound(4.5) }, "slowest cut after \(cut.compactMap(\.closedAfter).max() ?? 0) s (deadline 2 s)")
            #expect(served.ok == 200 && served.slowest < TestSupport.latencyBound(2), "good client: \(served.ok)/200, slowest \(served.slowest) s")
            print("slow peers: \(count) from \(uids.count) uids; \(cut.count) cut at the deadline (last after \(cut.compactMap(\.closedAfter).max() ?? 0) s), \(refused.count) refused by the per-uid cap")
        }
    }

    /// Polls `status` (bounded) until the daemon counts `n` connections besides the admin's own.
    func waitForConnections(_ n: Int, _ d: DaemonProcess) throws {
        let deadline = Date().addingTimeInterval(10)
        while true {
            let json = try d.ctl(["status", "--json"]).stdout
            if json.contains("\"connections\":\(n + 1)") { return }
            guard Date() < deadline else { throw HarnessError("the daemon still has open connections: \(json)") }
            usleep(50_000)
        }
    }
}

extension Thread {
    /// Runs `work` on a new thread; `wait()` returns its result.
    static func detachedResult<R: Sendable>(_ work: @escaping @Sendable () -> R) -> ThreadResult<R> {
        let result = ThreadResult<R>()
        Thread.detachNewThread { result.set(work()) }
        return result
    }
}

final class ThreadResult<R: Sendable>: @unchecked Sendable {  // value guarded by `done`
    private let done = NSCondition()
    private var value: R?
    func set(_ v: R) { done.lock(); value = v; done.broadcast(); done.unlock() }
    func wait() -> R {
        done.lock()
        defer { done.unlock() }
        while value == nil { done.wait() }
        return value!
    }
}
