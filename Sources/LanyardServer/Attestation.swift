#if canImport(Glibc)
import Glibc
#endif
import LanyardCore

/// The kernel's word on who is connected: SO_PEERCRED at accept, plus a pidfd where the
/// kernel has SO_PEERPIDFD.
public struct PeerCredentials: Sendable, Equatable {
    public var uid: UInt32
    public var gid: UInt32
    public var pid: Int32
    public init(uid: UInt32, gid: UInt32, pid: Int32) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
    }
}

/// Layout-compatible with Linux's `struct ucred` (hidden by Glibc without _GNU_SOURCE).
struct UCred: Sendable {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
}

/// SO_PEERPIDFD (Linux 6.5+); missing from older headers.
let SO_PEERPIDFD_: Int32 = 77

/// A pidfd: a handle on one process that cannot be recycled. Closed when released.
public final class PidFD: Sendable {
    public let fd: Int32
    public init(fd: Int32) { self.fd = fd }
    deinit { close(fd) }

    /// True while the process has not exited (a pidfd polls readable on exit).
    public var isAlive: Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 0) == 0
    }
}

/// A peer as attested at accept: the facts the selectors match, and what is needed to
/// check later that the same process is still there (invariant 2).
public struct AttestedPeer: Sendable {
    public var facts: PeerFacts
    public var startTime: UInt64?
    public var pidfd: PidFD?

    public init(facts: PeerFacts, startTime: UInt64? = nil, pidfd: PidFD? = nil) {
        self.facts = facts
        self.startTime = startTime
        self.pidfd = pidfd
    }
}

/// Turns kernel credentials into process facts, and re-checks them before a secret
/// leaves. Injected so the handler never reads /proc itself.
public protocol Attestor: Sendable {
    /// The cheap facts, taken at accept (the exe hash is `ExeHasher`'s, off the event loop).
    func attest(_ creds: PeerCredentials, pidfd: PidFD?) -> AttestedPeer
    /// Whether the attested process is still alive and unchanged (same start time, same exe).
    func isStillSame(_ peer: AttestedPeer) -> Bool
}

/// Reads /proc for exe, cgroup, user namespace and start time.
public struct ProcAttestor: Attestor {
    public init() {}

    public func attest(_ creds: PeerCredentials, pidfd: PidFD?) -> AttestedPeer {
        let pid = creds.pid
        var facts = PeerFacts(uid: creds.uid, gid: creds.gid, pid: pid)
        let exeFile = Self.exeFile(pid)
        facts.exeFile = exeFile
        // The path is rendered in the caller's mount namespace: shown to approvers as it is
        // only where it names the same file in lanyardd's.
        facts.exe = Self.exe(pid).map { path in
            LocalHost().file(path)?.id == exeFile ? path : "\(path) (not the file at that path outside the caller's mount namespace)"
        }
        facts.cgroup = Self.cgroup(pid)
        facts.inForeignUserNamespace = Self.userNamespace("/proc/\(pid)/ns/user") != Self.ownUserNamespace || Self.ownUserNamespace == nil
        let peer = AttestedPeer(facts: facts, startTime: Self.startTime(pid), pidfd: pidfd)
        // If the process died while we looked, its facts may belong to another process.
        guard isStillSame(peer) else {
            return AttestedPeer(facts: PeerFacts(uid: creds.uid, gid: creds.gid, pid: pid), startTime: nil, pidfd: pidfd)
        }
        return peer
    }

    public func isStillSame(_ peer: AttestedPeer) -> Bool {
        guard let start = peer.startTime else { return false }
        // A pidfd pins the process: alive after its exe was looked up, the pid named it then
        // (it cannot be reused before the process is reaped), and no start time need be read.
        if let pidfd = peer.pidfd { return Self.exeFile(peer.facts.pid) == peer.facts.exeFile && pidfd.isAlive }
        return Self.startTime(peer.facts.pid) == start && Self.exeFile(peer.facts.pid) == peer.facts.exeFile
    }

    static func exe(_ pid: Int32) -> String? {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/\(pid)/exe", &buf, buf.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The file the process runs, as the kernel names it: the path in `/proc/PID/exe` is
    /// rendered in the peer's mount namespace, the file behind it is the one that runs.
    static func exeFile(_ pid: Int32) -> FileID? {
        var st = stat()
        guard stat("/proc/\(pid)/exe", &st) == 0 else { return nil }
        return FileID(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    /// The process's cgroup v2 path (the `0::` line), relative to lanyardd's cgroup namespace.
    static func cgroup(_ pid: Int32) -> String? {
        guard let text = readSmallFile("/proc/\(pid)/cgroup") else { return nil }
        return text.split(separator: "\n").first { $0.hasPrefix("0::") }.map { String($0.dropFirst(3)) }
    }

    static let ownUserNamespace = userNamespace("/proc/self/ns/user")

    static func userNamespace(_ path: String) -> FileID? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return FileID(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    /// Field 22 of /proc/PID/stat: start time in clock ticks since boot.
    static func startTime(_ pid: Int32) -> UInt64? {
        guard let text = readSmallFile("/proc/\(pid)/stat"), let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // fields[0] is field 3 (state); start time is field 22.
        guard fields.count > 19 else { return nil }
        return UInt64(fields[19])
    }
}

/// The file an `exe` selector's path leads to now, if it can be pinned: a regular file
/// only root can write (policy load also checks its directories). Asked at match time.
func pinnableExeFile(_ path: String) -> FileID? {
    guard let file = LocalHost().file(path), file.isRegular, file.onlyRootWrites else { return nil }
    return file.id
}

/// Reads a small text file (procfs) in one go.
func readSmallFile(_ path: String, limit: Int = 64 * 1024) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    return readAll(fd, limit: limit)
}

/// Reads an open file to its end, at most `limit` bytes. Nil on a read error.
func readAll(_ fd: Int32, limit: Int) -> String? {
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while out.count < limit {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 { if errno == EINTR { continue }; return nil }
        if n == 0 { break }
        out += chunk[0..<n]
    }
    return String(decoding: out, as: UTF8.self)
}
