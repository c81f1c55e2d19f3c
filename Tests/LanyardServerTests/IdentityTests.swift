import Foundation
import LanyardClient
import LanyardCore
import LanyardCrypto
import LanyardStore
import LanyardTestSupport
import LanyardWire
import Testing

@testable import LanyardServer

private func code(_ error: any Error) -> Lanyard_V1_Code? { (error as? LanyardError)?.code }

extension LanyardClient {
    func issueIdentity(_ audience: String, ttl: UInt32 = 0, capabilities: [String] = []) async throws -> Lanyard_V1_IssueIdentityResponse {
        var r = Lanyard_V1_Request()
        r.issueIdentity = .with {
            $0.audience = audience
            $0.ttlSeconds = ttl
            $0.capabilities = capabilities
        }
        return try await call(r).issueIdentity
    }

    func validateIdentity(_ token: String, _ audience: String) async throws -> Lanyard_V1_ValidateIdentityResponse {
        var r = Lanyard_V1_Request()
        r.validateIdentity = .with {
            $0.token = token
            $0.audience = audience
        }
        return try await call(r).validateIdentity
    }
}

/// Builds tokens an attacker might send.
struct Forge {
    var kid: String
    var key: SigningKey

    static let jti = "0123456789abcdef0123456789abcdef"

    /// Records the forged tokens' jti as issued: a token is valid only while this daemon's
    /// authenticated record of its jti says so, and these tests probe the other checks.
    static func recordJTI(in d: TestDaemon) async throws {
        try await d.daemon.store.audit.append(AuditRecord(event: "test"),
                                              with: d.daemon.store.recordIdentity(jti: jti, agentID: "x", audience: "svc", expiresMicros: .max))
    }

    static func part(_ json: String) -> String { Base64URL.encode(Array(json.utf8)) }

    func token(header: String? = nil, claims: String, signature: ((String) -> String)? = nil) throws -> String {
        let h = header ?? #"{"alg":"EdDSA","typ":"JWT","kid":"\#(kid)"}"#
        let input = Self.part(h) + "." + Self.part(claims)
        let sig = try signature?(input) ?? Base64URL.encode(key.signature(for: Array(input.utf8)))
        return input + "." + sig
    }

    static func claims(now: Int64, iss: String = "spiffe://test.internal", aud: String = "svc", exp: Int64? = 300, nbf: Int64 = 0, iat: Int64 = 0,
                       extra: String = "") -> String {
        var fields = [#""iss":"\#(iss)""#, #""sub":"spiffe://test.internal/agent/a""#, #""aud":"\#(aud)""#, #""iat":\#(now + iat)"#,
                      #""nbf":\#(now + nbf)"#, #""jti":"\#(jti)""#]
        if let exp { fields.append(#""exp":\#(now + exp)"#) }
        if !extra.isEmpty { fields.append(extra) }
        return "{" + fields.joined(separator: ",") + "}"
    }
}

@Suite(.serialized)
struct IdentityTests {
    @Test func issuedTokensValidateAndCarryOnlyGrants() async throws {
        let d = try TestDaemon(policy: Users.credentialPolicy())
        let a = d.client(as: Users.agent!)
        let all = try await a.issueIdentity("svc")
        let v = try await a.validateIdentity(all.token, "svc")
        #expect(v.valid && v.failedCheck.isEmpty)
        #expect(v.claims.sub == "spiffe://test.internal/agent/a" && v.claims.iss == "spiffe://test.internal" && v.claims.aud == "svc")
        #expect(v.claims.exp - v.claims.iat == 300 && v.claims.jti.count == 32)
        #expect(Set(v.claims.capabilities) == Set(d.daemon.policy.current.policy.agent(named: "a")!.grants.keys.map(\.name)))

        let subset = try await a.validateIdentity(try await a.issueIdentity("svc", capabilities: ["github:read_repo"]).token, "svc")
        #expect(subset.claims.capabilities == ["github:read_repo"])
        await #expect { try await a.issueIdentity("svc", capabilities: ["github:read_repo", "github:admin"]) } throws: { code($0) == .permissionDenied }
        await #expect { try await a.issueIdentity("svc", ttl: 901) } throws: { code($0) == .invalidArgument }
        await #expect { try await a.issueIdentity("") } throws: { code($0) == .invalidArgument }
        #expect(try await a.validateIdentity(all.token, "other").failedCheck == "aud")
        await a.close()
        await d.stop()
    }

    /// Issue 20: ES256 identity tokens (the policy's `identity.alg`) validate; the key's
    /// algorithm is pinned, so an ES256 key's token relabelled EdDSA does not.
    @Test func es256TokensValidateAndTheirAlgorithmIsPinned() async throws {
        let d = try TestDaemon(policy: Users.credentialPolicy() + "identity: { alg: ES256 }\n")
        let a = d.client(as: Users.agent!)
        let token = try await a.issueIdentity("svc").token
        #expect(try await a.validateIdentity(token, "svc").valid)
        let (kid, key) = try d.daemon.store.signingKey(purpose: IdentityService.purpose, alg: .es256)
        #expect(key.alg == .es256 && key.publicKey.count == 65)
        let parts = token.split(separator: ".")
        let relabelled = Forge.part(#"{"alg":"EdDSA","typ":"JWT","kid":"\#(kid)"}"#) + "." + parts[1] + "." + parts[2]
        #expect(try await a.validateIdentity(relabelled, "svc").failedCheck == "alg")
        var flipped = Base64URL.decode(String(parts[2]))!
        flipped[5] ^= 1
        #expect(try await a.validateIdentity(parts[0] + "." + parts[1] + "." + Base64URL.encode(flipped), "svc").failedCheck == "signature")
        await a.close()
        await d.stop()
    }

    /// Acceptance 2: each attack vector is rejected with its reason.
    @Test func attackVectorsAreRejectedWithTheFailedCheck() async throws {
        let clock = ManualClock()
        let d = try TestDaemon(policy: Users.credentialPolicy(), clock: clock)
        let a = d.client(as: Users.agent!)
        let genuine = try await a.issueIdentity("svc").token
        let (kid, key) = try d.daemon.store.signingKey(purpose: IdentityService.purpose)
        let forge = Forge(kid: kid, key: key)
        let now = clock.nowSeconds()
        let good = Forge.claims(now: now)
        // A token is valid only while this daemon's authenticated record of its jti says so:
        // one it never issued, even signed with its key, is not. Record the forged jti.
        #expect(try await a.validateIdentity(try forge.token(claims: good), "svc").failedCheck == "revoked")
        try await d.daemon.store.audit.append(AuditRecord(event: "test"),
                                              with: d.daemon.store.recordIdentity(jti: Forge.jti, agentID: "x", audience: "svc", expiresMicros: .max))
        #expect(try await a.validateIdentity(try forge.token(claims: good), "svc").valid)
        // RFC 9864's fully specified name for the same algorithm.
        #expect(try await a.validateIdentity(try forge.token(header: #"{"alg":"Ed25519","typ":"JWT","kid":"\#(kid)"}"#, claims: good), "svc").valid)

        let hmacWithPublicKey: (String) -> String = { Base64URL.encode(HMAC.sha256(key: key.publicKey, message: Array($0.utf8))) }
        let cases: [(String, String)] = [
            (try forge.token(header: #"{"alg":"none","typ":"JWT","kid":"\#(kid)"}"#, claims: good, signature: { _ in "" }), "alg"),
            (try forge.token(header: #"{"alg":"None","typ":"JWT","kid":"\#(kid)"}"#, claims: good, signature: { _ in "" }), "alg"),
            (try forge.token(header: #"{"alg":"HS256","typ":"JWT","kid":"\#(kid)"}"#, claims: good, signature: hmacWithPublicKey), "alg"),
            (try forge.token(header: #"{"alg":"ES256","typ":"JWT","kid":"\#(kid)"}"#, claims: good, signature: { _ in Base64URL.encode([UInt8](repeating: 0, count: 64)) }), "alg"),
            (try forge.token(claims: good, signature: { _ in "" }), "signature"),
            (try forge.token(header: #"{"alg":"EdDSA","typ":"JWT","kid":"\#(Base64URL.encode(SecureRandom.bytes(32)))"}"#, claims: good), "kid"),
            (try forge.token(header: #"{"alg":"EdDSA","typ":"JWT","kid":"../../../../etc/passwd"}"#, claims: good), "kid"),
            (try forge.token(header: #"{"alg":"EdDSA","typ":"JWT"}"#, claims: good), "kid"),
            (try forge.token(header: #"{"alg":"EdDSA","typ":"JWT","kid":"\#(kid)","jwk":{"kty":"OKP","crv":"Ed25519","x":"AA"}}"#, claims: good), "header: jwk is not accepted"),
            (try forge.token(header: #"{"alg":"EdDSA","typ":"JWT","kid":"\#(kid)","jku":"http://evil/jwks"}"#, claims: good), "header: jku is not accepted"),
            (try forge.token(header: #"{"alg":"EdDSA","typ":"JWT","kid":"\#(kid)","x5c":["MIIB"]}"#, claims: good), "header: x5c is not accepted"),
            (try forge.token(claims: Forge.claims(now: now, exp: nil)), "exp"),
            (try forge.token(claims: Forge.claims(now: now, exp: -31)), "exp"),
            (try forge.token(claims: Forge.claims(now: now, nbf: 60)), "nbf"),
            (try forge.token(claims: Forge.claims(now: now, aud: "someone-else")), "aud"),
            (try forge.token(claims: Forge.claims(now: now, iss: "spiffe://evil.internal")), "iss"),
            (try forge.token(header: #"{"alg":"EdDSA","typ":"at+jwt","kid":"\#(kid)"}"#, claims: good), "typ"),
            (try forge.token(claims: Forge.claims(now: now, extra: #""pad":"\#(String(repeating: "x", count: 8192))""#)), "size"),
            ("not.a.jwt.at-all", "format"),
            // A delegation chain is read whole: malformed, too deep, or naming a token this daemon never issued.
            (try forge.token(claims: Forge.claims(now: now, extra: #""act":"spiffe://test.internal/agent/a""#)), "act"),
            (try forge.token(claims: Forge.claims(now: now, extra: #""act":{"sub":"spiffe://test.internal/agent/a","jti":"short"}"#)), "act"),
            (try forge.token(claims: Forge.claims(now: now, extra: #""act":{"sub":"s","act":{"sub":"s","act":{"sub":"s","act":{"sub":"s"}}}}"#)), "act"),
            (try forge.token(claims: Forge.claims(now: now, extra: #""act":{"sub":"s","jti":"\#(String(repeating: "f", count: 32))"}"#)), "revoked"),
        ]
        for (token, check) in cases {
            let v = try await a.validateIdentity(token, "svc")
            #expect(!v.valid && v.failedCheck == check, "expected \(check), got \(v.failedCheck)")
        }
        // No skew after exp (Security I finding 14): a second past it is too late.
        #expect(try await a.validateIdentity(try forge.token(claims: Forge.claims(now: now, exp: -1)), "svc").failedCheck == "exp")

        // Every single-bit flip of a valid token's signature.
        let parts = genuine.split(separator: ".").map(String.init)
        let signature = try #require(Base64URL.decode(parts[2]))
        for bit in 0..<(signature.count * 8) {
            var flipped = signature
            flipped[bit / 8] ^= UInt8(1 << (bit % 8))
            let v = try await a.validateIdentity(parts[0] + "." + parts[1] + "." + Base64URL.encode(flipped), "svc")
            #expect(!v.valid && v.failedCheck == "signature", "bit \(bit) accepted")
        }
        await a.close()
        await d.stop()
    }

    /// Acceptance 3: after a rotation old tokens validate until expiry; new ones carry the new kid.
    @Test func rotationKeepsOldTokensValid() async throws {
        let clock = ManualClock()
        let d = try TestDaemon(policy: Users.credentialPolicy(), clock: clock)
        let a = d.client(as: Users.agent!)
        let root = d.admin(as: Users.root)
        let old = try await a.issueIdentity("svc").token
        var rotate = Lanyard_V1_AdminRequest()
        rotate.keysRotate = .init()
        let newKid = try await root.call(rotate).keysRotate.kid
        let new = try await a.issueIdentity("svc").token
        func kid(_ t: String) throws -> String {
            let h = try JSONSerialization.jsonObject(with: Data(Base64URL.decode(String(t.split(separator: ".")[0]))!)) as! [String: Any]
            return h["kid"] as! String
        }
        #expect(try kid(new) == newKid && (try kid(old)) != newKid)
        let oldValid = try await a.validateIdentity(old, "svc").valid
        let newValid = try await a.validateIdentity(new, "svc").valid
        #expect(oldValid && newValid)
        var jwks = Lanyard_V1_AdminRequest()
        jwks.jwks = .init()
        let keys = try JSONSerialization.jsonObject(with: Data(try await root.call(jwks).jwks.json.utf8)) as! [String: [[String: Any]]]
        #expect(Set(keys["keys"]!.compactMap { $0["kid"] as? String }).isSuperset(of: [newKid, try kid(old)]))
        clock.advance(seconds: 301 + 30)
        #expect(try await a.validateIdentity(old, "svc").failedCheck == "exp")
        clock.advance(seconds: 900)
        let later = try JSONSerialization.jsonObject(with: Data(try await root.call(jwks).jwks.json.utf8)) as! [String: [[String: Any]]]
        #expect(!later["keys"]!.contains { $0["kid"] as? String == (try? kid(old)) })  // retired key gone once its tokens expired
        await a.close()
        await root.close()
        await d.stop()
    }

    @Test func revokedJTIFailsUntilExpiry() async throws {
        let d = try TestDaemon(policy: Users.credentialPolicy())
        let a = d.client(as: Users.agent!)
        let token = try await a.issueIdentity("svc").token
        let jti = try await a.validateIdentity(token, "svc").claims.jti
        let root = d.admin(as: Users.root)
        var revoke = Lanyard_V1_AdminRequest()
        revoke.identityRevoke = .with { $0.jti = jti }
        _ = try await root.call(revoke)
        #expect(try await a.validateIdentity(token, "svc").failedCheck == "revoked")
        await #expect { try await root.call(revoke) } throws: { code($0) == .notFound }
        await a.close()
        await root.close()
        await d.stop()
    }

    /// Security I finding 13: an identity token never stands in for a service's access
    /// token. No identity token names a declared service; one signed with the identity key
    /// anyway does not validate for it; the identity JWKS holds no service key; and tokens
    /// signed with a service's key are no identity, whatever their header says.
    @Test func identityTokensNeverStandInForServiceTokens() async throws {
        let clock = ManualClock()
        let d = try TestDaemon(policy: Users.credentialPolicy(), clock: clock)
        let a = d.client(as: Users.agent!)
        let root = d.admin(as: Users.root)
        for audience in ["deploy", "github", "DEPLOY"] {
            await #expect { try await a.issueIdentity(audience) } throws: { code($0) == .invalidArgument }
        }
        #expect(try await a.validateIdentity(try await a.issueIdentity("peer").token, "peer").valid)  // control

        let (kid, key) = try d.daemon.store.signingKey(purpose: IdentityService.purpose)
        let forge = Forge(kid: kid, key: key)
        try await Forge.recordJTI(in: d)
        let now = clock.nowSeconds()
        #expect(try await a.validateIdentity(try forge.token(claims: Forge.claims(now: now, aud: "deploy")), "deploy").failedCheck == "aud")
        let listed = Forge.claims(now: now).replacingOccurrences(of: #""aud":"svc""#, with: #""aud":["svc","deploy"]"#)
        #expect(try await a.validateIdentity(try forge.token(claims: listed), "svc").failedCheck == "aud")

        let lease = try await a.provision("deploy", ["deploy:read"])
        let serviceKid = try headerKid(lease.secret)
        #expect(serviceKid != kid)
        var jwks = Lanyard_V1_AdminRequest()
        jwks.jwks = .init()
        #expect(try kids(try await root.call(jwks).jwks.json) == [kid])
        #expect(try await a.validateIdentity(lease.secret, "deploy").failedCheck == "typ")
        let (_, serviceKey) = try d.daemon.store.signingKey(purpose: "service:deploy")
        let likeAnIdentity = try Forge(kid: serviceKid, key: serviceKey).token(claims: Forge.claims(now: now, aud: "peer"))
        #expect(try await a.validateIdentity(likeAnIdentity, "peer").failedCheck == "kid")
        await a.close()
        await root.close()
        await d.stop()
    }

    /// Security I finding 14: `exp` is strict (a token is dead at its `exp` second, so it
    /// never outlives its revocation); the skew applies to `nbf` and `iat` only.
    @Test func tokensEndAtExpWhileNbfAndIatKeepTheSkew() async throws {
        let clock = ManualClock()
        let d = try TestDaemon(policy: Users.credentialPolicy(), clock: clock)
        let a = d.client(as: Users.agent!)
        let root = d.admin(as: Users.root)
        let token = try await a.issueIdentity("peer", ttl: 60).token
        let jti = try await a.validateIdentity(token, "peer").claims.jti
        clock.advance(seconds: 59)
        #expect(try await a.validateIdentity(token, "peer").valid)
        clock.advance(seconds: 1)
        #expect(try await a.validateIdentity(token, "peer").failedCheck == "exp")
        clock.advance(seconds: 29)
        #expect(try await a.validateIdentity(token, "peer").failedCheck == "exp")
        var revoke = Lanyard_V1_AdminRequest()
        revoke.identityRevoke = .with { $0.jti = jti }
        await #expect { try await root.call(revoke) } throws: { code($0) == .notFound }  // nothing left to revoke

        // Revoked a second before its exp, a token never validates again.
        let second = try await a.issueIdentity("peer", ttl: 60).token
        revoke.identityRevoke.jti = try await a.validateIdentity(second, "peer").claims.jti
        clock.advance(seconds: 59)
        _ = try await root.call(revoke)
        #expect(try await a.validateIdentity(second, "peer").failedCheck == "revoked")
        clock.advance(seconds: 1)
        #expect(try await a.validateIdentity(second, "peer").failedCheck == "exp")

        let (kid, key) = try d.daemon.store.signingKey(purpose: IdentityService.purpose)
        let forge = Forge(kid: kid, key: key)
        try await Forge.recordJTI(in: d)
        let now = clock.nowSeconds()
        #expect(try await a.validateIdentity(try forge.token(claims: Forge.claims(now: now, nbf: 29)), "svc").valid)
        #expect(try await a.validateIdentity(try forge.token(claims: Forge.claims(now: now, nbf: 31)), "svc").failedCheck == "nbf")
        #expect(try await a.validateIdentity(try forge.token(claims: Forge.claims(now: now, iat: 29)), "svc").valid)
        #expect(try await a.validateIdentity(try forge.token(claims: Forge.claims(now: now, iat: 31)), "svc").failedCheck == "iat")
        await a.close()
        await root.close()
        await d.stop()
    }

    /// Security I finding 15: numeric claims out of range (`"exp": 1e300` trapped in a
    /// Double → Int64 conversion and took the daemon down) are refused, and the daemon
    /// keeps answering.
    @Test func outOfRangeNumericClaimsAreRefusedNotACrash() async throws {
        let clock = ManualClock()
        let d = try TestDaemon(policy: Users.credentialPolicy(), clock: clock)
        let a = d.client(as: Users.agent!)
        let (kid, key) = try d.daemon.store.signingKey(purpose: IdentityService.purpose)
        let forge = Forge(kid: kid, key: key)
        try await Forge.recordJTI(in: d)
        let now = clock.nowSeconds()
        func claims(_ times: String) -> String {
            #"{"iss":"spiffe://test.internal","sub":"spiffe://test.internal/agent/a","aud":"svc","jti":"0123456789abcdef0123456789abcdef",\#(times)}"#
        }
        let cases: [(String, String)] = [
            (#""iat":\#(now),"exp":1e300"#, "claims: a number that is not an integer"),
            (#""iat":\#(now),"exp":-1e300"#, "claims: a number that is not an integer"),
            (#""iat":\#(now),"exp":1.5"#, "claims: a number that is not an integer"),
            (#""iat":\#(now),"exp":18446744073709551616"#, "claims: a number out of the 64-bit integer range"),
            (#""iat":\#(now),"exp":9223372036854775807"#, "exp"),
            (#""iat":\#(now),"exp":"\#(now + 60)""#, "exp"),
            (#""iat":\#(now),"exp":\#(now + 60),"nbf":-9223372036854775808"#, "nbf"),
            (#""iat":1e300,"exp":\#(now + 60)"#, "claims: a number that is not an integer"),
            (#""iat":-9223372036854775808,"exp":\#(now + 60)"#, "iat"),
            (#""iat":\#(now - 3600),"exp":\#(now + 60)"#, "exp"),  // a lifetime over 900 s
        ]
        for (times, check) in cases {
            let v = try await a.validateIdentity(try forge.token(claims: claims(times)), "svc")
            #expect(!v.valid && v.failedCheck.hasPrefix(check), "\(times): got \(v.failedCheck)")
        }
        #expect(try await a.validateIdentity(try forge.token(claims: claims(#""iat":\#(now),"exp":\#(now + 60)"#)), "svc").valid)
        await a.close()
        await d.stop()
    }

    /// Security I finding 16: audiences match byte for byte. Swift's `==` holds NFC and
    /// NFD, or KELVIN SIGN and K, equal; the relying party asked for other bytes.
    @Test func audiencesMatchByteForByte() async throws {
        let d = try TestDaemon(policy: Users.credentialPolicy())
        let a = d.client(as: Users.agent!)
        let nfc = "caf\u{E9}-agent", nfd = "cafe\u{301}-agent", kelvin = "\u{212A}elvin", k = "Kelvin"
        #expect(nfc == nfd && kelvin == k)
        for (issued, asked) in [(nfc, nfd), (nfd, nfc), (kelvin, k), (k, kelvin)] {
            let token = try await a.issueIdentity(issued).token
            #expect(try await a.validateIdentity(token, issued).valid)
            #expect(try await a.validateIdentity(token, asked).failedCheck == "aud", "\(Array(issued.utf8)) taken for \(Array(asked.utf8))")
        }
        await a.close()
        await d.stop()
    }

    /// Security II finding 7: the header is read before the signature is checked, so a
    /// hostile one is refused by its size or at the first level nested too deep — the
    /// refusal names where the reader stopped — and the claims are not read at all until
    /// the signature holds. (The report's 1,463-byte header took 0.6 s of CPU.)
    @Test func hostileHeadersAreRefusedBeforeAnyWork() async throws {
        let clock = ManualClock()
        let d = try TestDaemon(policy: Users.credentialPolicy(), clock: clock)
        let a = d.client(as: Users.agent!)
        let (kid, key) = try d.daemon.store.signingKey(purpose: IdentityService.purpose)
        let forge = Forge(kid: kid, key: key)
        try await Forge.recordJTI(in: d)
        let claims = Forge.claims(now: clock.nowSeconds())
        let noSignature: (String) -> String = { _ in Base64URL.encode([UInt8](repeating: 0, count: 64)) }
        let prefix = #"{"alg":"EdDSA","x":"#
        let reported = prefix + String(repeating: "[", count: 500) + String(repeating: "]", count: 500) + "}"
        #expect(try await a.validateIdentity(try forge.token(header: reported, claims: claims, signature: noSignature), "svc").failedCheck
                == "header: larger than 512 bytes")
        let deep = prefix + String(repeating: "[", count: 150) + String(repeating: "]", count: 150) + "}"
        #expect(try await a.validateIdentity(try forge.token(header: deep, claims: claims, signature: noSignature), "svc").failedCheck
                == "header: nested deeper than 2 at byte \(prefix.utf8.count + 1)")
        let cases: [(String, String)] = [
            (#"{"alg":"EdDSA","typ":"JWT","kid":"\#(kid)","b64":false}"#, "header: b64 is not a string"),
            (#"{"alg":"none","alg":"EdDSA","typ":"JWT","kid":"\#(kid)"}"#, "header: duplicate member name at byte 14"),
            (#"{"alg":"EdDSA","typ":"JWT","kid":"\#(kid)"} x"#, "header: trailing bytes after the value at byte \(kid.utf8.count + 37)"),
            (#"["EdDSA"]"#, "header: not a JSON object"),
        ]
        for (header, check) in cases {
            let v = try await a.validateIdentity(try forge.token(header: header, claims: claims), "svc")
            #expect(v.failedCheck == check)
        }
        // A payload nested 3,000 deep under a signature that does not hold is never read.
        let hostileClaims = String(repeating: "[", count: 3000)
        #expect(try await a.validateIdentity(try forge.token(claims: hostileClaims, signature: noSignature), "svc").failedCheck == "signature")
        #expect(try await a.validateIdentity(try forge.token(claims: claims), "svc").valid)  // control
        await a.close()
        await d.stop()
    }
}

/// The `kid` in a compact JWS's header.
func headerKid(_ token: String) throws -> String {
    let h = try JSONSerialization.jsonObject(with: Data(try #require(Base64URL.decode(String(token.split(separator: ".")[0]))))) as! [String: Any]
    return try #require(h["kid"] as? String)
}

/// The kids of a JWKS, in order.
func kids(_ jwks: String) throws -> [String] {
    let keys = try JSONSerialization.jsonObject(with: Data(jwks.utf8)) as! [String: [[String: Any]]]
    return try #require(keys["keys"]).compactMap { $0["kid"] as? String }
}

/// One spelling per token (a review finding): signatures and base64url have no twins.
struct TokenSpellingTests {
    @Test func es256SignaturesAreLowSAndTheirTwinIsRefused() throws {
        let key = try P256PrivateKey()
        for i in 0..<64 {
            let message = Array("message \(i)".utf8)
            let signature = try key.signature(for: message)
            #expect(P256.isValidSignature(signature, for: message, publicKey: key.publicKey))
            #expect(!P256.isValidSignature(P256.flippedS(signature), for: message, publicKey: key.publicKey), "the high-S twin verified")
        }
    }

    @Test func base64urlRefusesBitsPastTheLastByte() {
        #expect(Base64URL.decode("AA") == [0])
        #expect(Base64URL.decode("AB") == nil)  // the same byte, with a stray bit
        #expect(Base64URL.decode("AAA") == [0, 0])
        #expect(Base64URL.decode("AAB") == nil)
        #expect(Base64URL.decode(Base64URL.encode([1, 2, 3, 4, 5])) == [1, 2, 3, 4, 5])
    }
}
