#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// Who is on the other end of a connection to the console: 127.0.0.1 is open to every
/// local user (an agent's uid too), so the console serves only its own uid and root, as
/// the kernel's socket table says (`/proc/net/tcp`). The row must be the peer's own
/// socket: the whole 4-tuple (the peer's real address and port, the console's address and
/// port; any 127.x may borrow a port seen in the world-readable table), established (a
/// client that sent its request and closed leaves an orphan row owned by "uid 0"), and
/// held by a process (inode not 0). Anyone else is closed before a byte is read: they can
/// neither guess at the token nor hold the console's connections.
enum LoopbackPeer {
    /// One connection as `/proc/net/tcp` writes it: addresses in the kernel's byte order, ports in hex.
    struct Tuple: Equatable {
        let local: String, remote: String

        /// The row the peer's socket has: its address as local, the console's as remote.
        init?(peer: SocketAddress?, console: SocketAddress?) {
            guard let peer = Self.field(peer), let console = Self.field(console) else { return nil }
            local = peer
            remote = console
        }

        private static func field(_ address: SocketAddress?) -> String? {
            guard case .v4(let a)? = address else { return nil }
            return hex(UInt32(a.address.sin_addr.s_addr), width: 8) + ":" + hex(UInt32(UInt16(bigEndian: a.address.sin_port)), width: 4)
        }
    }

    /// The uid owning the peer's socket of `tuple`, when that socket is established and open; nil otherwise.
    static func uid(_ tuple: Tuple) -> UInt32? {
        guard let file = fopen("/proc/net/tcp", "r") else { return nil }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0, let line {
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode …
            let f = String(cString: line).split(separator: " ", omittingEmptySubsequences: true)
            guard f.count > 9, f[1] == tuple.local, f[2] == tuple.remote else { continue }
            guard f[3] == "01", f[9] != "0" else { return nil }  // TCP_ESTABLISHED, held by a file
            return UInt32(f[7])
        }
        return nil
    }

    /// Whether the peer of a connection may use the console: this process's uid, or root.
    static func allowed(peer: SocketAddress?, console: SocketAddress?) -> Bool {
        guard let tuple = Tuple(peer: peer, console: console), let uid = uid(tuple) else { return false }
        return uid == getuid() || uid == 0
    }

    private static func hex(_ value: UInt32, width: Int) -> String {
        let h = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, width - h.count)) + h
    }
}
