#if canImport(Glibc)
import Glibc
#endif
import LanyardServer

/// `lanyardd --dev`: a throwaway setup for trying Lanyard. Run as root it registers a
/// dedicated demo user (created when missing) as agent `dev`, since root can never be
/// an agent; run as a normal user it registers that user.
struct DevSetup {
    static let demoUser = "lanyard-demo"

    var stateDir: String
    var policyPath: String
    var agentUID: UInt32
    var agentUser: String

    struct Problem: Error, CustomStringConvertible { var description: String }

    static func prepare(stateDir: String?, policy: String?) throws -> DevSetup {
        let dir: String
        if let stateDir {
            dir = stateDir
            if mkdir(dir, 0o700) != 0 && errno != EEXIST {
                throw Problem(description: "cannot create state dir \(dir): \(String(cString: strerror(errno)))")
            }
        } else {
            var template = Array("/tmp/lanyard-dev.XXXXXX".utf8CString)
            guard let p = mkdtemp(&template) else { throw Problem(description: "cannot create a temp state dir: \(String(cString: strerror(errno)))") }
            dir = String(cString: p)
        }
        // A state dir another user made (or can write) could hold planted links: refused.
        do {
            try TrustedPath.checkDirectory(dir, what: "the state dir")
        } catch {
            throw Problem(description: "\(error)")
        }
        let (uid, user) = try agentAccount()
        if getuid() == 0 {
            // The demo user must reach the agent socket inside the state dir (contents stay 0600).
            chmod(dir, 0o711)
        }
        let policyPath = policy ?? dir + "/policy.yaml"
        if policy == nil {
            let text = samplePolicy(agentUID: uid)
            let fd = open(policyPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o644)
            guard fd >= 0 else { throw Problem(description: "cannot write \(policyPath): \(String(cString: strerror(errno)))") }
            _ = text.withCString { write(fd, $0, strlen($0)) }
            close(fd)
        }
        return DevSetup(stateDir: dir, policyPath: policyPath, agentUID: uid, agentUser: user)
    }

    static func agentAccount() throws -> (UInt32, String) {
        let uid = getuid()
        if uid != 0 {
            return (uid, userName(uid) ?? "uid \(uid)")
        }
        if let existing = getpwnam(demoUser) { return (existing.pointee.pw_uid, demoUser) }
        let status = runCommand(["/usr/sbin/useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", demoUser])
        guard status == 0, let created = getpwnam(demoUser) else {
            throw Problem(description: "running as root, and cannot create the demo user '\(demoUser)' (useradd exit \(status)); create it or run as a normal user")
        }
        return (created.pointee.pw_uid, demoUser)
    }

    static func samplePolicy(agentUID: UInt32) -> String {
        """
        # Sample policy written by `lanyardd --dev`. See README.md for the format.
        trust_domain: dev.lanyard.local
        services:
          github: { kind: opaque, default_ttl_seconds: 300 }
          deploy: { kind: jwt, default_ttl_seconds: 120 }
          openai: { kind: static }
        capabilities:
          github:read_repo:  { risk: low }
          github:introspect: { risk: low }
          github:push:       { risk: medium }
          deploy:read:       { risk: low }
          deploy:production: { risk: high }
          openai:chat:       { risk: low }
        agents:
          dev:
            uid: \(agentUID)
            grants: [github:read_repo, github:introspect, github:push, deploy:read, deploy:production, openai:chat]

        """
    }

    func announce(_ config: DaemonConfig) {
        let text = """
        lanyardd --dev: a throwaway setup in \(stateDir) (remove it when done)
          agent 'dev' is uid \(agentUID) (\(agentUser))
          policy:       \(policyPath)
          state dir:    \(stateDir)
          export LANYARD_SOCKET=\(config.agentSocket)
          export LANYARD_ADMIN_SOCKET=\(config.adminSocket)

        """
        _ = text.withCString { write(2, $0, strlen($0)) }
    }
}

func userName(_ uid: uid_t) -> String? {
    guard let pw = getpwuid(uid) else { return nil }
    return String(cString: pw.pointee.pw_name)
}

/// Runs a program (no shell) and returns its exit status.
func runCommand(_ argv: [String]) -> Int32 {
    var pid: pid_t = 0
    var cargs = argv.map { strdup($0) } + [nil]
    defer { cargs.forEach { free($0) } }
    guard posix_spawn(&pid, argv[0], nil, nil, &cargs, environ) == 0 else { return -1 }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return (status >> 8) & 0xFF
}
