import Foundation
import LanyardClient
import LanyardTestSupport
import LanyardWire
import Testing

@Suite(.serialized)
struct ServiceEndToEndTests {
    /// Acceptance 1 and 5: `systemd-analyze verify` passes on the installed units, and a
    /// DESTDIR install lays out binaries, units and the example policy as documented.
    @Test func installedUnitsVerifyAndTheLayoutIsAsDocumented() throws {
        let prefix = TestSupport.tempDir("prefix")
        defer { TestSupport.remove(prefix) }
        let script = TestSupport.packageRoot.appendingPathComponent("scripts/install.sh").path
        let installed = try run([script, "--bin-dir", Bin.dir], env: ["PREFIX": prefix, "DESTDIR": ""])
        #expect(installed.status == 0, "\(installed.stderr)")
        let units = ["lanyard.service", "lanyard-agent.socket", "lanyard-admin.socket", "lanyard-credentials.socket"].map { "\(prefix)/lib/systemd/system/\($0)" }
        let verify = try run(["/usr/bin/systemd-analyze", "verify"] + units)
        #expect(verify.status == 0, "systemd-analyze verify: \(verify.stderr)")

        let dest = TestSupport.tempDir("dest")
        defer { TestSupport.remove(dest) }
        #expect(try run([script, "--bin-dir", Bin.dir], env: ["PREFIX": "/usr", "DESTDIR": dest]).status == 0)
        for path in ["usr/bin/lanyardd", "usr/bin/lanyardctl", "usr/lib/systemd/system/lanyard.service",
                     "usr/lib/systemd/system/lanyard-agent.socket", "usr/lib/systemd/system/lanyard-admin.socket",
                     "usr/lib/systemd/system/lanyard-credentials.socket",
                     "usr/lib/sysusers.d/lanyard.conf", "usr/lib/tmpfiles.d/lanyard.conf",
                     "usr/share/lanyard/policy.example.yaml", "usr/share/doc/lanyard/operator.md"] {
            #expect(FileManager.default.fileExists(atPath: "\(dest)/\(path)"), "missing \(path)")
        }
        #expect(FileManager.default.isExecutableFile(atPath: "\(dest)/usr/bin/lanyardd"))
        let service = try #require(TestSupport.readText("\(dest)/usr/lib/systemd/system/lanyard.service"))
        #expect(service.contains("ExecStart=/usr/bin/lanyardd ") && service.contains("Type=notify") && !service.contains("@BINDIR@"))
        let example = try run([Bin.lanyardctl, "policy", "validate", "\(dest)/usr/share/lanyard/policy.example.yaml"])
        #expect(example.status == 0, "the example policy must be valid: \(example.stderr)")
    }

    /// Acceptance 2: under systemd-socket-activate (both sockets by name) a call succeeds
    /// and the daemon created no socket itself.
    @Test func socketActivationUsesThePassedSockets() throws {
        let d = try DaemonProcess(policy: E2EUsers.policy())
        defer { d.cleanup() }
        var args = d.arguments
        for flag in ["--agent-socket", "--admin-socket"] {
            let i = args.firstIndex(of: flag)!
            args[i + 1] = d.dir + "/not-\(flag.dropFirst(2)).sock"  // must never be created
        }
        // The activator passes on no environment but what -E names (the sanitizers' options, in sanitized runs).
        let passed = ["ASAN_OPTIONS", "TSAN_OPTIONS"].filter { ProcessInfo.processInfo.environment[$0] != nil }.flatMap { ["-E", $0] }
        let activator = try SpawnedProcess(["/usr/bin/systemd-socket-activate", "-l", d.agentSocket, "-l", d.adminSocket,
                                            "--fdname=agent:admin"] + passed + [Bin.lanyardd] + args)
        defer { activator.stop() }
        #expect(activator.waitForStderr("Listening on \(d.adminSocket)"))
        chmod(d.agentSocket, 0o666)  // what SocketMode=0666 does in lanyard-agent.socket
        var before = stat()
        stat(d.agentSocket, &before)

        let status = try d.ctl(["status", "--json"])  // the first connection starts lanyardd
        #expect(status.status == 0 && status.stdout.contains("\"version\""), "\(status)")
        let who = try d.ctl(["authorize", "github:read_repo"], as: E2EUsers.agent!)
        #expect(who.status == 0, "\(who)")
        var after = stat()
        stat(d.agentSocket, &after)
        #expect(before.st_ino == after.st_ino)
        #expect(!FileManager.default.fileExists(atPath: d.dir + "/not-agent-socket.sock"))
        #expect(!FileManager.default.fileExists(atPath: d.dir + "/not-admin-socket.sock"))
        #expect(activator.stop() == 0)  // SIGTERM: a graceful exit
        #expect(FileManager.default.fileExists(atPath: d.agentSocket))  // systemd's socket, not ours to remove
    }

    /// Acceptance 3: SIGTERM while 16 clients keep calling — every answered call is in the
    /// audit chain, the exit code is 0, and no socket file is left behind.
    @Test func sigtermDrainsUnderLoad() async throws {
        let d = try DaemonProcess(policy: E2EUsers.policy())
        defer { d.cleanup() }
        try d.start()
        let agent = E2EUsers.agent!
        let answered = Counter()
        let clients = (0..<16).map { _ in LanyardClient(connectedSocket: TestSupport.connect(d.agentSocket, asUID: agent.uid, gid: agent.gid)) }
        let stopped = try await withThrowingTaskGroup(of: Void.self) { group -> Int32 in
            for client in clients {
                group.addTask {
                    while true {
                        guard (try? await client.authorize("github:read_repo"))?.decision == .allow else { return }
                        answered.add()
                    }
                }
            }
            while answered.value < 300 { await Task.yield() }
            let status = d.stop()  // SIGTERM in the middle of the load; waits for the exit
            try await group.waitForAll()
            return status
        }
        #expect(stopped == 0)
        #expect(!FileManager.default.fileExists(atPath: d.agentSocket) && !FileManager.default.fileExists(atPath: d.adminSocket))
        let recorded = Int(try d.sql("SELECT count(*) FROM audit WHERE event = 'authorize' AND decision = 'allow'")) ?? -1
        #expect(recorded >= answered.value, "answered \(answered.value) calls, audit has \(recorded)")
        try d.start()
        try d.ctlSucceeds(["audit", "verify"])
        for c in clients { await c.close() }
    }

    /// Acceptance 4: export from a sequence number gives gap-free JSON lines; truncating
    /// the audit table's tail is reported by `audit verify` through the signed checkpoint.
    @Test func exportFromASequenceAndTruncationIsDetected() throws {
        let d = try DaemonProcess(policy: E2EUsers.policy())
        defer { d.cleanup() }
        try d.start()
        for _ in 0..<8 { _ = try d.ctl(["authorize", "github:read_repo"], as: E2EUsers.agent!) }
        let export = try d.ctl(["audit", "export", "--from", "3"])
        let seqs = try export.stdout.split(separator: "\n").map {
            try #require((try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["seq"] as? Int)
        }
        #expect(seqs == Array(3...8))

        #expect(d.stop() == 0)  // a graceful stop signs a checkpoint of the head
        #expect(FileManager.default.fileExists(atPath: d.stateDir + "/audit.checkpoint"))
        try d.sql("DELETE FROM audit WHERE seq > 6")
        try d.start()
        let verify = try d.ctl(["audit", "verify"])
        #expect(verify.status == 1 && verify.stdout.contains("truncated"), "\(verify)")
        #expect(d.waitForLog("records were removed"))
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func add() { lock.lock(); n += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return n }
}
