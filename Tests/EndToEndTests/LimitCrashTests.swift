import Foundation
import LanyardTestSupport
import LanyardWire
import Testing

/// Grant limit counters survive kill -9 (issue 19, acceptance 5): a real lanyardd killed
/// with SIGKILL at random moments while 4 connections charge against a budget; after each
/// restart every acknowledged ALLOW is counted, none twice, and the budget is never passed.
@Suite(.serialized, .enabled(if: TestSupport.isRoot, "needs root (agent uid)"))
struct LimitCrashTests {
    static let budget = 200

    static let policy = """
        trust_domain: e2e.internal
        services:
          pay: { kind: opaque }
        capabilities:
          pay:charge: { risk: low }
        agents:
          a:
            uid: \(E2EUsers.agent!.uid)
            grants:
              - { capability: pay:charge, rate: 1000000000/day, budget: { amount: \(budget), unit: USD, per: day } }

        """

    /// The ALLOW and DENY answers clients were given.
    final class Answers: @unchecked Sendable {  // guarded by `lock`
        let lock = NSLock()
        var allowed = 0
        var denied = 0
        func add(_ decision: Lanyard_V1_Decision) { lock.withLock { decision == .allow ? (allowed += 1) : (denied += 1) } }
    }

    /// Charges 1 USD per Authorize until the connection dies (or, `untilDenied`, until the first DENY).
    static func client(_ socket: String, _ answers: Answers, untilDenied: Bool = false) {
        let agent = E2EUsers.agent!
        let fd = TestSupport.connect(socket, asUID: agent.uid, gid: agent.gid)
        guard fd >= 0 else { return }
        defer { close(fd) }
        for n in 1... {
            let request = FaultTests.request(UInt64(n)) {
                $0.authorize = .with { $0.capability = "pay:charge"; $0.amount = .with { $0.value = 1; $0.unit = "USD" } }
            }
            guard AbuseTests.send(fd, request), let body = TestSupport.readFrame(fd),
                  let r = try? Lanyard_V1_Response(serializedBytes: body), r.status.code == .ok else { return }
            answers.add(r.authorize.decision)
            if untilDenied, r.authorize.decision == .deny { return }
        }
    }

    /// (calls, spent) as stored, and the ALLOW records of the counters' period.
    static func counted(_ d: DaemonProcess) throws -> (calls: Int, spent: Int, allowRecords: Int) {
        let rows = try d.sql("SELECT kind, used, period_start FROM limit_counters").split(separator: "\n").map { $0.split(separator: "|") }
        let used = Dictionary(uniqueKeysWithValues: rows.map { (String($0[0]), Int($0[1])!) })
        let start = rows.first.map { String($0[2]) } ?? "0"
        let records = try d.sql("SELECT count(*) FROM audit WHERE event = 'authorize' AND decision = 'allow' AND time_us >= \(start)")
        return (used["calls"] ?? 0, used["spent"] ?? 0, Int(records)!)
    }

    @Test func countersSurviveKillNineAtRandomMoments() async throws {
        try await onThread {
            let d = try DaemonProcess(policy: Self.policy)
            defer { d.cleanup() }
            var rng = SystemRandomNumberGenerator()
            let answers = Answers()
            let rounds = 30
            for round in 1...rounds {
                try d.start()
                let clients = (0..<4).map { _ in Thread.detachedResult { Self.client(d.agentSocket, answers) } }
                usleep(UInt32.random(in: 5_000...150_000, using: &rng))  // the random moment
                d.kill9()
                clients.forEach { $0.wait() }
                let c = try Self.counted(d)
                let allowed = answers.lock.withLock { answers.allowed }
                // Each decision is counted in its record's transaction: the counter is exactly
                // the committed ALLOW records, at least the acknowledged ones (4 may have
                // committed unacknowledged), and never past the budget.
                #expect(c.calls == c.allowRecords && c.spent == c.allowRecords, "round \(round): counter \(c) vs records")
                #expect(c.calls >= allowed && c.calls <= allowed + 4 * round, "round \(round): \(c.calls) counted, \(allowed) acknowledged")
                #expect(c.spent <= Self.budget, "round \(round): overspent \(c.spent)")
            }
            try d.start()
            try d.ctlSucceeds(["audit", "verify"])
            // The rest of the budget, however far the rounds got on this machine: spent exactly at it.
            Self.client(d.agentSocket, answers, untilDenied: true)
            let c = try Self.counted(d)
            #expect(answers.denied > 0 && c.spent == Self.budget, "the budget was not reached exactly: \(c)")
            print("kill -9 under limits: \(rounds) rounds, \(answers.allowed) ALLOW and \(answers.denied) DENY acknowledged, \(c.calls) counted")
        }
    }

    /// `limits show`, `status --agent` and an admin's audited `limits reset`, through lanyardctl.
    @Test func countersAreShownAndResetByAnAdmin() throws {
        let policy = Self.policy.replacingOccurrences(of: "rate: 1000000000/day, budget: { amount: \(Self.budget), unit: USD, per: day }", with: "rate: 5/hour")
        let d = try DaemonProcess(policy: policy)
        defer { d.cleanup() }
        try d.start()
        let agent = E2EUsers.agent!
        for _ in 0..<3 { try d.ctlSucceeds(["authorize", "pay:charge"], as: agent) }
        let shown = try d.ctlSucceeds(["limits", "show", "--json"])
        #expect(shown.stdout.contains(#""agent":"a","capability":"pay:charge","kind":"calls","used":3,"limit":5"#), "\(shown.stdout)")
        let status = try d.ctlSucceeds(["status", "--agent", "a"])
        #expect(status.stdout.contains("a  pay:charge  3 of 5 calls this hour"), "\(status.stdout)")

        let refused = try d.ctl(["limits", "reset", "--agent", "a"], as: agent)
        #expect(refused.status != 0 && refused.stderr.contains("needs an admin"), "\(refused.stderr)")
        let reset = try d.ctlSucceeds(["limits", "reset", "--agent", "a"])
        #expect(reset.stdout.contains("reset 1 counter(s) of a"), "\(reset.stdout)")
        #expect(try d.ctlSucceeds(["limits", "show", "--agent", "a", "--json"]).stdout.contains(#""used":0"#))
        #expect(try d.sql("SELECT count(*) FROM audit WHERE event = 'admin.limits.reset' AND agent = 'a' AND uid = 0") == "1")
        for _ in 0..<5 { try d.ctlSucceeds(["authorize", "pay:charge"], as: agent) }
        let sixth = try d.ctl(["authorize", "pay:charge", "--json"], as: agent)
        #expect(sixth.stdout.contains("rate limit 5/hour reached"), "\(sixth.stdout) \(sixth.stderr)")
        try d.ctlSucceeds(["audit", "verify"])
    }
}
