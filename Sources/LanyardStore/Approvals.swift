import LanyardCore

/// An approval as stored: its state machine plus what the approver is shown.
public struct StoredApproval: Sendable, Equatable {
    public var id: String
    public var machine: ApprovalMachine
    public var bindingCode: String
    public var agentID: String
    public var agent: String
    public var uid: UInt32
    public var pid: Int32
    public var exe: String
    public var capabilities: [String]
    public var resource: String
    public var args: [String: String]
    public var amount: String
    public var reason: String
    public var createdMicros: Int64
    public var decidedReason: String
    /// The systemd unit the requesting process ran in (innermost of its cgroup); "" when none or not recorded.
    public var unit: String

    public init(id: String, machine: ApprovalMachine, bindingCode: String, agentID: String, agent: String, uid: UInt32, pid: Int32,
                exe: String, capabilities: [String], resource: String, args: [String: String], amount: String, reason: String,
                createdMicros: Int64, decidedReason: String, unit: String = "") {
        self.id = id
        self.machine = machine
        self.bindingCode = bindingCode
        self.agentID = agentID
        self.agent = agent
        self.uid = uid
        self.pid = pid
        self.exe = exe
        self.capabilities = capabilities
        self.resource = resource
        self.args = args
        self.amount = amount
        self.reason = reason
        self.createdMicros = createdMicros
        self.decidedReason = decidedReason
        self.unit = unit
    }
}

/// Approvals and standing approvals (DESIGN.md section 6).
extension Store {
    package func insertApproval(_ a: StoredApproval) -> Mutation {
        { db in
            try db.prepare("""
                INSERT INTO approvals(id, digest, binding_code, agent_id, agent, uid, pid, exe, capabilities, resource, args, amount,
                                      risk, reason, state, created_us, expires_us, approvers, quorum, timeout_us, unit)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?)
                """)
                .bind(.text(a.id), .text(a.machine.digest), .text(a.bindingCode), .text(a.agentID), .text(a.agent),
                      .int(Int64(a.uid)), .int(Int64(a.pid)), .text(a.exe), .text(a.capabilities.joined(separator: ",")),
                      .text(a.resource), .text(ApprovalArgs.encode(a.args)), .text(a.amount), .int(Int64(a.machine.risk.rawValue)), .text(a.reason),
                      .text(a.machine.state.rawValue), .int(a.createdMicros), .int(a.machine.expiresMicros),
                      .int(Int64(a.machine.quorum)), .int(a.machine.timeoutMicros), a.unit.isEmpty ? .null : .text(a.unit))
                .run()
            try self.authenticate(db, .approvals, key: [.text(a.id)])
        }
    }

    /// Saves a decision. `from` guards against a concurrent decision: the row must still
    /// be in the state the decision was made from, else the change fails.
    package func saveApproval(_ id: String, _ m: ApprovalMachine, from previous: ApprovalMachine.State, decidedReason: String) -> Mutation {
        { db in
            let (changed, tampered) = try self.update(
                db, .approvals, set: "state = ?, approvers = ?, expires_us = ?, decided_reason = ?",
                [.text(m.state.rawValue), .text(m.approvers.map(String.init).joined(separator: ",")), .int(m.expiresMicros), .text(decidedReason)],
                where: "id = ? AND state = ?", [.text(id), .text(previous.rawValue)])
            guard tampered == 0 else { throw SealError(what: "approval \(id)", remedy: Self.approvalRemedy) }
            guard changed == 1 else { throw StoreConflict("approval \(id) was decided or used concurrently; look at it again") }
        }
    }

    /// The approval, if it exists; throws `SealError` if its row does not authenticate.
    public func approval(id: String) throws -> StoredApproval? {
        try read { db in
            try db.prepare("SELECT \(AuthenticatedTable.approvals.selection) FROM approvals WHERE id = ?").bind(.text(id))
                .one { try authentic(.approvals, $0, remedy: Self.approvalRemedy, Self.approval) }
        }
    }

    /// Live pending approvals (or all, when `includeDecided`), newest first. Rows that do not
    /// authenticate are left out (and logged): an approver is never shown a forged request.
    /// Pending ones come a fair share at a time: every agent's newest, then every agent's
    /// next, ... — one agent's flood of large requests never pushes another agent's request
    /// out of a reply that fits in a frame.
    public func approvals(includeDecided: Bool, nowMicros: Int64, limit: Int = 200) throws -> [StoredApproval] {
        try approvals(where: includeDecided ? "1" : "state = 'pending' AND expires_us > ?", includeDecided ? [] : [.int(nowMicros)],
                      order: includeDecided ? "created_us DESC" : "row_number() OVER (PARTITION BY agent_id ORDER BY created_us DESC), created_us DESC",
                      limit: limit)
    }

    /// The live approval of `agentID` for the operation with `digest` (approved and unused
    /// first, else pending), if any: what a retried MCP tool call finds instead of a new one.
    public func liveApproval(agentID: String, digest: String, nowMicros: Int64) throws -> StoredApproval? {
        try approvals(where: "agent_id = ? AND digest = ? AND state IN ('pending', 'approved') AND expires_us > ?",
                      [.text(agentID), .text(digest), .int(nowMicros)], order: "state = 'approved' DESC, created_us DESC", limit: 1).first
    }

    /// Pending or approved approvals whose expiry has passed but whose row does not say so yet.
    public func approvalsToExpire(nowMicros: Int64, limit: Int = 500) throws -> [StoredApproval] {
        try approvals(where: "state IN ('pending', 'approved') AND expires_us <= ?", [.int(nowMicros)], order: "expires_us", limit: limit)
    }

    private func approvals(where condition: String, _ binds: [SQLValue], order: String, limit: Int) throws -> [StoredApproval] {
        try read { db in
            let s = try db.prepare("SELECT \(AuthenticatedTable.approvals.selection) FROM approvals WHERE \(condition) ORDER BY \(order) LIMIT \(limit)")
            for (i, b) in binds.enumerated() { try s.bindAt(Int32(i + 1), b) }
            var out: [StoredApproval] = []
            try s.rows { row in
                if rows.isAuthentic(.approvals, row) { out.append(Self.approval(row)) } else { reportTampered(.approvals, row) }
                return true
            }
            return out
        }
    }

    package func insertStanding(agentID: String, capability: String, resource: String, untilMicros: Int64, approver: String, approvalID: String) -> Mutation {
        { db in
            try db.prepare("""
                INSERT INTO standing_approvals(agent_id, capability, resource, until_us, approver, approval_id) VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT(agent_id, capability, resource) DO UPDATE SET until_us = excluded.until_us, approver = excluded.approver, approval_id = excluded.approval_id
                """)
                .bind(.text(agentID), .text(capability), .text(resource), .int(untilMicros), .text(approver), .text(approvalID)).run()
            try self.authenticate(db, .standingApprovals, key: [.text(agentID), .text(capability), .text(resource)])
        }
    }

    /// A standing approval covering (agent, capability, resource) at `now`, if any. One
    /// that does not authenticate covers nothing.
    public func standingApproval(agentID: String, capability: String, resource: String, nowMicros: Int64) throws -> (approver: String, untilMicros: Int64)? {
        try read { db in
            try db.prepare("SELECT \(AuthenticatedTable.standingApprovals.selection) FROM standing_approvals WHERE agent_id = ? AND capability = ? AND resource = ? AND until_us > ?")
                .bind(.text(agentID), .text(capability), .text(resource), .int(nowMicros))
                .one { row -> (approver: String, untilMicros: Int64)? in
                    guard rows.isAuthentic(.standingApprovals, row) else {
                        reportTampered(.standingApprovals, row)
                        return nil
                    }
                    return (row.text(4), row.int(3))
                }.flatMap { $0 }
        }
    }

    static let approvalRemedy = "the request must be made (and approved) again"

    private static func approval(_ s: Statement) -> StoredApproval {
        let machine = ApprovalMachine(state: ApprovalMachine.State(rawValue: s.text(14)) ?? .denied,
                                      risk: RiskLevel(rawValue: Int(s.int(12))) ?? .high, digest: s.text(1),
                                      requesterUID: UInt32(truncatingIfNeeded: s.int(5)), quorum: Int(s.int(18)),
                                      approvers: s.text(17).split(separator: ",").compactMap { UInt32($0) },
                                      expiresMicros: s.int(16), timeoutMicros: s.int(19))
        return StoredApproval(id: s.text(0), machine: machine, bindingCode: s.text(2), agentID: s.text(3), agent: s.text(4),
                              uid: UInt32(truncatingIfNeeded: s.int(5)), pid: Int32(truncatingIfNeeded: s.int(6)), exe: s.text(7),
                              capabilities: s.text(8).split(separator: ",").map(String.init), resource: s.text(9),
                              args: ApprovalArgs.decode(s.text(10)) ?? [:], amount: s.text(11), reason: s.text(13), createdMicros: s.int(15),
                              decidedReason: s.text(20), unit: s.optionalText(Int32(AuthenticatedTable.approvals.columns.count)) ?? "")
    }
}

/// Approval args as stored: each key and value as `<UTF-8 length>:<bytes>`, keys sorted,
/// so any text (newlines, `=`, NUL) comes back exactly as the digest covered it.
enum ApprovalArgs {
    static func encode(_ args: [String: String]) -> String {
        var out = ""
        for key in args.keys.sorted() {
            for s in [key, args[key]!] { out += "\(s.utf8.count):\(s)" }
        }
        return out
    }

    /// Nil when `text` is not a well-formed encoding.
    static func decode(_ text: String) -> [String: String]? {
        var bytes = Substring(text).utf8[...]
        func next() -> String? {
            guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")),
                  let n = Int(String(decoding: bytes[..<colon], as: UTF8.self)), n >= 0 else { return nil }
            let start = bytes.index(after: colon)
            guard bytes.distance(from: start, to: bytes.endIndex) >= n else { return nil }
            let end = bytes.index(start, offsetBy: n)
            defer { bytes = bytes[end...] }
            return String(decoding: bytes[start..<end], as: UTF8.self)
        }
        var out: [String: String] = [:]
        while !bytes.isEmpty {
            guard let key = next(), let value = next(), out[key] == nil else { return nil }
            out[key] = value
        }
        return out
    }
}

/// A change lost a race with another one (a double use of one approval, say).
public struct StoreConflict: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
