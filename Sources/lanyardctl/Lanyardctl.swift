import ArgumentParser
import LanyardClient
import LanyardCore
import LanyardWire
import NIOConcurrencyHelpers

@main
struct Lanyardctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lanyardctl",
        abstract: "Talk to lanyardd: agent calls on the agent socket, operator calls on the admin socket.",
        discussion: "Exit status: 0 on success; 1 on an error (the message says what to do); `authorize` exits 2 on DENY and 3 on PENDING.",
        version: lanyardVersion,
        subcommands: [Whoami.self, Authorize.self, Provision.self, Exec.self, Revoke.self, Introspect.self, Await.self, PolicyCommand.self,
                      AgentsCommand.self, ApprovalsCommand.self, SecretCommand.self, LeasesCommand.self, AuditCommand.self, IdentityCommand.self,
                      Jwks.self, KeysCommand.self, Status.self, LimitsCommand.self, Console.self])

    /// ArgumentParser's `main`, except that the connections the command opened are
    /// closed before the process exits, whatever the outcome, and a `Failure` or an
    /// error from lanyardd is one line on stderr.
    static func main() async {
        var failure: (any Error)?
        do {
            var command = try parseAsRoot()
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            failure = error
        }
        await Clients.closeAll()
        switch failure {
        case nil:
            return
        case let f as Failure:
            FileHandleStderr.write("lanyardctl: \(Inert.text(f.message, limit: 4096))\n")
            exit(withError: ExitCode(f.code))
        case let e as LanyardError:
            FileHandleStderr.write("lanyardctl: \(e.code.name): \(Inert.text(e.message, limit: 4096))\n")
            exit(withError: ExitCode(1))
        case let error?:
            exit(withError: error)
        }
    }
}

/// The clients this run opened, one per socket, so that `main` can close them.
enum Clients {
    private static let open = NIOLockedValueBox<[String: any Closable]>([:])

    static func agent(_ path: String?) -> LanyardClient { client("agent:" + (path ?? "")) { LanyardClient(socketPath: path) } }
    static func admin(_ path: String?) -> LanyardAdminClient { client("admin:" + (path ?? "")) { LanyardAdminClient(socketPath: path) } }

    static func closeAll() async {
        for client in open.withLockedValue({ o in defer { o = [:] }; return o.values }) { await client.close() }
    }

    private static func client<C: Closable>(_ key: String, _ make: () -> C) -> C {
        open.withLockedValue { o in
            if let client = o[key] as? C { return client }
            let client = make()
            o[key] = client
            return client
        }
    }
}

protocol Closable: Sendable { func close() async }
extension LanyardClient: Closable {}
extension LanyardAdminClient: Closable {}

/// Socket flags, accepted by every subcommand.
struct Sockets: ParsableArguments {
    @Option(name: .customLong("agent-socket"), help: "Agent socket (env LANYARD_SOCKET, default /run/lanyard/agent.sock).")
    var agentSocket: String?
    @Option(name: .customLong("admin-socket"), help: "Admin socket (env LANYARD_ADMIN_SOCKET, default /run/lanyard/admin.sock).")
    var adminSocket: String?
    @Flag(help: "Machine-readable JSON output.") var json = false

    var agent: LanyardClient { Clients.agent(agentSocket) }
    var admin: LanyardAdminClient { Clients.admin(adminSocket) }

    func emit(_ value: JSON, text: () -> String) {
        print(json ? value.text : text())
    }
}

struct Whoami: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show who lanyardd sees on the agent socket (the kernel's view, not a claim).")
    @OptionGroup var sockets: Sockets

    func run() async throws {
        let client = sockets.agent
        let hello: Lanyard_V1_HelloResponse
        do {
            hello = try await client.hello(client: "lanyardctl")
        } catch let e as LanyardError where e.code == .unauthenticated {
            if let r = e.response as? Lanyard_V1_Response, r.hello.hasCaller {
                sockets.emit(r.hello.caller.json) { "not a registered agent: uid \(r.hello.caller.uid) pid \(r.hello.caller.pid)" }
            }
            throw e
        }
        let c = hello.caller
        sockets.emit(.object([("server_version", .string(hello.serverVersion)), ("caller", c.json)])) {
            var lines = ["agent:   \(c.agent.field) (\(c.uri.field))", "id:      \(c.agentID.field)",
                         "process: uid \(c.uid) gid \(c.gid) pid \(c.pid) exe \(c.exe.field)"]
            if !c.unit.isEmpty { lines.append("unit:    \(c.unit.field)") }
            lines.append("grants:  " + (c.grants.isEmpty ? "(none)" : c.grants.map { "\($0.capability.field) [\($0.risk.name)]" }.joined(separator: ", ")))
            return lines.joined(separator: "\n")
        }
    }
}

struct Authorize: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Ask whether this process may use a capability (exit 0 ALLOW, 2 DENY, 3 PENDING).")
    @OptionGroup var sockets: Sockets
    @Argument(help: "The capability, service:action.") var capability: String
    @Option(help: "The resource acted on.") var resource: String = ""
    @Option(name: .customLong("arg"), help: "An argument key=value (repeatable; part of what an approval binds).") var args: [String] = []
    @Option(name: .customLong("approval"), help: "An approval id to use.") var approval: String = ""
    @Flag(help: "Decide as if asked, changing nothing: no approval opened or used, no limit counted (audited as a dry run).")
    var dryRun = false

    func run() async throws {
        let map = try keyValues(args)
        let r = try await sockets.agent.authorize(capability, resource: resource, args: map, approvalID: approval, dryRun: dryRun)
        sockets.emit(.object([
            ("decision", .string(r.decision.name)), ("risk", .string(r.risk.name)), ("reason", .string(r.reason)),
            ("reason_code", .string(r.reasonCode)), ("path", r.path.json), ("dry_run", .bool(r.dryRun)),
            ("approval_id", .string(r.approvalID)), ("binding_code", .string(r.bindingCode)),
            ("approval_expires_at", .int(r.approvalExpiresAt)),
        ])) {
            var s = "\(r.dryRun ? "dry run: " : "")\(r.decision.name) \(capability.field) [\(r.risk.name)] \(r.reasonCode.field): \(r.reason.shown)"
            if r.hasPath { s += "\ndecided by: \(r.path.text)" }
            if !r.approvalID.isEmpty {
                s += "\napproval: \(r.approvalID.field) (code \(r.bindingCode.field)); wait with: lanyardctl await \(r.approvalID.field)"
            }
            return s
        }
        switch r.decision {
        case .allow: return
        case .pending: throw ExitCode(3)
        default: throw ExitCode(2)
        }
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Daemon status (admins and approvers).")
    @OptionGroup var sockets: Sockets
    @Option(help: "Show this agent's grant limits and their use instead.") var agent: String?

    func run() async throws {
        if let agent {
            let counters = try await LimitsCommand.show(sockets, agent: agent)
            sockets.emit(.object([("agent", .string(agent)), ("limits", LimitsCommand.json(counters))])) {
                "agent \(agent.field)\n" + LimitsCommand.text(counters)
            }
            return
        }
        var req = Lanyard_V1_AdminRequest()
        req.status = .init()
        let s = try await sockets.admin.call(req).statusResult
        sockets.emit(.object([
            ("version", .string(s.version)), ("uptime_seconds", .int(Int64(s.uptimeSeconds))),
            ("policy_version", .string(s.policyVersion)), ("agents", .int(Int64(s.agents))),
            ("active_leases", .int(Int64(s.activeLeases))), ("pending_approvals", .int(Int64(s.pendingApprovals))),
            ("audit_head", .int(Int64(s.auditHead))), ("connections", .int(Int64(s.connections))),
            ("upstream_revocations", .int(Int64(s.upstreamRevocations))),
        ])) {
            """
            lanyardd \(s.version.field), up \(s.uptimeSeconds)s
            policy:            \(String(s.policyVersion.prefix(16)).field)
            agents:            \(s.agents)
            active leases:     \(s.activeLeases)
            pending approvals: \(s.pendingApprovals)
            audit head:        \(s.auditHead)
            connections:       \(s.connections)
            upstream revokes:  \(s.upstreamRevocations) queued
            """
        }
    }
}

struct AgentsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "agents", abstract: "Registered agents.", subcommands: [List.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the registered agents and their grants (admins).")
        @OptionGroup var sockets: Sockets

        func run() async throws {
            var req = Lanyard_V1_AdminRequest()
            req.agentsList = .init()
            let agents = try await sockets.admin.call(req).agentsList.agents
            sockets.emit(.array(agents.map { a in
                .object([("name", .string(a.name)), ("id", .string(a.id)), ("uri", .string(a.uri)), ("uid", .int(Int64(a.uid))),
                         ("exe", .string(a.selector.exe)), ("unit", .string(a.selector.unit)),
                         ("grants", .array(a.grants.map { .object([("capability", .string($0.capability)), ("risk", .string($0.risk.name))]) }))])
            })) {
                agents.map { a in
                    var sel = ["uid=\(a.uid)"]
                    if a.selector.hasGid_p { sel.append("gid=\(a.selector.gid)") }
                    if !a.selector.exe.isEmpty { sel.append("exe=\(a.selector.exe.field)") }
                    if !a.selector.exeSha256.isEmpty { sel.append("exe_sha256=\(String(a.selector.exeSha256.prefix(12)).field)…") }
                    if !a.selector.unit.isEmpty { sel.append("unit=\(a.selector.unit.field)") }
                    return "\(a.name.field)  \(a.id.field)  \(sel.joined(separator: " "))\n  grants: "
                        + a.grants.map { "\($0.capability.field) [\($0.risk.name)]" }.joined(separator: ", ")
                }.joined(separator: "\n")
            }
        }
    }
}
