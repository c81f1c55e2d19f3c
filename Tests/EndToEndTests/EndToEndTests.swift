import Foundation
import LanyardTestSupport
import Testing

@Suite(.serialized)
struct EndToEndTests {
    @Test func cClientAndLanyardctlAgainstARunningDaemon() throws {
        let d = try DaemonProcess(policy: E2EUsers.policy())
        defer { d.cleanup() }
        try d.start()
        let agent = E2EUsers.agent!

        try run(["/usr/bin/make", "-s", "-C", TestSupport.packageRoot.appendingPathComponent("clients/c").path])
        let c = try run([Bin.cExample, "github:read_repo", "github:push", "github:admin"], as: agent, env: d.env)
        #expect(c.status == 0, "C example failed: \(c.stderr)")
        #expect(c.stdout.contains("whoami: agent=a uri=spiffe://e2e.internal/agent/a uid=\(agent.uid)"))
        #expect(c.stdout.contains("authorize github:read_repo: ALLOW"))
        #expect(c.stdout.contains("authorize github:push: PENDING"))
        #expect(c.stdout.contains("authorize github:admin: DENY"))

        let who = try d.ctl(["whoami", "--json"], as: agent)
        #expect(who.status == 0)
        #expect(who.stdout.contains("\"agent\":\"a\"") && who.stdout.contains("\"uid\":\(agent.uid)"))
        try d.ctlSucceeds(["authorize", "github:read_repo"], as: agent)
        #expect(try d.ctl(["authorize", "github:admin"], as: agent).status == 2)
        let pending = try d.ctl(["authorize", "github:push", "--resource", "org/repo", "--arg", "branch=main"], as: agent)
        #expect(pending.status == 3 && pending.stdout.contains("approval: "))

        if TestSupport.isRoot {
            // Root on the agent socket is not an agent.
            let rootWho = try d.ctl(["whoami"])
            #expect(rootWho.status == 1 && rootWho.stderr.contains("UNAUTHENTICATED"))
        }

        let status = try d.ctl(["status", "--json"])
        #expect(status.status == 0)
        for key in ["version", "uptime_seconds", "policy_version", "agents", "active_leases", "pending_approvals", "audit_head", "connections"] {
            #expect(status.stdout.contains("\"\(key)\":"), "status --json lacks \(key)")
        }
        #expect(status.stdout.contains("\"pending_approvals\":2"))

        let verify = try d.ctl(["audit", "verify"])
        #expect(verify.status == 0 && verify.stdout.contains("audit chain ok"))
        let export = try d.ctl(["audit", "export"])
        let lines = export.stdout.split(separator: "\n")
        #expect(lines.count >= 6)
        for (i, line) in lines.enumerated() {
            let obj = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(obj?["seq"] as? Int == i + 1)
            #expect((obj?["time"] as? String)?.hasSuffix("Z") == true)
        }
        let query = try d.ctl(["audit", "query", "--agent", "a", "--decision", "allow"])
        #expect(query.stdout.split(separator: "\n").count == 2)  // the C example's and lanyardctl's ALLOW

        // The C client is valgrind-clean: no leaks, no invalid reads, on every path it took.
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/valgrind") {
            let v = try run(["/usr/bin/valgrind", "--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=all", "-q",
                             Bin.cExample, "github:read_repo", "github:push", "github:admin", "bad:*"], as: agent, env: d.env)
            #expect(v.status == 0, "valgrind: \(v.stderr)")
        }

        #expect(d.stop() == 0)
        #expect(!FileManager.default.fileExists(atPath: d.agentSocket), "the daemon left its socket behind")
    }

    /// kill -9, restart on the same state dir: every acknowledged decision is there and
    /// the chain still verifies; stale socket files are replaced.
    @Test func killNineThenRestartKeepsTheChainVerifiable() throws {
        let d = try DaemonProcess(policy: E2EUsers.policy())
        defer { d.cleanup() }
        try d.start()
        let agent = E2EUsers.agent!
        for _ in 0..<5 { try d.ctlSucceeds(["authorize", "github:read_repo"], as: agent) }
        d.kill9()
        #expect(FileManager.default.fileExists(atPath: d.agentSocket))  // stale, left by kill -9

        try d.start()
        for _ in 0..<3 { try d.ctlSucceeds(["authorize", "github:read_repo"], as: agent) }
        let verify = try d.ctl(["audit", "verify", "--json"])
        #expect(verify.status == 0)
        #expect(verify.stdout.contains("\"ok\":true") && verify.stdout.contains("\"records\":8"))
    }

    @Test func auditVerifyReportsTheFirstAlteredRecord() throws {
        let d = try DaemonProcess(policy: E2EUsers.policy())
        defer { d.cleanup() }
        try d.start()
        let agent = E2EUsers.agent!
        for cap in ["github:read_repo", "github:admin", "github:read_repo", "github:admin"] {
            _ = try d.ctl(["authorize", cap], as: agent)
        }
        try d.sql("UPDATE audit SET decision='allow' WHERE seq=2")
        let verify = try d.ctl(["audit", "verify"])
        #expect(verify.status == 1)
        #expect(verify.stdout.contains("BROKEN at record 2"), "got: \(verify.stdout)")
    }

    @Test func invalidPolicyStopsTheDaemonWithOneLine() throws {
        let d = try DaemonProcess(policy: E2EUsers.policy(extra: ", \"github:*\""))
        defer { d.cleanup() }
        let r = try run([Bin.lanyardd] + d.arguments)
        #expect(r.status != 0)
        #expect(r.stderr.hasPrefix("lanyardd: invalid policy: \(d.policyPath):"))
        #expect(r.stderr.contains("wildcards are not allowed"))
        #expect(r.stderr.split(separator: "\n").count == 1)
    }

    @Test func aSecondInstanceNeverStartsOrTakesOverTheSocket() throws {
        let d = try DaemonProcess(policy: E2EUsers.policy())
        defer { d.cleanup() }
        try d.start()
        let same = try run([Bin.lanyardd] + d.arguments)
        #expect(same.status != 0 && same.stderr.contains("another lanyardd"))

        // Another state dir, same live socket path: refused, the socket keeps working.
        let otherState = d.dir + "/state2"
        var args = d.arguments
        args[args.firstIndex(of: d.stateDir)!] = otherState
        let takeover = try run([Bin.lanyardd] + args)
        #expect(takeover.status != 0 && takeover.stderr.contains("in use by another process"))
        try d.ctlSucceeds(["authorize", "github:read_repo"], as: E2EUsers.agent!)
    }

    @Test func policyValidateDiffAndReloadFromTheCLI() throws {
        let d = try DaemonProcess(policy: E2EUsers.policy())
        defer { d.cleanup() }
        try d.start()
        let candidate = d.dir + "/candidate.yaml"

        TestSupport.write(E2EUsers.policy(extra: ", github:adminx"), to: candidate)
        let bad = try d.ctl(["policy", "validate", candidate])
        #expect(bad.status == 1 && bad.stderr.contains("\(candidate):13: agents.a.grants[3]: capability 'github:adminx' is not in the capabilities catalog"))

        TestSupport.write(E2EUsers.policy(extra: ", github:admin"), to: candidate)
        try d.ctlSucceeds(["policy", "validate", candidate])
        let diff = try d.ctl(["policy", "diff", candidate])
        #expect(diff.status == 0 && diff.stdout.contains("+ agent a: grant github:admin [high]"))

        // SIGHUP reloads the file in place.
        TestSupport.write(E2EUsers.policy(extra: ", github:admin"), to: d.policyPath)
        let before = try d.ctl(["status", "--json"]).stdout
        kill(d.process!.pid, SIGHUP)
        let agent = E2EUsers.agent!
        #expect(d.waitForLog("policy reloaded on SIGHUP"))
        let q = try d.ctl(["audit", "query", "--decision", "allow"])
        #expect(q.stdout.contains("policy.reload"), "\(q)")
        #expect(try d.ctl(["status", "--json"]).stdout != before)
        // Granted now, and HIGH: with no approvers configured it is denied for that reason.
        let high = try d.ctl(["authorize", "github:admin"], as: agent)
        #expect(high.status == 2 && high.stdout.contains("no approvers are configured"), "\(high)")
        let again = try d.ctl(["policy", "reload"])
        #expect(again.stdout.contains("policy unchanged"), "\(again)")
    }
}
