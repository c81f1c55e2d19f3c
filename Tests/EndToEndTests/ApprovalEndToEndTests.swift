import Foundation
import LanyardTestSupport
import Testing

@Suite(.serialized, .enabled(if: TestSupport.isRoot, "needs root to create agent and approver uids"))
struct ApprovalEndToEndTests {
    /// Acceptance 2: MEDIUM request → an approver approves with lanyardctl → AwaitApproval
    /// returns APPROVED → Provision succeeds once, the second use is refused.
    @Test func approverApprovesWithLanyardctl() throws {
        let approver = try #require(TestSupport.user("lanyard-test-b"))
        let policy = E2EUsers.policy().replacingOccurrences(of: "services:", with: "approvers: { uids: [\(approver.uid)] }\nservices:")
        let d = try DaemonProcess(policy: policy)
        defer { d.cleanup() }
        try d.start()
        let agent = E2EUsers.agent!

        let asked = try d.ctl(["provision", "github", "--scope", "github:push", "--json"], as: agent)
        #expect(asked.status == 3, "\(asked)")
        let json = try JSONSerialization.jsonObject(with: Data(asked.stdout.utf8)) as! [String: Any]
        let id = try #require(json["approval_id"] as? String)

        let listed = try d.ctl(["approvals", "list"], as: approver)
        #expect(listed.status == 0 && listed.stdout.contains(id) && listed.stdout.contains("github:push") && listed.stdout.contains("uid \(agent.uid)"))
        // The agent itself cannot approve.
        let selfApproval = try d.ctl(["approvals", "approve", id], as: agent)
        #expect(selfApproval.status == 1 && selfApproval.stderr.contains("PERMISSION_DENIED"))

        let approved = try d.ctl(["approvals", "approve", id], as: approver)
        #expect(approved.status == 0 && approved.stdout.contains("APPROVED"), "\(approved)")
        let waited = try d.ctl(["await", id, "--timeout", "10"], as: agent)
        #expect(waited.status == 0 && waited.stdout.contains("APPROVED"))

        let first = try d.ctl(["provision", "github", "--scope", "github:push", "--approval", id], as: agent)
        #expect(first.status == 0 && first.stdout.hasPrefix("lyt_"))
        let second = try d.ctl(["provision", "github", "--scope", "github:push", "--approval", id], as: agent)
        #expect(second.status == 1 && second.stderr.contains("PERMISSION_DENIED") && second.stderr.contains("already used"))
        try d.ctlSucceeds(["audit", "verify"])
    }
}
