import LanyardCore
import Testing

/// `service_units:` (systemd's LoadCredential= provider) and the peer address systemd
/// connects from.
struct ServiceUnitsTests {
    static func address(_ s: String) -> [UInt8] { [0] + Array(s.utf8) }

    @Test func parsesSystemdsAddress() {
        let parsed = CredentialRequestAddress.parse(Self.address("dd5768db39b60707/unit/github-sync.service/github"))
        #expect(parsed?.unit == "github-sync.service" && parsed?.id == "github")
        #expect(CredentialRequestAddress.parse(Self.address("0a/unit/getty@tty1.service/a.b-c_d@e"))?.unit == "getty@tty1.service")
    }

    /// Anything but exactly `\0RANDOM/unit/UNIT.service/ID` is no request.
    @Test(arguments: [
        "",                                          // no path at all
        "dd57/unit/github-sync.service",             // no id
        "dd57/unit/github-sync.service/github/x",    // one part too many
        "dd57/units/github-sync.service/github",     // not "unit"
        "/unit/github-sync.service/github",          // no random part
        "dd-57/unit/github-sync.service/github",     // random part not alphanumeric
        "dd57/unit/github-sync.socket/github",       // not a service
        "dd57/unit/.service/github",                 // empty unit stem
        "dd57/unit/git hub.service/github",          // space in the unit
        "dd57/unit/github-sync.service/",            // empty id
        "dd57/unit/github-sync.service/..",          // a path, not an id
        "dd57/unit/github-sync.service/gi\u{1b}[2Jt", // a terminal escape
        "dd57/unit/github-sync.service/" + String(repeating: "a", count: 65),  // id too long
    ])
    func rejectsOtherAddresses(_ text: String) {
        #expect(CredentialRequestAddress.parse(Self.address(text)) == nil)
    }

    @Test func rejectsPathnameAndOversizedAddresses() {
        #expect(CredentialRequestAddress.parse(Array("/run/x/unit/a.service/b".utf8)) == nil)  // not abstract
        #expect(CredentialRequestAddress.parse([0]) == nil)
        #expect(CredentialRequestAddress.parse(Self.address("a/unit/" + String(repeating: "b", count: 100) + ".service/c")) == nil)
    }

    static let header = """
    trust_domain: t.internal
    services:
      github: { kind: opaque, max_ttl_seconds: 600 }
      bound: { kind: opaque, bind_to_process: true }
    capabilities:
      github:read_repo: { risk: low }
      github:push: { risk: medium }
      bound:use: { risk: low }
    agents:
      sync: { uid: 2004, grants: [github:read_repo, github:push, bound:use] }

    """

    @Test func aValidSectionMapsUnitAndIDToAGrant() throws {
        let policy = try PolicyParser.parse(Self.header + """
        service_units:
          github-sync.service:
            github: { agent: sync, capability: github:read_repo, ttl_seconds: 300 }
        """, file: "p.yaml")
        let entry = try #require(policy.serviceUnitCredential(unit: "github-sync.service", id: "github"))
        #expect(entry.agent == "sync" && entry.capability.name == "github:read_repo" && entry.ttlSeconds == 300 && entry.line == 13)
        #expect(policy.serviceUnitCredential(unit: "other.service", id: "github") == nil)
        #expect(policy.serviceUnitCredential(unit: "github-sync.service", id: "other") == nil)
    }

    /// Each invalid entry, the field path it must name, a phrase of its message, and its line.
    @Test(arguments: [
        ("  sync.socket:\n    github: { agent: sync, capability: github:read_repo }\n", "service_units.sync.socket", "not a service unit name", 12),
        ("  s.service:\n    \"a/b\": { agent: sync, capability: github:read_repo }\n", "service_units.s.service.a/b", "not a credential id", 13),
        ("  s.service:\n    github: { capability: github:read_repo }\n", "service_units.s.service.github.agent", "is required", 13),
        ("  s.service:\n    github: { agent: nobody, capability: github:read_repo }\n", "service_units.s.service.github.agent", "not declared under agents", 13),
        ("  s.service:\n    github: { agent: sync, capability: github:admin }\n", "service_units.s.service.github.capability", "not granted", 13),
        ("  s.service:\n    github: { agent: sync, capability: github:push }\n", "service_units.s.service.github.capability", "low-risk grant", 13),
        ("  s.service:\n    github: { agent: sync, capability: bound:use }\n", "service_units.s.service.github.capability", "bind_to_process", 13),
        ("  s.service:\n    github: { agent: sync, capability: github:read_repo, ttl_seconds: 601 }\n", "service_units.s.service.github.ttl_seconds", "max_ttl_seconds (600)", 13),
        ("  s.service:\n    github: { agent: sync, capability: github:read_repo, secret: x }\n", "service_units.s.service.github.secret", "unknown field", 13),
        ("  s@.service:\n    github: { agent: sync, capability: github:read_repo }\n", "service_units.s@.service", "is a template", 12),
    ])
    func invalidEntriesAreLocated(_ entry: String, _ path: String, _ phrase: String, _ line: Int) {
        do {
            _ = try PolicyParser.parse(Self.header + "service_units:\n" + entry, file: "p.yaml")
            Issue.record("accepted: \(entry)")
        } catch {
            #expect(error.path == path, "\(error)")
            #expect(error.message.contains(phrase), "\(error)")
            #expect(error.line == line, "\(error)")
        }
    }

    /// The unit's own cgroup, as systemd makes it: only slices above it, no sub-cgroup.
    @Test(arguments: [
        "/system.slice/github-sync.service",
        "/github-sync.service",                              // a unit in the root slice (-.slice)
        "/system.slice/app.slice/github-sync.service",       // a nested slice
    ])
    func theUnitsOwnCgroupIsAccepted(_ cgroup: String) {
        let request = CredentialRequestAddress(unit: "github-sync.service", id: "github")
        #expect(request.isUnitsOwnCgroup(cgroup))
    }

    /// Anything a process inside some unit's subtree could name, or that is not this unit, is refused.
    @Test(arguments: [
        "/system.slice/other.service/github-sync.service",   // a Delegate= unit's subtree
        "/machine.slice/machine-x.scope/github-sync.service", // a container's cgroup root
        "/user.slice/user-0.slice/user@0.service/app.slice/github-sync.service", // systemd-run --user
        "/user.slice/user-0.slice/user@0.service/github-sync.service",
        "/system.slice/github-sync.service/sub",             // a sub-cgroup of the unit
        "/system.slice/github-sync.service/github-sync.service",
        "/system.slice/other.service",                       // another unit
        "/system.slice/github-sync.serviceX",
        "/system.slice/GITHUB-SYNC.service",
        "/system.slice/github\u{2010}sync.service",          // a look-alike hyphen
        "/system.slice//github-sync.service",                 // an empty component
        "/.slice/github-sync.service",                        // a slice with no name
        "system.slice/github-sync.service",                   // not absolute
        "/",
        "",
    ])
    func otherCgroupsAreRefused(_ cgroup: String) {
        let request = CredentialRequestAddress(unit: "github-sync.service", id: "github")
        #expect(!request.isUnitsOwnCgroup(cgroup))
    }

    @Test func anUnknownCgroupIsRefused() {
        #expect(!CredentialRequestAddress(unit: "a.service", id: "b").isUnitsOwnCgroup(nil))
    }
}
