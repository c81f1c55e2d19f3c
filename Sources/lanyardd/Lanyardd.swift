#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import CLanyardSys
import LanyardCore
import LanyardCrypto
import LanyardServer
import LanyardWire
import Logging
import ServiceLifecycle

@main
struct Lanyardd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lanyardd",
        abstract: "The Lanyard daemon: kernel-attested identity, capability policy, approvals and audit for local AI agents.",
        version: lanyardVersion,
        subcommands: [Serve.self, Keygen.self],
        defaultSubcommand: Serve.self)

    /// `lanyardd --help` shows the daemon's own flags (every bound with its default), not
    /// only the list of subcommands: serve is what an operator runs.
    static func main() async {
        Libcrypto.initializeWithoutExitCleanup()
        let args = Array(CommandLine.arguments.dropFirst())
        if args == ["--help"] || args == ["-h"] {
            print(helpMessage())
            print("\nlanyardd serve (the default):\n")
            print(Serve.helpMessage(columns: nil))
            return
        }
        do {
            var command = try parseAsRoot(args)
            if var command = command as? AsyncParsableCommand { try await command.run() } else { try command.run() }
        } catch {
            exit(withError: error)
        }
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "serve", abstract: "Run the daemon (the default).")

    @Option(help: "A YAML file with any of these options as keys (flags win).") var config: String?
    @Option(help: "The policy file (default /etc/lanyard/policy.yaml).") var policy: String?
    @Option(name: .customLong("state-dir"), help: "SQLite database and sealed keys (default /var/lib/lanyard).") var stateDir: String?
    @Option(name: .customLong("agent-socket"), help: "Agent socket path (default /run/lanyard/agent.sock).") var agentSocket: String?
    @Option(name: .customLong("admin-socket"), help: "Admin socket path (default /run/lanyard/admin.sock).") var adminSocket: String?
    @Option(name: .customLong("credentials-socket"), help: "Serve systemd's LoadCredential= here, mode 0600 (default: none unless systemd passes lanyard-credentials.socket).") var credentialsSocket: String?
    @Option(name: .customLong("master-key-file"), help: "Master key file (else $CREDENTIALS_DIRECTORY/master.key).") var masterKeyFile: String?
    @Option(name: .customLong("agent-socket-mode"), help: "Octal mode of the agent socket (default 0666).") var agentSocketMode: String?
    @Option(name: .customLong("admin-socket-mode"), help: "Octal mode of the admin socket (default 0660).") var adminSocketMode: String?
    @Option(name: .customLong("admin-group"), help: "Group of the admin socket (default lanyard-admin, if it exists).") var adminGroup: String?
    @Option(name: .customLong("max-frame"), help: "Largest accepted frame in bytes (default 65536).") var maxFrame: Int?
    @Option(name: .customLong("max-in-flight"), help: "Requests in flight per connection (default 64).") var maxInFlight: Int?
    @Option(name: .customLong("max-running-per-uid"), help: "Calls of one uid worked on at once, across its connections; long polls aside (default 8).") var maxRunningPerUID: Int?
    @Option(name: .customLong("max-connections-per-uid"), help: "Connections per uid (default 64).") var maxConnectionsPerUID: Int?
    @Option(name: .customLong("max-connections"), help: "Connections to the agent socket in all (default 1024).") var maxConnections: Int?
    @Option(name: .customLong("max-admin-connections"), help: "Connections to the admin socket in all, a budget of its own (default 64).") var maxAdminConnections: Int?
    @Option(name: .customLong("admin-reserve"), help: "Of those, how many only admins may take (default 8).") var adminReserve: Int?
    @Option(name: .customLong("max-unknown-connections"), help: "Connections of uids that are no agent (admin socket: hold no role), per socket in all (default 256).") var maxUnknownConnections: Int?
    @Option(name: .customLong("frame-deadline-ms"), help: "A frame must complete this long after its first byte (default 5000).") var frameDeadlineMs: Int?
    @Option(name: .customLong("idle-timeout-seconds"), help: "Close connections idle this long (default 600).") var idleTimeoutSeconds: Int?
    @Option(name: .customLong("max-exe-hash-bytes"), help: "Largest executable hashed for exe_sha256 selectors; larger ones do not match (default 268435456).") var maxExeHashBytes: Int?
    @Option(name: .customLong("unknown-idle-timeout-seconds"), help: "Close idle connections of uids that are no agent (or hold no admin role) sooner (default 10).") var unknownIdleTimeoutSeconds: Int?
    @Option(name: .customLong("max-unsent-reply-bytes"), help: "Unread reply bytes per connection before its requests wait (default 262144).") var maxUnsentReplyBytes: Int?
    @Option(name: .customLong("reply-deadline-ms"), help: "A peer past --max-unsent-reply-bytes must read within this, or its connection closes (default 10000).") var replyDeadlineMs: Int?
    @Option(name: .customLong("max-pending-approvals-per-agent"), help: "Pending approvals one agent may have at once (default 16).") var maxPendingApprovalsPerAgent: Int?
    @Option(name: .customLong("max-leases-per-agent"), help: "Active leases one agent may hold at once (default 1000).") var maxLeasesPerAgent: Int?
    @Option(name: .customLong("max-field-bytes"), help: "Bytes of a request's resource, each args key and value, and amount unit (default and most 1024).") var maxFieldBytes: Int?
    @Option(name: .customLong("max-args"), help: "Args entries of one request (default and most 16).") var maxArgs: Int?
    @Option(name: .customLong("unknown-audit-interval-seconds"), help: "Refusals of uids that are no agent: one audit record per uid this often, with a count (default 60).") var unknownAuditIntervalSeconds: Int?
    @Option(name: .customLong("maintenance-interval-seconds"), help: "Expire, prune and return free memory this often (default 30).") var maintenanceIntervalSeconds: Int?
    @Option(name: .customLong("retention-days"), help: "Delete ended approvals, leases and revocations this old; the audit chain is kept (default 30).") var retentionDays: Int?
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error (default info).") var logLevel: String?
    @Flag(help: "Throwaway setup: temp state dir, generated key, sample policy registering the invoking user as agent 'dev'.") var dev = false

    func run() async throws {
        disableCoreDumps()
        _ = lanyard_unblock_all_signals()
        umask(0o077)
        let file: [String: String]
        do {
            file = try config.map(ConfigFile.load) ?? [:]
        } catch {
            fail("\(error)")
        }
        func pick(_ flag: String?, _ key: String) -> String? { flag ?? file[key] }
        func pickInt(_ flag: Int?, _ key: String) -> Int? {
            if let flag { return flag }
            guard let s = file[key] else { return nil }
            guard let v = Int(s) else { fail("\(config ?? ""): \(key): expected a whole number, got '\(s)'") }
            return v
        }

        // Every log line passes through InertLogHandler: agent text never forges a line.
        // Under systemd, to the journal with each metadata key as a field of its own.
        LoggingSystem.bootstrap { label in
            InertLogHandler(wrapping: JournalLogHandler(label: label).map { $0 as any LogHandler } ?? StreamLogHandler.standardError(label: label))
        }
        var logger = Logger(label: "lanyardd")
        let level = pick(logLevel, "log-level") ?? "info"
        guard let parsedLevel = Logger.Level(rawValue: level) else { fail("--log-level: unknown level '\(level)'; use trace, debug, info, notice, warning or error") }
        logger.logLevel = parsedLevel

        var policyPath = pick(policy, "policy")
        var stateDirPath = pick(stateDir, "state-dir")
        var agentPath = pick(agentSocket, "agent-socket")
        var adminPath = pick(adminSocket, "admin-socket")
        var agentMode = pick(agentSocketMode, "agent-socket-mode")
        var devSetup: DevSetup?
        if dev {
            do {
                let setup = try DevSetup.prepare(stateDir: stateDirPath, policy: policyPath)
                devSetup = setup
                stateDirPath = setup.stateDir
                policyPath = setup.policyPath
                agentPath = agentPath ?? setup.stateDir + "/agent.sock"
                adminPath = adminPath ?? setup.stateDir + "/admin.sock"
                agentMode = agentMode ?? "0666"
            } catch {
                fail("--dev: \(error)")
            }
        }

        var cfg = DaemonConfig(policyPath: policyPath ?? "/etc/lanyard/policy.yaml",
                               stateDir: stateDirPath ?? "/var/lib/lanyard",
                               agentSocket: agentPath ?? "/run/lanyard/agent.sock",
                               adminSocket: adminPath ?? "/run/lanyard/admin.sock")
        cfg.masterKeyFile = pick(masterKeyFile, "master-key-file")
        cfg.credentialsSocket = pick(credentialsSocket, "credentials-socket")
        if let devSetup, cfg.masterKeyFile == nil {
            cfg.masterKeyFile = devSetup.stateDir + "/master.key"
            if access(cfg.masterKeyFile!, F_OK) != 0 {
                do { try MasterKey.generate(at: cfg.masterKeyFile!, bytes: SecureRandom.bytes(MasterKey.size)) } catch { fail("--dev: \(error)") }
            }
        }
        if let m = agentMode { cfg.agentSocketMode = parseMode(m, "agent-socket-mode") }
        if let m = pick(adminSocketMode, "admin-socket-mode") { cfg.adminSocketMode = parseMode(m, "admin-socket-mode") }
        if let g = pick(adminGroup, "admin-group") { cfg.adminGroup = g.isEmpty ? nil : g }
        if let v = pickInt(maxFrame, "max-frame") { cfg.limits.maxFrame = bounded(v, 16...(16 * 1024 * 1024), "max-frame") }
        if let v = pickInt(maxInFlight, "max-in-flight") { cfg.limits.maxInFlight = bounded(v, 1...4096, "max-in-flight") }
        if let v = pickInt(maxRunningPerUID, "max-running-per-uid") { cfg.limits.maxRunningPerUID = bounded(v, 1...4096, "max-running-per-uid") }
        if let v = pickInt(maxConnectionsPerUID, "max-connections-per-uid") { cfg.limits.maxConnectionsPerUID = bounded(v, 1...65536, "max-connections-per-uid") }
        if let v = pickInt(maxConnections, "max-connections") { cfg.limits.maxConnections = bounded(v, 1...65536, "max-connections") }
        if let v = pickInt(frameDeadlineMs, "frame-deadline-ms") { cfg.limits.frameDeadline = .milliseconds(Int64(bounded(v, 10...600_000, "frame-deadline-ms"))) }
        if let v = pickInt(idleTimeoutSeconds, "idle-timeout-seconds") { cfg.limits.idleTimeout = .seconds(Int64(bounded(v, 1...86_400, "idle-timeout-seconds"))) }
        if let v = pickInt(maxExeHashBytes, "max-exe-hash-bytes") { cfg.limits.maxExeHashBytes = Int64(bounded(v, 4096...(1 << 40), "max-exe-hash-bytes")) }
        if let v = pickInt(maxAdminConnections, "max-admin-connections") { cfg.limits.maxAdminConnections = bounded(v, 2...65536, "max-admin-connections") }
        if let v = pickInt(maxUnknownConnections, "max-unknown-connections") { cfg.limits.maxUnknownConnections = bounded(v, 1...65536, "max-unknown-connections") }
        if let v = pickInt(adminReserve, "admin-reserve") { cfg.limits.adminReserve = bounded(v, 0...(cfg.limits.maxAdminConnections - 1), "admin-reserve") }
        if let v = pickInt(unknownIdleTimeoutSeconds, "unknown-idle-timeout-seconds") {
            cfg.limits.unknownIdleTimeout = .seconds(Int64(bounded(v, 1...86_400, "unknown-idle-timeout-seconds")))
        }
        if let v = pickInt(maxUnsentReplyBytes, "max-unsent-reply-bytes") { cfg.limits.maxUnsentReplyBytes = bounded(v, 4096...(1 << 30), "max-unsent-reply-bytes") }
        if let v = pickInt(replyDeadlineMs, "reply-deadline-ms") { cfg.limits.replyDeadline = .milliseconds(Int64(bounded(v, 10...600_000, "reply-deadline-ms"))) }
        if let v = pickInt(maxPendingApprovalsPerAgent, "max-pending-approvals-per-agent") {
            cfg.limits.maxPendingApprovalsPerAgent = bounded(v, 1...100_000, "max-pending-approvals-per-agent")
        }
        if let v = pickInt(maxLeasesPerAgent, "max-leases-per-agent") { cfg.limits.maxLeasesPerAgent = bounded(v, 1...1_000_000, "max-leases-per-agent") }
        if let v = pickInt(maxFieldBytes, "max-field-bytes") { cfg.limits.maxFieldBytes = bounded(v, 16...1024, "max-field-bytes") }
        if let v = pickInt(maxArgs, "max-args") { cfg.limits.maxArgs = bounded(v, 0...16, "max-args") }
        if let v = pickInt(unknownAuditIntervalSeconds, "unknown-audit-interval-seconds") {
            cfg.limits.unknownAuditInterval = .seconds(bounded(v, 1...86_400, "unknown-audit-interval-seconds"))
        }
        if let v = pickInt(maintenanceIntervalSeconds, "maintenance-interval-seconds") {
            cfg.maintenanceInterval = .seconds(bounded(v, 1...3_600, "maintenance-interval-seconds"))
        }
        if let v = pickInt(retentionDays, "retention-days") { cfg.retentionDays = bounded(v, 1...36_500, "retention-days") }

        let daemon: Daemon
        do {
            daemon = try Daemon(config: cfg, logger: logger)
        } catch {
            fail("\(error)")
        }
        devSetup?.announce(cfg)
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: daemon)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await group.run()
    }

    func parseMode(_ s: String, _ name: String) -> mode_t {
        guard let v = mode_t(s, radix: 8), v <= 0o777 else { fail("--\(name): '\(s)' is not an octal file mode such as 0660") }
        return v
    }

    func bounded(_ v: Int, _ range: ClosedRange<Int>, _ name: String) -> Int {
        guard range.contains(v) else { fail("--\(name): \(v) is outside \(range.lowerBound)...\(range.upperBound)") }
        return v
    }
}

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "keygen", abstract: "Write a new 256-bit master key (mode 0600).")

    @Option(help: "Where to write the key; the file must not exist.") var out: String

    func run() throws {
        umask(0o077)
        do {
            try MasterKey.generate(at: out, bytes: SecureRandom.bytes(MasterKey.size))
        } catch {
            fail("\(error)")
        }
        print("wrote a new master key to \(out) (mode 0600); keep it secret and backed up")
    }
}

/// One line on stderr, exit 1: how every startup problem ends.
func fail(_ message: String) -> Never {
    FileHandleStderr.write("lanyardd: \(Inert.text(message, limit: 4096))\n")
    exit(1)
}

enum FileHandleStderr {
    static func write(_ s: String) {
        _ = s.withCString { Glibc.write(2, $0, strlen($0)) }
    }
}

/// Crash output must never hold a secret: no core dumps, not ptrace-readable by others.
func disableCoreDumps() {
    if lanyard_disable_dumps() != 0 { fail("cannot disable core dumps: \(String(cString: strerror(errno)))") }
}
