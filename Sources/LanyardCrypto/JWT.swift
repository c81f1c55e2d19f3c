import LanyardCore

/// Compact JWS with EdDSA (Ed25519), the daemon's token format.
public enum JWT {
    /// RFC 7638 thumbprint of an Ed25519 public key: the `kid`.
    public static func thumbprint(ed25519PublicKey pub: [UInt8]) -> String {
        let canonical = "{\"crv\":\"Ed25519\",\"kty\":\"OKP\",\"x\":\"\(Base64URL.encode(pub))\"}"
        return Base64URL.encode(SHA256.hash(Array(canonical.utf8)))
    }

    /// Signs `claims` (a JSON object) with `key`, header `{"alg":"EdDSA","typ":"JWT","kid":kid}`.
    public static func sign(claims: JSON, kid: String, key: Ed25519PrivateKey, typ: String = "JWT") throws -> String {
        let header = JSON.object([("alg", .string("EdDSA")), ("typ", .string(typ)), ("kid", .string(kid))])
        let input = Base64URL.encode(Array(header.text.utf8)) + "." + Base64URL.encode(Array(claims.text.utf8))
        let signature = try key.signature(for: Array(input.utf8))
        return input + "." + Base64URL.encode(signature)
    }

    /// The JWK (RFC 8037) of an Ed25519 public key.
    public static func jwk(ed25519PublicKey pub: [UInt8]) -> JSON {
        .object([("kty", .string("OKP")), ("crv", .string("Ed25519")), ("x", .string(Base64URL.encode(pub))),
                 ("kid", .string(thumbprint(ed25519PublicKey: pub))), ("alg", .string("EdDSA")), ("use", .string("sig"))])
    }
}
