import CLanyardSys
import Foundation
import LanyardCore
@testable import LanyardServer
import LanyardTestSupport
import Testing

struct AttestationTests {
    /// Invariant 2's check: the attested process must still be the one there.
    @Test func aProcessThatExitedIsNoLongerTheSame() throws {
        let child = try Child(["/bin/sleep", "600"])
        let pid = child.pid
        let attestor = ProcAttestor()
        let fd = lanyard_pidfd_open(pid)
        let peer = attestor.attest(PeerCredentials(uid: getuid(), gid: getgid(), pid: pid),
                                   pidfd: fd >= 0 ? PidFD(fd: fd) : nil)
        #expect(peer.facts.exe == "/usr/bin/sleep" || peer.facts.exe == "/bin/sleep")
        #expect(peer.facts.exeFile != nil)
        #expect(peer.startTime != nil)
        #expect(attestor.isStillSame(peer))

        child.stop(SIGKILL)
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

    /// Runs a copy of /bin/sleep at `path`; the peer as attested (with a pidfd).
    static func running(_ path: String) throws -> (Child, AttestedPeer) {
        let child = try Child([path, "600"])
        let pid = child.pid
        let fd = lanyard_pidfd_open(pid)
        let peer = ProcAttestor().attest(PeerCredentials(uid: getuid(), gid: getgid(), pid: pid), pidfd: fd >= 0 ? PidFD(fd: fd) : nil)
        return (child, peer)
    }

    static func stop(_ child: Child) {
        child.stop(SIGKILL)
    }

    /// Security I, finding 2: the hash cache was keyed by (device, inode, mtime, size), so a
    /// binary rewritten in place (`dd conv=notrunc`) with its mtime set back (`touch -d`)
    /// kept its old hash. ctime, which no owner can set, is in the key now.
    @Test(.enabled(if: TestSupport.isRoot, "the hasher takes only root-owned binaries"))
    func anInPlaceRewriteWithTheMtimeSetBackIsHashedAgain() async throws {
        let dir = TestSupport.tempDir("hash")
        defer { TestSupport.remove(dir) }
        let copy = dir + "/sleep"
        #expect(try run(["/bin/cp", "/bin/sleep", copy]).status == 0)
        let hasher = ExeHasher(maxBytes: 256 * 1024 * 1024, perUID: 1)

        let (first, peer) = try Self.running(copy)
        let before = await hasher.hash(peer) { true }
        Self.stop(first)
        let stamp = try run(["/usr/bin/stat", "-c", "%y", copy]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let rewrite = try run(["/bin/sh", "-c", "printf 'X' | dd of=\(copy) bs=1 seek=$(( $(stat -c %s \(copy)) - 1 )) conv=notrunc 2>/dev/null && touch -d '\(stamp)' \(copy)"])
        #expect(rewrite.status == 0)
        #expect(try run(["/usr/bin/stat", "-c", "%y", copy]).stdout.trimmingCharacters(in: .whitespacesAndNewlines) == stamp)

        let (second, again) = try Self.running(copy)
        defer { Self.stop(second) }
        let after = await hasher.hash(again) { true }
        let now = try run(["/usr/bin/sha256sum", copy]).stdout.split(separator: " ").first.map(String.init)
        #expect(before != after)
        #expect(after == .hash(try #require(now)), "the rewritten bytes must be what is hashed")
    }

    /// A binary anyone but root can write pins nothing; one over the bound is not read; a
    /// peer that is gone is not hashed (Security II, finding 8: bounded, abandoned).
    @Test(.enabled(if: TestSupport.isRoot, "the hasher takes only root-owned binaries"))
    func theHasherRefusesWhatItCannotPin() async throws {
        let dir = TestSupport.tempDir("hash")
        defer { TestSupport.remove(dir) }
        let copy = dir + "/sleep"
        #expect(try run(["/bin/cp", "/bin/sleep", copy]).status == 0)
        let (child, peer) = try Self.running(copy)
        defer { Self.stop(child) }

        #expect(await ExeHasher(maxBytes: 4096, perUID: 1).hash(peer) { true } == .tooLarge(Int64(try #require(FileManager.default.attributesOfItem(atPath: copy)[.size] as? Int)), 4096))
        #expect(await ExeHasher(maxBytes: 1 << 30, perUID: 1).hash(peer) { false } == .gone)
        #expect(chmod(copy, 0o775) == 0)
        #expect(await ExeHasher(maxBytes: 1 << 30, perUID: 1).hash(peer) { true } == .writable("its group"))
        #expect(chown(copy, 1, 1) == 0)
        #expect(await ExeHasher(maxBytes: 1 << 30, perUID: 1).hash(peer) { true } == .writable("its owner, uid 1"))
    }
}

