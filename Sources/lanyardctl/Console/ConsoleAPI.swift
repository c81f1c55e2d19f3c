#if canImport(Glibc)
import Glibc
#endif
import LanyardClient
import LanyardCore
import LanyardWire
import NIOHTTP1

/// The console's calls: each is one or a few admin-socket calls made as this process's
/// uid, so lanyardd decides who may do what exactly as it does for the CLI. The console
/// adds no right; it only refuses more (a HIGH approval without a typed code).
actor ConsoleAPI {
    let admin: LanyardAdminClient
    let feed: ApprovalFeed
    /// The last `audit verify` this console ran, shown in the overview.
    private var lastVerify: JSON = .null

    /// Bounds of the overview's reads: audit pages for the decision counts, lease pages.
    static let auditPages = 20
    static let leasePages = 20
    /// How long one overview (up to 2 + `auditPages` + `leasePages` admin calls) serves every tab.
    static let overviewFor = Duration.seconds(10)
    private var overviewRead: (at: ContinuousClock.Instant, reply: Task<Reply, Never>)?

    init(admin: LanyardAdminClient, feed: ApprovalFeed) {
        self.admin = admin
        self.feed = feed
    }

    /// POST /api/decide `{"id", "approve", "for": ""|DURATION|"process", "reason", "code"}`.
    func approveOrDeny(_ body: [UInt8]) async -> Reply {
        guard let request = try? JSON.read(body, maxDepth: 2) else { return .error(.badRequest, "The request body is not a JSON object.") }
        guard case .string(let id)? = request[member: "id"], !id.isEmpty, id.utf8.count <= 64 else {
            return .error(.badRequest, "Name the approval: \"id\" (at most 64 bytes).")
        }
        guard case .bool(let approve)? = request[member: "approve"] else { return .error(.badRequest, "Say \"approve\": true or false.") }
        func text(_ name: String, limit: Int) -> String? {
            guard let value = request[member: name] else { return "" }
            guard case .string(let s) = value, s.utf8.count <= limit else { return nil }
            return s
        }
        guard let mode = text("for", limit: 16), let reason = text("reason", limit: 512), let code = text("code", limit: 32) else {
            return .error(.badRequest, "\"for\" (16 bytes), \"reason\" (512) and \"code\" (32) are strings within their bounds.")
        }
        var standing: UInt32 = 0
        var forProcess = false
        if approve {
            switch mode {
            case "", "once": break
            case "process": forProcess = true
            default:
                guard let s = ApprovalsCommand.Approve.duration(mode), s > 0 else {
                    return .error(.badRequest, "\"for\": once, process, or a duration such as 1h.")
                }
                standing = s
            }
            // Fail closed: without a code, only a request the console knows to be MEDIUM (lanyardd
            // takes a HIGH approval without a code on this call; it checks a code when there is one).
            if code.isEmpty, await feed.risk(of: id) != .medium {
                return .error(.badRequest, "Type the binding code the agent shows in its own output to approve this request "
                              + "(HIGH, or not in the console's list yet: reload the list and try again).")
            }
        }
        do {
            let a = try await decide(admin, id, approve: approve, standing: standing, reason: approve ? "" : reason,
                                                 forProcess: forProcess, code: approve ? code : "")
            return .json(.ok, JSON.object([("state", .string(a.state.name)), ("approval", a.console)]).text)
        } catch let e as LanyardError {
            return Self.refusal(e)
        } catch {
            return .error(.internalServerError, "The console could not decide: \(Inert.text(String(describing: error), limit: 512)).")
        }
    }

    /// POST /api/verify: `audit verify` now (admins), remembered for the overview.
    func verify() async -> Reply {
        var req = Lanyard_V1_AdminRequest()
        req.auditVerify = .init()
        do {
            let v = try await admin.call(req).auditVerify
            lastVerify = .object([
                ("at", .int(Int64(time(nil)))), ("ok", .bool(v.ok)), ("records", .int(Int64(v.records))),
                ("first_broken_seq", .int(Int64(v.firstBrokenSeq))), ("reason", .string(Inert.text(v.reason, limit: 1024))),
                ("head_hash", .string(Inert.text(v.headHash, limit: 128))),
            ])
            overviewRead = nil  // the next overview shows this verification
            return .json(.ok, lastVerify.text)
        } catch let e as LanyardError {
            return Self.refusal(e)
        } catch {
            return .error(.internalServerError, "The console could not verify the audit chain.")
        }
    }

    /// GET /api/overview (admins): status, agents and their active leases, decisions per
    /// agent over the last hour and day, the audit head and the last verification; one read
    /// shared by every tab (and every call while it runs) for `overviewFor`.
    func overview() async -> Reply {
        if let last = overviewRead, ContinuousClock.now - last.at < Self.overviewFor { return await last.reply.value }
        let read = Task { await readOverview() }
        overviewRead = (.now, read)
        return await read.value
    }

    private func readOverview() async -> Reply {
        do {
            var req = Lanyard_V1_AdminRequest()
            req.status = .init()
            let s = try await admin.call(req).statusResult
            req.agentsList = .init()
            let agents = try await admin.call(req).agentsList.agents
            let leases = try await activeLeases()
            let (counts, partial) = try await decisionCounts()
            var pending: [String: (hour: Int64, day: Int64)] = [:]
            let now = Int64(time(nil))
            for p in await feed.pendingCreated() {
                var c = pending[p.agent] ?? (0, 0)
                if p.createdAt >= now - 3600 { c.hour += 1 }
                c.day += 1
                pending[p.agent] = c
            }
            func shown(_ s: String) -> JSON { .string(Inert.text(s, limit: 512)) }
            let names = Set(agents.map(\.name)).union(counts.keys).union(pending.keys).sorted()
            let policy = Dictionary(agents.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
            let rows: [JSON] = names.map { name in
                let a = policy[name]
                let held = leases[name] ?? []
                let c = counts[name] ?? Counts()
                let p = pending[name] ?? (0, 0)
                func window(_ allow: Int64, _ deny: Int64, _ pending: Int64) -> JSON {
                    .object([("allow", .int(allow)), ("deny", .int(deny)), ("pending", .int(pending))])
                }
                return .object([
                    ("name", shown(name)), ("uid", .int(Int64(a?.uid ?? 0))), ("unit", shown(a?.selector.unit ?? "")),
                    ("exe", shown(a?.selector.exe ?? "")), ("in_policy", .bool(a != nil)),
                    ("leases", .array(held.map { l in .object([("service", shown(l.service)), ("expires_at", .int(l.expiresAt))]) })),
                    ("hour", window(c.hourAllow, c.hourDeny, p.hour)), ("day", window(c.dayAllow, c.dayDeny, p.day)),
                ])
            }
            return .json(.ok, JSON.object([
                ("version", shown(s.version)), ("uptime_seconds", .int(Int64(s.uptimeSeconds))),
                ("policy_version", shown(String(s.policyVersion.prefix(16)))), ("active_leases", .int(Int64(s.activeLeases))),
                ("pending_approvals", .int(Int64(s.pendingApprovals))), ("audit_head", .int(Int64(s.auditHead))),
                ("upstream_revocations", .int(Int64(s.upstreamRevocations))), ("agents", .array(rows)),
                ("counts_partial", .bool(partial)), ("verify", lastVerify),
            ]).text)
        } catch let e as LanyardError {
            return Self.refusal(e)
        } catch {
            return .error(.internalServerError, "The console could not read the overview.")
        }
    }

    private struct Counts {
        var hourAllow: Int64 = 0, hourDeny: Int64 = 0, dayAllow: Int64 = 0, dayDeny: Int64 = 0
    }

    /// Allow and deny decisions per agent over the last day, from `audit query` pages
    /// (at most `auditPages` of them; `partial` when the day holds more).
    private func decisionCounts() async throws -> ([String: Counts], partial: Bool) {
        let nowUs = Int64(time(nil)) * 1_000_000
        var counts: [String: Counts] = [:]
        var from: UInt64 = 0
        for _ in 0..<Self.auditPages {
            var req = Lanyard_V1_AdminRequest()
            req.auditQuery = .with {
                $0.fromSeq = from
                $0.limit = 500
                $0.sinceUs = nowUs - 86_400_000_000
            }
            let page = try await admin.call(req).auditQuery
            for r in page.records where !r.agent.isEmpty {
                // An agent's own call (authorize, provision, tool_call, …: no dot in the event)
                // decided allow or deny; an approver's denial counts as a deny of that agent.
                let agentCall = !r.event.contains(".") && (r.decision == "allow" || r.decision == "deny")
                let denied = r.event == "approval.deny" && r.outcome == "denied"
                guard agentCall || denied else { continue }
                var c = counts[r.agent] ?? Counts()
                let recent = r.timeUs >= nowUs - 3_600_000_000
                if agentCall && r.decision == "allow" {
                    c.dayAllow += 1
                    if recent { c.hourAllow += 1 }
                } else {
                    c.dayDeny += 1
                    if recent { c.hourDeny += 1 }
                }
                counts[r.agent] = c
            }
            if page.nextSeq == 0 { return (counts, false) }
            from = page.nextSeq
        }
        return (counts, true)
    }

    /// The active leases by agent (at most `leasePages` pages).
    private func activeLeases() async throws -> [String: [Lanyard_V1_LeaseInfo]] {
        var byAgent: [String: [Lanyard_V1_LeaseInfo]] = [:]
        var token = ""
        for _ in 0..<Self.leasePages {
            var req = Lanyard_V1_AdminRequest()
            req.leasesList = .with { $0.pageToken = token }
            let page = try await admin.call(req).leasesList
            for l in page.leases where l.state == "active" { byAgent[l.agent, default: []].append(l) }
            token = page.nextPageToken
            if token.isEmpty { break }
        }
        return byAgent
    }

    /// lanyardd's answer as the page shows it: its sentence, and 403 when it refused the uid.
    static func refusal(_ e: LanyardError) -> Reply {
        let status: HTTPResponseStatus = switch e.code {
        case .permissionDenied, .unauthenticated: .forbidden
        case .unavailable: .badGateway
        case .notFound: .notFound
        default: .conflict
        }
        return .error(status, "lanyardd refused: \(e.code.name): \(Inert.text(e.message, limit: 1024))")
    }
}
