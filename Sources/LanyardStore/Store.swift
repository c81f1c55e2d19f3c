import LanyardCore
import LanyardCrypto
import Logging
import NIOConcurrencyHelpers

/// Lanyard's SQLite state (WAL, `synchronous=FULL`) in the state directory.
/// Writes that must be durable before a reply go through `audit` (group commit);
/// reads use a separate connection.
public final class Store: Sendable {
    public let path: String
    public let directory: String
    public let audit: AuditLog
    private let reader: NIOLockedValueBox<SQLiteConnectionBox>
    /// Seals secrets and signing keys; nil when the daemon runs without a master key.
    let sealer: AESGCM?
    /// The current signing key of each purpose, opened once (rotation replaces it).
    let openedSigningKeys = NIOLockedValueBox<[String: (kid: String, key: Ed25519PrivateKey)]>([:])
    let clock: any WallClock

    public init(directory: String, sealer: AESGCM? = nil, clock: any WallClock, logger: Logger) throws(StoreError) {
        self.sealer = sealer
        self.clock = clock
        self.directory = directory
        path = directory + "/lanyard.db"
        let setup = try SQLiteConnection(path: path)
        try setup.exec("PRAGMA journal_mode=WAL")
        try setup.exec("PRAGMA synchronous=FULL")
        try Schema.migrate(setup)
        reader = NIOLockedValueBox(SQLiteConnectionBox(try Self.open(path)))
        audit = try AuditLog(connection: try Self.open(path), clock: clock, logger: logger)
    }

    static func open(_ path: String) throws(StoreError) -> SQLiteConnection {
        let c = try SQLiteConnection(path: path)
        try c.exec("PRAGMA journal_mode=WAL")
        try c.exec("PRAGMA synchronous=FULL")
        try c.exec("PRAGMA foreign_keys=ON")
        return c
    }

    /// Runs a read (or a rare out-of-band write) on the reader connection.
    package func read<T>(_ body: (SQLiteConnection) throws -> T) throws -> T {
        try reader.withLockedValue { box in try body(box.connection) }
    }

    /// Records a policy version in the history and returns the stable ids of `agentNames`,
    /// assigning new UUIDs to agents seen for the first time.
    public func recordPolicy(version: String, path policyPath: String, source: String, agentNames: [String], nowMicros: Int64) throws -> [String: String] {
        try read { db in
            try db.transaction {
                try db.prepare("INSERT OR IGNORE INTO policy_versions(version, first_loaded_us, path, source) VALUES (?, ?, ?, ?)")
                    .bind(.text(version), .int(nowMicros), .text(policyPath), .text(source)).run()
                var ids: [String: String] = [:]
                let select = try db.prepare("SELECT name, id FROM agents")
                try select.rows { ids[$0.text(0)] = $0.text(1); return true }
                for name in agentNames where ids[name] == nil {
                    let id = SecureRandom.uuid()
                    try db.prepare("INSERT INTO agents(name, id, created_us) VALUES (?, ?, ?)")
                        .bind(.text(name), .text(id), .int(nowMicros)).run()
                    ids[name] = id
                }
                return ids.filter { agentNames.contains($0.key) }
            }
        }
    }

    /// Live PENDING approvals (not yet expired), of one agent or all. `db`: a write
    /// transaction's connection (to check a bound atomically with an insert); else the reader.
    package func countPendingApprovals(agentID: String? = nil, nowMicros: Int64, on db: SQLiteConnection? = nil) throws -> UInt64 {
        try count("approvals WHERE state = 'pending' AND expires_us > ?", agentID: agentID, nowMicros: nowMicros, on: db)
    }

    /// Active, unexpired leases, of one agent or all (`db` as for `countPendingApprovals`).
    package func countActiveLeases(agentID: String? = nil, nowMicros: Int64, on db: SQLiteConnection? = nil) throws -> UInt64 {
        try count("leases WHERE state = 'active' AND expires_us > ?", agentID: agentID, nowMicros: nowMicros, on: db)
    }

    private func count(_ from: String, agentID: String?, nowMicros: Int64, on db: SQLiteConnection?) throws -> UInt64 {
        let sql = "SELECT count(*) FROM " + from + (agentID == nil ? "" : " AND agent_id = ?")
        func run(_ db: SQLiteConnection) throws -> UInt64 {
            let s = try db.prepare(sql).bind(.int(nowMicros))
            if let agentID { try s.bindAt(2, .text(agentID)) }
            return UInt64(try s.one { $0.int(0) } ?? 0)
        }
        if let db { return try run(db) }
        return try read(run)
    }
}

/// SQLiteConnection is not Sendable; the lock that holds this box serializes its use.
struct SQLiteConnectionBox: @unchecked Sendable {
    let connection: SQLiteConnection
    init(_ connection: SQLiteConnection) { self.connection = connection }
}
