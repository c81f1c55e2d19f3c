#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import LanyardClient
import LanyardCore
import LanyardWire

struct PolicyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "policy", abstract: "Validate, compare, reload and show the policy.",
                                                    subcommands: [Validate.self, Diff.self, Reload.self, Show.self])

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
                                  ("warnings", .array(review.warnings.map { .string($0.description) }))])) {
                "\(file): valid (\(policy.agents.count) agents, \(policy.capabilities.count) capabilities, \(grants) grants)"
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
                changes.isEmpty ? "no changes from the active policy (\(shown.policyVersion.prefix(12)))" : changes.joined(separator: "\n")
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
                r.changed ? "policy \(r.policyVersion.prefix(12)) is now active" : "policy unchanged (\(r.policyVersion.prefix(12)))"
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
                "# \(r.path) (version \(r.policyVersion))\n" + r.source
            }
        }
    }

    static func parse(_ file: String) throws -> Policy {
        guard let fp = fopen(file, "r") else { throw Failure("cannot read \(file): \(String(cString: strerror(errno)))") }
        defer { fclose(fp) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&chunk, 1, chunk.count, fp)
            if n == 0 { break }
            bytes += chunk[0..<n]
        }
        do {
            return try PolicyParser.parse(String(decoding: bytes, as: UTF8.self), file: file)
        } catch {
            throw Failure("invalid policy: \(error)")
        }
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
                v.ok ? "audit chain ok: \(v.records) records, head \(v.headHash.prefix(16))"
                     : "audit chain BROKEN at record \(v.firstBrokenSeq): \(v.reason) (\(v.records) records before it verify)"
            }
            if !v.ok { throw ExitCode(1) }
        }
    }

    struct Filters: ParsableArguments {
        @Option(help: "Only this agent.") var agent: String?
        @Option(help: "Only this capability.") var capability: String?
        @Option(help: "Only this decision: allow, deny or pending.") var decision: String?
        @Option(help: "From this sequence number.") var from: UInt64 = 1
        @Option(help: "At most this many records.") var limit: Int = 1000
        @Option(help: "From this time: RFC 3339 (2026-11-29T10:00:00Z) or unix seconds.") var since: String?
        @Option(help: "Before this time: RFC 3339 or unix seconds.") var until: String?

        func validate() throws {
            for (flag, value) in [("--since", since), ("--until", until)] {
                if let value, parseTime(value) == nil { throw ValidationError("\(flag) '\(value)': use RFC 3339 UTC (2026-11-29T10:00:00Z) or unix seconds") }
            }
        }

        func request(from seq: UInt64) -> Lanyard_V1_AdminRequest {
            var req = Lanyard_V1_AdminRequest()
            req.auditQuery = .with {
                $0.fromSeq = seq
                $0.agent = agent ?? ""
                $0.capability = capability ?? ""
                $0.decision = decision ?? ""
                $0.limit = 500
                $0.sinceUs = since.flatMap(parseTime).map { $0 * 1_000_000 } ?? 0
                $0.untilUs = until.flatMap(parseTime).map { $0 * 1_000_000 } ?? 0
            }
            return req
        }
    }

    /// Pages through the chain, handing each record to `body`.
    static func each(_ sockets: Sockets, _ f: Filters, _ body: (Lanyard_V1_AuditRecord) -> Void) async throws {
        let admin = sockets.admin
        var next = f.from
        var left = f.limit
        while left > 0 {
            let page = try await admin.call(f.request(from: next)).auditQuery
            for r in page.records.prefix(left) { body(r) }
            left -= page.records.count
            guard page.nextSeq > next else { break }
            next = page.nextSeq
        }
    }

    struct Query: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show audit records matching the filters.")
        @OptionGroup var sockets: Sockets
        @OptionGroup var filters: Filters

        func run() async throws {
            try await AuditCommand.each(sockets, filters) { r in
                if sockets.json {
                    print(r.json.text)
                } else {
                    let who = r.agent.isEmpty ? "uid \(r.uid)" : r.agent
                    print("\(r.seq)  \(rfc3339(micros: r.timeUs))  \(r.event)  \(who)  \(r.capability)  \(r.decision)  \(r.outcome)  \(r.reason)")
                }
            }
        }
    }

    struct Tail: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the last records, then new ones as they are written (Ctrl-C to stop).")
        @OptionGroup var sockets: Sockets
        @Option(name: .short, help: "How many records to show first.") var n: UInt64 = 10

        func run() async throws {
            let admin = sockets.admin
            var req = Lanyard_V1_AdminRequest()
            req.auditQuery = .with { $0.limit = 1 }
            let head = try await admin.call(req).auditQuery.headSeq
            var next = head > n ? head - n + 1 : 1
            while true {
                req.auditQuery = .with {
                    $0.fromSeq = next
                    $0.limit = 500
                }
                let page = try await admin.call(req).auditQuery
                for r in page.records {
                    print(sockets.json ? r.json.text : "\(r.seq)  \(rfc3339(micros: r.timeUs))  \(r.event)  \(r.agent.isEmpty ? "uid \(r.uid)" : r.agent)  \(r.capability)  \(r.decision)  \(r.outcome)  \(r.reason)")
                    next = r.seq + 1
                }
                if page.records.isEmpty { try await Task.sleep(for: .seconds(1)) }  // follow, like tail -f
            }
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print records as JSON lines (for shipping to a central system).")
        @OptionGroup var sockets: Sockets
        @OptionGroup var filters: Filters

        func run() async throws {
            try await AuditCommand.each(sockets, filters) { print($0.json.text) }
        }
    }
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
