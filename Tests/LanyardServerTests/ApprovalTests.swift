import Foundation
import LanyardClient
import LanyardStore
import LanyardTestSupport
import LanyardWire
import Testing

@testable import LanyardServer

private func code(_ error: any Error) -> Lanyard_V1_Code? { (error as? LanyardError)?.code }

private func approvalID(_ error: any Error) -> String? {
    ((error as? LanyardError)?.response as? Lanyard_V1_Response)?.provision.approvalID
}

@Suite(.serialized, .enabled(if: TestSupport.isRoot, "needs root to create agent and approver uids"))
struct ApprovalTests {
    /// MEDIUM: PENDING → an approver approves → AwaitApproval (already waiting) sees
    /// APPROVED → Provision succeeds once; the second use is refused.
    @Test func mediumApprovalIsAsyncAndSingleUse() async throws {
        let d = try TestDaemon(policy: Users.approvalPolicy())
        let a = d.client(as: Users.agent!)
        let id: String
        do {
            _ = try await a.provision("github", ["github:push"])
            Issue.record("a MEDIUM scope was provisioned without approval")
            return
        } catch {
            #expect(code(error) == .failedPrecondition)
            id = try #require(approvalID(error))
        }
        #expect(try await a.awaitApproval(id).state == .pending)

        let approver = d.admin(as: Users.other!)
        var list = Lanyard_V1_AdminRequest()
        list.approvalsList = .init()
        let shown = try #require(try await approver.call(list).approvalsList.approvals.first { $0.approvalID == id })
        #expect(shown.agent == "a" && shown.uid == Users.agent!.uid && shown.pid == getpid() && !shown.exe.isEmpty)
        #expect(shown.capabilities == ["github:push"] && shown.risk == .medium && shown.bindingCode.count == 9)

        async let waited = a.awaitApproval(id, waitMs: 20_000)  // long poll, answered by the decision
        let decided = try await approver.decide(id)
        #expect(decided.state == .approved)
        #expect(try await waited.state == .approved)

        var provision = Lanyard_V1_Request()
        provision.provision = .with {
            $0.service = "github"
            $0.scope = ["github:push"]
            $0.approvalID = id
        }
        #expect(try await a.call(provision).provision.lease.secret.hasPrefix("lyt_"))
        await #expect { try await a.call(provision) } throws: {
            code($0) == .permissionDenied && ($0 as! LanyardError).message.contains("already used")
        }
        #expect(try await a.awaitApproval(id).state == .consumed)
        let records = try d.daemon.store.queryAudit(AuditFilter())
        let decision = try #require(records.first { $0.event == "approval.approve" })
        #expect(decision.approvalID == id && decision.approver.contains("uid \(Users.other!.uid)"))
        await a.close()
        await approver.close()
        await d.stop()
    }

    /// HIGH with quorum 2: one approval is not enough, the same approver twice is not, two are.
    @Test func highNeedsTwoDistinctApprovers() async throws {
        let d = try TestDaemon(policy: Users.approvalPolicy(quorum: 2))
        let a = d.client(as: Users.agent!)
        let first = d.admin(as: Users.other!), second = d.admin(as: Users.approver2!)
        let pending = try await a.authorize("deploy:production", resource: "prod", args: ["version": "1.2.3"])
        #expect(pending.decision == .pending && pending.risk == .high)
        let id = pending.approvalID

        #expect(try await first.decide(id).state == .pending)
        await #expect { try await first.decide(id) } throws: { code($0) == .failedPrecondition && ($0 as! LanyardError).message.contains("already approved") }
        let early = try await a.authorize("deploy:production", resource: "prod", args: ["version": "1.2.3"], approvalID: id)
        #expect(early.decision == .deny && early.reason.contains("still pending"))

        #expect(try await second.decide(id).state == .approved)
        // The approval is bound to this exact operation.
        let other = try await a.authorize("deploy:production", resource: "prod", args: ["version": "6.6.6"], approvalID: id)
        #expect(other.decision == .deny && other.reason.contains("different operation"))
        let ok = try await a.authorize("deploy:production", resource: "prod", args: ["version": "1.2.3"], approvalID: id)
        #expect(ok.decision == .allow)
        let again = try await a.authorize("deploy:production", resource: "prod", args: ["version": "1.2.3"], approvalID: id)
        #expect(again.decision == .deny && again.reason.contains("already used"))
        // No standing approvals for HIGH, ever.
        let next = try await a.authorize("deploy:production", resource: "prod")
        await #expect { try await first.decide(next.approvalID, standingSeconds: 3600) } throws: { code($0) == .invalidArgument }
        await a.close()
        await first.close()
        await second.close()
        await d.stop()
    }

    /// A typed binding code (the console's HIGH path, `approve --code`): a wrong one is
    /// refused with a sentence and audited, and leaves the request pending; the right one
    /// approves whatever its case and dashes; a code on a MEDIUM request is refused.
    @Test func aTypedBindingCodeMustBeTheRequests() async throws {
        let d = try TestDaemon(policy: Users.approvalPolicy())
        let a = d.client(as: Users.agent!)
        let approver = d.admin(as: Users.other!)
        let high = try await a.authorize("deploy:production", resource: "prod")
        #expect(high.risk == .high)
        let wrong = high.bindingCode == "0000-0000" ? "1111-1111" : "0000-0000"
        await #expect { try await approver.decide(high.approvalID, code: wrong) } throws: {
            code($0) == .failedPrecondition && ($0 as! LanyardError).message.contains("is not this request's")
        }
        #expect(try await a.awaitApproval(high.approvalID).state == .pending)
        let refused = try #require(try d.daemon.store.queryAudit(AuditFilter()).last { $0.event == "approval.approve" })
        #expect(refused.outcome == "refused" && refused.decision == "deny" && refused.approvalID == high.approvalID)
        let typed = high.bindingCode.lowercased().replacingOccurrences(of: "-", with: "")
        #expect(try await approver.decide(high.approvalID, code: typed).state == .approved)

        let medium = try await a.authorize("github:push", resource: "repo")
        await #expect { try await approver.decide(medium.approvalID, code: medium.bindingCode) } throws: {
            code($0) == .failedPrecondition && ($0 as! LanyardError).message.contains("only for HIGH")
        }
        #expect(try await approver.decide(medium.approvalID).state == .approved)  // without a code, as before
        await a.close()
        await approver.close()
        await d.stop()
    }

    /// Security II finding 3: the approver is shown exactly the args the digest covers (they
    /// were stored as `k=v` lines and came back as `{"amount": "1=1000000", "to": "alice"}`).
    @Test func argsAreShownExactlyAsTheDigestCoversThem() async throws {
        let d = try TestDaemon(policy: Users.approvalPolicy())
        let a = d.client(as: Users.agent!)
        let approver = d.admin(as: Users.other!)
        let args = ["to": "mallory\nto=alice", "amount=1": "1000000"]
        let id = try await a.authorize("deploy:production", resource: "prod", args: args).approvalID
        var list = Lanyard_V1_AdminRequest()
        list.approvalsList = .init()
        let shown = try #require(try await approver.call(list).approvalsList.approvals.first { $0.approvalID == id })
        #expect(shown.args == args)
        #expect(try await approver.decide(id).args == args)
        #expect(try await a.authorize("deploy:production", resource: "prod", args: args, approvalID: id).decision == .allow)
        await a.close()
        await approver.close()
        await d.stop()
    }

    /// The requesting agent's uid and another agent's uid both fail to approve, audited.
    @Test func agentUIDsNeverApprove() async throws {
        let d = try TestDaemon(policy: Users.approvalPolicy())
        let a = d.client(as: Users.agent!)
        let id = try await a.authorize("github:push").approvalID
        for user in [Users.agent!, Users.second!] {
            let admin = d.admin(as: user)
            await #expect { try await admin.decide(id) } throws: { code($0) == .permissionDenied }
            await #expect { try await admin.decide(id, approve: false) } throws: { code($0) == .permissionDenied }
            await admin.close()
        }
        // Root is an admin, not an approver.
        let root = d.admin(as: Users.root)
        await #expect { try await root.decide(id) } throws: { code($0) == .permissionDenied }
        await root.close()
        #expect(try await a.awaitApproval(id).state == .pending)
        let refused = try d.daemon.store.queryAudit(AuditFilter()).filter { $0.event == "admin.approval_decide" }
        #expect(refused.count == 5 && refused.allSatisfy { $0.outcome == "permission_denied" && $0.approvalID == id })
        await a.close()
        await d.stop()
    }

    /// Timeout → EXPIRED → denied, on the injected clock; a denial is final too.
    @Test func unansweredApprovalsExpireAndDenialsAreFinal() async throws {
        let clock = ManualClock()
        let d = try TestDaemon(policy: Users.approvalPolicy(), clock: clock)
        let a = d.client(as: Users.agent!)
        let approver = d.admin(as: Users.other!)
        let id = try await a.authorize("deploy:production").approvalID
        clock.advance(seconds: 300)
        let r = try await a.awaitApproval(id, waitMs: 5_000)
        #expect(r.state == .expired && r.reason.contains("in time"))
        await #expect { try await approver.decide(id) } throws: { code($0) == .failedPrecondition }
        #expect(try await a.authorize("deploy:production", approvalID: id).decision == .deny)

        let denied = try await a.authorize("github:push").approvalID
        #expect(try await approver.decide(denied, approve: false).state == .denied)
        #expect(try await a.awaitApproval(denied).state == .denied)
        #expect(try await a.authorize("github:push", approvalID: denied).decision == .deny)
        await a.close()
        await approver.close()
        await d.stop()
    }

    /// MEDIUM standing approval: same agent + capability + resource, time-boxed.
    @Test func standingApprovalsAreTimeBoxedAndNarrow() async throws {
        let clock = ManualClock()
        let d = try TestDaemon(policy: Users.approvalPolicy(), clock: clock)
        let a = d.client(as: Users.agent!)
        let approver = d.admin(as: Users.other!)
        let id = try await a.authorize("github:push", resource: "acme/api").approvalID
        _ = try await approver.decide(id, standingSeconds: 3600)
        let covered = try await a.authorize("github:push", resource: "acme/api")
        #expect(covered.decision == .allow && covered.reason.contains("standing approval"))
        #expect(try await a.authorize("github:push", resource: "acme/web").decision == .pending)
        clock.advance(seconds: 3600)
        #expect(try await a.authorize("github:push", resource: "acme/api").decision == .pending)
        await a.close()
        await approver.close()
        await d.stop()
    }
}
