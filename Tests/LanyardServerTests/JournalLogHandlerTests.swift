@testable import LanyardServer
import Testing

/// The journal's field names for log metadata (the entries themselves are checked in a
/// booted systemd by scripts/test-systemd.sh).
struct JournalLogHandlerTests {
    @Test func metadataKeysBecomeJournalFieldNames() {
        #expect(JournalLogHandler.fieldName("audit.seq") == "LANYARD_AUDIT_SEQ")
        #expect(JournalLogHandler.fieldName("policy.decision") == "LANYARD_POLICY_DECISION")
        #expect(JournalLogHandler.fieldName("caller.uid") == "LANYARD_CALLER_UID")
        #expect(JournalLogHandler.fieldName("ünit=x\nMESSAGE") == "LANYARD___NIT_X_MESSAGE", "only [A-Z0-9_], byte by byte (ü is two)")
        #expect(JournalLogHandler.fieldName(String(repeating: "a", count: 100)).utf8.count == 64)
    }

    @Test func levelsMapToSyslogPriorities() {
        #expect([.debug, .info, .notice, .warning, .error, .critical].map(JournalLogHandler.priority) == [7, 6, 5, 4, 3, 2])
    }
}
