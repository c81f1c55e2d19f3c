import CLanyardSys
import Foundation
import LanyardServer
import Testing

struct AttestationTests {
    /// Invariant 2's check: the attested process must still be the one there.
    @Test func aProcessThatExitedIsNoLongerTheSame() throws {
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/sleep")
        child.arguments = ["600"]
        try child.run()
        let pid = child.processIdentifier
        let attestor = ProcAttestor()
        let fd = lanyard_pidfd_open(pid)
        let peer = attestor.attest(PeerCredentials(uid: getuid(), gid: getgid(), pid: pid),
                                   pidfd: fd >= 0 ? PidFD(fd: fd) : nil)
        #expect(peer.facts.exe == "/usr/bin/sleep" || peer.facts.exe == "/bin/sleep")
        #expect(peer.facts.exeFile != nil)
        #expect(peer.startTime != nil)
        #expect(attestor.isStillSame(peer))

        kill(pid, SIGKILL)
        child.waitUntilExit()
        #expect(!attestor.isStillSame(peer))
    }

    @Test func unitComesFromTheCgroup() {
        // Whatever this process's cgroup is, a unit is only ever a .service or .scope name.
        let peer = ProcAttestor().attest(PeerCredentials(uid: getuid(), gid: getgid(), pid: getpid()), pidfd: nil)
        if let unit = peer.facts.unit {
            #expect(unit.hasSuffix(".service") || unit.hasSuffix(".scope"))
        }
        #expect(peer.facts.exe != nil)
    }
}
