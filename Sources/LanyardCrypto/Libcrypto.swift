import CLibcrypto

public enum Libcrypto {
    /// Initializes libcrypto without its exit-time cleanup (`OPENSSL_INIT_NO_ATEXIT`). Call it
    /// first thing in `main`, before any other libcrypto call: the first initialization decides.
    /// That `atexit` handler tears the library down while the process's other threads (event
    /// loops, the writer, the thread pools) still run, and a thread that ends after it loses its
    /// 904-byte error queue, which LeakSanitizer then reports (openssl/openssl#6214). The
    /// process's exit frees everything anyway.
    public static func initializeWithoutExitCleanup() {
        _ = OPENSSL_init_crypto(UInt64(OPENSSL_INIT_NO_ATEXIT), nil)
    }
}
