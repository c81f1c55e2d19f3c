import Foundation
import LanyardClient
import LanyardServer
import LanyardStore
import LanyardTestSupport
import LanyardWire
import Testing

@Suite(.serialized)
struct ServerTests {
    @Test func whoamiIsTheKernelAttestedAgent() async throws {
        let d = try TestDaemon(policy: Users.policy())
        let client = d.client(as: Users.agent!)
        let hello = try await client.hello()
        #expect(hello.caller.authenticated)
        #expect(hello.caller.agent == "a")
        #expect(hello.caller.uri == "spiffe://test.internal/agent/a")
        #expect(hello.caller.uid == Users.agent!.uid)
        #expect(hello.caller.pid == getpid())
        #expect(hello.caller.agentID.count == 36)
        #expect(hello.caller.grants.map(\.capability) == ["deploy:production", "github:push", "github:read_repo"])
        #expect(hello.protocolVersion == lanyardProtocolVersion)
        await client.close()
        await d.stop()
    }

    /// A Hello is answered on the event loop from what the connection's Hello encoded to:
    /// it carries each request's id, and follows a reload on the same connection.
    @Test func helloAnswersFollowTheirIDsAndAReload() async throws {
        let d = try TestDaemon(policy: Users.policy())
        let client = d.client(as: Users.agent!)
        #expect(try await client.hello().caller.grants.map(\.capability) == ["deploy:production", "github:push", "github:read_repo"])
        TestSupport.write(Users.policy(extraGrants: ["github:admin"]), to: d.policyPath)
        let root = d.admin(as: Users.root)
        var reload = Lanyard_V1_AdminRequest()
        reload.policyReload = .init()
        #expect(try await root.call(reload).policyReload.changed)
        #expect(try await client.hello().caller.grants.map(\.capability) == ["deploy:production", "github:admin", "github:push", "github:read_repo"])

        let fd = TestSupport.connect(d.agentSocket, asUID: Users.agent!.uid, gid: Users.agent!.gid)
        defer { close(fd) }
        let ids: [UInt64] = [0, 1, 127, 128, 300, 1 << 40, .max]
        let frames = try ids.map { id in try TestSupport.frame(Lanyard_V1_Request.with { $0.id = id; $0.hello = .init() }.serializedBytes()) }
        TestSupport.writeAll(fd, frames.flatMap { $0 })
        let replies = try ids.map { _ in try Lanyard_V1_Response(serializedBytes: #require(TestSupport.readFrame(fd))) }
        #expect(replies.map(\.id) == ids)
        #expect(replies.allSatisfy { $0.hello.caller.agent == "a" && $0.status.code == .ok && $0.hello.caller.grants.count == 4 })
        await client.close()
        await root.close()
        await d.stop()
    }

    @Test func authorizeAllowsDeniesAndRoutesRiskToHumans() async throws {
        let d = try TestDaemon(policy: Users.policy(approverUID: 4242))
        let client = d.client(as: Users.agent!)

        let low = try await client.authorize("github:read_repo")
        #expect(low.decision == .allow && low.risk == .low && low.approvalID.isEmpty)

        let medium = try await client.authorize("github:push", resource: "repo/x", args: ["branch": "main"])
        #expect(medium.decision == .pending && medium.risk == .medium)
        #expect(medium.approvalID.count == 36 && medium.bindingCode.count == 9)

        let high = try await client.authorize("deploy:production")
        #expect(high.decision == .pending && high.risk == .high)

        let ungranted = try await client.authorize("github:admin")
        #expect(ungranted.decision == .deny && ungranted.reason.contains("not granted"))

        let unknown = try await client.authorize("slack:post")
        #expect(unknown.decision == .deny && unknown.reason.contains("not in the policy catalog"))

        await #expect { try await client.authorize("github:*") } throws: { ($0 as? LanyardError)?.code == .invalidArgument }

        // An approval id cannot turn a PENDING into an ALLOW until approvals are decidable.
        let reuse = try await client.authorize("github:push", approvalID: medium.approvalID)
        #expect(reuse.decision == .deny)

        // Every decision is in the chain, durable before its reply, with the policy version.
        let records = try d.daemon.store.queryAudit(AuditFilter())
        #expect(records.map(\.decision) == ["allow", "pending", "pending", "deny", "deny", "deny", "deny"])
        #expect(records.allSatisfy { $0.policyVersion == d.daemon.policy.current.version && $0.uid == Int64(Users.agent!.uid) })
        #expect(records[1].approvalID == medium.approvalID && records[1].resource == "repo/x")
        #expect(try d.daemon.store.verifyAudit().ok)
        #expect(try d.daemon.store.countPendingApprovals(nowMicros: Int64(Date().timeIntervalSince1970 * 1_000_000)) == 2)
        await client.close()
        await d.stop()
    }

    @Test(.enabled(if: TestSupport.isRoot, "needs root to create a second uid"))
    func unregisteredUIDIsUnauthenticatedForEveryCall() async throws {
        let d = try TestDaemon(policy: Users.policy())
        let stranger = d.client(as: Users.other!)
        do {
            _ = try await stranger.hello()
            Issue.record("an unregistered uid got a hello answer")
        } catch let e as LanyardError {
            #expect(e.code == .unauthenticated)
            let r = try #require(e.response as? Lanyard_V1_Response)
            #expect(r.hello.caller.uid == Users.other!.uid && !r.hello.caller.authenticated)
        }
        await #expect { try await stranger.authorize("github:read_repo") } throws: { ($0 as? LanyardError)?.code == .unauthenticated }
        var provision = Lanyard_V1_Request()
        provision.provision = .with { $0.service = "github" }
        await #expect { try await stranger.call(provision) } throws: { ($0 as? LanyardError)?.code == .unauthenticated }

        // Audited once per uid and interval (the provision refusal is counted, not written:
        // BoundsTests.strangersRefusalsAreAuditedOncePerIntervalWithACount).
        let records = try d.daemon.store.queryAudit(AuditFilter())
        #expect(records.count == 1)
        #expect(records.allSatisfy { $0.outcome == "unauthenticated" && $0.decision == "deny" && $0.uid == Int64(Users.other!.uid) })
        await stranger.close()
        await d.stop()
    }

    /// Pipelined requests are answered by id, in whatever order they finish: a Hello
    /// (no disk) sent after an Authorize (an fsync'ed audit record) comes back first.
    @Test func pipelinedRequestsAreAnsweredByIDOutOfOrder() async throws {
        let d = try TestDaemon(policy: Users.policy())
        let fd = d.rawAgent(as: Users.agent!)
        defer { close(fd) }
        var authorize = Lanyard_V1_Request()
        authorize.id = 1
        authorize.authorize = .with { $0.capability = "github:read_repo" }
        var hello = Lanyard_V1_Request()
        hello.id = 2
        hello.hello = .init()
        let frames = TestSupport.frame(try authorize.serializedBytes()) + TestSupport.frame(try hello.serializedBytes())
        // Blocking reads on a thread of their own: the in-process daemon needs the cooperative pool.
        let answers = try await onThread { () -> [[UInt8]?] in
            TestSupport.writeAll(fd, frames)
            return [TestSupport.readFrame(fd), TestSupport.readFrame(fd)]
        }
        let first = try Lanyard_V1_Response(serializedBytes: try #require(answers[0]))
        let second = try Lanyard_V1_Response(serializedBytes: try #require(answers[1]))
        #expect(first.id == 2 && first.hello.caller.agent == "a")
        #expect(second.id == 1 && second.authorize.decision == .allow)

        // The Swift client routes many concurrent calls on one connection correctly.
        let client = d.client(as: Users.agent!)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<200 {
                group.addTask {
                    if i % 2 == 0 {
                        #expect(try await client.hello().caller.agent == "a")
                    } else {
                        let cap = i % 3 == 0 ? "github:read_repo" : "slack:post"
                        let r = try await client.authorize(cap)
                        #expect(r.decision == (cap == "github:read_repo" ? .allow : .deny))
                    }
                }
            }
            try await group.waitForAll()
        }
        await client.close()
        await d.stop()
    }

    @Test(.enabled(if: TestSupport.isRoot, "needs root to create a second uid"))
    func perUIDConnectionCapRefusesTheExtraConnectionOnly() async throws {
        var limits = ServerLimits()
        limits.maxConnectionsPerUID = 3
        let d = try TestDaemon(policy: Users.policy(), limits: limits)
        var clients: [LanyardClient] = []
        for _ in 0..<3 {
            let c = d.client(as: Users.agent!)
            _ = try await c.hello()  // accepted and counted
            clients.append(c)
        }
        let extra = d.rawAgent(as: Users.agent!)
        defer { close(extra) }
        let refusal = try Lanyard_V1_Response(serializedBytes: try #require(TestSupport.readFrame(extra)))
        #expect(refusal.id == 0 && refusal.status.code == .resourceExhausted)
        #expect(refusal.status.message.contains("too many connections"))
        #expect(TestSupport.isClosed(extra))

        // Another uid is not affected, and the first three still work.
        let other = d.client(as: Users.other!)
        await #expect { try await other.hello() } throws: { ($0 as? LanyardError)?.code == .unauthenticated }
        for c in clients { #expect(try await c.authorize("github:read_repo").decision == .allow) }
        for c in clients { await c.close() }
        await other.close()
        await d.stop()
    }

    /// A peer that starts a frame and stalls is cut at the deadline; others are served meanwhile.
    @Test func slowHeaderIsCutAtTheDeadline() async throws {
        var limits = ServerLimits()
        limits.frameDeadline = .milliseconds(300)
        let d = try TestDaemon(policy: Users.policy(), limits: limits)
        let slow = d.rawAgent(as: Users.agent!)
        defer { close(slow) }
        TestSupport.writeAll(slow, [0x00, 0x00])  // half a header, then nothing
        let good = d.client(as: Users.agent!)
        #expect(try await good.authorize("github:read_repo").decision == .allow)
        let cut = try Lanyard_V1_Response(serializedBytes: try #require(TestSupport.readFrame(slow)))
        #expect(cut.status.code == .deadlineExceeded)
        #expect(TestSupport.isClosed(slow))
        #expect(try await good.hello().caller.agent == "a")
        await good.close()
        await d.stop()
    }

    @Test func oversizedFrameIsRefusedBeforeItsBody() async throws {
        let d = try TestDaemon(policy: Users.policy())
        let fd = d.rawAgent(as: Users.agent!)
        defer { close(fd) }
        TestSupport.writeAll(fd, [0x00, 0x10, 0x00, 0x00])  // claims 1 MiB; no body is ever sent
        let r = try Lanyard_V1_Response(serializedBytes: try #require(TestSupport.readFrame(fd)))
        #expect(r.status.code == .resourceExhausted)
        #expect(r.status.message.contains("exceeds"))
        #expect(TestSupport.isClosed(fd))
        await d.stop()
    }

    @Test(arguments: [[0x08, 0x05, 0xFF, 0xFF, 0xFF] as [UInt8], [0x00, 0x00, 0x00, 0x01]])
    func garbageBodyIsAnsweredAndTheConnectionClosed(body: [UInt8]) async throws {
        let d = try TestDaemon(policy: Users.policy())
        let fd = d.rawAgent(as: Users.agent!)
        defer { close(fd) }
        TestSupport.writeAll(fd, TestSupport.frame(body))
        let r = try Lanyard_V1_Response(serializedBytes: try #require(TestSupport.readFrame(fd)))
        #expect(r.status.code == .invalidArgument)
        #expect(r.id == (body.first == 0x08 ? 5 : 0))
        #expect(TestSupport.isClosed(fd))
        // The daemon is fine.
        let client = d.client(as: Users.agent!)
        #expect(try await client.hello().caller.agent == "a")
        await client.close()
        await d.stop()
    }

    @Test func zeroLengthFrameClosesTheConnection() async throws {
        let d = try TestDaemon(policy: Users.policy())
        let fd = d.rawAgent(as: Users.agent!)
        defer { close(fd) }
        TestSupport.writeAll(fd, [0, 0, 0, 0])
        let r = try Lanyard_V1_Response(serializedBytes: try #require(TestSupport.readFrame(fd)))
        #expect(r.status.code == .invalidArgument && r.status.message.contains("length 0"))
        #expect(TestSupport.isClosed(fd))
        await d.stop()
    }

    @Test(.enabled(if: TestSupport.isRoot, "needs root to create a second uid"))
    func adminCallsAreCheckedPerCallerUID() async throws {
        let d = try TestDaemon(policy: Users.policy())
        var status = Lanyard_V1_AdminRequest()
        status.status = .init()
        var show = Lanyard_V1_AdminRequest()
        show.policyShow = .init()

        // The admin socket is world-writable in this test: only the kernel's uid decides.
        for user in [Users.agent!, Users.other!] {
            let admin = d.admin(as: user)
            await #expect { try await admin.call(show) } throws: { ($0 as? LanyardError)?.code == .permissionDenied }
            await admin.close()
        }
        // The approver may see status, not the policy.
        let approver = d.admin(as: Users.other!)
        #expect(try await approver.call(status).statusResult.agents == 1)
        await approver.close()

        let root = d.admin(as: Users.root)
        let s = try await root.call(status).statusResult
        #expect(s.version == lanyardVersion && s.policyVersion == d.daemon.policy.current.version && s.connections >= 1)
        #expect(try await root.call(show).policyShow.source.contains("trust_domain: test.internal"))
        await root.close()

        let denied = try d.daemon.store.queryAudit(AuditFilter()).filter { $0.outcome == "permission_denied" }
        #expect(denied.count == 2 && denied.allSatisfy { $0.event == "admin.policy_show" })
        await d.stop()
    }

    /// `policy show` reads the text from the store (not held in memory): text altered at
    /// rest is refused, never shown as the policy in force, and a reload records it again.
    @Test func policyShowRefusesStoredTextThatNoLongerHashesToItsVersion() async throws {
        let d = try TestDaemon(policy: Users.policy())
        let root = d.admin(as: Users.root)
        var show = Lanyard_V1_AdminRequest()
        show.policyShow = .init()
        #expect(try await root.call(show).policyShow.source == Users.policy())
        #expect(sqlite(d.daemon.store.path, "UPDATE policy_versions SET source = 'trust_domain: evil.example'"))
        await #expect { try await root.call(show) } throws: {
            ($0 as? LanyardError)?.code == .dataLoss && ($0 as? LanyardError)?.message.contains("altered at rest") == true
        }
        var reload = Lanyard_V1_AdminRequest()
        reload.policyReload = .init()
        _ = try await root.call(reload)
        #expect(try await root.call(show).policyShow.source == Users.policy())
        await root.close()
        await d.stop()
    }

    @Test func policyReloadSwapsWholeOrKeepsTheOld() async throws {
        let d = try TestDaemon(policy: Users.policy())
        let before = d.daemon.policy.current.version
        let client = d.client(as: Users.agent!)
        #expect(try await client.authorize("github:admin").decision == .deny)

        let root = d.admin(as: Users.root)
        var reload = Lanyard_V1_AdminRequest()
        reload.policyReload = .init()

        // A broken file is refused; the old version stays active.
        TestSupport.write(Users.policy(extraGrants: ["github:*"]), to: d.policyPath)
        await #expect { try await root.call(reload) } throws: {
            let e = $0 as? LanyardError
            return e?.code == .failedPrecondition && e!.message.contains("wildcards are not allowed") && e!.message.contains("policy.yaml:")
        }
        #expect(d.daemon.policy.current.version == before)

        TestSupport.write(Users.policy(extraGrants: ["github:admin"]), to: d.policyPath)
        let r = try await root.call(reload).policyReload
        #expect(r.changed && r.policyVersion != before)
        #expect(try await client.authorize("github:admin").decision == .pending)  // same connection, new policy
        let records = try d.daemon.store.queryAudit(AuditFilter())
        #expect(records.last?.policyVersion == r.policyVersion)
        #expect(records.filter { $0.event == "admin.policy.reload" }.map(\.outcome) == ["refused", "activated"])
        // The agent keeps its id across versions.
        #expect(try await client.hello().caller.agentID == d.daemon.policy.current.policy.agent(named: "a")?.id)
        await client.close()
        await root.close()
        await d.stop()
    }
}
