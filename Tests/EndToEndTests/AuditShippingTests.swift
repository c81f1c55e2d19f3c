import Foundation
import LanyardClient
import LanyardTestSupport
import LanyardWire
import Testing

/// Findings 12 and 13, acceptance 4: audit export and query are complete unless a limit is
/// asked for, no record stops them, and `--follow --cursor` ships without a gap across a
/// daemon restart.
@Suite(.serialized, .enabled(if: TestSupport.isRoot, "needs root for the agent's uid"))
struct AuditShippingTests {
    /// `n` LOW Authorize calls by agent `a`, pipelined: one audit record each.
    static func authorize(_ n: Int, _ d: DaemonProcess) async throws {
        let agent = E2EUsers.agent!
        let client = LanyardClient(connectedSocket: TestSupport.connect(d.agentSocket, asUID: agent.uid, gid: agent.gid))
        for start in stride(from: 0, to: n, by: 50) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in start..<min(n, start + 50) {
                    group.addTask {
                        let r = try await client.authorize("github:read_repo")
                        #expect(r.decision == .allow)
                    }
                }
                try await group.waitForAll()
            }
        }
        await client.close()
    }

    /// The `seq` of every JSON line.
    static func seqs(_ jsonLines: String) -> [UInt64] {
        jsonLines.split(separator: "\n").compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["seq"] as? UInt64
        }
    }

    /// nil when `seqs` is exactly `expected`, in order; else what differs, briefly.
    static func mismatch(_ seqs: [UInt64], _ expected: ClosedRange<UInt64>) -> String? {
        if seqs.elementsEqual(expected) { return nil }
        let first = zip(seqs, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(seqs.count, expected.count)
        return "\(seqs.count) records for \(expected.count) (\(expected)); first difference at line \(first + 1): "
            + "\(seqs.dropFirst(first).prefix(3).map(String.init)) instead of \(expected.dropFirst(first).prefix(3).map(String.init))"
    }

    static func head(_ d: DaemonProcess) throws -> UInt64 {
        let head = try InertOutputTests.auditHead(d)
        return try #require(head)
    }

    @Test func exportAndQueryPrintEveryRecordAndFollowSurvivesARestart() async throws {
        let d = try DaemonProcess(policy: E2EUsers.policy())
        defer { d.cleanup() }
        try d.start()
        try await Self.authorize(5_000, d)
        let head = try Self.head(d)
        #expect(head >= 5_000)

        let export = try d.ctlSucceeds(["audit", "export"])
        #expect(Self.mismatch(Self.seqs(export.stdout), 1...head) == nil, "export printed \(Self.seqs(export.stdout).count) of \(head) records")
        let query = try d.ctlSucceeds(["audit", "query"])
        #expect(query.stdout.split(separator: "\n").count == Int(head))
        let limited = try d.ctlSucceeds(["audit", "export", "--from", "4990", "--limit", "7"])
        #expect(Self.mismatch(Self.seqs(limited.stdout), 4990...4996) == nil)

        // Shipping: follow with a cursor, through a restart of the daemon.
        let cursor = d.dir + "/ship.cursor"
        let follower = try Follower([Bin.lanyardctl, "audit", "export", "--follow", "--cursor", cursor], env: d.env)
        #expect(follower.read(untilSeq: head), "the follower printed up to \(head)")
        #expect(d.stop() == 0)
        #expect(follower.readStderr(until: "retrying until lanyardd answers"), "the follower waits for the daemon")
        try d.start()
        try await Self.authorize(120, d)
        let after = try Self.head(d)
        #expect(follower.read(untilSeq: after), "the follower carried on after the restart, up to \(after)")
        follower.stop()
        let shipped = Self.seqs(follower.output)
        #expect(Self.mismatch(shipped, 1...after) == nil, "one run: every record once, in order")

        // The next run resumes exactly after the cursor: at least once, never a gap.
        try await Self.authorize(30, d)
        let last = try Self.head(d)
        let cursorText = TestSupport.readText(cursor) ?? ""
        let saved = try #require(UInt64(cursorText.trimmingCharacters(in: .whitespacesAndNewlines)), "cursor file: \(cursorText)")
        #expect(saved <= after && after - saved <= 500, "the cursor is at most one page behind what was printed (\(saved) of \(after))")
        let resumed = try d.ctlSucceeds(["audit", "export", "--cursor", cursor])
        #expect(Self.mismatch(Self.seqs(resumed.stdout), (saved + 1)...last) == nil)
        #expect(TestSupport.readText(cursor) == "\(last)\n")
        let again = try d.ctlSucceeds(["audit", "export", "--cursor", cursor])
        #expect(again.stdout.isEmpty, "nothing new, nothing repeated")
    }

    /// Finding 13: a 50,000-character capability (audited as INVALID_ARGUMENT, the text in
    /// its reason) stops neither export nor tail; nor does a record made too large for a
    /// reply before fields were capped (planted with sqlite3).
    @Test func oversizedRecordsStopNeitherExportNorTail() async throws {
        let d = try DaemonProcess(policy: E2EUsers.policy())
        defer { d.cleanup() }
        try d.start()
        try await Self.authorize(3, d)
        let agent = E2EUsers.agent!
        let client = LanyardClient(connectedSocket: TestSupport.connect(d.agentSocket, asUID: agent.uid, gid: agent.gid))
        await #expect(throws: LanyardError.self) { try await client.authorize("github:" + String(repeating: "X", count: 50_000)) }
        await client.close()
        let planted = try Self.head(d)
        try await Self.authorize(3, d)
        let head = try Self.head(d)

        let export = try d.ctlSucceeds(["audit", "export"])
        #expect(Self.mismatch(Self.seqs(export.stdout), 1...head) == nil)
        let record = try #require(export.stdout.split(separator: "\n").first { $0.hasPrefix("{\"seq\":\(planted),") })
        #expect(record.utf8.count < 8 * 1024 && record.contains("bytes]"), "its fields were capped when it was written")
        let tail = try InertOutputTests.output(of: [Bin.lanyardctl, "audit", "tail", "-n", "5"], as: (0, 0), d) {
            $0.split(separator: "\n").contains { $0.hasPrefix("\(head)  ") }
        }
        #expect(tail.split(separator: "\n").contains { $0.hasPrefix("\(planted)  ") }, "tail shows the planted record: \(tail.prefix(2000))")

        // A record stored too large for a reply (as an older daemon would have): sent capped.
        #expect(d.stop() == 0)
        try d.sql("UPDATE audit SET reason = hex(zeroblob(30000)) WHERE seq = \(planted + 1)")
        try d.start()
        let exported = try d.ctlSucceeds(["audit", "export", "--from", "\(planted)"])
        #expect(Self.mismatch(Self.seqs(exported.stdout), planted...head) == nil, "export goes on past the oversized record")
        let capped = try #require(exported.stdout.split(separator: "\n").first { $0.hasPrefix("{\"seq\":\(planted + 1),") })
        #expect(capped.contains("…[+"), "the oversized field is cut with a visible marker")
        let tailed = try InertOutputTests.output(of: [Bin.lanyardctl, "audit", "tail", "-n", "4"], as: (0, 0), d) {
            $0.split(separator: "\n").contains { $0.hasPrefix("\(head)  ") }
        }
        #expect(tailed.split(separator: "\n").contains { $0.hasPrefix("\(planted + 1)  ") }, "\(tailed.prefix(2000))")
    }
}

/// A long-running lanyardctl whose stdout is read as it comes.
final class Follower {
    private let child: Child
    private let out: Int32
    private let err: Int32
    private var errors = ""
    private var buffer: [UInt8] = []
    private var searched = 0
    var output: String { String(decoding: buffer, as: UTF8.self) }

    init(_ argv: [String], env: [String: String]) throws {
        let out = try closingPipe()
        let err: (read: Int32, write: Int32)
        do { err = try closingPipe() } catch { close(out.read); close(out.write); throw error }
        let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
        defer { for fd in [null, out.write, err.write] { close(fd) } }
        do {
            child = try Child(argv, env: env, stdin: null, stdout: out.write, stderr: err.write)
        } catch {
            close(out.read)
            close(err.read)
            throw error
        }
        (self.out, self.err) = (out.read, err.read)
    }

    deinit {
        child.stop()  // a test that threw before stopping it leaves no follower behind
        close(out)
        close(err)
    }

    /// Reads stderr until it holds `text` (false if it ends first, or in 120 s: against hanging only).
    func readStderr(until text: String) -> Bool {
        let deadline = Date().addingTimeInterval(120)
        while !errors.contains(text) {
            guard let chunk = readSome(err, until: deadline) else { return false }
            errors += String(decoding: chunk, as: UTF8.self)
        }
        return true
    }

    /// Reads until a complete line with `"seq":seq` has come (false if the output ends first,
    /// or in 120 s: against hanging only).
    func read(untilSeq seq: UInt64) -> Bool {
        let deadline = Date().addingTimeInterval(120)
        let needle = Array("{\"seq\":\(seq),".utf8)
        while true {
            if let found = Self.find(needle, in: buffer, from: max(0, searched - needle.count)) {
                if buffer[(found + needle.count)...].contains(UInt8(ascii: "\n")) { return true }
                // Its line is not complete yet: look here again once more has come (moving past
                // it lost the record whenever a read ended inside that line).
                searched = found + needle.count
            } else {
                searched = buffer.count
            }
            guard let chunk = readSome(out, until: deadline) else { return false }
            buffer += chunk
        }
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard haystack.count >= needle.count, start <= haystack.count - needle.count else { return nil }
        return (start...(haystack.count - needle.count)).first { haystack[$0..<($0 + needle.count)].elementsEqual(needle) }
    }

    func stop() {
        child.stop()
    }
}
