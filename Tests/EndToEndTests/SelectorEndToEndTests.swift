import Foundation
import LanyardTestSupport
import LanyardWire
import Testing

/// Security I, findings 1, 2, 4 and acceptance 2; Security II, finding 8: selectors mean
/// what they say against code running as the agent's own uid (invariant 12), tried with
/// the kernel mechanisms the attacks use — namespaces, cgroups, in-place rewrites.
extension LoadSensitive {
@Suite(.serialized, .enabled(if: TestSupport.isRoot, "needs root to create uids, namespaces and cgroups"))
struct SelectorEndToEndTests {
    static let python = realpath("/usr/bin/python3", nil).map { p in defer { free(p) }; return String(cString: p) }
    static let raceScript = TestSupport.packageRoot.appendingPathComponent("Tests/EndToEndTests/Scripts/identity_race.py").path

    /// The identity_race.py protocol in perl, for callers that must not be python: Hello,
    /// then REQ; the response hex on stderr, then "done".
    static let perlCaller = #"""
        use IO::Socket::UNIX;
        my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $ARGV[0]) or die "connect: $!";
        binmode $s;
        sub call { syswrite($s, pack("H*", $_[0])); my $h = ""; sysread($s, $h, 4) == 4 or die "no header";
                   my $n = unpack("N", $h); my $b = ""; while (length($b) < $n) { my $c; sysread($s, $c, $n - length($b)) or die "eof"; $b .= $c; } $b }
        call($ENV{HELLO});
        print STDERR unpack("H*", call($ENV{REQ})), "\ndone\n";
        """#

    static func policy(_ agents: String) -> String {
        """
        trust_domain: e2e.internal
        services:
          github: { kind: opaque }
        capabilities:
          github:read_repo: { risk: low }
        agents:
        \(agents)
        """
    }

    static func asUser(_ user: (uid: UInt32, gid: UInt32)) -> [String] {
        ["/usr/bin/setpriv", "--reuid=\(user.uid)", "--regid=\(user.gid)", "--clear-groups", "--"]
    }

    static func provision(_ argv: [String]) throws -> Lanyard_V1_Response {
        setenv("CALLER", perlCaller, 1)
        defer { unsetenv("CALLER") }
        return try IdentityRaceTests.answer(to: IdentityRaceTests.provision, from: argv)
    }

    static func sha256(_ path: String) throws -> String {
        let r = try run(["/usr/bin/sha256sum", path])
        return try #require(r.stdout.split(separator: " ").first.map(String.init))
    }

    /// Finding 1: `/proc/PID/exe` is rendered in the caller's mount namespace. Bind-mounting
    /// perl over the pinned path — in a user+mount namespace of the agent's own, or in a
    /// mount namespace root made — no longer passes as the pinned binary.
    @Test func exeIsTheFileThatRunsNotThePathTheCallerSees() throws {
        let agent = E2EUsers.agent!
        let pinned = try #require(Self.python)
        let d = try DaemonProcess(policy: Self.policy("  a: { uid: \(agent.uid), exe: \(pinned), grants: [github:read_repo] }"))
        defer { d.cleanup() }
        try d.start()

        let real = try Self.provision(Self.asUser(agent) + [pinned, Self.raceScript, d.agentSocket, "plain"])
        #expect(real.status.code == .ok && real.provision.lease.secret.hasPrefix("lyt_"), "the real pinned binary: \(real.status)")
        // A mount namespace of its own (as systemd's sandboxing makes) changes nothing for the real binary.
        let sandboxed = try Self.provision(["/usr/bin/unshare", "-m", "--"] + Self.asUser(agent) + [pinned, Self.raceScript, d.agentSocket, "plain"])
        #expect(sandboxed.status.code == .ok, "the real binary in a mount namespace root made: \(sandboxed.status)")

        let bind = "mount --bind /usr/bin/perl \(pinned) && exec "
        let ownNamespace = try Self.provision(Self.asUser(agent) + ["/usr/bin/unshare", "-Urm", "/bin/sh", "-c",
                                                                    bind + "\(pinned) -e \"$CALLER\" \(d.agentSocket)"])
        #expect(ownNamespace.status.code == .unauthenticated, "perl bound over the pinned path by the agent's uid: \(ownNamespace.status)")
        let rootsNamespace = try Self.provision(["/usr/bin/unshare", "-m", "/bin/sh", "-c",
                                                 bind + Self.asUser(agent).joined(separator: " ") + " \(pinned) -e \"$CALLER\" \(d.agentSocket)"])
        #expect(rootsNamespace.status.code == .unauthenticated, "perl bound over the pinned path in root's mount namespace: \(rootsNamespace.status)")
        #expect(ownNamespace.provision.lease.secret.isEmpty && rootsNamespace.provision.lease.secret.isEmpty)
        // What approvers are shown as its exe says the path is not that file.
        setenv("CALLER", Self.perlCaller, 1)
        defer { unsetenv("CALLER") }
        var hello = Lanyard_V1_Request()
        hello.hello = .init()
        let shown = try IdentityRaceTests.answer(to: hello, from: Self.asUser(agent) + ["/usr/bin/unshare", "-Urm", "/bin/sh", "-c",
                                                                                         bind + "\(pinned) -e \"$CALLER\" \(d.agentSocket)"])
        #expect(shown.hello.caller.exe == "\(pinned) (not the file at that path outside the caller's mount namespace)", "\(shown.hello.caller)")
    }

    /// Finding 2: a binary its agent can rewrite pins nothing — rewritten in place with
    /// `dd conv=notrunc` and its mtime set back with `touch -d`, it used to pass with the
    /// cached hash. A binary anyone but root can write is not hashed at all (logged); the
    /// root-owned copy with the same bytes still authenticates.
    @Test func exeSHA256OfABinaryItsAgentCanRewritePinsNothing() throws {
        let agent = E2EUsers.agent!
        let source = try #require(Self.python)
        let scratch = TestSupport.tempDir("exe")
        defer { TestSupport.remove(scratch) }
        let rootCopy = scratch + "/root-python", agentCopy = scratch + "/agent-python"
        for copy in [rootCopy, agentCopy] { #expect(try run(["/bin/cp", source, copy]).status == 0) }
        #expect(chown(agentCopy, agent.uid, agent.gid) == 0)
        let d = try DaemonProcess(policy: Self.policy("  a: { uid: \(agent.uid), exe_sha256: \(try Self.sha256(rootCopy)), grants: [github:read_repo] }"))
        defer { d.cleanup() }
        try d.start()

        let control = try Self.provision(Self.asUser(agent) + [rootCopy, Self.raceScript, d.agentSocket, "plain"])
        #expect(control.status.code == .ok, "the root-owned binary: \(control.status)")
        let owned = try Self.provision(Self.asUser(agent) + [agentCopy, Self.raceScript, d.agentSocket, "plain"])
        #expect(owned.status.code == .unauthenticated, "a binary its agent owns: \(owned.status)")
        #expect(d.waitForLog("exe_sha256 not taken: the executable is writable by its owner, uid \(agent.uid)"))

        // The rewrite itself, as the agent: new bytes, the old mtime.
        let stamp = try run(["/usr/bin/stat", "-c", "%y", agentCopy]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let rewrite = try run(Self.asUser(agent) + ["/bin/sh", "-c", "printf 'X' | dd of=\(agentCopy) bs=1 seek=$(( $(stat -c %s \(agentCopy)) - 1 )) conv=notrunc 2>/dev/null && touch -d '\(stamp)' \(agentCopy)"])
        #expect(rewrite.status == 0, "\(rewrite.stderr)")
        let rewritten = try Self.provision(Self.asUser(agent) + [agentCopy, Self.raceScript, d.agentSocket, "plain"])
        #expect(rewritten.status.code == .unauthenticated && rewritten.provision.lease.secret.isEmpty, "\(rewritten.status)")
    }

    /// The cgroup v2 hierarchy, where this host has one (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid host).
    static let cgroupRoot = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"].first { access($0 + "/cgroup.procs", W_OK) == 0 }

    /// Finding 4: the unit used to be the last `.service` component of the cgroup path, so
    /// `…/user@UID.service/releaser.service` — a cgroup in the subtree systemd delegates to
    /// the user — passed as the system unit releaser.service. The whole path is matched now.
    @Test(.enabled(if: cgroupRoot != nil, "needs a writable cgroup v2 hierarchy (/sys/fs/cgroup or /sys/fs/cgroup/unified)"))
    func unitIsTheWholeCgroupPath() throws {
        let agent = E2EUsers.agent!
        let root = try #require(Self.cgroupRoot)
        let system = root + "/system.slice/releaser.service"
        let manager = root + "/user.slice/user-\(agent.uid).slice/user@\(agent.uid).service"
        let delegated = manager + "/releaser.service"
        for dir in [system, delegated] { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        #expect(try run(["/bin/chown", "-R", "\(agent.uid):\(agent.gid)", manager]).status == 0)  // what Delegate= does for user@.service
        defer {
            for dir in [delegated, manager, root + "/user.slice/user-\(agent.uid).slice", root + "/user.slice", system, root + "/system.slice"] { rmdir(dir) }
        }
        let d = try DaemonProcess(policy: Self.policy("  releaser: { uid: \(agent.uid), unit: releaser.service, grants: [github:read_repo] }"))
        defer { d.cleanup() }
        try d.start()

        func provision(inCgroup dir: String) throws -> Lanyard_V1_Response {
            try Self.provision(["/bin/sh", "-c", "echo $$ > \(dir)/cgroup.procs && exec " + Self.asUser(agent).joined(separator: " ")
                                + " \(try #require(Self.python)) \(Self.raceScript) \(d.agentSocket) plain"])
        }
        let real = try provision(inCgroup: system)
        #expect(real.status.code == .ok && real.provision.lease.secret.hasPrefix("lyt_"), "the real unit: \(real.status)")
        let impostor = try provision(inCgroup: delegated)
        #expect(impostor.status.code == .unauthenticated, "a same-named cgroup in the user's delegated subtree: \(impostor.status)")
        #expect(impostor.provision.lease.secret.isEmpty)
    }

    /// Acceptance 2: lanyardd refuses a policy pinning a binary its agent can rewrite
    /// (file:line: path: what to do), and warns — at load and in `policy validate` — about
    /// two agents on one uid told apart only by what that uid's code can defeat.
    @Test func policiesThatRelyOnDefeatableSelectorsAreRefusedOrWarnedAbout() throws {
        let agent = E2EUsers.agent!
        let scratch = TestSupport.tempDir("exe")
        defer { TestSupport.remove(scratch) }
        let owned = scratch + "/tool"
        #expect(try run(["/bin/cp", "/bin/true", owned]).status == 0)
        #expect(chown(owned, agent.uid, agent.gid) == 0)

        let refused = try DaemonProcess(policy: Self.policy("  a:\n    uid: \(agent.uid)\n    exe: \(owned)"))
        defer { refused.cleanup() }
        #expect(throws: HarnessError.self) { try refused.start() }
        let validated = try refused.ctl(["policy", "validate", refused.policyPath])
        #expect(validated.status == 1)
        #expect(validated.stderr.contains("\(refused.policyPath):9: agents.a.exe: \(owned) is writable by its owner, uid \(agent.uid)"), "\(validated.stderr)")

        let twins = Self.policy("  a: { uid: \(agent.uid), exe: /usr/bin/perl }\n  b: { uid: \(agent.uid), exe: \(try #require(Self.python)) }")
        let warned = try DaemonProcess(policy: twins)
        defer { warned.cleanup() }
        try warned.start()
        #expect(warned.waitForLog("told apart from it only by exe"))
        let shown = try warned.ctl(["policy", "validate", warned.policyPath])
        #expect(shown.status == 0 && shown.stderr.contains("warning: \(warned.policyPath):8: agents.b: runs as uid \(agent.uid)"), "\(shown.stderr)")
    }

    /// Security II, finding 8: hashing an exe_sha256 peer's executable ran on the event loop,
    /// unbounded — a sparse 4 GB copy of a binary stalled every connection for seconds. A
    /// file over --max-exe-hash-bytes is not hashed at all now (logged). Measured: another
    /// agent's Hello p99 stays under a second during the attack.
    @Test func aHugeExecutableDoesNotStallOtherAgents() throws {
        let p99 = try Self.victimHelloP99(attackerExeBytes: "4G", flags: [], expectLog: "exe_sha256 not taken: the executable is larger than --max-exe-hash-bytes")
        #expect(p99 < .seconds(TestSupport.latencyBound(1)), "victim Hello p99 \(p99) during the attack")
    }

    /// The same attack under a bound raised above the file: it is hashed — on a thread pool,
    /// one at a time for the attacker's uid — and the other agent is still served at once.
    @Test func hashingRunsOffTheEventLoop() throws {
        let p99 = try Self.victimHelloP99(attackerExeBytes: "1G", flags: ["--max-exe-hash-bytes", "\(2 << 30)"], expectLog: nil)
        #expect(p99 < .seconds(TestSupport.latencyBound(1)), "victim Hello p99 \(p99) while a 1 GB executable is hashed")
    }

    /// Runs 8 attackers whose exe is a sparse copy of python of `attackerExeBytes`, bound
    /// by exe_sha256 (of the real python), and measures another agent's Hello all through
    /// the attack: the p99 (nearest rank, so of 40 Hellos the slowest — one stalled Hello
    /// spans the whole attack). The real python, under the bound, authenticates after.
    static func victimHelloP99(attackerExeBytes: String, flags: [String], expectLog: String?) throws -> Duration {
        let victim = E2EUsers.agent!
        let attacker = try #require(TestSupport.user("lanyard-test-c"))
        let python = try #require(Self.python)
        let scratch = TestSupport.tempDir("exe")
        defer { TestSupport.remove(scratch) }
        let huge = scratch + "/python"
        #expect(try run(["/bin/cp", python, huge]).status == 0)
        #expect(try run(["/usr/bin/truncate", "-s", attackerExeBytes, huge]).status == 0)
        let d = try DaemonProcess(policy: Self.policy("""
              victim: { uid: \(victim.uid), grants: [github:read_repo] }
              hashed: { uid: \(attacker.uid), exe_sha256: \(try Self.sha256(python)), grants: [github:read_repo] }
            """))
        defer { d.cleanup() }
        d.extraArguments = flags
        try d.start()

        var hello = Lanyard_V1_Request()
        hello.id = 1
        hello.hello = .init()
        let helloFrame = TestSupport.frame(try hello.serializedBytes())
        setenv("REQ", helloFrame.map { String(format: "%02x", $0) }.joined(), 1)
        setenv("HELLO", helloFrame.map { String(format: "%02x", $0) }.joined(), 1)
        defer { unsetenv("REQ"); unsetenv("HELLO") }
        let attackers = try (0..<8).map { _ in try SpawnedProcess(Self.asUser(attacker) + [huge, Self.raceScript, d.agentSocket, "plain"]) }
        defer { for a in attackers { a.stop() } }

        // Hellos all through the attack: until every attacker has its answer (40 at least).
        var latencies: [Duration] = []
        while latencies.count < 40 || (attackers.contains { !$0.hasExited } && latencies.count < 5_000) {
            let started = ContinuousClock.now
            let fd = TestSupport.connect(d.agentSocket, asUID: victim.uid, gid: victim.gid)
            try #require(fd >= 0)
            TestSupport.writeAll(fd, helloFrame)
            let answer = TestSupport.readFrame(fd)
            close(fd)
            latencies.append(ContinuousClock.now - started)
            #expect(answer != nil)
        }
        for a in attackers { #expect(a.readStderr(until: "done") != nil, "an attacker got no answer") }
        if let expectLog { #expect(d.waitForLog(expectLog)) }

        // Control: the real binary, under the bound, is hashed and authenticates.
        let real = try Self.provision(Self.asUser(attacker) + [python, Self.raceScript, d.agentSocket, "plain"])
        #expect(real.status.code == .ok, "the real binary: \(real.status)")
        return latencies.sorted()[Int((Double(latencies.count) * 0.99).rounded(.up)) - 1]
    }
}
}  // extension LoadSensitive
