/// One audit record: a decision, who asked, what, and the chain link
/// (DESIGN.md section 9). Never holds a secret, token or key.
public struct AuditRecord: Sendable, Equatable {
    public var seq: UInt64 = 0
    public var timeMicros: Int64 = 0
    public var event: String
    public var agentID: String = ""
    public var agent: String = ""
    public var uid: Int64?
    public var gid: Int64?
    public var pid: Int64?
    public var capability: String = ""
    public var resource: String = ""
    public var decision: String = ""
    public var reason: String = ""
    public var outcome: String = ""
    public var leaseID: String = ""
    public var approvalID: String = ""
    public var approver: String = ""
    public var policyVersion: String = ""
    /// An MCP tool call (event `tool_call`): the mcp_servers entry, the tool, and the
    /// SHA-256 (hex) of its arguments' canonical JSON. Empty for every other record.
    public var mcpServer: String = ""
    public var mcpTool: String = ""
    public var argsDigest: String = ""
    /// The decision's stable `ReasonCode` name; empty for records that decide nothing.
    public var reasonCode: String = ""
    public var prevHash: String = ""
    public var hash: String = ""

    public init(event: String) { self.event = event }

    /// The most bytes any text field holds: with 18 text fields a record always fits in
    /// one reply page, whatever an agent sent.
    public static let maxFieldBytes = 2048

    /// This record with every text field cut to `maxFieldBytes` (marked `…[+N bytes]`).
    public var capped: AuditRecord {
        var r = self
        for field in [\AuditRecord.event, \.agentID, \.agent, \.capability, \.resource, \.decision, \.reason, \.outcome,
                      \.leaseID, \.approvalID, \.approver, \.policyVersion, \.mcpServer, \.mcpTool, \.argsDigest, \.reasonCode, \.prevHash, \.hash] {
            r[keyPath: field] = Inert.capped(r[keyPath: field], limit: Self.maxFieldBytes)
        }
        return r
    }

    /// The hash of the record before the first one.
    public static let genesisHash = String(repeating: "0", count: 64)

    /// The bytes the chain hash covers: every field but `hash`, each length-prefixed so
    /// no two different records encode alike.
    public var canonicalBytes: [UInt8] {
        var out: [UInt8] = Array("lanyard-audit-v1\n".utf8)
        func put(_ name: String, _ value: String) {
            out += Array(name.utf8)
            out += Array("=\(value.utf8.count):".utf8)
            out += Array(value.utf8)
            out.append(0x0A)
        }
        put("seq", String(seq))
        put("time", String(timeMicros))
        put("event", event)
        put("agent_id", agentID)
        put("agent", agent)
        put("uid", uid.map(String.init) ?? "")
        put("gid", gid.map(String.init) ?? "")
        put("pid", pid.map(String.init) ?? "")
        put("capability", capability)
        put("resource", resource)
        put("decision", decision)
        put("reason", reason)
        put("outcome", outcome)
        put("lease_id", leaseID)
        put("approval_id", approvalID)
        put("approver", approver)
        put("policy_version", policyVersion)
        // Only a tool call's record has these: every record written before them hashes as it did.
        if !(mcpServer.isEmpty && mcpTool.isEmpty && argsDigest.isEmpty) {
            put("mcp_server", mcpServer)
            put("mcp_tool", mcpTool)
            put("args_digest", argsDigest)
        }
        // Likewise: only records written since reason codes carry one.
        if !reasonCode.isEmpty { put("reason_code", reasonCode) }
        put("prev_hash", prevHash)
        return out
    }
}
