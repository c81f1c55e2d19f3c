import FoundationEssentials
import LanyardCore
import LanyardCrypto
import LanyardStore
import LanyardWire
import Logging

/// Agent identities as JWTs (DESIGN.md section 8): EdDSA, `kid` = RFC 7638 thumbprint,
/// claims iss/sub/agent_id/aud/capabilities/iat/nbf/exp/jti. Validation pins the
/// algorithm to the key type and names the first check that failed.
final class IdentityService: Sendable {
    static let purpose = "identity"
    static let maxTokenBytes = 8 * 1024
    static let skewSeconds: Int64 = 30
    static let defaultTTL: UInt32 = 300
    static let maxTTL: UInt32 = 900

    let store: Store
    let attestor: any Attestor
    let clock: any WallClock
    let logger: Logger

    init(store: Store, attestor: any Attestor, clock: any WallClock, logger: Logger) {
        self.store = store
        self.attestor = attestor
        self.clock = clock
        self.logger = logger
    }

    func issue(_ c: Lanyard_V1_IssueIdentityRequest, _ caller: Caller, _ agent: Agent) async throws -> Lanyard_V1_Response {
        var record = caller.record("issue_identity")
        record.resource = String(c.audience.prefix(256))
        func deny(_ code: Lanyard_V1_Code, _ reason: String) async throws -> Never {
            record.decision = Decision.deny.rawValue
            record.outcome = "denied"
            record.reason = reason
            try await store.audit.append(record)
            throw CallError(code, reason)
        }
        guard !c.audience.isEmpty, c.audience.utf8.count <= 256 else {
            try await deny(.invalidArgument, "audience is required (1 to 256 bytes): the service the token is for")
        }
        let ttl = c.ttlSeconds == 0 ? Self.defaultTTL : c.ttlSeconds
        guard ttl <= Self.maxTTL else {
            try await deny(.invalidArgument, "ttl_seconds \(c.ttlSeconds) exceeds the maximum of \(Self.maxTTL) s for identity tokens")
        }
        // Never more than the agent was granted: a subset on request, all grants otherwise.
        var capabilities = agent.grants.keys.map(\.name).sorted()
        if !c.capabilities.isEmpty {
            for name in c.capabilities where !capabilities.contains(name) {
                try await deny(.permissionDenied, "agent '\(agent.name)' is not granted '\(name.prefix(128))'; a token can carry only granted capabilities")
            }
            capabilities = Array(Set(c.capabilities)).sorted()
        }
        guard attestor.isStillSame(caller.connection.peer) else {
            try await deny(.unauthenticated, "the process that opened this connection has exited or changed; reconnect")
        }
        let now = clock.nowSeconds()
        let exp = now + Int64(ttl)
        let jti = Hex.encode(SecureRandom.bytes(16))
        let policy = caller.snapshot.policy
        let claims = JSON.object([
            ("iss", .string(Self.issuer(policy))), ("sub", .string(agent.uri(trustDomain: policy.trustDomain))),
            ("agent_id", .string(agent.id)), ("aud", .string(c.audience)), ("capabilities", .array(capabilities.map { .string($0) })),
            ("iat", .int(now)), ("nbf", .int(now)), ("exp", .int(exp)), ("jti", .string(jti)),
        ])
        let (kid, key) = try store.signingKey(purpose: Self.purpose)
        let token = try JWT.sign(claims: claims, kid: kid, key: key)
        record.decision = Decision.allow.rawValue
        record.outcome = "issued"
        record.reason = "jti \(jti), kid \(kid), expires in \(ttl) s"
        try await store.audit.append(record, with: store.recordIdentity(jti: jti, agentID: agent.id, audience: c.audience, expiresMicros: exp * 1_000_000))
        var response = Lanyard_V1_Response()
        response.issueIdentity = .with {
            $0.token = token
            $0.expiresAt = exp
        }
        return response
    }

    func validate(_ c: Lanyard_V1_ValidateIdentityRequest, _ caller: Caller) async throws -> Lanyard_V1_Response {
        var result = Lanyard_V1_ValidateIdentityResponse()
        switch verify(c.token, audience: c.audience, policy: caller.snapshot.policy) {
        case .success(let claims):
            result.valid = true
            result.claims = claims
        case .failure(let failure):
            result.valid = false
            result.failedCheck = failure.check
        }
        var record = caller.record("validate_identity")
        record.resource = String(c.audience.prefix(256))
        record.decision = result.valid ? Decision.allow.rawValue : Decision.deny.rawValue
        record.outcome = result.valid ? "valid" : "invalid"
        record.reason = result.valid ? "sub \(result.claims.sub), jti \(result.claims.jti)" : "failed check: \(result.failedCheck)"
        try await store.audit.append(record)
        var response = Lanyard_V1_Response()
        response.validateIdentity = result
        return response
    }

    struct Failure: Error, Equatable {
        var check: String
        init(_ check: String) { self.check = check }
    }

    /// Every check of DESIGN.md section 8, in order; the first that fails is named.
    func verify(_ token: String, audience: String, policy: Policy) -> Result<Lanyard_V1_Claims, Failure> {
        guard token.utf8.count <= Self.maxTokenBytes else { return .failure(Failure("size")) }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 3 else { return .failure(Failure("format")) }
        guard let headerBytes = Base64URL.decode(parts[0]), case .object(let header)? = try? JSONDecoder().decode(JSONValue.self, from: Data(headerBytes))
        else { return .failure(Failure("format")) }
        guard header["alg"] == .string("EdDSA") else { return .failure(Failure("alg")) }
        for embedded in ["jku", "jwk", "x5c", "x5u", "x5t", "x5t#S256", "crit"] where header[embedded] != nil {
            return .failure(Failure("header: \(embedded) is not accepted"))
        }
        guard header["typ"] == .string("JWT") else { return .failure(Failure("typ")) }
        guard case .string(let kid)? = header["kid"], kid.utf8.count == 43, Base64URL.decode(kid) != nil,
              let key = try? store.publicKeys(purpose: Self.purpose).first(where: { $0.kid == kid })
        else { return .failure(Failure("kid")) }
        guard let signature = Base64URL.decode(parts[2]), signature.count == 64,
              Ed25519.isValidSignature(signature, for: Array("\(parts[0]).\(parts[1])".utf8), publicKey: key.publicKey)
        else { return .failure(Failure("signature")) }
        guard let payloadBytes = Base64URL.decode(parts[1]), case .object(let claims)? = try? JSONDecoder().decode(JSONValue.self, from: Data(payloadBytes))
        else { return .failure(Failure("format")) }

        guard claims["iss"] == .string(Self.issuer(policy)) else { return .failure(Failure("iss")) }
        switch claims["aud"] {
        case .string(let aud)? where !audience.isEmpty && aud == audience: break
        case .array(let auds)? where !audience.isEmpty && auds.contains(.string(audience)): break
        default: return .failure(Failure("aud"))
        }
        let now = clock.nowSeconds()
        guard case .number(let exp)? = claims["exp"] else { return .failure(Failure("exp")) }
        guard now <= Int64(exp) + Self.skewSeconds else { return .failure(Failure("exp")) }
        if let nbfValue = claims["nbf"] {
            guard case .number(let nbf) = nbfValue, now >= Int64(nbf) - Self.skewSeconds else { return .failure(Failure("nbf")) }
        }
        guard case .number(let iat)? = claims["iat"] else { return .failure(Failure("iat")) }
        guard case .string(let sub)? = claims["sub"], !sub.isEmpty else { return .failure(Failure("sub")) }
        guard case .string(let jti)? = claims["jti"], jti.utf8.count >= 32 else { return .failure(Failure("jti")) }
        guard (try? store.isIdentityLive(jti: jti)) == true else { return .failure(Failure("revoked")) }

        return .success(.with {
            $0.iss = Self.issuer(policy)
            $0.sub = sub
            if case .string(let id)? = claims["agent_id"] { $0.agentID = id }
            $0.aud = audience
            if case .array(let caps)? = claims["capabilities"] {
                $0.capabilities = caps.compactMap { if case .string(let c) = $0 { c } else { nil } }
            }
            $0.iat = Int64(iat)
            if case .number(let nbf)? = claims["nbf"] { $0.nbf = Int64(nbf) }
            $0.exp = Int64(exp)
            $0.jti = jti
        })
    }

    /// RFC 7517 JWKS of every signing key whose tokens may still be live.
    func jwks() throws -> String {
        let now = clock.nowMicros()
        let live = try store.publicKeys().filter { key in
            key.retiredMicros.map { $0 + Int64(Policy.maxTTLCeilingSeconds) * 1_000_000 > now } ?? true
        }
        return JSON.object([("keys", .array(live.map { JWT.jwk(ed25519PublicKey: $0.publicKey) }))]).text
    }

    static func issuer(_ policy: Policy) -> String { "spiffe://\(policy.trustDomain)" }
}

/// Any JSON value, for reading untrusted token headers and claims strictly.
enum JSONValue: Decodable, Equatable {
    case string(String), number(Double), bool(Bool), null
    case array([JSONValue]), object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }
}
