import ArgumentParser
import LanyardClient
import LanyardCore
import LanyardWire

extension Lanyard_V1_ApprovalState {
    var name: String {
        switch self {
        case .pending: "PENDING"
        case .approved: "APPROVED"
        case .denied: "DENIED"
        case .expired: "EXPIRED"
        case .consumed: "CONSUMED"
        default: "UNSPECIFIED"
        }
    }
}

extension Lanyard_V1_Approval {
    var json: JSON {
        .object([("approval_id", .string(approvalID)), ("state", .string(state.name)), ("agent", .string(agent)), ("uid", .int(Int64(uid))),
                 ("pid", .int(Int64(pid))), ("exe", .string(exe)), ("unit", .string(unit)), ("capabilities", .array(capabilities.map { .string($0) })),
                 ("resource", .string(resource)), ("args", .object(args.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })),
                 ("risk", .string(risk.name)), ("reason", .string(reason)), ("binding_code", .string(bindingCode)),
                 ("created_at", .int(createdAt)), ("expires_at", .int(expiresAt)), ("approvers", .array(approvers.map { .string($0) }))])
    }

    /// What an approver needs to decide: who asks, what, why, how risky, until when, and the
    /// code. The risk is the daemon's; everything the agent chose (resource, args, amount
    /// unit, its executable's path) is quoted, escaped and capped.
    var text: String {
        var lines = ["\(approvalID.field)  \(state.name)  \(risk.name.uppercased())  code \(bindingCode.field)",
                     "  agent:   \(agent.field) (uid \(uid), pid \(pid), exe \(exe.isEmpty ? "unknown" : exe.quoted)"
                         + (unit.isEmpty ? "" : ", unit \(unit.quoted)") + ")",
                     "  wants:   \(capabilities.fields())" + (resource.isEmpty ? "" : " on \(resource.quoted)")]
        if !args.isEmpty {
            lines.append("  args:    {" + args.sorted { $0.key < $1.key }.map { "\($0.key.quoted): \($0.value.quoted)" }.joined(separator: ", ") + "}")
        }
        if hasAmount { lines.append("  amount:  \(amount.value) \(amount.unit.quoted)") }
        lines.append("  why:     \(reason.shown)")
        lines.append("  expires: \(rfc3339(micros: expiresAt * 1_000_000))" + (approvers.isEmpty ? "" : "; approved by \(approvers.fields())"))
        return lines.joined(separator: "\n")
    }
}

struct Await: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Wait for a decision on one of your approvals (exit 0 APPROVED, 2 otherwise, 3 still PENDING).")
    @OptionGroup var sockets: Sockets
    @Argument(help: "The approval id.") var approval: String
    @Option(help: "How long to wait, in seconds (at most 60 per request; repeated until then).") var timeout: UInt32 = 300

    func run() async throws {
        let r = try await Self.decision(of: approval, within: timeout, client: sockets.agent)
        sockets.emit(.object([("state", .string(r.state.name)), ("reason", .string(r.reason)), ("binding_code", .string(r.bindingCode)),
                              ("expires_at", .int(r.expiresAt))])) {
            "\(r.state.name)" + (r.reason.isEmpty ? "" : ": \(r.reason.shown)")
        }
        switch r.state {
        case .approved: return
        case .pending: throw ExitCode(3)
        default: throw ExitCode(2)
        }
    }

    /// The approval's state once decided, or still PENDING after `seconds` (long polls of at most 60 s).
    static func decision(of approval: String, within seconds: UInt32, client: LanyardClient) async throws -> Lanyard_V1_AwaitApprovalResponse {
        var left = Int(seconds) * 1000
        var r = Lanyard_V1_AwaitApprovalResponse()
        repeat {
            let wait = UInt32(min(left, 60_000))
            var req = Lanyard_V1_Request()
            req.awaitApproval = .with {
                $0.approvalID = approval
                $0.waitMs = wait
            }
            r = try await client.call(req).awaitApproval
            left -= Int(wait)
        } while r.state == .pending && left > 0
        return r
    }
}

struct ApprovalsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "approvals", abstract: "Pending approvals (approvers and admins).",
                                                    subcommands: [List.self, Watch.self, Approve.self, Deny.self])

    static func list(_ sockets: Sockets, all: Bool, wait: UInt32 = 0, since: UInt64 = 0) async throws -> Lanyard_V1_ApprovalsListResponse {
        var req = Lanyard_V1_AdminRequest()
        req.approvalsList = .with {
            $0.includeDecided = all
            $0.waitMs = wait
            $0.sinceVersion = since
        }
        return try await sockets.admin.call(req).approvalsList
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List pending approvals (--all: decided ones too).")
        @OptionGroup var sockets: Sockets
        @Flag(help: "Include decided approvals.") var all = false

        func run() async throws {
            let r = try await ApprovalsCommand.list(sockets, all: all)
            let list = r.approvals
            let more = r.omitted > 0 ? "\n\n\(r.omitted) more approvals did not fit in one reply; decide these first, then list again" : ""
            sockets.emit(.array(list.map(\.json))) { (list.isEmpty ? "no pending approvals" : list.map(\.text).joined(separator: "\n\n")) + more }
        }
    }

    struct Watch: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print each new pending approval as it arrives (Ctrl-C to stop).")
        @OptionGroup var sockets: Sockets

        func run() async throws {
            var seen: Set<String> = []
            var version: UInt64 = 0
            while true {
                let r = try await ApprovalsCommand.list(sockets, all: false, wait: 30_000, since: version)
                version = r.version
                for a in r.approvals where seen.insert(a.approvalID).inserted {
                    print(sockets.json ? a.json.text : a.text + "\n")
                }
                try flushStdout()  // each arrival at once, even through a pipe
            }
        }
    }

    struct Approve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Approve a request (you must be an approver; never the requester).")
        @OptionGroup var sockets: Sockets
        @Argument(help: "The approval id.") var approval: String
        @Option(name: .customLong("for"), help: "MEDIUM only: also approve the same agent+capability+resource for this long (e.g. 30m, 1h, 2d).")
        var standing: String?
        @Flag(name: .customLong("for-process"),
              help: "MEDIUM only: also approve the same agent+capability+resource for the requesting process, until it exits.")
        var forProcess = false
        @Option(help: "HIGH only: the binding code the agent shows; lanyardd refuses the approval unless it is this request's.")
        var code: String = ""

        func run() async throws {
            var seconds: UInt32 = 0
            if let standing {
                guard !forProcess else { throw Failure("--for and --for-process exclude each other: choose a duration or the process's lifetime") }
                guard let s = Self.duration(standing) else { throw Failure("--for '\(standing)': use a number with s, m, h or d, such as 1h") }
                seconds = s
            }
            let a = try await decide(sockets, approval, approve: true, standing: seconds, reason: "", forProcess: forProcess, code: code)
            sockets.emit(a.json) { "\(a.state.name): \(a.approvalID.field) (\(a.capabilities.fields(",")) for \(a.agent.field))" }
        }

        /// Seconds of `30m`, `1h`, `2d`, `90s` or `90`; nil for anything else, or a count past UInt32.
        static func duration(_ s: String) -> UInt32? {
            guard let unit = s.last, let n = UInt32(s.dropLast()) else { return UInt32(s) }
            let scale: UInt32
            switch unit {
            case "s": scale = 1
            case "m": scale = 60
            case "h": scale = 3600
            case "d": scale = 86_400
            default: return nil
            }
            let (seconds, overflow) = n.multipliedReportingOverflow(by: scale)
            return overflow ? nil : seconds
        }
    }

    struct Deny: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Deny a request.")
        @OptionGroup var sockets: Sockets
        @Argument(help: "The approval id.") var approval: String
        @Option(help: "Why (shown to the agent).") var reason: String = ""

        func run() async throws {
            let a = try await decide(sockets, approval, approve: false, standing: 0, reason: reason)
            sockets.emit(a.json) { "DENIED: \(a.approvalID.field)" }
        }
    }
}

func decide(_ sockets: Sockets, _ id: String, approve: Bool, standing: UInt32, reason: String, forProcess: Bool = false,
            code: String = "") async throws -> Lanyard_V1_Approval {
    try await decide(sockets.admin, id, approve: approve, standing: standing, reason: reason, forProcess: forProcess, code: code)
}

/// One ApprovalDecide call as the uid this process runs as (the CLI and the console).
func decide(_ admin: LanyardAdminClient, _ id: String, approve: Bool, standing: UInt32, reason: String, forProcess: Bool,
            code: String) async throws -> Lanyard_V1_Approval {
    var req = Lanyard_V1_AdminRequest()
    req.approvalDecide = .with {
        $0.approvalID = id
        $0.approve = approve
        $0.standingSeconds = standing
        $0.forProcess = forProcess
        $0.reason = reason
        $0.bindingCode = code
    }
    return try await admin.call(req).approvalDecide.approval
}
