import Dispatch
import LanyardCore
import LanyardStore
import LanyardTestSupport
import Logging
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A clock the test moves.
final class ManualClock: WallClock, @unchecked Sendable {
    var now: Int64 = 1_800_000_000_000_000
    func nowMicros() -> Int64 { now }
}

/// A master key for stores under test.
let testKey = [UInt8](repeating: 0x4C, count: 32)

private func record(_ i: Int) -> AuditRecord {
    var r = AuditRecord(event: "authorize")
    r.agent = "agent-\(i % 3)"
    r.capability = "github:read_repo"
    r.decision = i % 2 == 0 ? "allow" : "deny"
    r.uid = 1000 + Int64(i)
    return r
}

private func sqlite(_ db: String, _ sql: String) {
    // The sqlite3 CLI stands in for an attacker editing the database.
    let p = popen("sqlite3 \(db) \"\(sql)\"", "r")
    pclose(p)
}

struct AuditLogTests {
    let logger = Logger(label: "test")

    /// Finding 13: every text field is capped on its way in, so one record can never
    /// outgrow a query page; the chain covers what was stored.
    @Test func appendCapsEveryFieldAndTheChainStillVerifies() async throws {
        let dir = TestSupport.tempDir("store")
        defer { TestSupport.remove(dir) }
        let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        defer { store.audit.close() }
        var r = record(0)
        r.capability = "github:" + String(repeating: "X", count: 50_000)
        r.reason = "capability '\(r.capability)' is malformed"
        r.resource = String(repeating: "\u{1B}[2A", count: 10_000)
        let written = try await store.audit.append(r)
        #expect([written.capability, written.reason, written.resource].allSatisfy { $0.utf8.count <= AuditRecord.maxFieldBytes && $0.contains("…[+") })
        let read = try #require(try store.queryAudit(AuditFilter()).first)
        #expect(read == written)
        #expect(try store.verifyAudit().ok)
    }

    /// Issue 18: the writer's commits never checkpoint the WAL themselves; past the
    /// threshold the checkpointer's own connection does, and the chain still verifies.
    @Test func theWALIsCheckpointedOffTheCommitPath() async throws {
        let dir = TestSupport.tempDir("store")
        defer { TestSupport.remove(dir) }
        let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        defer { store.audit.close() }
        // Bounded by commits, not by time: each resumes on the cooperative pool, which a
        // loaded run (the suite under TSan) can hold for a minute.
        var i = 0
        while store.audit.checkpointsCompleted == 0 && i < 20_000 {
            var r = record(i)
            r.reason = String(repeating: "r", count: 2_000)
            r.resource = String(repeating: "s", count: 2_000)
            try await store.audit.append(r)
            i += 1
        }
        #expect(store.audit.checkpointsCompleted >= 1, "no checkpoint after \(i) commits")
        #expect(i > 100, "a checkpoint after only \(i) commits: the threshold is 1,000 WAL pages")
        #expect(try store.verifyAudit().ok)
    }

    /// Issue 18: a checkpoint syncs the WAL and the database, so it is asked for per
    /// 1,000 pages the commits add, not after every commit once the WAL is that long (which
    /// doubled the syncs at one connection, and copied the same pages again each time).
    @Test func aCheckpointIsAskedForPerThousandNewPagesNotPerCommit() throws {
        let dir = TestSupport.tempDir("store")
        defer { TestSupport.remove(dir) }
        let checkpointer = try Checkpointer(path: dir + "/lanyard.db", pages: 1000, logger: logger)
        defer { checkpointer.close() }
        var asked: [Int] = []
        for walPages: Int32 in [400, 999, 1000, 1004, 1500, 1999, 2000, 2004, 12, 999, 1012] {
            checkpointer.committed(walPages: walPages)
            asked.append(checkpointer.asked)
        }
        // 1000 and 2000 pages ask; after the WAL restarted (12 pages), 1012 does.
        #expect(asked == [0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3])
    }

    @Test func chainLinksAndVerifies() async throws {
        let dir = TestSupport.tempDir("store")
        defer { TestSupport.remove(dir) }
        let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        defer { store.audit.close() }
        var prev = AuditRecord.genesisHash
        for i in 1...5 {
            let r = try await store.audit.append(record(i))
            #expect(r.seq == UInt64(i))
            #expect(r.prevHash == prev)
            #expect(r.hash.count == 64)
            prev = r.hash
        }
        let v = try store.verifyAudit()
        #expect(v.ok && v.records == 5 && v.headHash == prev)
        #expect(try store.queryAudit(AuditFilter()).count == 5)
        var f = AuditFilter()
        f.agent = "agent-1"
        #expect(try store.queryAudit(f).map(\.seq) == [1, 4])
        f = AuditFilter()
        f.decision = "deny"
        f.fromSeq = 2
        #expect(try store.queryAudit(f).map(\.seq) == [3, 5])
    }

    /// Concurrent appends are group-committed and still form one gap-free chain.
    @Test func concurrentAppendsFormOneChain() async throws {
        let dir = TestSupport.tempDir("store")
        defer { TestSupport.remove(dir) }
        let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        defer { store.audit.close() }
        let seqs = try await withThrowingTaskGroup(of: UInt64.self) { group in
            for i in 0..<400 { group.addTask { try await store.audit.append(record(i)).seq } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(Set(seqs) == Set(1...400))
        let v = try store.verifyAudit()
        #expect(v.ok && v.records == 400)
    }

    @Test func editedRowIsTheFirstBrokenRecord() async throws {
        let dir = TestSupport.tempDir("store")
        defer { TestSupport.remove(dir) }
        let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        defer { store.audit.close() }
        for i in 1...10 { try await store.audit.append(record(i)) }
        sqlite(store.path, "UPDATE audit SET decision='allow' WHERE seq=7")
        var v = try store.verifyAudit()
        #expect(!v.ok)
        #expect(v.firstBrokenSeq == 7)
        #expect(v.records == 6)
        #expect(v.reason.contains("altered"))

        sqlite(store.path, "UPDATE audit SET decision='deny' WHERE seq=7")  // restore
        sqlite(store.path, "DELETE FROM audit WHERE seq=4")
        v = try store.verifyAudit()
        #expect(v.firstBrokenSeq == 5)
        #expect(v.reason.contains("missing"))
    }

    @Test func reopenedStoreContinuesTheChain() async throws {
        let dir = TestSupport.tempDir("store")
        defer { TestSupport.remove(dir) }
        var head: AuditRecord
        do {
            let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
            for i in 1...3 { try await store.audit.append(record(i)) }
            head = try await store.audit.append(record(4))
            store.audit.close()
        }
        let reopened = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        defer { reopened.audit.close() }
        #expect(reopened.audit.headRecord.seq == 4)
        let next = try await reopened.audit.append(record(5))
        #expect(next.seq == 5 && next.prevHash == head.hash)
        #expect(try reopened.verifyAudit().ok)
    }

    /// A change that fails is rolled back with its record; the rest of the batch commits.
    @Test func failedMutationWritesNothingAndFailsItsCaller() async throws {
        let dir = TestSupport.tempDir("store")
        defer { TestSupport.remove(dir) }
        let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        defer { store.audit.close() }
        struct Boom: Error {}
        await #expect(throws: Boom.self) {
            try await store.audit.append(record(1), with: { db in
                try db.exec("INSERT INTO agents(name, id, created_us) VALUES ('x', 'y', 1)")
                throw Boom()
            })
        }
        let r = try await store.audit.append(record(2))
        #expect(r.seq == 1)
        #expect(try store.read { db in try db.prepare("SELECT count(*) FROM agents").one { $0.int(0) } } == 0)
    }

    /// Regression: a single-row read once left its statement active, pinning an old
    /// snapshot: later reads missed new records and writes on that connection failed.
    @Test func readsAfterSingleRowReadsSeeNewWrites() async throws {
        let dir = TestSupport.tempDir("store")
        defer { TestSupport.remove(dir) }
        let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        defer { store.audit.close() }
        #expect(try store.countPendingApprovals(nowMicros: 0) == 0)
        try await store.audit.append(record(1))
        #expect(try store.queryAudit(AuditFilter()).count == 1)
        let ids = try store.recordPolicy(version: "v1", path: "p", source: "s", agentNames: ["a"], nowMicros: 1)
        #expect(ids["a"]?.count == 36)
        #expect(try store.recordPolicy(version: "v2", path: "p", source: "s2", agentNames: ["a"], nowMicros: 2) == ids)
    }

    /// Regression (found by the mutation sweep): text with U+0000 was cut at the NUL when
    /// stored, so the record no longer matched its hash.
    @Test func textWithNULIsStoredWhole() async throws {
        let dir = TestSupport.tempDir("store")
        defer { TestSupport.remove(dir) }
        let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        defer { store.audit.close() }
        var r = record(1)
        r.capability = "github:\u{0}read"
        r.reason = "a\u{0}b"
        try await store.audit.append(r)
        #expect(try store.queryAudit(AuditFilter()).first?.capability == "github:\u{0}read")
        #expect(try store.verifyAudit().ok)
    }

    @Test func closedLogFailsClosed() async throws {
        let dir = TestSupport.tempDir("store")
        defer { TestSupport.remove(dir) }
        let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        store.audit.close()
        await #expect(throws: StoreError.self) { try await store.audit.append(record(1)) }
    }

    /// A log sink that takes nothing (a stuck journal or pipe) holds up no commit: the
    /// decision lines wait on a thread of their own, at most `decisionLineBacklog` of them,
    /// and the rest are counted in a warning once the sink moves again.
    @Test func aStuckLogSinkHoldsUpNoCommitAndBoundsTheLines() async throws {
        let sink = StuckSink()
        let dir = TestSupport.tempDir("store")
        defer { TestSupport.remove(dir) }
        let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: Logger(label: "test") { _ in sink })
        defer { store.audit.close() }
        defer { sink.open.signal() }  // whatever happens below, before the close
        // A commit of 100 records, whose first line the sink holds; then 15 more commits.
        try await store.audit.append((0..<100).map(record), with: nil)
        #expect(sink.holding.wait(timeout: .now() + .seconds(60)) == .success, "the first commit's lines did not reach the sink")
        for batch in 1..<16 {
            try await store.audit.append((0..<100).map { record(batch * 100 + $0) }, with: nil)
        }
        #expect(store.audit.headRecord.seq == 1600)
        sink.open.signal()
        // The first commit's 100 lines, then the 1,024 that waited (1,124), then the warning.
        #expect(sink.done.wait(timeout: .now() + .seconds(60)) == .success, "the lines were not written once the sink moved")
        let (seqs, warnings) = sink.seen.withLock { ($0.seqs, $0.warnings) }
        #expect(seqs == Array(1...1124), "the decision lines in chain order")
        #expect(warnings == ["476 1125 1600"], "the dropped lines counted, the first and last named")
    }
}

/// A log handler stuck on the first decision line (`holding`) until `open` is signalled;
/// `done` is signalled at the warning that counts the dropped lines (written after the lines).
private final class StuckSink: LogHandler, @unchecked Sendable {
    let holding = DispatchSemaphore(value: 0), open = DispatchSemaphore(value: 0), done = DispatchSemaphore(value: 0)
    let seen = Mutex<(seqs: [UInt64], warnings: [String])>(([], []))
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        if event.message.description.hasPrefix("decision lines dropped") {
            let fields = ["dropped", "audit.seq.first", "audit.seq.last"].map { event.metadata?[$0]?.description ?? "?" }
            seen.withLock { $0.warnings.append(fields.joined(separator: " ")) }
            done.signal()
            return
        }
        guard event.message.description == "decision", let seq = event.metadata?["audit.seq"].flatMap({ UInt64($0.description) }) else { return }
        if seq == 1 {
            holding.signal()
            open.wait()
        }
        seen.withLock { $0.seqs.append(seq) }
    }
}
