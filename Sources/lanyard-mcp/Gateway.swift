import Foundation
import LanyardClient
import LanyardCore
import LanyardWire
import NIOConcurrencyHelpers

/// The enforcement point between an MCP client (our stdin/stdout) and the real server (a
/// child process): relays every message unchanged except tools/call, which runs only
/// when lanyardd allows it, and tools/list, from which the tools this agent may never
/// call are left out. The daemon maps and decides; the gateway only sends it the facts.
final class Gateway: @unchecked Sendable {  // mutable state only under `state`'s lock
    struct Options: Sendable {
        var server: String
        var command: [String]
        var approvalWait: Duration
        var callTimeout: Duration
        var maxLine: Int
    }

    /// A request forwarded to the server and not yet answered.
    enum Pending: Sendable { case toolsList, other }

    private struct State {
        var server: ServerProcess?
        var generation = 0
        var inFlight: [RequestID: (kind: Pending, serial: Int)] = [:]
        var serial = 0
        /// tools/call requests waiting for lanyardd (or a human); true once cancelled.
        var deciding: [RequestID: Bool] = [:]
        /// Non-nil while the server restarts: messages for it wait here, in order.
        var held: [[UInt8]]?
        var heldBytes = 0
        var restartWanted = false
        /// The client's handshake, replayed to a restarted server.
        var initialize: Message?
        var initialized: [UInt8]?
        /// The id of a replayed initialize and who waits for its answer.
        var replay: (id: RequestID, done: CheckedContinuation<Void, Never>)?
        var stopping = false
        /// The run being replaced: its exit is expected.
        var retiring: Int?
        var dropped = 0
    }

    let options: Options
    let daemon: LanyardClient
    let toClient: LineWriter
    private let state = NIOLockedValueBox(State())
    /// Signalled when a restart has sent the held messages on (the client's reader waits on it).
    private let resumed = NSCondition()
    /// The credentials the policy declares for this server.
    let credentials: [Lanyard_V1_McpCredential]
    /// Fulfilled once, with the exit status, when the gateway has to stop.
    let finished: @Sendable (Int32, String) -> Void

    init(options: Options, daemon: LanyardClient, credentials: [Lanyard_V1_McpCredential], toClient: LineWriter,
         finished: @escaping @Sendable (Int32, String) -> Void) {
        self.options = options
        self.daemon = daemon
        self.credentials = credentials
        self.toClient = toClient
        self.finished = finished
    }

    // MARK: The server's runs

    /// Starts a run of the server with fresh credentials (not yet the current one).
    private func launch() async throws -> ServerProcess {
        let generation = state.withLockedValue { s in s.generation += 1; return s.generation }
        let server = try await ServerProcess.start(generation: generation, command: options.command, credentials: credentials,
                                                   client: daemon, maxLine: options.maxLine) { [self] status in
            serverExited(generation: generation, status: status)
        }
        server.output.start(name: "server-out-\(generation)", onLine: { [self] in fromServer($0, generation: generation) }, onEnd: {})
        server.input.start(name: "server-in-\(generation)", onFailure: {})
        return server
    }

    func start() async throws {
        let server = try await launch()
        state.withLockedValue { $0.server = server }
        scheduleRenewal(server)
    }

    private func serverExited(generation: Int, status: Int32) {
        let current = state.withLockedValue { $0.server?.generation == generation && !$0.stopping && $0.retiring != generation }
        if current { finished(1, "the MCP server exited (status \(status))") }
    }

    /// Restarts the server before its earliest lease ends — a quarter of the lease's life
    /// early (at least half of it or 10 s, for the new server's start; at most a minute) —
    /// once no forwarded call is in flight; at the lease's end whatever is in flight.
    private func scheduleRenewal(_ server: ServerProcess) {
        guard let expires = server.expiresAt, let issued = server.leases.map(\.issuedAt).min() else { return }
        let life = max(expires - issued, 1)
        let margin = min(60, max(life / 4, min(life / 2, 10)))
        Task { [self] in
            try? await Task.sleep(until: .unixSeconds(expires - margin))
            guard isCurrent(server) else { return }
            let idle = state.withLockedValue { s -> Bool in s.restartWanted = true; return s.inFlight.isEmpty }
            if idle { await restart(from: server) }
            try? await Task.sleep(until: .unixSeconds(expires))
            if isCurrent(server), !restarting {
                abandonInFlight("the MCP server was restarted because its credential lease ended before this call finished; retry the call")
                await restart(from: server)
            }
        }
    }

    /// Wakes the client's reader if it waits for held messages to drain.
    private nonisolated func wakeClientReader() {
        resumed.lock()
        resumed.broadcast()
        resumed.unlock()
    }

    private var restarting: Bool { state.withLockedValue { $0.held != nil } }

    private func isCurrent(_ server: ServerProcess) -> Bool {
        state.withLockedValue { $0.server === server && !$0.stopping }
    }

    /// Replaces `old` by a new run with fresh credentials between calls: messages for the
    /// server wait, the client's handshake is replayed, then they flow to the new run.
    private func restart(from old: ServerProcess) async {
        let begin = state.withLockedValue { s -> Bool in
            guard s.server === old, s.held == nil, !s.stopping else { return false }
            s.held = []
            return true
        }
        guard begin else { return }
        let new: ServerProcess
        do {
            new = try await launch()
            try await replayHandshake(to: new)
        } catch {
            finished(1, "cannot restart the MCP server with a fresh credential: \(error)")
            return
        }
        // The old run ends and its leases are revoked before the new one takes a call.
        state.withLockedValue { $0.retiring = old.generation }
        await old.stop()
        await old.release(client: daemon)
        let held = state.withLockedValue { s -> [[UInt8]] in
            s.server = new
            s.restartWanted = false
            defer { s.held = nil; s.heldBytes = 0 }
            return s.held ?? []
        }
        for line in held { new.input.send(line) }
        wakeClientReader()
        log("restarted the MCP server with a fresh credential (run \(new.generation))")
        scheduleRenewal(new)
    }

    private func replayHandshake(to server: ServerProcess) async throws {
        guard let initialize = state.withLockedValue({ $0.initialize }) else { return }
        let id = RequestID(string: "lanyard-mcp-replay-\(server.generation)")
        var params = initialize.params
        params.removeValue(forKey: "_meta")
        let answered = Task { [self] in
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                state.withLockedValue { $0.replay = (id, done) }
                server.input.send(Reply.request(id, method: "initialize", params: params))
            }
        }
        let timeout = Task {
            try await Task.sleep(for: .seconds(30))
            throw GatewayError("the restarted server did not answer initialize within 30 s")
        }
        _ = await answered.value
        timeout.cancel()
        if let initialized = state.withLockedValue({ $0.initialized }) { server.input.send(initialized) }
    }

    // MARK: Client → server

    /// Tool calls waiting for lanyardd or a human, and requests waiting for the server, at most.
    static let maxDeciding = 64
    static let maxInFlight = 1024

    func fromClient(_ line: Line) {
        // Backpressure: a client that stops reading, or a server that stops reading, stops
        // this thread from reading the client, instead of filling memory.
        toClient.waitForRoom()
        state.withLockedValue { $0.server }?.input.waitForRoom()
        resumed.lock()
        while state.withLockedValue({ $0.heldBytes > options.maxLine }) { resumed.wait() }
        resumed.unlock()
        guard case .message(let raw) = line else {
            if case .oversized(let n) = line {
                log("dropped a message of \(n) bytes from the client (over --max-line-bytes \(options.maxLine))")
                toClient.send(Reply.error(nil, code: RPCCode.invalidRequest, "lanyard-mcp dropped a message of \(n) bytes: over its --max-line-bytes \(options.maxLine)"))
            }
            return
        }
        if Message.isBatch(raw) {
            let ids = Message.batchIDs(raw)
            log("refused a JSON-RPC batch of the client (\(ids.count) requests)")
            for id in ids {
                toClient.send(Reply.error(id, code: RPCCode.invalidRequest, "lanyard-mcp does not relay JSON-RPC batches (MCP 2025-06-18 removed them): send one message per line"))
            }
            if ids.isEmpty { toClient.send(Reply.error(nil, code: RPCCode.invalidRequest, "lanyard-mcp does not relay JSON-RPC batches: send one message per line")) }
            return
        }
        guard let message = Message(client: raw) else {
            let problem = Message.strictProblem(raw)
            log("dropped a message from the client that is not strict JSON: \(problem)")
            toClient.send(Reply.error(nil, code: RPCCode.parseError, "lanyard-mcp relays only strict JSON objects (one per line; no duplicate member names, "
                                      + "valid UTF-8, no lone surrogates); this message was dropped: \(problem)"))
            return
        }
        switch message.method {
        case "tools/call" where message.id != nil:
            let id = message.id!
            let admitted = state.withLockedValue { s -> Bool in
                guard s.deciding.count < Self.maxDeciding, s.deciding[id] == nil else { return false }
                s.deciding[id] = false
                return true
            }
            guard admitted else {
                toClient.send(Reply.error(id, code: RPCCode.busy, "lanyard-mcp: \(Self.maxDeciding) tool calls already wait for lanyardd or a human, "
                                          + "or one with this id does; retry when one has been answered"))
                return
            }
            Task { [self] in await toolCall(message, id: id) }
        case "initialize" where message.id != nil:
            state.withLockedValue { $0.initialize = message }
            toServer(raw, pending: message.id.map { ($0, .other) })
        case "notifications/initialized":
            state.withLockedValue { $0.initialized = raw }
            toServer(raw, pending: nil)
        case "notifications/cancelled":
            // A call still being decided is dropped here; the server never saw it.
            let held = (message.params["requestId"]).flatMap(RequestID.init).map { id in
                state.withLockedValue { s -> Bool in
                    guard s.deciding[id] != nil else { return false }
                    s.deciding[id] = true
                    return true
                }
            } ?? false
            if !held { toServer(raw, pending: nil) }
        case "tools/list" where message.id != nil:
            toServer(raw, pending: (message.id!, .toolsList))
        default:
            toServer(raw, pending: message.isRequest ? (message.id!, .other) : nil)
        }
    }

    /// Sends a message to the current run (or holds it during a restart); a request is
    /// remembered until the server answers it or `callTimeout` passes.
    private func toServer(_ raw: [UInt8], pending: (RequestID, Pending)?) {
        let (admitted, target, serial) = state.withLockedValue { s -> (Bool, ServerProcess?, Int) in
            if let (id, kind) = pending {
                guard s.inFlight.count < Self.maxInFlight else { return (false, nil, 0) }
                s.serial += 1
                s.inFlight[id] = (kind, s.serial)
            }
            if s.held != nil {
                s.held!.append(raw)
                s.heldBytes += raw.count
                return (true, nil, s.serial)
            }
            return (true, s.server, s.serial)
        }
        guard admitted else {
            if let (id, _) = pending {
                toClient.send(Reply.error(id, code: RPCCode.busy, "lanyard-mcp: \(Self.maxInFlight) requests already wait for the MCP server; retry when it has answered some"))
            }
            return
        }
        target?.input.send(raw)
        if let (id, _) = pending {
            Task { [self] in
                try? await Task.sleep(for: options.callTimeout)
                let overdue = state.withLockedValue { s -> Bool in
                    guard s.inFlight[id]?.serial == serial else { return false }  // answered (the id may be in use again)
                    s.inFlight[id] = nil
                    return true
                }
                if overdue {
                    log("the server did not answer request \(id) within --call-timeout-seconds; answered the client with an error")
                    toClient.send(Reply.error(id, code: RPCCode.timeout, "the MCP server did not answer within \(options.callTimeout) (lanyard-mcp --call-timeout-seconds)"))
                    renewIfIdle()
                }
            }
        }
    }

    private func abandonInFlight(_ why: String) {
        let ids = state.withLockedValue { s -> [RequestID] in
            defer { s.inFlight = [:] }
            return Array(s.inFlight.keys)
        }
        for id in ids { toClient.send(Reply.error(id, code: RPCCode.internalError, why)) }
    }

    // MARK: Server → client

    private func fromServer(_ line: Line, generation: Int) {
        toClient.waitForRoom()  // a client that stops reading stops this run's reader, not memory
        guard case .message(let raw) = line, let message = Message(raw) else {
            let n = state.withLockedValue { s in s.dropped += 1; return s.dropped }
            if n <= 5 || n % 1000 == 0 {
                let what: String
                if case .oversized(let size) = line { what = "a message of \(size) bytes (over --max-line-bytes)" } else { what = "a line that is not a JSON-RPC object" }
                log("dropped \(what) from the server (\(n) dropped so far)")
            }
            return
        }
        if message.isResponse, let id = message.id {
            let (replay, pending) = state.withLockedValue { s -> (CheckedContinuation<Void, Never>?, Pending?) in
                if let r = s.replay, r.id == id {
                    s.replay = nil
                    return (r.done, nil)
                }
                guard s.server?.generation == generation || s.held != nil else { return (nil, nil) }
                return (nil, s.inFlight.removeValue(forKey: id)?.kind)
            }
            if let replay { replay.resume(); return }
            if case .toolsList? = pending {
                Task { [self] in
                    toClient.send(await filteredToolsList(message, id: id))
                    renewIfIdle()
                }
                return
            }
            toClient.send(raw)
            renewIfIdle()
            return
        }
        toClient.send(raw)
    }

    /// A restart that waited for calls in flight runs once there are none.
    private func renewIfIdle() {
        let server = state.withLockedValue { s -> ServerProcess? in
            s.restartWanted && s.inFlight.isEmpty && s.held == nil ? s.server : nil
        }
        if let server { Task { await restart(from: server) } }
    }

    /// The server's tools/list answer without the tools this agent may never call.
    private func filteredToolsList(_ message: Message, id: RequestID) async -> [UInt8] {
        guard var result = message.object["result"] as? [String: Any], let tools = result["tools"] as? [[String: Any]] else {
            return message.raw
        }
        var request = Lanyard_V1_Request()
        request.mcpServer = .with {
            $0.server = options.server
            $0.tools = tools.map { $0["name"] as? String ?? "" }
        }
        do {
            let views = try await daemon.call(request).mcpServer.tools
            result["tools"] = zip(tools, views).filter { $0.1.visible }.map(\.0)
            var reply = message.object
            reply["result"] = result
            return Reply.encode(reply)
        } catch {
            log("could not ask lanyardd which tools to list: \(error)")
            return Reply.error(id, code: RPCCode.internalError, "lanyard-mcp could not ask lanyardd which tools this agent may see: \(error)")
        }
    }

    // MARK: Tool calls

    private func toolCall(_ message: Message, id: RequestID) async {
        defer { _ = state.withLockedValue { $0.deciding.removeValue(forKey: id) } }
        let params = message.params
        guard let tool = params["name"] as? String else {
            toClient.send(Reply.error(id, code: -32602, "tools/call needs params.name"))
            return
        }
        // The arguments as written (strict JSON: what the server reads too), for the daemon to bind.
        let arguments = message.strict?[member: "params"]?[member: "arguments"] ?? .object([])
        guard case .object = arguments else {
            toClient.send(Reply.error(id, code: -32602, "tools/call params.arguments must be an object"))
            return
        }
        let call = Lanyard_V1_ToolCall.with {
            $0.server = options.server
            $0.tool = tool
            $0.argumentsJson = arguments.canonicalText
        }
        let progressToken = (params["_meta"] as? [String: Any])?["progressToken"]
        let deadline = ContinuousClock.now + options.approvalWait
        var approvalID = ""
        var progress = 0
        do {
            while true {
                let answer = try await authorize(call, approvalID: approvalID)
                switch answer.decision {
                case .allow:
                    guard !cancelled(id) else { return }
                    toServer(message.raw, pending: (id, .other))
                    return
                case .pending where approvalID.isEmpty:
                    approvalID = answer.approvalID
                    log("tools/call \(tool) waits for approval \(answer.approvalID) (binding code \(answer.bindingCode))")
                    var approved = false
                    while ContinuousClock.now < deadline, !cancelled(id) {
                        if let progressToken {
                            progress += 1
                            toClient.send(Reply.progress(token: progressToken, progress: progress,
                                                         message: "waiting for a human to approve \(answer.capability) (binding code \(answer.bindingCode)): lanyardctl approvals approve \(answer.approvalID)"))
                        }
                        let left = deadline - ContinuousClock.now
                        let state = try await awaitApproval(approvalID, wait: min(left, .seconds(10)))
                        if state.state == .approved { approved = true; break }
                        if state.state != .pending {
                            // Asked once more with the approval, so the daemon records how this call ended.
                            let final = try await authorize(call, approvalID: approvalID)
                            guard final.decision == .allow else {
                                toClient.send(Reply.toolError(id, Text.decided(tool: tool, answer, state)))
                                return
                            }
                            approved = true
                            break
                        }
                    }
                    guard !cancelled(id) else { return }
                    guard approved else {
                        toClient.send(Reply.toolError(id, Text.pending(tool: tool, answer, waited: options.approvalWait)))
                        return
                    }
                default:
                    toClient.send(Reply.toolError(id, Text.denied(tool: tool, answer)))
                    return
                }
            }
        } catch {
            log("tools/call \(tool) refused: lanyardd could not decide: \(error)")
            toClient.send(Reply.toolError(id, "lanyard: tools/call \(tool) did not run: lanyardd could not decide it (\(error)). The server did not receive this call."))
        }
    }

    private func cancelled(_ id: RequestID) -> Bool { state.withLockedValue { $0.deciding[id] ?? false } }

    private func authorize(_ call: Lanyard_V1_ToolCall, approvalID: String) async throws -> Lanyard_V1_AuthorizeResponse {
        var request = Lanyard_V1_Request()
        request.authorize = .with {
            $0.toolCall = call
            $0.approvalID = approvalID
        }
        return try await daemon.call(request).authorize
    }

    private func awaitApproval(_ id: String, wait: Duration) async throws -> Lanyard_V1_AwaitApprovalResponse {
        var request = Lanyard_V1_Request()
        request.awaitApproval = .with {
            $0.approvalID = id
            $0.waitMs = UInt32(max(wait.components.seconds * 1000 + wait.components.attoseconds / 1_000_000_000_000_000, 1))
        }
        return try await daemon.call(request).awaitApproval
    }

    // MARK: Stopping

    /// Stops the server and revokes every lease it was given (however the gateway ends).
    func stop() async {
        let server = state.withLockedValue { s -> ServerProcess? in
            s.stopping = true
            return s.server
        }
        guard let server else { return }
        await server.stop()
        await server.release(client: daemon)
    }
}

/// What a model (and its user) reads when a call did not run.
enum Text {
    static func denied(tool: String, _ a: Lanyard_V1_AuthorizeResponse) -> String {
        let cap = a.capability.isEmpty ? "(no capability: the tool is not in the policy)" : a.capability
        return "lanyard: tools/call \(tool) denied by policy: capability \(cap): \(a.reason). The server did not receive this call."
    }

    static func decided(tool: String, _ a: Lanyard_V1_AuthorizeResponse, _ s: Lanyard_V1_AwaitApprovalResponse) -> String {
        let what = s.state == .denied ? "an approver denied it" : s.state == .expired ? "its approval expired" : "its approval can no longer be used"
        return "lanyard: tools/call \(tool) did not run: \(what) (capability \(a.capability), binding code \(a.bindingCode)\(s.reason.isEmpty ? "" : ": \(s.reason)")). The server did not receive this call."
    }

    static func pending(tool: String, _ a: Lanyard_V1_AuthorizeResponse, waited: Duration) -> String {
        "lanyard: tools/call \(tool) needs a human approval (capability \(a.capability), \(a.risk.label) risk) and none came within \(waited). "
            + "Binding code \(a.bindingCode); an approver runs: lanyardctl approvals approve \(a.approvalID) — then retry the same call with the same arguments "
            + "(it finds this approval). The approval expires at unix time \(a.approvalExpiresAt). The server did not receive this call."
    }
}

extension Lanyard_V1_RiskLevel {
    var label: String {
        switch self {
        case .low: "LOW"
        case .medium: "MEDIUM"
        case .high: "HIGH"
        default: "unknown"
        }
    }
}

extension ContinuousClock.Instant {
    /// The instant of a wall-clock time (unix seconds), as seen now.
    static func unixSeconds(_ t: Int64) -> ContinuousClock.Instant {
        let now = Date().timeIntervalSince1970
        return .now + .milliseconds(Int64((Double(t) - now) * 1000))
    }
}
