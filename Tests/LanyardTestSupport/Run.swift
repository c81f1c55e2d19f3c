import CLanyardSys
import Foundation

public struct RunResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

/// A child process started with posix_spawn, not Foundation's `Process`: that crashes when
/// many threads start and reap children at once (its run loop's sources race; seen in the
/// suite and reproduced with 2,000 threads running /bin/true), and the suites do.
public final class Child: @unchecked Sendable {  // `exit` guarded by `lock`
    public let pid: pid_t
    private let lock = NSLock()
    private var exit: Int32?

    /// Starts `argv` (an absolute path first) with `stdin`, `stdout` and `stderr` as its
    /// standard descriptors (the caller closes its copies) and this environment plus `env`.
    public init(_ argv: [String], env: [String: String] = [:], stdin: Int32, stdout: Int32, stderr: Int32) throws {
        var environment = ProcessInfo.processInfo.environment
        environment.merge(env) { $1 }
        var pid: pid_t = 0
        let rc = Self.withCStrings(argv) { cArgv in
            Self.withCStrings(environment.map { "\($0)=\($1)" }) { cEnv in lanyard_spawn(argv[0], cArgv, cEnv, stdin, stdout, stderr, &pid) }
        }
        guard rc == 0 else { throw RunError("cannot run \(argv[0]): \(String(cString: strerror(rc)))") }
        self.pid = pid
    }

    /// Starts `argv` with /dev/null as its standard input, output and error.
    public convenience init(_ argv: [String], env: [String: String] = [:]) throws {
        let null = open("/dev/null", O_RDWR | O_CLOEXEC)
        guard null >= 0 else { throw RunError("cannot open /dev/null: \(String(cString: strerror(errno)))") }
        defer { close(null) }
        try self.init(argv, env: env, stdin: null, stdout: null, stderr: null)
    }

    /// Sends `signal` (unless the child was already waited for), then waits for it to exit.
    @discardableResult
    public func stop(_ signal: Int32 = SIGTERM) -> Int32 {
        lock.lock()
        let waited = exit != nil
        lock.unlock()
        if !waited { kill(pid, signal) }
        return wait()
    }

    /// Waits for the child to exit: its exit status, or the signal that ended it.
    @discardableResult
    public func wait() -> Int32 {
        lock.lock()
        defer { lock.unlock() }
        if let exit { return exit }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        let code = status & 0x7f == 0 ? (status >> 8) & 0xff : status & 0x7f
        exit = code
        return code
    }

    private static func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
        var pointers = strings.map { strdup($0) } + [nil]
        defer { for p in pointers { free(p) } }
        return body(&pointers)
    }
}

/// A pipe whose ends close on exec: neither leaks into a program another thread starts.
public func closingPipe() throws -> (read: Int32, write: Int32) {
    var fds: [Int32] = [-1, -1]
    guard lanyard_pipe(&fds) == 0 else { throw RunError("cannot make a pipe: \(String(cString: strerror(errno)))") }
    return (fds[0], fds[1])
}

/// The bytes `fd` has now, waiting for some until `deadline`: nil at its end, at the
/// deadline, or on an error (a guard against a child that hangs, not a synchronization).
public func readSome(_ fd: Int32, until deadline: Date) -> [UInt8]? {
    var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    while true {
        let left = Int32(max(0, min(Double(Int32.max), deadline.timeIntervalSinceNow * 1000)))
        let ready = poll(&pfd, 1, left)
        if ready < 0, errno == EINTR { continue }
        guard ready == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0, errno == EINTR { continue }
        return n > 0 ? Array(buffer[..<n]) : nil
    }
}

public struct RunError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Runs a program to completion, optionally as another user (via setpriv), without a shell.
@discardableResult
public func run(_ argv: [String], as user: (uid: UInt32, gid: UInt32)? = nil, env: [String: String] = [:], stdin: String? = nil) throws -> RunResult {
    var args = argv
    if let user, user.uid != getuid() {
        args = ["/usr/bin/setpriv", "--reuid=\(user.uid)", "--regid=\(user.gid)", "--clear-groups", "--"] + argv
    }
    // Files, not pipes: a chatty child can never block on a full pipe.
    let dir = TestSupport.tempDir("out")
    defer { TestSupport.remove(dir) }
    let outPath = dir + "/out", errPath = dir + "/err"
    let out = open(outPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    let err = open(errPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    defer { for fd in [out, err] where fd >= 0 { close(fd) } }
    guard out >= 0, err >= 0 else { throw RunError("cannot open the output files of \(args[0]): \(String(cString: strerror(errno)))") }
    let input = try closingPipe()
    let child: Child
    do {
        defer { close(input.read) }
        child = try Child(args, env: env, stdin: input.read, stdout: out, stderr: err)
    } catch {
        close(input.write)
        throw error
    }
    if let stdin { TestSupport.writeAll(input.write, Array(stdin.utf8)) }
    close(input.write)
    let status = child.wait()
    return RunResult(status: status, stdout: TestSupport.readText(outPath) ?? "", stderr: TestSupport.readText(errPath) ?? "")
}


/// Runs blocking work (a child process, a socket read) on its own thread, so that an
/// async test never holds one of the few cooperative threads the in-process daemons need.
public func onThread<R: Sendable>(_ work: @escaping @Sendable () throws -> R) async throws -> R {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try work() }) }
    }
}
