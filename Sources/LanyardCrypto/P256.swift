import CLibcrypto

/// ECDSA P-256 signing keys (ES256, RFC 7518 §3.4) through libcrypto's EVP API. The
/// private key is kept as its DER encoding (what is sealed); signatures are the JWS form,
/// r and s as 32 big-endian bytes each, never DER.
public struct P256PrivateKey: Sendable {
    /// The private key's DER encoding (RFC 5915 ECPrivateKey, as libcrypto writes it).
    public let rawRepresentation: [UInt8]
    /// The public key as an uncompressed point: 0x04, x, y (65 bytes).
    public let publicKey: [UInt8]
    private let pkey: PKey

    public init() throws {
        guard let ctx = EVP_PKEY_CTX_new_from_name(nil, "EC", nil) else { throw CryptoError("P-256 unavailable") }
        defer { EVP_PKEY_CTX_free(ctx) }
        var pkey: OpaquePointer?
        guard EVP_PKEY_keygen_init(ctx) == 1, EVP_PKEY_CTX_set_group_name(ctx, "P-256") == 1,
              EVP_PKEY_keygen(ctx, &pkey) == 1, let pkey else { throw CryptoError("P-256 key generation failed") }
        try self.init(pkey: PKey(pkey))
    }

    public init(rawRepresentation der: [UInt8]) throws {
        let pkey: OpaquePointer? = der.withUnsafeBufferPointer { buffer in
            var p = buffer.baseAddress
            return d2i_PrivateKey(EVP_PKEY_EC, nil, &p, buffer.count)
        }
        guard let pkey else { throw CryptoError("not a P-256 private key") }
        try self.init(pkey: PKey(pkey))
    }

    private init(pkey: PKey) throws {
        var name = [CChar](repeating: 0, count: 32)
        var nameLength = 0
        guard EVP_PKEY_get_utf8_string_param(pkey.pointer, "group", &name, name.count, &nameLength) == 1,
              String(decoding: name.prefix(nameLength).map { UInt8(bitPattern: $0) }, as: UTF8.self) == "prime256v1" else {
            throw CryptoError("not a P-256 key")
        }
        var pub = [UInt8](repeating: 0, count: 65)
        var pubLength = 0
        guard EVP_PKEY_get_octet_string_param(pkey.pointer, "encoded-pub-key", &pub, pub.count, &pubLength) == 1, pubLength == 65, pub[0] == 4 else {
            throw CryptoError("cannot read the P-256 public key")
        }
        var out: UnsafeMutablePointer<UInt8>?
        let length = i2d_PrivateKey(pkey.pointer, &out)
        guard length > 0, let out else { throw CryptoError("cannot encode the P-256 private key") }
        defer { CRYPTO_free(out, #fileID, #line) }
        rawRepresentation = Array(UnsafeBufferPointer(start: out, count: Int(length)))
        publicKey = pub
        self.pkey = pkey
    }

    /// The ES256 signature of `message`: SHA-256, ECDSA, then r || s.
    public func signature(for message: [UInt8]) throws -> [UInt8] {
        guard let md = EVP_MD_CTX_new() else { throw CryptoError("P-256 signing unavailable") }
        defer { EVP_MD_CTX_free(md) }
        var der = [UInt8](repeating: 0, count: 80)
        var length = der.count
        guard EVP_DigestSignInit(md, nil, EVP_sha256(), nil, pkey.pointer) == 1,
              EVP_DigestSign(md, &der, &length, message, message.count) == 1,
              let raw = P256.rawSignature(der: Array(der.prefix(length))) else { throw CryptoError("P-256 signing failed") }
        return P256.lowS(raw)
    }
}

public enum P256 {
    /// DER SubjectPublicKeyInfo of a P-256 key up to the point: id-ecPublicKey, prime256v1, BIT STRING.
    private static let spkiPrefix: [UInt8] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01, 0x06, 0x08,
        0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ]

    /// Whether `signature` (r || s, 64 bytes) is an ES256 signature of `message` by
    /// `publicKey` (an uncompressed point). libcrypto checks the point is on the curve.
    public static func isValidSignature(_ signature: [UInt8], for message: [UInt8], publicKey: [UInt8]) -> Bool {
        guard signature.count == 64, publicKey.count == 65, publicKey[0] == 4, isLowS(signature),
              let der = derSignature(raw: signature) else { return false }
        let spki = spkiPrefix + publicKey
        let pkey: OpaquePointer? = spki.withUnsafeBufferPointer { buffer in
            var p = buffer.baseAddress
            return d2i_PUBKEY(nil, &p, buffer.count)
        }
        guard let pkey, let md = EVP_MD_CTX_new() else { return false }
        defer { EVP_PKEY_free(pkey); EVP_MD_CTX_free(md) }
        return EVP_DigestVerifyInit(md, nil, EVP_sha256(), nil, pkey) == 1
            && EVP_DigestVerify(md, der, der.count, message, message.count) == 1
    }

    /// The group order n of P-256, and n / 2 (big-endian).
    static let order: [UInt8] = [
        0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
    ]
    static let halfOrder: [UInt8] = [
        0x7F, 0xFF, 0xFF, 0xFF, 0x80, 0x00, 0x00, 0x00, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xDE, 0x73, 0x7D, 0x56, 0xD3, 0x8B, 0xCF, 0x42, 0x79, 0xDC, 0xE5, 0x61, 0x7E, 0x31, 0x92, 0xA8,
    ]

    /// Whether s ≤ n/2: (r, s) and (r, n − s) both verify, so only the low one is accepted
    /// (one spelling per token).
    static func isLowS(_ signature: [UInt8]) -> Bool {
        !halfOrder.lexicographicallyPrecedes(signature[32..<64])
    }

    /// `signature` with s replaced by n − s when s > n/2.
    static func lowS(_ signature: [UInt8]) -> [UInt8] {
        isLowS(signature) ? signature : flippedS(signature)
    }

    /// The same signature with s replaced by n − s (its malleable twin).
    public static func flippedS(_ signature: [UInt8]) -> [UInt8] {
        var out = signature
        var borrow = 0
        for i in stride(from: 31, through: 0, by: -1) {
            let d = Int(order[i]) - Int(signature[32 + i]) - borrow
            out[32 + i] = UInt8((d + 256) % 256)
            borrow = d < 0 ? 1 : 0
        }
        return out
    }

    /// r || s of a DER ECDSA-Sig-Value, each left-padded to 32 bytes.
    static func rawSignature(der: [UInt8]) -> [UInt8]? {
        let sig: OpaquePointer? = der.withUnsafeBufferPointer { buffer in
            var p = buffer.baseAddress
            return d2i_ECDSA_SIG(nil, &p, buffer.count)
        }
        guard let sig else { return nil }
        defer { ECDSA_SIG_free(sig) }
        var out = [UInt8](repeating: 0, count: 64)
        let ok = out.withUnsafeMutableBufferPointer { buffer in
            BN_bn2binpad(ECDSA_SIG_get0_r(sig), buffer.baseAddress, 32) == 32
                && BN_bn2binpad(ECDSA_SIG_get0_s(sig), buffer.baseAddress! + 32, 32) == 32
        }
        return ok ? out : nil
    }

    /// The DER ECDSA-Sig-Value of r || s.
    static func derSignature(raw: [UInt8]) -> [UInt8]? {
        guard raw.count == 64, let sig = ECDSA_SIG_new() else { return nil }
        defer { ECDSA_SIG_free(sig) }
        guard let r = BN_bin2bn(raw, 32, nil) else { return nil }
        guard let s = raw.withUnsafeBufferPointer({ BN_bin2bn($0.baseAddress! + 32, 32, nil) }) else { BN_free(r); return nil }
        guard ECDSA_SIG_set0(sig, r, s) == 1 else { BN_free(r); BN_free(s); return nil }
        var out: UnsafeMutablePointer<UInt8>?
        let length = i2d_ECDSA_SIG(sig, &out)
        guard length > 0, let out else { return nil }
        defer { CRYPTO_free(out, #fileID, #line) }
        return Array(UnsafeBufferPointer(start: out, count: Int(length)))
    }
}
