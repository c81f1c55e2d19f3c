import LanyardCore
import Testing

private let base = """
trust_domain: t.internal
approvers: { uids: [5000] }
services:
  github: { kind: opaque }
  deploy: { kind: jwt }
capabilities:
  github:read_repo:  { risk: low }
  github:push:       { risk: medium }
  deploy:production: { risk: high }
  github:delete:     { risk: high }
agents:
  coder:
    uid: 1001
    grants:
      - github:read_repo
      - github:push
      - deploy:production
      - { capability: github:delete, risk: high }
  raised:
    uid: 1002
    grants:
      - { capability: github:read_repo, risk: medium }
      - { capability: github:push, risk: high }

"""

private func policy(_ text: String = base) throws -> Policy {
    try PolicyParser.parse(text, file: "policy.yaml")
}

struct AuthorizerTests {
    /// capability × risk × grant → decision, with no socket.
    @Test(arguments: [
        ("coder", "github:read_repo", Decision.allow, RiskLevel?.some(.low)),
        ("coder", "github:push", .pending, .medium),
        ("coder", "deploy:production", .pending, .high),
        ("coder", "github:delete", .pending, .high),
        ("coder", "github:unknown", .deny, nil),          // not in the catalog
        ("raised", "github:read_repo", .pending, .medium), // a grant raised the risk
        ("raised", "github:push", .pending, .high),
        ("raised", "deploy:production", .deny, .high),     // catalogued, not granted
        ("raised", "github:delete", .deny, .high),
    ])
    func decision(agent: String, capability: String, expected: Decision, risk: RiskLevel?) throws {
        let p = try policy()
        let a = try #require(p.agent(named: agent))
        let v = Authorizer.decide(try Capability(parsing: capability), for: a, in: p)
        #expect(v.decision == expected)
        #expect(v.risk == risk)
        #expect(!v.reason.isEmpty)
    }

    @Test func highIsDeniedWithoutApprovers() throws {
        let p = try policy(base.replacingOccurrences(of: "approvers: { uids: [5000] }\n", with: ""))
        let a = try #require(p.agent(named: "coder"))
        let v = Authorizer.decide(try Capability(parsing: "deploy:production"), for: a, in: p)
        #expect(v.decision == .deny)
        #expect(v.reason.contains("no approvers"))
        // MEDIUM still waits for a human (who will be configured later).
        #expect(Authorizer.decide(try Capability(parsing: "github:push"), for: a, in: p).decision == .pending)
    }

    @Test func scopeTakesTheWorstRouteAndAnyDenialWins() throws {
        let p = try policy()
        let coder = try #require(p.agent(named: "coder"))
        let caps = try ["github:read_repo", "github:push"].map { try Capability(parsing: $0) }
        #expect(Authorizer.decide(caps, for: coder, in: p).decision == .pending)
        let withUnknown = caps + [try Capability(parsing: "github:nope")]
        #expect(Authorizer.decide(withUnknown, for: coder, in: p).decision == .deny)
        #expect(Authorizer.decide([], for: coder, in: p).decision == .deny)
    }

    @Test func selectorsBindProcesses() throws {
        let p = try policy("""
        trust_domain: t.internal
        services: { s: { kind: opaque } }
        capabilities: { "s:read": { risk: low } }
        agents:
          py: { uid: 1001, exe: /usr/bin/python3, grants: [s:read] }
          sh: { uid: 1001, exe: /bin/sh, unit: a.service }
          g:  { uid: 1003, gid: 50 }
        """)
        // exe selectors match the file that runs (device, inode), not the path the peer's mount namespace shows.
        let files = ["/usr/bin/python3": FileID(device: 8, inode: 100), "/bin/sh": FileID(device: 8, inode: 200)]
        let python = FileID(device: 8, inode: 100), sh = FileID(device: 8, inode: 200), perl = FileID(device: 8, inode: 300)
        func agent(_ peer: PeerFacts) -> String? { p.agent(matching: peer, exeFile: { files[$0] })?.name }
        #expect(agent(PeerFacts(uid: 1001, gid: 1, pid: 9, exeFile: python)) == "py")
        #expect(agent(PeerFacts(uid: 1001, gid: 1, pid: 9, exe: "/usr/bin/python3", exeFile: perl)) == nil)
        #expect(agent(PeerFacts(uid: 1001, gid: 1, pid: 9, exeFile: sh, cgroup: "/system.slice/a.service")) == "sh")
        #expect(agent(PeerFacts(uid: 1001, gid: 1, pid: 9, exeFile: sh, cgroup: "/system.slice/b.service")) == nil)
        #expect(agent(PeerFacts(uid: 1001, gid: 1, pid: 9, exeFile: perl)) == nil)
        #expect(agent(PeerFacts(uid: 1002, gid: 1, pid: 9, exeFile: python)) == nil)
        #expect(agent(PeerFacts(uid: 1003, gid: 50, pid: 9)) == "g")
        #expect(agent(PeerFacts(uid: 1003, gid: 51, pid: 9)) == nil)
        // A peer in a user namespace of its own matches no exe-pinned agent; uid/gid/unit ones still.
        #expect(agent(PeerFacts(uid: 1001, gid: 1, pid: 9, exeFile: python, inForeignUserNamespace: true)) == nil)
        #expect(agent(PeerFacts(uid: 1001, gid: 1, pid: 9, exeFile: sh, cgroup: "/system.slice/a.service", inForeignUserNamespace: true)) == nil)
        #expect(agent(PeerFacts(uid: 1003, gid: 50, pid: 9, inForeignUserNamespace: true)) == "g")
        // The path no longer leads to the file (replaced): no match.
        #expect(p.agent(matching: PeerFacts(uid: 1001, gid: 1, pid: 9, exeFile: python), exeFile: { _ in nil }) == nil)
    }

    /// Security I finding 16's sweep: a unit matches the kernel's cgroup bytes, not a
    /// canonically equivalent spelling (Swift's `==` and `hasPrefix` hold KELVIN SIGN = K).
    /// (`exe` matches the file itself, by device and inode: no spelling is compared.)
    @Test func unitsMatchTheirCgroupByteForByte() throws {
        let p = try policy("""
        trust_domain: t.internal
        services: { s: { kind: opaque } }
        capabilities: { "s:read": { risk: low } }
        agents:
          unit: { uid: 1002, unit: "Kit.service", grants: [s:read] }
          user: { uid: 1003, user_unit: "Kit.service", grants: [s:read] }
        """)
        let userManager = "/user.slice/user-1003.slice/user@1003.service/app.slice/"
        #expect(p.agent(matching: PeerFacts(uid: 1002, gid: 1, pid: 9, cgroup: "/system.slice/Kit.service"), exeFile: { _ in nil })?.name == "unit")
        #expect(p.agent(matching: PeerFacts(uid: 1002, gid: 1, pid: 9, cgroup: "/system.slice/\u{212A}it.service"), exeFile: { _ in nil }) == nil)
        #expect(p.agent(matching: PeerFacts(uid: 1003, gid: 1, pid: 9, cgroup: userManager + "Kit.service"), exeFile: { _ in nil })?.name == "user")
        #expect(p.agent(matching: PeerFacts(uid: 1003, gid: 1, pid: 9, cgroup: userManager + "\u{212A}it.service"), exeFile: { _ in nil }) == nil)
    }

    @Test(arguments: ["a:b", "a:b:c", "a:b:c:d", "git-hub:read_repo", "s3:get_object"])
    func validCapabilities(_ name: String) throws {
        #expect(try Capability(parsing: name).name == name)
    }

    @Test(arguments: ["a", "a:b:c:d:e", "A:b", "a::b", ":a", "a:", "a:*", "*", "a:b c", "a:é"])
    func invalidCapabilities(_ name: String) {
        #expect(throws: CapabilityError.self) { try Capability(parsing: name) }
    }

    @Test func approvalDigestInputIsCanonical() throws {
        let caps = try ["b:x", "a:y"].map { try Capability(parsing: $0) }
        let s1 = ApprovalSubject(agentID: "id", capabilities: caps, resource: "r", args: ["k": "v", "a": "b"], amount: "")
        let s2 = ApprovalSubject(agentID: "id", capabilities: caps.reversed(), resource: "r", args: ["a": "b", "k": "v"], amount: "")
        #expect(s1.canonicalBytes == s2.canonicalBytes)
        var s3 = s1
        s3.args["k"] = "w"
        #expect(s1.canonicalBytes != s3.canonicalBytes)
        // Length prefixes keep ("ab","c") and ("a","bc") apart.
        let x = ApprovalSubject(agentID: "ab", capabilities: [], resource: "c", args: [:], amount: "")
        let y = ApprovalSubject(agentID: "a", capabilities: [], resource: "bc", args: [:], amount: "")
        #expect(x.canonicalBytes != y.canonicalBytes)
    }

    /// `unit` is a system unit by its whole cgroup path: a cgroup named like it in a user's
    /// delegated subtree is not it. `user_unit` says a user unit explicitly.
    @Test func unitsMatchTheWholeCgroupPath() throws {
        let p = try policy("""
        trust_domain: t.internal
        services: { s: { kind: opaque } }
        capabilities: { "s:read": { risk: low } }
        agents:
          releaser: { uid: 1001, unit: releaser.service, grants: [s:read] }
          sliced:   { uid: 1002, unit: /agents.slice/worker.service }
          mine:     { uid: 1003, user_unit: tool.service }
        """)
        func agent(_ uid: UInt32, _ cgroup: String) -> String? { p.agent(matching: PeerFacts(uid: uid, gid: 1, pid: 9, cgroup: cgroup), exeFile: { _ in nil })?.name }
        #expect(agent(1001, "/system.slice/releaser.service") == "releaser")
        #expect(agent(1001, "/system.slice/releaser.service/payload") == "releaser")  // Delegate= subgroups
        #expect(agent(1001, "/user.slice/user-1001.slice/user@1001.service/releaser.service") == nil)
        #expect(agent(1001, "/user.slice/user-1001.slice/user@1001.service/app.slice/releaser.service") == nil)
        #expect(agent(1001, "/system.slice/releaser.service2") == nil)
        #expect(agent(1002, "/agents.slice/worker.service") == "sliced")
        #expect(agent(1002, "/system.slice/worker.service") == nil)
        #expect(agent(1003, "/user.slice/user-1003.slice/user@1003.service/app.slice/tool.service") == "mine")
        #expect(agent(1003, "/system.slice/tool.service") == nil)
        #expect(agent(1003, "/user.slice/user-1004.slice/user@1004.service/app.slice/tool.service") == nil)
        #expect(p.agent(matching: PeerFacts(uid: 1001, gid: 1, pid: 9, cgroup: "/system.slice/releaser.service", inForeignUserNamespace: true),
                        exeFile: { _ in nil })?.name == "releaser")
    }
}
