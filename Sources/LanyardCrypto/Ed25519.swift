import CLibcrypto

/// Ed25519 signing keys (RFC 8032) through libcrypto. The private key never leaves the
/// daemon except sealed. The libcrypto key object is made once and shared (signing does
/// not change it): deriving it costs as much as a signature.
public struct Ed25519PrivateKey: Sendable {
    public let rawRepresentation: [UInt8]
    public let publicKey: [UInt8]
    private let pkey: PKey

    public init() throws {
        var pkey: OpaquePointer?
        guard let ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nil) else { throw CryptoError("Ed25519 unavailable") }
        defer { EVP_PKEY_CTX_free(ctx) }
        guard EVP_PKEY_keygen_init(ctx) == 1, EVP_PKEY_keygen(ctx, &pkey) == 1, let pkey else {
            throw CryptoError("Ed25519 key generation failed")
        }
        try self.init(pkey: PKey(pkey))
    }

    public init(rawRepresentation raw: [UInt8]) throws {
        guard raw.count == 32, let pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nil, raw, 32) else {
            throw CryptoError("not an Ed25519 private key")
        }
        try self.init(pkey: PKey(pkey))
    }

    private init(pkey: PKey) throws {
        var priv = [UInt8](repeating: 0, count: 32), pub = [UInt8](repeating: 0, count: 32)
        var n = 32, m = 32
        guard EVP_PKEY_get_raw_private_key(pkey.pointer, &priv, &n) == 1, EVP_PKEY_get_raw_public_key(pkey.pointer, &pub, &m) == 1 else {
            throw CryptoError("cannot read the Ed25519 key")
        }
        rawRepresentation = priv
        publicKey = pub
        self.pkey = pkey
    }

    public func signature(for message: [UInt8]) throws -> [UInt8] {
        guard let md = EVP_MD_CTX_new() else { throw CryptoError("Ed25519 signing unavailable") }
        defer { EVP_MD_CTX_free(md) }
        var sig = [UInt8](repeating: 0, count: 64)
        var len = 64
        guard EVP_DigestSignInit(md, nil, nil, nil, pkey.pointer) == 1,
              EVP_DigestSign(md, &sig, &len, message, message.count) == 1 else { throw CryptoError("Ed25519 signing failed") }
        return sig
    }
}

/// Owns an EVP_PKEY (Ed25519 or P-256). libcrypto allows concurrent signing with one key
/// (each signature has its own EVP_MD_CTX), and nothing mutates it after creation.
final class PKey: @unchecked Sendable {
    let pointer: OpaquePointer
    init(_ pointer: OpaquePointer) { self.pointer = pointer }
    deinit { EVP_PKEY_free(pointer) }
}

public enum Ed25519 {
    public static func isValidSignature(_ signature: [UInt8], for message: [UInt8], publicKey: [UInt8]) -> Bool {
        guard signature.count == 64, publicKey.count == 32,
              let pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nil, publicKey, 32),
              let md = EVP_MD_CTX_new() else { return false }
        defer { EVP_PKEY_free(pkey); EVP_MD_CTX_free(md) }
        return EVP_DigestVerifyInit(md, nil, nil, nil, pkey) == 1
            && EVP_DigestVerify(md, signature, signature.count, message, message.count) == 1
    }
}

/// Base64url without padding (RFC 7515 §2).
public enum Base64URL {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    public static func encode<Bytes: Collection>(_ data: Bytes) -> String where Bytes.Element == UInt8 {
        let bytes = Array(data)
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count * 4 + 2) / 3)
        var i = 0
        while i + 2 < bytes.count {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out += [alphabet[Int(n >> 18)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)], alphabet[Int(n & 63)]]
            i += 3
        }
        if bytes.count - i == 1 {
            let n = UInt32(bytes[i]) << 16
            out += [alphabet[Int(n >> 18)], alphabet[Int(n >> 12 & 63)]]
        } else if bytes.count - i == 2 {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
            out += [alphabet[Int(n >> 18)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)]]
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Strict decode: nil for any character outside the alphabet, padding, or a bad length.
    public static func decode(_ s: String) -> [UInt8]? {
        var values: [UInt8] = []
        values.reserveCapacity(s.utf8.count)
        for c in s.utf8 {
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): values.append(c - UInt8(ascii: "A"))
            case UInt8(ascii: "a")...UInt8(ascii: "z"): values.append(c - UInt8(ascii: "a") + 26)
            case UInt8(ascii: "0")...UInt8(ascii: "9"): values.append(c - UInt8(ascii: "0") + 52)
            case UInt8(ascii: "-"): values.append(62)
            case UInt8(ascii: "_"): values.append(63)
            default: return nil
            }
        }
        guard values.count % 4 != 1 else { return nil }
        // The bits past the last byte must be zero: else two strings decode alike (a token
        // would have several spellings).
        if values.count % 4 == 2, values.last! & 0x0F != 0 { return nil }
        if values.count % 4 == 3, values.last! & 0x03 != 0 { return nil }
        var out: [UInt8] = []
        var i = 0
        while i < values.count {
            let chunk = values[i..<min(i + 4, values.count)]
            var n: UInt32 = 0
            for (j, v) in chunk.enumerated() { n |= UInt32(v) << (18 - 6 * UInt32(j)) }
            out.append(UInt8(n >> 16 & 0xFF))
            if chunk.count > 2 { out.append(UInt8(n >> 8 & 0xFF)) }
            if chunk.count > 3 { out.append(UInt8(n & 0xFF)) }
            i += 4
        }
        return out
    }
}
