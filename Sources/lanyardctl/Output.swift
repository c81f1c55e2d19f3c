#if canImport(Glibc)
import Glibc
#endif
import LanyardClient
import LanyardCore
import LanyardWire

/// RFC 3339 UTC with microseconds, e.g. 2026-11-29T09:10:23.123456Z.
func rfc3339(micros: Int64) -> String {
    var seconds = time_t(micros / 1_000_000)
    let frac = Int(micros % 1_000_000)
    var tm = tm()
    gmtime_r(&seconds, &tm)
    func pad(_ n: Int32, _ w: Int) -> String { let s = String(n); return String(repeating: "0", count: max(0, w - s.count)) + s }
    let f = String(frac)
    return "\(pad(tm.tm_year + 1900, 4))-\(pad(tm.tm_mon + 1, 2))-\(pad(tm.tm_mday, 2))T\(pad(tm.tm_hour, 2)):\(pad(tm.tm_min, 2)):\(pad(tm.tm_sec, 2)).\(String(repeating: "0", count: 6 - f.count))\(f)Z"
}

// Every string from lanyardd is shown through these (invariant 14): an agent, or any
// other local user the daemon audited, chose much of it. `--json` output is escaped by
// `JSON` instead and keeps the exact data.
extension String {
    /// Prose as a human may see it (`Inert.text`).
    var shown: String { Inert.text(self) }
    /// Several lines, each shown (`Inert.text`), kept apart.
    var shownLines: String { split(separator: "\n", omittingEmptySubsequences: false).map { Inert.text(String($0), limit: 4096) }.joined(separator: "\n") }
    /// One field among others on a line (`Inert.field`).
    var field: String { Inert.field(self) }
    /// A value that may hold anything, between quotes (`Inert.quoted`).
    var quoted: String { Inert.quoted(self) }
}

extension Sequence<String> {
    /// Fields joined by `separator`, each shown as a field.
    func fields(_ separator: String = ", ") -> String { map(\.field).joined(separator: separator) }
}

/// Ends the command: `Lanyardctl.main` prints "lanyardctl: <message>" on stderr and
/// exits with `code` once the connections are closed.
/// `--arg key=value` options as a map.
func keyValues(_ args: [String]) throws -> [String: String] {
    var map: [String: String] = [:]
    for a in args {
        guard let eq = a.firstIndex(of: "=") else { throw Failure("--arg '\(a)' must be key=value") }
        map[String(a[..<eq])] = String(a[a.index(after: eq)...])
    }
    return map
}

struct Failure: Error {
    var message: String
    var code: Int32 = 1

    init(_ message: String, code: Int32 = 1) {
        self.message = message
        self.code = code
    }
}

extension Lanyard_V1_Decision {
    var name: String {
        switch self {
        case .allow: "ALLOW"
        case .deny: "DENY"
        case .pending: "PENDING"
        default: "UNSPECIFIED"
        }
    }
}

extension Lanyard_V1_RiskLevel {
    var name: String {
        switch self {
        case .low: "low"
        case .medium: "medium"
        case .high: "high"
        default: "unspecified"
        }
    }
}

extension Lanyard_V1_AuditRecord {
    /// The export shape (DESIGN.md section 13): section 9's field names, `time` in RFC 3339.
    var json: JSON {
        .object([
            ("seq", .int(Int64(seq))), ("time", .string(rfc3339(micros: timeUs))), ("event", .string(event)),
            ("agent_id", .string(agentID)), ("agent", .string(agent)), ("uid", .int(Int64(uid))), ("gid", .int(Int64(gid))),
            ("pid", .int(Int64(pid))), ("capability", .string(capability)), ("resource", .string(resource)),
            ("decision", .string(decision)), ("reason", .string(reason)), ("outcome", .string(outcome)),
            ("lease_id", .string(leaseID)), ("approval_id", .string(approvalID)), ("approver", .string(approver)),
            ("policy_version", .string(policyVersion)), ("prev_hash", .string(prevHash)), ("hash", .string(hash)),
            ("mcp_server", .string(mcpServer)), ("mcp_tool", .string(mcpTool)), ("args_digest", .string(argsDigest)),
            ("reason_code", .string(reasonCode)),
        ])
    }
}

extension Lanyard_V1_DecisionPath {
    var json: JSON {
        .object([("grant", .string(grant)), ("risk", .string(risk.name)), ("risk_source", .string(riskSource)),
                 ("catalog_risk", .string(catalogRisk.name))])
    }

    /// "grant X (HIGH, raised by the grant from LOW)" or "grant X (LOW, from the catalog)".
    var text: String {
        "grant \(grant.field) (\(risk.name), " + (riskSource == "grant" ? "raised by the grant from \(catalogRisk.name))" : "from the catalog)")
    }
}

extension Lanyard_V1_Identity {
    var json: JSON {
        .object([
            ("authenticated", .bool(authenticated)), ("agent", .string(agent)), ("agent_id", .string(agentID)),
            ("uri", .string(uri)), ("uid", .int(Int64(uid))), ("gid", .int(Int64(gid))), ("pid", .int(Int64(pid))),
            ("exe", .string(exe)), ("unit", .string(unit)),
            ("grants", .array(grants.map { .object([("capability", .string($0.capability)), ("risk", .string($0.risk.name))]) })),
        ])
    }
}
