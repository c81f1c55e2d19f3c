import Foundation
import LanyardTestSupport
import LanyardWire
import Testing

/// One peer must not hurt the others (issue 15, findings 6, 9, 10, 11), measured against a
/// real lanyardd: during each attack another agent's Hello p99 stays under 1 s, root's
/// `lanyardctl` answers, and the daemon's memory and durable writes stay bounded.
extension LoadSensitive {
@Suite(.serialized, .enabled(if: TestSupport.isRoot, "needs root for the peers' uids"))
struct BoundsEndToEndTests {
    static let attacker = TestSupport.user("lanyard-test-a")
    static let approver = TestSupport.user("lanyard-test-b")
    static let victim = TestSupport.user("lanyard-test-c")

    /// Agents `a` (the attacker) and `b` (the victim) with the same grants; `lanyard-test-b` approves.
    static func policy() -> String {
        """
        trust_domain: e2e.internal
        approvers: { uids: [\(approver!.uid)] }
        services:
          github: { kind: opaque }
        capabilities:
          github:read_repo: { risk: low }
          github:push:      { risk: medium }
        agents:
          a:
            uid: \(attacker!.uid)
            grants: [github:read_repo, github:push]
          b:
            uid: \(victim!.uid)
            grants: [github:read_repo, github:push]

        """
    }

    static func request(_ id: UInt64, _ fill: (inout Lanyard_V1_Request) -> Void) -> [UInt8] {
        var r = Lanyard_V1_Request()
        r.id = id
        fill(&r)
        return AbuseTests.frame(r)
    }

    /// Writes `frames` on a thread while this one reads `frames.count` replies (the daemon
    /// stops reading a peer that does not read its replies).
    static func pipeline(_ fd: Int32, _ frames: [[UInt8]]) -> [Lanyard_V1_Response] {
        let bytes = frames.flatMap { $0 }
        let writer = Thread.detachedResult { TestSupport.writeAll(fd, bytes) }
        var replies: [Lanyard_V1_Response] = []
        while replies.count < frames.count, let body = TestSupport.readFrame(fd), let r = try? Lanyard_V1_Response(serializedBytes: body) {
            replies.append(r)
        }
        writer.wait()
        return replies
    }

    /// The daemon's highest RSS (KiB), sampled until `until`.
    static func peakRSS(_ d: DaemonProcess, until: Date) throws -> Int {
        var peak = 0
        while Date() < until {
            peak = max(peak, try d.footprint().rssKiB)
            usleep(50_000)  // sampling RSS, not synchronizing
        }
        return peak
    }

    /// RSS stayed under `mb` — not checked under a sanitizer: ASan keeps freed memory in
    /// quarantine on purpose, so RSS says nothing there.
    static func expectRSS(_ peakKiB: Int, under mb: Int, _ when: String, sourceLocation: SourceLocation = #_sourceLocation) {
        guard !TestSupport.sanitized else { return }
        #expect(peakKiB < mb * 1024, "RSS peaked at \(peakKiB / 1024) MB \(when)", sourceLocation: sourceLocation)
    }

    /// Another agent's Hello, over and over until stopped: new connection each time when
    /// `reconnect` (connecting is part of being served).
    final class HelloProbe: @unchecked Sendable {  // state guarded by `lock`
        private let lock = NSLock()
        private var stopped = false
        private var latencies: [TimeInterval] = []
        private var failures = 0
        private var result: ThreadResult<Void>?

        init(_ socket: String, as user: (uid: UInt32, gid: UInt32), reconnect: Bool = false) {
            let hello = BoundsEndToEndTests.request(1) { $0.hello = .init() }
            result = Thread.detachedResult { [self] in
                var fd = reconnect ? -1 : TestSupport.connect(socket, asUID: user.uid, gid: user.gid)
                while !isStopped {
                    let started = Date()
                    if reconnect { fd = TestSupport.connect(socket, asUID: user.uid, gid: user.gid) }
                    AbuseTests.send(fd, hello)
                    let body = TestSupport.readFrame(fd)
                    let ok = body.flatMap { try? Lanyard_V1_Response(serializedBytes: $0) }.map { $0.hello.caller.authenticated } ?? false
                    record(ok ? Date().timeIntervalSince(started) : nil)
                    if reconnect || !ok { close(fd) }
                    if !ok && !reconnect { fd = TestSupport.connect(socket, asUID: user.uid, gid: user.gid) }
                }
                if !reconnect { close(fd) }
            }
        }

        private var isStopped: Bool { lock.withLock { stopped } }
        private func record(_ latency: TimeInterval?) {
            lock.withLock { if let latency { latencies.append(latency) } else { failures += 1 } }
        }

        /// Stops the probe: the answered Hellos' p99 and how many were answered and failed.
        /// With few samples the nearest-rank p99 is not the slowest one: a probe that got few
        /// answers reports its slowest (a stall must not hide behind a short sample).
        func stop() -> (p99: TimeInterval, answered: Int, failed: Int) {
            lock.withLock { stopped = true }
            result?.wait()
            return lock.withLock {
                let sorted = latencies.sorted()
                guard !sorted.isEmpty else { return (.infinity, 0, failures) }
                let p99 = sorted.count < 100 ? sorted[sorted.count - 1] : sorted[Int(Double(sorted.count - 1) * 0.99)]
                return (p99, sorted.count, failures)
            }
        }
    }

    /// Finding 9: 16 uids that are no agent open 64 idle connections each to the agent
    /// socket and more to the admin socket. Agents and root are still served: strangers
    /// share a budget of their own, the admin socket has its own with a reserve for admins;
    /// the strangers' idle connections are closed after the short idle timeout.
    @Test func strangersIdleConnectionsLeaveAgentsAndRootServed() throws {
        let d = try DaemonProcess(policy: Self.policy())
        d.extraArguments = ["--unknown-idle-timeout-seconds", "4"]
        defer { d.cleanup() }
        try d.start()
        let strangers = (0..<16).compactMap { TestSupport.user("lanyard-test-s\($0)") }
        #expect(strangers.count == 16)
        let probe = HelloProbe(d.agentSocket, as: Self.victim!, reconnect: true)
        var fds: [Int32] = []
        for (uid, gid) in strangers {
            for _ in 0..<64 { fds.append(TestSupport.connect(d.agentSocket, asUID: uid, gid: gid)) }
        }
        for (uid, gid) in strangers.prefix(2) {
            for _ in 0..<64 { fds.append(TestSupport.connect(d.adminSocket, asUID: uid, gid: gid)) }
        }
        let opened = Date()
        let status = try d.ctl(["status", "--json"])
        let answeredAfter = Date().timeIntervalSince(opened)
        #expect(status.status == 0, "root's status during the flood: \(status.stderr)")
        let held = Int(status.stdout.split(separator: "\"connections\":").last?.prefix { $0.isNumber } ?? "") ?? 0
        #expect(held >= 256 + 56, "the daemon held \(held) connections when root's status answered (after \(answeredAfter) s)")
        let served = probe.stop()
        #expect(served.failed == 0 && served.answered > 0 && served.p99 < TestSupport.latencyBound(1), "victim's Hello during the flood: \(served)")

        // Every stranger connection ends: refused at once, or closed once idle for 4 s (all
        // within 15 s of opening: a guard against waiting on each one in turn).
        var refused = 0, idleClosed = 0, open = 0
        let deadline = opened.addingTimeInterval(15)
        for fd in fds where fd >= 0 {
            let left = max(deadline.timeIntervalSinceNow, 0.01)
            var tv = timeval(tv_sec: Int(left), tv_usec: Int((left - left.rounded(.down)) * 1_000_000))
            _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            if let body = TestSupport.readFrame(fd), let r = try? Lanyard_V1_Response(serializedBytes: body), r.status.code == .resourceExhausted {
                refused += 1
            } else {
                idleClosed += 1
            }
            if !TestSupport.isClosed(fd) { open += 1 }
            close(fd)
        }
        #expect(fds.allSatisfy { $0 >= 0 } && open == 0, "\(open) stranger connections still open 15 s after they were opened")
        #expect(idleClosed == 256 + 56 && refused == 16 * 64 + 2 * 64 - idleClosed, "\(idleClosed) closed when idle, \(refused) refused")
        print("connection flood: \(fds.count) stranger connections, \(held) held, \(refused) refused; victim Hello p99 \(served.p99) s over \(served.answered); root status after \(answeredAfter) s")
    }

    /// Finding 6: an agent pipelines 210 MEDIUM requests and two with a 60,000-byte
    /// resource. It gets its 16 pending approvals and refusals naming the bounds; the
    /// victim's Hello stays fast and its request is listed (text and JSON).
    @Test func approvalFloodOfOneAgentLeavesTheVictimsRequestListed() throws {
        let d = try DaemonProcess(policy: Self.policy())
        defer { d.cleanup() }
        try d.start()
        let probe = HelloProbe(d.agentSocket, as: Self.victim!)
        let fd = TestSupport.connect(d.agentSocket, asUID: Self.attacker!.uid, gid: Self.attacker!.gid)
        defer { close(fd) }
        let huge = String(repeating: "r", count: 60_000)
        let frames = (0..<212).map { i in
            Self.request(UInt64(i + 1)) {
                $0.authorize = .with { $0.capability = "github:push"; $0.resource = i < 2 ? huge : "repo/\(i)" }
            }
        }
        let replies = Self.pipeline(fd, frames)
        let served = probe.stop()
        #expect(replies.count == 212)
        #expect(replies.filter { $0.authorize.decision == .pending }.count == 16)
        let exhausted = replies.filter { $0.status.code == .resourceExhausted }
        #expect(exhausted.count == 194 && exhausted.allSatisfy { $0.status.message.contains("pending approvals for agent a (limit 16") })
        #expect(replies.filter { $0.status.code == .invalidArgument && $0.status.message.contains("--max-field-bytes") }.count == 2)
        #expect(served.failed == 0 && served.p99 < TestSupport.latencyBound(1), "victim's Hello during the flood: \(served)")

        let victim = try run([Bin.lanyardctl, "authorize", "github:push", "--resource", "repo/victim", "--json"], as: Self.victim!, env: d.env)
        #expect(victim.status == 3, "victim's request: \(victim.stdout) \(victim.stderr)")
        let id = try #require(victim.stdout.split(separator: "\"approval_id\":\"").last?.prefix { $0 != "\"" })
        let json = try d.ctlSucceeds(["approvals", "list", "--json"], as: Self.approver!)
        #expect(json.stdout.contains(String(id)), "the victim's approval \(id) is not listed")
        let text = try d.ctlSucceeds(["approvals", "list"], as: Self.approver!)
        #expect(text.stdout.contains(String(id)))
        print("approval flood: 212 pipelined; victim Hello p99 \(served.p99) s over \(served.answered)")
    }

    /// Finding 10: with 2,000 leases `leases list` still works (paged); 16 connections ×
    /// 64 pipelined ListLeases whose replies are never read leave the daemon under 200 MB
    /// RSS, and another agent is served meanwhile.
    @Test func leaseFloodAndUnreadListLeasesStayBounded() throws {
        let d = try DaemonProcess(policy: Self.policy())
        d.extraArguments = ["--max-leases-per-agent", "2000"]
        defer { d.cleanup() }
        try d.start()
        let provision = (0..<500).map { i in
            Self.request(UInt64(i + 1)) { $0.provision = .with { $0.service = "github"; $0.scope = ["github:read_repo"] } }
        }
        let issued = (0..<4).map { _ in
            Thread.detachedResult {
                let fd = TestSupport.connect(d.agentSocket, asUID: Self.attacker!.uid, gid: Self.attacker!.gid)
                defer { close(fd) }
                return Self.pipeline(fd, provision).filter { $0.provision.lease.secret.hasPrefix("lyt_") }.count
            }
        }.map { $0.wait() }.reduce(0, +)
        #expect(issued == 2000)
        let list = try d.ctlSucceeds(["leases", "list", "--json"])
        #expect(list.stdout.components(separatedBy: "\"lease_id\"").count - 1 == 2000)

        let probe = HelloProbe(d.agentSocket, as: Self.victim!)
        let flood = Self.request(7) { $0.listLeases = .init() }
        let fds = (0..<16).map { _ in TestSupport.connect(d.agentSocket, asUID: Self.attacker!.uid, gid: Self.attacker!.gid) }
        for fd in fds { AbuseTests.send(fd, Array((0..<64).map { _ in flood }.joined())) }
        let peak = try Self.peakRSS(d, until: Date().addingTimeInterval(3))
        let served = probe.stop()
        fds.forEach { close($0) }
        Self.expectRSS(peak, under: 200, "during the unread ListLeases flood")
        #expect(served.failed == 0 && served.p99 < TestSupport.latencyBound(1), "victim's Hello during the flood: \(served)")
        print("ListLeases flood: 16 × 64 unread over 2,000 leases; RSS peak \(peak / 1024) MB; victim Hello p99 \(served.p99) s over \(served.answered)")
    }

    /// Hellos are answered on the event loop as they are read (issue 18). For 3 s, 16
    /// connections of an agent and 16 of a uid that is no agent pipeline Hellos as fast as
    /// they can: half never read a reply, so the daemon must stop reading them rather than
    /// hold their answers; half read every reply, so the reads must take turns on the event
    /// loop rather than nest. RSS stays under 100 MB, the daemon lives, another agent is served.
    @Test func helloFloodsThatReadAndThatDoNotStayBounded() throws {
        let d = try DaemonProcess(policy: Self.policy())
        defer { d.cleanup() }
        try d.start()
        let stranger = try #require(TestSupport.user("lanyard-test-s0"))
        let chunk = Array((0..<10_000).map { i in Self.request(UInt64(i + 1)) { $0.hello = .init() } }.joined())
        let probe = HelloProbe(d.agentSocket, as: Self.victim!)
        let until = Date().addingTimeInterval(3)
        let floods = (0..<32).map { i in
            Thread.detachedResult {
                let who = i % 2 == 0 ? (uid: Self.attacker!.uid, gid: Self.attacker!.gid) : (uid: stranger.uid, gid: stranger.gid)
                let fd = TestSupport.connect(d.agentSocket, asUID: who.uid, gid: who.gid)
                defer { close(fd) }
                var tv = timeval(tv_sec: 0, tv_usec: 200_000)  // a blocked send gives up, the flood goes on until `until`
                setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
                let reader = i % 4 < 2 ? nil : Thread.detachedResult {
                    var replies = 0
                    while TestSupport.readFrame(fd) != nil { replies += 1 }
                    return replies
                }
                while Date() < until { _ = AbuseTests.send(fd, chunk) }
                shutdown(fd, Int32(SHUT_RDWR))
                return reader?.wait() ?? 0
            }
        }
        let peak = try Self.peakRSS(d, until: until)
        let read = floods.map { $0.wait() }.reduce(0, +)
        let served = probe.stop()
        #expect(try d.ctlSucceeds(["status"]).status == 0, "the daemon must outlive the flood")
        Self.expectRSS(peak, under: 100, "during the Hello flood")
        #expect(read > 0)
        #expect(served.failed == 0 && served.p99 < TestSupport.latencyBound(1), "victim's Hello during the flood: \(served)")
        print("Hello flood: 32 connections, half never reading; \(read) replies read; RSS peak \(peak / 1024) MB; victim Hello p99 \(served.p99) s over \(served.answered)")
    }

    /// A peer that pipelines Hellos and never reads a reply: once its unread replies pass
    /// `--max-unsent-reply-bytes`, it has `--reply-deadline-ms` to read, then its connection
    /// closes (it held its connection, its unsent replies and the graceful shutdown as long as
    /// it liked before). The daemon says so in its log and serves another agent meanwhile.
    @Test func aPeerThatStopsReadingIsCutAtTheReplyDeadline() throws {
        let d = try DaemonProcess(policy: Self.policy())
        d.extraArguments = ["--reply-deadline-ms", "500"]
        defer { d.cleanup() }
        try d.start()
        let fd = TestSupport.connect(d.agentSocket, asUID: Self.attacker!.uid, gid: Self.attacker!.gid)
        defer { close(fd) }
        var tv = timeval(tv_sec: 0, tv_usec: 200_000)  // a send blocked by the daemon's backpressure gives up
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let chunk = Array((0..<10_000).map { i in Self.request(UInt64(i + 1)) { $0.hello = .init() } }.joined())
        var pfd = pollfd(fd: fd, events: 0, revents: 0)
        // Until the daemon stops reading (a send times out) and then closes; 60 s at most.
        let until = Date().addingTimeInterval(60)
        while poll(&pfd, 1, 0) == 0, Date() < until { _ = AbuseTests.send(fd, chunk) }
        #expect(poll(&pfd, 1, 20_000) == 1 && pfd.revents & Int16(POLLHUP) != 0, "a peer reading nothing keeps its connection")
        // The line that tells this deadline from the frame deadline, which would also close it.
        #expect(d.waitForLog("peer left its replies unread past the reply deadline"), "the log does not say why")
        #expect(!d.logText.contains("frame not completed"))
        let hello = TestSupport.connect(d.agentSocket, asUID: Self.victim!.uid, gid: Self.victim!.gid)
        defer { close(hello) }
        #expect(Self.pipeline(hello, [Self.request(1) { $0.hello = .init() }]).first?.status.code == .ok, "another agent is not served")
    }

    /// A peer that sends its long polls and hangs up at once leaves lanyardd idle while they
    /// wait: its socket's hang-up is not reported on every epoll wait (issue 18's review:
    /// a registration without EPOLLONESHOT would report it level-triggered until the first
    /// re-arm). A guard: the spin the review described was not reproduced by this test
    /// against the code before the fix either.
    @Test func longPollsOfAPeerThatHungUpCostNoCPU() throws {
        let d = try DaemonProcess(policy: Self.policy())
        defer { d.cleanup() }
        try d.start()
        let agent = Self.attacker!
        let fd = TestSupport.connect(d.agentSocket, asUID: agent.uid, gid: agent.gid)
        defer { close(fd) }
        let pending = Self.pipeline(fd, [Self.request(1) { $0.authorize = .with { $0.capability = "github:push" } }])
        let id = try #require(pending.first?.authorize.approvalID)
        let polls = (0..<8).map { i in Self.request(UInt64(i + 1)) { $0.awaitApproval = .with { $0.approvalID = id; $0.waitMs = 4_000 } } }
        for _ in 0..<8 {
            let hungUp = TestSupport.connect(d.agentSocket, asUID: agent.uid, gid: agent.gid)
            _ = AbuseTests.send(hungUp, Array(polls.joined()))
            close(hungUp)
        }
        let pid = try #require(d.pid)
        func cpuTicks() throws -> Int {
            let stat = try #require(TestSupport.readText("/proc/\(pid)/stat"))
            let fields = stat[stat.index(after: try #require(stat.lastIndex(of: ")")))...].split(separator: " ")
            return try #require(Int(fields[11])) + #require(Int(fields[12]))  // utime + stime
        }
        let before = try cpuTicks()
        let started = Date()
        while Date().timeIntervalSince(started) < 2 { usleep(100_000) }  // a window to measure CPU over, not a synchronizer
        let used = Double(try cpuTicks() - before) / Double(sysconf(Int32(_SC_CLK_TCK)))
        #expect(used < 0.5, "lanyardd used \(used) s of CPU in 2 s while 64 long polls of hung-up peers waited")
        print("hung-up long polls: lanyardd used \(used) s of CPU in 2 s")
    }

    /// Finding 11: a uid that is no agent pipelines 2,000 Revoke calls: each is refused
    /// UNAUTHENTICATED, but the audit chain gets one record (with a count later), not 2,000.
    @Test func strangersRevokeFloodWritesOneAuditRecord() throws {
        let d = try DaemonProcess(policy: Self.policy())
        defer { d.cleanup() }
        try d.start()
        let stranger = try #require(TestSupport.user("lanyard-test-s0"))
        let probe = HelloProbe(d.agentSocket, as: Self.victim!)
        let frames = (0..<500).map { i in Self.request(UInt64(i + 1)) { $0.revoke = .with { $0.leaseID = "lease-\(i)" } } }
        let refused = (0..<4).map { _ in
            Thread.detachedResult {
                let fd = TestSupport.connect(d.agentSocket, asUID: stranger.uid, gid: stranger.gid)
                defer { close(fd) }
                return Self.pipeline(fd, frames).filter { $0.status.code == .unauthenticated }.count
            }
        }.map { $0.wait() }.reduce(0, +)
        let served = probe.stop()
        #expect(refused == 2000)
        #expect(try d.sql("SELECT count(*) FROM audit WHERE uid = \(stranger.uid)") == "1")
        #expect(served.failed == 0 && served.p99 < TestSupport.latencyBound(1), "victim's Hello during the flood: \(served)")
        print("stranger Revoke flood: 2,000 refused, 1 audit record; victim Hello p99 \(served.p99) s over \(served.answered)")
    }

    /// Finding 9: below the open-files limit the connection limits need, lanyardd says so
    /// at start (and raises its soft limit when the hard one allows).
    @Test func aLowOpenFilesLimitIsWarnedAtStart() throws {
        let low = try DaemonProcess(policy: Self.policy())
        low.wrapper = ["/usr/bin/prlimit", "--nofile=512:512", "--"]
        defer { low.cleanup() }
        try low.start()
        #expect(low.logText.contains("open-files limit is lower than the connection limits need"))
        #expect(low.logText.contains("3584"))  // 2 × (1024 + 64) + 1024 bound leases + 256 process approvals + 128

        let raised = try DaemonProcess(policy: Self.policy())
        raised.wrapper = ["/usr/bin/prlimit", "--nofile=512:8192", "--"]
        defer { raised.cleanup() }
        try raised.start()
        #expect(!raised.logText.contains("open-files limit"))
        let pid = try #require(raised.pid)
        let limits = try #require(TestSupport.readText("/proc/\(pid)/limits"))
        #expect(limits.split(separator: "\n").contains { $0.hasPrefix("Max open files") && $0.contains("3584") }, "\(limits)")
    }
}
}  // extension LoadSensitive
