import LanyardClient
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

    init(policy: String, limits: ServerLimits = ServerLimits()) throws {
        dir = TestSupport.tempDir("srv")
        TestSupport.write(policy, to: dir + "/policy.yaml")
        var config = DaemonConfig(policyPath: dir + "/policy.yaml", stateDir: dir + "/state",
                                  agentSocket: dir + "/agent.sock", adminSocket: dir + "/admin.sock")
        config.adminSocketMode = 0o666  // widened: the kernel-attested uid must decide alone
        config.adminGroup = nil
        config.limits = limits
        var logger = Logger(label: "test-daemon")
        logger.logLevel = .critical
        daemon = try Daemon(config: config, logger: logger)
        group = ServiceGroup(configuration: .init(services: [.init(service: daemon)], logger: logger))
        let group = self.group
        task = Task { try await group.run() }
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
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
