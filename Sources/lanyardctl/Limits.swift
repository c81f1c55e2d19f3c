import ArgumentParser
import LanyardCore
import LanyardWire

/// `lanyardctl limits show|reset` (issue 19): grant limit counters of the running policy.
struct LimitsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "limits", abstract: "Grant limits (rate, budget) and their counters.",
                                                    subcommands: [Show.self, Reset.self])

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Each limited grant's use in its current period (admins and approvers).")
        @OptionGroup var sockets: Sockets
        @Option(help: "Only this agent.") var agent: String = ""

        func run() async throws {
            let counters = try await LimitsCommand.show(sockets, agent: agent)
            sockets.emit(LimitsCommand.json(counters)) { LimitsCommand.text(counters) }
        }
    }

    struct Reset: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Reset an agent's counters, or every counter (admins; audited as admin.limits.reset).")
        @OptionGroup var sockets: Sockets
        @Option(help: "The agent.") var agent: String = ""
        @Option(help: "Only this grant's counters (default: every grant of the agent).") var capability: String = ""
        @Flag(help: "Every counter of every agent (what lanyardd asks for when the counters fail their integrity check).") var all = false

        func validate() throws {
            guard all == agent.isEmpty else { throw ValidationError("name an agent with --agent, or reset every counter with --all") }
            if all, !capability.isEmpty { throw ValidationError("--capability goes with --agent, not --all") }
        }

        func run() async throws {
            var req = Lanyard_V1_AdminRequest()
            req.limitsReset = .with {
                $0.agent = agent
                $0.capability = capability
                $0.all = all
            }
            let r = try await sockets.admin.call(req).limitsReset
            sockets.emit(.object([("reset", .int(Int64(r.reset)))])) { "reset \(r.reset) counter(s) of " + (all ? "every agent" : agent.field) }
        }
    }

    static func show(_ sockets: Sockets, agent: String) async throws -> [Lanyard_V1_LimitCounter] {
        var req = Lanyard_V1_AdminRequest()
        req.limitsShow = .with { $0.agent = agent }
        return try await sockets.admin.call(req).limitsShow.counters
    }

    static func json(_ counters: [Lanyard_V1_LimitCounter]) -> JSON {
        .array(counters.map { c in
            .object([("agent", .string(c.agent)), ("capability", .string(c.capability)), ("kind", .string(c.kind)), ("used", .int(c.used)),
                     ("limit", .int(c.limit)), ("unit", .string(c.unit)), ("period", .string(c.period)), ("period_ends_at", .int(c.periodEndsAt))])
        })
    }

    static func text(_ counters: [Lanyard_V1_LimitCounter]) -> String {
        guard !counters.isEmpty else { return "no limited grants" }
        return counters.map { c in
            let what = c.kind == "spent" ? "\(c.used) of \(c.limit) \(c.unit.field) spent" : "\(c.used) of \(c.limit) calls"
            return "\(c.agent.field)  \(c.capability.field)  \(what) this \(c.period.field) (ends at \(c.periodEndsAt))"
        }.joined(separator: "\n")
    }
}
