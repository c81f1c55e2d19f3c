import LanyardCore
import LanyardCrypto
@testable import LanyardStore
import LanyardTestSupport
import Logging
import Testing

/// Audit records of MCP tool calls (issue 17): three fields more, in the chain only when set.
@Suite(.serialized)
struct ToolCallAuditTests {
    let logger = Logger(label: "test")

    static func plain(_ i: Int) -> AuditRecord {
        var r = AuditRecord(event: "authorize")
        r.agent = "a"
        r.capability = "github:read_repo"
        r.decision = "allow"
        r.uid = Int64(1000 + i)
        return r
    }

    static func toolCall() -> AuditRecord {
        var r = AuditRecord(event: "tool_call")
        r.agent = "a"
        r.capability = "files:read"
        r.decision = "allow"
        r.mcpServer = "files"
        r.mcpTool = "read_file"
        r.argsDigest = String(repeating: "ab", count: 32)
        return r
    }

    /// The canonical form of a record without the new fields is byte for byte the one every
    /// existing chain was hashed with.
    @Test func aRecordWithoutToolFieldsHashesAsBefore() {
        var r = Self.plain(1)
        r.seq = 1
        r.timeMicros = 5
        r.prevHash = AuditRecord.genesisHash
        let expected = "lanyard-audit-v1\nseq=1:1\ntime=1:5\nevent=9:authorize\nagent_id=0:\nagent=1:a\nuid=4:1001\ngid=0:\npid=0:\n"
            + "capability=16:github:read_repo\nresource=0:\ndecision=5:allow\nreason=0:\noutcome=0:\nlease_id=0:\napproval_id=0:\n"
            + "approver=0:\npolicy_version=0:\nprev_hash=64:\(AuditRecord.genesisHash)\n"
        #expect(String(decoding: r.canonicalBytes, as: UTF8.self) == expected)
    }

    /// A chain written by a daemon before the migration (schema without the columns) still
    /// verifies once migrated; tool-call records follow it, and editing one of their new
    /// fields at rest breaks verification at that record.
    @Test func anOldChainStillVerifiesAndNewFieldsAreCovered() async throws {
        let dir = TestSupport.tempDir("mcpaudit")
        defer { TestSupport.remove(dir) }
        do {
            let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
            for i in 1...3 { try await store.audit.append(Self.plain(i)) }
            store.audit.close()
        }
        // Back to the schema before this migration (and the ones after it), as an older lanyardd left it.
        let mcp = try #require(Schema.migrations.firstIndex { $0.contains("ADD COLUMN mcp_server") })
        let db = try SQLiteConnection(path: dir + "/lanyard.db")
        try db.exec("""
            ALTER TABLE audit DROP COLUMN mcp_server;
            ALTER TABLE audit DROP COLUMN mcp_tool;
            ALTER TABLE audit DROP COLUMN args_digest;
            DROP INDEX approvals_digest;
            DROP INDEX IF EXISTS leases_bound;
            ALTER TABLE leases DROP COLUMN process_pid;
            ALTER TABLE leases DROP COLUMN process_start;
            ALTER TABLE audit DROP COLUMN reason_code;
            DROP TABLE IF EXISTS limit_counters;
            ALTER TABLE audit_head DROP COLUMN limits_digest;
            ALTER TABLE approvals DROP COLUMN unit;
            PRAGMA user_version = \(mcp);
            """)

        let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        defer { store.audit.close() }
        #expect(try store.verifyAudit().ok)
        let written = try await store.audit.append(Self.toolCall())
        #expect(written.seq == 4)
        let read = try #require(try store.queryAudit(AuditFilter()).last)
        #expect(read == written && read.mcpServer == "files" && read.mcpTool == "read_file" && read.argsDigest.count == 64)
        var v = try store.verifyAudit()
        #expect(v.ok && v.records == 4)

        for edit in ["mcp_server = 'other'", "mcp_tool = 'write_file'", "args_digest = '00'"] {
            try db.exec("UPDATE audit SET \(edit) WHERE seq = 4")
            v = try store.verifyAudit()
            #expect(!v.ok && v.firstBrokenSeq == 4 && v.reason.contains("altered"), "edit \(edit)")
            try db.exec("UPDATE audit SET mcp_server = 'files', mcp_tool = 'read_file', args_digest = '\(written.argsDigest)' WHERE seq = 4")
        }
        #expect(try store.verifyAudit().ok)
        // Adding a tool field to an old record is an edit too.
        try db.exec("UPDATE audit SET mcp_tool = 'x' WHERE seq = 2")
        #expect(try store.verifyAudit().firstBrokenSeq == 2)
    }

    /// A retried tool call finds the agent's live approval by digest: approved before pending,
    /// never a decided, used or expired one.
    @Test func liveApprovalIsFoundByDigest() throws {
        let dir = TestSupport.tempDir("mcpaudit")
        defer { TestSupport.remove(dir) }
        let clock = ManualClock()
        let store = try Store(directory: dir, masterKey: testKey, clock: clock, logger: logger)
        defer { store.audit.close() }
        func approval(_ id: String, _ state: ApprovalMachine.State, digest: String = "d1", agent: String = "i", expires: Int64 = 1_000_000) -> StoredApproval {
            var m = ApprovalMachine(risk: .medium, digest: digest, requesterUID: 1, quorum: 1, expiresMicros: clock.now + expires, timeoutMicros: expires)
            m.state = state
            return StoredApproval(id: id, machine: m, bindingCode: "AAAA-BBBB", agentID: agent, agent: "a", uid: 1, pid: 1, exe: "",
                                  capabilities: ["files:write"], resource: "", args: [:], amount: "", reason: "", createdMicros: clock.now, decidedReason: "")
        }
        func commit(_ a: StoredApproval) throws { try store.read { db in try db.transaction { try store.insertApproval(a)(db) } } }
        for a in [approval("used", .consumed), approval("denied", .denied), approval("old", .pending, expires: -1),
                  approval("other-agent", .pending, agent: "j"), approval("other-digest", .pending, digest: "d2")] {
            try commit(a)
        }
        #expect(try store.liveApproval(agentID: "i", digest: "d1", nowMicros: clock.now) == nil)
        try commit(approval("waiting", .pending))
        #expect(try store.liveApproval(agentID: "i", digest: "d1", nowMicros: clock.now)?.id == "waiting")
        try commit(approval("approved", .approved))
        #expect(try store.liveApproval(agentID: "i", digest: "d1", nowMicros: clock.now)?.id == "approved")
    }
}
