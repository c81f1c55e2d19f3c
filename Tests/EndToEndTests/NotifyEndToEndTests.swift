import Foundation
import LanyardClient
import LanyardTestSupport
import LanyardWire
import Testing

@Suite(.serialized, .enabled(if: TestSupport.isRoot, "needs root to create agent and approver uids"))
struct NotifyEndToEndTests {
    /// A notification command that never reads its stdin (like `notify-send`) while an agent
    /// makes the request's JSON bigger than a pipe holds (control characters become six-byte
    /// `\u` escapes): the write into the closed pipe must not raise SIGPIPE in lanyardd, and
    /// the command starts with no signal ignored or blocked.
    @Test func aCommandThatIgnoresStdinCannotKillTheDaemon() async throws {
        let approver = try #require(TestSupport.user("lanyard-test-b"))
        let dir = TestSupport.tempDir("notify")
        defer { TestSupport.remove(dir) }
        let program = dir + "/deaf.sh"
        TestSupport.write("#!/bin/sh\nexec 0<&-\nls / > /dev/null\necho ran >> \(dir)/runs\nwhile read -r name value; do case $name in SigBlk:|SigIgn:) echo $value;; esac; done < /proc/$$/status > \(dir)/signals\n", to: program)
        chmod(program, 0o755)
        let policy = E2EUsers.policy().replacingOccurrences(of: "services:", with: """
            approvers:
              uids: [\(approver.uid)]
              notify:
                command: { argv: [\(program)] }
            services:
            """)
        let d = try DaemonProcess(policy: policy)
        defer { d.cleanup() }
        try d.start()
        let agent = E2EUsers.agent!
        let client = LanyardClient(connectedSocket: TestSupport.connect(d.agentSocket, asUID: agent.uid, gid: agent.gid))
        let controls = String(repeating: "\u{1}", count: 1024)
        let args = Dictionary(uniqueKeysWithValues: (0..<16).map { (String(format: "k%02d", $0), controls) })
        for i in 0..<3 {  // each body is about 100 KB
            #expect(try await client.authorize("github:push", resource: "r\(i)" + controls.dropFirst(2), args: args).decision == .pending)
        }
        await client.close()
        #expect(d.stop() == 0, "lanyardd drained its notifications and exited cleanly: \(d.logText.suffix(2000))")
        #expect(TestSupport.readText(dir + "/runs") == "ran\nran\nran\n")
        // lanyardd ignores SIGPIPE; the command gets signals 1 to 31 at their defaults (glibc keeps
        // its internal 32 and 33 to itself) and none blocked. Read by the shell's builtins: a
        // forked reader could catch the shell while it blocks signals around a fork.
        let masks = try #require(TestSupport.readText(dir + "/signals")).split(separator: "\n")
            .compactMap { UInt64($0, radix: 16) }
        #expect(masks.count == 2 && masks[0] == 0 && masks[1] & 0x7FFF_FFFF == 0, "\(masks.map { String($0, radix: 16) })")
    }
}
