import Foundation
import LanyardTestSupport
import LanyardWire
import Testing

/// Invariant 2: the attested process must still be the one on the socket when a secret is
/// sent. A process that, once attested, hands its connection on — to a forked child after
/// it exits, or to another binary through exec — gets no credential. (An exec between
/// connect() and the daemon's accept-time look at /proc is a known gap: docs/security.md.)
@Suite(.serialized, .enabled(if: TestSupport.isRoot, "needs root to run as the agent uid"))
struct IdentityRaceTests {
    static var provision: Lanyard_V1_Request {
        var req = Lanyard_V1_Request()
        req.id = 7
        req.provision = .with {
            $0.service = "github"
            $0.scope = ["github:read_repo"]
        }
        return req
    }

    static var issueIdentity: Lanyard_V1_Request {
        var req = Lanyard_V1_Request()
        req.id = 8
        req.issueIdentity = .with { $0.audience = "svc" }
        return req
    }

    static let python = ["/usr/local/bin/python3", "/usr/bin/python3"].first { FileManager.default.isExecutableFile(atPath: $0) }

    func call(_ req: Lanyard_V1_Request, _ mode: String, _ d: DaemonProcess) throws -> Lanyard_V1_Response {
        let agent = E2EUsers.agent!
        let script = TestSupport.packageRoot.appendingPathComponent("Tests/EndToEndTests/Scripts/identity_race.py").path
        return try Self.answer(to: req, from: ["/usr/bin/setpriv", "--reuid=\(agent.uid)", "--regid=\(agent.gid)", "--clear-groups", "--",
                                          try #require(Self.python), script, d.agentSocket, mode])
    }

    /// Runs a race script with the Hello and `req` frames in its environment; returns the
    /// response it reports (hex on stderr, then "done"), and all it wrote.
    static func answer(to req: Lanyard_V1_Request, from argv: [String], outputSink: ((String) -> Void)? = nil) throws -> Lanyard_V1_Response {
        var hello = Lanyard_V1_Request()
        hello.id = 1
        hello.hello = .init()
        setenv("REQ", TestSupport.frame(try req.serializedBytes()).map { String(format: "%02x", $0) }.joined(), 1)
        setenv("HELLO", TestSupport.frame(try hello.serializedBytes()).map { String(format: "%02x", $0) }.joined(), 1)
        defer { unsetenv("REQ"); unsetenv("HELLO") }
        let p = try SpawnedProcess(argv)
        defer { p.stop() }
        let output = try #require(p.readStderr(until: "done"), "\(argv.last ?? "") gave no answer")
        outputSink?(output)
        let hex = try #require(output.split(separator: "\n").first { !$0.isEmpty && $0.allSatisfy(\.isHexDigit) })
        var bytes: [UInt8] = []
        var i = hex.startIndex
        while i < hex.endIndex {
            let j = hex.index(i, offsetBy: 2)
            bytes.append(UInt8(hex[i..<j], radix: 16)!)
            i = j
        }
        return try Lanyard_V1_Response(serializedBytes: bytes)
    }

    /// Forced PID reuse: in a PID namespace shared with lanyardd, an impostor with the
    /// attested agent's pid, uid and binary holds its connection — and gets nothing.
    @Test func anImpostorWithTheSamePidGetsNoCredential() throws {
        let d = try DaemonProcess(policy: E2EUsers.policy())
        defer { d.cleanup() }
        let agent = E2EUsers.agent!
        let script = TestSupport.packageRoot.appendingPathComponent("Tests/EndToEndTests/Scripts/pid_reuse.py").path
        for (request, what) in [(Self.provision, "provision"), (Self.issueIdentity, "issue_identity")] {
            var log = ""
            let r = try Self.answer(to: request, from: ["/usr/bin/unshare", "--pid", "--fork", "--mount-proc", try #require(Self.python), script,
                                                   d.agentSocket, "\(agent.uid)", "\(agent.gid)", Bin.lanyardd] + d.arguments, outputSink: { log = $0 })
            #expect(log.contains("pid reused: "), "the impostor never got the agent's pid: \(log)")
            #expect(r.status.code == .unauthenticated, "\(what): \(r.status)")
            #expect(r.provision.lease.secret.isEmpty && r.issueIdentity.token.isEmpty)
        }
    }

    @Test func handedOnConnectionsGetNoCredential() throws {
        let d = try DaemonProcess(policy: E2EUsers.policy())
        defer { d.cleanup() }
        try d.start()

        let control = try call(Self.provision, "plain", d)
        #expect(control.status.code == .ok && control.provision.lease.secret.hasPrefix("lyt_"), "\(control.status)")
        let token = try call(Self.issueIdentity, "plain", d)
        #expect(token.status.code == .ok && !token.issueIdentity.token.isEmpty, "\(token.status)")

        for mode in ["fork", "exec"] {
            let r = try call(Self.provision, mode, d)
            #expect(r.status.code == .unauthenticated, "provision, \(mode): \(r.status)")
            #expect(r.provision.lease.secret.isEmpty)
            let t = try call(Self.issueIdentity, mode, d)
            #expect(t.status.code == .unauthenticated, "issue_identity, \(mode): \(t.status)")
            #expect(t.issueIdentity.token.isEmpty)
        }
        // Invariant 11: while the attested process is alive and unchanged, a copy of its
        // connection — inherited, stolen with pidfd_getfd, or passed with SCM_RIGHTS — is
        // still answered only with a refusal — a Hello too, which lanyardd answers on the
        // event loop from its encoded bytes only for the process that opened the connection.
        let hello = Self.request(7) { $0.hello = .init() }
        for mode in ["fork-alive", "steal", "pass"] {
            for (request, what) in [(Self.provision, "provision"), (Self.issueIdentity, "issue_identity"), (hello, "hello")] {
                let r = try call(request, mode, d)
                #expect(r.status.code == .unauthenticated, "\(what), \(mode): \(r.status)")
                #expect(r.status.message.contains("not by pid"), "\(what), \(mode): \(r.status.message)")
                #expect(r.provision.lease.secret.isEmpty && r.issueIdentity.token.isEmpty && !r.hello.caller.authenticated)
            }
        }
        let leases = try d.ctl(["leases", "list", "--json"])
        #expect((try JSONSerialization.jsonObject(with: Data(leases.stdout.utf8)) as? [Any])?.count == 1)  // only the control's
        let denials = try d.ctl(["audit", "query", "--decision", "deny"]).stdout
        #expect(denials.components(separatedBy: "exited or changed").count == 3)  // exec: the attested pid, another binary
        #expect(denials.components(separatedBy: "answers only the process that opened it").count == 12)  // fork, fork-alive, steal, pass: another pid
    }

    static func request(_ id: UInt64, _ set: (inout Lanyard_V1_Request) -> Void) -> Lanyard_V1_Request {
        var req = Lanyard_V1_Request()
        req.id = id
        set(&req)
        return req
    }

    /// Security I, finding 5: every call that decides, consumes or mutates re-checks that
    /// the attested process is still the one on the socket — not only Provision and
    /// IssueIdentity. After an exec into another binary, Authorize with a humans' approval,
    /// Authorize under a standing approval, Revoke, Introspect and Rotate are refused
    /// UNAUTHENTICATED and change nothing; the approvals are still there for the real process.
    @Test func everyDecidingCallRechecksTheProcess() throws {
        let approver = try #require(TestSupport.user("lanyard-test-b"))
        let agent = E2EUsers.agent!
        let d = try DaemonProcess(policy: """
            trust_domain: e2e.internal
            approvers: { uids: [\(approver.uid)] }
            services:
              github: { kind: opaque }
            capabilities:
              github:read_repo:  { risk: low }
              github:push:       { risk: medium }
              github:admin:      { risk: high }
              github:rotate:     { risk: low }
              github:introspect: { risk: low }
            agents:
              a:
                uid: \(agent.uid)
                grants: [github:read_repo, github:push, github:admin, github:rotate, github:introspect]

            """)
        defer { d.cleanup() }
        try d.start()

        // A HIGH approval and a standing MEDIUM approval, both granted by the human.
        let high = try call(Self.request(2) { $0.authorize = .with { $0.capability = "github:admin" } }, "plain", d)
        let highID = high.authorize.approvalID
        #expect(high.authorize.decision == .pending && !highID.isEmpty, "\(high)")
        try d.ctlSucceeds(["approvals", "approve", highID], as: approver)
        let medium = try call(Self.request(3) { $0.authorize = .with { $0.capability = "github:push" } }, "plain", d)
        try d.ctlSucceeds(["approvals", "approve", medium.authorize.approvalID, "--for", "1h"], as: approver)
        let lease = try call(Self.provision, "plain", d).provision.lease
        #expect(lease.secret.hasPrefix("lyt_"))

        let useHigh = Self.request(4) { $0.authorize = .with { $0.capability = "github:admin"; $0.approvalID = highID } }
        let useStanding = Self.request(5) { $0.authorize = .with { $0.capability = "github:push" } }
        let calls: [(String, Lanyard_V1_Request)] = [
            ("authorize with an approval", useHigh), ("authorize under a standing approval", useStanding),
            ("revoke", Self.request(6) { $0.revoke = .with { $0.leaseID = lease.leaseID } }),
            ("introspect", Self.request(7) { $0.introspect = .with { $0.secret = lease.secret } }),
            ("rotate", Self.request(8) { $0.rotate = .with { $0.service = "github" } }),
        ]
        for (what, request) in calls {
            let r = try call(request, "exec", d)
            #expect(r.status.code == .unauthenticated, "\(what) after exec: \(r.status)")
            #expect(r.authorize.decision != .allow && !r.revoke.revoked && !r.introspect.active && r.rotate.version == 0, "\(what): \(r)")
        }

        // Nothing was consumed or changed: the real process still gets all of it.
        let allowed = try call(useHigh, "plain", d)
        #expect(allowed.authorize.decision == .allow, "the HIGH approval was used up by the exec'd process: \(allowed)")
        #expect(try call(useStanding, "plain", d).authorize.decision == .allow)
        let introspected = try call(Self.request(7) { $0.introspect = .with { $0.secret = lease.secret } }, "plain", d)
        #expect(introspected.introspect.active, "the lease was revoked or the service rotated by the exec'd process")
        #expect(try d.ctl(["audit", "query", "--decision", "deny"]).stdout.components(separatedBy: "exited or changed").count == calls.count + 1)
    }
}

