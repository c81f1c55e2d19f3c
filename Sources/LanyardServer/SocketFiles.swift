#if canImport(Glibc)
import Glibc
#endif
import CLanyardSys
import LanyardCrypto

/// A startup problem: one line for the operator, then a non-zero exit.
public struct StartupError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// An exclusive lock on the state directory: one daemon per state dir, and no
/// daemon ever takes over a live socket.
public final class StateLock: Sendable {
    let fd: Int32

    public init(directory: String) throws {
        var st = stat()
        if stat(directory, &st) != 0 {
            guard mkdir(directory, 0o700) == 0 else {
                throw StartupError("cannot create state dir \(directory): \(errnoText()); create it or pass --state-dir")
            }
        } else if (st.st_mode & S_IFMT) != S_IFDIR {
            throw StartupError("state dir \(directory) exists and is not a directory")
        }
        // Secrets' ciphertext, the audit chain and the lock live here: another user who can
        // write it could swap files or plant links.
        try TrustedPath.checkDirectory(directory, what: "the state dir")
        let path = directory + "/lanyard.lock"
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw StartupError("cannot open lock file \(path): \(errnoText())") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let holder = readSmallFile(path).map { $0.trimmingWhitespace() } ?? "?"
            close(fd)
            throw StartupError("another lanyardd (pid \(holder)) is running with state dir \(directory); stop it first or use another --state-dir")
        }
        ftruncate(fd, 0)
        let pid = "\(getpid())\n"
        _ = pid.withCString { write(fd, $0, strlen($0)) }
    }

    deinit { close(fd) }
}

/// Creates a listening Unix socket at `path` with `mode` (and `group`), never more
/// open than `mode` at any instant and never touching a file through a name another user
/// controls: the socket is bound in a private directory beside `path` (reached through
/// its descriptor), given its mode and group there, made to listen, and renamed into place
/// — rename replaces what is at `path` and follows no link. The directory of `path` must be
/// one no other user can write (or sticky, like /tmp). A live socket at `path` is refused.
/// O_PATH (Linux; missing from Swift's Glibc module).
let O_PATH_: Int32 = 0o10000000

public func makeListeningSocket(path: String, mode: mode_t, group: gid_t?, backlog: Int32 = 256) throws -> Int32 {
    guard path.hasPrefix("/") else { throw StartupError("socket path '\(path)' is not absolute; give one such as /run/lanyard/agent.sock") }
    guard path.utf8.count < 108 else { throw StartupError("socket path \(path) is longer than 107 bytes; choose a shorter path") }
    let dir = TrustedPath.parent(of: path)
    let name = String(path[path.index(after: path.lastIndex(of: "/")!)...])
    try TrustedPath.checkDirectory(dir, what: "the socket directory", sticky: true)
    var st = stat()
    if lstat(path, &st) == 0 {
        guard (st.st_mode & S_IFMT) == S_IFSOCK else {
            throw StartupError("\(path) exists and is not a socket; remove it or choose another socket path")
        }
        if isListening(path) {
            throw StartupError("socket \(path) is in use by another process; stop it or choose another socket path")
        }
    }
    let dirfd = open(dir, O_PATH_ | O_DIRECTORY | O_CLOEXEC)
    guard dirfd >= 0 else { throw StartupError("cannot open the socket directory \(dir): \(errnoText())") }
    defer { close(dirfd) }
    let privateName = ".\(name).\(getpid()).\(SecureRandom.uuid().prefix(8))"
    guard mkdirat(dirfd, privateName, 0o700) == 0 else { throw StartupError("cannot create a private directory in \(dir): \(errnoText())") }
    defer { unlinkat(dirfd, privateName, AT_REMOVEDIR) }
    let privatefd = openat(dirfd, privateName, O_PATH_ | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
    guard privatefd >= 0 else { throw StartupError("cannot open the private directory in \(dir): \(errnoText())") }
    defer { close(privatefd) }

    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw StartupError("socket(): \(errnoText())") }
    func fail(_ what: String) -> StartupError {
        let e = errnoText()
        unlinkat(privatefd, "s", 0)
        close(fd)
        return StartupError("cannot \(what) \(path): \(e)")
    }
    var addr = unixAddress("/proc/self/fd/\(privatefd)/s")
    let bound = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard bound == 0 else { throw fail("bind") }
    if let group, fchownat(privatefd, "s", uid_t.max, group, AT_SYMLINK_NOFOLLOW) != 0 { throw fail("set the group of") }
    guard fchmodat(privatefd, "s", mode, 0) == 0 else { throw fail("set the mode of") }
    // Before listen: connections inherit SO_PASSCRED when they connect, so the kernel
    // attributes every byte to its sender from the first one (SenderAttribution.swift).
    guard lanyard_enable_passcred(fd) == 0, listen(fd, backlog) == 0 else { throw fail("prepare") }
    guard renameat(privatefd, "s", dirfd, name) == 0 else { throw fail("put in place") }
    return fd
}

func isListening(_ path: String) -> Bool {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var addr = unixAddress(path)
    return withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    } == 0
}

func unixAddress(_ path: String) -> sockaddr_un {
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &addr.sun_path) { raw in
        let bytes = Array(path.utf8.prefix(raw.count - 1))
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
    return addr
}

func errnoText() -> String { String(cString: strerror(errno)) }

extension String {
    func trimmingWhitespace() -> String {
        String(drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}
