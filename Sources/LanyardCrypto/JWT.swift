import LanyardCore

/// Compact JWS with EdDSA (Ed25519) or ES256 (P-256), the daemon's token format.
public enum JWT {
    /// The most base64url a protected header may take (the daemon's own take about 110).
    public static let maxHeaderBytes = 512

    /// Header members that would let a token name its own key or extensions: never accepted.
    static let refusedHeaderMembers = ["jku", "jwk", "x5c", "x5u", "x5t", "x5t#S256", "crit"]

    /// RFC 7638 thumbprint of an Ed25519 public key: the `kid`.
    public static func thumbprint(ed25519PublicKey pub: [UInt8]) -> String {
        let canonical = "{\"crv\":\"Ed25519\",\"kty\":\"OKP\",\"x\":\"\(Base64URL.encode(pub))\"}"
        return Base64URL.encode(SHA256.hash(Array(canonical.utf8)))
    }

    /// RFC 7638 thumbprint of a public key of `alg` (for ES256, an uncompressed point).
    public static func thumbprint(publicKey pub: [UInt8], alg: JWSAlgorithm) -> String {
        switch alg {
        case .eddsa: return thumbprint(ed25519PublicKey: pub)
        case .es256:
            let (x, y) = (Base64URL.encode(pub.dropFirst().prefix(32)), Base64URL.encode(pub.suffix(32)))
            return Base64URL.encode(SHA256.hash(Array("{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"\(x)\",\"y\":\"\(y)\"}".utf8)))
        }
    }

    /// Signs `claims` (a JSON object) with `key`, header `{"alg":"EdDSA","typ":typ,"kid":kid}`.
    public static func sign(claims: JSON, kid: String, key: Ed25519PrivateKey, typ: String) throws -> String {
        try sign(claims: claims, kid: kid, key: .ed25519(key), typ: typ)
    }

    /// Signs `claims` (a JSON object) with `key`, header `{"alg":ALG,"typ":typ,"kid":kid}`.
    public static func sign(claims: JSON, kid: String, key: SigningKey, typ: String) throws -> String {
        let header = JSON.object([("alg", .string(key.alg.rawValue)), ("typ", .string(typ)), ("kid", .string(kid))])
        let input = Base64URL.encode(Array(header.text.utf8)) + "." + Base64URL.encode(Array(claims.text.utf8))
        let signature = try key.signature(for: Array(input.utf8))
        return input + "." + Base64URL.encode(signature)
    }

    /// Reads the protected header of a compact JWS. It comes before the signature is
    /// checked, so it is read under hard bounds, cheapest check first: at most
    /// `maxHeaderBytes` of base64url, then one JSON object with nothing nested inside a
    /// member's value, no embedded key or `crit`, and only string members. Returns the
    /// members, or the refusal (`"header: …"`).
    public static func header(_ encoded: Substring) -> Result<[(name: String, value: String)], HeaderRefusal> {
        guard encoded.utf8.count <= maxHeaderBytes else { return .failure(.init("larger than \(maxHeaderBytes) bytes")) }
        guard let bytes = Base64URL.decode(String(encoded)) else { return .failure(.init("not base64url")) }
        let parsed: JSON
        do { parsed = try JSON.read(bytes, maxDepth: 2) } catch { return .failure(.init(error.description)) }
        guard case .object(let members) = parsed else { return .failure(.init("not a JSON object")) }
        for refused in refusedHeaderMembers where parsed[member: refused] != nil {
            return .failure(.init("\(refused) is not accepted"))
        }
        var out: [(name: String, value: String)] = []
        for (name, value) in members {
            guard case .string(let s) = value else { return .failure(.init("\(String(name.prefix(32))) is not a string")) }
            out.append((name, s))
        }
        return .success(out)
    }

    /// Why a protected header was refused; `check` is what validation reports.
    public struct HeaderRefusal: Error, Equatable {
        public var check: String
        init(_ reason: String) { check = "header: " + reason }
    }

    /// The JWK of a public key of `alg`, with its `alg` (RFC 8037 OKP, or RFC 7518 EC P-256).
    public static func jwk(publicKey pub: [UInt8], alg: JWSAlgorithm) -> JSON {
        switch alg {
        case .eddsa: return jwk(ed25519PublicKey: pub)
        case .es256:
            return .object([("kty", .string("EC")), ("crv", .string("P-256")), ("x", .string(Base64URL.encode(pub.dropFirst().prefix(32)))),
                            ("y", .string(Base64URL.encode(pub.suffix(32)))), ("kid", .string(thumbprint(publicKey: pub, alg: alg))),
                            ("alg", .string(alg.rawValue)), ("use", .string("sig"))])
        }
    }

    /// The JWK (RFC 8037) of an Ed25519 public key.
    public static func jwk(ed25519PublicKey pub: [UInt8]) -> JSON {
        .object([("kty", .string("OKP")), ("crv", .string("Ed25519")), ("x", .string(Base64URL.encode(pub))),
                 ("kid", .string(thumbprint(ed25519PublicKey: pub))), ("alg", .string("EdDSA")), ("use", .string("sig"))])
    }
}
