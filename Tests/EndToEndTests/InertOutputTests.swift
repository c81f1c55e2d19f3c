import Foundation
import LanyardClient
import LanyardTestSupport
import LanyardWire
import Testing

/// Invariant 14 against a real daemon and the real lanyardctl: text an agent (or any other
/// local user) sends never reaches an operator's terminal or the daemon's log raw.
@Suite(.serialized, .enabled(if: TestSupport.isRoot, "needs root for the agent, approver and stranger uids"))
struct InertOutputTests {
    /// Rewrites the screen (save cursor, up two lines, clear the line), fakes a LOW request,
    /// then forges an audit line, and carries NUL, DEL, C1 and bidi controls.
    static let hostile = "\u{1B}7\u{1B}[2A\u{1B}[2Kgithub:read_repo on docs-site\r\n"
        + "999999  2026-01-01T00:00:00.000000Z  provision  releaser  deploy:production  allow\n"
        + "\u{0}\u{7F}\u{9B}2J\u{85}\u{202E}lmth.exe\u{202C}\u{2066}x\u{2069}\u{202A}\u{202B}\u{202D}"
    /// Above 60 KB of screen rewrites (the frame cap is 64 KiB).
    static let long = "\u{1B}[2A" + String(repeating: "\u{1B}[1;31m\u{9B}", count: 6_600)
    /// Under the daemon's stored-field cap (1,024 bytes), over what a view shows of a field.
    static let wide = "\u{1B}[2A" + String(repeating: "\u{9B}x", count: 300)

    static func policy(approver: UInt32) -> String {
        E2EUsers.policy().replacingOccurrences(of: "services:", with: "approvers: { uids: [\(approver)] }\nservices:")
    }

    /// Acceptance 2: every agent-controlled field of every view (approvals list and watch,
    /// audit query, tail and export, leases list, status, agents list, whoami) and the
    /// daemon's log, filled with hostile text by real agent processes.
    @Test func hostileAgentTextReachesNoViewAndNoLogRaw() async throws {
        let approver = try #require(TestSupport.user("lanyard-test-b"))
        let stranger = try #require(TestSupport.user("lanyard-test-c"))
        let agent = E2EUsers.agent!
        let d = try DaemonProcess(policy: Self.policy(approver: approver.uid))
        defer { d.cleanup() }
        try d.start()

        // An agent whose executable's path is hostile too (lanyardctl, copied there).
        let exe = d.dir + "/bin\u{1B}[2A\n\u{202E}/lanyardctl\u{1B}]0;owned\u{7}"
        try FileManager.default.createDirectory(atPath: (exe as NSString).deletingLastPathComponent, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o755])
        // Copied by cp, not in this process: a child forked by a concurrent test while the copy
        // was open for writing would make the exec fail with ETXTBSY (exit 126).
        #expect(try run(["/bin/cp", Bin.lanyardctl, exe]).status == 0)
        let asked = try run([exe, "authorize", "github:push", "--resource", Self.hostile, "--arg", "to=mallory\nto=alice", "--arg",
                             "k\u{1B}[2K=v\u{9B}\u{202E}"], as: agent, env: d.env)
        #expect(asked.status == 3, "\(asked)")
        let whoami = try run([exe, "whoami"], as: agent, env: d.env)
        #expect(whoami.status == 0, "\(whoami)")

        // The same agent on a raw connection: NUL in args, a hostile amount unit, 60 KB.
        let client = LanyardClient(connectedSocket: TestSupport.connect(d.agentSocket, asUID: agent.uid, gid: agent.gid))
        var pending: [String] = []
        for (resource, unit) in [(Self.hostile, Self.hostile), ("big", Self.long), (Self.wide, "u")] {
            var r = Lanyard_V1_Request()
            r.authorize = .with {
                $0.capability = "github:push"
                $0.resource = resource
                $0.args = ["n\u{0}ul": "v\u{0}\u{85}", "to": Self.hostile]
                $0.amount = .with { $0.value = 1_000_000; $0.unit = unit }
            }
            // A daemon that bounds stored sizes may refuse the 60 KB unit: either way it is audited.
            if let id = try? await client.call(r).authorize.approvalID { pending.append(id) }
        }
        #expect(pending.count >= 2)
        for capability in [Self.hostile, Self.long] {  // not capabilities: audited with the text in their reason
            _ = try? await client.authorize(capability)
        }
        _ = try? await client.authorize("github:read_repo", resource: Self.hostile)
        var provision = Lanyard_V1_Request()
        provision.provision = .with { $0.service = "github"; $0.scope = ["github:read_repo"]; $0.resource = Self.hostile }
        _ = try await client.call(provision)
        await client.close()
        // A stranger (no agent at all) forges an audit line through the capability.
        let strangerClient = LanyardClient(connectedSocket: TestSupport.connect(d.agentSocket, asUID: stranger.uid, gid: stranger.gid))
        _ = try? await strangerClient.authorize("x\n999999  2026-01-01T00:00:00.000000Z  provision  releaser  deploy:production  allow")
        await strangerClient.close()
        pending.insert(try #require(Self.approvalID(in: asked.stdout)), at: 0)

        var views: [(String, String)] = [("agent's whoami", whoami.stdout)]
        for (args, user) in [(["approvals", "list"], approver), (["approvals", "list", "--all"], approver),
                             (["approvals", "list", "--json"], approver), (["audit", "query"], root),
                             (["audit", "query", "--json"], root), (["audit", "export"], root),
                             (["leases", "list"], root), (["status"], root), (["agents", "list"], root)] {
            let r = try d.ctl(args, as: user)
            #expect(r.status == 0, "lanyardctl \(args.joined(separator: " ")): \(r.stderr)")
            views.append((args.joined(separator: " "), r.stdout))
            views.append((args.joined(separator: " ") + " (stderr)", r.stderr))
        }
        let headSeq = try Self.auditHead(d)
        let head = try #require(headSeq)
        views.append(("approvals watch", try Self.output(of: [Bin.lanyardctl, "approvals", "watch"], as: approver, d,
                                                        until: { out in pending.allSatisfy { out.contains($0) } })))
        views.append(("audit tail", try Self.output(of: [Bin.lanyardctl, "audit", "tail", "-n", "20"], as: root, d,
                                                   until: { $0.split(separator: "\n").contains { $0.hasPrefix("\(head)  ") } })))
        views.append(("daemon log", d.logText))

        for (name, text) in views {
            #expect(Self.rawControls(text).isEmpty, "\(name) holds raw control text: \(Self.rawControls(text).prefix(8))")
            #expect(!text.split(separator: "\n").contains { $0.hasPrefix("999999") }, "\(name) shows a forged line")
        }
        // The hostile text is there, shown: escaped, quoted, capped.
        let list = views.first { $0.0 == "approvals list" }!.1
        #expect(list.contains("\\x1b[2A\\x1b[2Kgithub:read_repo on docs-site\\r\\n999999"), "\(list.prefix(2000))")
        #expect(list.contains("{\"k\\x1b[2K\": \"v\\x9b\\u{202e}\""), "args are quoted and escaped: \(list.prefix(2000))")
        #expect(list.contains("\\u{202e}") && list.contains("\\x00") && list.contains("\\x9b") && list.contains("bytes]"))
        #expect(list.contains("MEDIUM") && !list.contains("LOW"), "the risk is the daemon's")
        #expect(whoami.stdout.contains("bin\\x1b[2A\\n\\u{202e}/lanyardctl\\x1b]0;owned\\x07"), "\(whoami.stdout)")
        let query = views.first { $0.0 == "audit query" }!.1
        #expect(query.contains("  \"\\x1b7\\x1b[2A\\x1b[2Kgithub:read_repo on docs-site\\r\\n999999  2026-01-01T00:00:00.000000Z  provision"),
                "\(query.suffix(3000))")
        #expect(query.split(separator: "\n").allSatisfy { $0.utf8.count < 8 * 1024 }, "every field is capped")
        // --json keeps the exact data: the encoder escapes, nothing is cut.
        let json = views.first { $0.0 == "approvals list --json" }!.1
        let approvals = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]])
        #expect(approvals.contains { $0["resource"] as? String == Self.hostile })
        #expect(approvals.contains { ($0["exe"] as? String)?.hasSuffix("/lanyardctl\u{1B}]0;owned\u{7}") == true })
    }

    /// Finding 4: `secret put` on a terminal does not echo the secret, and the terminal's
    /// echo comes back when it ends — normally, or killed by SIGINT while the user types.
    @Test func secretPutOnATerminalIsNotEchoed() throws {
        let d = try DaemonProcess(policy: E2EUsers.policy())
        defer { d.cleanup() }
        try d.start()
        let secret = "typed-secret-\(UUID().uuidString)"

        let typed = try Terminal.run([Bin.lanyardctl, "secret", "put", "openai"], env: d.env) { term in
            #expect(term.read(until: "not shown"), "the prompt says what to type: \(term.seen)")
            #expect(!term.echoes, "echo is off while the secret is typed")
            term.write(secret + "\n\u{04}")
        }
        #expect(typed.status == 0, "\(typed.output)")
        #expect(typed.output.contains("stored openai secret version 1"), "\(typed.output)")
        #expect(!typed.output.contains(secret), "the secret was echoed: \(typed.output)")
        #expect(typed.echoesAfter, "echo is back on")
        let got = try d.ctl(["provision", "openai", "--scope", "openai:chat"], as: E2EUsers.agent)
        #expect(got.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == secret, "what was typed is what was stored")

        let interrupted = try Terminal.run([Bin.lanyardctl, "secret", "put", "openai"], env: d.env) { term in
            #expect(term.read(until: "not shown"))
            #expect(!term.echoes)
            term.write("half-typ")
            kill(term.pid, SIGINT)
        }
        #expect(interrupted.status == 128 + SIGINT, "ended by the signal: \(interrupted.status)")
        #expect(interrupted.echoesAfter, "echo is back on after Ctrl-C")
    }

    // MARK: Helpers

    static func approvalID(in text: String) -> String? {
        text.split(separator: "\n").first { $0.hasPrefix("approval: ") }.map { String($0.dropFirst(10).prefix { $0 != " " }) }
    }

    static func auditHead(_ d: DaemonProcess) throws -> UInt64? {
        let status = try d.ctl(["status", "--json"]).stdout
        return (try JSONSerialization.jsonObject(with: Data(status.utf8)) as? [String: Any])?["audit_head"] as? UInt64
    }

    /// Raw bytes a terminal would act on: C0 controls but the newline between lines, DEL,
    /// C1 (U+0080–U+009F) and the bidi embeddings, overrides and isolates.
    static func rawControls(_ text: String) -> [String] {
        text.unicodeScalars.enumerated().compactMap { i, u in
            let v = u.value
            let bad = (v < 0x20 && v != 0x0A) || (0x7F...0x9F).contains(v) || (0x202A...0x202E).contains(v) || (0x2066...0x2069).contains(v)
            return bad ? "U+\(String(v, radix: 16)) at \(i)" : nil
        }
    }

    /// The stdout of a command that runs until stopped, read until `done` holds; then it is stopped.
    static func output(of argv: [String], as user: (uid: UInt32, gid: UInt32), _ d: DaemonProcess,
                       until done: (String) -> Bool) throws -> String {
        let args = user.uid == getuid() ? argv : ["/usr/bin/setpriv", "--reuid=\(user.uid)", "--regid=\(user.gid)", "--clear-groups", "--"] + argv
        let out = try closingPipe()
        let null = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { close(null); close(out.read) }
        let child: Child
        do {
            defer { close(out.write) }
            child = try Child(args, env: d.env, stdin: null, stdout: out.write, stderr: null)
        }
        defer { child.stop() }
        let deadline = Date().addingTimeInterval(60)  // against hanging: a view that never shows it fails
        var seen: [UInt8] = []
        while !done(String(decoding: seen, as: UTF8.self)), let chunk = readSome(out.read, until: deadline) { seen += chunk }
        return String(decoding: seen, as: UTF8.self)
    }
}

private let root: (uid: UInt32, gid: UInt32) = (0, 0)

/// A pseudo-terminal with a command on its other side (its stdin, stdout and stderr).
final class Terminal {
    let master: Int32
    let slave: Int32
    let pid: pid_t
    private(set) var seen = ""

    struct Outcome {
        var status: Int32
        var output: String
        var echoesAfter: Bool
    }

    private init(_ argv: [String], env: [String: String]) throws {
        // posix_openpt and friends are not in Glibc's Swift module: /dev/ptmx and its two ioctls.
        master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC)
        var unlock: Int32 = 0, number: UInt32 = 0
        guard master >= 0, ioctl(master, 0x4004_5431 /* TIOCSPTLCK */, &unlock) == 0, ioctl(master, 0x8004_5430 /* TIOCGPTN */, &number) == 0 else {
            throw HarnessError("no pseudo-terminal: \(String(cString: strerror(errno)))")
        }
        slave = open("/dev/pts/\(number)", O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard slave >= 0 else { throw HarnessError("cannot open /dev/pts/\(number)") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for fd in Int32(0)...2 { posix_spawn_file_actions_adddup2(&actions, slave, fd) }
        let environment = ProcessInfo.processInfo.environment.merging(env) { $1 }.map { "\($0)=\($1)" }
        var cargs = argv.map { strdup($0) } + [nil]
        var cenv = environment.map { strdup($0) } + [nil]
        defer { (cargs + cenv).forEach { free($0) } }
        var child: pid_t = 0
        guard posix_spawn(&child, argv[0], &actions, nil, &cargs, &cenv) == 0 else { throw HarnessError("cannot start \(argv[0])") }
        pid = child
    }

    /// Runs `argv` on a new terminal, lets `session` type into it, and waits for the end.
    static func run(_ argv: [String], env: [String: String], _ session: (Terminal) -> Void) throws -> Outcome {
        let t = try Terminal(argv, env: env)
        defer { close(t.master); close(t.slave) }
        session(t)
        var status: Int32 = 0
        while waitpid(t.pid, &status, 0) < 0 && errno == EINTR {}
        _ = t.read(until: "\u{0}", timeoutMs: 200)  // what is left (the child is gone: nothing more comes)
        let code = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
        return Outcome(status: code, output: t.seen, echoesAfter: t.echoes)
    }

    /// Whether the terminal echoes what is typed.
    var echoes: Bool {
        var t = termios()
        return tcgetattr(slave, &t) == 0 && (t.c_lflag & tcflag_t(ECHO)) != 0
    }

    func write(_ s: String) { TestSupport.writeAll(master, Array(s.utf8)) }

    /// Reads the terminal's output until it holds `text` (false after `timeoutMs` of silence).
    @discardableResult
    func read(until text: String, timeoutMs: Int32 = 30_000) -> Bool {
        var buf = [UInt8](repeating: 0, count: 4096)
        while !seen.contains(text) {
            var p = pollfd(fd: master, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, timeoutMs) == 1 else { return false }
            let n = Glibc.read(master, &buf, buf.count)
            if n <= 0 { return false }
            seen += String(decoding: buf[0..<n], as: UTF8.self)
        }
        return true
    }
}
