import Foundation
import LanyardTestSupport
import Testing

/// The built binaries (`swift build` before `swift test`; scripts/test.sh does both).
enum Bin {
    /// `.build/debug`, or `$LANYARD_BIN_DIR` (scripts/sanitize.sh points it at sanitized builds).
    static let dir = ProcessInfo.processInfo.environment["LANYARD_BIN_DIR"]
        ?? TestSupport.packageRoot.appendingPathComponent(".build/debug").resolvingSymlinksInPath().path
    static let lanyardd = dir + "/lanyardd"
    static let lanyardctl = dir + "/lanyardctl"
    static let cExample = TestSupport.packageRoot.appendingPathComponent("clients/c/build/whoami_authorize").path

    static func require() throws {
        for path in [lanyardd, lanyardctl] where !FileManager.default.isExecutableFile(atPath: path) {
            throw HarnessError("\(path) is missing: run `swift build` before `swift test` (scripts/test.sh does)")
        }
    }
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// A real `lanyardd` process on temp sockets. Ready once it logs "lanyardd ready".
final class DaemonProcess: @unchecked Sendable {  // logSoFar is guarded by `log`
    let dir: String
    let stateDir: String
    let policyPath: String
    var agentSocket: String { (socketDir ?? dir) + "/agent.sock" }
    var adminSocket: String { (socketDir ?? dir) + "/admin.sock" }
    /// Where the sockets go (default: `dir`).
    var socketDir: String?
    private(set) var process: Child?
    let log = NSCondition()
    private var logSoFar = ""

    /// Everything the daemon has written to stderr so far.
    var logText: String {
        log.lock()
        defer { log.unlock() }
        return logSoFar
    }

    var env: [String: String] { ["LANYARD_SOCKET": agentSocket, "LANYARD_ADMIN_SOCKET": adminSocket] }

    init(policy: String) throws {
        try Bin.require()
        dir = TestSupport.tempDir("e2e")
        stateDir = dir + "/state"
        policyPath = dir + "/policy.yaml"
        TestSupport.write(policy, to: policyPath)
        keyPath = dir + "/master.key"
        let keygen = try run([Bin.lanyardd, "keygen", "--out", keyPath])
        guard keygen.status == 0 else { throw HarnessError("lanyardd keygen failed: \(keygen.stderr)") }
    }

    var keyPath: String

    /// More lanyardd flags (limits, deadlines) for this daemon.
    var extraArguments: [String] = []
    /// A program lanyardd runs under (fiu-run …), with its arguments.
    var wrapper: [String] = []

    var arguments: [String] {
        extraArguments + ["--policy", policyPath, "--state-dir", stateDir, "--agent-socket", agentSocket, "--admin-socket", adminSocket,
         "--admin-socket-mode", "0666", "--admin-group", "", "--master-key-file", keyPath]
    }

    func start() throws {
        let argv = wrapper + [Bin.lanyardd] + arguments
        let err = try closingPipe()
        let null = open("/dev/null", O_RDWR | O_CLOEXEC)
        let handle = FileHandle(fileDescriptor: err.read, closeOnDealloc: true)
        do {
            defer {
                close(null)
                close(err.write)
            }
            process = try Child(argv, stdin: null, stdout: null, stderr: err.write)
        }
        // Wait for the readiness line (the daemon writes it once both sockets are served).
        var buffer = Data()
        while true {
            let chunk = handle.availableData
            if chunk.isEmpty { throw HarnessError("lanyardd exited before it was ready: \(String(decoding: buffer, as: UTF8.self))") }
            buffer.append(chunk)
            if String(decoding: buffer, as: UTF8.self).contains("lanyardd ready") { break }
        }
        log.lock()
        logSoFar += String(decoding: buffer, as: UTF8.self)
        log.unlock()
        // Keep draining stderr (so the daemon never blocks on a full pipe) and remember it,
        // on a thread of its own: a Dispatch readability handler can be starved by a busy
        // test process, and a daemon blocked writing its log stalls every peer it serves
        // (seen as multi-second stalls in the latency-measuring tests).
        Thread.detachNewThread { [weak self] in
            while true {
                let data = handle.availableData
                guard !data.isEmpty, let self else { return }
                self.log.lock()
                self.logSoFar += String(decoding: data, as: UTF8.self)
                self.log.broadcast()
                self.log.unlock()
            }
        }
    }

    /// Waits until the daemon logs `text` (10 s at most, as a guard against hanging).
    func waitForLog(_ text: String) -> Bool {
        let deadline = Date().addingTimeInterval(10)
        log.lock()
        defer { log.unlock() }
        while !logSoFar.contains(text) {
            if !log.wait(until: deadline) { return false }
        }
        return true
    }

    /// The daemon's pid while it runs.
    var pid: pid_t? { process?.pid }

    /// Open descriptors and resident memory (KiB) of the daemon, from /proc.
    func footprint() throws -> (fds: Int, rssKiB: Int) {
        let pid = try #require(pid)
        let fds = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count
        let status = try #require(TestSupport.readText("/proc/\(pid)/status"))
        let rss = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }?.split(separator: " ").dropFirst().first.flatMap { Int($0) }
        return (fds, try #require(rss))
    }

    func kill9() {
        guard let p = process else { return }
        kill(p.pid, SIGKILL)
        p.wait()
        process = nil
    }

    func stop() -> Int32 {
        guard let p = process else { return 0 }
        kill(p.pid, SIGTERM)
        process = nil
        let status = p.wait()
        // A graceful stop ends with 0: otherwise the test's output shows why.
        if status != 0 { print("lanyardd exited \(status) at SIGTERM; its log ends:\n\(logText.suffix(4000))") }
        return status
    }

    func cleanup() {
        _ = stop()
        TestSupport.remove(dir)
    }

    /// Which of the state dir's files (database, WAL, journal), the daemon's log and the
    /// audit export hold any of `secrets`; empty when none does.
    func placesHolding(_ secrets: [String]) throws -> [String] {
        var places: [(String, Data)] = [("audit export", Data(try ctl(["audit", "export"]).stdout.utf8)), ("daemon log", Data(logText.utf8))]
        for file in try FileManager.default.contentsOfDirectory(atPath: stateDir) {
            if let data = TestSupport.read(stateDir + "/" + file) { places.append((file, data)) }
        }
        guard places.contains(where: { $0.0.hasSuffix("-wal") }) else { return ["(no WAL file to search)"] }
        return places.filter { place in secrets.contains { place.1.range(of: Data($0.utf8)) != nil } }.map(\.0)
    }

    /// Runs `query` on the state database with the sqlite3 CLI; its output, trimmed.
    @discardableResult
    func sql(_ query: String) throws -> String {
        let r = try run(["/usr/bin/sqlite3", stateDir + "/lanyard.db", query])
        guard r.status == 0 else { throw HarnessError("sqlite3: \(r.stderr)") }
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func ctl(_ args: [String], as user: (uid: UInt32, gid: UInt32)? = nil, stdin: String? = nil) throws -> RunResult {
        try run([Bin.lanyardctl] + args, as: user, env: env, stdin: stdin)
    }

    /// Runs lanyardctl and records an issue, with its stderr, unless it exits 0.
    @discardableResult
    func ctlSucceeds(_ args: [String], as user: (uid: UInt32, gid: UInt32)? = nil,
                     sourceLocation: SourceLocation = #_sourceLocation) throws -> RunResult {
        let r = try ctl(args, as: user)
        #expect(r.status == 0, "lanyardctl \(args.joined(separator: " ")) exited \(r.status): \(r.stderr)", sourceLocation: sourceLocation)
        return r
    }
}

enum E2EUsers {
    static let agent: (uid: UInt32, gid: UInt32)? = TestSupport.isRoot ? TestSupport.user("lanyard-test-a") : (getuid(), getgid())

    static func policy(extra: String = "") -> String {
        """
        trust_domain: e2e.internal
        services:
          github: { kind: opaque }
          openai: { kind: static }
        capabilities:
          openai:chat:      { risk: low }
          github:read_repo: { risk: low }
          github:push:      { risk: medium }
          github:admin:     { risk: high }
        agents:
          a:
            uid: \(agent!.uid)
            grants: [github:read_repo, github:push, openai:chat\(extra)]

        """
    }
}
