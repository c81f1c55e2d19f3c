import LanyardCore
import LanyardStore

/// The bodies of approval notifications, one per format. `generic` carries the agent's
/// text exactly (JSON escapes keep its bytes inert); Slack and ntfy messages are read by
/// people in their apps, so there every agent-controlled value is first made inert
/// (`Inert.text`: controls and bidi characters escaped visibly, cut at `fieldLimit`).
enum NotificationFormat {
    /// The most bytes of one agent-controlled value shown in a Slack or ntfy message.
    static let fieldLimit = 300

    /// Lanyard's own event: every field of the request, exact.
    static func generic(_ a: StoredApproval) -> String {
        let args = JSON.object(a.args.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })
        return JSON.object([
            ("event", .string("approval.pending")), ("approval_id", .string(a.id)), ("agent", .string(a.agent)),
            ("agent_id", .string(a.agentID)), ("uid", .int(Int64(a.uid))), ("pid", .int(Int64(a.pid))),
            ("exe", .string(a.exe)), ("capabilities", .array(a.capabilities.map { .string($0) })),
            ("resource", .string(a.resource)), ("args", args), ("amount", .string(a.amount)),
            ("risk", .string(a.machine.risk.description)), ("reason", .string(a.reason)),
            ("binding_code", .string(a.bindingCode)), ("expires_at", .int(a.expiresAt)),
        ]).text
    }

    /// A Slack incoming-webhook message: `text` (the notification's fallback) and `blocks`
    /// (section, fields, context) in mrkdwn, every agent-controlled value escaped per
    /// Slack's rules (`&`, `<`, `>`) so that it cannot mention anyone or make a link.
    static func slack(_ a: StoredApproval, consoleURL: String?) -> String {
        let risk = a.machine.risk.description.uppercased()
        let what = "\(shown(a.capabilities.joined(separator: ", "))) on \(shown(a.resource))"
        let headline = "\(risk) approval needed: \(shown(a.agent)) wants \(what)"
        var fields = [("Agent", "\(shown(a.agent)) (uid \(a.uid), pid \(a.pid))"), ("Executable", shown(a.exe)),
                      ("Capabilities", shown(a.capabilities.joined(separator: ", "))), ("Resource", shown(a.resource)),
                      ("Risk", risk), ("Binding code", "`\(a.bindingCode)`")]
        if !a.amount.isEmpty { fields.append(("Amount", shown(a.amount))) }
        if !a.args.isEmpty { fields.append(("Args", shown(a.args.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")))) }
        if !a.reason.isEmpty { fields.append(("Reason", shown(a.reason))) }
        var blocks: [JSON] = [
            .object([("type", .string("section")), ("text", mrkdwn("*\(headline)*"))]),
            .object([("type", .string("section")), ("fields", .array(fields.prefix(10).map { mrkdwn("*\($0.0)*\n\($0.1)") }))]),
        ]
        var context = "Approval `\(a.id)` · expires <!date^\(a.expiresAt)^{date_short_pretty} {time}|at unix time \(a.expiresAt)>"
            + " · check the binding code with the agent before approving"
        if let consoleURL { context += " · <\(consoleURL)|Open the Lanyard console>" }
        blocks.append(.object([("type", .string("context")), ("elements", .array([mrkdwn(context)]))]))
        return JSON.object([("text", .string(headline)), ("blocks", .array(blocks))]).text
    }

    /// An ntfy JSON publish (POSTed to the server's root): topic, title, message, priority
    /// by risk (MEDIUM 4 "high", HIGH 5 "max"), tags (shown as emoji), `click` to the console.
    static func ntfy(_ a: StoredApproval, topic: String, consoleURL: String?) -> String {
        let risk = a.machine.risk
        var lines = ["\(Inert.text(a.agent, limit: fieldLimit)) (uid \(a.uid), pid \(a.pid), \(Inert.text(a.exe, limit: fieldLimit)))",
                     "wants \(Inert.text(a.capabilities.joined(separator: ", "), limit: fieldLimit)) on \(Inert.text(a.resource, limit: fieldLimit))"]
        if !a.amount.isEmpty { lines.append("amount: \(Inert.text(a.amount, limit: fieldLimit))") }
        if !a.args.isEmpty {
            lines.append("args: " + Inert.text(a.args.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "), limit: fieldLimit))
        }
        if !a.reason.isEmpty { lines.append("why: \(Inert.text(a.reason, limit: fieldLimit))") }
        lines.append("binding code \(a.bindingCode) · approval \(a.id) · expires at unix time \(a.expiresAt)")
        var members: [(String, JSON)] = [
            ("topic", .string(topic)),
            ("title", .string("\(risk.description.uppercased()) approval needed: \(Inert.text(a.agent, limit: 64))")),
            ("message", .string(lines.joined(separator: "\n"))),
            ("priority", .int(risk >= .high ? 5 : 4)),
            ("tags", .array([.string(risk >= .high ? "rotating_light" : "warning"), .string("lanyard"), .string(risk.description)])),
        ]
        if let consoleURL { members.append(("click", .string(consoleURL))) }
        return JSON.object(members).text
    }

    /// Agent-controlled text as Slack shows it: inert, then `&`, `<`, `>` escaped, at most
    /// `fieldLimit` bytes in all (escapes count; an escape is never cut), so that the
    /// message stays within Slack's block limits.
    static func shown(_ s: String) -> String {
        let inert = Inert.text(s, limit: fieldLimit)
        var out = ""
        var used = 0
        for c in inert {
            let piece = switch c {
            case "&": "&amp;"
            case "<": "&lt;"
            case ">": "&gt;"
            default: String(c)
            }
            guard used + piece.utf8.count <= fieldLimit else { return out + "…" }
            out += piece
            used += piece.utf8.count
        }
        return out
    }

    private static func mrkdwn(_ text: String) -> JSON { .object([("type", .string("mrkdwn")), ("text", .string(text))]) }
}

extension StoredApproval {
    /// When an unanswered request expires, in unix seconds.
    var expiresAt: Int64 { machine.expiresMicros / 1_000_000 }
}
