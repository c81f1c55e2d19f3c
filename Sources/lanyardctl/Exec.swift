#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import LanyardClient
import LanyardWire

/// `lanyardctl exec`: runs COMMAND with credentials bound to COMMAND's process.
///
/// lanyardctl starts a child of itself (the same binary, `exec --stage DIR ...`); the child
/// connects to lanyardd itself, provisions every credential with `bind_to_process` (so the
/// daemon attests and watches the child's own process), puts the secrets into the
/// environment it passes to execve and into files, then execs COMMAND: same process, so
/// the leases end when COMMAND exits. The parent holds no secret (not in its argv, its
/// environment or its memory), waits, removes the credentials directory and exits with
/// COMMAND's status (128 + N when COMMAND was killed by signal N).
struct Exec: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a command with short-lived credentials that die with it.",
        discussion: """
            One credential: --service S --scope CAP... with --env VAR or --file NAME. Several: --env VAR=CAP[,CAP...] \
            or --file NAME=CAP[,CAP...] (repeatable; the capabilities name their service). A file credential is \
            NAME in a private mode-0700 directory passed as $CREDENTIALS_DIRECTORY, removed when COMMAND ends. \
            The leases are bound to COMMAND's process: they are revoked when it exits, even killed. \
            When an approval is needed, the binding code is printed on stderr and lanyardctl waits for it \
            (--approval-timeout). Exit status: COMMAND's (128 + N when killed by signal N); 1 when a credential could not be had; 3 when its approval is denied or not given in time; 127 when COMMAND cannot run.
            """)
    @OptionGroup var sockets: Sockets
    @Option(help: "The service of the credential (with --scope and a bare --env VAR or --file NAME).") var service: String?
    @Option(parsing: .upToNextOption, help: "Capabilities of that service.") var scope: [String] = []
    @Option(help: "Lifetime in seconds of every credential (0: the service default; at most 900).") var ttl: UInt64 = 0
    @Option(name: .customLong("env"), help: "VAR, or VAR=CAP[,CAP...]: the credential in environment variable VAR.") var envs: [String] = []
    @Option(name: .customLong("file"), help: "NAME, or NAME=CAP[,CAP...]: the credential in file $CREDENTIALS_DIRECTORY/NAME (mode 0600).")
    var files: [String] = []
    @Option(help: "Seconds to wait for an approval before giving up.") var approvalTimeout: UInt32 = 300
    @Option(help: .hidden) var stage: String?
    @Argument(parsing: .postTerminator, help: "The command and its arguments, after --.") var command: [String] = []

    /// One credential to provision, and where COMMAND finds it.
    struct Credential {
        enum Place: Equatable { case env(String), file(String) }
        var place: Place
        var service: String
        var scope: [String]
        var label: String {
            switch place {
            case .env(let v): "environment variable \(v)"
            case .file(let f): "file \(f)"
            }
        }
    }

    func validate() throws {
        guard !command.isEmpty else { throw ValidationError("name the command to run after --: lanyardctl exec ... -- COMMAND [ARGS...]") }
        _ = try credentials()
    }

    /// The credentials asked for, checked (names, services, scopes).
    func credentials() throws -> [Credential] {
        var out: [Credential] = []
        for (spec, isEnv) in envs.map({ ($0, true) }) + files.map({ ($0, false) }) {
            let name: String
            let service: String
            let scope: [String]
            if let eq = spec.firstIndex(of: "=") {
                name = String(spec[..<eq])
                scope = spec[spec.index(after: eq)...].split(separator: ",").map(String.init)
                guard let first = scope.first, let colon = first.firstIndex(of: ":") else {
                    throw ValidationError("'\(spec)': after '=' give capabilities such as github:push (comma-separated)")
                }
                service = String(first[..<colon])
            } else {
                guard let s = self.service, !self.scope.isEmpty else {
                    throw ValidationError("'\(spec)' names no capabilities: give --service S --scope CAP..., or write \(spec)=CAP[,CAP...]")
                }
                (name, service, scope) = (spec, s, self.scope)
            }
            if isEnv {
                guard !name.isEmpty, !name.contains("="), !name.utf8.contains(0) else { throw ValidationError("--env '\(spec)': the variable name is empty or invalid") }
            } else {
                guard CredentialFiles.isPlainName(name) else { throw ValidationError("--file '\(spec)': the file name must be one path component (no '/')") }
            }
            let place: Credential.Place = isEnv ? .env(name) : .file(name)
            guard !out.contains(where: { $0.place == place }) else {
                throw ValidationError("\(isEnv ? "--env" : "--file") \(name) is given twice: one credential per name")
            }
            out.append(Credential(place: place, service: service, scope: scope))
        }
        guard !out.isEmpty else { throw ValidationError("say where the credential goes: --env VAR or --file NAME (with --service and --scope), or --env VAR=CAP") }
        return out
    }

    func run() async throws {
        if let stage {
            try await runStage(directory: stage == "-" ? nil : stage)
        }
        throw ExitCode(try superviseStage())
    }

    // MARK: The parent: start the stage, wait, clean up

    /// Starts the stage child, waits for it, removes the credentials directory; COMMAND's status.
    private func superviseStage() throws -> Int32 {
        let needsDirectory = try credentials().contains { if case .file = $0.place { true } else { false } }
        let directory = needsDirectory ? try CredentialFiles.makePrivateDirectory(prefix: "lanyard-exec") : nil
        defer { if let directory { CredentialFiles.removeDirectory(directory) } }
        let argv = Array(CommandLine.arguments.prefix(2)) + ["--stage", directory ?? "-"] + CommandLine.arguments.dropFirst(2)
        let pid = try spawn(selfExecutable(), argv)
        return waitForChild(pid)
    }

    private func selfExecutable() throws -> String {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        guard n > 0 else { throw Failure("cannot find lanyardctl's own executable (/proc/self/exe): \(String(cString: strerror(errno)))") }
        return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// posix_spawn with the signals the parent handles back at their defaults and none blocked.
    private func spawn(_ path: String, _ argv: [String]) throws -> pid_t {
        // Like system(): Ctrl-C and Ctrl-\ reach the child from the terminal; the parent waits.
        signal(SIGINT, SIG_IGN)
        signal(SIGQUIT, SIG_IGN)
        signal(SIGTERM, forwardSignal)
        signal(SIGHUP, forwardSignal)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var defaults = sigset_t(), none = sigset_t()
        sigemptyset(&defaults)
        sigemptyset(&none)
        for s in [SIGINT, SIGQUIT, SIGTERM, SIGHUP, SIGPIPE] { sigaddset(&defaults, s) }
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setsigmask(&attr, &none)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        var cArgs = argv.map { strdup($0) } + [nil]
        defer { for a in cArgs { free(a) } }
        var pid = pid_t()
        let rc = posix_spawn(&pid, path, nil, &attr, &cArgs, environ)
        guard rc == 0 else { throw Failure("cannot start \(path): \(String(cString: strerror(rc)))") }
        ExecChild.pid = pid
        return pid
    }

    /// COMMAND's exit status, or 128 + the signal that killed it (as shells report it).
    private func waitForChild(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { return 1 }
        }
        ExecChild.pid = 0
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }

    // MARK: The stage: provision as this process, then become COMMAND

    private func runStage(directory: String?) async throws -> Never {
        let client = sockets.agent
        var environment: [String: String] = [:]
        for entry in UnsafeBufferPointer(start: environ, count: Self.environCount()) {
            guard let entry, let text = String(validatingCString: entry), let eq = text.firstIndex(of: "=") else { continue }
            environment[String(text[..<eq])] = String(text[text.index(after: eq)...])
        }
        var leases: [Lanyard_V1_Lease] = []
        do {
            for credential in try credentials() {
                let lease = try await provision(credential, client)
                leases.append(lease)
                switch credential.place {
                case .env(let name):
                    environment[name] = lease.secret
                case .file(let name):
                    guard let directory else { throw Failure("internal: no credentials directory for \(credential.label)") }
                    try CredentialFiles.writeSecret(lease.secret, to: directory + "/" + name)
                    environment["CREDENTIALS_DIRECTORY"] = directory
                }
            }
        } catch {
            await revoke(leases, client)
            throw error
        }
        let path = resolve(command[0], path: environment["PATH"])
        do { try Self.closeOnExecAboveStderr() } catch {
            await revoke(leases, client)
            throw error
        }
        var cArgs = command.map { strdup($0) } + [nil]
        var cEnv = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        execve(path, &cArgs, &cEnv)
        let reason = String(cString: strerror(errno))
        for p in cEnv { if let p { memset(p, 0, strlen(p)); free(p) } }
        for a in cArgs { free(a) }
        await revoke(leases, client)
        throw Failure("cannot run \(command[0]): \(reason); its credentials were revoked", code: 127)
    }

    /// Marks every descriptor above stderr close-on-exec, so COMMAND inherits none of ours:
    /// not the daemon connection (which would answer it as this agent), not NIO's epoll.
    private static func closeOnExecAboveStderr() throws {
        guard let dir = opendir("/proc/self/fd") else {
            throw Failure("cannot list /proc/self/fd to keep lanyardctl's descriptors from COMMAND: \(String(cString: strerror(errno)))")
        }
        let fds = CredentialFiles.entryNames(dir).compactMap(Int32.init).filter { $0 > 2 }
        closedir(dir)
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }  // the listing's own fd is closed by now: EBADF
    }

    private static func environCount() -> Int {
        var n = 0
        while environ[n] != nil { n += 1 }
        return n
    }

    /// Provisions one credential bound to this process; waits for an approval when one is needed.
    private func provision(_ credential: Credential, _ client: LanyardClient) async throws -> Lanyard_V1_Lease {
        var request = Lanyard_V1_Request()
        request.provision = .with {
            $0.service = credential.service
            $0.scope = credential.scope
            $0.ttlSeconds = ttl
            $0.bindToProcess = true
        }
        do {
            return try await client.call(request).provision.lease
        } catch let e as LanyardError {
            guard let r = e.response as? Lanyard_V1_Response, !r.provision.approvalID.isEmpty else {
                throw Failure("cannot get the credential for \(credential.label) (\(credential.scope.joined(separator: ","))): \(e.code.name): \(e.message)")
            }
            let approval = r.provision.approvalID
            FileHandleStderr.write("lanyardctl: approval needed for \(credential.label) (\(credential.scope.joined(separator: ","))): "
                                   + "approval \(approval) (code \(r.provision.bindingCode)); waiting up to \(approvalTimeout) s\n")
            try await awaitApproval(approval, client)
            request.provision.approvalID = approval
            return try await client.call(request).provision.lease
        }
    }

    /// Returns once `approval` is approved; throws (exit 3) when it is denied, expires or the wait times out.
    private func awaitApproval(_ approval: String, _ client: LanyardClient) async throws {
        let r = try await Await.decision(of: approval, within: approvalTimeout, client: client)
        guard r.state == .approved else {
            let why = r.state == .pending ? "was not decided within \(approvalTimeout) s (--approval-timeout)" : "is \(r.state.name)"
            throw Failure("approval \(approval) \(why)\(r.reason.isEmpty ? "" : ": \(r.reason)"); COMMAND was not run", code: 3)
        }
    }

    private func revoke(_ leases: [Lanyard_V1_Lease], _ client: LanyardClient) async {
        for lease in leases {
            var req = Lanyard_V1_Request()
            req.revoke = .with { $0.leaseID = lease.leaseID }
            _ = try? await client.call(req)
        }
    }

    /// `name` as execvp finds it: a path as given, else the first executable on PATH (else as given).
    private func resolve(_ name: String, path: String?) -> String {
        if name.contains("/") { return name }
        for dir in (path ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") where access("\(dir)/\(name)", X_OK) == 0 { return "\(dir)/\(name)" }
        return name
    }
}

/// The stage child, for the signal handler that forwards SIGTERM and SIGHUP to it.
enum ExecChild {
    nonisolated(unsafe) static var pid: pid_t = 0
}

/// Async-signal-safe: kill only.
private let forwardSignal: @convention(c) (Int32) -> Void = { sig in
    if ExecChild.pid > 0 { kill(ExecChild.pid, sig) }
}
