import CSQLite

/// A storage failure. The server maps every one of these to UNAVAILABLE: deny, never guess.
public struct StoreError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

private final class WALHook {
    let body: (Int32) -> Void
    init(_ body: @escaping (Int32) -> Void) { self.body = body }
}

/// One SQLite connection (not thread-safe: each owner serializes its use).
package final class SQLiteConnection {
    private let db: OpaquePointer
    private var statements: [String: Statement] = [:]
    private var walHook: Unmanaged<WALHook>?

    package init(path: String) throws(StoreError) {
        var handle: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &handle, flags, nil)
        guard rc == SQLITE_OK, let handle else {
            let msg = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(handle)
            throw StoreError("cannot open database \(path): \(msg)")
        }
        db = handle
        sqlite3_busy_timeout(db, 10_000)
        sqlite3_extended_result_codes(db, 1)
    }

    deinit {
        statements.removeAll()
        sqlite3_close_v2(db)
        walHook?.release()
    }

    package func exec(_ sql: String) throws(StoreError) {
        var err: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(db, sql, nil, nil, &err)
        if rc != SQLITE_OK {
            let msg = err.map { String(cString: $0) } ?? "code \(rc)"
            sqlite3_free(err)
            throw StoreError("sqlite: \(msg)")
        }
    }

    /// Runs one statement that returns no rows (BEGIN, COMMIT, SAVEPOINT …) from the
    /// statement cache: parsed once per connection, not once per transaction.
    package func run(_ sql: String) throws(StoreError) {
        try prepare(sql).run()
    }

    /// A cached prepared statement, reset and ready to bind.
    package func prepare(_ sql: String) throws(StoreError) -> Statement {
        if let s = statements[sql] {
            s.reset()
            return s
        }
        var stmt: OpaquePointer?
        guard sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &stmt, nil) == SQLITE_OK, let stmt else {
            throw StoreError("sqlite prepare: \(lastError)")
        }
        let s = Statement(stmt, connection: self)
        statements[sql] = s
        return s
    }

    /// Runs `body` in one transaction; rolls back when it throws.
    package func transaction<T>(immediate: Bool = true, _ body: () throws -> T) throws -> T {
        try run(immediate ? "BEGIN IMMEDIATE" : "BEGIN")
        do {
            let value = try body()
            try run("COMMIT")
            return value
        } catch {
            try? run("ROLLBACK")
            throw error
        }
    }

    package var lastError: String { String(cString: sqlite3_errmsg(db)) }

    /// Calls `body` with the WAL's size in pages after each commit of this connection, which
    /// then no longer checkpoints by itself (`Checkpointer` does, on its own connection).
    package func onCommit(walPages body: @escaping (Int32) -> Void) throws(StoreError) {
        try exec("PRAGMA wal_autocheckpoint=0")
        let hook = Unmanaged.passRetained(WALHook(body))
        walHook?.release()
        walHook = hook
        sqlite3_wal_hook(db, { context, _, _, pages in
            Unmanaged<WALHook>.fromOpaque(context!).takeUnretainedValue().body(pages)
            return SQLITE_OK
        }, hook.toOpaque())
    }

    package enum CheckpointMode {
        /// What no reader still needs, waiting for nobody.
        case passive
        /// All of it, waiting for readers; the next commit writes the WAL from its start.
        case restart

        var sqlite: Int32 { self == .passive ? SQLITE_CHECKPOINT_PASSIVE : SQLITE_CHECKPOINT_RESTART }
    }

    /// Copies the WAL into the database; returns the WAL's frames and those copied.
    @discardableResult
    package func checkpoint(_ mode: CheckpointMode = .passive) throws(StoreError) -> (walFrames: Int32, copied: Int32) {
        var (log, copied): (Int32, Int32) = (0, 0)
        let rc = sqlite3_wal_checkpoint_v2(db, nil, mode.sqlite, &log, &copied)
        guard rc == SQLITE_OK else { throw StoreError("sqlite checkpoint: \(lastError)") }
        return (log, copied)
    }
    package var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(db) }
    package var changes: Int { Int(sqlite3_changes(db)) }
}

package final class Statement {
    private let stmt: OpaquePointer
    private unowned let connection: SQLiteConnection

    fileprivate init(_ stmt: OpaquePointer, connection: SQLiteConnection) {
        self.stmt = stmt
        self.connection = connection
    }

    deinit { sqlite3_finalize(stmt) }

    fileprivate func reset() {
        sqlite3_reset(stmt)
        sqlite3_clear_bindings(stmt)
    }

    @discardableResult
    package func bind(_ values: SQLValue...) throws(StoreError) -> Statement {
        for (i, v) in values.enumerated() { try bindAt(Int32(i + 1), v) }
        return self
    }

    @discardableResult
    package func bind(_ values: [SQLValue]) throws(StoreError) -> Statement {
        for (i, v) in values.enumerated() { try bindAt(Int32(i + 1), v) }
        return self
    }

    package func bindAt(_ idx: Int32, _ v: SQLValue) throws(StoreError) {
            let rc: Int32
            switch v {
            case .null: rc = sqlite3_bind_null(stmt, idx)
            case .int(let n): rc = sqlite3_bind_int64(stmt, idx, n)
            case .text(let s):
                // By length, never NUL-terminated: text may hold U+0000, and the audit hash
                // covers every byte.
                let bytes = Array(s.utf8)
                rc = bytes.isEmpty
                    ? sqlite3_bind_text(stmt, idx, "", 0, SQLITE_TRANSIENT)
                    : bytes.withUnsafeBufferPointer { $0.withMemoryRebound(to: CChar.self) { sqlite3_bind_text(stmt, idx, $0.baseAddress, Int32($0.count), SQLITE_TRANSIENT) } }
            case .blob(let b): rc = b.withUnsafeBytes { sqlite3_bind_blob(stmt, idx, $0.baseAddress, Int32($0.count), SQLITE_TRANSIENT) }
            }
            guard rc == SQLITE_OK else { throw StoreError("sqlite bind: \(connection.lastError)") }
    }

    /// Steps once: true when a row is available. Private: a statement left mid-way pins a
    /// read snapshot on its connection, so callers use `one`, `rows` or `run`, which reset.
    private func step() throws(StoreError) -> Bool {
        switch sqlite3_step(stmt) {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default: throw StoreError("sqlite: \(connection.lastError)")
        }
    }

    /// Runs the statement to completion.
    package func run() throws(StoreError) {
        defer { sqlite3_reset(stmt) }
        while try step() {}
    }

    /// The first row, read by `body`; nil when there is none.
    package func one<T>(_ body: (Statement) throws -> T) throws -> T? {
        defer { sqlite3_reset(stmt) }
        guard try step() else { return nil }
        return try body(self)
    }

    /// Each row in turn until `body` returns false.
    package func rows(_ body: (Statement) throws -> Bool) throws {
        defer { sqlite3_reset(stmt) }
        while try step() {
            guard try body(self) else { return }
        }
    }

    package func int(_ col: Int32) -> Int64 { sqlite3_column_int64(stmt, col) }
    package func optionalInt(_ col: Int32) -> Int64? { isNull(col) ? nil : int(col) }
    package func optionalText(_ col: Int32) -> String? { isNull(col) ? nil : text(col) }
    package func isNull(_ col: Int32) -> Bool { sqlite3_column_type(stmt, col) == SQLITE_NULL }
    package func text(_ col: Int32) -> String {
        guard let p = sqlite3_column_text(stmt, col) else { return "" }
        let n = Int(sqlite3_column_bytes(stmt, col))
        return String(decoding: UnsafeBufferPointer(start: p, count: n), as: UTF8.self)
    }
    /// Appends column `col` unambiguously: its storage class, then its bytes, length-prefixed.
    /// Row MACs cover exactly what SQLite holds, so a changed type is a changed value.
    package func appendCanonical(_ col: Int32, to out: inout [UInt8]) {
        let bytes: [UInt8]
        switch sqlite3_column_type(stmt, col) {
        case SQLITE_NULL: out.append(UInt8(ascii: "n")); return
        case SQLITE_INTEGER: out.append(UInt8(ascii: "i")); bytes = withUnsafeBytes(of: int(col).bigEndian) { Array($0) }
        case SQLITE_FLOAT: out.append(UInt8(ascii: "r")); bytes = withUnsafeBytes(of: sqlite3_column_double(stmt, col).bitPattern.bigEndian) { Array($0) }
        case SQLITE_TEXT:
            out.append(UInt8(ascii: "t"))
            let n = Int(sqlite3_column_bytes(stmt, col))
            bytes = sqlite3_column_text(stmt, col).map { Array(UnsafeBufferPointer(start: $0, count: n)) } ?? []
        default: out.append(UInt8(ascii: "b")); bytes = blob(col)
        }
        out += withUnsafeBytes(of: UInt64(bytes.count).bigEndian) { Array($0) }
        out += bytes
    }

    package func blob(_ col: Int32) -> [UInt8] {
        let n = Int(sqlite3_column_bytes(stmt, col))
        guard n > 0, let p = sqlite3_column_blob(stmt, col) else { return [] }
        return Array(UnsafeRawBufferPointer(start: p, count: n))
    }
}

package enum SQLValue {
    case null
    case int(Int64)
    case text(String)
    case blob([UInt8])

    package static func optional(_ v: Int64?) -> SQLValue { v.map { .int($0) } ?? .null }
}

// SQLITE_TRANSIENT is a macro Swift cannot import.
private let SQLITE_TRANSIENT = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
