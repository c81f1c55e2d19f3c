import Foundation
import LanyardClient
import LanyardWire

/// One run of the real MCP server: the child process, its pipes, and the leases whose
/// secrets it was started with. A restart makes a new one; the old one is stopped and
/// its leases revoked.
final class ServerProcess: @unchecked Sendable {
    let generation: Int
    let process: Process
    let input: LineWriter
    let output: LineReader
    let leases: [Lanyard_V1_Lease]
    /// The private directory of credential files ($CREDENTIALS_DIRECTORY), if any.
    let credentialsDirectory: String?

    /// The earliest expiry of its leases (unix seconds), or nil when it has none.
    var expiresAt: Int64? { leases.map(\.expiresAt).min() }

    private init(generation: Int, process: Process, input: LineWriter, output: LineReader, leases: [Lanyard_V1_Lease], credentialsDirectory: String?) {
        self.generation = generation
        self.process = process
        self.input = input
        self.output = output
        self.leases = leases
        self.credentialsDirectory = credentialsDirectory
    }

    /// Provisions the server's credentials as the calling agent, then starts `command`
    /// with them in its environment or its credentials directory. On any failure the
    /// leases already provisioned are revoked.
    static func start(generation: Int, command: [String], credentials: [Lanyard_V1_McpCredential], client: LanyardClient,
                      maxLine: Int, onExit: @escaping @Sendable (Int32) -> Void) async throws -> ServerProcess {
        var leases: [Lanyard_V1_Lease] = []
        var directory: String?
        do {
            // What the client's environment says of these names never reaches the server.
            var environment = ProcessInfo.processInfo.environment
            environment["CREDENTIALS_DIRECTORY"] = nil
            for credential in credentials where !credential.env.isEmpty { environment[credential.env] = nil }
            for credential in credentials {
                let lease = try await provision(credential, client: client)
                leases.append(lease)
                if !credential.env.isEmpty {
                    environment[credential.env] = lease.secret
                } else {
                    let dir = try directory ?? CredentialFiles.makePrivateDirectory(prefix: "lanyard-mcp")
                    directory = dir
                    try CredentialFiles.writeSecret(lease.secret, to: dir + "/" + credential.file)
                }
            }
            if let directory { environment["CREDENTIALS_DIRECTORY"] = directory }

            let process = Process()
            process.executableURL = URL(fileURLWithPath: try resolve(command[0]))
            process.arguments = Array(command.dropFirst())
            process.environment = environment
            let stdin = Pipe(), stdout = Pipe()
            process.standardInput = stdin
            process.standardOutput = stdout
            process.standardError = FileHandle.standardError
            process.terminationHandler = { onExit($0.terminationStatus) }
            try process.run()
            // Our copies of the child's ends are closed by Pipe; keep only ours.
            try? stdin.fileHandleForReading.close()
            try? stdout.fileHandleForWriting.close()
            let writing = stdin.fileHandleForWriting
            let input = LineWriter(fd: writing.fileDescriptor, limit: maxLine) { try? writing.close() }
            let output = LineReader(fd: stdout.fileHandleForReading.fileDescriptor, cap: maxLine)
            // The pipes' FileHandles must outlive their descriptors' use.
            let server = ServerProcess(generation: generation, process: process, input: input, output: output, leases: leases,
                                       credentialsDirectory: directory)
            server.pipes = [stdin, stdout]
            return server
        } catch {
            await revoke(leases, client: client)
            if let directory { CredentialFiles.removeDirectory(directory) }
            throw error
        }
    }

    private var pipes: [Pipe] = []

    private static func provision(_ c: Lanyard_V1_McpCredential, client: LanyardClient) async throws -> Lanyard_V1_Lease {
        var request = Lanyard_V1_Request()
        request.provision = .with {
            $0.service = c.service
            $0.scope = c.scope
            $0.ttlSeconds = c.ttlSeconds
            // The lease dies with the gateway, even killed: a crashed gateway leaves no live credentials behind.
            $0.bindToProcess = true
        }
        do {
            return try await client.call(request).provision.lease
        } catch let e as LanyardError {
            throw GatewayError("cannot provision the server's credential \(c.env.isEmpty ? c.file : c.env) (service \(c.service), scope \(c.scope.joined(separator: " "))): \(e.code.name): \(e.message)")
        }
    }

    /// Stops the process: closes its input, then SIGTERM and, after `grace`, SIGKILL.
    func stop(grace: Duration = .seconds(2)) async {
        input.close()
        guard process.isRunning else { return }
        if await exited(within: grace) { return }
        process.terminate()
        if await exited(within: grace) { return }
        kill(process.processIdentifier, SIGKILL)
        _ = await exited(within: grace)
    }

    private func exited(within limit: Duration) async -> Bool {
        let deadline = ContinuousClock.now + limit
        while process.isRunning, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        return !process.isRunning
    }

    /// Revokes this run's leases and removes its credentials directory.
    func release(client: LanyardClient) async {
        await Self.revoke(leases, client: client)
        if let credentialsDirectory { CredentialFiles.removeDirectory(credentialsDirectory) }
    }

    static func revoke(_ leases: [Lanyard_V1_Lease], client: LanyardClient) async {
        for lease in leases {
            var request = Lanyard_V1_Request()
            request.revoke = .with { $0.leaseID = lease.leaseID }
            do { _ = try await client.call(request) } catch {
                log("could not revoke lease \(lease.leaseID) (\(lease.service)); it ends at its expiry: \(error)")
            }
        }
    }

    /// `name` as execvp would find it: a path as given, else the first executable on $PATH.
    static func resolve(_ name: String) throws -> String {
        if name.contains("/") { return name }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":") where access("\(dir)/\(name)", X_OK) == 0 { return "\(dir)/\(name)" }
        throw GatewayError("command '\(name)' is not on PATH; give its absolute path after --")
    }
}

struct GatewayError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// One line on stderr, which MCP clients keep as the server's log. Never a secret.
func log(_ message: String) {
    FileHandle.standardError.write(Data("lanyard-mcp: \(message)\n".utf8))
}
