import LanyardCrypto

/// A table whose rows carry a MAC (column `mac`) over `columns`: every column whose change
/// matters, primary key first. Reads select `columns, mac` in this order.
package struct AuthenticatedTable: Sendable, Equatable {
    package let name: String
    package let columns: [String]
    /// The primary key columns (the first ones of `columns`).
    package let key: [String]
    /// Columns deliberately left out of the MAC: informational only, never decide anything.
    package let unauthenticated: [String]
    /// Columns added after rows were first MAC'd, selected after `columns`: each is in the MAC
    /// (with its place) when not NULL, so rows written before it keep their MACs, and a value
    /// set, changed or cleared at rest fails the check.
    package let added: [String]

    init(_ name: String, key: [String], columns: [String], added: [String] = [], unauthenticated: [String] = []) {
        precondition(Array(columns.prefix(key.count)) == key)
        self.name = name
        self.key = key
        self.columns = columns
        self.added = added
        self.unauthenticated = unauthenticated
    }

    /// `columns, added, mac`, for a SELECT.
    var selection: String { (columns + added + ["mac"]).joined(separator: ", ") }
    /// `selection` for the migration that introduces MACs, which runs before the `added`
    /// columns exist: they are NULL, as in every row written before them.
    var selectionBeforeAdded: String { (columns + added.map { _ in "NULL" } + ["mac"]).joined(separator: ", ") }
    var keyMatch: String { key.map { "\($0) = ?" }.joined(separator: " AND ") }
    var macColumn: Int32 { Int32(columns.count + added.count) }

    /// An agent's stable id: swapping two would hand one agent the other's approvals and leases.
    static let agents = AuthenticatedTable("agents", key: ["name"], columns: ["name", "id", "created_us"])
    static let approvals = AuthenticatedTable("approvals", key: ["id"], columns: [
        "id", "digest", "binding_code", "agent_id", "agent", "uid", "pid", "exe", "capabilities", "resource", "args", "amount",
        "risk", "reason", "state", "created_us", "expires_us", "approvers", "quorum", "timeout_us", "decided_reason",
    ], added: ["unit"])
    static let standingApprovals = AuthenticatedTable("standing_approvals", key: ["agent_id", "capability", "resource"], columns: [
        "agent_id", "capability", "resource", "until_us", "approver", "approval_id",
    ])
    static let leases = AuthenticatedTable("leases", key: ["id"], columns: [
        "id", "agent_id", "agent", "service", "kind", "scope", "version", "issued_us", "expires_us", "state", "single_use",
        "secret_hash", "ended_us", "ended_reason", "upstream", "upstream_revoked_us",
    ], added: ["process_pid", "process_start"])
    static let upstreamRevocations = AuthenticatedTable("upstream_revocations", key: ["lease_id"], columns: [
        "lease_id", "service", "upstream", "queued_us", "attempts", "next_us",
    ], unauthenticated: ["last_error"])
    static let secrets = AuthenticatedTable("secrets", key: ["service", "version"], columns: ["service", "version", "sealed", "created_us"])
    /// The current secret version of each static service: deleting the newest version row
    /// cannot bring an older value back.
    static let secretHeads = AuthenticatedTable("secret_heads", key: ["service"], columns: ["service", "version"])
    static let signingKeys = AuthenticatedTable("signing_keys", key: ["kid"], columns: [
        "kid", "purpose", "alg", "public_key", "sealed_private", "created_us", "retired_us",
    ])
    static let serviceVersions = AuthenticatedTable("service_versions", key: ["service"], columns: ["service", "version", "rotated_us"])
    static let issuedIdentities = AuthenticatedTable("issued_identities", key: ["jti"], columns: [
        "jti", "agent_id", "audience", "expires_us", "revoked_us",
    ])

    /// A grant's use in its period: edited down, it would give an agent more.
    static let limitCounters = AuthenticatedTable("limit_counters", key: ["agent", "capability", "kind"], columns: [
        "agent", "capability", "kind", "period_start", "used",
    ])

    /// The last record of the audit chain, updated in every commit: records appended,
    /// removed or rewritten at rest leave the chain's end different from it.
    /// It also holds the grant counters' digest (`CountersDigest`), so they move with the chain.
    static let auditHead = AuthenticatedTable("audit_head", key: ["id"], columns: ["id", "seq", "hash"], added: ["limits_digest"])

    package static let all: [AuthenticatedTable] = [
        .auditHead, .agents, .approvals, .standingApprovals, .leases, .upstreamRevocations, .secrets, .secretHeads, .signingKeys, .serviceVersions,
        .issuedIdentities, .limitCounters,
    ]
}

/// MACs for stored rows and the audit checkpoint, in the manner of Vault's storage
/// barrier: HMAC-SHA256 under a key derived (HKDF) from the master key, over a domain
/// (the table), then each value length-prefixed with its SQLite type. A row edited,
/// moved to another key, or inserted without the master key does not authenticate.
package struct RowAuthenticator: Sendable {
    static let info = "lanyard/v1 stored-row authentication"
    private let key: [UInt8]

    package init(masterKey: [UInt8]) throws {
        key = try HKDF.sha256(key: masterKey, info: Self.info)
    }

    /// The MAC of columns `0..<table.columns.count` of the current row of `row`.
    func mac(_ table: AuthenticatedTable, _ row: Statement) -> [UInt8] {
        var bytes = Self.header(table.name)
        for col in 0..<Int32(table.columns.count) { row.appendCanonical(col, to: &bytes) }
        for (i, col) in (Int32(table.columns.count)..<table.macColumn).enumerated() where !row.isNull(col) {
            bytes += Array("+\(i)".utf8)
            row.appendCanonical(col, to: &bytes)
        }
        return HMAC.sha256(key: key, message: bytes)
    }

    /// Whether the current row of `row` (selected as `table.selection`) carries its MAC.
    func isAuthentic(_ table: AuthenticatedTable, _ row: Statement) -> Bool {
        ConstantTime.equal(row.blob(table.macColumn), mac(table, row))
    }

    /// (Re)computes the MAC of `table`'s row with primary key `key`, after writing it.
    /// `beforeAdded`: inside a migration that runs before the `added` columns exist.
    func authenticate(_ db: SQLiteConnection, _ table: AuthenticatedTable, key: [SQLValue], beforeAdded: Bool = false) throws {
        let columns = beforeAdded ? table.selectionBeforeAdded : table.selection
        let select = try db.prepare("SELECT \(columns), rowid FROM \(table.name) WHERE \(table.keyMatch)")
        try select.bind(key)
        guard let (rowid, mac) = try select.one({ ($0.int(table.macColumn + 1), self.mac(table, $0)) }) else {
            throw StoreError("the \(table.name) row just written is missing")
        }
        try db.prepare("UPDATE \(table.name) SET mac = ? WHERE rowid = ?").bind(.blob(mac), .int(rowid)).run()
    }

    /// The MAC of `fields` under `domain` (for records kept outside the database).
    func mac(domain: String, _ fields: [String]) -> [UInt8] {
        var bytes = Self.header(domain)
        for f in fields {
            bytes.append(UInt8(ascii: "t"))
            bytes += withUnsafeBytes(of: UInt64(f.utf8.count).bigEndian) { Array($0) }
            bytes += Array(f.utf8)
        }
        return HMAC.sha256(key: key, message: bytes)
    }

    private static func header(_ domain: String) -> [UInt8] {
        Array("lanyard-row-v1".utf8) + withUnsafeBytes(of: UInt64(domain.utf8.count).bigEndian) { Array($0) } + Array(domain.utf8)
    }
}
