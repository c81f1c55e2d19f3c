import Foundation
import LanyardClient
import LanyardTestSupport
import LanyardWire
import Testing

@Suite(.serialized)
struct CredentialEndToEndTests {
    /// Acceptance 5: each unsafe master key stops the daemon with its own message.
    @Test func unsafeMasterKeysStopTheDaemon() throws {
        let d = try DaemonProcess(policy: E2EUsers.policy())
        defer { d.cleanup() }
        let key = d.keyPath
        func start(_ keyFile: String?) throws -> RunResult {
            var args = d.arguments
            let i = args.firstIndex(of: "--master-key-file")!
            args.removeSubrange(i...(i + 1))
            if let keyFile { args += ["--master-key-file", keyFile] }
            return try run([Bin.lanyardd] + args, env: ["CREDENTIALS_DIRECTORY": ""])
        }
        func expectRefusal(_ r: RunResult, _ phrase: String, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(r.status != 0, sourceLocation: sourceLocation)
            #expect(r.stderr.hasPrefix("lanyardd: ") && r.stderr.contains(phrase), "stderr: \(r.stderr)", sourceLocation: sourceLocation)
            #expect(r.stderr.split(separator: "\n").count == 1, sourceLocation: sourceLocation)
        }
        expectRefusal(try start(nil), "no master key")
        expectRefusal(try start(d.dir + "/absent.key"), "cannot be read")

        let short = d.dir + "/short.key"
        _ = FileManager.default.createFile(atPath: short, contents: Data(repeating: 7, count: 16), attributes: [.posixPermissions: 0o600])
        expectRefusal(try start(short), "must be exactly 32 bytes")

        chmod(key, 0o640)
        expectRefusal(try start(key), "accessible to group or others")
        chmod(key, 0o600)

        let link = d.dir + "/link.key"
        symlink(key, link)
        expectRefusal(try start(link), "is a symlink")

        if TestSupport.isRoot, let other = E2EUsers.agent {
            chown(key, other.uid, other.gid)
            expectRefusal(try start(key), "is owned by uid \(other.uid)")
            chown(key, 0, 0)
        }
        try d.start()  // and the good key works
    }

    /// Acceptance 3: no static value and no issued token anywhere in the state dir
    /// (database, WAL, journal), the daemon's log, or the audit export.
    @Test func noSecretAtRestInLogsOrAudit() throws {
        let d = try DaemonProcess(policy: E2EUsers.policy())
        defer { d.cleanup() }
        try d.start()
        let agent = E2EUsers.agent!
        let value = "sk-static-\(UUID().uuidString)"
        #expect(try d.ctl(["secret", "put", "openai"], stdin: value + "\n").status == 0)
        let got = try d.ctl(["provision", "openai", "--scope", "openai:chat"], as: agent)
        #expect(got.status == 0 && got.stdout == value + "\n")
        var tokens: [String] = []
        for _ in 0..<5 {
            let r = try d.ctl(["provision", "github", "--scope", "github:read_repo", "--ttl", "60"], as: agent)
            #expect(r.status == 0)
            tokens.append(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        #expect(tokens.allSatisfy { $0.hasPrefix("lyt_") })
        let export = try d.ctl(["audit", "export"]).stdout
        #expect(export.contains("\"event\":\"provision\""))
        #expect(try d.placesHolding([value] + tokens) == [])
    }

    /// Acceptance 6: kill -9 right after 100 acknowledged provisions and revokes; after the
    /// restart every one is exactly as acknowledged.
    @Test func killNineAfterAHundredAcknowledgedOperations() async throws {
        let d = try DaemonProcess(policy: E2EUsers.policy())
        defer { d.cleanup() }
        try d.start()
        let agent = E2EUsers.agent!
        let client = LanyardClient(connectedSocket: TestSupport.connect(d.agentSocket, asUID: agent.uid, gid: agent.gid))
        let leases = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<100 {
                group.addTask {
                    var r = Lanyard_V1_Request()
                    r.provision = .with {
                        $0.service = "github"
                        $0.scope = ["github:read_repo"]
                    }
                    return try await client.call(r).provision.lease.leaseID
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(Set(leases).count == 100)
        let revoked = Set(leases.prefix(40))
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for id in revoked {
                group.addTask {
                    var r = Lanyard_V1_Request()
                    r.revoke = .with { $0.leaseID = id }
                    return try await client.call(r).revoke.revoked
                }
            }
            for try await ok in group { #expect(ok) }
        }
        d.kill9()  // right after the last acknowledgement
        await client.close()

        try d.start()
        let listed = try d.ctl(["leases", "list", "--json"])
        let active = try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as! [[String: Any]]
        #expect(Set(active.compactMap { $0["lease_id"] as? String }) == Set(leases).subtracting(revoked))
        let verify = try d.ctl(["audit", "verify", "--json"])
        #expect(verify.status == 0 && verify.stdout.contains("\"records\":140"))
    }
}
