import Foundation
import LanyardTestSupport
import Testing

/// The LoadCredential= provider (`--credentials-socket`) against a real lanyardd. Only a
/// root process in the unit's own cgroup (every ancestor a `.slice`) that its address names
/// is answered. A root process orphaned to PID 1 (Scripts/credential_request.py, a double
/// fork) in a cgroup this test makes stands in for systemd's (sd-mkdcreds): in
/// `/lanyard-e2e.slice/github-sync.service` it gets the credential; anywhere else (its own
/// cgroup, a sub-cgroup named after the unit under another unit) it gets the refusal —
/// more than systemd reads for a credential, zeros — which fails a real unit's start
/// (scripts/test-systemd.sh checks that under a booted systemd).
@Suite(.serialized)
struct CredentialProviderEndToEndTests {
    static let policy = E2EUsers.policy() + """
    service_units:
      github-sync.service:
        github: { agent: a, capability: github:read_repo }

    """
    /// CredentialProvider.refusalBytes: one byte more than systemd's CREDENTIAL_SIZE_MAX.
    static let refusalBytes = 1024 * 1024 + 1

    /// What credential_request.py saw, orphaned to PID 1.
    struct Asked: Decodable {
        var ppid: Int32
        var cgroup: String?
        var bytes: Int?
        var zeros: Bool?
        var text: String?
        var error: String?
    }

    /// Asks `socket` from a root process orphaned to PID 1, bound to `address`, in `cgroup` (nil: its own).
    static func askOrphaned(_ socket: String, from address: String, in cgroup: String?) throws -> Asked {
        let script = TestSupport.packageRoot.appendingPathComponent("Tests/EndToEndTests/Scripts/credential_request.py").path
        let r = try run(["/usr/bin/python3", script, socket, address, cgroup ?? "-"])
        try #require(r.status == 0, "credential_request.py: \(r.stderr)")
        return try JSONDecoder().decode(Asked.self, from: Data(r.stdout.utf8))
    }

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

    @Test func aProcessThatIsNotSystemdGetsTheRefusal() throws {
        let d = try DaemonProcess(policy: Self.policy)
        defer { d.cleanup() }
        let socketPath = d.dir + "/credentials.sock"
        d.extraArguments = ["--credentials-socket", socketPath]
        try d.start()
        var st = stat()
        #expect(stat(socketPath, &st) == 0 && st.st_mode & 0o777 == 0o600, "the credentials socket is mode 0600")

        // A plain connection, and one from the address systemd would use for a unit the policy
        // names, from this test (not orphaned to PID 1). A root peer gets the refusal (a bare
        // close would start a real unit with an empty credential); any other peer nothing.
        let expected = TestSupport.isRoot ? Self.refusalBytes : 0
        for from in [nil, "0123456789abcdef/unit/github-sync.service/github"] {
            let got = try Self.request(socketPath, from: from)
            #expect(got?.count == expected && got?.allSatisfy { $0 == 0 } == true,
                    "from \(from ?? "an unbound socket"): want \(expected) zero bytes, got \(got.map { "\($0.count) bytes" } ?? "no close")")
        }
        #expect(d.waitForLog(TestSupport.isRoot ? "PID 1 did not fork" : "nothing was sent"))
        #expect(!d.logText.contains("credential delivered"))
        let leases = try d.ctlSucceeds(["leases", "list", "--json"])
        #expect(!leases.stdout.contains("lease_id"), "no lease may be issued: \(leases.stdout)")
        let audit = try d.ctlSucceeds(["audit", "export"])
        #expect(!audit.stdout.contains("\"issued\""), "\(audit.stdout)")
        // The daemon still serves its agents.
        #expect(try d.ctl(["provision", "github", "--scope", "github:read_repo"], as: E2EUsers.agent!).status == 0)
    }

    /// The cgroup is the boundary: a root process orphaned to PID 1 with systemd's address is
    /// answered only in the unit's own cgroup.
    @Test func onlyTheUnitsOwnCgroupIsAnswered() throws {
        guard TestSupport.isRoot else { return }  // binding the address as root, and making cgroups, need root
        let d = try DaemonProcess(policy: Self.policy)
        defer { d.cleanup() }
        let socketPath = d.dir + "/credentials.sock"
        d.extraArguments = ["--credentials-socket", socketPath]
        try d.start()
        let address = "00c0ffee/unit/github-sync.service/github"

        // Its own cgroup (whatever this test runs in): the cgroup check refuses it.
        let own = try Self.askOrphaned(socketPath, from: address, in: nil)
        guard own.ppid == 1 else {
            print("CredentialProviderEndToEndTests: a subreaper (pid \(own.ppid)) adopts orphans here, not PID 1: the cgroup cases need PID 1")
            return
        }
        #expect(own.error == nil && own.bytes == Self.refusalBytes && own.zeros == true, "\(own)")
        #expect(d.waitForLog("not in the unit's own cgroup"))

        let slice = "/lanyard-e2e-\(getpid()).slice"
        // A sub-cgroup named after the unit under another unit (a Delegate= subtree, a container).
        let delegated = try Self.askOrphaned(socketPath, from: address, in: slice + "/other.service/github-sync.service")
        guard delegated.error == nil || !(delegated.error ?? "").contains("cgroup") else {
            print("CredentialProviderEndToEndTests: cannot make cgroups here (\(delegated.error ?? "")): the cgroup cases are skipped")
            return
        }
        #expect(delegated.cgroup == slice + "/other.service/github-sync.service", "\(delegated)")
        #expect(delegated.error == nil && delegated.bytes == Self.refusalBytes && delegated.zeros == true, "\(delegated)")
        // A sub-cgroup of the unit itself.
        let sub = try Self.askOrphaned(socketPath, from: address, in: slice + "/github-sync.service/sub")
        #expect(sub.error == nil && sub.bytes == Self.refusalBytes && sub.zeros == true, "\(sub)")
        #expect(!d.logText.contains("credential delivered"))

        // The unit's own cgroup, a credential id the policy does not name: refused and audited.
        let unnamed = try Self.askOrphaned(socketPath, from: "00c0ffee/unit/github-sync.service/other", in: slice + "/github-sync.service")
        #expect(unnamed.error == nil && unnamed.bytes == Self.refusalBytes && unnamed.zeros == true, "\(unnamed)")
        #expect(d.waitForLog("no credential for this unit and id"))

        // The unit's own cgroup with the id the policy names: the credential, as a lease audited with the unit.
        let good = try Self.askOrphaned(socketPath, from: address, in: slice + "/github-sync.service")
        #expect(good.cgroup == slice + "/github-sync.service")
        let secret = try #require(good.text, "\(good)")
        #expect(good.error == nil && !secret.isEmpty && good.bytes == secret.utf8.count && good.bytes! < 4096, "\(good)")
        #expect(d.waitForLog("credential delivered"))
        let leases = try d.ctlSucceeds(["leases", "list", "--json"])
        #expect(leases.stdout.contains("lease_id") && leases.stdout.contains("\"agent\":\"a\""), "\(leases.stdout)")
        let audit = try d.ctlSucceeds(["audit", "export"])
        #expect(audit.stdout.split(separator: "\n").contains { $0.contains("unit/github-sync.service/github") && $0.contains("\"issued\"") }, "\(audit.stdout)")
        #expect(audit.stdout.split(separator: "\n").contains { $0.contains("unit/github-sync.service/other") && $0.contains("not_found") })
        // The unit started again: a new credential, and the previous start's lease ends (one lease per unit and id).
        let again = try Self.askOrphaned(socketPath, from: address, in: slice + "/github-sync.service")
        let second = try #require(again.text, "\(again)")
        #expect(!second.isEmpty && second != secret)
        let after = try d.ctlSucceeds(["leases", "list", "--json"])
        #expect(after.stdout.components(separatedBy: "\"lease_id\"").count == 2, "one active lease for the unit: \(after.stdout)")
        let revoked = try d.ctlSucceeds(["audit", "export"])
        #expect(revoked.stdout.split(separator: "\n").contains { $0.contains("\"revoked\"") && $0.contains("started again") }, "\(revoked.stdout)")
        #expect(!d.logText.contains(secret), "the secret is not logged")
        #expect(!audit.stdout.contains(secret), "the secret is not audited")
    }

    /// A root peer that never reads holds one worker until the answer's total deadline, not
    /// the provider: another unit is answered meanwhile, and the stalled one is cut off.
    @Test func aPeerThatDoesNotReadIsCutOffAndHoldsUpNobody() throws {
        guard TestSupport.isRoot else { return }
        let d = try DaemonProcess(policy: Self.policy)
        defer { d.cleanup() }
        let socketPath = d.dir + "/credentials.sock"
        d.extraArguments = ["--credentials-socket", socketPath]
        try d.start()
        // A root peer (this test) that connects and never reads: it is owed the 1 MiB refusal.
        let stalled = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(stalled) }
        var target = sockaddr_un()
        target.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &target.sun_path) { $0.copyBytes(from: Array(socketPath.utf8) + [0]) }
        let connected = withUnsafePointer(to: &target) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(stalled, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        try #require(connected == 0)

        let slice = "/lanyard-e2e-\(getpid())-stall.slice"
        let good = try Self.askOrphaned(socketPath, from: "00c0ffee/unit/github-sync.service/github", in: slice + "/github-sync.service")
        guard good.ppid == 1, good.error == nil else {
            print("CredentialProviderEndToEndTests: no PID 1 reaper or no cgroups here (\(good)): the stalled-peer case is skipped")
            return
        }
        #expect(good.text?.isEmpty == false, "answered while another peer stalls: \(good)")
        var pfd = pollfd(fd: stalled, events: 0, revents: 0)
        #expect(poll(&pfd, 1, 0) == 0, "the stalled connection is still open while the other was answered")

        // The daemon gives up at the deadline (10 s from accept): the connection closes with the refusal unfinished.
        #expect(poll(&pfd, 1, 20_000) == 1 && pfd.revents & Int16(POLLHUP) != 0, "the stalled connection is closed at the deadline")
        var total = 0
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(stalled, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            total += n
        }
        #expect(total > 0 && total < Self.refusalBytes, "cut off: \(total) bytes")
        #expect(d.waitForLog("PID 1 did not fork"))
    }
}
