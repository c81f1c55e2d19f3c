/// A JWS signature algorithm the daemon signs with (RFC 7518, RFC 8037).
public enum JWSAlgorithm: String, Sendable, CaseIterable {
    /// Ed25519, under the `alg` name every deployed verifier knows (see README, Decisions).
    case eddsa = "EdDSA"
    /// ECDSA P-256 with SHA-256: what SPIFFE JWT-SVID verifiers accept.
    case es256 = "ES256"

    /// The algorithm a token's `alg` header names: `Ed25519` (RFC 9864's fully specified
    /// name) is read as EdDSA, since the daemon's EdDSA keys are all Ed25519.
    public init?(header alg: String) {
        switch Array(alg.utf8) {
        case Array("EdDSA".utf8), Array("Ed25519".utf8): self = .eddsa
        case Array("ES256".utf8): self = .es256
        default: return nil
        }
    }
}

/// A private signing key of either algorithm.
public enum SigningKey: Sendable {
    case ed25519(Ed25519PrivateKey)
    case p256(P256PrivateKey)

    public init(generating alg: JWSAlgorithm) throws {
        switch alg {
        case .eddsa: self = .ed25519(try Ed25519PrivateKey())
        case .es256: self = .p256(try P256PrivateKey())
        }
    }

    /// The key from what `rawRepresentation` gave.
    public init(alg: JWSAlgorithm, rawRepresentation raw: [UInt8]) throws {
        switch alg {
        case .eddsa: self = .ed25519(try Ed25519PrivateKey(rawRepresentation: raw))
        case .es256: self = .p256(try P256PrivateKey(rawRepresentation: raw))
        }
    }

    public var alg: JWSAlgorithm {
        switch self {
        case .ed25519: .eddsa
        case .p256: .es256
        }
    }

    /// The private key's bytes (what is sealed): Ed25519's 32-byte seed, P-256's DER.
    public var rawRepresentation: [UInt8] {
        switch self {
        case .ed25519(let k): k.rawRepresentation
        case .p256(let k): k.rawRepresentation
        }
    }

    /// Ed25519's 32 bytes, or P-256's uncompressed point.
    public var publicKey: [UInt8] {
        switch self {
        case .ed25519(let k): k.publicKey
        case .p256(let k): k.publicKey
        }
    }

    /// The signature as a JWS carries it.
    public func signature(for message: [UInt8]) throws -> [UInt8] {
        switch self {
        case .ed25519(let k): try k.signature(for: message)
        case .p256(let k): try k.signature(for: message)
        }
    }

    /// Whether `signature` is `alg`'s signature of `message` by `publicKey`.
    public static func isValidSignature(_ signature: [UInt8], for message: [UInt8], publicKey: [UInt8], alg: JWSAlgorithm) -> Bool {
        switch alg {
        case .eddsa: Ed25519.isValidSignature(signature, for: message, publicKey: publicKey)
        case .es256: P256.isValidSignature(signature, for: message, publicKey: publicKey)
        }
    }
}
