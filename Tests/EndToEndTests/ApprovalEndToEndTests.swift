import Foundation
import LanyardTestSupport
import LanyardWire
import Testing

@Suite(.serialized, .enabled(if: TestSupport.isRoot, "needs root to create agent and approver uids"))
struct ApprovalEndToEndTests {
    /// Acceptance 2: MEDIUM request → an approver approves with lanyardctl → AwaitApproval
    /// returns APPROVED → Provision succeeds once, the second use is refused.
    /// A started daemon whose policy names `lanyard-test-b` an approver, and the id of the
    /// approval the agent's Provision of `github:push` asked for.
    static func pendingProvision(extraArguments: [String] = []) throws -> (DaemonProcess, approver: (uid: UInt32, gid: UInt32), id: String) {
        let approver = try #require(TestSupport.user("lanyard-test-b"))
        let policy = E2EUsers.policy().replacingOccurrences(of: "services:", with: "approvers: { uids: [\(approver.uid)] }\nservices:")
        let d = try DaemonProcess(policy: policy)
        d.extraArguments = extraArguments
        do {
            try d.start()
            let asked = try d.ctl(["provision", "github", "--scope", "github:push", "--json"], as: E2EUsers.agent!)
            #expect(asked.status == 3, "\(asked)")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(asked.stdout.utf8)) as? [String: Any])
            return (d, approver, try #require(json["approval_id"] as? String))
        } catch {
            d.cleanup()
            throw error
        }
    }

    /// An approvals list request, framed.
    static func list(id: UInt64) -> [UInt8] {
        AbuseTests.frame(Lanyard_V1_AdminRequest.with { $0.id = id; $0.approvalsList = .init() })
    }

    /// `approvals watch`'s request, framed: a list that waits up to 30 s for a change after `version`.
    static func watch(id: UInt64, since version: UInt64) -> [UInt8] {
        AbuseTests.frame(Lanyard_V1_AdminRequest.with { $0.id = id; $0.approvalsList = .with { $0.waitMs = 30_000; $0.sinceVersion = version } })
    }

    /// The approvals list as the admin connection `admin` gets it now.
    static func listApprovals(_ admin: Int32) throws -> Lanyard_V1_AdminResponse {
        TestSupport.writeAll(admin, list(id: 1))
        return try Lanyard_V1_AdminResponse(serializedBytes: try #require(TestSupport.readFrame(admin)))
    }

    @Test func approverApprovesWithLanyardctl() throws {
        let (d, approver, id) = try Self.pendingProvision()
        defer { d.cleanup() }
        let agent = E2EUsers.agent!

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

    /// An approver's watch gives up its place at the uid's gate while it waits: with one
    /// place per uid, two watches wait and the approver's next call is answered meanwhile.
    @Test func anApproversWatchWaitsWithoutItsPlace() throws {
        let (d, approver, _) = try Self.pendingProvision(extraArguments: ["--max-running-per-uid", "1"])
        defer { d.cleanup() }
        let admin = TestSupport.connect(d.adminSocket, asUID: approver.uid, gid: approver.gid)
        defer { close(admin) }
        let listed = try Self.listApprovals(admin)
        TestSupport.writeAll(admin, Self.watch(id: 2, since: listed.approvalsList.version) + Self.watch(id: 3, since: listed.approvalsList.version)
                                    + Self.list(id: 4))
        let next = try Lanyard_V1_AdminResponse(serializedBytes: try #require(TestSupport.readFrame(admin), "the list after two watches got no answer"))
        #expect(next.id == 4 && next.status.code == .ok, "\(next)")
    }

    /// A graceful stop does not wait for long polls: an agent waiting on AwaitApproval (up to
    /// 60 s) gets the approval's state at once, and lanyardd exits well inside the unit's 30 s
    /// stop timeout (it waited the poll's whole 60 s, and systemd killed it at 30 s).
    @Test func aGracefulStopAnswersLongPollsAtOnce() throws {
        let (d, approver, id) = try Self.pendingProvision()
        defer { d.cleanup() }
        let agent = E2EUsers.agent!

        let fd = TestSupport.connect(d.agentSocket, asUID: agent.uid, gid: agent.gid)
        defer { close(fd) }
        // The long poll, then a Hello: once the Hello is answered, the poll was read and runs.
        var poll = Lanyard_V1_Request()
        poll.id = 1
        poll.awaitApproval = .with { $0.approvalID = id; $0.waitMs = 60_000 }
        var hello = Lanyard_V1_Request()
        hello.id = 2
        hello.hello = .init()
        TestSupport.writeAll(fd, AbuseTests.frame(poll) + AbuseTests.frame(hello))
        let helloAnswer = try Lanyard_V1_Response(serializedBytes: try #require(TestSupport.readFrame(fd)))
        #expect(helloAnswer.id == 2)

        // An approver's `approvals watch` (a list that waits 30 s for a change), read likewise.
        let admin = TestSupport.connect(d.adminSocket, asUID: approver.uid, gid: approver.gid)
        defer { close(admin) }
        let listed = try Self.listApprovals(admin)
        #expect(listed.status.code == .ok && listed.approvalsList.approvals.count == 1, "\(listed)")
        TestSupport.writeAll(admin, Self.watch(id: 2, since: listed.approvalsList.version) + Self.list(id: 3))
        let listedAgain = try Lanyard_V1_AdminResponse(serializedBytes: try #require(TestSupport.readFrame(admin)))
        #expect(listedAgain.id == 3)

        let stopping = Date()
        #expect(d.stop() == 0)
        let took = Date().timeIntervalSince(stopping)
        let answer = try Lanyard_V1_Response(serializedBytes: try #require(TestSupport.readFrame(fd), "the long poll got no answer"))
        #expect(answer.id == 1 && answer.status.code == .ok && answer.awaitApproval.state == .pending, "\(answer)")
        let watched = try Lanyard_V1_AdminResponse(serializedBytes: try #require(TestSupport.readFrame(admin), "the watch got no answer"))
        #expect(watched.id == 2 && watched.status.code == .ok && watched.approvalsList.approvals.count == 1, "\(watched)")
        #expect(took < TestSupport.latencyBound(10), "the graceful stop took \(took) s with a long poll open")
    }
}
