import Foundation
import LanyardTestSupport
import LanyardWire
import Testing

/// Crashes and I/O faults against a real lanyardd (issue 8, DESIGN.md section 10): kill -9
/// at random moments, a full disk, and failing writes and syncs. What was acknowledged is
/// never lost, no secret leaves without its audit record, and the chain verifies.
@Suite(.serialized, .enabled(if: TestSupport.isRoot, "needs root (agent uid, tmpfs mounts)"))
struct FaultTests {
    /// What the clients were told: leases issued, and leases whose revoke was acknowledged.
    final class Acknowledged: @unchecked Sendable {  // guarded by `lock`
        let lock = NSLock()
        var issued: [String] = []
        var revoked: Set<String> = []
        var refusals: [Lanyard_V1_Code] = []
        func add(issued id: String) { lock.withLock { issued.append(id) } }
        func add(revoked id: String) { lock.withLock { _ = revoked.insert(id) } }
        func add(refusal code: Lanyard_V1_Code) { lock.withLock { refusals.append(code) } }
    }

    static func request(_ id: UInt64, _ fill: (inout Lanyard_V1_Request) -> Void) -> [UInt8] {
        var r = Lanyard_V1_Request()
        r.id = id
        fill(&r)
        return TestSupport.frame(try! r.serializedBytes())
    }

    /// Provisions, revoking every third lease it got, until the connection dies or `limit`.
    static func client(_ socket: String, _ ack: Acknowledged, limit: Int = .max) {
        let agent = E2EUsers.agent!
        let fd = TestSupport.connect(socket, asUID: agent.uid, gid: agent.gid)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var mine: [String] = []
        for n in 0..<limit {
            let provision = request(UInt64(2 * n + 1)) { $0.provision = .with { $0.service = "github"; $0.scope = ["github:read_repo"] } }
            guard AbuseTests.send(fd, provision), let body = TestSupport.readFrame(fd),
                  let r = try? Lanyard_V1_Response(serializedBytes: body) else { return }
            if r.status.code == .ok, !r.provision.lease.secret.isEmpty {
                ack.add(issued: r.provision.lease.leaseID)
                mine.append(r.provision.lease.leaseID)
            } else {
                ack.add(refusal: r.status.code)
            }
            if n % 3 == 2, let victim = mine.first {
                mine.removeFirst()
                let revoke = request(UInt64(2 * n + 2)) { $0.revoke = .with { $0.leaseID = victim } }
                guard AbuseTests.send(fd, revoke), let body = TestSupport.readFrame(fd),
                      let r = try? Lanyard_V1_Response(serializedBytes: body) else { return }
                if r.status.code == .ok, r.revoke.revoked { ack.add(revoked: victim) }
            }
        }
    }

    /// Every acknowledged lease is in the database as acknowledged, each lease has its
    /// provision record, and the chain verifies.
    func expectNothingLost(_ d: DaemonProcess, _ ack: Acknowledged, round: Int, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let states = Dictionary(uniqueKeysWithValues: try d.sql("SELECT id, state FROM leases").split(separator: "\n").map {
            let parts = $0.split(separator: "|")
            return (String(parts[0]), String(parts[1]))
        })
        for id in ack.issued {
            #expect(states[id] != nil, "round \(round): acknowledged lease \(id) is gone", sourceLocation: sourceLocation)
        }
        for id in ack.revoked {
            #expect(states[id] == "revoked", "round \(round): acknowledged revoke of \(id) is lost", sourceLocation: sourceLocation)
        }
        let unaudited = try d.sql("SELECT count(*) FROM leases WHERE id NOT IN (SELECT lease_id FROM audit WHERE event = 'provision' AND decision = 'allow')")
        #expect(unaudited == "0", "round \(round): \(unaudited) leases without their provision record", sourceLocation: sourceLocation)
        let ended = try d.sql("SELECT count(*) FROM leases WHERE state = 'revoked' AND id NOT IN (SELECT lease_id FROM audit WHERE event = 'revoke')")
        #expect(ended == "0", "round \(round): \(ended) revoked leases without their revoke record", sourceLocation: sourceLocation)
    }

    /// kill -9 at a random moment during concurrent provisions and revokes, 50 times over.
    @Test func killNineAtRandomMoments() async throws {
        try await onThread {
            let d = try DaemonProcess(policy: E2EUsers.policy())
            defer { d.cleanup() }
            var rng = SystemRandomNumberGenerator()
            let ack = Acknowledged()
            let rounds = AbuseTests.long ? 200 : 50
            for round in 1...rounds {
                try d.start()
                let clients = (0..<4).map { _ in Thread.detachedResult { Self.client(d.agentSocket, ack) } }
                usleep(UInt32.random(in: 5_000...120_000, using: &rng))  // the random moment
                d.kill9()
                clients.forEach { $0.wait() }
                try expectNothingLost(d, ack, round: round)
            }
            try d.start()
            try d.ctlSucceeds(["audit", "verify"])
            #expect(ack.issued.count > rounds, "only \(ack.issued.count) leases issued in \(rounds) rounds")
            print("kill -9: \(rounds) rounds, \(ack.issued.count) leases and \(ack.revoked.count) revokes acknowledged, none lost")
        }
    }

    /// The state dir on a tiny tmpfs: once the disk is full, calls fail UNAVAILABLE (no
    /// secret without its durable record); with room again, the daemon serves again.
    @Test func diskFullFailsClosedAndRecovers() async throws {
        try await onThread {
            let d = try DaemonProcess(policy: E2EUsers.policy())
            defer { d.cleanup() }
            try FileManager.default.createDirectory(atPath: d.stateDir, withIntermediateDirectories: true)
            guard try run(["/usr/bin/mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", d.stateDir]).status == 0 else {
                Issue.record("cannot mount a tmpfs (this test needs CAP_SYS_ADMIN)")
                return
            }
            defer { _ = try? run(["/usr/bin/umount", "-l", d.stateDir]) }
            try d.start()
            let ack = Acknowledged()
            Self.client(d.agentSocket, ack, limit: 3000)  // until the disk is full
            #expect(ack.refusals.contains(.unavailable), "the disk never filled: \(ack.issued.count) leases")
            #expect(Set(ack.refusals).isSubset(of: [.unavailable]), "refusals: \(Set(ack.refusals))")
            #expect(d.logText.contains("database or disk is full") || d.logText.contains("disk"), "the log says why")

            #expect(try run(["/usr/bin/mount", "-o", "remount,size=16m", d.stateDir]).status == 0)
            let after = Acknowledged()
            Self.client(d.agentSocket, after, limit: 5)
            #expect(after.issued.count == 5, "not serving again once there is room: \(after.refusals)")
            #expect(d.stop() == 0)
            try expectNothingLost(d, ack, round: 1)
            try d.start()
            try d.ctlSucceeds(["audit", "verify"])
            print("disk full: \(ack.issued.count) leases before the disk filled, \(ack.refusals.count) refused UNAVAILABLE, then served again")
        }
    }

    /// Failing writes and syncs (libfiu's fiu-run): every answer is either a credential
    /// with its durable record or UNAVAILABLE, and the chain verifies afterwards.
    @Test(.enabled(if: TestSupport.tool("/usr/bin/fiu-run"), "needs fiu-run (Debian fiu-utils)"))
    func failingWritesAndSyncsFailClosed() async throws {
        try await onThread {
            let d = try DaemonProcess(policy: E2EUsers.policy())
            defer { d.cleanup() }
            try d.start()  // the database exists before the faults begin
            #expect(d.stop() == 0)
            d.wrapper = ["/usr/bin/fiu-run", "-x",
                         "-c", "enable_random name=posix/io/rw/pwrite,probability=0.02",
                         "-c", "enable_random name=posix/io/sync/*,probability=0.05"]
            // A fault at startup stops the daemon with one clear line; it then starts again.
            var failedStarts = 0
            while true {
                do {
                    try d.start()
                    break
                } catch {
                    failedStarts += 1
                    #expect("\(error)".contains("lanyardd: "), "an unclear startup failure: \(error)")
                    guard failedStarts < 20 else { throw error }
                }
            }
            let ack = Acknowledged()
            let clients = (0..<4).map { _ in Thread.detachedResult { Self.client(d.agentSocket, ack, limit: 150) } }
            clients.forEach { $0.wait() }
            #expect(!ack.issued.isEmpty)
            #expect(ack.refusals.contains(.unavailable), "no fault reached a request")
            #expect(Set(ack.refusals).isSubset(of: [.unavailable]), "refusals: \(Set(ack.refusals))")
            d.kill9()
            d.wrapper = []
            try expectNothingLost(d, ack, round: 1)
            try d.start()
            try d.ctlSucceeds(["audit", "verify"])
            print("fiu: \(ack.issued.count) leases issued, \(ack.refusals.count) refused UNAVAILABLE under injected pwrite/fsync failures (\(failedStarts) starts stopped by a fault)")
        }
    }
}
