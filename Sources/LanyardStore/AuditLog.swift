#if canImport(Glibc)
import Glibc
#endif
import CLanyardSys
import LanyardCore
import LanyardCrypto
import Logging
import NIOConcurrencyHelpers

/// A change that must commit in the same transaction as its audit record.
package typealias Mutation = @Sendable (SQLiteConnection) throws -> Void

/// What a task does as it starts to wait for an audit commit (or for a rotation of the
/// service it provisions): the listeners give up the call's place at its uid's gate there (a
/// call waiting for the disk is not working).
/// (A class: a task-local optional closure crashed Swift 6.3.1's runtime in swift_task_localValuePush.)
public final class AuditWait: Sendable {
    @TaskLocal public static var current: AuditWait?
    public let willWait: @Sendable () -> Void

    public init(_ willWait: @escaping @Sendable () -> Void) { self.willWait = willWait }
}

/// The tamper-evident audit chain. `append` returns only once the record (and the
/// change it accompanies) is durable: one writer thread commits whatever has queued
/// up in a single fsync'ed transaction (group commit). If the commit fails, every
/// caller in the batch gets the error: fail closed.
public final class AuditLog: Sendable {
    private let queue = ThreadQueue<WriterEntry>()
    /// The durable records whose "decision" lines are yet to be written (`decisionLoop`);
    /// nil when the log level is above info.
    private let decisions: ThreadQueue<DecisionLine>?
    private let head: ChainHead
    /// Whether the chain's end matched its authenticated head at startup. If it did not,
    /// records were appended, removed or rewritten at rest: the head is never moved (nor
    /// the checkpoint written) over that evidence, and `audit verify` reports it.
    public let isAnchored: Bool

    private let checkpointer: Checkpointer

    /// `rolledBack`: a batch's commit failed (what its changes noted in memory is undone there).
    init(connection: SQLiteConnection, checkpointer: Checkpointer, rows: RowAuthenticator, clock: any WallClock,
         logger: Logger, rolledBack: @escaping @Sendable () -> Void) throws(StoreError) {
        self.checkpointer = checkpointer
        decisions = logger.logLevel <= .info ? ThreadQueue(limit: Self.decisionLineBacklog) : nil
        // The WAL file keeps its length between restarts: a commit overwrites frames of the
        // file instead of growing it (no size change for fdatasync to record).
        try connection.exec("PRAGMA journal_size_limit=\(Int(Checkpointer.hardPages + 256) * (4096 + 24))")
        try connection.onCommit { [unowned connection] pages in
            if pages < Checkpointer.hardPages { return checkpointer.committed(walPages: pages) }
            do {
                try connection.checkpoint(.restart)
            } catch {
                logger.warning("WAL checkpoint failed; retried after the next commit", metadata: ["error": "\(error)"])
            }
        }
        let start: (UInt64, String)
        do {
            start = try connection.prepare("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").one { (UInt64($0.int(0)), $0.text(1)) }
                ?? (0, AuditRecord.genesisHash)
            isAnchored = try Self.authenticatedHead(connection, rows: rows).map { $0 == start } ?? false
        } catch {
            throw StoreError("cannot read the audit head: \(error)")
        }
        if !isAnchored {
            logger.critical("the audit chain's end does not match its authenticated head: records were appended, removed or rewritten at rest; run `lanyardctl audit verify`",
                            metadata: ["audit.seq": "\(start.0)"])
        }
        head = ChainHead(start)
        let head = self.head
        let queue = self.queue
        let decisions = self.decisions
        let box = SQLiteConnectionBox(connection)
        let anchored = isAnchored
        startThread(name: "lanyard-audit") {
            Self.writerLoop(queue: queue, connection: box.connection, head: head, rows: anchored ? rows : nil, clock: clock, logger: logger,
                            decisions: decisions, rolledBack: rolledBack)
            decisions?.close()  // after the last commit's lines: the decision thread writes them, then ends
        }
        if let decisions {
            startThread(name: "lanyard-decisions") {
                Self.decisionLoop(decisions, logger: logger)
                decisions.finish()
            }
        }
    }

    /// The (seq, hash) of the authenticated head row; nil when it is missing or does not authenticate.
    static func authenticatedHead(_ db: SQLiteConnection, rows: RowAuthenticator) throws -> (UInt64, String)? {
        try db.prepare("SELECT \(AuthenticatedTable.auditHead.selection) FROM audit_head WHERE id = 1").one { row in
            rows.isAuthentic(.auditHead, row) ? (UInt64(row.int(1)), row.text(2)) : nil
        } ?? nil
    }

    /// Moves the authenticated head to record `seq` with `hash` (in the commit that writes it).
    static func setHead(_ db: SQLiteConnection, rows: RowAuthenticator, seq: UInt64, hash: String, beforeAdded: Bool = false) throws {
        try db.prepare("INSERT INTO audit_head(id, seq, hash) VALUES (1, ?, ?) ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash")
            .bind(.int(Int64(seq)), .text(hash)).run()
        try rows.authenticate(db, .auditHead, key: [.int(1)], beforeAdded: beforeAdded)
    }

    /// The sequence number and hash of the newest durable record.
    public var headRecord: (seq: UInt64, hash: String) { head.value.withLockedValue { $0 } }

    /// Appends `record`; returns it with `seq`, `time`, `prev_hash` and `hash` filled in,
    /// once it is durable.
    @discardableResult
    public func append(_ record: AuditRecord) async throws -> AuditRecord {
        try await append(record, with: nil)
    }

    @discardableResult
    package func append(_ record: AuditRecord, with mutation: Mutation?) async throws -> AuditRecord {
        try await append([record], with: mutation)[0]
    }

    /// Appends several records and one change atomically (for example a kill switch that
    /// revokes many leases: one record per lease). Every text field is capped here, the
    /// one way in, so a record always fits one query reply (`AuditRecord.capped`).
    @discardableResult
    package func append(_ records: [AuditRecord], with mutation: Mutation?) async throws -> [AuditRecord] {
        precondition(!records.isEmpty)
        let records = records.map(\.capped)
        // A call appending many records (a rotation ending leases) keeps its place: what
        // one uid puts in a batch stays bounded by its working calls.
        if records.count == 1 { AuditWait.current?.willWait() }
        return try await withCheckedThrowingContinuation { continuation in
            if !queue.push(CollectionOfOne(WriterEntry(records: records, mutation: mutation, continuation: continuation))) {
                continuation.resume(throwing: StoreError("the audit log is closed: the daemon is shutting down"))
            }
        }
    }

    /// WAL checkpoints completed off the commit path (`Checkpointer`).
    package var checkpointsCompleted: Int { checkpointer.completed }

    /// Stops the writer after it has committed what is queued, and the checkpoints; returns
    /// once the last commit's decision lines are written (at most 2 s: a stuck log sink does
    /// not hold the stop).
    public func close() {
        queue.close()
        _ = decisions?.waitUntilFinished(seconds: 2)
        checkpointer.close()
    }

    // MARK: Writer

    /// `rows`: moves the authenticated head with each commit (nil when it is not anchored).
    /// `decisions`: where durable records go for their log lines (nil: the level is above info).
    private static func writerLoop(queue: ThreadQueue<WriterEntry>, connection db: SQLiteConnection,
                                   head: ChainHead, rows: RowAuthenticator?, clock: any WallClock, logger: Logger,
                                   decisions: ThreadQueue<DecisionLine>?, rolledBack: () -> Void) {
        while let (batch, _) = queue.popAll() {
            var (seq, hash) = head.value.withLockedValue { $0 }
            let startSeq = seq
            var results: [Result<[AuditRecord], Error>] = []
            results.reserveCapacity(batch.count)
            do {
                try db.run("BEGIN IMMEDIATE")
                for entry in batch {
                    // Each entry (its change and its records) commits whole or not at all.
                    try db.run("SAVEPOINT entry")
                    do {
                        try entry.mutation?(db)
                        var (entrySeq, entryHash) = (seq, hash)
                        var written: [AuditRecord] = []
                        for var r in entry.records {
                            r.seq = entrySeq + 1
                            if r.timeMicros == 0 { r.timeMicros = clock.nowMicros() }
                            r.prevHash = entryHash
                            r.hash = SHA256.hex(r.canonicalBytes)
                            try insert(r, db)
                            (entrySeq, entryHash) = (r.seq, r.hash)
                            written.append(r)
                        }
                        try db.run("RELEASE entry")
                        (seq, hash) = (entrySeq, entryHash)
                        results.append(.success(written))
                    } catch {
                        try db.run("ROLLBACK TO entry")
                        try db.run("RELEASE entry")
                        results.append(.failure(error))
                    }
                }
                if let rows, seq != startSeq { try setHead(db, rows: rows, seq: seq, hash: hash) }
                try db.run("COMMIT")
                head.value.withLockedValue { $0 = (seq, hash) }
            } catch {
                try? db.run("ROLLBACK")
                rolledBack()
                logger.error("audit commit failed; failing the batch closed", metadata: ["audit.batch": "\(batch.count)", "error": "\(error)"])
                let failure = StoreError("the audit log could not be written: \(error)")
                results = batch.map { _ in .failure(failure) }
            }
            // The batch's lines are queued, in one push, before the callers have their answers.
            if let decisions {
                var lines: [DecisionLine] = []
                for case .success(let records) in results { lines += records.lazy.map(DecisionLine.init) }
                if !lines.isEmpty { decisions.push(lines) }
            }
            for (entry, result) in zip(batch, results) {
                entry.continuation.resume(with: result)
            }
        }
    }

    /// Decision lines that may wait for the log sink (besides those being written); beyond,
    /// lines are dropped and counted (the chain is the record, the lines a view of it).
    static let decisionLineBacklog = 1024

    /// One structured line per durable record (journald under systemd), in chain order, on a
    /// thread of its own: the writer, the one serial stage, neither formats them nor waits on
    /// the log sink. Audit records never hold secrets, nor do these lines.
    private static func decisionLoop(_ decisions: ThreadQueue<DecisionLine>, logger: Logger) {
        while let (lines, dropped) = decisions.popAll() {
            for line in lines {
                var metadata: Logger.Metadata = [
                    "audit.seq": "\(line.seq)", "audit.event": "\(line.event)", "agent": "\(line.agent)",
                    "caller.uid": "\(line.uid.map(String.init) ?? "")", "capability": "\(line.capability)",
                    "policy.decision": "\(line.decision)", "outcome": "\(line.outcome)",
                ]
                if !line.leaseID.isEmpty { metadata["lease.id"] = "\(line.leaseID)" }
                logger.info("decision", metadata: metadata)
            }
            // After the lines queued before them: the dropped ones are the records that follow.
            if let first = dropped.first, let last = dropped.last {
                logger.warning("decision lines dropped: the log sink fell \(decisionLineBacklog) lines behind; the audit log has every record (lanyardctl audit query --from \(first.seq))",
                               metadata: ["dropped": "\(dropped.count)", "audit.seq.first": "\(first.seq)", "audit.seq.last": "\(last.seq)"])
            }
        }
    }

    private static func insert(_ r: AuditRecord, _ db: SQLiteConnection) throws(StoreError) {
        try db.prepare("""
            INSERT INTO audit(seq, time_us, event, agent_id, agent, uid, gid, pid, capability, resource,
                              decision, reason, outcome, lease_id, approval_id, approver, policy_version, prev_hash, hash,
                              mcp_server, mcp_tool, args_digest, reason_code)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """)
            .bind(.int(Int64(r.seq)), .int(r.timeMicros), .text(r.event), .text(r.agentID), .text(r.agent),
                  .optional(r.uid), .optional(r.gid), .optional(r.pid), .text(r.capability), .text(r.resource),
                  .text(r.decision), .text(r.reason), .text(r.outcome), .text(r.leaseID), .text(r.approvalID),
                  .text(r.approver), .text(r.policyVersion), .text(r.prevHash), .text(r.hash),
                  .text(r.mcpServer), .text(r.mcpTool), .text(r.argsDigest), .text(r.reasonCode))
            .run()
    }
}

// MARK: Reading the chain

public struct AuditFilter: Sendable {
    public var fromSeq: UInt64 = 1
    public var limit: Int = 100
    public var agent: String?
    public var capability: String?
    public var decision: String?
    public var sinceMicros: Int64?
    public var untilMicros: Int64?
    public init() {}
}

public struct AuditVerification: Sendable, Equatable {
    public var ok: Bool
    public var records: UInt64
    public var firstBrokenSeq: UInt64?
    public var reason: String
    public var headHash: String
}

extension Store {
    public func queryAudit(_ f: AuditFilter) throws -> [AuditRecord] {
        var sql = "SELECT \(auditColumns) FROM audit WHERE seq >= ?"
        var binds: [SQLValue] = [.int(Int64(max(f.fromSeq, 1)))]
        if let a = f.agent { sql += " AND agent = ?"; binds.append(.text(a)) }
        if let c = f.capability { sql += " AND capability = ?"; binds.append(.text(c)) }
        if let d = f.decision { sql += " AND decision = ?"; binds.append(.text(d)) }
        if let s = f.sinceMicros { sql += " AND time_us >= ?"; binds.append(.int(s)) }
        if let u = f.untilMicros { sql += " AND time_us < ?"; binds.append(.int(u)) }
        sql += " ORDER BY seq LIMIT \(max(1, min(f.limit, 1000)))"
        return try read { db in
            let s = try db.prepare(sql)
            for (i, b) in binds.enumerated() { try s.bindAt(Int32(i + 1), b) }
            var out: [AuditRecord] = []
            try s.rows { out.append(Self.record($0)); return true }
            return out
        }
    }

    /// Walks the whole chain on a fresh connection and reports the first record whose
    /// hash, link or sequence does not hold.
    public func verifyAudit() throws -> AuditVerification {
        let db = try Self.open(path)
        let s = try db.prepare("SELECT \(auditColumns) FROM audit ORDER BY seq")
        var expectedSeq: UInt64 = 1
        var prev = AuditRecord.genesisHash
        var count: UInt64 = 0
        var broken: AuditVerification?
        var authenticatedHead: (UInt64, String)?
        try db.transaction(immediate: false) {
            try s.rows { row in
                let r = Self.record(row)
                func fail(_ why: String) -> Bool {
                    broken = AuditVerification(ok: false, records: count, firstBrokenSeq: r.seq, reason: why, headHash: prev)
                    return false
                }
                if r.seq != expectedSeq { return fail("record \(expectedSeq) is missing (found \(r.seq) next)") }
                if r.prevHash != prev { return fail("record \(r.seq) does not link to the record before it") }
                if SHA256.hex(r.canonicalBytes) != r.hash { return fail("record \(r.seq) was altered: its hash does not match its contents") }
                prev = r.hash
                expectedSeq += 1
                count += 1
                return true
            }
            // In the walk's snapshot: a commit in between moves the head.
            authenticatedHead = try AuditLog.authenticatedHead(db, rows: rows)
        }
        if let broken { return broken }
        let hashAt: (UInt64) throws -> String? = { seq in
            try db.prepare("SELECT hash FROM audit WHERE seq = ?").bind(.int(Int64(seq))).one { $0.text(0) }
        }
        if var truncated = try AuditCheckpoint.check(store: self, records: count, hashAt: hashAt) {
            truncated.headHash = prev
            return truncated
        }
        if authenticatedHead.map({ $0 == (count, prev) }) != true {
            return AuditVerification(ok: false, records: count, firstBrokenSeq: count + 1,
                                     reason: "the chain's end (record \(count)) does not match its authenticated head: records were appended, removed or rewritten at rest",
                                     headHash: prev)
        }
        return AuditVerification(ok: true, records: count, firstBrokenSeq: nil, reason: "", headHash: prev)
    }

    private var auditColumns: String {
        "seq, time_us, event, agent_id, agent, uid, gid, pid, capability, resource, decision, reason, outcome, lease_id, approval_id, approver, policy_version, prev_hash, hash, "
            + "mcp_server, mcp_tool, args_digest, reason_code"
    }

    private static func record(_ s: Statement) -> AuditRecord {
        var r = AuditRecord(event: s.text(2))
        r.seq = UInt64(s.int(0))
        r.timeMicros = s.int(1)
        r.agentID = s.text(3)
        r.agent = s.text(4)
        r.uid = s.optionalInt(5)
        r.gid = s.optionalInt(6)
        r.pid = s.optionalInt(7)
        r.capability = s.text(8)
        r.resource = s.text(9)
        r.decision = s.text(10)
        r.reason = s.text(11)
        r.outcome = s.text(12)
        r.leaseID = s.text(13)
        r.approvalID = s.text(14)
        r.approver = s.text(15)
        r.policyVersion = s.text(16)
        r.prevHash = s.text(17)
        r.hash = s.text(18)
        r.mcpServer = s.text(19)
        r.mcpTool = s.text(20)
        r.argsDigest = s.text(21)
        r.reasonCode = s.text(22)
        return r
    }
}

// MARK: Writer queue and thread

private final class ChainHead: Sendable {
    let value: NIOLockedValueBox<(seq: UInt64, hash: String)>
    init(_ start: (UInt64, String)) { value = NIOLockedValueBox(start) }
}

/// What a record's decision line shows (only these fields are held while it waits).
private struct DecisionLine {
    var seq: UInt64, uid: Int64?
    var event, agent, capability, decision, outcome, leaseID: String
    init(_ r: AuditRecord) {
        (seq, uid, event, agent, capability, decision, outcome, leaseID) = (r.seq, r.uid, r.event, r.agent, r.capability, r.decision, r.outcome, r.leaseID)
    }
}

/// What a caller hands the writer thread: records, the change they accompany, and who waits.
private struct WriterEntry {
    var records: [AuditRecord]
    var mutation: Mutation?
    var continuation: CheckedContinuation<[AuditRecord], Error>
}

/// A queue that one OS thread drains: `push` from any thread, `popAll` blocks on the
/// draining one. At most `limit` elements wait; what a push brings beyond it is refused,
/// and the draining thread is told how many and which were first and last.
private final class ThreadQueue<Element>: @unchecked Sendable {
    struct Refused {
        var count = 0
        var first: Element?, last: Element?
    }

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    /// Signalled once, at `finish` (the draining thread alone waits on `cond`).
    private let finishedCond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let limit: Int
    private var pending: [Element] = []
    private var refused = Refused()
    private var closed = false
    private var finished = false

    init(limit: Int = .max) {
        self.limit = limit
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)  // for waitUntilFinished's deadline
        pthread_cond_init(finishedCond, &attributes)
        pthread_condattr_destroy(&attributes)
        pthread_cond_init(cond, nil)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_cond_destroy(finishedCond)
        pthread_mutex_destroy(mutex)
        cond.deallocate()
        finishedCond.deallocate()
        mutex.deallocate()
    }

    /// Queues what fits of `elements`; false when the queue is closed (nothing is queued).
    @discardableResult
    func push(_ elements: some BidirectionalCollection<Element>) -> Bool {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        if closed { return false }
        let room = max(0, limit - pending.count)
        pending.append(contentsOf: elements.prefix(room))
        let rest = elements.dropFirst(room)
        if let first = rest.first, let last = rest.last {
            if refused.count == 0 { refused.first = first }
            refused.last = last
            refused.count += rest.count
        }
        pthread_cond_signal(cond)
        return true
    }

    /// Blocks until elements are queued, and takes them all with what was refused since the
    /// last call; nil once closed and drained.
    func popAll() -> (elements: [Element], refused: Refused)? {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while pending.isEmpty && refused.count == 0 && !closed { pthread_cond_wait(cond, mutex) }
        if pending.isEmpty && refused.count == 0 { return nil }
        defer { pending.removeAll(keepingCapacity: true); refused = Refused() }
        return (pending, refused)
    }

    func close() {
        pthread_mutex_lock(mutex)
        closed = true
        pthread_cond_broadcast(cond)
        pthread_mutex_unlock(mutex)
    }

    /// The draining thread has handled the last element (after `popAll` returned nil).
    func finish() {
        pthread_mutex_lock(mutex)
        finished = true
        pthread_cond_broadcast(finishedCond)
        pthread_mutex_unlock(mutex)
    }

    /// Waits until `finish`, at most `seconds`; whether it came.
    func waitUntilFinished(seconds: Int) -> Bool {
        var deadline = timespec()
        clock_gettime(CLOCK_MONOTONIC, &deadline)
        deadline.tv_sec += seconds
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while !finished {
            if pthread_cond_timedwait(finishedCond, mutex, &deadline) == ETIMEDOUT { return finished }
        }
        return true
    }
}

private final class ThreadBody {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}

/// Starts a detached OS thread (the writer must not block Swift's cooperative pool on fsync).
func startThread(name: String, _ body: @escaping () -> Void) {
    let context = Unmanaged.passRetained(ThreadBody {
        lanyard_name_thread(name)
        body()
    }).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(&thread, nil, { raw in
        let body = Unmanaged<ThreadBody>.fromOpaque(raw!).takeRetainedValue()
        body.body()
        return nil
    }, context)
    precondition(rc == 0, "pthread_create failed: \(rc)")
    pthread_detach(thread)
}
