import Foundation
import LanyardTestSupport
import Testing

/// Issue 19 with the real binaries: lanyardctl shows the code the wire and the audit
/// record carry; `policy explain` offline is online; `policy test` exits 0 / 1 / 2.
@Suite(.serialized)
struct PolicyToolsEndToEndTests {
    func object(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    @Test(.enabled(if: TestSupport.isRoot, "needs root to run lanyardctl as the agent uid"))
    func theCLIShowsTheCodeOfTheWireAndTheAuditRecord() throws {
        let d = try DaemonProcess(policy: E2EUsers.policy())
        defer { d.cleanup() }
        try d.start()
        let low = try d.ctl(["authorize", "--json", "github:read_repo"], as: E2EUsers.agent)
        #expect(low.status == 0)
        let answer = try object(low.stdout)
        #expect(answer["reason_code"] as? String == "granted")
        #expect((answer["path"] as? [String: Any])?["risk_source"] as? String == "catalog")
        let dry = try d.ctl(["authorize", "--dry-run", "github:push"], as: E2EUsers.agent)
        #expect(dry.status == 3 && dry.stdout.hasPrefix("dry run: PENDING github:push [medium] needs_approval: "))
        #expect(dry.stdout.contains("decided by: grant github:push (medium, from the catalog)"))
        #expect(try d.ctl(["authorize", "slack:post"], as: E2EUsers.agent).status == 2)
        #expect(try d.sql("SELECT count(*) FROM approvals") == "0")  // the dry run opened none

        let export = try d.ctlSucceeds(["audit", "export"]).stdout.split(separator: "\n").map { try object(String($0)) }
        let decided = export.filter { $0["event"] as? String == "authorize" }
        #expect(decided.map { $0["reason_code"] as? String } == ["granted", "needs_approval", "not_in_catalog"])
        #expect(decided.map { $0["outcome"] as? String } == ["auto_approved", "dry_run", "deny"])
        #expect(try d.sql("SELECT reason_code FROM audit WHERE event = 'authorize' ORDER BY seq") == "granted\nneeds_approval\nnot_in_catalog")
        let query = try d.ctlSucceeds(["audit", "query"]).stdout
        #expect(query.contains("  dry_run needs_approval  "))
        #expect(try d.ctlSucceeds(["audit", "verify"]).status == 0)

        // Explain: the running policy answers as the file does.
        for args in [["--agent", "a", "github:push"], ["--agent", "a", "github:admin"], ["--facts", "uid=\(E2EUsers.agent!.uid)", "openai:chat"],
                     ["--facts", "uid=4242", "openai:chat"]] {
            let online = try d.ctlSucceeds(["policy", "explain"] + args).stdout
            let offline = try d.ctlSucceeds(["policy", "explain", "--policy", d.policyPath] + args).stdout
            #expect(online == offline && online.hasPrefix("agent:    "))
        }
        #expect(try d.ctl(["policy", "explain", "--agent", "a", "github:push"], as: E2EUsers.agent).status != 0)  // admins only
        _ = d.stop()
    }

    @Test func policyTestPassesFailsReadablyAndRefusesAMalformedFile() throws {
        let root = TestSupport.packageRoot.path
        let pass = try run([Bin.lanyardctl, "policy", "test", root + "/examples/policy.yaml", root + "/examples/policy.tests.yaml"])
        #expect(pass.status == 0 && pass.stdout.hasSuffix("cases pass\n"), "\(pass.stdout)\(pass.stderr)")

        let dir = TestSupport.tempDir("policy-test")
        TestSupport.write("""
        cases:
          - name: coder deploys on its own
            agent: coder
            capability: deploy:production
            expect: { decision: allow, risk: high, reason_code: granted }
          - agent: coder
            capability: github:read_repo
            expect: { decision: allow }
        """, to: dir + "/wrong.yaml")
        let fail = try run([Bin.lanyardctl, "policy", "test", root + "/examples/policy.yaml", dir + "/wrong.yaml"])
        #expect(fail.status == 1)
        #expect(fail.stdout.hasPrefix("""
        FAIL coder deploys on its own (line 2)
          decision: expected allow, got deny
          reason_code: expected granted, got not_granted
        """), "\(fail.stdout)")
        #expect(fail.stdout.hasSuffix("1 of 2 cases pass\n"))

        TestSupport.write("cases:\n  - agent: coder\n    capability: deploy:production\n    expect: { decision: sometimes }\n", to: dir + "/bad.yaml")
        let bad = try run([Bin.lanyardctl, "policy", "test", root + "/examples/policy.yaml", dir + "/bad.yaml"])
        #expect(bad.status == 2 && bad.stderr.contains("bad.yaml:4: cases[0].expect.decision: is required: allow, deny or pending"), "\(bad.stderr)")
        #expect(try run([Bin.lanyardctl, "policy", "test", dir + "/missing.yaml", dir + "/bad.yaml"]).status == 2)
    }
}
