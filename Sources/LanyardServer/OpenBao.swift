#if canImport(Glibc)
import Glibc
#endif
import AsyncHTTPClient
import FoundationEssentials
import LanyardCore
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOConcurrencyHelpers

/// The OpenBao / HashiCorp Vault backend of `openbao` services (DESIGN.md section 7):
/// reads KV v2 secrets, creates and revokes child tokens. lanyardd logs in with a token
/// file or AppRole, keeps the session token renewed, and fails closed: every failure is
/// an `UpstreamError`, which Provision answers as UNAVAILABLE.
///
/// Each call has the service's `timeout_ms` as its whole budget. Addresses are tried in
/// order; a refused connection, a timeout, a redirect, a 429 or a 5xx moves on to the next
/// address, and rounds repeat with a short backoff until the budget is spent.
final class OpenBaoBackend: Sendable {
    private let http: HTTPClient
    private let logger: Logger
    private let sessions = NIOLockedValueBox<[SessionKey: Session]>([:])

    init(http: HTTPClient, logger: Logger) {
        self.http = http
        self.logger = logger
    }

    /// The `kv_field` of the secret at `kv_mount/kv_path`, read now (never cached).
    func readKV(_ config: Policy.OpenBao) async throws(UpstreamError) -> String {
        let response = try await authorized(config, .GET, "/v1/\(config.kvMount)/data/\(config.kvPath)", body: nil)
        guard let body = try? Self.decode(KVBody.self, response) else {
            throw UpstreamError("OpenBao answered \(config.kvMount)/data/\(config.kvPath) with something that is not a KV v2 secret; is \(config.kvMount) a KV version 2 mount?")
        }
        guard case .string(let value)? = body.data.data?[config.kvField] else {
            throw UpstreamError("the secret \(config.kvMount)/\(config.kvPath) in OpenBao has no string field '\(config.kvField)'", notFound: true)
        }
        return value
    }

    /// A non-renewable child token with `token_policies` that lives `ttlSeconds` at most.
    func createToken(_ config: Policy.OpenBao, ttlSeconds: Int, displayName: String, leaseID: String) async throws(UpstreamError) -> (token: String, accessor: String, ttlSeconds: Int) {
        let body = JSON.object([
            ("policies", .array(config.tokenPolicies.map { .string($0) })),
            ("ttl", .string("\(ttlSeconds)s")), ("explicit_max_ttl", .string("\(ttlSeconds)s")),
            ("renewable", .bool(false)),
            ("display_name", .string(displayName)), ("meta", .object([("lanyard_lease", .string(leaseID))])),
        ]).text
        let response = try await authorized(config, .POST, "/v1/auth/token/create", body: body)
        guard let auth = (try? Self.decode(AuthBody.self, response))?.auth, !auth.clientToken.isEmpty, !auth.accessor.isEmpty else {
            throw UpstreamError("OpenBao's answer to auth/token/create holds no token")
        }
        return (auth.clientToken, auth.accessor, auth.leaseDuration)
    }

    /// Revokes a token by its accessor (and its children). An accessor OpenBao no longer
    /// knows (expired or revoked already) counts as revoked.
    func revoke(accessor: String, _ config: Policy.OpenBao) async throws(UpstreamError) {
        _ = try await authorized(config, .POST, "/v1/auth/token/revoke-accessor", body: JSON.object([("accessor", .string(accessor))]).text)
    }

    /// Renews session tokens past half their lifetime; a session that cannot be renewed is
    /// dropped, so the next call logs in afresh.
    func renewSessions(_ configs: [Policy.OpenBao]) async {
        for config in configs {
            let key = SessionKey(config)
            guard let session = sessions.withLockedValue({ $0[key] }), session.renewable, session.ttlSeconds > 0,
                  ContinuousClock.now >= session.obtained + .seconds(session.ttlSeconds / 2) else { continue }
            let deadline = ContinuousClock.now + .milliseconds(config.timeoutMs)
            do {
                let response = try await send(config, .POST, "/v1/auth/token/renew-self", body: "{}", token: session.token, deadline: deadline)
                guard response.status == 200, let auth = (try? Self.decode(AuthBody.self, response))?.auth else {
                    throw UpstreamError("renew-self answered HTTP \(response.status)")
                }
                sessions.withLockedValue { $0[key] = Session(token: session.token, renewable: auth.renewable, ttlSeconds: auth.leaseDuration, obtained: .now) }
            } catch {
                sessions.withLockedValue { _ = $0.removeValue(forKey: key) }
                logger.warning("OpenBao session not renewed; lanyardd will log in again", metadata: ["error": "\(error)"])
            }
        }
    }

    // MARK: Sessions

    private struct SessionKey: Hashable {
        var addresses: [String]
        var auth: Policy.OpenBao.Auth
        var caFile: String?
        init(_ c: Policy.OpenBao) { (addresses, auth, caFile) = (c.addresses, c.auth, c.caFile) }
    }

    private struct Session: Sendable {
        var token: String
        var renewable: Bool
        var ttlSeconds: Int
        var obtained: ContinuousClock.Instant
    }

    /// Sends with the session token; on a 403 from a cached session, logs in once more
    /// (the token may have expired or been revoked) and retries.
    private func authorized(_ config: Policy.OpenBao, _ method: HTTPMethod, _ path: String, body: String?) async throws(UpstreamError) -> Response {
        let deadline = ContinuousClock.now + .milliseconds(config.timeoutMs)
        let key = SessionKey(config)
        var fresh = false
        var session: Session
        if let cached = sessions.withLockedValue({ $0[key] }) {
            session = cached
        } else {
            session = try await login(config, deadline: deadline)
            fresh = true
        }
        while true {
            let response = try await send(config, method, path, body: body, token: session.token, deadline: deadline)
            switch response.status {
            case 200..<300:
                return response
            case 403 where !fresh:
                sessions.withLockedValue { _ = $0.removeValue(forKey: key) }
                session = try await login(config, deadline: deadline)
                fresh = true
            case 403:
                throw UpstreamError("OpenBao refused lanyardd's token on \(path): \(Self.errors(response)); give lanyardd's token or AppRole a policy that allows it")
            case 404:
                throw UpstreamError("OpenBao has nothing at \(path.dropFirst(4))\(Self.errors(response).isEmpty ? "" : ": \(Self.errors(response))")", notFound: true)
            default:
                throw UpstreamError("OpenBao answered \(path) with HTTP \(response.status): \(Self.errors(response))")
            }
        }
    }

    private func login(_ config: Policy.OpenBao, deadline: ContinuousClock.Instant) async throws(UpstreamError) -> Session {
        let session: Session
        switch config.auth {
        case .tokenFile(let file):
            let token = try Self.readCredential(file, what: "token file")
            let response = try await send(config, .GET, "/v1/auth/token/lookup-self", body: nil, token: token, deadline: deadline)
            guard response.status == 200, let data = (try? Self.decode(LookupBody.self, response))?.data else {
                throw UpstreamError("OpenBao refused the token in \(file) (HTTP \(response.status)); put a valid token there")
            }
            session = Session(token: token, renewable: data.renewable ?? false, ttlSeconds: data.ttl ?? 0, obtained: .now)
        case .appRole(let roleIDFile, let secretIDFile):
            let body = JSON.object([
                ("role_id", .string(try Self.readCredential(roleIDFile, what: "AppRole role_id file"))),
                ("secret_id", .string(try Self.readCredential(secretIDFile, what: "AppRole secret_id file"))),
            ]).text
            let response = try await send(config, .POST, "/v1/auth/approle/login", body: body, token: nil, deadline: deadline)
            guard response.status == 200, let auth = (try? Self.decode(AuthBody.self, response))?.auth else {
                throw UpstreamError("OpenBao refused lanyardd's AppRole login (HTTP \(response.status)): \(Self.errors(response)); check \(roleIDFile) and \(secretIDFile)")
            }
            session = Session(token: auth.clientToken, renewable: auth.renewable, ttlSeconds: auth.leaseDuration, obtained: .now)
        }
        sessions.withLockedValue { $0[SessionKey(config)] = session }
        logger.info("logged in to OpenBao", metadata: ["token.ttl": "\(session.ttlSeconds)", "renewable": "\(session.renewable)"])
        return session
    }

    /// A token, role id or secret id: an absolute path, or a systemd credential's name.
    static func readCredential(_ name: String, what: String) throws(UpstreamError) -> String {
        var path = name
        if !name.hasPrefix("/") {
            guard let dir = Systemd.credentialsDirectory else {
                throw UpstreamError("the \(what) '\(name)' names a systemd credential, but lanyardd runs without $CREDENTIALS_DIRECTORY; use an absolute path or LoadCredential=\(name)")
            }
            path = dir + "/" + name
        }
        let text: String
        do {
            text = try TrustedPath.read(path, what: "the \(what)", limit: 8192, secret: true)
        } catch {
            throw UpstreamError("\(error)")
        }
        let value = String(text.trimmed)
        guard !value.isEmpty else { throw UpstreamError("the \(what) \(path) is empty") }
        return value
    }

    // MARK: HTTP with failover

    struct Response {
        var status: UInt
        var body: ByteBuffer
    }

    /// One request, tried at each address in turn until one answers or `deadline` passes.
    private func send(_ config: Policy.OpenBao, _ method: HTTPMethod, _ path: String, body: String?, token: String?,
                      deadline: ContinuousClock.Instant) async throws(UpstreamError) -> Response {
        var tried: [String] = []
        var backoff = Duration.milliseconds(50)
        // Built once per call, not per attempt: the same trust roots for every address.
        let tls = config.caFile.map { ca in
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .file(ca)
            return tls
        }
        while true {
            for address in config.addresses {
                let remaining = deadline - .now
                guard remaining > .zero else {
                    let attempts = tried.isEmpty ? "" : " (\(tried.suffix(3).joined(separator: "; ")))"
                    throw UpstreamError("OpenBao did not answer within \(config.timeoutMs) ms\(attempts)")
                }
                var request = HTTPClientRequest(url: address + path)
                request.method = method
                if let token { request.headers.add(name: "X-Vault-Token", value: token) }
                if let body {
                    request.headers.add(name: "Content-Type", value: "application/json")
                    request.body = .bytes(ByteBuffer(string: body))
                }
                request.tlsConfiguration = tls
                do {
                    let response = try await http.execute(request, deadline: .now() + .nanoseconds(Self.nanoseconds(remaining)))
                    let bytes = try await response.body.collect(upTo: 1 << 20)
                    let status = response.status.code
                    if (300..<400).contains(status) || status == 429 || status >= 500 {
                        tried.append("\(address): HTTP \(status)")
                        continue
                    }
                    return Response(status: status, body: bytes)
                } catch {
                    tried.append("\(address): \(Self.describe(error))")
                }
            }
            // Every address failed this round: wait a little (a leader election takes a moment).
            let pause = min(backoff, deadline - .now)
            guard pause > .zero else { continue }
            try? await Task.sleep(for: pause)
            backoff = min(backoff * 2, .milliseconds(500))
        }
    }

    static func nanoseconds(_ d: Duration) -> Int64 {
        d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000
    }

    static func describe(_ error: any Error) -> String {
        if let e = error as? HTTPClientError {
            switch e {
            case .deadlineExceeded, .readTimeout, .connectTimeout: return "timed out"
            default: return "\(e)"
            }
        }
        if let e = error as? NIOConnectionError { return "cannot connect (\(e.connectionErrors.first.map { "\($0.error)" } ?? "refused"))" }
        return String("\(error)".prefix(200))
    }

    // MARK: Answers

    private static func decode<T: Decodable>(_ type: T.Type, _ response: Response) throws -> T {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(type, from: Data(response.body.readableBytesView))
    }

    /// OpenBao's `errors` list, for messages (never a secret: OpenBao puts none there).
    private static func errors(_ response: Response) -> String {
        let list = (try? decode(ErrorsBody.self, response))?.errors ?? []
        return String(list.joined(separator: "; ").prefix(300))
    }

    private struct AuthBody: Decodable {
        struct Auth: Decodable {
            var clientToken: String
            var accessor: String
            var leaseDuration: Int
            var renewable: Bool
        }
        var auth: Auth?
    }

    private struct LookupBody: Decodable {
        struct Token: Decodable {
            var ttl: Int?
            var renewable: Bool?  // absent for root tokens
        }
        var data: Token
    }

    private struct KVBody: Decodable {
        struct Secret: Decodable { var data: [String: Field]? }
        var data: Secret

        /// A field's text when it is a string; any other value is not decoded further, so a
        /// deeply nested one costs no more than its bytes.
        enum Field: Decodable {
            case string(String), other
            init(from decoder: any Decoder) throws {
                self = (try? decoder.singleValueContainer().decode(String.self)).map(Field.string) ?? .other
            }
        }
    }

    private struct ErrorsBody: Decodable { var errors: [String]? }
}

/// A failure at the backend. The message says what failed and what to check; it never
/// holds a secret.
struct UpstreamError: Error, CustomStringConvertible {
    var description: String
    /// The backend answered that the thing asked for does not exist.
    var notFound = false
    init(_ d: String, notFound: Bool = false) {
        description = d
        self.notFound = notFound
    }
}
