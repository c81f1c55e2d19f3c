import ArgumentParser
import LanyardClient
import LanyardCore

/// `lanyardctl console`: the approvals console, a web page on 127.0.0.1 that acts on the
/// admin socket as the uid that started it (docs/operator.md, "The console").
struct Console: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the approvals console on 127.0.0.1: a web page that acts as your uid on the admin socket (Ctrl-C to stop).",
        discussion: "Prints a link with a random token; the console answers only requests that carry it, on the loopback address it listens on.")
    @OptionGroup var sockets: Sockets
    @Option(help: "Where to listen: 127.0.0.1:PORT or localhost:PORT (loopback only; default: a free port on 127.0.0.1).")
    var listen: String = "127.0.0.1:0"

    func run() async throws {
        let port = try Self.loopbackPort(listen)
        let token = ConsoleToken()
        // Two connections: the feed's long poll never queues a decision behind it.
        let feed = ApprovalFeed(admin: LanyardAdminClient(socketPath: sockets.adminSocket))
        let api = ConsoleAPI(admin: LanyardAdminClient(socketPath: sockets.adminSocket), feed: feed)
        let server: ConsoleServer
        do {
            server = try await ConsoleServer.bind(port: port, token: token, api: api)
        } catch {
            throw Failure("cannot listen on 127.0.0.1:\(port): \(error); choose another port with --listen 127.0.0.1:PORT, or omit it for a free one")
        }
        print("lanyardctl console: open http://127.0.0.1:\(server.port)/?token=\(token.text)")
        print("It acts as uid \(getuid()) on the admin socket; keep the link to yourself. Ctrl-C stops it.")
        try flushStdout()
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { await feed.run() }
            try await server.run()
        }
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
