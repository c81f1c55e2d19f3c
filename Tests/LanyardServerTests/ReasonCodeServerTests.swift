import Foundation
import LanyardClient
import LanyardCore
import LanyardServer
import LanyardStore
import LanyardTestSupport
import LanyardWire
import Testing

/// Issue 19: the wire and the audit record carry the same reason code and decision path;
/// a dry run changes nothing and is audited as one; `policy explain` online is offline's.
@Suite(.serialized, .enabled(if: TestSupport.isRoot, "needs root to create the approver uids"))
struct ReasonCodeServerTests {
    func pending(_ d: TestDaemon) throws -> UInt64 {
        try d.daemon.store.countPendingApprovals(nowMicros: Int64(Date().timeIntervalSince1970 * 1_000_000))
    }

    @Test func theWireAndTheAuditRecordCarryTheSameCode() async throws {
        let d = try TestDaemon(policy: Users.approvalPolicy())
        let a = d.client(as: Users.agent!)
        let approver = d.admin(as: Users.other!)
        let low = try await a.authorize("github:read_repo")
        let medium = try await a.authorize("github:push", resource: "r")
        let b = d.client(as: Users.second!)
        let ungranted = try await b.authorize("github:push")
        let unknown = try await a.authorize("slack:post")
        _ = try await approver.decide(medium.approvalID)
        let used = try await a.authorize("github:push", resource: "r", approvalID: medium.approvalID)
        let again = try await a.authorize("github:push", resource: "r", approvalID: medium.approvalID)
        let answers = [low, medium, ungranted, unknown, used, again]
        #expect(answers.map(\.reasonCode) == ["granted", "needs_approval", "not_granted", "not_in_catalog", "approved", "approval_consumed"])
        #expect(low.path.grant == "github:read_repo" && low.path.riskSource == "catalog" && low.path.risk == .low)
        #expect(used.path.grant == "github:push" && used.path.risk == .medium && !ungranted.hasPath)
        await #expect { try await a.authorize("github:*") } throws: { ($0 as? LanyardError)?.code == .invalidArgument }

        let records = try d.daemon.store.queryAudit(AuditFilter()).filter { $0.event == "authorize" }
        #expect(records.map(\.reasonCode) == answers.map(\.reasonCode) + ["invalid_argument"])
        // The admin wire's record (audit query and export) shows the same code.
        var query = Lanyard_V1_AdminRequest()
        query.auditQuery = .init()
        let shown = try await d.admin(as: Users.root).call(query).auditQuery.records.filter { $0.event == "authorize" }
        #expect(shown.map(\.reasonCode) == records.map(\.reasonCode))
        #expect(try d.daemon.store.verifyAudit().ok)
        await a.close()
        await b.close()
        await approver.close()
        await d.stop()
    }

    @Test func aDryRunCreatesAndConsumesNothing() async throws {
        let d = try TestDaemon(policy: Users.approvalPolicy())
        let a = d.client(as: Users.agent!)
        let approver = d.admin(as: Users.other!)
        // PENDING as if asked, and no approval opened.
        let dry = try await a.authorize("github:push", resource: "r", dryRun: true)
        #expect(dry.decision == .pending && dry.reasonCode == "needs_approval" && dry.dryRun && dry.approvalID.isEmpty)
        #expect(try pending(d) == 0)
        // An approved approval is checked, not used up: the real use after it still works.
        let asked = try await a.authorize("github:push", resource: "r")
        _ = try await approver.decide(asked.approvalID)
        let dryUse = try await a.authorize("github:push", resource: "r", approvalID: asked.approvalID, dryRun: true)
        #expect(dryUse.decision == .allow && dryUse.reasonCode == "approved" && dryUse.dryRun)
        let use = try await a.authorize("github:push", resource: "r", approvalID: asked.approvalID)
        #expect(use.decision == .allow && use.reasonCode == "approved" && !use.dryRun)
        // A dry run of a denial is the denial.
        let denied = try await a.authorize("github:admin", dryRun: true)
        #expect(denied.decision == .deny && denied.reasonCode == "not_in_catalog")

        let records = try d.daemon.store.queryAudit(AuditFilter()).filter { $0.event == "authorize" }
        #expect(records.map(\.outcome) == ["dry_run", "pending", "dry_run", "approved", "dry_run"])
        #expect(records.map(\.reasonCode) == ["needs_approval", "needs_approval", "approved", "approved", "not_in_catalog"])
        #expect(try pending(d) == 0)
        await a.close()
        await approver.close()
        await d.stop()
    }

    @Test func explainOnlineIsOffline() async throws {
        let text = Users.approvalPolicy()
        let d = try TestDaemon(policy: text)
        let offline = try PolicyParser.parse(text, file: "policy.yaml")
        let admin = d.admin(as: Users.root)
        for (subject, facts, capability) in [("a", "", "github:read_repo"), ("a", "", "deploy:production"), ("b", "", "github:push"),
                                             ("", "uid=\(Users.second!.uid)", "github:read_repo"), ("", "uid=7", "github:read_repo")] {
            var req = Lanyard_V1_AdminRequest()
            req.policyExplain = .with {
                $0.agent = subject
                $0.facts = facts
                $0.capability = capability
            }
            let online = try await admin.call(req).policyExplain
            let who: PolicyExplain.Subject = facts.isEmpty ? .agent(subject) : .facts(try CallerFacts(parsing: facts))
            let e = PolicyExplain.explain(.init(subject: who, capability: capability), in: offline)
            #expect(online.text == e.text && online.reasonCode == e.verdict.code.rawValue)
        }
        // Agents may not ask: an approver is not an admin either.
        var req = Lanyard_V1_AdminRequest()
        req.policyExplain = .with {
            $0.agent = "a"
            $0.capability = "github:push"
        }
        await #expect { try await d.admin(as: Users.other!).call(req) } throws: { ($0 as? LanyardError)?.code == .permissionDenied }
        await admin.close()
        await d.stop()
    }
}
