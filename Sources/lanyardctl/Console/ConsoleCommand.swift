import ArgumentParser
import LanyardClient
import LanyardCore
import NIOConcurrencyHelpers

/// `lanyardctl console`: the approvals console, a web page on 127.0.0.1 that acts on the
/// admin socket as the uid that started it (docs/operator.md, "The console").
struct Console: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the approvals console on 127.0.0.1: a web page that acts as your uid on the admin socket (Ctrl-C to stop).",
        discussion: "Prints a link with a random one-time token: opening it gives that browser tab its own session, and the console prints a new link for the next tab. "
            + "The console answers only requests with a session, from this uid or root, on the loopback address it listens on.")
    @OptionGroup var sockets: Sockets
    @Option(help: "Where to listen: 127.0.0.1:PORT or localhost:PORT (loopback only; default: a free port on 127.0.0.1).")
    var listen: String = "127.0.0.1:0"

    func run() async throws {
        let port = try Self.loopbackPort(listen)
        let keys = ConsoleKeys { link, bound in Self.announce("that link is used up; the next one: ", bound, link) }
        // Two connections: the feed's long poll never queues a decision behind it.
        let feed = ApprovalFeed(admin: LanyardAdminClient(socketPath: sockets.adminSocket))
        let api = ConsoleAPI(admin: LanyardAdminClient(socketPath: sockets.adminSocket), feed: feed)
        let server: ConsoleServer
        do {
            server = try await ConsoleServer.bind(port: port, keys: keys, api: api)
        } catch {
            throw Failure("cannot listen on 127.0.0.1:\(port): \(error); choose another port with --listen 127.0.0.1:PORT, or omit it for a free one")
        }
        keys.port.withLockedValue { $0 = server.port }
        Self.announce("open ", server.port, keys.link)
        print("It acts as uid \(getuid()) on the admin socket; keep the link to yourself. Each link opens one tab once. Ctrl-C stops it.")
        try flushStdout()
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { await feed.run() }
            try await server.run()
        }
    }

    /// Prints a link to the console (on stdout, the one place it goes).
    static func announce(_ what: String, _ port: Int, _ token: ConsoleToken) {
        print("lanyardctl console: \(what)http://127.0.0.1:\(port)/?token=\(token.text)")
        try? flushStdout()
    }

    /// The port of `--listen`, which must name the loopback address.
    static func loopbackPort(_ listen: String) throws -> Int {
        guard let colon = listen.lastIndex(of: ":"), let port = UInt16(listen[listen.index(after: colon)...]) else {
            throw Failure("--listen \(listen.field): use 127.0.0.1:PORT (PORT 0 for a free one)")
        }
        let host = listen[..<colon]
        guard host == "127.0.0.1" || host == "localhost" else {
            throw Failure("--listen \(listen.field): the console listens on the loopback address only (127.0.0.1:PORT), "
                          + "so that no other machine can reach it")
        }
        return Int(port)
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// The console's secret: 32 bytes from the kernel's CSPRNG (`getrandom(2)`, through
/// `SystemRandomNumberGenerator`), as hex. Compared in constant time.
struct ConsoleToken: Sendable {
    let text: String

    init() {
        var rng = SystemRandomNumberGenerator()
        text = (0..<32).map { _ in
            let b = UInt8.random(in: .min ... .max, using: &rng)
            return String(b >> 4, radix: 16) + String(b & 0xf, radix: 16)
        }.joined()
    }

    init(text: String) { self.text = text }

    /// Whether `candidate` is the token, in time that depends only on its length.
    func matches(_ candidate: Substring) -> Bool {
        let a = Array(text.utf8), b = Array(candidate.utf8)
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for i in a.indices { diff |= a[i] ^ b[i] }
        return diff == 0
    }
}

/// The console's credentials: the link's one-time token, and one session per tab that
/// opened a link. Redeeming the link's token retires it (it lingers in the address bar,
/// the history and the terminal) and announces the next one.
final class ConsoleKeys: Sendable {
    /// Open tabs' sessions kept; the oldest goes first.
    static let sessions = 16
    private let keys = NIOLockedValueBox((link: ConsoleToken(), sessions: [ConsoleToken]()))
    /// The port the links name, once bound.
    let port = NIOLockedValueBox(0)
    private let announce: @Sendable (ConsoleToken, Int) -> Void

    init(announce: @escaping @Sendable (_ link: ConsoleToken, _ port: Int) -> Void) { self.announce = announce }

    /// The link's token now.
    var link: ConsoleToken { keys.withLockedValue { $0.link } }

    /// A new session for `candidate` when it is the link's token, which then stops working.
    func redeem(_ candidate: Substring) -> ConsoleToken? {
        let exchanged: (session: ConsoleToken, next: ConsoleToken)? = keys.withLockedValue { k in
            guard k.link.matches(candidate) else { return nil }
            let session = ConsoleToken()
            k.sessions.append(session)
            if k.sessions.count > Self.sessions { k.sessions.removeFirst() }
            k.link = ConsoleToken()
            return (session, k.link)
        }
        guard let exchanged else { return nil }
        announce(exchanged.next, port.withLockedValue { $0 })
        return exchanged.session
    }

    /// Whether `candidate` is an open tab's session (compared with every one, in constant time each).
    func admits(_ candidate: Substring) -> Bool {
        keys.withLockedValue { k in k.sessions.map { $0.matches(candidate) }.contains(true) }
    }
}
