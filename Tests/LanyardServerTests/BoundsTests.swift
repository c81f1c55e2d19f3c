import Foundation
import LanyardClient
import LanyardCore
import LanyardStore
import LanyardTestSupport
import LanyardWire
import Testing

@testable import LanyardServer

private func code(_ error: any Error) -> Lanyard_V1_Code? { (error as? LanyardError)?.code }
private func message(_ error: any Error) -> String { (error as? LanyardError)?.message ?? "\(error)" }

/// Bounded peers (issue 15, findings 5, 6, 10, 11) against an in-process daemon with an
/// injected clock: approvals that expire leave the lists, per-agent bounds hold under
/// pipelining, stored fields are capped, lists fit in one frame, old rows are pruned and
/// refusals of strangers are counted, not written one by one.
@Suite(.serialized, .enabled(if: TestSupport.isRoot, "needs root for agent and approver uids"))
struct BoundsTests {
    /// Agents `a` and `b` may both push (MEDIUM); `other` approves.
    static func policy() -> String {
        """
        trust_domain: test.internal
        approvers: { uids: [\(Users.other!.uid)], timeout_seconds: 300 }
        services:
          github: { kind: opaque, default_ttl_seconds: 300 }
        capabilities:
          github:read_repo: { risk: low }
          github:push:      { risk: medium }
        agents:
          a:
            uid: \(Users.agent!.uid)
            grants: [github:read_repo, github:push]
          b:
            uid: \(Users.second!.uid)
            grants: [github:read_repo, github:push]

        """
    }

    static func list(_ admin: LanyardAdminClient, all: Bool = false) async throws -> Lanyard_V1_ApprovalsListResponse {
        var r = Lanyard_V1_AdminRequest()
        r.approvalsList = .with { $0.includeDecided = all }
        return try await admin.call(r).approvalsList
    }

    /// `n` MEDIUM Authorize calls at once on one connection; the results in any order.
    static func pipelinedPushes(_ client: LanyardClient, _ n: Int, resource: String = "repo") async -> [Result<Lanyard_V1_AuthorizeResponse, any Error>] {
        await withTaskGroup(of: Result<Lanyard_V1_AuthorizeResponse, any Error>.self) { group in
            for i in 0..<n {
                group.addTask {
                    do { return .success(try await client.authorize("github:push", resource: "\(resource)/\(i)")) } catch { return .failure(error) }
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
    }

    /// Finding 5: past its expiry an approval leaves the pending list and the status count,
    /// and the maintenance pass records it as expired. Then a new request is listed, even
    /// after more than 200 unanswered ones.
    @Test func expiredApprovalsLeaveTheListAndAreRecordedExpired() async throws {
        let clock = ManualClock()
        var limits = ServerLimits()
        limits.maxPendingApprovalsPerAgent = 300
        let d = try TestDaemon(policy: Self.policy(), limits: limits, clock: clock)
        let a = d.client(as: Users.agent!)
        let approver = d.admin(as: Users.other!)
        let old = await Self.pipelinedPushes(a, 205)
        #expect(old.allSatisfy { (try? $0.get().decision) == .pending })
        #expect(try await Self.list(approver).omitted > 0)

        clock.advance(seconds: 301)
        #expect(try await Self.list(approver).approvals.isEmpty)
        var status = Lanyard_V1_AdminRequest()
        status.status = .init()
        #expect(try await d.admin(as: Users.root).call(status).statusResult.pendingApprovals == 0)

        let fresh = try await a.authorize("github:push", resource: "repo/new")
        let listed = try await Self.list(approver)
        #expect(listed.approvals.map(\.approvalID) == [fresh.approvalID] && listed.omitted == 0)

        await d.daemon.maintenance()
        #expect(try d.daemon.store.approvalsToExpire(nowMicros: clock.nowMicros()).isEmpty)
        let expired = try d.daemon.store.queryAudit({ var f = AuditFilter(); f.limit = 1000; return f }()).filter { $0.event == "approval.expire" }
        #expect(expired.count == 205 && expired.allSatisfy { $0.outcome == "expired" && $0.agent == "a" })
        #expect(try d.daemon.store.approval(id: fresh.approvalID)?.machine.state == .pending)
        #expect(try d.daemon.store.verifyAudit().ok)
        await a.close()
        await approver.close()
        await d.stop()
    }

    /// Finding 6: an agent's pipelined requests stop at its bound (checked in the
    /// transaction), the refusal names the bound and is audited; another agent's request
    /// is still created and listed first.
    @Test func pendingApprovalsPerAgentAreBoundedUnderPipelining() async throws {
        let d = try TestDaemon(policy: Self.policy())
        let a = d.client(as: Users.agent!)
        let results = await Self.pipelinedPushes(a, 40)
        let pending = results.filter { (try? $0.get().decision) == .pending }
        let refused = results.compactMap { r -> (any Error)? in if case .failure(let e) = r { e } else { nil } }
        #expect(pending.count == 16 && refused.count == 24)
        #expect(refused.allSatisfy {
            code($0) == .resourceExhausted && message($0).contains("pending approvals for agent a (limit 16") && message($0).contains("--max-pending-approvals-per-agent")
        })
        let audit = try d.daemon.store.queryAudit({ var f = AuditFilter(); f.limit = 1000; return f }())
        #expect(audit.filter { $0.outcome == "resource_exhausted" && $0.decision == "deny" }.count == 24)

        let b = d.client(as: Users.second!)
        let victim = try await b.authorize("github:push", resource: "repo/victim")
        #expect(victim.decision == .pending)
        let listed = try await Self.list(d.admin(as: Users.other!))
        #expect(listed.approvals.first?.approvalID == victim.approvalID && listed.approvals.count == 17)
        await a.close()
        await b.close()
        await d.stop()
    }

    /// Finding 6/11: stored fields are capped before anything is stored; the refusal names the cap.
    @Test func oversizedRequestFieldsAreRefusedBeforeStoring() async throws {
        let d = try TestDaemon(policy: Self.policy())
        let a = d.client(as: Users.agent!)
        let huge = String(repeating: "x", count: 60_000)
        await #expect { try await a.authorize("github:push", resource: huge) } throws: {
            code($0) == .invalidArgument && message($0).contains("--max-field-bytes") && !message($0).contains("xxxx")
        }
        await #expect { try await a.authorize("github:push", args: ["k": huge]) } throws: { code($0) == .invalidArgument }
        let many = Dictionary(uniqueKeysWithValues: (0..<17).map { ("k\($0)", "v") })
        await #expect { try await a.authorize("github:push", args: many) } throws: { code($0) == .invalidArgument && message($0).contains("--max-args") }
        var provision = Lanyard_V1_Request()
        provision.provision = .with {
            $0.service = "github"
            $0.scope = ["github:push"]
            $0.resource = huge
        }
        await #expect { try await a.call(provision) } throws: { code($0) == .invalidArgument && message($0).contains("--max-field-bytes") }
        #expect(try d.daemon.store.countPendingApprovals(nowMicros: Int64(Date().timeIntervalSince1970 * 1e6)) == 0)
        // Control: at the caps the request is stored.
        let full = Dictionary(uniqueKeysWithValues: (0..<16).map { (String(format: "%04d", $0) + String(repeating: "k", count: 1020), String(repeating: "v", count: 1024)) })
        #expect(try await a.authorize("github:push", resource: String(repeating: "r", count: 1024), args: full).decision == .pending)
        await a.close()
        await d.stop()
    }

    /// Finding 6: approvals at the caps do not fit three to a frame: the list takes what
    /// fits, newest first, and counts the rest, so it always decodes.
    @Test func approvalsListFitsInOneFrameAndCountsTheRest() async throws {
        let d = try TestDaemon(policy: Self.policy())
        let a = d.client(as: Users.agent!)
        let full = Dictionary(uniqueKeysWithValues: (0..<16).map { (String(format: "%04d", $0) + String(repeating: "k", count: 1020), String(repeating: "v", count: 1024)) })
        var ids: [String] = []
        for i in 0..<3 {
            ids.append(try await a.authorize("github:push", resource: "\(i)" + String(repeating: "r", count: 1000), args: full).approvalID)
        }
        let approver = d.admin(as: Users.other!)
        let listed = try await Self.list(approver)
        #expect(listed.approvals.count == 1 && listed.omitted == 2 && listed.approvals.first?.approvalID == ids.last)
        #expect((try listed.serializedBytes() as [UInt8]).count <= ServerLimits.replyBudget)
        let all = try await Self.list(approver, all: true)
        #expect(all.approvals.count == 1 && all.omitted == 2)
        await a.close()
        await approver.close()
        await d.stop()
    }

    /// One agent's flood of the largest requests it may make does not push another agent's
    /// request out of the list: pending approvals come a fair share per agent at a time.
    @Test func oneAgentsFloodLeavesAnotherAgentsRequestListed() async throws {
        let d = try TestDaemon(policy: Self.policy())
        let (a, b) = (d.client(as: Users.agent!), d.client(as: Users.second!))
        let victim = try await b.authorize("github:push", resource: "the victim's").approvalID
        let full = Dictionary(uniqueKeysWithValues: (0..<16).map { (String(format: "%04d", $0) + String(repeating: "k", count: 1020), String(repeating: "v", count: 1024)) })
        for i in 0..<16 { _ = try await a.authorize("github:push", resource: "\(i)" + String(repeating: "r", count: 1000), args: full) }
        let approver = d.admin(as: Users.other!)
        let listed = try await Self.list(approver)
        #expect(listed.approvals.map(\.approvalID).contains(victim), "the victim's request is not listed: \(listed.approvals.count) listed, \(listed.omitted) omitted")
        #expect((try listed.serializedBytes() as [UInt8]).count <= ServerLimits.replyBudget)
        await a.close()
        await b.close()
        await approver.close()
        await d.stop()
    }

    /// Finding 10: active leases per agent are bounded (under pipelining too), and both
    /// lease lists come in pages that each fit in a frame and together hold every lease once.
    @Test func leasesPerAgentAreBoundedAndListsArePaged() async throws {
        var limits = ServerLimits()
        limits.maxLeasesPerAgent = 700
        let d = try TestDaemon(policy: Self.policy(), limits: limits)
        let a = d.client(as: Users.agent!)
        let results = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<710 { group.addTask { (try? await a.provision("github", ["github:read_repo"])) != nil } }
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(results.filter { $0 }.count == 700)
        await #expect { try await a.provision("github", ["github:read_repo"]) } throws: {
            code($0) == .resourceExhausted && message($0).contains("active leases for agent a (limit 700") && message($0).contains("--max-leases-per-agent")
        }

        var agentSeen: [String] = []
        var token = ""
        var pages = 0
        repeat {
            var r = Lanyard_V1_Request()
            r.listLeases = .with { $0.pageToken = token }
            let page = try await a.call(r).listLeases
            #expect((try page.serializedBytes() as [UInt8]).count <= ServerLimits.replyBudget)
            agentSeen += page.leases.map(\.leaseID)
            token = page.nextPageToken
            pages += 1
        } while !token.isEmpty && pages < 100
        #expect(agentSeen.count == 700 && Set(agentSeen).count == 700 && pages > 1)

        let root = d.admin(as: Users.root)
        var adminSeen: [String] = []
        token = ""
        repeat {
            var r = Lanyard_V1_AdminRequest()
            r.leasesList = .with { $0.pageToken = token }
            let page = try await root.call(r).leasesList
            adminSeen += page.leases.map(\.leaseID)
            token = page.nextPageToken
        } while !token.isEmpty && adminSeen.count < 10_000
        #expect(Set(adminSeen) == Set(agentSeen) && adminSeen.count == 700)

        var bad = Lanyard_V1_AdminRequest()
        bad.leasesList = .with { $0.pageToken = "not-a-token" }
        await #expect { try await root.call(bad) } throws: { code($0) == .invalidArgument }
        await a.close()
        await root.close()
        await d.stop()
    }

    /// The bound is checked against a tally that only counts up (LeaseTally): once it is
    /// reached, the leases that ended (revoked) or expired (not yet swept) free their places.
    @Test func leaseBoundFreesPlacesOfEndedAndExpiredLeases() async throws {
        var limits = ServerLimits()
        limits.maxLeasesPerAgent = 3
        let clock = ManualClock()
        let d = try TestDaemon(policy: Self.policy(), limits: limits, clock: clock)
        let a = d.client(as: Users.agent!)
        let full: @Sendable (any Error) -> Bool = { code($0) == .resourceExhausted && message($0).contains("limit 3") }
        var leases: [String] = []
        for _ in 0..<3 { leases.append(try await a.provision("github", ["github:read_repo"], ttl: 60).leaseID) }
        await #expect(performing: { try await a.provision("github", ["github:read_repo"], ttl: 60) }, throws: full)
        #expect(try await a.revoke(leases[0]))
        leases.append(try await a.provision("github", ["github:read_repo"], ttl: 60).leaseID)
        await #expect(performing: { try await a.provision("github", ["github:read_repo"], ttl: 60) }, throws: full)
        clock.advance(seconds: 61)
        for _ in 0..<3 { _ = try await a.provision("github", ["github:read_repo"], ttl: 60) }
        await #expect(performing: { try await a.provision("github", ["github:read_repo"], ttl: 60) }, throws: full)
        await a.close()
        await d.stop()
    }

    /// Finding 11: what ended more than the retention ago is deleted by the maintenance
    /// pass, with one audit record; what ended recently and what is live stay; the audit
    /// chain is kept whole.
    @Test func maintenancePrunesWhatEndedBeforeTheRetention() async throws {
        let clock = ManualClock()
        let d = try TestDaemon(policy: Self.policy(), clock: clock) { $0.retentionDays = 30 }
        let a = d.client(as: Users.agent!)
        let approver = d.admin(as: Users.other!)
        let oldLease = try await a.provision("github", ["github:read_repo"])
        #expect(try await a.revoke(oldLease.leaseID))
        let denied = try await a.authorize("github:push", resource: "old")
        _ = try await approver.decide(denied.approvalID, approve: false)
        let unanswered = try await a.authorize("github:push", resource: "old2")

        clock.advance(seconds: 31 * 86_400)
        let recentLease = try await a.provision("github", ["github:read_repo"])
        #expect(try await a.revoke(recentLease.leaseID))
        let live = try await a.authorize("github:push", resource: "new")
        let headBefore = d.daemon.store.audit.headRecord.seq

        await d.daemon.maintenance()  // records `unanswered` as expired, then prunes what ended 31 days ago
        await d.daemon.maintenance()  // nothing more to prune
        #expect(try d.daemon.store.lease(id: oldLease.leaseID) == nil)
        #expect(try d.daemon.store.approval(id: denied.approvalID) == nil)
        #expect(try d.daemon.store.approval(id: unanswered.approvalID) == nil)
        #expect(try d.daemon.store.lease(id: recentLease.leaseID) != nil)
        #expect(try d.daemon.store.approval(id: live.approvalID)?.machine.state == .pending)
        let records = try d.daemon.store.queryAudit({ var f = AuditFilter(); f.fromSeq = headBefore + 1; return f }())
        let prune = try #require(records.first { $0.event == "maintenance.prune" })
        #expect(prune.outcome.contains("pruned 2 approvals, 1 leases"))
        #expect(records.contains { $0.event == "approval.expire" && $0.approvalID == unanswered.approvalID })
        #expect(records.filter { $0.event == "maintenance.prune" }.count == 1)
        #expect(try d.daemon.store.verifyAudit().ok && d.daemon.store.queryAudit(AuditFilter()).first?.seq == 1)

        clock.advance(seconds: 31 * 86_400)
        await d.daemon.maintenance()
        #expect(try d.daemon.store.lease(id: recentLease.leaseID) == nil)
        await a.close()
        await approver.close()
        await d.stop()
    }

    /// Finding 11: a stranger's pipelined calls are each refused, but audited once per uid
    /// and interval; the maintenance pass writes the count once the interval has ended.
    @Test func strangersRefusalsAreAuditedOncePerIntervalWithACount() async throws {
        let clock = ManualClock()
        let d = try TestDaemon(policy: Self.policy(), clock: clock)
        let stranger = d.client(as: Users.other!)
        let refused = await withTaskGroup(of: Bool.self) { group in
            for i in 0..<300 {
                group.addTask {
                    var r = Lanyard_V1_Request()
                    r.revoke = .with { $0.leaseID = "lease-\(i)" }
                    do { _ = try await stranger.call(r); return false } catch { return code(error) == .unauthenticated }
                }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(refused == 300)
        let uid = Int64(Users.other!.uid)
        func strangerRecords() throws -> [AuditRecord] { try d.daemon.store.queryAudit(AuditFilter()).filter { $0.uid == uid } }
        #expect(try strangerRecords().count == 1)

        await d.daemon.maintenance()  // the interval has not ended: nothing yet
        #expect(try strangerRecords().count == 1)
        clock.advance(seconds: 61)
        await d.daemon.maintenance()
        let records = try strangerRecords()
        #expect(records.count == 2 && records[1].event == "unauthenticated.summary" && records[1].reason.hasPrefix("299 more calls refused"))

        // A new interval: the next refusal has a record of its own again.
        await #expect { try await stranger.authorize("github:read_repo") } throws: { code($0) == .unauthenticated }
        #expect(try strangerRecords().count == 3)
        await stranger.close()
        await d.stop()
    }

    /// Finding 9: each socket has its own budget; uids that are no agent (admin socket: hold
    /// no role) share a smaller one; the admin socket's last connections are kept for admins.
    /// Refusals name the bound.
    @Test func eachSocketHasItsOwnBudgetAndTheAdminSocketAReserve() async throws {
        var limits = ServerLimits()
        limits.maxAdminConnections = 4
        limits.adminReserve = 1
        limits.maxUnknownConnections = 2
        let d = try TestDaemon(policy: Self.policy(), limits: limits)
        let stranger = Users.approver2!  // neither an agent nor an approver in this policy
        let (agentSocket, adminSocket) = (d.agentSocket, d.adminSocket)
        try await onThread {
            var held: [Int32] = []
            defer { held.forEach { close($0) } }

            /// Connects and makes one call: its status code (OK, UNAUTHENTICATED…), or the refusal's.
            func call(_ socket: String, as user: (uid: UInt32, gid: UInt32), admin: Bool) throws -> Lanyard_V1_Status {
                let fd = TestSupport.connect(socket, asUID: user.uid, gid: user.gid)
                held.append(fd)
                let frame: [UInt8]
                if admin {
                    var r = Lanyard_V1_AdminRequest()
                    r.id = 1
                    r.whoami = .init()
                    frame = TestSupport.frame(try r.serializedBytes())
                } else {
                    var r = Lanyard_V1_Request()
                    r.id = 1
                    r.hello = .init()
                    frame = TestSupport.frame(try r.serializedBytes())
                }
                TestSupport.writeAll(fd, frame)
                let body = try #require(TestSupport.readFrame(fd))
                return admin ? try Lanyard_V1_AdminResponse(serializedBytes: body).status : try Lanyard_V1_Response(serializedBytes: body).status
            }

            // Agent socket: two strangers' connections, then the shared budget is full; agents still connect.
            #expect(try call(agentSocket, as: stranger, admin: false).code == .unauthenticated)
            #expect(try call(agentSocket, as: stranger, admin: false).code == .unauthenticated)
            let refused = try call(agentSocket, as: stranger, admin: false)
            #expect(refused.code == .resourceExhausted && refused.message.contains("--max-unknown-connections"))
            #expect(try call(agentSocket, as: Users.agent!, admin: false).code == .ok)
            // Admin socket: its own budget. An approver takes all but the reserve; root takes the reserve.
            for _ in 0..<3 { #expect(try call(adminSocket, as: Users.other!, admin: true).code == .ok) }
            let kept = try call(adminSocket, as: Users.other!, admin: true)
            #expect(kept.code == .resourceExhausted && kept.message.contains("kept for admins"))
            #expect(try call(adminSocket, as: Users.root, admin: true).code == .ok)
            let full = try call(adminSocket, as: Users.root, admin: true)
            #expect(full.code == .resourceExhausted && full.message.contains("--max-admin-connections"))
        }
        await d.stop()
    }
}
