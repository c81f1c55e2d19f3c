import LanyardCore
import LanyardCrypto
@testable import LanyardStore
import LanyardTestSupport
import Logging
import Testing

/// The audit record's reason code (issue 19): stored, read back, and covered by the chain
/// hash when set; older records without one still verify.
struct ReasonCodeAuditTests {
    @Test func theReasonCodeIsStoredAndCoveredByTheChain() async throws {
        let dir = TestSupport.tempDir("reasoncode")
        defer { TestSupport.remove(dir) }
        let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: Logger(label: "test"))
        defer { store.audit.close() }
        var old = AuditRecord(event: "authorize")
        old.decision = "allow"
        try await store.audit.append(old)
        var coded = old
        coded.reasonCode = ReasonCode.granted.rawValue
        let written = try await store.audit.append(coded)
        #expect(try store.queryAudit(AuditFilter()).map(\.reasonCode) == ["", "granted"])
        #expect(try store.verifyAudit().ok)

        let db = try SQLiteConnection(path: dir + "/lanyard.db")
        try db.exec("UPDATE audit SET reason_code = 'not_granted' WHERE seq = \(written.seq)")
        #expect(try store.verifyAudit().firstBrokenSeq == written.seq)
        try db.exec("UPDATE audit SET reason_code = 'granted' WHERE seq = \(written.seq)")
        try db.exec("UPDATE audit SET reason_code = 'granted' WHERE seq = 1")  // adding one to an old record is an edit too
        #expect(try store.verifyAudit().firstBrokenSeq == 1)
    }
}
