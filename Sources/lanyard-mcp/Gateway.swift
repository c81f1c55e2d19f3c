import Foundation
import LanyardClient
import LanyardCore
import LanyardWire
import NIOConcurrencyHelpers

/// The enforcement point between an MCP client (our stdin/stdout) and the real server (a
/// child process): relays every message, except that tools/call runs only when lanyardd
/// allows it, and tools/list leaves out the tools this agent may never call. The daemon
/// maps and decides; the gateway only sends it the facts (server, tool, arguments).
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
        /// Every run started and not yet released (a restart has two for a moment).
        var runs: [Int: ServerProcess] = [:]
        var server: ServerProcess?
        var generation = 0
        var inFlight: [RequestID: (kind: Pending, serial: Int)] = [:]
        var serial = 0
        /// tools/call requests waiting for lanyardd (or a human); true once cancelled.
        var deciding: [RequestID: Bool] = [:]
        var decidingBytes = 0
        /// Non-nil while the server restarts: messages for it wait here, in order.
        var held: [[UInt8]]?
        var heldBytes = 0
        var restartWanted = false
        /// The client's handshake, replayed to a restarted server.
        var initialize: JSON?
        var initialized: [UInt8]?
        /// A replayed initialize: its id, the run it went to, and who waits for the answer.
        var replay: (id: RequestID, generation: Int, done: CheckedContinuation<Bool, Never>)?
        var stopping = false
        /// The run being replaced: its exit is expected.
        var retiring: Int?
        var dropped = 0
    }

    /// Bounds on what a client can make the gateway hold.
    static let maxDeciding = 64
    static let maxInFlight = 1024

    let options: Options
    let daemon: LanyardClient
    let toClient: LineWriter
    private let state = NIOLockedValueBox(State())
    /// The credentials the policy declares for this server.
    let credentials: [Lanyard_V1_McpCredential]
    /// Called (once is enough) when the gateway has to stop, with the exit status.
    let finished: @Sendable (Int32, String) -> Void

    init(options: Options, daemon: LanyardClient, credentials: [Lanyard_V1_McpCredential], toClient: LineWriter,
         finished: @escaping @Sendable (Int32, String) -> Void) {
        self.options = options
        self.daemon = daemon
        self.credentials = credentials
        self.toClient = toClient
        self.finished = finished
    }

    private var maxHeldBytes: Int { options.maxLine }
    private var maxDecidingBytes: Int { 4 * options.maxLine }

    // MARK: The server's runs

    /// Starts a run of the server with fresh credentials (not yet the current one).
    private func launch() async throws -> ServerProcess {
        let generation = state.withLockedValue { s in s.generation += 1; return s.generation }
        let server = try await ServerProcess.start(generation: generation, command: options.command, credentials: credentials,
                                                   client: daemon, maxLine: options.maxLine) { [self] status in
            serverExited(generation: generation, status: status)
        }
        state.withLockedValue { $0.runs[generation] = server }
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
        let (current, replay) = state.withLockedValue { s -> (Bool, CheckedContinuation<Bool, Never>?) in
            let current = s.server?.generation == generation && !s.stopping && s.retiring != generation
            guard let r = s.replay, r.generation == generation else { return (current, nil) }
            s.replay = nil
            return (current, r.done)
        }
        replay?.resume(returning: false)
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

    private var restarting: Bool { state.withLockedValue { $0.held != nil } }

    private func isCurrent(_ server: ServerProcess) -> Bool {
        state.withLockedValue { $0.server === server && !$0.stopping }
    }

    /// Replaces `old` by a new run with fresh credentials between calls: messages for the
    /// server wait, the client's handshake is replayed, the old run ends and its leases
    /// are revoked, then the messages flow to the new run.
    private func restart(from old: ServerProcess) async {
        let begin = state.withLockedValue { s -> Bool in
            guard s.server === old, s.held == nil, !s.stopping else { return false }
            s.held = []
            return true
        }
        guard begin else { return }
        do {
            let new = try await launch()
            guard try await replayHandshake(to: new), !state.withLockedValue({ $0.stopping }) else {
                throw GatewayError("the new server exited, or did not answer the replayed initialize within 30 s")
            }
            state.withLockedValue { $0.retiring = old.generation }
            await old.stop()
            await release(old)
            let held = state.withLockedValue { s -> [[UInt8]] in
                s.server = new
                s.restartWanted = false
                defer { s.held = nil; s.heldBytes = 0 }
                return s.held ?? []
            }
            for line in held { new.input.send(line) }
            log("restarted the MCP server with a fresh credential (run \(new.generation))")
            scheduleRenewal(new)
        } catch {
            // `stop()` ends every run that is still up, and revokes its leases.
            finished(1, "cannot restart the MCP server with a fresh credential: \(error)")
        }
    }

    /// Sends the client's initialize (and initialized) to a new run; false when the run
    /// exits or does not answer within 30 s.
    private func replayHandshake(to server: ServerProcess) async throws -> Bool {
        guard let initialize = state.withLockedValue({ $0.initialize }) else { return true }
        let id = RequestID(strict: .string("lanyard-mcp-replay-" + UUID().uuidString))!
        let params = (initialize[member: "params"] ?? .object([])).removing("_meta")
        let timeout = Task { [self] in
            try await Task.sleep(for: .seconds(30))
            let waiter = state.withLockedValue { s -> CheckedContinuation<Bool, Never>? in
                defer { if s.replay?.id == id { s.replay = nil } }
                return s.replay?.id == id ? s.replay?.done : nil
            }
            waiter?.resume(returning: false)
        }
        defer { timeout.cancel() }
        let answered = await withCheckedContinuation { (done: CheckedContinuation<Bool, Never>) in
            state.withLockedValue { $0.replay = (id, server.generation, done) }
            server.input.send(Reply.request(id, method: "initialize", params: params))
        }
        if answered, let initialized = state.withLockedValue({ $0.initialized }) { server.input.send(initialized) }
        return answered
    }

    private func release(_ server: ServerProcess) async {
        state.withLockedValue { _ = $0.runs.removeValue(forKey: server.generation) }
        await server.release(client: daemon)
    }

    // MARK: Client → server

    func fromClient(_ line: Line) {
        // A client that stops reading stops this thread from reading it, instead of filling memory.
        toClient.waitForRoom()
        let raw: [UInt8]
        switch line {
        case .oversized(let n):
            log("dropped a message of \(n) bytes from the client (over --max-line-bytes \(options.maxLine))")
            toClient.send(Reply.error(nil, code: RPCCode.invalidRequest, "lanyard-mcp dropped a message of \(n) bytes: over its --max-line-bytes \(options.maxLine)"))
            return
        case .message(let bytes):
            raw = bytes
        }
        if raw.first(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0D }) == UInt8(ascii: "[") {
            // Refused, one error per request in it (or one with id null when none can be read).
            let why = "lanyard-mcp does not relay JSON-RPC batches (MCP 2025-06-18 removed them): send one message per line"
            var ids: [RequestID] = []
            if case .array(let items)? = try? JSON.read(raw, maxDepth: ClientMessage.maxDepth, numbers: .asWritten) {
                ids = items.compactMap { $0[member: "method"] != nil ? $0[member: "id"].flatMap(RequestID.init(strict:)) : nil }
            }
            log("refused a JSON-RPC batch of the client (\(ids.count) requests)")
            if ids.isEmpty { toClient.send(Reply.error(nil, code: RPCCode.invalidRequest, why)) }
            for id in ids.prefix(Self.maxInFlight) { toClient.send(Reply.error(id, code: RPCCode.invalidRequest, why)) }
            return
        }
        let message: ClientMessage
        do {
            message = try ClientMessage(raw)
        } catch {
            log("dropped a message from the client that is not strict JSON: \(error)")
            toClient.send(Reply.error(nil, code: RPCCode.parseError, "lanyard-mcp relays only strict JSON objects (one per line; no duplicate member names, "
                                      + "valid UTF-8, no lone surrogates); this message was dropped: \(error)"))
            return
        }
        guard !message.badID, message.method != "tools/call" || message.id != nil else {
            log("dropped a message from the client with an id that is neither a string nor an integer")
            toClient.send(Reply.error(nil, code: RPCCode.invalidRequest, "lanyard-mcp: a request's id must be a string or an integer (tools/call needs one); this message was dropped"))
            return
        }
        let id = message.id
        switch message.method {
        case "tools/call":
            admitToolCall(message, id: id!, size: raw.count)
        case "initialize" where id != nil:
            state.withLockedValue { $0.initialize = message.json }
            toServer(message.forwarded, pending: (id!, .other))
        case "notifications/initialized":
            state.withLockedValue { $0.initialized = message.forwarded }
            toServer(message.forwarded, pending: nil)
        case "notifications/cancelled":
            // A call still being decided is dropped here; the server never saw it.
            let held = message.params?[member: "requestId"].flatMap(RequestID.init(strict:)).map { cancelled in
                state.withLockedValue { s -> Bool in
                    guard s.deciding[cancelled] != nil else { return false }
                    s.deciding[cancelled] = true
                    return true
                }
            } ?? false
            if !held { toServer(message.forwarded, pending: nil) }
        case "tools/list" where id != nil:
            toServer(message.forwarded, pending: (id!, .toolsList))
        default:
            toServer(message.forwarded, pending: message.method != nil ? id.map { ($0, .other) } : nil)
        }
    }

    private func admitToolCall(_ message: ClientMessage, id: RequestID, size: Int) {
        let admitted = state.withLockedValue { s -> Bool in
            guard s.deciding.count < Self.maxDeciding, s.decidingBytes + size <= maxDecidingBytes, s.deciding[id] == nil else { return false }
            s.deciding[id] = false
            s.decidingBytes += size
            return true
        }
        guard admitted else {
            toClient.send(Reply.error(id, code: RPCCode.busy, "lanyard-mcp: \(Self.maxDeciding) tool calls (or their bytes) already wait for lanyardd "
                                      + "or a human, or one with this id does; retry when one has been answered"))
            return
        }
        Task { [self] in
            await toolCall(message, id: id)
            state.withLockedValue { s in
                s.deciding[id] = nil
                s.decidingBytes -= size
            }
        }
    }

    /// Sends a message to the current run (or holds it during a restart); a request is
    /// remembered until the server answers it or `callTimeout` passes. A server that
    /// stops reading gets no more: requests are answered busy, notifications dropped.
    private func toServer(_ line: [UInt8], pending: (RequestID, Pending)?) {
        enum Verdict { case send(ServerProcess?, serial: Int), busy(String) }
        let verdict = state.withLockedValue { s -> Verdict in
            if s.held != nil, s.heldBytes + line.count > maxHeldBytes { return .busy("the MCP server is restarting and lanyard-mcp holds enough for it") }
            if s.held == nil, let server = s.server, !server.input.hasRoom { return .busy("the MCP server is not reading what lanyard-mcp sends it") }
            if let (id, kind) = pending {
                guard s.inFlight.count < Self.maxInFlight else { return .busy("\(Self.maxInFlight) requests already wait for the MCP server") }
                s.serial += 1
                s.inFlight[id] = (kind, s.serial)
            }
            guard s.held == nil else {
                s.held!.append(line)
                s.heldBytes += line.count
                return .send(nil, serial: s.serial)
            }
            return .send(s.server, serial: s.serial)
        }
        switch verdict {
        case .busy(let why):
            if let (id, _) = pending {
                toClient.send(Reply.error(id, code: RPCCode.busy, "lanyard-mcp: \(why); retry later"))
            } else {
                log("dropped a notification of the client: \(why)")
            }
        case .send(let target, let serial):
            target?.input.send(line)
            if let (id, _) = pending { expire(id, serial: serial) }
        }
    }

    /// Answers request `id` with an error if the server has not answered it in `callTimeout`.
    private func expire(_ id: RequestID, serial: Int) {
        Task { [self] in
            try? await Task.sleep(for: options.callTimeout)
            let overdue = state.withLockedValue { s -> Bool in
                guard s.inFlight[id]?.serial == serial else { return false }  // answered (the id may be in use again)
                s.inFlight[id] = nil
                return true
            }
            guard overdue else { return }
            log("the server did not answer request \(id) within --call-timeout-seconds; answered the client with an error")
            toClient.send(Reply.error(id, code: RPCCode.timeout, "the MCP server did not answer within \(options.callTimeout) (lanyard-mcp --call-timeout-seconds)"))
            renewIfIdle()
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
        guard case .message(let raw) = line, !ServerMessage.hasHiddenLineBreak(raw), let message = ServerMessage(raw) else {
            let what: String
            switch line {
            case .oversized(let size): what = "a message of \(size) bytes (over --max-line-bytes)"
            case .message(let raw) where ServerMessage.hasHiddenLineBreak(raw): what = "a line with a carriage return or line separator inside"
            case .message: what = "a line that is not a JSON-RPC object"
            }
            drop("\(what) from the server")
            return
        }
        guard message.isResponse else {
            toClient.send(raw)  // the server's requests and notifications
            return
        }
        guard let id = message.id else {
            drop("an answer with no usable id from the server")
            return
        }
        let (replay, pending) = state.withLockedValue { s -> (CheckedContinuation<Bool, Never>?, Pending?) in
            if let r = s.replay, r.id == id, r.generation == generation {
                s.replay = nil
                return (r.done, nil)
            }
            guard s.server?.generation == generation else { return (nil, nil) }
            return (nil, s.inFlight.removeValue(forKey: id)?.kind)
        }
        if let replay {
            replay.resume(returning: true)
            return
        }
        switch pending {
        case nil:
            drop("an answer to no request in flight (id \(id)) from the server")
        case .toolsList?:
            Task { [self] in
                toClient.send(await filteredToolsList(message, id: id))
                renewIfIdle()
            }
        case .other?:
            toClient.send(raw)
            renewIfIdle()
        }
    }

    private func drop(_ what: String) {
        let n = state.withLockedValue { s in s.dropped += 1; return s.dropped }
        if n <= 5 || n % 1000 == 0 { log("dropped \(what) (\(n) dropped so far)") }
    }

    /// A restart that waited for calls in flight runs once there are none.
    private func renewIfIdle() {
        let server = state.withLockedValue { s -> ServerProcess? in
            s.restartWanted && s.inFlight.isEmpty && s.held == nil ? s.server : nil
        }
        if let server { Task { await restart(from: server) } }
    }

    /// The server's tools/list answer with only the tools this agent may see (always
    /// written again: what the client reads is what was filtered).
    private func filteredToolsList(_ message: ServerMessage, id: RequestID) async -> [UInt8] {
        guard var result = message.object["result"] as? [String: Any] else { return message.raw }  // an error answer
        let tools = (result["tools"] as? [Any] ?? []).compactMap { $0 as? [String: Any] }
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

    private func toolCall(_ message: ClientMessage, id: RequestID) async {
        guard case .string(let tool)? = message.params?[member: "name"] else {
            toClient.send(Reply.error(id, code: RPCCode.invalidParams, "tools/call needs params.name, a string"))
            return
        }
        // The arguments as written: the daemon binds exactly what the server receives.
        let arguments = message.params?[member: "arguments"] ?? .object([])
        guard case .object = arguments else {
            toClient.send(Reply.error(id, code: RPCCode.invalidParams, "tools/call params.arguments must be an object"))
            return
        }
        let call = Lanyard_V1_ToolCall.with {
            $0.server = options.server
            $0.tool = tool
            $0.argumentsJson = arguments.canonicalText
        }
        let shown = Inert.text(tool, limit: 128)
        let progressToken = message.params?[member: "_meta"]?[member: "progressToken"]
        let deadline = ContinuousClock.now + options.approvalWait
        do {
            var answer = try await authorize(call, approvalID: "")
            if answer.decision == .pending {
                log("tools/call \(shown) waits for approval \(answer.approvalID) (binding code \(answer.bindingCode))")
                var progress = 0
                var state = Lanyard_V1_AwaitApprovalResponse()
                state.state = .pending
                while state.state == .pending, ContinuousClock.now < deadline, !cancelled(id) {
                    if let progressToken {
                        progress += 1
                        toClient.send(Reply.progress(token: progressToken, progress: progress,
                                                     text: "waiting for a human to approve \(answer.capability) (binding code \(answer.bindingCode)): lanyardctl approvals approve \(answer.approvalID)"))
                    }
                    state = try await awaitApproval(answer.approvalID, wait: min(deadline - ContinuousClock.now, .seconds(10)))
                }
                guard !cancelled(id) else { return }
                guard state.state != .pending else {
                    toClient.send(Reply.toolError(id, Text.pending(tool: shown, answer, waited: options.approvalWait)))
                    return
                }
                // Decided: asked again with the approval, which this call uses up — and the
                // daemon records how the call ended.
                let pending = answer
                answer = try await authorize(call, approvalID: pending.approvalID)
                guard answer.decision == .allow else {
                    toClient.send(Reply.toolError(id, Text.decided(tool: shown, pending, state)))
                    return
                }
            }
            guard answer.decision == .allow else {
                toClient.send(Reply.toolError(id, Text.denied(tool: shown, answer)))
                return
            }
            guard !cancelled(id) else { return }
            toServer(message.forwarded, pending: (id, .other))
        } catch {
            log("tools/call \(shown) refused: lanyardd could not decide: \(error)")
            toClient.send(Reply.toolError(id, "lanyard: tools/call \(shown) did not run: lanyardd could not decide it (\(error)). The server did not receive this call."))
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

    /// Stops every run of the server and revokes every lease it was given (however the gateway ends).
    func stop() async {
        let runs = state.withLockedValue { s -> [ServerProcess] in
            s.stopping = true
            return Array(s.runs.values)
        }
        for server in runs {
            await server.stop()
            await release(server)
        }
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
