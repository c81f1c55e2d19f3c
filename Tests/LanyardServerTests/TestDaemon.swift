import LanyardClient
import LanyardWire
import LanyardCore
import LanyardServer
import LanyardTestSupport
import Logging
import ServiceLifecycle
import Foundation

/// A real daemon on temp sockets inside this process.
final class TestDaemon: @unchecked Sendable {
    let dir: String
    let daemon: Daemon
    let group: ServiceGroup
    let task: Task<Void, Error>
    var agentSocket: String { daemon.config.agentSocket }
    var adminSocket: String { daemon.config.adminSocket }
    var policyPath: String { dir + "/policy.yaml" }

    init(policy: String, limits: ServerLimits = ServerLimits(), clock: (any WallClock)? = nil,
         configure: (inout DaemonConfig) -> Void = { _ in }) throws {
        dir = TestSupport.tempDir("srv")
        TestSupport.write(policy, to: dir + "/policy.yaml")
        var config = DaemonConfig(policyPath: dir + "/policy.yaml", stateDir: dir + "/state",
                                  agentSocket: dir + "/agent.sock", adminSocket: dir + "/admin.sock")
        config.adminSocketMode = 0o666  // widened: the kernel-attested uid must decide alone
        config.adminGroup = nil
        config.limits = limits
        config.masterKeyFile = TestSupport.masterKey(in: dir)
        configure(&config)
        var logger = Logger(label: "test-daemon")
        logger.logLevel = .critical
        daemon = try Daemon(config: config, clock: clock ?? SystemWallClock(), logger: logger)
        group = ServiceGroup(configuration: .init(services: [.init(service: daemon)], logger: logger))
        let group = self.group
        task = Task { try await group.run() }
    }

    /// Graceful shutdown (drains in-flight calls and queued notifications); the state stays readable.
    func shutdown() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }

    func stop() async {
        await shutdown()
        TestSupport.remove(dir)
    }

    /// The Swift client, connected as `user` (the kernel records that uid).
    func client(as user: (uid: UInt32, gid: UInt32)) -> LanyardClient {
        LanyardClient(connectedSocket: TestSupport.connect(agentSocket, asUID: user.uid, gid: user.gid))
    }

    func admin(as user: (uid: UInt32, gid: UInt32)) -> LanyardAdminClient {
        LanyardAdminClient(connectedSocket: TestSupport.connect(adminSocket, asUID: user.uid, gid: user.gid))
    }

    func rawAgent(as user: (uid: UInt32, gid: UInt32)) -> Int32 {
        TestSupport.connect(agentSocket, asUID: user.uid, gid: user.gid)
    }
}

/// Test identities: an agent uid and a second, unregistered uid (created when root).
enum Users {
    static let agent: (uid: UInt32, gid: UInt32)? = TestSupport.isRoot ? TestSupport.user("lanyard-test-a") : (getuid(), getgid())
    static let other: (uid: UInt32, gid: UInt32)? = TestSupport.isRoot ? TestSupport.user("lanyard-test-b") : nil
    /// A second approver (quorum 2).
    static let approver2: (uid: UInt32, gid: UInt32)? = TestSupport.isRoot ? TestSupport.user("lanyard-test-d") : nil
    /// A second registered agent (agent `b`), for "not your lease" cases.
    static let second: (uid: UInt32, gid: UInt32)? = TestSupport.isRoot ? TestSupport.user("lanyard-test-c") : nil
    static let root: (uid: UInt32, gid: UInt32) = (0, 0)

    static func policy(approverUID: UInt32? = other?.uid, extraGrants: [String] = []) -> String {
        let approvers = approverUID.map { "approvers: { uids: [\($0)] }\n" } ?? ""
        let grants = (["github:read_repo", "github:push", "deploy:production"] + extraGrants).joined(separator: ", ")
        return """
        trust_domain: test.internal
        \(approvers)services:
          github: { kind: opaque }
          deploy: { kind: jwt }
        capabilities:
          github:read_repo:  { risk: low }
          github:push:       { risk: medium }
          github:admin:      { risk: high }
          deploy:production: { risk: high }
        agents:
          a:
            uid: \(agent!.uid)
            grants: [\(grants)]

        """
    }
}

extension ManualClock: WallClock {}

extension Users {
    /// Agents `a` (and `b` when root) with credential grants; `a` may introspect github tokens.
    static func credentialPolicy(rotationDays: Int? = nil) -> String {
        let b = second.map { "  b:\n    uid: \($0.uid)\n    grants: [github:read_repo]\n" } ?? ""
        let rotation = rotationDays.map { ", rotation_days: \($0)" } ?? ""
        return """
        trust_domain: test.internal
        approvers: { uids: [4242] }
        services:
          github: { kind: opaque, default_ttl_seconds: 300, max_ttl_seconds: 600\(rotation) }
          deploy: { kind: jwt, default_ttl_seconds: 120 }
          openai: { kind: static }
          once:   { kind: opaque, single_use: true }
        capabilities:
          once:use:          { risk: low }
          once:introspect:   { risk: low }
          github:read_repo:  { risk: low }
          github:introspect: { risk: low }
          github:rotate:     { risk: low }
          github:push:       { risk: medium }
          deploy:read:       { risk: low }
          openai:chat:       { risk: low }
        agents:
          a:
            uid: \(agent!.uid)
            grants: [github:read_repo, github:introspect, github:rotate, github:push, deploy:read, openai:chat, once:use, once:introspect]
        \(b)
        """
    }
}

extension LanyardClient {
    func provision(_ service: String, _ scope: [String], ttl: UInt64 = 0) async throws -> Lanyard_V1_Lease {
        var r = Lanyard_V1_Request()
        r.provision = .with {
            $0.service = service
            $0.scope = scope
            $0.ttlSeconds = ttl
        }
        return try await call(r).provision.lease
    }

    func introspect(_ secret: String) async throws -> Lanyard_V1_IntrospectResponse {
        var r = Lanyard_V1_Request()
        r.introspect = .with { $0.secret = secret }
        return try await call(r).introspect
    }

    func revoke(_ lease: String) async throws -> Bool {
        var r = Lanyard_V1_Request()
        r.revoke = .with { $0.leaseID = lease }
        return try await call(r).revoke.revoked
    }
}

extension Users {
    /// Agents `a` and `b`, approvers `other` and `approver2`, MEDIUM and HIGH capabilities.
    static func approvalPolicy(quorum: Int = 1) -> String {
        """
        trust_domain: test.internal
        approvers:
          uids: [\(other!.uid), \(approver2!.uid)]
          high_risk_quorum: \(quorum)
          timeout_seconds: 300
        services:
          github: { kind: opaque }
          deploy: { kind: jwt }
        capabilities:
          github:read_repo:  { risk: low }
          github:push:       { risk: medium }
          deploy:production: { risk: high }
        agents:
          a:
            uid: \(agent!.uid)
            grants: [github:read_repo, github:push, deploy:production]
          b:
            uid: \(second!.uid)
            grants: [github:read_repo]

        """
    }
}

extension LanyardAdminClient {
    func decide(_ id: String, approve: Bool = true, standingSeconds: UInt32 = 0, code: String = "") async throws -> Lanyard_V1_Approval {
        var r = Lanyard_V1_AdminRequest()
        r.approvalDecide = .with {
            $0.approvalID = id
            $0.approve = approve
            $0.standingSeconds = standingSeconds
            $0.bindingCode = code
        }
        return try await call(r).approvalDecide.approval
    }
}

extension LanyardClient {
    func awaitApproval(_ id: String, waitMs: UInt32 = 0) async throws -> Lanyard_V1_AwaitApprovalResponse {
        var r = Lanyard_V1_Request()
        r.awaitApproval = .with {
            $0.approvalID = id
            $0.waitMs = waitMs
        }
        return try await call(r).awaitApproval
    }
}
