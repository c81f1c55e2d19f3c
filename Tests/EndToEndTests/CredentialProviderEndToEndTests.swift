import Foundation
import LanyardTestSupport
import Testing

/// The LoadCredential= provider (`--credentials-socket`) against a real lanyardd. Only a
/// root process systemd (PID 1) forked for the unit its address names is answered, which
/// no process of this test is: every connection here must get nothing, not a byte, and no
/// lease. (The answered case needs systemd as PID 1: scripts/test-systemd.sh checks it.)
@Suite(.serialized)
struct CredentialProviderEndToEndTests {
    static let policy = E2EUsers.policy() + """
    service_units:
      github-sync.service:
        github: { agent: a, capability: github:read_repo }

    """

    /// Connects to `path`, from the abstract address `abstract` when given, and reads to EOF
    /// (10 s at most); the bytes read, or nil when the daemon neither answered nor closed.
    static func request(_ path: String, from abstract: String?) throws -> [UInt8]? {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try #require(fd >= 0)
        defer { close(fd) }
        if let abstract {
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            let bytes = [0] + Array(abstract.utf8)
            withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes) }
            let len = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
            let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
            try #require(rc == 0, "bind: \(errno)")
        }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var target = sockaddr_un()
        target.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &target.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
        let connected = withUnsafePointer(to: &target) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        try #require(connected == 0, "connect \(path): \(errno)")
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n == 0 { return out }
            if n < 0 { return errno == EINTR ? out : nil }
            out += chunk[0..<n]
        }
    }

    @Test func aProcessThatIsNotSystemdGetsNothing() throws {
        let d = try DaemonProcess(policy: Self.policy)
        defer { d.cleanup() }
        let socketPath = d.dir + "/credentials.sock"
        d.extraArguments = ["--credentials-socket", socketPath]
        try d.start()
        var st = stat()
        #expect(stat(socketPath, &st) == 0 && st.st_mode & 0o777 == 0o600, "the credentials socket is mode 0600")

        // A plain connection, and one from the address systemd would use for a unit the policy names.
        for from in [nil, "0123456789abcdef/unit/github-sync.service/github"] {
            let got = try Self.request(socketPath, from: from)
            #expect(got == [], "from \(from ?? "an unbound socket"): the daemon must close without a byte, got \(got.map { "\($0.count) bytes" } ?? "no close")")
        }
        #expect(d.waitForLog("nothing was sent"))
        #expect(!d.logText.contains("credential delivered"))
        let leases = try d.ctlSucceeds(["leases", "list", "--json"])
        #expect(!leases.stdout.contains("lease_id"), "no lease may be issued: \(leases.stdout)")
        let audit = try d.ctlSucceeds(["audit", "export"])
        #expect(!audit.stdout.contains("\"issued\""), "\(audit.stdout)")
        // The daemon still serves its agents.
        #expect(try d.ctl(["provision", "github", "--scope", "github:read_repo"], as: E2EUsers.agent!).status == 0)
    }
}
