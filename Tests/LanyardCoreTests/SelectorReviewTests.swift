import LanyardCore
import Testing

/// Acceptance 2 of Security I: a policy that relies on what code running as the agent's
/// uid can defeat is refused (file:line: path: what to do) or warned about.
struct SelectorReviewTests {
    struct FakeHost: HostFacts {
        var files: [String: FileFacts] = [:]
        var links: [String: String] = [:]
        var groups: [UInt32: Set<UInt32>] = [:]
        var ptraceScope = 1
        func file(_ path: String) -> FileFacts? { files[links[path] ?? path] }
        func realPath(_ path: String) -> String? { links[path] ?? path }
        func groups(ofUID uid: UInt32) -> Set<UInt32> { groups[uid] ?? [] }
    }

    static func entry(_ inode: UInt64, owner: UInt32 = 0, mode: UInt32 = 0o755, directory: Bool = false) -> FileFacts {
        FileFacts(id: FileID(device: 1, inode: inode), owner: owner, mode: mode, isRegular: !directory, isDirectory: directory)
    }

    static let rootDirs: [String: FileFacts] = ["/": entry(1, directory: true), "/usr": entry(2, directory: true),
                                                 "/usr/bin": entry(3, directory: true), "/opt": entry(4, directory: true)]

    static func policy(_ agents: String) throws -> Policy {
        try PolicyParser.parse("""
        trust_domain: t.internal
        services: { s: { kind: opaque } }
        capabilities: { "s:read": { risk: low } }
        agents:
        \(agents)
        """, file: "p.yaml")
    }

    @Test func aPinnedExeOthersCanWriteIsRefusedWithItsLine() throws {
        var host = FakeHost(files: Self.rootDirs)
        host.files["/usr/bin/tool"] = Self.entry(10)
        host.files["/opt/mine"] = Self.entry(11, owner: 1001)
        host.files["/opt/shared"] = Self.entry(12, mode: 0o775)
        host.files["/opt/open"] = Self.entry(13, directory: true)
        host.files["/opt/open"]?.mode = 0o777
        host.files["/opt/open/tool"] = Self.entry(14)
        host.files["/tmp"] = Self.entry(15, mode: 0o1777, directory: true)
        host.files["/tmp/tool"] = Self.entry(16)
        host.files["/usr/bin/link"] = Self.entry(17)
        host.links["/usr/bin/py"] = "/opt/mine"

        let ok = try Self.policy("  a: { uid: 1001, exe: /usr/bin/tool }\n  b: { uid: 1002, exe: /tmp/tool }")
        #expect(SelectorReview.review(ok, file: "p.yaml", host: host).errors.isEmpty)  // controls: root's file; root's file in sticky /tmp

        for (exe, phrase) in [("/opt/mine", "writable by its owner, uid 1001"), ("/opt/shared", "writable by its group"),
                              ("/opt/open/tool", "directory /opt/open is writable by every user"), ("/usr/bin/py", "/opt/mine is writable"),
                              ("/usr/bin/missing", "not an existing regular file")] {
            let p = try Self.policy("  a:\n    uid: 1001\n    exe: \(exe)")
            let errors = SelectorReview.review(p, file: "p.yaml", host: host).errors
            #expect(errors.count == 1)
            #expect(errors.first?.description.hasPrefix("p.yaml:7: agents.a.exe: ") == true, "\(errors)")
            #expect(errors.first?.message.contains(phrase) == true, "\(exe): \(errors)")
        }
    }

    @Test func agentsOnOneUIDToldApartOnlyByWhatThatUIDCanDefeatAreWarnedAbout() throws {
        var host = FakeHost(files: Self.rootDirs)
        host.files["/usr/bin/a"] = Self.entry(20)
        host.files["/usr/bin/b"] = Self.entry(21)
        host.groups[1001] = [1001, 50]

        func warnings(_ agents: String, _ host: FakeHost) throws -> [PolicyError] {
            SelectorReview.review(try Self.policy(agents), file: "p.yaml", host: host).warnings
        }
        let byExe = try warnings("  a: { uid: 1001, exe: /usr/bin/a }\n  b: { uid: 1001, exe: /usr/bin/b }", host)
        #expect(byExe.count == 1 && byExe[0].path == "agents.b" && byExe[0].message.contains("only by exe"), "\(byExe)")
        let byHash = try warnings("  a: { uid: 1001, exe_sha256: \(String(repeating: "a", count: 64)) }\n  b: { uid: 1001, exe_sha256: \(String(repeating: "b", count: 64)) }", host)
        #expect(byHash.count == 1 && byHash[0].message.contains("exe_sha256"))
        let byJoinedGroup = try warnings("  a: { uid: 1001, gid: 50 }\n  b: { uid: 1001, gid: 60 }", host)
        #expect(byJoinedGroup.count == 1 && byJoinedGroup[0].message.contains("newgrp"))
        let userUnit = try warnings("  a: { uid: 1001, user_unit: a.service }\n  b: { uid: 1001, user_unit: b.service }", host)
        #expect(userUnit.count == 3)  // each user unit, and the pair

        // Controls: what the uid's code cannot change tells agents apart without a warning.
        #expect(try warnings("  a: { uid: 1001, gid: 70 }\n  b: { uid: 1001, gid: 60 }", host).isEmpty)
        #expect(try warnings("  a: { uid: 1001, unit: a.service }\n  b: { uid: 1001, unit: b.service }", host).isEmpty)
        #expect(try warnings("  a: { uid: 1001, exe: /usr/bin/a, unit: a.service }\n  b: { uid: 1001, exe: /usr/bin/b, unit: b.service }", host).isEmpty)
        #expect(try warnings("  a: { uid: 1001, exe: /usr/bin/a }\n  b: { uid: 1002, exe: /usr/bin/b }", host).isEmpty)
        // Without Yama's restriction the uid's code can trace the unit's processes.
        host.ptraceScope = 0
        let traced = try warnings("  a: { uid: 1001, unit: a.service }\n  b: { uid: 1001, unit: b.service }", host)
        #expect(traced.count == 1 && traced[0].message.contains("ptrace_scope"))
    }
}
