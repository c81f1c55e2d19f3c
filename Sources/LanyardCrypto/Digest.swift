import CLibcrypto
#if canImport(Glibc)
import Glibc
#endif

/// SHA-256 and HMAC-SHA256 through OpenSSL's libcrypto.
public enum SHA256 {
    public static let byteCount = 32

    public static func hash<Bytes: Collection>(_ data: Bytes) -> [UInt8] where Bytes.Element == UInt8 {
        var out = [UInt8](repeating: 0, count: byteCount)
        let ok = data.withContiguousStorageIfAvailable { buf in
            EVP_Digest(buf.baseAddress, buf.count, &out, nil, EVP_sha256(), nil)
        } ?? Array(data).withUnsafeBufferPointer { buf in
            EVP_Digest(buf.baseAddress, buf.count, &out, nil, EVP_sha256(), nil)
        }
        precondition(ok == 1, "EVP_Digest(SHA-256) failed")
        return out
    }

    public static func hex<Bytes: Collection>(_ data: Bytes) -> String where Bytes.Element == UInt8 {
        Hex.encode(hash(data))
    }

    /// Streams a file through SHA-256 (for exe_sha256 selectors). Nil when it cannot be
    /// read, holds more than `maxBytes`, or `continuing` (asked between chunks) says stop.
    public static func hexOfFile(descriptor fd: Int32, maxBytes: Int64 = .max, continuing: () -> Bool = { true }) -> String? {
        guard let ctx = EVP_MD_CTX_new() else { return nil }
        defer { EVP_MD_CTX_free(ctx) }
        guard EVP_DigestInit_ex(ctx, EVP_sha256(), nil) == 1 else { return nil }
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        var total: Int64 = 0
        while true {
            guard continuing() else { return nil }
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR { continue }; return nil }
            if n == 0 { break }
            total += Int64(n)
            guard total <= maxBytes, EVP_DigestUpdate(ctx, chunk, n) == 1 else { return nil }
        }
        var out = [UInt8](repeating: 0, count: byteCount)
        var len: UInt32 = 0
        guard EVP_DigestFinal_ex(ctx, &out, &len) == 1 else { return nil }
        return Hex.encode(out)
    }
}

public enum HMAC {
    public static func sha256(key: [UInt8], message: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var len: UInt32 = 0
        let p = CLibcrypto.HMAC(EVP_sha256(), key, Int32(key.count), message, message.count, &out, &len)
        precondition(p != nil && len == 32, "HMAC-SHA256 failed")
        return out
    }
}

/// Cryptographically secure random bytes (OpenSSL's DRBG).
public enum SecureRandom {
    public static func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        precondition(RAND_bytes(&out, Int32(count)) == 1, "RAND_bytes failed: no entropy")
        return out
    }

    /// A random RFC 9562 version-4 UUID string.
    public static func uuid() -> String {
        var b = bytes(16)
        b[6] = (b[6] & 0x0F) | 0x40
        b[8] = (b[8] & 0x3F) | 0x80
        let h = Hex.encode(b)
        let c = Array(h)
        return "\(String(c[0..<8]))-\(String(c[8..<12]))-\(String(c[12..<16]))-\(String(c[16..<20]))-\(String(c[20..<32]))"
    }
}

public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    public static func encode<Bytes: Sequence>(_ data: Bytes) -> String where Bytes.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity(data.underestimatedCount * 2)
        for b in data {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// HKDF-SHA256 (RFC 5869) through libcrypto: derives independent keys from one master
/// key, one per `info` label, so a key for one purpose never serves another.
public enum HKDF {
    public static func sha256(key: [UInt8], salt: [UInt8] = [], info: String, count: Int = 32) throws -> [UInt8] {
        guard let ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nil) else { throw CryptoError("HKDF is unavailable") }
        defer { EVP_PKEY_CTX_free(ctx) }
        let label = Array(info.utf8)
        var out = [UInt8](repeating: 0, count: count)
        var len = count
        guard EVP_PKEY_derive_init(ctx) == 1,
              EVP_PKEY_CTX_set_hkdf_md(ctx, EVP_sha256()) == 1,
              EVP_PKEY_CTX_set1_hkdf_salt(ctx, salt, Int32(salt.count)) == 1,
              EVP_PKEY_CTX_set1_hkdf_key(ctx, key, Int32(key.count)) == 1,
              EVP_PKEY_CTX_add1_hkdf_info(ctx, label, Int32(label.count)) == 1,
              EVP_PKEY_derive(ctx, &out, &len) == 1, len == count
        else { throw CryptoError("HKDF-SHA256 failed") }
        return out
    }
}

public enum ConstantTime {
    /// Compares MACs without leaking where they first differ.
    public static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        a.count == b.count && !a.isEmpty && CRYPTO_memcmp(a, b, a.count) == 0
    }
}
