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
    var key: Ed25519PrivateKey

    static let jti = "0123456789abcdef0123456789abcdef"

    static func part(_ json: String) -> String { Base64URL.encode(Array(json.utf8)) }

    func token(header: String? = nil, claims: String, signature: ((String) -> String)? = nil) throws -> String {
        let h = header ?? #"{"alg":"EdDSA","typ":"JWT","kid":"\#(kid)"}"#
        let input = Self.part(h) + "." + Self.part(claims)
        let sig = try signature?(input) ?? Base64URL.encode(key.signature(for: Array(input.utf8)))
        return input + "." + sig
    }

    static func claims(now: Int64, iss: String = "spiffe://test.internal", aud: String = "svc", exp: Int64? = 300, nbf: Int64 = 0, extra: String = "") -> String {
        var fields = [#""iss":"\#(iss)""#, #""sub":"spiffe://test.internal/agent/a""#, #""aud":"\#(aud)""#, #""iat":\#(now)"#,
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
        ]
        for (token, check) in cases {
            let v = try await a.validateIdentity(token, "svc")
            #expect(!v.valid && v.failedCheck == check, "expected \(check), got \(v.failedCheck)")
        }
        // 29 s past exp is inside the skew; 31 s is not.
        #expect(try await a.validateIdentity(try forge.token(claims: Forge.claims(now: now, exp: -29)), "svc").valid)

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
}
