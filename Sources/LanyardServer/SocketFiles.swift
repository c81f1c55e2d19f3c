#if canImport(Glibc)
import Glibc
#endif

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
/// open than `mode` at any instant: the process umask makes bind create it 0700-ish,
/// then chown/chmod happen before listen, so no one connects in between.
/// A stale socket file is replaced; a live one (someone accepts on it) is refused.
public func makeListeningSocket(path: String, mode: mode_t, group: gid_t?, backlog: Int32 = 256) throws -> Int32 {
    guard path.utf8.count < 108 else { throw StartupError("socket path \(path) is longer than 107 bytes; choose a shorter path") }
    var st = stat()
    if lstat(path, &st) == 0 {
        guard (st.st_mode & S_IFMT) == S_IFSOCK else {
            throw StartupError("\(path) exists and is not a socket; remove it or choose another socket path")
        }
        if isListening(path) {
            throw StartupError("socket \(path) is in use by another process; stop it or choose another socket path")
        }
        unlink(path)
    }
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw StartupError("socket(): \(errnoText())") }
    var addr = unixAddress(path)
    let bound = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard bound == 0 else {
        let e = errnoText()
        close(fd)
        throw StartupError("cannot bind \(path): \(e); check the directory exists and is writable")
    }
    if let group, chown(path, uid_t.max, group) != 0 {
        let e = errnoText()
        close(fd); unlink(path)
        throw StartupError("cannot set group of \(path): \(e)")
    }
    guard chmod(path, mode) == 0, listen(fd, backlog) == 0 else {
        let e = errnoText()
        close(fd); unlink(path)
        throw StartupError("cannot prepare \(path): \(e)")
    }
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
