import Foundation
import LanyardClient
import LanyardTestSupport
import LanyardWire
import Testing

@testable import LanyardServer

/// Security I findings 6 and 7: the policy in force when an approval is used decides, and
/// `<service>:introspect` is routed by its risk like every other capability.
@Suite(.serialized, .enabled(if: TestSupport.isRoot, "needs root to create agent and approver uids"))
struct PolicyAtUseTests {
    static func policy(push: String = "medium", quorum: Int = 1, introspect: String = "low") -> String {
        """
        trust_domain: test.internal
        approvers:
          uids: [\(Users.other!.uid), \(Users.approver2!.uid)]
          high_risk_quorum: \(quorum)
        services:
          github: { kind: opaque, single_use: true }
          deploy: { kind: jwt }
        capabilities:
          github:read_repo:  { risk: low }
          github:push:       { risk: \(push) }
          github:introspect: { risk: \(introspect) }
          deploy:production: { risk: high }
        agents:
          a:
            uid: \(Users.agent!.uid)
            grants: [github:read_repo, github:push, deploy:production]
          b:
            uid: \(Users.second!.uid)
            grants: [github:introspect]

        """
    }

    func authorize(_ a: LanyardClient, _ capability: String, approval: String) async throws -> Lanyard_V1_AuthorizeResponse {
        var req = Lanyard_V1_Request()
        req.authorize = .with {
            $0.capability = capability
            $0.approvalID = approval
        }
        return try await a.call(req).authorize
    }

    @Test func anApprovalIsJudgedByThePolicyInForceWhenItIsUsed() async throws {
        let d = try TestDaemon(policy: Self.policy())
        let a = d.client(as: Users.agent!)
        let approver = d.admin(as: Users.other!)

        // Approved by one person while MEDIUM; a reload makes the operation HIGH.
        let medium = try await a.authorize("github:push")
        #expect(medium.decision == .pending && medium.risk == .medium)
        #expect(try await approver.decide(medium.approvalID).state == .approved)
        TestSupport.write(Self.policy(push: "high", quorum: 2), to: d.policyPath)
        _ = try d.daemon.policy.reload()
        let raised = try await authorize(a, "github:push", approval: medium.approvalID)
        #expect(raised.decision == .deny && raised.reason.contains("now rates this operation high"), "\(raised)")
        #expect(try await a.awaitApproval(medium.approvalID).state == .approved)  // refused, not used up

        // HIGH approved by one approver under quorum 1; the quorum becomes 2.
        TestSupport.write(Self.policy(quorum: 1), to: d.policyPath)
        _ = try d.daemon.policy.reload()
        let high = try await a.authorize("deploy:production")
        #expect(try await approver.decide(high.approvalID).state == .approved)
        TestSupport.write(Self.policy(quorum: 2), to: d.policyPath)
        _ = try d.daemon.policy.reload()
        let short = try await authorize(a, "deploy:production", approval: high.approvalID)
        #expect(short.decision == .deny && short.reason.contains("now requires 2"), "\(short)")

        // Control: under the rules it was granted by, the same approval is used once.
        TestSupport.write(Self.policy(quorum: 1), to: d.policyPath)
        _ = try d.daemon.policy.reload()
        #expect(try await authorize(a, "deploy:production", approval: high.approvalID).decision == .allow)
        await a.close()
        await approver.close()
        await d.stop()
    }

    @Test func introspectIsRoutedByItsRisk() async throws {
        let d = try TestDaemon(policy: Self.policy(introspect: "high"))
        let a = d.client(as: Users.agent!)
        let service = d.client(as: Users.second!)
        let approver = d.admin(as: Users.other!)
        let secret = try await a.provision("github", ["github:read_repo"]).secret

        var ask = Lanyard_V1_Request()
        ask.introspect = .with { $0.secret = secret }
        let pending = try await service.call(ask).introspect
        #expect(pending.decision == .pending && !pending.active && pending.agent.isEmpty, "\(pending)")
        #expect(pending.approvalID.count == 36 && pending.bindingCode.count == 9)

        // Answered at once it would have consumed the single-use token: it is still live.
        #expect(try await approver.decide(pending.approvalID).state == .approved)
        ask.introspect.approvalID = pending.approvalID
        let answered = try await service.call(ask).introspect
        #expect(answered.decision == .allow && answered.active && answered.agent == "a", "\(answered)")
        // Single use: consumed by that introspection; the approval is used up too.
        let again = try await service.call(ask).introspect
        #expect(again.decision == .deny && !again.active)
        await a.close()
        await service.close()
        await approver.close()
        await d.stop()
    }
}
