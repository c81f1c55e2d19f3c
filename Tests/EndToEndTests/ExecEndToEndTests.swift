import Foundation
import LanyardTestSupport
import Testing

/// Issue 20, acceptance 2 and 3: leases bound to a process, and `lanyardctl exec`.
/// Real lanyardd and lanyardctl processes; the agent and approver are created uids.
@Suite(.serialized, .enabled(if: TestSupport.isRoot, "needs root to create agent and approver uids"))
struct ExecEndToEndTests {
    static let approver = TestSupport.user("lanyard-test-b")

    /// The e2e policy, with github:introspect so that the agent can ask whether a lease is live,
    /// an approver, and `bound` (a service whose leases must be bound to their process).
    static func policy() -> String {
        E2EUsers.policy(extra: ", github:introspect, bound:use, bound:introspect")
            .replacingOccurrences(of: "services:", with: "approvers: { uids: [\(approver!.uid)] }\nservices:\n  bound: { kind: opaque, bind_to_process: true }")
            .replacingOccurrences(of: "capabilities:", with: "capabilities:\n  github:introspect: { risk: low }\n  bound:use: { risk: low }\n  bound:introspect: { risk: low }")
    }

    /// A started daemon and a scratch directory the agent uid may write to.
    static func daemon() throws -> (DaemonProcess, String) {
        let d = try DaemonProcess(policy: policy())
        try d.start()
        let work = d.dir + "/work"
        mkdir(work, 0o777)
        chmod(work, 0o777)
        return (d, work)
    }

    /// Whether `secret` is a live lease, as Introspect answers it (exit 0 active, 2 inactive).
    static func isActive(_ d: DaemonProcess, _ secret: String) throws -> Bool {
        let r = try d.ctl(["introspect"], as: E2EUsers.agent, stdin: secret)
        guard r.status == 0 || r.status == 2 else { throw HarnessError("introspect exited \(r.status): \(r.stderr)") }
        return r.status == 0
    }

    /// Polls `condition` until it holds or `seconds` pass; whether it held.
    static func eventually(within seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        repeat {
            if try condition() { return true }
            usleep(10_000)
        } while Date() < deadline
        return try condition()
    }

    /// The wall clock in microseconds, as lanyardd records times.
    static func nowMicros() -> Int64 { Int64(Date().timeIntervalSince1970 * 1_000_000) }

    /// The lease id of live `secret` (Introspect).
    static func leaseID(_ d: DaemonProcess, _ secret: String) throws -> String {
        let r = try d.ctl(["introspect", "--json"], as: E2EUsers.agent, stdin: secret)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], "\(r)")
        return try #require(json["lease_id"] as? String)
    }

    /// Waits (10 s at most) until Introspect says `secret` is inactive, then how many seconds
    /// after `since` (µs; nil: the lease's issue, which precedes any exit of its process)
    /// lanyardd ended lease `id`. Measured on the daemon's record, not on this test's polling:
    /// `since` is taken before the process is made to exit, so this bounds exit → revocation.
    static func revocationDelay(_ d: DaemonProcess, lease id: String, secret: String, since: Int64? = nil) throws -> Double {
        #expect(try eventually(within: 10) { try !isActive(d, secret) }, "the lease stayed active")
        let row = try d.sql("SELECT ended_us - \(since.map(String.init) ?? "issued_us"), ended_reason FROM leases WHERE id = '\(id)'").split(separator: "|")
        #expect(row.count == 2 && row[1].hasPrefix("the process it was bound to"), "\(row)")
        return Double(row.first.flatMap { Int64($0) } ?? .max) / 1_000_000
    }

    /// `lanyardctl exec ARGS -- /bin/sh -c SCRIPT` as the agent uid; stdout and stderr go to `log`.
    static func exec(_ d: DaemonProcess, _ args: [String], script: String, log: String) throws -> SpawnedProcess {
        let agent = E2EUsers.agent!
        return try SpawnedProcess(["/usr/bin/setpriv", "--reuid=\(agent.uid)", "--regid=\(agent.gid)", "--clear-groups", "--",
                                   Bin.lanyardctl, "exec", "--agent-socket", d.agentSocket] + args + ["--", "/bin/sh", "-c", script],
                                  logFile: log)
    }

    /// A script prefix: writes `$1` (the secret's variable) to `work/secret`, then its pid to `work/pid`.
    static func announce(_ work: String, variable: String = "TOKEN") -> String {
        "printf %s \"$\(variable)\" > \(work)/secret; echo $$ > \(work)/pid.tmp; mv \(work)/pid.tmp \(work)/pid; "
    }

    /// Waits for the child to announce itself; its pid and the secret it saw.
    static func announced(_ work: String) throws -> (pid: pid_t, secret: String) {
        #expect(eventually(within: 10) { FileManager.default.fileExists(atPath: work + "/pid") }, "the command never started")
        let pid = try #require(TestSupport.readText(work + "/pid").flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) })
        return (pid, try #require(TestSupport.readText(work + "/secret")))
    }

    static func processExitRecords(_ d: DaemonProcess) throws -> String {
        try d.sql("SELECT lease_id, outcome, reason FROM audit WHERE event = 'lease.process_exit' ORDER BY seq")
    }

    // MARK: Acceptance 3

    /// The child sees the secret in the named variable; lanyardctl's own argv, environment and
    /// output never hold it; the child is COMMAND's own process (lanyardctl's child); the exit
    /// status is COMMAND's; the lease is revoked within a second of COMMAND's exit, audited.
    @Test func execHandsTheSecretToTheChildOnly() throws {
        let (d, work) = try Self.daemon()
        defer { d.cleanup() }
        let fifo = work + "/go"
        #expect(mkfifo(fifo, 0o666) == 0)
        chmod(fifo, 0o666)
        let log = work + "/log"
        let ctl = try Self.exec(d, ["--service", "github", "--scope", "github:read_repo", "--env", "TOKEN"],
                                script: Self.announce(work) + "read x < \(fifo); exit 7", log: log)
        let (child, secret) = try Self.announced(work)
        #expect(secret.hasPrefix("lyt_"), "the child saw \(secret.prefix(8))…")
        #expect(child != ctl.pid)
        let status = try #require(TestSupport.readText("/proc/\(child)/status"))
        #expect(status.contains("PPid:\t\(ctl.pid)\n"), "COMMAND is not lanyardctl's child")
        for file in ["cmdline", "environ"] {
            let bytes = try #require(TestSupport.read("/proc/\(ctl.pid)/\(file)"))
            #expect(!bytes.isEmpty && bytes.range(of: Data(secret.utf8)) == nil, "/proc/PID/\(file) of lanyardctl holds the secret")
        }
        // COMMAND inherits no descriptor of the stage's: not its connection to lanyardd (which
        // would answer it as the agent), not NIO's epoll — only stdin, stdout, stderr and the fifo's shell.
        let inherited = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(child)/fd")) ?? []
        let sockets = inherited.compactMap { Int32($0) }.filter { $0 > 2 }.compactMap { fd in
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(child)/fd/\(fd)")).flatMap { $0.hasPrefix("socket:") || $0.contains("eventpoll") ? $0 : nil }
        }
        #expect(sockets.isEmpty, "COMMAND inherited \(sockets)")
        let lease = try Self.leaseID(d, secret)

        // Let the command finish: its exit status comes back; its lease ends within a second.
        let released = Self.nowMicros()
        let writer = open(fifo, O_WRONLY)
        close(writer)
        #expect(ctl.stop(0) == 7)
        let delay = try Self.revocationDelay(d, lease: lease, secret: secret, since: released)
        #expect(delay < TestSupport.latencyBound(1), "revoked \(delay) s after the command was let go")
        let output = try #require(TestSupport.read(log))
        #expect(output.range(of: Data(secret.utf8)) == nil, "lanyardctl's output holds the secret")
        #expect(try Self.processExitRecords(d).contains("|revoked|the process it was bound to exited"))
        try d.ctlSucceeds(["audit", "verify"])
    }

    /// Killed with SIGKILL: the status is 128 + 9 and the lease ends within a second.
    @Test func killedCommandLosesItsLease() throws {
        let (d, work) = try Self.daemon()
        defer { d.cleanup() }
        let ctl = try Self.exec(d, ["--service", "github", "--scope", "github:read_repo", "--env", "TOKEN"],
                                script: Self.announce(work) + "exec sleep 600", log: work + "/log")
        let (child, secret) = try Self.announced(work)
        let lease = try Self.leaseID(d, secret)
        let killed = Self.nowMicros()
        kill(child, SIGKILL)
        let delay = try Self.revocationDelay(d, lease: lease, secret: secret, since: killed)
        #expect(delay < TestSupport.latencyBound(1), "revoked \(delay) s after SIGKILL")
        #expect(ctl.stop(0) == 137)
        #expect(try Self.processExitRecords(d).contains("|revoked|"))
    }

    /// Several credentials at once, in variables and in mode-0600 files of a private directory
    /// that is removed afterwards; every lease ends with the command.
    @Test func severalCredentialsInVariablesAndFiles() throws {
        let (d, work) = try Self.daemon()
        defer { d.cleanup() }
        let script = """
            printf %s "$A" > \(work)/a; printf %s "$B" > \(work)/b; cat "$CREDENTIALS_DIRECTORY/gh" > \(work)/file; \
            stat -c %a "$CREDENTIALS_DIRECTORY" > \(work)/dirmode; stat -c %a "$CREDENTIALS_DIRECTORY/gh" > \(work)/filemode; \
            echo "$CREDENTIALS_DIRECTORY" > \(work)/dir
            """
        let ctl = try Self.exec(d, ["--env", "A=github:read_repo", "--env", "B=bound:use", "--file", "gh=github:read_repo,github:introspect"],
                                script: script, log: work + "/log")
        #expect(ctl.stop(0) == 0, "\(TestSupport.readText(work + "/log") ?? "")")
        let secrets = try ["a", "b", "file"].map { try #require(TestSupport.readText(work + "/" + $0)) }
        #expect(secrets.allSatisfy { $0.hasPrefix("lyt_") } && Set(secrets).count == 3)
        #expect(TestSupport.readText(work + "/dirmode")?.hasPrefix("700") == true)
        #expect(TestSupport.readText(work + "/filemode")?.hasPrefix("600") == true)
        let dir = try #require(TestSupport.readText(work + "/dir")?.trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(!FileManager.default.fileExists(atPath: dir), "the credentials directory was left behind")
        for secret in secrets { #expect(try Self.eventually(within: 10) { try !Self.isActive(d, secret) }) }
        #expect(try d.sql("SELECT count(*) FROM leases WHERE ended_reason = 'the process it was bound to exited'") == "3")
    }

    /// A MEDIUM capability: lanyardctl prints the approval and its binding code, waits, and runs
    /// the command once an approver (another uid) approves; an unknown command exits 127.
    @Test func approvalFlowWithAnApprover() throws {
        let (d, work) = try Self.daemon()
        defer { d.cleanup() }
        let log = work + "/log"
        let ctl = try Self.exec(d, ["--service", "github", "--scope", "github:push", "--env", "TOKEN", "--approval-timeout", "30"],
                                script: Self.announce(work), log: log)
        #expect(Self.eventually(within: 10) { TestSupport.readText(log)?.contains("approval needed") == true })
        let text = try #require(TestSupport.readText(log))
        let id = try #require(text.firstMatch(of: /approval (\S+) \(code ([^)]+)\)/))
        #expect(!FileManager.default.fileExists(atPath: work + "/pid"), "the command ran before the approval")
        let approved = try d.ctl(["approvals", "approve", String(id.1)], as: Self.approver)
        #expect(approved.status == 0, "\(approved)")
        #expect(ctl.stop(0) == 0, "\(TestSupport.readText(log) ?? "")")
        let (_, secret) = try Self.announced(work)
        #expect(secret.hasPrefix("lyt_"))
        #expect(try Self.eventually(within: 10) { try !Self.isActive(d, secret) })

        let notFound = try run([Bin.lanyardctl, "exec", "--agent-socket", d.agentSocket, "--service", "github", "--scope", "github:read_repo",
                                "--env", "TOKEN", "--", "/nonexistent/command"], as: E2EUsers.agent)
        #expect(notFound.status == 127 && notFound.stderr.contains("credentials were revoked"), "\(notFound)")
    }

    // MARK: Acceptance 2

    /// `provision --bind-to-process`, and a service whose policy requires binding: the lease
    /// ends as soon as the lanyardctl that provisioned it has exited.
    @Test func boundLeaseEndsWithItsProcess() throws {
        let (d, _) = try Self.daemon()
        defer { d.cleanup() }
        let agent = E2EUsers.agent!
        for args in [["provision", "github", "--scope", "github:read_repo", "--bind-to-process"], ["provision", "bound", "--scope", "bound:use"]] {
            let r = try d.ctl(args + ["--json"], as: agent)
            #expect(r.status == 0, "\(r)")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
            let (lease, secret) = (try #require(json["lease_id"] as? String), try #require(json["secret"] as? String))
            let delay = try Self.revocationDelay(d, lease: lease, secret: secret)
            #expect(delay < TestSupport.latencyBound(1), "revoked \(delay) s after it was issued to a process that exits at once")
        }
        // Not bound: outlives the process.
        let unbound = try d.ctl(["provision", "github", "--scope", "github:read_repo"], as: agent).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try Self.isActive(d, unbound))
        #expect(try Self.processExitRecords(d).split(separator: "\n").count == 2)
    }

    /// The daemon restarts while bound commands run: one that died while it was down is revoked
    /// at startup (audited); one still running keeps its lease, watched again, until it exits.
    @Test func restartRevokesLeasesOfProcessesThatDied() throws {
        let (d, work) = try Self.daemon()
        defer { d.cleanup() }
        let (dead, alive) = (work + "/dead", work + "/alive")
        for dir in [dead, alive] { mkdir(dir, 0o777); chmod(dir, 0o777) }
        let fifo = alive + "/go"
        #expect(mkfifo(fifo, 0o666) == 0)
        chmod(fifo, 0o666)
        let args = ["--service", "github", "--scope", "github:read_repo", "--env", "TOKEN"]
        let dying = try Self.exec(d, args, script: Self.announce(dead) + "exec sleep 600", log: work + "/log1")
        let staying = try Self.exec(d, args, script: Self.announce(alive) + "read x < \(fifo); exit 0", log: work + "/log2")
        let (deadPID, deadSecret) = try Self.announced(dead)
        let (_, aliveSecret) = try Self.announced(alive)

        #expect(d.stop() == 0)
        kill(deadPID, SIGKILL)
        #expect(dying.stop(0) == 137)
        try d.start()
        // Revoked before the daemon serves: the first answer already says inactive.
        #expect(try !Self.isActive(d, deadSecret))
        #expect(try Self.processExitRecords(d).contains("|revoked|the process it was bound to was gone when lanyardd started"))
        let aliveLease = try Self.leaseID(d, aliveSecret)

        let released = Self.nowMicros()
        let writer = open(fifo, O_WRONLY)
        close(writer)
        #expect(staying.stop(0) == 0)
        let delay = try Self.revocationDelay(d, lease: aliveLease, secret: aliveSecret, since: released)
        #expect(delay < TestSupport.latencyBound(1), "revoked \(delay) s after the command was let go")
        try d.ctlSucceeds(["audit", "verify"])
    }
}
