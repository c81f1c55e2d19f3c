#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import LanyardClient
import LanyardCore
import LanyardWire

struct PolicyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "policy", abstract: "Validate, compare, reload and show the policy.",
                                                    subcommands: [Validate.self, Diff.self, Reload.self, Show.self, Explain.self, Test.self])

    struct Validate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check a policy file offline (no daemon needed).")
        @OptionGroup var sockets: Sockets
        @Argument(help: "The policy file.") var file: String

        func run() async throws {
            let policy = try PolicyCommand.parse(file)
            // The same review lanyardd runs at load: errors refuse, warnings are shown.
            let review = SelectorReview.review(policy, file: file, host: LocalHost())
            if let error = review.errors.first { throw Failure("invalid policy: \(error)") }
            let grants = policy.agents.reduce(0) { $0 + $1.grants.count }
            if !sockets.json { for w in review.warnings { FileHandleStderr.write("lanyardctl: warning: \(w)\n") } }
            sockets.emit(.object([("valid", .bool(true)), ("file", .string(file)), ("agents", .int(Int64(policy.agents.count))),
                                  ("capabilities", .int(Int64(policy.capabilities.count))), ("grants", .int(Int64(grants))),
                                  ("mcp_servers", .int(Int64(policy.mcpServers.count))),
                                  ("warnings", .array(review.warnings.map { .string($0.description) }))])) {
                "\(file.field): valid (\(policy.agents.count) agents, \(policy.capabilities.count) capabilities, \(grants) grants"
                    + (policy.mcpServers.isEmpty ? ")" : ", \(policy.mcpServers.count) MCP server\(policy.mcpServers.count == 1 ? "" : "s"))")
                    + (review.warnings.isEmpty ? "" : ", \(review.warnings.count) warnings")
            }
        }
    }

    struct Diff: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Compare a policy file with the active version (admins).")
        @OptionGroup var sockets: Sockets
        @Argument(help: "The policy file.") var file: String

        func run() async throws {
            let candidate = try PolicyCommand.parse(file)
            var req = Lanyard_V1_AdminRequest()
            req.policyShow = .init()
            let shown = try await sockets.admin.call(req).policyShow
            let active: Policy
            do { active = try PolicyParser.parse(shown.source, file: shown.path) } catch { throw Failure("the active policy does not parse here: \(error)") }
            let changes = PolicyDiff.changes(from: active, to: candidate)
            sockets.emit(.object([("active_version", .string(shown.policyVersion)), ("changes", .array(changes.map { .string($0) }))])) {
                changes.isEmpty ? "no changes from the active policy (\(String(shown.policyVersion.prefix(12)).field))" : changes.map(\.shown).joined(separator: "\n")
            }
        }
    }

    struct Reload: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Re-read the policy file; a bad file is refused and the old policy stays (admins).")
        @OptionGroup var sockets: Sockets

        func run() async throws {
            var req = Lanyard_V1_AdminRequest()
            req.policyReload = .init()
            let r = try await sockets.admin.call(req).policyReload
            sockets.emit(.object([("policy_version", .string(r.policyVersion)), ("changed", .bool(r.changed))])) {
                r.changed ? "policy \(String(r.policyVersion.prefix(12)).field) is now active" : "policy unchanged (\(String(r.policyVersion.prefix(12)).field))"
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the active policy (admins).")
        @OptionGroup var sockets: Sockets

        func run() async throws {
            var req = Lanyard_V1_AdminRequest()
            req.policyShow = .init()
            let r = try await sockets.admin.call(req).policyShow
            sockets.emit(.object([("policy_version", .string(r.policyVersion)), ("path", .string(r.path)), ("source", .string(r.source))])) {
                "# \(r.path.shown) (version \(r.policyVersion.field))\n" + r.source  // the admins' own file, as it is
            }
        }
    }

    static func parse(_ file: String, code: Int32 = 1) throws -> Policy {
        do {
            return try PolicyParser.parse(read(file, code: code), file: file)
        } catch let error as PolicyError {
            throw Failure("invalid policy: \(error)", code: code)
        }
    }

    /// The whole of `file` as text.
    static func read(_ file: String, code: Int32 = 1) throws -> String {
        guard let fp = fopen(file, "r") else { throw Failure("cannot read \(file): \(String(cString: strerror(errno)))", code: code) }
        defer { fclose(fp) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&chunk, 1, chunk.count, fp)
            if n == 0 { break }
            bytes += chunk[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}


struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "audit", abstract: "Verify, query and export the audit chain (admins).",
                                                    subcommands: [Verify.self, Query.self, Export.self, Tail.self])

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check the whole hash chain; report the first broken record (exit 1 if any).")
        @OptionGroup var sockets: Sockets

        func run() async throws {
            var req = Lanyard_V1_AdminRequest()
            req.auditVerify = .init()
            let v = try await sockets.admin.call(req).auditVerify
            sockets.emit(.object([("ok", .bool(v.ok)), ("records", .int(Int64(v.records))),
                                  ("first_broken_seq", v.ok ? .null : .int(Int64(v.firstBrokenSeq))), ("reason", .string(v.reason)),
                                  ("head_hash", .string(v.headHash))])) {
                v.ok ? "audit chain ok: \(v.records) records, head \(String(v.headHash.prefix(16)).field)"
                     : "audit chain BROKEN at record \(v.firstBrokenSeq): \(v.reason.shown) (\(v.records) records before it verify)"
            }
            if !v.ok { throw ExitCode(1) }
        }
    }

    struct Filters: ParsableArguments {
        @Option(help: "Only this agent.") var agent: String?
        @Option(help: "Only this capability.") var capability: String?
        @Option(help: "Only this decision: allow, deny or pending.") var decision: String?
        @Option(help: "From this sequence number.") var from: UInt64 = 1
        @Option(help: "At most this many records (default: every matching record).") var limit: Int?
        @Option(help: "From this time: RFC 3339 (2026-11-29T10:00:00Z) or unix seconds.") var since: String?
        @Option(help: "Before this time: RFC 3339 or unix seconds.") var until: String?

        func validate() throws {
            for (flag, value) in [("--since", since), ("--until", until)] {
                if let value, parseTime(value) == nil { throw ValidationError("\(flag) '\(value)': use RFC 3339 UTC (2026-11-29T10:00:00Z) or unix seconds") }
            }
            if let limit, limit < 1 { throw ValidationError("--limit \(limit): give at least 1, or leave it out for every record") }
        }

        var none: Bool { agent == nil && capability == nil && decision == nil && since == nil && until == nil }

        func request(from seq: UInt64, limit: Int) -> Lanyard_V1_AdminRequest {
            var req = Lanyard_V1_AdminRequest()
            req.auditQuery = .with {
                $0.fromSeq = seq
                $0.agent = agent ?? ""
                $0.capability = capability ?? ""
                $0.decision = decision ?? ""
                $0.limit = UInt32(min(limit, 500))
                $0.sinceUs = since.flatMap(parseTime).map { $0 * 1_000_000 } ?? 0
                $0.untilUs = until.flatMap(parseTime).map { $0 * 1_000_000 } ?? 0
            }
            return req
        }
    }

    /// One page of matching records from `seq`; `more` when others match after them.
    /// A page that does not move forward is an error, never a silent end.
    static func page(_ admin: LanyardAdminClient, _ f: Filters, from seq: UInt64, limit: Int) async throws -> (records: [Lanyard_V1_AuditRecord], next: UInt64, more: Bool) {
        let page = try await admin.call(f.request(from: seq, limit: limit)).auditQuery
        var next = seq
        for r in page.records {
            guard r.seq >= next else { throw Failure("lanyardd answered audit record \(r.seq) out of order (expected \(next) or later); stopped at record \(seq), run again with --from \(seq)") }
            next = r.seq + 1
        }
        if page.nextSeq != 0 {
            guard !page.records.isEmpty, page.nextSeq == next else {
                throw Failure("lanyardd's audit page from \(seq) does not move forward (next \(page.nextSeq)); stopped at record \(seq), run again with --from \(seq)")
            }
        } else if page.records.isEmpty, f.none, page.headSeq >= seq {
            throw Failure("lanyardd answered no audit record from \(seq) though its chain reaches \(page.headSeq); stopped at record \(seq) (upgrade lanyardd)")
        }
        return (page.records, next, page.nextSeq != 0)
    }

    /// Hands every matching record from `start` to `emit`, a page at a time; after each
    /// page, stdout is flushed and then the cursor saved. Stops
    /// when none is left or `f.limit` are shown; with `follow`, waits for new records
    /// instead, and rides out the daemon's restarts.
    static func stream(_ sockets: Sockets, _ f: Filters, from start: UInt64, cursor: Cursor? = nil, follow: Bool = false,
                       _ emit: (Lanyard_V1_AuditRecord) -> Void) async throws {
        let admin = sockets.admin
        var next = start
        var left = f.limit ?? Int.max
        var retry = Backoff()
        while left > 0 {
            let page: (records: [Lanyard_V1_AuditRecord], next: UInt64, more: Bool)
            do {
                page = try await Self.page(admin, f, from: next, limit: left)
                retry.succeeded()
            } catch let e as LanyardError where follow && e.code == .unavailable {
                try await retry.wait(after: e)
                continue
            }
            page.records.forEach(emit)
            left -= page.records.count
            next = page.next
            if !page.records.isEmpty {
                try flushStdout()
                if let cursor {
                    try syncStdout()
                    try cursor.save(next - 1)
                }
            }
            if !page.more {
                guard follow else { return }
                try await Task.sleep(for: .seconds(1))  // poll for new records, like tail -f
            }
        }
    }

    /// One record on one line: fixed fields first, then the agent-chosen ones, each
    /// escaped and delimited.
    static func line(_ r: Lanyard_V1_AuditRecord) -> String {
        let who = r.agent.isEmpty ? "uid \(r.uid)" : r.agent.field
        let tool = r.mcpServer.isEmpty && r.mcpTool.isEmpty ? "" : "  tool \(r.mcpServer.field)/\(r.mcpTool.field) args \(String(r.argsDigest.prefix(16)).field)"
        return "\(r.seq)  \(rfc3339(micros: r.timeUs))  \(r.event.field)  \(who)  \(r.capability.field)  \(r.decision.field)  \(r.outcome.field)\(r.reasonCode.isEmpty ? "" : " \(r.reasonCode.field)")\(tool)  \(r.reason.quoted)"
    }

    struct Query: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show audit records matching the filters (every one unless --limit).")
        @OptionGroup var sockets: Sockets
        @OptionGroup var filters: Filters

        func run() async throws {
            try await AuditCommand.stream(sockets, filters, from: filters.from) { print(sockets.json ? $0.json.text : AuditCommand.line($0)) }
        }
    }

    struct Tail: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the last records, then new ones as they are written (Ctrl-C to stop).")
        @OptionGroup var sockets: Sockets
        @Option(name: .short, help: "How many records to show first.") var n: UInt64 = 10

        func run() async throws {
            var req = Lanyard_V1_AdminRequest()
            req.auditQuery = .with { $0.limit = 1 }
            let head = try await sockets.admin.call(req).auditQuery.headSeq
            try await AuditCommand.stream(sockets, try Filters.parse([]), from: head > n ? head - n + 1 : 1, follow: true) {
                print(sockets.json ? $0.json.text : AuditCommand.line($0))
            }
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print records as JSON lines (for shipping to a central system): every matching one unless --limit.",
            discussion: """
                With --cursor FILE, export resumes after the last record a previous run wrote (FILE holds its \
                sequence number; --from only applies while FILE does not exist) and FILE is replaced atomically \
                after each page is flushed to stdout: a crash repeats at most that page, never leaves a gap. \
                --follow keeps waiting for new records and reconnects when lanyardd restarts.
                """)
        @OptionGroup var sockets: Sockets
        @OptionGroup var filters: Filters
        @Flag(help: "Keep running: print new records as they are written; reconnect when lanyardd restarts.") var follow = false
        @Option(help: "A file that remembers the last record written, to resume exactly after it.") var cursor: String?

        func validate() throws {
            if follow, filters.limit != nil { throw ValidationError("--follow runs until stopped; leave out --limit") }
        }

        func run() async throws {
            let cursor = self.cursor.map(Cursor.init)
            let start = try cursor?.load().map { $0 + 1 } ?? filters.from
            try await AuditCommand.stream(sockets, filters, from: start, cursor: cursor, follow: follow) { print($0.json.text) }
        }
    }
}

/// Where a shipping run stopped: the sequence number of the last record written to
/// stdout, in a file replaced atomically (write, fsync, rename, fsync the directory).
struct Cursor {
    let path: String

    /// The saved sequence number; nil when the file does not exist yet.
    func load() throws -> UInt64? {
        guard let fp = fopen(path, "r") else {
            if errno == ENOENT { return nil }
            throw Failure("cannot read the cursor file \(path.quoted): \(String(cString: strerror(errno)))")
        }
        defer { fclose(fp) }
        var buffer = [UInt8](repeating: 0, count: 64)
        let text = String(decoding: buffer[..<fread(&buffer, 1, buffer.count, fp)], as: UTF8.self).trimmingSpace
        guard let seq = UInt64(text) else {
            throw Failure("the cursor file \(path.quoted) does not hold a sequence number; fix or remove it (then --from N says where to start)")
        }
        return seq
    }

    func save(_ seq: UInt64) throws {
        let temp = path + ".tmp"
        let bytes = Array("\(seq)\n".utf8)
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Failure("cannot write the cursor file \(temp.quoted): \(String(cString: strerror(errno)))") }
        let written = write(fd, bytes, bytes.count)
        let synced = fsync(fd)
        close(fd)
        guard written == bytes.count, synced == 0, rename(temp, path) == 0 else {
            throw Failure("cannot save the cursor file \(path.quoted): \(String(cString: strerror(errno))); records up to \(seq) were written")
        }
        let slash = path.lastIndex(of: "/")
        let dir = open(slash.map { String(path[..<$0]) }.map { $0.isEmpty ? "/" : $0 } ?? ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dir >= 0 {
            fsync(dir)
            close(dir)
        }
    }
}

/// Waits between reconnection attempts: 0.2 s, doubling up to 5 s; says so on stderr once per outage.
struct Backoff {
    private var delay: Duration = .zero

    mutating func wait(after error: LanyardError) async throws {
        if delay == .zero {
            FileHandleStderr.write("lanyardctl: \(error.code.name): \(Inert.text(error.message)); retrying until lanyardd answers\n")
        }
        delay = min(max(delay * 2, .milliseconds(200)), .seconds(5))
        try await Task.sleep(for: delay)
    }

    mutating func succeeded() {
        if delay != .zero { FileHandleStderr.write("lanyardctl: lanyardd answers again; continuing\n") }
        delay = .zero
    }
}

/// Pushes what was printed to stdout (every stdio stream); a failed write ends the command.
func flushStdout() throws {
    if fflush(nil) != 0 { throw Failure("cannot write to standard output: \(String(cString: strerror(errno)))") }
}

/// Makes what was written to stdout durable when it is a file (a pipe or a terminal has
/// nothing to sync), so a cursor never runs ahead of the records.
func syncStdout() throws {
    if fsync(1) != 0, errno != EINVAL, errno != EROFS { throw Failure("cannot sync standard output: \(String(cString: strerror(errno)))") }
}

extension String {
    var trimmingSpace: String { String(drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed()) }
}

/// RFC 3339 UTC (`2026-11-29T10:00:00Z`, fractional seconds ignored) or unix seconds.
func parseTime(_ s: String) -> Int64? {
    if let n = Int64(s) { return n }
    let c = Array(s.utf8)
    guard c.count >= 20, c[4] == UInt8(ascii: "-"), c[7] == UInt8(ascii: "-"), c[10] == UInt8(ascii: "T"),
          c[13] == UInt8(ascii: ":"), c[16] == UInt8(ascii: ":"), c.last == UInt8(ascii: "Z") else { return nil }
    func num(_ r: Range<Int>) -> Int32? { Int32(String(decoding: c[r], as: UTF8.self)) }
    guard let y = num(0..<4), let mo = num(5..<7), let d = num(8..<10), let h = num(11..<13), let mi = num(14..<16), let sec = num(17..<19)
    else { return nil }
    var t = tm()
    (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec) = (y - 1900, mo - 1, d, h, mi, sec)
    return Int64(timegm(&t))
}
