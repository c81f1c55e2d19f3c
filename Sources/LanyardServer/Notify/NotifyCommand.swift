import CLanyardSys
import LanyardCore
#if canImport(Glibc)
import Glibc
#endif

/// One run of an `approvers.notify.command`: the program (never a shell) with the request's
/// JSON on stdin, stdout and stderr into one bounded pipe, a clean environment, its own
/// process group in `/`. When it exits or its timeout passes, the whole group is killed:
/// nothing it started outlives the delivery. Blocking: run it on a thread pool.
enum CommandRun {
    /// The environment of every command: nothing of the daemon's, no secret.
    static let environment = ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"]
    /// The most output kept (for the log when a run fails); the rest is read and dropped.
    static let outputLimit = 4096

    struct Failure: Error, CustomStringConvertible {
        var description: String
        /// The first bytes the command wrote (agent text may be in there: for the inert log only).
        var output = ""
    }

    /// Runs `argv` with `input` on stdin; returns when it exited with status 0, throws otherwise.
    static func run(_ argv: [String], input: [UInt8], timeoutSeconds: Int) throws(Failure) {
        let timeout = Duration.seconds(timeoutSeconds)
        do {
            try TrustedPath.checkProgram(argv[0], what: "the notification command")
        } catch {
            throw Failure(description: "\(error)")
        }
        // Writing into a pipe whose reader is gone raises SIGPIPE, whose default would end lanyardd.
        // Blocked on this thread (one of the command pool's), it stays pending here and the write
        // fails with EPIPE, whatever the process's disposition (a library ignores it today).
        var pipeSignal = sigset_t()
        sigemptyset(&pipeSignal)
        sigaddset(&pipeSignal, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &pipeSignal, nil)
        var stdin: [Int32] = [-1, -1], out: [Int32] = [-1, -1]
        guard lanyard_pipe(&stdin) == 0 else { throw Failure(description: "cannot make a pipe: \(errnoText())") }
        guard lanyard_pipe(&out) == 0 else {
            close(stdin[0]); close(stdin[1])
            throw Failure(description: "cannot make a pipe: \(errnoText())")
        }
        var pid: pid_t = 0
        let rc = withCStrings(argv) { cArgv in
            withCStrings(environment) { cEnv in lanyard_spawn_isolated(argv[0], cArgv, cEnv, stdin[0], out[1], &pid) }
        }
        close(stdin[0])
        close(out[1])
        defer { close(out[0]) }
        guard rc == 0 else {
            close(stdin[1])
            throw Failure(description: "cannot start \(argv[0]): \(String(cString: strerror(rc)))")
        }
        _ = fcntl(out[0], F_SETFL, fcntl(out[0], F_GETFL) | O_NONBLOCK)
        var kept: [UInt8] = []
        let pidfd = lanyard_pidfd_open(pid)
        let watchError = pidfd < 0 ? "cannot watch \(argv[0]) (pidfd_open: \(errnoText())); killed it" : nil
        let exited: Bool
        if pidfd >= 0 {
            exited = exchange(input: input, stdin: stdin[1], output: out[0], pidfd: pidfd, timeout: timeout, kept: &kept)
            close(pidfd)
        } else {
            close(stdin[1])
            exited = false
        }
        // The leader is not reaped yet, so the group id is still ours: kill what is left of it.
        killpg(pid, SIGKILL)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        drain(out[0], into: &kept)
        let output = String(decoding: kept, as: UTF8.self)
        guard exited else {
            throw Failure(description: watchError ?? "\(argv[0]) did not finish within its timeout of \(timeoutSeconds) s; killed with its process group",
                          output: output)
        }
        let signal = status & 0x7f
        if signal != 0 { throw Failure(description: "\(argv[0]) was killed by signal \(signal)", output: output) }
        let code = (status >> 8) & 0xff
        if code != 0 { throw Failure(description: "\(argv[0]) exited with status \(code)", output: output) }
    }

    /// Writes `input` and reads the output until the process exits (true) or `timeout` passes (false).
    /// Closes `stdin`; keeps the first `outputLimit` bytes of output in `kept`.
    private static func exchange(input: [UInt8], stdin: Int32, output: Int32, pidfd: Int32, timeout: Duration, kept: inout [UInt8]) -> Bool {
        let deadline = ContinuousClock.now + timeout
        var stdin = stdin
        defer { if stdin >= 0 { close(stdin) } }
        _ = fcntl(stdin, F_SETFL, fcntl(stdin, F_GETFL) | O_NONBLOCK)
        var written = 0, reading = true
        if input.isEmpty { close(stdin); stdin = -1 }
        while true {
            let left = deadline - ContinuousClock.now
            guard left > .zero else { return false }
            var fds = [pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0), pollfd(fd: reading ? output : -1, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: stdin, events: Int16(POLLOUT), revents: 0)]  // a negative fd is skipped
            let ms = Int32(clamping: left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1)
            guard poll(&fds, nfds_t(fds.count), ms) >= 0 || errno == EINTR else { return false }
            if fds[0].revents != 0 { return true }
            if fds[1].revents != 0 { reading = !drain(output, into: &kept) }
            if stdin >= 0, fds[2].revents != 0 {
                let n = input[written...].withUnsafeBytes { write(stdin, $0.baseAddress, $0.count) }
                if n > 0 { written += n }
                if written == input.count || (n < 0 && errno != EAGAIN && errno != EINTR) || fds[2].revents & Int16(POLLERR | POLLHUP) != 0 {
                    close(stdin)
                    stdin = -1
                }
            }
        }
    }

    /// Reads what `fd` (non-blocking) holds now into `kept`, up to `outputLimit` bytes, and
    /// drops the rest; true at the end of the output.
    @discardableResult
    private static func drain(_ fd: Int32, into kept: inout [UInt8]) -> Bool {
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &buf, buf.count)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return n == 0 }
            kept += buf[0..<min(n, max(0, outputLimit - kept.count))]
        }
    }

    private static func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
        var pointers = strings.map { strdup($0) } + [nil]
        defer { for p in pointers { free(p) } }
        return body(&pointers)
    }
}
