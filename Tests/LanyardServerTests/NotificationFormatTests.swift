import Foundation
import LanyardCore
import LanyardCrypto
import LanyardStore
import LanyardTestSupport
import Logging
import Testing

@testable import LanyardServer

/// Issue 21, acceptance 3: notification formats against local receivers, through a real
/// daemon. Slack and ntfy bodies as those services document them; commands with the JSON
/// on stdin, killed with their process group at their timeout; retries and audited failures.
@Suite(.serialized)
struct NotificationFormatTests {
    /// The test policy with `notify` (YAML lines, indented under `approvers.notify`).
    func policy(notify: String) -> String {
        Users.policy(approverUID: 4242).replacingOccurrences(of: "approvers: { uids: [4242] }",
            with: "approvers:\n  uids: [4242]\n  notify:\n" + notify.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n"))
    }

    /// Text an agent controls, made to mention everyone, make links and fake lines.
    static let hostile = "<!channel> <https://evil.example|click me> & @here\n*MEDIUM* \u{1B}[2A\u{202E}x"

    func json(_ data: Data) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// An executable script in `dir`.
    func script(_ dir: String, _ name: String, _ body: String) -> String {
        let path = dir + "/" + name
        TestSupport.write("#!/bin/sh\n" + body + "\n", to: path)
        chmod(path, 0o755)
        return path
    }

    @Test func slackMessagesHaveTextAndBlocksAndEscapeAgentText() async throws {
        let receiver = WebhookReceiver()
        defer { receiver.close() }
        let keyDir = TestSupport.tempDir("key")
        defer { TestSupport.remove(keyDir) }
        TestSupport.writeSecret("k", to: keyDir + "/webhook.key")
        let d = try TestDaemon(policy: policy(notify: """
            console_url: http://127.0.0.1:8484/
            webhook: { url: "http://127.0.0.1:\(receiver.port)/services/T0/B0/x", format: slack, secret_file: \(keyDir)/webhook.key }
            """))
        let a = d.client(as: Users.agent!)
        let pending = try await a.authorize("github:push", resource: Self.hostile, args: ["why": Self.hostile, "big": String(repeating: "&<", count: 500)])
        let request = try #require(try await onThread { receiver.waitForRequests(1) }.first)
        await a.close()
        await d.stop()

        #expect(request.path == "/services/T0/B0/x" && request.headers["content-type"] == "application/json")
        // Signed where the key is configured: harmless to Slack, checkable by a relay.
        #expect(request.headers["x-lanyard-signature"] == "sha256=" + Hex.encode(HMAC.sha256(key: Array("k".utf8), message: Array(request.body))))
        let message = try json(request.body)
        let text = try #require(message["text"] as? String)
        #expect(text.hasPrefix("MEDIUM approval needed: a wants github:push on "))
        let blocks = try #require(message["blocks"] as? [[String: Any]])
        #expect(blocks.map { $0["type"] as? String } == ["section", "section", "context"])
        var shown: [String] = [text]
        for block in blocks {
            let texts = [block["text"]].compactMap { $0 as? [String: Any] } + (block["fields"] as? [[String: Any]] ?? [])
                + (block["elements"] as? [[String: Any]] ?? [])
            #expect(!texts.isEmpty && texts.allSatisfy { $0["type"] as? String == "mrkdwn" && $0["text"] is String })
            shown += texts.compactMap { $0["text"] as? String }
        }
        #expect((blocks[1]["fields"] as? [Any])?.count ?? 11 <= 10, "Slack allows 10 fields")
        // Slack's limits: 3,000 characters a section text, 2,000 a field; long agent text is cut.
        #expect(shown.allSatisfy { $0.count <= 2000 } && request.body.count < 8000, "\(request.body.count) bytes")
        #expect(shown.contains { $0.hasPrefix("*Args*\nbig=" + String(repeating: "&amp;&lt;", count: 10)) && $0.hasSuffix("…") })
        let all = shown.joined(separator: "\n")
        // The context the approver needs.
        for needle in ["*Agent*\na (uid \(Users.agent!.uid)", "*Capabilities*\ngithub:push", "*Risk*\nMEDIUM",
                       "*Binding code*\n`\(pending.bindingCode)`", "*Executable*\n", "Approval `\(pending.approvalID)`", "<!date^"] {
            #expect(all.contains(needle), "\(needle) missing")
        }
        #expect(all.contains("<http://127.0.0.1:8484/|Open the Lanyard console>"))
        // Hostile text: no mention, no link, no raw control, newline or bidi character.
        #expect(all.contains("&lt;!channel&gt; &lt;https://evil.example|click me&gt; &amp; @here\\n*MEDIUM* \\x1b[2A\\u{202e}x"), "\(all)")
        #expect(!all.contains("<!channel>") && !all.contains("<https://evil"))
        let angles = all.components(separatedBy: "<").count - 1
        #expect(angles == 2, "only the daemon's date and console link are Slack markup: \(all)")
        #expect(all.unicodeScalars.allSatisfy { !Inert.mustEscape($0) || $0 == "\n" })
    }

    @Test func ntfyMessagesHaveTopicTitlePriorityByRiskAndTags() async throws {
        let receiver = WebhookReceiver()
        defer { receiver.close() }
        let tokenDir = TestSupport.tempDir("key")
        defer { TestSupport.remove(tokenDir) }
        TestSupport.writeSecret("tk_approvals123\n", to: tokenDir + "/ntfy.token")
        let d = try TestDaemon(policy: policy(notify: """
            console_url: https://lanyard.example/console
            webhook:
              - { url: "http://127.0.0.1:\(receiver.port)/", format: ntfy, topic: lanyard-approvals, token_file: \(tokenDir)/ntfy.token }
            """))
        let a = d.client(as: Users.agent!)
        let medium = try await a.authorize("github:push", resource: Self.hostile)
        let high = try await a.authorize("deploy:production", resource: "prod")
        let requests = try await onThread { receiver.waitForRequests(2) }
        await a.close()
        await d.stop()

        #expect(requests.count == 2)
        #expect(requests.allSatisfy { $0.path == "/" && $0.headers["authorization"] == "Bearer tk_approvals123" })
        #expect(requests.allSatisfy { $0.headers["x-lanyard-signature"] == nil }, "no key configured: unsigned")
        let messages = try requests.map { try json($0.body) }
        let byTitle = Dictionary(uniqueKeysWithValues: messages.map { ($0["title"] as? String ?? "", $0) })
        let m = try #require(byTitle["MEDIUM approval needed: a"]), h = try #require(byTitle["HIGH approval needed: a"])
        #expect(messages.allSatisfy { $0["topic"] as? String == "lanyard-approvals" && $0["click"] as? String == "https://lanyard.example/console" })
        #expect(m["priority"] as? Int == 4 && h["priority"] as? Int == 5)
        #expect(m["tags"] as? [String] == ["warning", "lanyard", "medium"] && h["tags"] as? [String] == ["rotating_light", "lanyard", "high"])
        let mText = try #require(m["message"] as? String), hText = try #require(h["message"] as? String)
        #expect(mText.contains("binding code \(medium.bindingCode)") && hText.contains("binding code \(high.bindingCode)"))
        #expect(hText.contains("wants deploy:production on prod"))
        // Agent text is inert: its newline, escape and bidi override are shown, not obeyed.
        #expect(mText.contains("\\n*MEDIUM* \\x1b[2A\\u{202e}x"))
        #expect(!mText.split(separator: "\n").contains { $0.hasPrefix("*MEDIUM*") }, "\(mText)")
        #expect(mText.unicodeScalars.allSatisfy { !Inert.mustEscape($0) || $0 == "\n" })
    }

    /// Delivery failures are retried: a receiver answering 500 then 200 sees two attempts,
    /// and nothing is audited as failed.
    @Test func aFailedAttemptIsRetried() async throws {
        let receiver = WebhookReceiver(statuses: [500])
        defer { receiver.close() }
        let keyDir = TestSupport.tempDir("key")
        defer { TestSupport.remove(keyDir) }
        TestSupport.writeSecret("k", to: keyDir + "/webhook.key")
        let d = try TestDaemon(policy: policy(notify: "webhook: { url: \"http://127.0.0.1:\(receiver.port)/hook\", secret_file: \(keyDir)/webhook.key }")) {
            $0.webhookFirstBackoff = .milliseconds(10)
        }
        let a = d.client(as: Users.agent!)
        _ = try await a.authorize("github:push")
        await a.close()
        await d.shutdown()  // drains: the delivery has ended
        let requests = receiver.waitForRequests(2)
        #expect(requests.count == 2 && requests[0].body == requests[1].body)
        #expect(try d.daemon.store.queryAudit(AuditFilter()).allSatisfy { !$0.event.hasPrefix("notify.") })
        TestSupport.remove(d.dir)
    }

    /// A Slack webhook that fails every attempt is audited once, by its origin only (a
    /// Slack URL's path is its secret), with the last answer.
    @Test func aWebhookThatFailsEveryAttemptIsAudited() async throws {
        let receiver = WebhookReceiver(statuses: [500, 503, 500])
        defer { receiver.close() }
        let d = try TestDaemon(policy: policy(notify: "webhook: { url: \"http://127.0.0.1:\(receiver.port)/services/T0/B0/s3cr3t\", format: slack }")) {
            $0.webhookAttempts = 3
            $0.webhookFirstBackoff = .milliseconds(10)
        }
        let a = d.client(as: Users.agent!)
        let id = try await a.authorize("github:push").approvalID
        await a.close()
        await d.shutdown()
        #expect(receiver.waitForRequests(3).count == 3)
        let records = try d.daemon.store.queryAudit(AuditFilter())
        let failures = records.filter { $0.event == "notify.webhook" }
        #expect(failures.count == 1 && failures[0].approvalID == id && failures[0].outcome == "failed")
        #expect(failures.first?.reason == "3 attempts to http://127.0.0.1:\(receiver.port) failed; last: HTTP 500")
        #expect(records.allSatisfy { !$0.reason.contains("s3cr3t") })
        TestSupport.remove(d.dir)
    }

    /// A command gets the generic JSON on stdin, in a clean environment, with no descriptor
    /// of the daemon's; several notifiers (a command and a webhook) are served at once.
    @Test func aCommandGetsTheRequestAsJSONOnStdin() async throws {
        let receiver = WebhookReceiver()
        defer { receiver.close() }
        let dir = TestSupport.tempDir("cmd")
        defer { TestSupport.remove(dir) }
        TestSupport.writeSecret("k", to: dir + "/webhook.key")
        let program = script(dir, "notify.sh", "cat > \(dir)/stdin.json; env > \(dir)/env.txt; ls -l /proc/$$/fd > \(dir)/fds.txt; echo \"$@\" > \(dir)/argv.txt")
        let d = try TestDaemon(policy: policy(notify: """
            command: { argv: [\(program), --title, Lanyard], timeout_seconds: 20 }
            webhook: { url: "http://127.0.0.1:\(receiver.port)/hook", secret_file: \(dir)/webhook.key }
            """))
        let a = d.client(as: Users.agent!)
        let pending = try await a.authorize("github:push", resource: Self.hostile, args: ["branch": "main"])
        await a.close()
        await d.shutdown()  // drains: the command has run
        #expect(receiver.waitForRequests(1).count == 1)

        let event = try json(try #require(TestSupport.read(dir + "/stdin.json")))
        #expect(event["event"] as? String == "approval.pending" && event["approval_id"] as? String == pending.approvalID)
        #expect(event["resource"] as? String == Self.hostile && event["binding_code"] as? String == pending.bindingCode)
        #expect(event["args"] as? [String: String] == ["branch": "main"] && event["risk"] as? String == "medium")
        #expect(try #require(TestSupport.readText(dir + "/argv.txt")) == "--title Lanyard\n")
        let env = try #require(TestSupport.readText(dir + "/env.txt"))
        let names = Set(env.split(separator: "\n").compactMap { $0.split(separator: "=").first.map(String.init) })
        #expect(names.subtracting(["PATH", "LANG", "PWD"]).isEmpty, "the environment is clean: \(names.sorted())")
        let fds = try #require(TestSupport.readText(dir + "/fds.txt"))
        #expect(!fds.contains("socket:") && !fds.contains(".sqlite") && !fds.contains("/state"), "no descriptor of the daemon's leaks: \(fds)")
        #expect(try d.daemon.store.queryAudit(AuditFilter()).allSatisfy { !$0.event.hasPrefix("notify.") })
        TestSupport.remove(d.dir)
    }

    /// A command that closes its stdin unread is delivered (its exit status counts), and the
    /// write into the closed pipe costs the daemon nothing: no SIGPIPE.
    @Test func aCommandThatClosesItsStdinUnreadIsFine() async throws {
        let dir = TestSupport.tempDir("cmd")
        defer { TestSupport.remove(dir) }
        let program = script(dir, "deaf.sh", "exec 0<&-; ls / > /dev/null; echo ran >> \(dir)/runs")
        var limits = ServerLimits()
        limits.maxFrame = 1024 * 1024
        limits.maxFieldBytes = 200_100
        let d = try TestDaemon(policy: policy(notify: "command: { argv: [\(program)] }"), limits: limits)
        let a = d.client(as: Users.agent!)
        for i in 0..<3 {  // each body is 400 KB: far more than a pipe holds
            _ = try await a.authorize("github:push", resource: "r\(i)" + String(repeating: "x", count: 200_000), args: ["k": String(repeating: "y", count: 200_000)])
        }
        await a.close()
        await d.shutdown()
        #expect(try #require(TestSupport.readText(dir + "/runs")) == "ran\nran\nran\n")
        #expect(try d.daemon.store.queryAudit(AuditFilter()).allSatisfy { !$0.event.hasPrefix("notify.") })
        TestSupport.remove(d.dir)
    }

    /// A command that outlives its timeout is killed with everything it started, one that
    /// fails counts as a failed attempt, one anyone could replace is never run; all are
    /// retried, then audited.
    @Test func commandsAreKilledAtTheirTimeoutAndFailuresAreAudited() async throws {
        let dir = TestSupport.tempDir("cmd")
        defer { TestSupport.remove(dir) }
        let forever = script(dir, "forever.sh", "echo $$ >> \(dir)/pids; sleep 1000 & echo $! >> \(dir)/pids; wait")
        let failing = script(dir, "failing.sh", "cat > /dev/null; echo 'cannot reach the desktop' >&2; exit 3")
        let unsafe = script(dir, "unsafe.sh", "touch \(dir)/unsafe-ran")
        chmod(unsafe, 0o777)  // anyone could replace it: never run
        let d = try TestDaemon(policy: policy(notify: """
            command:
              - { argv: [\(forever)], timeout_seconds: 1 }
              - { argv: [\(failing)] }
              - { argv: [\(unsafe)] }
            """)) {
            $0.webhookAttempts = 2
            $0.webhookFirstBackoff = .milliseconds(10)
        }
        let a = d.client(as: Users.agent!)
        let started = ContinuousClock.now
        let id = try await a.authorize("github:push").approvalID
        await a.close()
        await d.shutdown()  // drains: every attempt has ended
        let elapsed = ContinuousClock.now - started

        let failures = try d.daemon.store.queryAudit(AuditFilter()).filter { $0.event == "notify.command" }
        #expect(failures.count == 3 && failures.allSatisfy { $0.approvalID == id && $0.outcome == "failed" })
        #expect(failures.contains { $0.reason == "2 attempts to \(forever) failed; last: \(forever) did not finish within its timeout of 1 s; killed with its process group" },
                "\(failures.map(\.reason))")
        #expect(failures.contains { $0.reason == "2 attempts to \(failing) failed; last: \(failing) exited with status 3" })
        #expect(failures.contains { $0.reason.hasPrefix("2 attempts to \(unsafe) failed; last: the notification command \(unsafe) is writable by group or others") })
        #expect(TestSupport.read(dir + "/unsafe-ran") == nil)
        #expect(try d.daemon.store.verifyAudit().ok)
        // Two attempts of one second each, then killed: not the script's 1000 s.
        #expect(elapsed >= .seconds(2) && elapsed < .seconds(30), "\(elapsed)")
        print("notify command timeout: 2 attempts of timeout_seconds 1 ended after \(elapsed)")

        let pids = try #require(TestSupport.readText(dir + "/pids")).split(separator: "\n").compactMap { pid_t($0) }
        #expect(pids.count == 4, "each attempt: the script and its sleep")
        for pid in pids {
            #expect(Self.isGone(pid), "pid \(pid) survived its timeout")
        }
    }

    /// Everything queued or in delivery is bounded: past the bound, notifications are
    /// dropped (and logged), never held.
    @Test func queuedAndInDeliveryNotificationsAreBounded() async throws {
        let stuck = WebhookReceiver(hold: true)
        defer { stuck.close() }
        let keyDir = TestSupport.tempDir("key")
        defer { TestSupport.remove(keyDir) }
        TestSupport.writeSecret("k", to: keyDir + "/webhook.key")
        let d = try TestDaemon(policy: Users.policy(approverUID: 4242))  // its own notifier has nothing to do
        let a = d.client(as: Users.agent!)
        let approval = try #require(try d.daemon.store.approval(id: try await a.authorize("github:push").approvalID))
        await a.close()
        let policy = try PolicyParser.parse(policy(notify: "webhook: { url: \"http://127.0.0.1:\(stuck.port)/hook\", secret_file: \(keyDir)/webhook.key }"),
                                            file: "policy.yaml")
        let notifier = Notifier(http: d.daemon.http[0], store: d.daemon.store, retry: .init(attempts: 1), logger: Logger(label: "test"), maxQueued: 2)
        let delivering = Task { await notifier.run() }
        for _ in 0..<5 { notifier.notify(approval, policy: policy) }
        #expect(notifier.pending == 2, "two held, three dropped")
        #expect(try await onThread { stuck.waitForRequests(2) }.count == 2)
        stuck.release()
        notifier.finish()
        await delivering.value
        #expect(notifier.pending == 0 && stuck.waitForRequests(2).count == 2)
        await d.stop()
    }

    /// No such process, or only a zombie awaiting its new parent's wait.
    static func isGone(_ pid: pid_t) -> Bool {
        guard kill(pid, 0) == 0 else { return errno == ESRCH }
        guard let stat = TestSupport.read("/proc/\(pid)/stat") else { return true }
        let text = String(decoding: stat, as: UTF8.self)
        guard let close = text.lastIndex(of: ")") else { return false }
        return text[text.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }
}
