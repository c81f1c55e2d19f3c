import Foundation
import LanyardTestSupport
import Testing

/// Security I finding 12: the files and directories that decide what lanyardd trusts —
/// the socket directory, the state dir, the policy file — are refused when another local
/// user could write them, and no privileged write goes through a link planted in them.
@Suite(.serialized, .enabled(if: TestSupport.isRoot, "needs root to create files as another uid"))
struct TrustedFilesTests {
    var other: (uid: UInt32, gid: UInt32) { E2EUsers.agent! }

    func startFails(_ d: DaemonProcess) throws -> String {
        let r = try run([Bin.lanyardd] + d.arguments)
        #expect(r.status != 0, "lanyardd started: \(r.stderr)")
        return r.stderr
    }

    @Test func aSocketDirectoryAnotherUserCanWriteIsRefused() throws {
        let d = try DaemonProcess(policy: E2EUsers.policy())
        defer { d.cleanup() }
        // The attack: in a socket directory the agent's uid can write, it swaps the fresh
        // socket for a symlink while root sets its mode. The directory itself is refused now.
        let shared = d.dir + "/run"
        mkdir(shared, 0o777)
        chmod(shared, 0o777)
        chown(shared, other.uid, other.gid)
        d.socketDir = shared
        let err = try startFails(d)
        #expect(err.contains("the socket directory \(shared)"), "\(err)")
        #expect(err.contains("chown it to root") || err.contains("chmod go-w"), "\(err)")

        // A sticky directory (like /tmp) is fine: others cannot rename what root made there.
        // A symlink planted at the socket's name is refused, never followed; once it is gone
        // the socket is made in a private directory and renamed into place with its mode.
        let sticky = d.dir + "/sticky"
        mkdir(sticky, 0o777)
        chmod(sticky, 0o1777)
        let target = d.dir + "/victim"
        TestSupport.write("keep me", to: target)
        chmod(target, 0o600)
        symlink(target, sticky + "/agent.sock")
        d.socketDir = sticky
        let squatted = try startFails(d)
        #expect(squatted.contains("exists and is not a socket"), "\(squatted)")
        unlink(sticky + "/agent.sock")
        try d.start()
        var st = stat()
        #expect(lstat(sticky + "/agent.sock", &st) == 0 && (st.st_mode & S_IFMT) == S_IFSOCK)
        #expect(st.st_mode & 0o777 == 0o666)
        #expect(stat(target, &st) == 0 && st.st_mode & 0o777 == 0o600)
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "keep me")
        let whoami = try d.ctl(["whoami"])
        #expect((whoami.stdout + whoami.stderr).contains("registered agent"), "\(whoami)")  // the socket answers
        _ = d.stop()
    }

    @Test func aStateDirOrPolicyAnotherUserCanWriteIsRefused() throws {
        let d = try DaemonProcess(policy: E2EUsers.policy())
        defer { d.cleanup() }
        // A foreign-owned, mode-0777 state dir.
        mkdir(d.stateDir, 0o777)
        chmod(d.stateDir, 0o777)
        chown(d.stateDir, other.uid, other.gid)
        var err = try startFails(d)
        #expect(err.contains("the state dir \(d.stateDir)"), "\(err)")
        rmdir(d.stateDir)

        // A world-writable policy file.
        chmod(d.policyPath, 0o666)
        err = try startFails(d)
        #expect(err.contains("the policy file \(d.policyPath) is writable by group or others"), "\(err)")
        chmod(d.policyPath, 0o644)
        // One owned by another user.
        chown(d.policyPath, other.uid, other.gid)
        err = try startFails(d)
        #expect(err.contains("is owned by uid \(other.uid)"), "\(err)")
        chown(d.policyPath, 0, 0)

        try d.start()  // control: the same files, safe again
        _ = d.stop()
    }

    @Test func devModeNeverWritesThroughALinkPlantedInAForeignStateDir() throws {
        let d = try DaemonProcess(policy: E2EUsers.policy())
        defer { d.cleanup() }
        // Another user pre-creates the state dir and plants policy.yaml → a root-owned file.
        let planted = d.dir + "/planted"
        mkdir(planted, 0o755)
        chown(planted, other.uid, other.gid)
        let victim = d.dir + "/victim"
        TestSupport.write("root's file\n", to: victim)
        symlink(victim, planted + "/policy.yaml")
        let r = try run([Bin.lanyardd, "--dev", "--state-dir", planted, "--agent-socket", d.agentSocket, "--admin-socket", d.adminSocket])
        #expect(r.status != 0)
        #expect(r.stderr.contains("the state dir \(planted) is owned by uid \(other.uid)"), "\(r.stderr)")
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "root's file\n")
    }
}
