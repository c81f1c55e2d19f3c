#if canImport(Glibc)
import Glibc
#endif

/// Who is on the other end of a connection to the console: 127.0.0.1 is open to every
/// local user (an agent's uid too), so the console serves only its own uid and root, as
/// the kernel's socket table says (`/proc/net/tcp`: the socket bound to the peer's port
/// and connected to ours). Anyone else is closed before a byte is read: they can neither
/// guess at the token nor hold the console's connections.
enum LoopbackPeer {
    /// The uid owning the socket at 127.0.0.1:`peerPort` connected to 127.0.0.1:`localPort`; nil when none is found.
    static func uid(peerPort: Int, localPort: Int) -> UInt32? {
        guard let file = fopen("/proc/net/tcp", "r") else { return nil }
        defer { fclose(file) }
        let local = "0100007F:" + hex(peerPort), remote = "0100007F:" + hex(localPort)
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0, let line {
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid …
            let fields = String(cString: line).split(separator: " ", omittingEmptySubsequences: true)
            if fields.count > 7, fields[1] == local, fields[2] == remote { return UInt32(fields[7]) }
        }
        return nil
    }

    /// Whether that peer may use the console: this process's uid, or root.
    static func allowed(peerPort: Int, localPort: Int) -> Bool {
        guard let uid = uid(peerPort: peerPort, localPort: localPort) else { return false }
        return uid == getuid() || uid == 0
    }

    private static func hex(_ port: Int) -> String {
        let h = String(port, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 4 - h.count)) + h
    }
}
