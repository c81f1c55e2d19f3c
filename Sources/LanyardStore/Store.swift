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
    /// Read connections, each behind its own lock, taken in turn: reads from different
    /// event loops run at once instead of queueing on one connection (`readerCount`).
    private let readers: [NIOLockedValueBox<SQLiteConnectionBox>]
    private let nextReader = NIOLockedValueBox(0)
    public static let readerCount = 3
    /// Seals secrets and signing keys under the master key.
    let sealer: AESGCM
    /// Authenticates stored rows and the audit checkpoint, under a key derived from the master key.
    let rows: RowAuthenticator
    let logger: Logger
    /// The current signing key of each purpose, opened once (rotation replaces it).
    let openedSigningKeys = NIOLockedValueBox<[String: (kid: String, key: SigningKey)]>([:])
    let clock: any WallClock
    /// Whether the grant counters matched their digest in the audit head at startup (or
    /// since every counter was reset): when not, limited grants are refused.
    let limitCountersAnchored = NIOLockedValueBox(true)
    let leaseTally = LeaseTally()

    /// Opens (or creates) the database in `directory`. The first start of a Lanyard that
    /// authenticates rows adopts the rows it finds (see `adopt`); every start then anchors
    /// the audit head in a checkpoint.
    /// `readers`: reader connections (tests that change a row in an open savepoint and read
    /// it back through the store need one).
    public init(directory: String, masterKey: [UInt8], clock: any WallClock, logger: Logger, readers: Int = Store.readerCount) throws(StoreError) {
        do {
            sealer = try AESGCM(key: masterKey)
            rows = try RowAuthenticator(masterKey: masterKey)
        } catch {
            throw StoreError("the master key cannot be used: \(error)")
        }
        self.clock = clock
        self.logger = logger
        self.directory = directory
        path = directory + "/lanyard.db"
        let setup = try SQLiteConnection(path: path)
        try setup.exec("PRAGMA trusted_schema=OFF")
        try setup.exec("PRAGMA journal_mode=WAL")
        try setup.exec("PRAGMA synchronous=FULL")
        try Self.refuseForeignSchema(setup)
        let (rows, directory) = (self.rows, directory)
        try Schema.migrate(setup, adopt: { db in try Self.adopt(db, rows: rows, directory: directory, nowMicros: clock.nowMicros()) })
        let countersMatch: Bool
        do {
            countersMatch = try Self.countersAreAnchored(setup, rows: rows)
        } catch {
            throw StoreError("cannot check the grant limit counters: \(error)")
        }
        var connections: [NIOLockedValueBox<SQLiteConnectionBox>] = []
        for _ in 0..<max(1, readers) { connections.append(NIOLockedValueBox(SQLiteConnectionBox(try Self.open(path)))) }
        self.readers = connections
        let tally = leaseTally
        audit = try AuditLog(connection: try Self.open(path), checkpointer: try Checkpointer(path: path, logger: logger),
                             rows: rows, clock: clock, logger: logger, rolledBack: { tally.forgetAll() })
        requeueForgottenRevocations()
        var chainAnchored = audit.isAnchored
        do {
            try AuditCheckpoint.write(store: self)
        } catch {
            chainAnchored = false
            logger.critical("the audit chain is not anchored", metadata: ["error": "\(error)"])
        }
        // The counters' digest is only as good as the head that holds it: with the chain's
        // end or its checkpoint contradicting the head, an older head (and older counters) may be back.
        if !countersMatch || !chainAnchored {
            limitCountersAnchored.withLockedValue { $0 = false }
            logger.critical("""
                the grant limit counters cannot be trusted (they do not match the audit head, or the head does not match the chain): \
                a counter or the head was deleted or rolled back at rest; limited grants are refused until an admin runs `lanyardctl limits reset --all`
                """)
        }
    }

    /// Refuses a database holding a trigger or view: Lanyard creates none, and one planted
    /// at rest could rewrite a row between the daemon's write and the MAC it computes over it.
    static func refuseForeignSchema(_ db: SQLiteConnection) throws(StoreError) {
        let found: [(String, String)]
        do {
            var out: [(String, String)] = []
            try db.prepare("SELECT type, name FROM sqlite_master WHERE type IN ('trigger', 'view') ORDER BY name").rows { out.append(($0.text(0), $0.text(1))); return true }
            found = out
        } catch {
            throw StoreError("cannot read the database schema: \(error)")
        }
        guard let (type, name) = found.first else { return }
        throw StoreError("the state database holds a \(type) '\(Inert.capped(name, limit: 64))' that Lanyard never creates: the state directory was edited "
                         + "without lanyardd. Inspect it (sqlite3 lanyard.db .schema), drop it (DROP \(type.uppercased()) …), run `lanyardctl audit verify` "
                         + "once started, and start lanyardd again")
    }

    /// `cacheKiB`: the connection's page cache (SQLite's default is 2 MiB; the OS caches the file too).
    static func open(_ path: String, cacheKiB: Int = 1024) throws(StoreError) -> SQLiteConnection {
        let c = try SQLiteConnection(path: path)
        try c.exec("PRAGMA cache_size=-\(cacheKiB)")
        try c.exec("PRAGMA trusted_schema=OFF")
        try c.exec("PRAGMA temp_store=MEMORY")
        try c.exec("PRAGMA journal_mode=WAL")
        try c.exec("PRAGMA synchronous=FULL")
        try c.exec("PRAGMA foreign_keys=ON")
        return c
    }

    /// Runs a read (or a rare out-of-band write) on a reader connection.
    package func read<T>(_ body: (SQLiteConnection) throws -> T) throws -> T {
        let i = nextReader.withLockedValue { n in
            defer { n = (n + 1) % readers.count }
            return n
        }
        return try readers[i].withLockedValue { box in try body(box.connection) }
    }

    /// Records a policy version in the history and returns the stable ids of `agentNames`,
    /// assigning new UUIDs to agents seen for the first time.
    public func recordPolicy(version: String, path policyPath: String, source: String, agentNames: [String], nowMicros: Int64) throws -> [String: String] {
        try read { db in
            try db.transaction {
                // The text is the version's preimage: a row altered at rest gets it back.
                try db.prepare("INSERT INTO policy_versions(version, first_loaded_us, path, source) VALUES (?, ?, ?, ?) ON CONFLICT(version) DO UPDATE SET source = excluded.source")
                    .bind(.text(version), .int(nowMicros), .text(policyPath), .text(source)).run()
                var ids: [String: String] = [:]
                try db.prepare("SELECT \(AuthenticatedTable.agents.selection) FROM agents").rows { row in
                    if rows.isAuthentic(.agents, row) { ids[row.text(0)] = row.text(1) } else { reportTampered(.agents, row) }
                    return true
                }
                // An agent seen for the first time, or whose row was altered at rest, gets a
                // new id: it matches none of the approvals, leases or tokens of any other.
                for name in agentNames where ids[name] == nil {
                    let id = SecureRandom.uuid()
                    try db.prepare("INSERT OR REPLACE INTO agents(name, id, created_us) VALUES (?, ?, ?)")
                        .bind(.text(name), .text(id), .int(nowMicros)).run()
                    try authenticate(db, .agents, key: [.text(name)])
                    ids[name] = id
                }
                let named = Set(agentNames)
                return ids.filter { named.contains($0.key) }
            }
        }
    }

    /// The text of policy `version` as recorded when it was first loaded; nil when the
    /// stored text is missing or does not hash to its version (altered at rest).
    public func policySource(version: String) throws -> String? {
        try read { db in
            try db.prepare("SELECT source FROM policy_versions WHERE version = ?").bind(.text(version)).one { $0.text(0) }
        }.flatMap { SHA256.hex(Array($0.utf8)) == version ? $0 : nil }
    }

    /// Live PENDING approvals (not yet expired), of one agent or all. `db`: a write
    /// transaction's connection (to check a bound atomically with an insert); else the reader.
    package func countPendingApprovals(agentID: String? = nil, nowMicros: Int64, on db: SQLiteConnection? = nil) throws -> UInt64 {
        try count("approvals WHERE state = 'pending' AND expires_us > ?", agentID: agentID, nowMicros: nowMicros, on: db)
    }

    /// Active, unexpired leases, of one agent or all (`db` as for `countPendingApprovals`).
    package func countActiveLeases(agentID: String? = nil, nowMicros: Int64, on db: SQLiteConnection? = nil) throws -> UInt64 {
        // One agent's: by leases_agent_page (agent, state), not leases_expiry's range over every agent's (`+`: no index on it).
        try count("leases WHERE state = 'active' AND " + (agentID == nil ? "expires_us > ?" : "+expires_us > ?"),
                  agentID: agentID, nowMicros: nowMicros, on: db)
    }

    /// Whether the agent holds fewer than `limit` active, unexpired leases. Counts them only
    /// when `leaseTally` cannot tell. `db`: the writer's transaction, which inserts the
    /// lease, and the only one that moves the tally; else the reader (a check before the
    /// transaction's, which decides).
    package func agentHoldsFewerLeases(_ agentID: String, than limit: UInt64, nowMicros: Int64, on db: SQLiteConnection? = nil) throws -> Bool {
        if let bound = leaseTally.bound(agentID), bound < limit { return true }
        guard let db else { return try countActiveLeases(agentID: agentID, nowMicros: nowMicros) < limit }
        let active = UInt64(try db.prepare("SELECT count(*) FROM leases WHERE state = 'active' AND agent_id = ?")
            .bind(.text(agentID)).one { $0.int(0) } ?? 0)
        leaseTally.set(agentID, active)
        if active < limit { return true }
        return try countActiveLeases(agentID: agentID, nowMicros: nowMicros, on: db) < limit
    }

    /// Live approvals (pending, or approved and unused) of one agent for one operation's
    /// digest, inside a transaction: what keeps a find-or-open from opening two.
    package func countLiveApprovals(agentID: String, digest: String, nowMicros: Int64, on db: SQLiteConnection) throws -> UInt64 {
        let s = try db.prepare("SELECT count(*) FROM approvals WHERE state IN ('pending', 'approved') AND expires_us > ? AND agent_id = ? AND digest = ?")
            .bind(.int(nowMicros))
        try s.bindAt(2, .text(agentID))
        try s.bindAt(3, .text(digest))
        return UInt64(try s.one { $0.int(0) } ?? 0)
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

// MARK: Authenticated rows

extension Store {
    /// (Re)computes the MAC of `table`'s row with primary key `key`, after writing it.
    func authenticate(_ db: SQLiteConnection, _ table: AuthenticatedTable, key: [SQLValue]) throws {
        try rows.authenticate(db, table, key: key)
    }

    /// Sets columns (`set`, e.g. "state = ?") of `table`'s rows matching `match`, keeping
    /// them authenticated. A row that does not authenticate before is left as it is (and
    /// logged): a change never launders a tampered row.
    @discardableResult
    func update(_ db: SQLiteConnection, _ table: AuthenticatedTable, set: String, _ values: [SQLValue],
                where match: String, _ matchValues: [SQLValue]) throws -> (changed: Int, tampered: Int) {
        var authentic: [Int64] = []
        var tampered = 0
        let select = try db.prepare("SELECT \(table.selection), rowid FROM \(table.name) WHERE \(match)")
        try select.bind(matchValues)
        try select.rows { row in
            if rows.isAuthentic(table, row) { authentic.append(row.int(table.macColumn + 1)) } else { reportTampered(table, row); tampered += 1 }
            return true
        }
        for rowid in authentic {
            let change = try db.prepare("UPDATE \(table.name) SET \(set) WHERE rowid = ?")
            try change.bind(values + [.int(rowid)])
            try change.run()
            let reread = try db.prepare("SELECT \(table.selection) FROM \(table.name) WHERE rowid = ?").bind(.int(rowid))
            guard let mac = try reread.one({ rows.mac(table, $0) }) else { throw StoreError("the \(table.name) row being changed is missing") }
            try db.prepare("UPDATE \(table.name) SET mac = ? WHERE rowid = ?").bind(.blob(mac), .int(rowid)).run()
        }
        return (authentic.count, tampered)
    }

    /// The current row of `row` (selected as `table.selection`), read by `body` if it
    /// authenticates; else logged, and refused with `SealError`.
    func authentic<T>(_ table: AuthenticatedTable, _ row: Statement, remedy: String, _ body: (Statement) throws -> T) throws -> T {
        guard rows.isAuthentic(table, row) else {
            throw SealError(what: "\(table.name) row \(reportTampered(table, row))", remedy: remedy)
        }
        return try body(row)
    }

    /// Logs a row that failed its MAC (critical: someone edited the state without the
    /// master key) and returns its key for messages.
    @discardableResult
    func reportTampered(_ table: AuthenticatedTable, _ row: Statement) -> String {
        let key = (0..<Int32(table.key.count)).map { String(row.text($0).prefix(128)) }.joined(separator: "/")
        logger.critical("a stored row failed its integrity check and is not used: the state directory was edited without the master key",
                        metadata: ["table": "\(table.name)", "row": "\(key)"])
        return "'\(key)'"
    }

    /// Whether `table`'s row `key` authenticates (nil when there is none).
    package func rowIsAuthentic(_ table: AuthenticatedTable, key: [SQLValue]) throws -> Bool? {
        try read { db in
            let s = try db.prepare("SELECT \(table.selection) FROM \(table.name) WHERE \(table.keyMatch)")
            try s.bind(key)
            return try s.one { rows.isAuthentic(table, $0) }
        }
    }

    /// Run inside the migration that introduces row MACs, on the first start with the
    /// master key: rewrites approval args losslessly, authenticates every row as it is,
    /// and re-anchors the audit chain (trust on first use: what is there when the
    /// operator upgrades is taken as it is; a tampering before that is not undone).
    static func adopt(_ db: SQLiteConnection, rows: RowAuthenticator, directory: String, nowMicros: Int64) throws {
        var args: [(String, String)] = []
        try db.prepare("SELECT id, args FROM approvals").rows { row in
            var map: [String: String] = [:]
            for line in row.text(1).split(separator: "\n") {
                if let eq = line.firstIndex(of: "=") { map[String(line[..<eq])] = String(line[line.index(after: eq)...]) }
            }
            args.append((row.text(0), ApprovalArgs.encode(map)))
            return true
        }
        for (id, encoded) in args {
            try db.prepare("UPDATE approvals SET args = ? WHERE id = ?").bind(.text(encoded), .text(id)).run()
        }
        // Tables created by later migrations do not exist yet: their rows are MAC'd as written.
        var existing: Set<String> = []
        try db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").rows { existing.insert($0.text(0)); return true }
        for table in AuthenticatedTable.all where existing.contains(table.name) {
            var macs: [(Int64, [UInt8])] = []
            try db.prepare("SELECT \(table.selectionBeforeAdded), rowid FROM \(table.name)").rows { row in
                macs.append((row.int(table.macColumn + 1), rows.mac(table, row)))
                return true
            }
            for (rowid, mac) in macs {
                try db.prepare("UPDATE \(table.name) SET mac = ? WHERE rowid = ?").bind(.blob(mac), .int(rowid)).run()
            }
        }
        let head = try db.prepare("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").one { (UInt64($0.int(0)), $0.text(1)) }
            ?? (0, AuditRecord.genesisHash)
        try AuditLog.setHead(db, rows: rows, seq: head.0, hash: head.1, beforeAdded: true)
        try AuditCheckpoint.adopt(directory: directory, rows: rows, head: head, nowMicros: nowMicros) { seq in
            try AuditCheckpoint.hashAt(db, seq)
        }
    }
}

/// SQLiteConnection is not Sendable; the lock that holds this box serializes its use.
struct SQLiteConnectionBox: @unchecked Sendable {
    let connection: SQLiteConnection
    init(_ connection: SQLiteConnection) { self.connection = connection }
}
