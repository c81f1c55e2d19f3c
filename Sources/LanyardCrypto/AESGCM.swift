import CLibcrypto

/// Why a sealed value could not be opened. Tampered, swapped or truncated data all end
/// here: the caller fails closed, never returns garbage.
public struct CryptoError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// AES-256-GCM sealing: `nonce (12) ‖ ciphertext ‖ tag (16)`, random 96-bit nonces,
/// associated data binding the value to where it is stored.
public struct AESGCM: Sendable {
    public static let keySize = 32
    static let nonceSize = 12
    static let tagSize = 16
    private let key: [UInt8]

    public init(key: [UInt8]) throws {
        guard key.count == Self.keySize else { throw CryptoError("an AES-256 key is 32 bytes, got \(key.count)") }
        self.key = key
    }

    public func seal(_ plaintext: [UInt8], associatedData aad: [UInt8]) throws -> [UInt8] {
        let nonce = SecureRandom.bytes(Self.nonceSize)
        guard let ctx = EVP_CIPHER_CTX_new() else { throw CryptoError("EVP_CIPHER_CTX_new failed") }
        defer { EVP_CIPHER_CTX_free(ctx) }
        var out = [UInt8](repeating: 0, count: plaintext.count + 16)
        var len: Int32 = 0
        var total = 0
        guard EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nil, nil, nil) == 1,
              EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, Int32(Self.nonceSize), nil) == 1,
              EVP_EncryptInit_ex(ctx, nil, nil, key, nonce) == 1,
              EVP_EncryptUpdate(ctx, nil, &len, aad, Int32(aad.count)) == 1,
              EVP_EncryptUpdate(ctx, &out, &len, plaintext, Int32(plaintext.count)) == 1
        else { throw CryptoError("AES-GCM encryption failed") }
        total = Int(len)
        let finalOK = out.withUnsafeMutableBufferPointer { EVP_EncryptFinal_ex(ctx, $0.baseAddress! + total, &len) }
        guard finalOK == 1 else { throw CryptoError("AES-GCM encryption failed") }
        total += Int(len)
        var tag = [UInt8](repeating: 0, count: Self.tagSize)
        guard EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, Int32(Self.tagSize), &tag) == 1 else {
            throw CryptoError("AES-GCM tag failed")
        }
        return nonce + out[0..<total] + tag
    }

    public func open(_ sealed: [UInt8], associatedData aad: [UInt8]) throws -> [UInt8] {
        guard sealed.count >= Self.nonceSize + Self.tagSize else { throw CryptoError("sealed value is truncated") }
        let nonce = Array(sealed[0..<Self.nonceSize])
        let body = Array(sealed[Self.nonceSize..<(sealed.count - Self.tagSize)])
        var tag = Array(sealed[(sealed.count - Self.tagSize)...])
        guard let ctx = EVP_CIPHER_CTX_new() else { throw CryptoError("EVP_CIPHER_CTX_new failed") }
        defer { EVP_CIPHER_CTX_free(ctx) }
        var out = [UInt8](repeating: 0, count: body.count + 16)
        var len: Int32 = 0
        guard EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), nil, nil, nil) == 1,
              EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, Int32(Self.nonceSize), nil) == 1,
              EVP_DecryptInit_ex(ctx, nil, nil, key, nonce) == 1,
              EVP_DecryptUpdate(ctx, nil, &len, aad, Int32(aad.count)) == 1,
              EVP_DecryptUpdate(ctx, &out, &len, body, Int32(body.count)) == 1,
              EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, Int32(Self.tagSize), &tag) == 1
        else { throw CryptoError("sealed value does not decrypt") }
        let total = Int(len)
        let finalOK = out.withUnsafeMutableBufferPointer { EVP_DecryptFinal_ex(ctx, $0.baseAddress! + total, &len) }
        guard finalOK == 1 else { throw CryptoError("sealed value failed authentication (tampered, or stored under another row or key)") }
        return Array(out[0..<(total + Int(len))])
    }
}
