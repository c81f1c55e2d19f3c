import CLanyardSys
import Foundation

/// Helpers shared by the server and end-to-end tests.
public enum TestSupport {
    /// scripts/test.sh installs every tool the tests use and sets LANYARD_TOOLS_INSTALLED=1:
    /// then a test whose tool is missing fails rather than skips.
    public static let toolsRequired = ProcessInfo.processInfo.environment["LANYARD_TOOLS_INSTALLED"] == "1"

    /// Whether `path` is there to run (or the tools are required, so its absence fails).
    public static func tool(_ path: String) -> Bool {
        FileManager.default.isExecutableFile(atPath: path) || toolsRequired
    }

    public static var isRoot: Bool { getuid() == 0 }

    /// Whether the binaries under test are sanitized (scripts/sanitize.sh sets it).
    public static let sanitized = ProcessInfo.processInfo.environment["LANYARD_SANITIZER"] != nil

    /// A latency bound of the suite, in seconds: as written, or 3 times it when the binaries
    /// are sanitized. ThreadSanitizer and AddressSanitizer slow the daemon and its clients
    /// several times over, and those runs look for races and memory errors, not latency;
    /// the unsanitized suite (scripts/test.sh, CI) holds every bound as written.
    public static func latencyBound(_ seconds: Double) -> Double { sanitized ? 3 * seconds : seconds }

    /// The repository root (for the built binaries and the C client).
    public static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The project's Python venv, which scripts/lib.sh `ensure_venv` makes (joserfc, `bao`,
    /// the SDK): `$LANYARD_VENV`, else `.build-tools/venv` of the repository.
    public static let venv: String = ProcessInfo.processInfo.environment["LANYARD_VENV"]
        ?? packageRoot.appendingPathComponent(".build-tools/venv").path

    /// A fresh directory others can traverse (sockets inside are reached by test uids).
    public static func tempDir(_ tag: String = "t") -> String {
        var template = Array("/tmp/lanyard-\(tag).XXXXXX".utf8CString)
        let p = mkdtemp(&template)!
        let path = String(cString: p)
        chmod(path, 0o755)
        return path
    }

    public static func remove(_ path: String) {
        try? FileManager.default.removeItem(atPath: path)
    }

    /// A file's bytes, nil if it cannot be opened. Not `FileManager.contents(atPath:)` or
    /// `String(contentsOfFile:)`: in this toolchain's Foundation both leak 4 KiB for every
    /// file whose size reads as 0 (empty files, /proc), which LeakSanitizer reports.
    public static func read(_ path: String) -> Data? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        return (try? handle.readToEnd()) ?? Data()
    }

    /// A file's text (UTF-8), nil if it cannot be opened.
    public static func readText(_ path: String) -> String? {
        read(path).map { String(decoding: $0, as: UTF8.self) }
    }

    public static func write(_ text: String, to path: String) {
        _ = FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o644])
    }

    /// A secret file as an operator keeps it (0600): lanyardd refuses one others can read.
    public static func writeSecret(_ text: String, to path: String) {
        _ = FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600])
        chmod(path, 0o600)  // createFile keeps the mode of a file that exists
    }

    /// A system user for tests (created when missing; root only). Returns (uid, gid).
    public static func user(_ name: String) -> (uid: UInt32, gid: UInt32)? {
        if let found = lookUp(name) { return found }
        guard isRoot else { return nil }
        _ = try? run(["/usr/sbin/useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name])
        return lookUp(name)
    }

    /// getpwnam_r: the suites' static users are looked up from several threads at once, and
    /// getpwnam's one static buffer then hands one thread another's user.
    private static func lookUp(_ name: String) -> (uid: UInt32, gid: UInt32)? {
        var entry = passwd()
        var found: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16_384)
        guard getpwnam_r(name, &entry, &buffer, buffer.count, &found) == 0, found != nil else { return nil }
        return (entry.pw_uid, entry.pw_gid)
    }

    /// Connects to a Unix socket as another uid: the kernel records the effective ids
    /// at connect(), and only this thread's ids change (raw syscalls), briefly.
    public static func connect(_ path: String, asUID uid: UInt32, gid: UInt32) -> Int32 {
        let original = (getuid(), getgid())
        precondition(lanyard_thread_set_effective(uid, gid) == 0, "cannot switch this thread to uid \(uid)")
        let fd = connect(path)
        precondition(lanyard_thread_set_effective(original.0, original.1) == 0, "cannot switch this thread back")
        return fd
    }

    /// A blocking connected socket (or -errno).
    public static func connect(_ path: String) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            let b = Array(path.utf8)
            raw.copyBytes(from: b)
            raw[b.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if rc != 0 {
            let e = errno
            close(fd)
            return -e
        }
        var tv = timeval(tv_sec: 60, tv_usec: 0)  // a guard against hanging (generous: sanitized builds are slow), not a synchronizer
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    public static func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n <= 0 { return }
            off += n
        }
    }

    /// Reads until `count` bytes or EOF/timeout.
    public static func read(_ fd: Int32, count: Int) -> [UInt8] {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while out.count < count {
            let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, min($0.count, count - out.count)) }
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return out
    }

    /// Reads one frame body (nil on EOF).
    public static func readFrame(_ fd: Int32) -> [UInt8]? {
        let header = read(fd, count: 4)
        guard header.count == 4 else { return nil }
        let n = Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
        let body = read(fd, count: n)
        return body.count == n ? body : nil
    }

    /// True once the peer has closed (read returns 0).
    public static func isClosed(_ fd: Int32) -> Bool {
        var b: UInt8 = 0
        return Glibc.read(fd, &b, 1) == 0
    }

    public static func frame(_ body: [UInt8]) -> [UInt8] {
        let n = UInt32(body.count)
        return [UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF)] + body
    }
}

/// A wall clock the test moves by hand.
public final class ManualClock: @unchecked Sendable {
    private let lock = NSLock()
    private var micros: Int64

    public init(micros: Int64 = 1_800_000_000_000_000) { self.micros = micros }

    public func nowMicros() -> Int64 {
        lock.lock()
        defer { lock.unlock() }
        return micros
    }

    public func advance(seconds: Int64) {
        lock.lock()
        micros += seconds * 1_000_000
        lock.unlock()
    }
}

extension TestSupport {
    /// Writes a fresh 32-byte master key (mode 0600) and returns its path.
    public static func masterKey(in dir: String) -> String {
        let path = dir + "/master.key"
        var bytes = [UInt8](repeating: 0, count: 32)
        let fd = open("/dev/urandom", O_RDONLY)
        _ = Glibc.read(fd, &bytes, 32)
        close(fd)
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes), attributes: [.posixPermissions: 0o600])
        return path
    }
}

/// A long-running child started with posix_spawn (not Foundation's Process, whose child
/// monitoring can lose track when several children run at once). Its stderr is a pipe.
public final class SpawnedProcess: @unchecked Sendable {
    public let pid: pid_t
    private let stderrFD: Int32
    private var seen = ""

    /// With `logFile`, stdout and stderr both go to that file (for chatty servers) and
    /// `waitForStderr` is not available.
    public init(_ argv: [String], logFile: String? = nil) throws {
        var fds: [Int32] = [-1, -1]
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        if let logFile {
            posix_spawn_file_actions_addopen(&actions, 1, logFile, O_WRONLY | O_CREAT | O_APPEND, 0o600)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        } else {
            guard pipe(&fds) == 0 else { throw POSIXError(.EIO) }
            posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
            posix_spawn_file_actions_addclose(&actions, fds[0])
        }
        var pid: pid_t = 0
        var cargs = argv.map { strdup($0) } + [nil]
        defer { cargs.forEach { free($0) } }
        let rc = posix_spawn(&pid, argv[0], &actions, nil, &cargs, environ)
        posix_spawn_file_actions_destroy(&actions)
        if fds[1] >= 0 { close(fds[1]) }
        guard rc == 0 else { if fds[0] >= 0 { close(fds[0]) }; throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .EIO) }
        self.pid = pid
        stderrFD = fds[0]
    }

    /// Reads stderr until it contains `text` (false if the child closed it first).
    public func waitForStderr(_ text: String) -> Bool {
        var buf = [UInt8](repeating: 0, count: 4096)
        while !seen.contains(text) {
            let n = Glibc.read(stderrFD, &buf, buf.count)
            if n <= 0 { return false }
            seen += String(decoding: buf[0..<n], as: UTF8.self)
        }
        return true
    }

    /// Reads stderr until it contains `text`; returns everything read (nil on EOF first).
    public func readStderr(until text: String) -> String? {
        waitForStderr(text) ? seen : nil
    }

    /// Whether the child has exited (it is not reaped: `stop` still does that).
    public var hasExited: Bool {
        var info = siginfo_t()
        return waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info._sifields._sigchld.si_pid == pid
    }

    /// Sends `signal` and reaps the child; returns its exit status (or 128 + signal).
    @discardableResult
    public func stop(_ signal: Int32 = SIGTERM) -> Int32 {
        kill(pid, signal)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        if stderrFD >= 0 { close(stderrFD) }
        return (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
    }
}
