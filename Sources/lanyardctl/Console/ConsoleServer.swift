import LanyardCore
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// The console's HTTP/1.1 server on 127.0.0.1: NIOHTTP1 in the pipeline, one
/// `NIOAsyncChannel` per connection in a discarding task group, only peers of this uid or
/// root (`LoopbackPeer`), every request through `ConsoleGate` before any route. A
/// connection is first "waiting" (a small pool, a deadline for its first request) until a
/// request carries a credential; only then does it take one of the console's slots.
struct ConsoleServer {
    /// What one peer can make the console hold.
    enum Limits {
        static let connections = 32
        /// Connections that have not yet sent a request with a credential, and how long one may take to.
        static let waiting = 8
        static let firstRequest = TimeAmount.seconds(10)
        static let bodyBytes = 16 * 1024
        /// Raw bytes of one request (head and body) before the connection is closed.
        static let requestBytes = 64 * 1024
        static let headers = 64
        static let uriBytes = 4096
        /// A connection that neither sends nor receives for this long is closed (the event
        /// stream writes a keep-alive more often).
        static let idle = TimeAmount.seconds(30)
    }

    let channel: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>
    let port: Int
    let gate: ConsoleGate
    let api: ConsoleAPI
    private let slots = NIOLockedValueBox(Slots())

    /// Connections held: those still waiting for their first credential, and those past it.
    private struct Slots {
        var waiting = 0, open = 0
    }

    static func bind(port: Int, keys: ConsoleKeys, api: ConsoleAPI) async throws -> ConsoleServer {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 32)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(RequestBytesLimit(limit: Limits.requestBytes))
                    try sync.addHandler(IdleStateHandler(allTimeout: Limits.idle))
                    try sync.addHandler(CloseWhenIdle())
                    try sync.configureHTTPServerPipeline(withErrorHandling: true)
                    return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(wrappingChannelSynchronously: channel)
                }
            }
        let bound = channel.channel.localAddress?.port ?? port
        return ConsoleServer(channel: channel, port: bound, gate: ConsoleGate(port: bound, keys: keys), api: api)
    }

    func run() async throws {
        try await withThrowingDiscardingTaskGroup { group in
            try await channel.executeThenClose { inbound in
                for try await connection in inbound {
                    group.addTask {
                        let channel = connection.channel
                        guard LoopbackPeer.allowed(peer: channel.remoteAddress, console: channel.localAddress) else {
                            try? await channel.close()
                            return
                        }
                        let admitted = slots.withLockedValue { s in
                            guard s.waiting < Limits.waiting else { return false }
                            s.waiting += 1
                            return true
                        }
                        guard admitted else {
                            try? await channel.close()
                            return
                        }
                        let deadline = channel.eventLoop.scheduleTask(in: Limits.firstRequest) { channel.close(promise: nil) }
                        var waiting = true, open = false
                        await serve(connection) {
                            // The first request with a credential: from the waiting pool to a slot.
                            deadline.cancel()
                            waiting = false
                            open = slots.withLockedValue { s in
                                s.waiting -= 1
                                guard s.open < Limits.connections else { return false }
                                s.open += 1
                                return true
                            }
                            return open
                        }
                        deadline.cancel()
                        slots.withLockedValue { s in
                            if waiting { s.waiting -= 1 }
                            if open { s.open -= 1 }
                        }
                    }
                }
            }
        }
    }

    /// One connection's requests in order; an error ends only this connection. `admit` is
    /// called once, at the first request that passes the gate: false closes the connection.
    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, admit: () -> Bool) async {
        var admitted = false
        try? await connection.executeThenClose { inbound, outbound in
            var head: HTTPRequestHead?
            var body = ByteBuffer()
            for try await part in inbound {
                switch part {
                case .head(let h):
                    head = h
                    body.clear()
                case .body(var chunk):
                    guard body.readableBytes + chunk.readableBytes <= Limits.bodyBytes else {
                        try await write(.text(.payloadTooLarge, "The request body is over \(Limits.bodyBytes) bytes."), to: outbound, closing: true)
                        return
                    }
                    body.writeBuffer(&chunk)
                case .end:
                    guard let h = head else { return }
                    head = nil
                    let outcome = gate.check(h)
                    if case .allow = outcome, !admitted {
                        admitted = true
                        guard admit() else {
                            try await write(.text(.serviceUnavailable, "The console holds \(Limits.connections) connections already; close some of its tabs."),
                                            to: outbound, closing: true)
                            return
                        }
                    }
                    switch await respond(outcome, body) {
                    case .whole(let reply):
                        let keep = h.isKeepAlive && !reply.closing
                        try await write(reply, to: outbound, closing: !keep)
                        if !keep { return }
                    case .events:
                        try await streamEvents(to: outbound)
                        return
                    }
                }
            }
        }
    }

    private enum Answer {
        case whole(Reply)
        case events
    }

    private func respond(_ outcome: ConsoleGate.Outcome, _ body: ByteBuffer) async -> Answer {
        switch outcome {
        case .refuse(let reply):
            return .whole(reply)
        case .allow(let route, let session):
            switch route {
            case .page: return .whole(.init(.ok, type: "text/html; charset=utf-8", ConsolePage.html(session: session?.text ?? "")))
            case .script: return .whole(.init(.ok, type: "text/javascript; charset=utf-8", ConsolePage.script))
            case .style: return .whole(.init(.ok, type: "text/css; charset=utf-8", ConsolePage.style))
            case .state: return .whole(.json(.ok, await api.feed.state))
            case .events: return .events
            case .overview: return .whole(await api.overview())
            case .verify: return .whole(await api.verify())
            case .decide: return .whole(await api.approveOrDeny(Array(body.readableBytesView)))
            }
        }
    }

    /// Server-sent events: the state now, then each change, and a comment as keep-alive.
    private func streamEvents(to outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>) async throws {
        var headers = ConsoleGate.securityHeaders
        headers.add(name: "Content-Type", value: "text/event-stream; charset=utf-8")
        try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)))
        let (id, stream) = await api.feed.subscribe()
        do {
            for await chunk in stream {
                try await outbound.write(.body(.byteBuffer(ByteBuffer(string: chunk))))
            }
        } catch {
            await api.feed.unsubscribe(id)
            throw error
        }
        await api.feed.unsubscribe(id)
    }

    private func write(_ reply: Reply, to outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>, closing: Bool) async throws {
        var headers = ConsoleGate.securityHeaders
        headers.add(name: "Content-Type", value: reply.type)
        headers.add(name: "Content-Length", value: String(reply.body.utf8.count))
        if closing { headers.add(name: "Connection", value: "close") }
        try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: reply.status, headers: headers)))
        try await outbound.write(.body(.byteBuffer(ByteBuffer(string: reply.body))))
        try await outbound.write(.end(nil))
    }
}

/// One response with a whole body.
struct Reply: Sendable {
    var status: HTTPResponseStatus
    var type: String
    var body: String
    var closing = false

    init(_ status: HTTPResponseStatus, type: String, _ body: String, closing: Bool = false) {
        self.status = status
        self.type = type
        self.body = body
        self.closing = closing
    }

    static func json(_ status: HTTPResponseStatus, _ body: String) -> Reply { Reply(status, type: "application/json", body) }

    /// A refusal or failure: `{"error": sentence}`.
    static func error(_ status: HTTPResponseStatus, _ sentence: String) -> Reply {
        json(status, JSON.object([("error", .string(sentence))]).text)
    }

    static func text(_ status: HTTPResponseStatus, _ sentence: String) -> Reply {
        Reply(status, type: "text/plain; charset=utf-8", sentence + "\n", closing: true)
    }
}

/// The checks every request passes before a route (DNS rebinding, cross-site requests,
/// the token, the methods, the bounds), kept apart from the I/O so that they read as one list.
struct ConsoleGate: Sendable {
    let port: Int
    let keys: ConsoleKeys

    enum Route: Sendable { case page, script, style, state, events, overview, verify, decide }
    enum Outcome: Sendable {
        /// `session`: the one the page opens (the link's token was exchanged for it).
        case allow(Route, session: ConsoleToken? = nil)
        case refuse(Reply)
    }

    /// Sent with every response, refusals included.
    static var securityHeaders: HTTPHeaders {
        [
            "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
                + "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            "Cross-Origin-Resource-Policy": "same-origin",
        ]
    }

    /// The routes and the one method each answers; a POST changes something.
    private static let routes: [String: (HTTPMethod, Route)] = [
        "/": (.GET, .page), "/console.js": (.GET, .script), "/console.css": (.GET, .style),
        "/api/state": (.GET, .state), "/api/events": (.GET, .events), "/api/overview": (.GET, .overview),
        "/api/verify": (.POST, .verify), "/api/decide": (.POST, .decide),
    ]

    /// The origins the console is reached at; `Host` must be one of them without the scheme.
    private var hosts: [String] { ["127.0.0.1:\(port)", "localhost:\(port)"] }

    func check(_ head: HTTPRequestHead) -> Outcome {
        guard head.uri.utf8.count <= ConsoleServer.Limits.uriBytes else { return .refuse(.text(.uriTooLong, "The request's URI is too long.")) }
        guard head.headers.count <= ConsoleServer.Limits.headers else {
            return .refuse(.text(.requestHeaderFieldsTooLarge, "The request has more than \(ConsoleServer.Limits.headers) header fields."))
        }
        // DNS rebinding: a page of another site whose name now resolves to 127.0.0.1 sends its own name.
        let host = head.headers["Host"]
        guard host.count == 1, hosts.contains(host[0]) else {
            return .refuse(.text(.forbidden, "Forbidden: the Host header must be 127.0.0.1:\(port) or localhost:\(port); open the link lanyardctl console printed."))
        }
        // Cross-site requests: any Origin must be the console's own; a POST must name it.
        let origin = head.headers["Origin"]
        guard origin.allSatisfy({ o in hosts.contains { "http://" + $0 == o } }), origin.count <= 1 else {
            return .refuse(.text(.forbidden, "Forbidden: requests from another origin are refused."))
        }
        if head.headers["Sec-Fetch-Site"].contains(where: { $0 != "same-origin" && $0 != "none" }) {
            return .refuse(.text(.forbidden, "Forbidden: requests from another site are refused."))
        }
        let (path, query) = Self.split(head.uri)
        guard let (method, route) = Self.routes[String(path)] else { return .refuse(.text(.notFound, "Not found.")) }
        guard head.method == method else {
            return .refuse(.text(.methodNotAllowed, "\(path) answers \(method.rawValue) only."))
        }
        if method == .POST {
            guard origin.count == 1 else { return .refuse(.text(.forbidden, "Forbidden: a POST must carry the console's Origin.")) }
            guard head.headers["Content-Type"].first?.lowercased().hasPrefix("application/json") == true else {
                return .refuse(.text(.unsupportedMediaType, "A POST to the console carries application/json."))
            }
        }
        return credential(head, query: query, route: route)
    }

    /// The credential last, so that only a request that passes every other check uses up
    /// the link's token: the page is opened with the link's one-time `?token=`, which is
    /// exchanged for a new session; the page's two files carry that session as `?session=`
    /// (the browser loads them itself), every call of its script in `X-Lanyard-Token`.
    private func credential(_ head: HTTPRequestHead, query: Substring, route: Route) -> Outcome {
        let header = head.headers["X-Lanyard-Token"]
        func given(_ name: String) -> Substring? {
            let values = query.split(separator: "&").filter { $0.hasPrefix(name + "=") }
            return values.count == 1 ? values[0].dropFirst(name.count + 1) : nil
        }
        switch route {
        case .page:
            if header.isEmpty, let session = given("token").flatMap(keys.redeem) { return .allow(.page, session: session) }
            return .refuse(.text(.forbidden, "Forbidden: this link was used already or is not the console's. Each link opens one tab; "
                                 + "open the newest link lanyardctl console printed (it prints a new one each time one is used)."))
        case .script, .style:
            if header.isEmpty, let session = given("session"), keys.admits(session) { return .allow(route) }
        case .state, .events, .overview, .verify, .decide:
            if header.count == 1, keys.admits(Substring(header[0])) { return .allow(route) }
        }
        return .refuse(.text(.forbidden, "Forbidden: this request does not carry a session of this console; open the newest link lanyardctl console printed."))
    }

    private static func split(_ uri: String) -> (Substring, Substring) {
        guard let q = uri.firstIndex(of: "?") else { return (Substring(uri), "") }
        return (uri[..<q], uri[uri.index(after: q)...])
    }
}

/// Closes a connection once `IdleStateHandler` reports it idle.
final class CloseWhenIdle: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOAny

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }
}

/// Closes a connection whose peer sends more than `limit` bytes before the console starts
/// answering: bounds one request's head (which NIOHTTP1 would otherwise buffer) and body.
final class RequestBytesLimit: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    private let limit: Int
    private var received = 0

    init(limit: Int) { self.limit = limit }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received += unwrapInboundIn(data).readableBytes
        guard received <= limit else {
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        received = 0  // an answer is under way: the next request counts afresh
        context.write(data, promise: promise)
    }
}
