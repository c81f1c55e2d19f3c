import LanyardCore
import LanyardCrypto
import LanyardStore
import LanyardWire
import Logging

/// Agent identities as JWTs (DESIGN.md section 8): EdDSA or ES256 (the policy's
/// `identity.alg`; ES256 tokens are SPIFFE JWT-SVIDs), `kid` = RFC 7638 thumbprint, claims
/// iss/sub/agent_id/aud/capabilities/iat/nbf/exp/jti, and `act` (RFC 8693) on a sub-agent's
/// token. Validation pins the algorithm to the key type and names the first check that failed.
///
/// Identity tokens never stand in for a service's access tokens (kind `jwt`) or back:
/// each purpose signs with its own keys, published in its own JWKS; an identity token's
/// `aud` is never a declared service's name (the `aud` of its access tokens); the `typ`
/// differs (`JWT` here, `at+jwt` for access tokens).
final class IdentityService: Sendable {
    static let purpose = "identity"
    static let typ = "JWT"
    static let maxTokenBytes = 8 * 1024
    /// Clock skew allowed for `nbf` and `iat` only: `exp` is checked strictly, so a token
    /// never outlives its expiry, or its revocation (which lasts until that expiry).
    static let skewSeconds: Int64 = 30
    static let defaultTTL: UInt32 = 300
    static let maxTTL: UInt32 = 900
    /// NumericDate claims are integers from 1970 to the end of year 9999.
    static let numericDates: ClosedRange<Int64> = 0...253_402_300_799

    let store: Store
    let clock: any WallClock
    let logger: Logger

    init(store: Store, clock: any WallClock, logger: Logger) {
        self.store = store
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
            try await deny(.invalidArgument, "audience is required (1 to 256 bytes): the agent or peer the token is for")
        }
        guard !Self.isReserved(audience: c.audience, caller.snapshot.policy) else {
            try await deny(.invalidArgument, "audience '\(c.audience.prefix(64))' names a service declared in the policy: identity tokens are never "
                           + "issued for a service (its access tokens come from Provision); name the agent or peer the token is for")
        }
        let ttl = c.ttlSeconds == 0 ? Self.defaultTTL : c.ttlSeconds
        guard ttl <= Self.maxTTL else {
            try await deny(.invalidArgument, "ttl_seconds \(c.ttlSeconds) exceeds the maximum of \(Self.maxTTL) s for identity tokens")
        }
        let policy = caller.snapshot.policy
        let now = clock.nowSeconds()
        var exp = now + Int64(ttl)
        var sub = agent.uri(trustDomain: policy.trustDomain)
        var act: JSON?
        var capabilities: [String]
        if c.hasDelegation {
            let parent: Parent
            switch delegationParent(c, agent, policy) {
            case .success(let p): parent = p
            case .failure(let refusal): try await deny(.permissionDenied, refusal.reason)
            }
            switch delegatedCapabilities(c.capabilities, parent: parent, agent) {
            case .success(let chosen): capabilities = chosen
            case .failure(let refusal): try await deny(.permissionDenied, refusal.reason)
            }
            if let parentExp = parent.exp, exp > parentExp {
                guard c.ttlSeconds == 0 else {
                    try await deny(.permissionDenied, "ttl_seconds \(c.ttlSeconds) would outlive the parent token (it expires in \(parentExp - now) s): ask for at most that")
                }
                exp = parentExp
            }
            sub = parent.sub + "/sub/" + c.delegation.name
            act = parent.act
        } else {
            // Never more than the agent was granted: a subset on request, all grants otherwise.
            // The names written are the policy's own, matched byte for byte.
            let granted = agent.grants.keys.map(\.name).sorted()
            capabilities = granted
            if !c.capabilities.isEmpty {
                var chosen = Set<String>()
                for name in c.capabilities {
                    guard let own = granted.first(where: { $0.sameBytes(as: name) }) else {
                        try await deny(.permissionDenied, "agent '\(agent.name)' is not granted '\(name.prefix(128))'; a token can carry only granted capabilities")
                    }
                    chosen.insert(own)
                }
                capabilities = chosen.sorted()
            }
        }
        let jti = Hex.encode(SecureRandom.bytes(16))
        var members: [(String, JSON)] = [
            ("iss", .string(Self.issuer(policy))), ("sub", .string(sub)),
            ("agent_id", .string(agent.id)), ("aud", .string(c.audience)), ("capabilities", .array(capabilities.map { .string($0) })),
            ("iat", .int(now)), ("nbf", .int(now)), ("exp", .int(exp)), ("jti", .string(jti)),
        ]
        if let act { members.append(("act", act)) }
        let (kid, key) = try store.signingKey(purpose: Self.purpose, alg: Self.algorithm(policy))
        let token = try JWT.sign(claims: JSON.object(members), kid: kid, key: key, typ: Self.typ)
        record.decision = Decision.allow.rawValue
        record.outcome = "issued"
        record.reason = "jti \(jti), kid \(kid), expires in \(exp - now) s" + (act == nil ? "" : ", sub \(sub), delegated")
        try await store.audit.append(record, with: store.recordIdentity(jti: jti, agentID: agent.id, audience: c.audience, expiresMicros: exp * 1_000_000))
        var response = Lanyard_V1_Response()
        response.issueIdentity = .with {
            $0.token = token
            $0.expiresAt = exp
        }
        return response
    }

    /// Whom a sub-agent's token is delegated from: the caller itself, or a token of the
    /// caller's it presented (its own, or a sub-agent's).
    struct Parent {
        var sub: String
        /// The new token's `act`: the parent, and its own `act` nested inside.
        var act: JSON
        var capabilities: [String]
        var exp: Int64?
        /// Delegation hops from the agent to the new token.
        var depth: Int
    }

    /// The parent of a delegation request, or why there is none: the agent may not delegate,
    /// the name is not a slug, the parent token is not valid or not the caller's, or the
    /// chain would be deeper than the policy allows.
    func delegationParent(_ c: Lanyard_V1_IssueIdentityRequest, _ agent: Agent, _ policy: Policy) -> Result<Parent, Refusal> {
        guard let delegation = agent.delegation else {
            return .failure(Refusal("agent '\(agent.name)' may not delegate: the policy gives it no delegation (agents.\(agent.name).delegation: {max_depth, capabilities})"))
        }
        let name = c.delegation.name
        guard PolicyParser.isValidAgentName(name) else {
            return .failure(Refusal("sub-agent name '\(name.prefix(64))' is not a slug: lowercase [a-z0-9-], starting with a letter, at most 63 characters"))
        }
        let own = agent.uri(trustDomain: policy.trustDomain)
        var parent = Parent(sub: own, act: .object([("sub", .string(own))]), capabilities: agent.grants.keys.map(\.name).sorted(), exp: nil, depth: 1)
        if !c.delegation.parentToken.isEmpty {
            let claims: Lanyard_V1_Claims
            let act: JSON?
            switch verified(c.delegation.parentToken, audience: nil, policy: policy) {
            case .success(let v): (claims, act) = v
            case .failure(let failure): return .failure(Refusal("the parent token is not valid (failed check: \(failure.check)): present a live token of yours"))
            }
            guard claims.agentID.sameBytes(as: agent.id) else {
                return .failure(Refusal("the parent token is not agent '\(agent.name)''s: an agent delegates only its own identity"))
            }
            parent.sub = claims.sub
            parent.capabilities = claims.capabilities
            parent.exp = claims.exp
            parent.depth = claims.actors.count + 1
            var inner: [(String, JSON)] = [("sub", .string(claims.sub)), ("jti", .string(claims.jti))]
            if let act { inner.append(("act", act)) }
            parent.act = .object(inner)
        }
        guard parent.depth <= delegation.maxDepth else {
            return .failure(Refusal("a sub-agent token at depth \(parent.depth) exceeds agent '\(agent.name)''s delegation max_depth \(delegation.maxDepth)"))
        }
        return .success(parent)
    }

    /// The capabilities of a sub-agent's token: `requested` (all the parent's if empty), each
    /// one the parent token carries and the agent is still granted, a HIGH grant only when
    /// the policy lists it as delegable. An empty request leaves out what may not be delegated;
    /// the reason names the first capability asked for that may not.
    func delegatedCapabilities(_ requested: [String], parent: Parent, _ agent: Agent) -> Result<[String], Refusal> {
        var chosen = Set<String>()
        for name in requested.isEmpty ? parent.capabilities : requested {
            guard let own = parent.capabilities.first(where: { $0.sameBytes(as: name) }),
                  let (capability, risk) = agent.grants.first(where: { $0.key.name.sameBytes(as: own) }) else {
                if requested.isEmpty { continue }  // a grant the policy has since taken away
                return .failure(Refusal("the parent does not hold '\(name.prefix(128))': a sub-agent's token carries only capabilities its parent holds"))
            }
            if risk == .high, agent.delegation?.highRisk.contains(capability) != true {
                if requested.isEmpty { continue }
                return .failure(Refusal("'\(own)' is a HIGH grant agent '\(agent.name)' may not delegate: list it in agents.\(agent.name).delegation.capabilities to allow that"))
            }
            chosen.insert(own)
        }
        return .success(chosen.sorted())
    }

    /// Why a delegation is refused, as the caller and the audit read it.
    struct Refusal: Error {
        var reason: String
        init(_ reason: String) { self.reason = reason }
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

    /// Every check of DESIGN.md section 8, in order; the first that fails is named. The
    /// cheapest come first: nothing is parsed before the size and the alphabet are checked,
    /// and the claims are read only once the signature holds.
    /// `audience` nil: any audience (a parent token presented for delegation), never a service's.
    func verify(_ token: String, audience: String?, policy: Policy) -> Result<Lanyard_V1_Claims, Failure> {
        verified(token, audience: audience, policy: policy).map(\.claims)
    }

    /// `verify`, with the token's `act` claim (nil when it has none).
    func verified(_ token: String, audience: String?, policy: Policy) -> Result<(claims: Lanyard_V1_Claims, act: JSON?), Failure> {
        guard token.utf8.count <= Self.maxTokenBytes else { return .failure(Failure("size")) }
        guard token.utf8.allSatisfy(Self.isCompactJWSByte) else { return .failure(Failure("format")) }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else { return .failure(Failure("format")) }
        let header: [(name: String, value: String)]
        switch JWT.header(parts[0]) {
        case .success(let members): header = members
        case .failure(let refusal): return .failure(Failure(refusal.check))
        }
        func member(_ name: String) -> String? { header.first { $0.name.sameBytes(as: name) }?.value }
        guard let alg = member("alg").flatMap(JWSAlgorithm.init(header:)) else { return .failure(Failure("alg")) }
        guard member("typ")?.sameBytes(as: Self.typ) == true else { return .failure(Failure("typ")) }
        guard let kid = member("kid"), let key = try? verificationKeys(purpose: Self.purpose).first(where: { $0.kid.sameBytes(as: kid) })
        else { return .failure(Failure("kid")) }
        guard key.alg == alg else { return .failure(Failure("alg")) }
        guard let signature = Base64URL.decode(String(parts[2])), signature.count == 64,
              SigningKey.isValidSignature(signature, for: Array("\(parts[0]).\(parts[1])".utf8), publicKey: key.publicKey, alg: alg)
        else { return .failure(Failure("signature")) }
        guard let payload = Base64URL.decode(String(parts[1])) else { return .failure(Failure("format")) }
        let claims: JSON
        // The object, an array inside it, and a delegation chain's nested act claims.
        do { claims = try JSON.read(payload, maxDepth: 2 + Agent.Delegation.depthLimit) } catch { return .failure(Failure("claims: \(error)")) }
        guard case .object = claims else { return .failure(Failure("format")) }

        guard case .string(let iss)? = claims[member: "iss"], iss.sameBytes(as: Self.issuer(policy)) else { return .failure(Failure("iss")) }
        // Audiences match byte for byte (Swift's == would take NFD for NFC, KELVIN SIGN for K),
        // and none may be a service's name: that is where its access tokens go.
        let audiences: [String]
        switch claims[member: "aud"] {
        case .string(let aud)?: audiences = [aud]
        case .array(let items)?: audiences = items.compactMap { if case .string(let s) = $0 { s } else { nil } }
        default: audiences = []
        }
        guard !audiences.isEmpty, audience.map({ a in !a.isEmpty && audiences.contains { $0.sameBytes(as: a) } }) ?? true,
              !audiences.contains(where: { Self.isReserved(audience: $0, policy) }) else { return .failure(Failure("aud")) }
        let now = clock.nowSeconds()
        guard let exp = Self.numericDate(claims[member: "exp"]), now < exp else { return .failure(Failure("exp")) }
        var nbf: Int64?
        if let value = claims[member: "nbf"] {
            guard let n = Self.numericDate(value), now >= n - Self.skewSeconds else { return .failure(Failure("nbf")) }
            nbf = n
        }
        guard let iat = Self.numericDate(claims[member: "iat"]), iat <= now + Self.skewSeconds else { return .failure(Failure("iat")) }
        guard exp - iat <= Int64(Self.maxTTL) else { return .failure(Failure("exp")) }
        guard case .string(let sub)? = claims[member: "sub"], !sub.isEmpty else { return .failure(Failure("sub")) }
        guard case .string(let jti)? = claims[member: "jti"], jti.utf8.count >= 32 else { return .failure(Failure("jti")) }
        var capabilities: [String] = []
        if let value = claims[member: "capabilities"] {
            guard case .array(let items) = value else { return .failure(Failure("capabilities")) }
            for item in items {
                guard case .string(let c) = item else { return .failure(Failure("capabilities")) }
                capabilities.append(c)
            }
        }
        guard let chain = Self.actors(claims[member: "act"]) else { return .failure(Failure("act")) }
        // A delegated token lives only while every token it was delegated from does.
        for id in [jti] + chain.compactMap(\.jti) {
            guard (try? store.isIdentityLive(jti: id)) == true else { return .failure(Failure("revoked")) }
        }

        return .success((.with {
            $0.iss = iss
            $0.sub = sub
            if case .string(let id)? = claims[member: "agent_id"] { $0.agentID = id }
            $0.aud = audience ?? audiences[0]
            $0.capabilities = capabilities
            $0.iat = iat
            if let nbf { $0.nbf = nbf }
            $0.exp = exp
            $0.jti = jti
            $0.actors = chain.map(\.sub)
        }, claims[member: "act"]))
    }

    /// The actors of an `act` claim, nearest first, with the jti of each one's token (none
    /// for the agent itself); empty without the claim, nil when it is malformed or deeper
    /// than a delegation chain may be.
    static func actors(_ act: JSON?) -> [(sub: String, jti: String?)]? {
        var out: [(sub: String, jti: String?)] = []
        var next = act
        while let value = next {
            guard out.count < Agent.Delegation.depthLimit, case .object = value, case .string(let sub)? = value[member: "sub"], !sub.isEmpty else { return nil }
            var jti: String?
            if let j = value[member: "jti"] {
                guard case .string(let s) = j, s.utf8.count >= 32 else { return nil }
                jti = s
            }
            out.append((sub, jti))
            next = value[member: "act"]
        }
        return out
    }

    static func algorithm(_ policy: Policy) -> JWSAlgorithm { JWSAlgorithm(rawValue: policy.identityAlgorithm) ?? .eddsa }

    /// The public keys that verify `purpose`'s tokens now: the current one, and retired ones
    /// whose tokens may still be live (retired less than the TTL ceiling ago). A compromise
    /// rotation deletes the earlier keys, so they are in neither the JWKS nor verification.
    func verificationKeys(purpose: String) throws -> [(kid: String, alg: JWSAlgorithm, publicKey: [UInt8], retiredMicros: Int64?)] {
        let now = clock.nowMicros()
        return try store.publicKeys(purpose: purpose).filter { key in
            key.retiredMicros.map { $0 + Int64(Policy.maxTTLCeilingSeconds) * 1_000_000 > now } ?? true
        }
    }

    /// RFC 7517 JWKS of `purpose`'s verification keys: the identity keys, or one jwt
    /// service's. The current key is made on first ask, so it can be published before the
    /// first token is.
    func jwks(purpose: String, alg: JWSAlgorithm = .eddsa) throws -> String {
        _ = try store.signingKey(purpose: purpose, alg: alg)
        return JSON.object([("keys", .array(try verificationKeys(purpose: purpose).map { JWT.jwk(publicKey: $0.publicKey, alg: $0.alg) }))]).text
    }

    /// Whether an identity token may not name `audience`: a service declared in the
    /// policy, in any case or canonically equivalent spelling (service names are lowercase
    /// ASCII, so the lowercased form finds them all).
    static func isReserved(audience: String, _ policy: Policy) -> Bool {
        policy.services[audience.lowercased()] != nil
    }

    /// An integer NumericDate claim in range, or nil (absent, another type, out of range).
    static func numericDate(_ value: JSON?) -> Int64? {
        guard case .int(let n)? = value, numericDates.contains(n) else { return nil }
        return n
    }

    /// The base64url alphabet and the dots of a compact JWS.
    static func isCompactJWSByte(_ b: UInt8) -> Bool {
        (b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z")) || (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z"))
            || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")) || b == UInt8(ascii: "-") || b == UInt8(ascii: "_") || b == UInt8(ascii: ".")
    }

    static func issuer(_ policy: Policy) -> String { "spiffe://\(policy.trustDomain)" }
}
