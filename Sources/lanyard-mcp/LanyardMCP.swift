import ArgumentParser
import Foundation
import LanyardClient
import LanyardWire
import NIOConcurrencyHelpers

/// `lanyard-mcp --server NAME -- COMMAND [ARGS...]`: what an MCP client launches instead
/// of a stdio MCP server (docs/mcp.md).
@main
struct LanyardMCP: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lanyard-mcp",
        abstract: "Run a stdio MCP server behind lanyardd: every tool call authorized, approved and audited; its credentials from leases.",
        discussion: """
            Configure your MCP client to launch `lanyard-mcp --server NAME -- COMMAND ARGS...` instead of COMMAND. \
            NAME is an entry of the policy's mcp_servers section (lanyardctl policy show). Exit status: 0 when the client \
            closed stdin or a signal stopped it; 1 when the server could not start or exited on its own.
            """,
        version: lanyardVersion)

    @Option(help: "The mcp_servers entry of the policy that describes this server.") var server: String
    @Option(help: "The agent socket (default $LANYARD_SOCKET, else /run/lanyard/agent.sock).") var socket: String?
    @Option(help: "How long a tools/call waits for a human approval before it is answered with the binding code.")
    var approvalWaitSeconds: Int = 50
    @Option(help: "How long a request forwarded to the server may go unanswered before the client gets an error.")
    var callTimeoutSeconds: Int = 300
    @Option(help: "The longest message accepted from either side; longer ones are dropped with a log line.")
    var maxLineBytes: Int = 8 << 20
    @Argument(parsing: .postTerminator, help: "The MCP server's command and arguments, after --.") var command: [String] = []

    func validate() throws {
        guard !command.isEmpty else { throw ValidationError("give the MCP server's command after --, e.g. lanyard-mcp --server files -- npx @modelcontextprotocol/server-filesystem /srv") }
        guard (1...3600).contains(approvalWaitSeconds) else { throw ValidationError("--approval-wait-seconds must be between 1 and 3600") }
        guard (1...86_400).contains(callTimeoutSeconds) else { throw ValidationError("--call-timeout-seconds must be between 1 and 86400") }
        guard (1024...(256 << 20)).contains(maxLineBytes) else { throw ValidationError("--max-line-bytes must be between 1024 and 268435456") }
    }

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)
        let daemon = LanyardClient(socketPath: socket)
        let credentials: [Lanyard_V1_McpCredential]
        do {
            let hello = try await daemon.hello(client: "lanyard-mcp \(server)")
            guard hello.caller.authenticated else { throw GatewayError("lanyardd does not know this process as an agent") }
            var request = Lanyard_V1_Request()
            request.mcpServer = .with { $0.server = server }
            credentials = try await daemon.call(request).mcpServer.credentials
        } catch {
            log("cannot start: \(error)")
            await daemon.close()
            throw ExitCode(1)
        }

        let outcome = Outcome()
        let toClient = LineWriter(fd: STDOUT_FILENO, limit: maxLineBytes)
        let options = Gateway.Options(server: server, command: command, approvalWait: .seconds(approvalWaitSeconds),
                                      callTimeout: .seconds(callTimeoutSeconds), maxLine: maxLineBytes)
        let gateway = Gateway(options: options, daemon: daemon, credentials: credentials, toClient: toClient) { outcome.finish($0, $1) }
        toClient.start(name: "client-out") { outcome.finish(0, "the client stopped reading") }
        let signals = [SIGTERM, SIGINT, SIGHUP].map { sig in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig)
            source.setEventHandler { outcome.finish(0, "signal \(sig)") }
            source.resume()
            return source
        }
        do {
            try await gateway.start()
        } catch {
            log("cannot start the MCP server: \(error)")
            await daemon.close()
            throw ExitCode(1)
        }
        LineReader(fd: STDIN_FILENO, cap: maxLineBytes).start(name: "client-in", onLine: { gateway.fromClient($0) },
                                                               onEnd: { outcome.finish(0, "the client closed stdin") })

        let (status, why) = await outcome.wait()
        log("stopping: \(why)")
        await gateway.stop()
        toClient.close()
        signals.forEach { $0.cancel() }
        await daemon.close()
        if status != 0 { throw ExitCode(status) }
    }
}

/// The first reason the gateway has to stop, and whoever waits for it.
final class Outcome: Sendable {
    private let box = NIOLockedValueBox<(result: (Int32, String)?, waiter: CheckedContinuation<(Int32, String), Never>?)>((nil, nil))

    func finish(_ status: Int32, _ why: String) {
        let waiter = box.withLockedValue { s -> CheckedContinuation<(Int32, String), Never>? in
            guard s.result == nil else { return nil }
            s.result = (status, why)
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume(returning: (status, why))
    }

    func wait() async -> (Int32, String) {
        await withCheckedContinuation { c in
            let ready = box.withLockedValue { s -> (Int32, String)? in
                if let r = s.result { return r }
                s.waiter = c
                return nil
            }
            if let ready { c.resume(returning: ready) }
        }
    }
}
