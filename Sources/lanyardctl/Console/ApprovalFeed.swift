import LanyardClient
import LanyardCore
import LanyardWire

/// The approvals as the console shows them, kept current by the long poll `approvals
/// watch` uses (ApprovalsList with `wait_ms` and `since_version`) and pushed to every
/// open event stream. One feed per console, whatever the number of tabs.
actor ApprovalFeed {
    private let admin: LanyardAdminClient
    /// The state as JSON (`/api/state` and each `state` event).
    private(set) var state = JSON.object([("reachable", .bool(false)), ("problem", .string("connecting to lanyardd…"))]).text
    private var pending: [Lanyard_V1_Approval] = []
    private var subscribers: [Int: AsyncStream<String>.Continuation] = [:]
    private var nextID = 0

    /// How long one long poll waits (below the console's idle timeout, so each stream gets
    /// a keep-alive in time), and how long to wait before asking again after a failure.
    static let pollMs: UInt32 = 20_000
    static let retry = Duration.seconds(2)
    /// After a refusal (this uid is no approver or admin): lanyardd audits each one, so
    /// ask again only this often (a policy reload may have made the uid one).
    static let retryRefused = Duration.seconds(30)

    init(admin: LanyardAdminClient) { self.admin = admin }

    /// A stream of server-sent-event chunks, starting with the state now. A slow reader
    /// keeps only the newest few (each is the whole state).
    func subscribe() -> (Int, AsyncStream<String>) {
        let (stream, continuation) = AsyncStream.makeStream(of: String.self, bufferingPolicy: .bufferingNewest(4))
        nextID += 1
        subscribers[nextID] = continuation
        continuation.yield(Self.event("state", state))
        return (nextID, stream)
    }

    func unsubscribe(_ id: Int) { subscribers.removeValue(forKey: id)?.finish() }

    /// The risk of a pending approval, as last listed.
    func risk(of id: String) -> Lanyard_V1_RiskLevel? { pending.first { $0.approvalID == id }?.risk }

    /// The pending approvals of each agent (for the overview's chart), by creation time.
    func pendingCreated() -> [(agent: String, createdAt: Int64)] { pending.map { ($0.agent, $0.createdAt) } }

    /// Polls until the task is cancelled.
    func run() async {
        var version: UInt64 = 0
        var me: Lanyard_V1_WhoamiResponse?
        while !Task.isCancelled {
            do {
                if me == nil {
                    var req = Lanyard_V1_AdminRequest()
                    req.whoami = .init()
                    me = try await admin.call(req).whoami
                }
                let waiting = try await list(all: false, wait: version == 0 ? 0 : Self.pollMs, since: version)
                let all = try await list(all: true, wait: 0, since: 0)
                version = waiting.version
                pending = waiting.approvals
                let history = all.approvals.filter { $0.state != .pending }
                publish(Self.stateJSON(me: me, pending: waiting.approvals, history: history, omitted: waiting.omitted, problem: nil, reachable: true))
            } catch let e as LanyardError {
                version = 0
                pending = []
                let reachable = e.code != .unavailable
                me = reachable ? me : nil
                let problem = reachable
                    ? "lanyardd refused: \(e.code.name): \(Inert.text(e.message, limit: 1024))"
                    : "lanyardd is unreachable (\(Inert.text(e.message, limit: 1024))). The console keeps trying; start lanyardd (systemctl start lanyardd)."
                let changed = publish(Self.stateJSON(me: me, pending: [], history: [], omitted: 0, problem: problem, reachable: reachable))
                if changed, !reachable { broadcast(Self.event("unreachable", JSON.object([("problem", .string(problem))]).text)) }
                if reachable {
                    // Keep-alives while waiting, so the event streams outlive the idle timeout.
                    for _ in 0..<Int(Self.retryRefused / Self.retry) where !Task.isCancelled {
                        try? await Task.sleep(for: Self.retry)
                        broadcast(": keep-alive\n\n")
                    }
                    me = nil  // roles may have changed with the policy
                } else {
                    try? await Task.sleep(for: Self.retry)
                }
            } catch {
                try? await Task.sleep(for: Self.retry)
            }
        }
        for c in subscribers.values { c.finish() }
    }

    private func list(all: Bool, wait: UInt32, since: UInt64) async throws -> Lanyard_V1_ApprovalsListResponse {
        var req = Lanyard_V1_AdminRequest()
        req.approvalsList = .with {
            $0.includeDecided = all
            $0.waitMs = wait
            $0.sinceVersion = since
        }
        return try await admin.call(req).approvalsList
    }

    /// Sends the state when it changed (and says so), else a keep-alive comment.
    @discardableResult
    private func publish(_ new: String) -> Bool {
        guard new != state else {
            broadcast(": keep-alive\n\n")
            return false
        }
        state = new
        broadcast(Self.event("state", new))
        return true
    }

    private func broadcast(_ chunk: String) {
        for c in subscribers.values { c.yield(chunk) }
    }

    static func event(_ name: String, _ data: String) -> String { "event: \(name)\ndata: \(data)\n\n" }

    static func stateJSON(me: Lanyard_V1_WhoamiResponse?, pending: [Lanyard_V1_Approval], history: [Lanyard_V1_Approval], omitted: UInt32,
                          problem: String?, reachable: Bool) -> String {
        var fields: [(String, JSON)] = [("reachable", .bool(reachable)), ("problem", .string(problem ?? ""))]
        if let me {
            fields.append(("me", .object([("uid", .int(Int64(me.uid))), ("admin", .bool(me.admin)), ("approver", .bool(me.approver))])))
        }
        fields += [("pending", .array(pending.map(\.console))), ("history", .array(history.prefix(50).map(\.console))),
                   ("omitted", .int(Int64(omitted)))]
        return JSON.object(fields).text
    }
}

extension Lanyard_V1_Approval {
    /// An approval for the page. Everything an agent chose (resource, args, amount unit,
    /// its executable's path, the reason that may quote them) goes through `Inert.text`
    /// first: controls and escapes visible, long strings cut with a marker. The page then
    /// sets it as text, never as HTML.
    var console: JSON {
        func shown(_ s: String) -> JSON { .string(Inert.text(s, limit: 4096)) }
        return .object([
            ("id", shown(approvalID)), ("state", .string(state.name)), ("agent", shown(agent)), ("uid", .int(Int64(uid))),
            ("pid", .int(Int64(pid))), ("exe", shown(exe)), ("unit", shown(unit)), ("capabilities", .array(capabilities.map(shown))),
            ("resource", shown(resource)),
            ("args", .array(args.sorted { $0.key < $1.key }.map { .array([shown($0.key), shown($0.value)]) })),
            ("amount", hasAmount ? shown("\(amount.value) \(amount.unit)") : .string("")),
            ("risk", .string(risk.name.uppercased())), ("reason", shown(reason)), ("code", shown(bindingCode)),
            ("created_at", .int(createdAt)), ("expires_at", .int(expiresAt)), ("approvers", .array(approvers.map(shown))),
        ])
    }
}
