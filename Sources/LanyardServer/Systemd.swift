#if canImport(Glibc)
import Glibc
#endif

/// systemd integration without libsystemd: socket activation (`LISTEN_FDS`,
/// `LISTEN_FDNAMES`) and readiness notification (`NOTIFY_SOCKET`).
public enum Systemd {
    /// `$CREDENTIALS_DIRECTORY` (systemd's LoadCredential=), when set and not empty.
    static var credentialsDirectory: String? {
        getenv("CREDENTIALS_DIRECTORY").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The listening sockets systemd passed, by `FileDescriptorName=`; empty when not
    /// socket-activated. The variables are removed so children do not inherit them.
    public static func listenFDs() throws -> [String: Int32] {
        guard let count = env("LISTEN_FDS").flatMap(Int32.init), count > 0 else { return [:] }
        defer { for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] { unsetenv(name) } }
        guard env("LISTEN_PID").flatMap(Int32.init) == getpid() else { return [:] }
        let names = (env("LISTEN_FDNAMES") ?? "").split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard names.count == Int(count) else {
            throw StartupError("systemd passed \(count) sockets but LISTEN_FDNAMES names \(names.count); set FileDescriptorName=agent and =admin in the socket units")
        }
        var out: [String: Int32] = [:]
        for (i, name) in names.enumerated() {
            let fd = 3 + Int32(i)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            out[name] = fd
        }
        return out
    }

    /// Sends `state` (e.g. "READY=1") to the service manager; a no-op outside systemd.
    @discardableResult
    public static func notify(_ state: String) -> Bool {
        guard let path = env("NOTIFY_SOCKET"), !path.isEmpty, path.utf8.count < 108 else { return false }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            if bytes.first == UInt8(ascii: "@") { raw[0] = 0 }  // abstract namespace
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
        let sent = state.withCString { msg in
            withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, msg, strlen(msg), 0, $0, length) }
            }
        }
        return sent >= 0
    }

    private static func env(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }
}
