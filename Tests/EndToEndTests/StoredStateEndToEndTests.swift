import Foundation
import LanyardTestSupport
import Testing

/// Someone with the state directory but not the master key (issue 14, findings 8–11):
/// the daemon is stopped, its database edited with the real sqlite3 CLI (or the checkpoint
/// file replaced), and the restarted daemon must fail closed. Each test also runs the
/// legitimate path across the same restart.
@Suite(.serialized)
struct StoredStateEndToEndTests {
    static let approver: (uid: UInt32, gid: UInt32)? = TestSupport.isRoot ? TestSupport.user("lanyard-test-b") : nil

    static func policy(approver: UInt32? = nil) -> String {
        var p = E2EUsers.policy().replacingOccurrences(of: "  github:admin:     { risk: high }",
                                                        with: "  github:admin:     { risk: high }\n  github:introspect: { risk: low }")
            .replacingOccurrences(of: "openai:chat]", with: "openai:chat, github:admin, github:introspect]")
        if let approver { p = p.replacingOccurrences(of: "services:", with: "approvers: { uids: [\(approver)] }\nservices:") }
        return p
    }

    static func approvalID(_ r: RunResult) throws -> String {
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        return try #require(json?["approval_id"] as? String, "no approval id in \(r)")
    }

    /// Finding 8: a pending HIGH approval marked approved with invented approvers is not
    /// honoured, nor is an invented standing approval; a real approval survives the restart.
    @Test(.enabled(if: TestSupport.isRoot, "needs root to create agent and approver uids"))
    func anApprovalEditedAtRestIsNotHonoured() throws {
        let approver = try #require(Self.approver)
        let d = try DaemonProcess(policy: Self.policy(approver: approver.uid))
        defer { d.cleanup() }
        try d.start()
        let agent = E2EUsers.agent!
        let forged = try Self.approvalID(try d.ctl(["provision", "github", "--scope", "github:admin", "--json"], as: agent))
        let real = try Self.approvalID(try d.ctl(["provision", "github", "--scope", "github:admin", "--json"], as: agent))
        try d.ctlSucceeds(["approvals", "approve", real], as: approver)
        #expect(d.stop() == 0)

        try d.sql("UPDATE approvals SET state = 'approved', approvers = '4242', decided_reason = 'approved by uid 4242' WHERE id = '\(forged)'")
        try d.sql("""
            INSERT INTO standing_approvals(agent_id, capability, resource, until_us, approver, approval_id)
            SELECT id, 'github:push', '', 9000000000000000, 'uid 4242', 'invented' FROM agents WHERE name = 'a'
            """)
        try d.start()
        let refused = try d.ctl(["provision", "github", "--scope", "github:admin", "--approval", forged], as: agent)
        #expect(refused.status == 1 && refused.stdout.isEmpty, "the forged approval was honoured: \(refused)")
        #expect(refused.stderr.contains("PERMISSION_DENIED"), "\(refused.stderr)")
        #expect(d.waitForLog("failed its integrity check"))
        let push = try d.ctl(["provision", "github", "--scope", "github:push", "--json"], as: agent)
        #expect(push.status == 3, "the invented standing approval was honoured: \(push)")
        let listed = try d.ctl(["approvals", "list", "--all", "--json"], as: approver)
        #expect(listed.status == 0 && !listed.stdout.contains(forged) && listed.stdout.contains(real), "\(listed)")

        // The control: the approval a real approver gave is honoured after the restart, once.
        let used = try d.ctl(["provision", "github", "--scope", "github:admin", "--approval", real], as: agent)
        #expect(used.status == 0 && used.stdout.hasPrefix("lyt_"), "\(used)")
        try d.ctlSucceeds(["audit", "verify"])
    }

    /// Finding 9: a signing key inserted at rest verifies no token and is not published.
    @Test func aSigningKeyInsertedAtRestVerifiesNothing() throws {
        let d = try DaemonProcess(policy: Self.policy())
        defer { d.cleanup() }
        try d.start()
        let agent = E2EUsers.agent!
        let genuine = try d.ctlSucceeds(["identity", "issue", "--audience", "svc"], as: agent).stdout
        #expect(d.stop() == 0)

        let key = try PlantedKey(in: d.dir)
        let now = Int(Date().timeIntervalSince1970)
        let token = try key.jwt(claims: """
            {"iss":"spiffe://e2e.internal","sub":"spiffe://e2e.internal/agent/a","agent_id":"x","aud":"svc",\
            "capabilities":["github:admin"],"iat":\(now),"nbf":\(now),"exp":\(now + 300),"jti":"\(String(repeating: "ab", count: 16))"}
            """)
        try d.sql("""
            INSERT INTO signing_keys(kid, purpose, alg, public_key, sealed_private, created_us, retired_us)
            VALUES ('\(key.kid)', 'identity', 'EdDSA', x'\(key.publicKeyHex)', x'00', 1, \(now) * 1000000)
            """)
        try d.start()
        let validated = try d.ctl(["identity", "validate", "-", "--audience", "svc"], as: agent, stdin: token)
        #expect(validated.status == 2 && validated.stdout.contains("invalid"), "a token signed with the planted key validated: \(validated)")
        let jwks = try d.ctlSucceeds(["jwks"]).stdout
        #expect(!jwks.contains(key.publicKeyBase64URL) && jwks.contains("\"kty\":\"OKP\""), "the planted key is published: \(jwks)")

        // The control: the daemon's own token still validates, and new ones are issued.
        let ok = try d.ctl(["identity", "validate", "-", "--audience", "svc"], as: agent, stdin: genuine)
        #expect(ok.status == 0, "\(ok)")
        try d.ctlSucceeds(["identity", "issue", "--audience", "svc"], as: agent)
    }

    /// Finding 10: deleting the audit tail and then the checkpoint, or replacing it with one
    /// signed by a planted key (the old format), or deleting only the records a kill -9 left
    /// past the checkpoint, is reported by `audit verify`; the daemon does not anchor the
    /// shortened chain again.
    @Test(arguments: ["delete", "plant", "kill9"])
    func aTruncatedChainCannotBeReAnchored(how: String) throws {
        let d = try DaemonProcess(policy: Self.policy())
        defer { d.cleanup() }
        try d.start()
        for _ in 0..<6 { _ = try d.ctl(["authorize", "github:read_repo"], as: E2EUsers.agent!) }
        try d.ctlSucceeds(["audit", "verify"])
        let checkpoint = d.stateDir + "/audit.checkpoint"
        if how == "kill9" {
            d.kill9()  // the checkpoint written at start lags the head
            try d.sql("DELETE FROM audit WHERE seq = (SELECT max(seq) FROM audit)")
            try d.start()
            let verify = try d.ctl(["audit", "verify"])
            #expect(verify.status == 1 && verify.stdout.contains("BROKEN"), "a truncated chain verified: \(verify)")
            #expect(d.waitForLog("does not match its authenticated head"))
            return
        }
        #expect(d.stop() == 0)
        #expect(FileManager.default.fileExists(atPath: checkpoint))

        try d.sql("DELETE FROM audit WHERE seq > 3")
        try FileManager.default.removeItem(atPath: checkpoint)
        if how == "plant" {
            let key = try PlantedKey(in: d.dir)
            let hash = try d.sql("SELECT hash FROM audit WHERE seq = 3")
            try d.sql("""
                INSERT INTO signing_keys(kid, purpose, alg, public_key, sealed_private, created_us)
                VALUES ('\(key.kid)', 'audit-checkpoint', 'EdDSA', x'\(key.publicKeyHex)', x'00', 1)
                """)
            let time = Int(Date().timeIntervalSince1970) * 1_000_000
            let signature = try key.sign("lanyard-checkpoint-v1|3|\(hash)|\(time)")
            TestSupport.write("lanyard-checkpoint-v1\nseq=3\nhash=\(hash)\ntime_us=\(time)\nkid=\(key.kid)\nsig=\(signature)\n", to: checkpoint)
        }
        try d.start()
        let verify = try d.ctl(["audit", "verify"])
        #expect(verify.status == 1 && verify.stdout.contains("BROKEN"), "a truncated chain verified: \(verify)")
        #expect(verify.stdout.contains(how == "delete" ? "missing" : "malformed"), "\(verify.stdout)")
        #expect(d.waitForLog("the audit chain is not anchored"))
        #expect(d.stop() == 0)  // a graceful stop would anchor the head: it must refuse
        if how == "delete" { #expect(!FileManager.default.fileExists(atPath: checkpoint), "the shortened chain was anchored again") }
        try d.start()
        #expect(try d.ctl(["audit", "verify"]).status == 1)
    }

    /// The control for finding 10: an untouched chain verifies across stops and starts,
    /// and after kill -9 (the checkpoint written at start lags the head, and still holds).
    @Test func anUntouchedChainVerifiesAcrossRestarts() throws {
        let d = try DaemonProcess(policy: Self.policy())
        defer { d.cleanup() }
        try d.start()
        try d.ctlSucceeds(["audit", "verify"])
        for _ in 0..<3 { _ = try d.ctl(["authorize", "github:read_repo"], as: E2EUsers.agent!) }
        d.kill9()
        try d.start()
        try d.ctlSucceeds(["audit", "verify"])
        #expect(d.stop() == 0)
        try d.start()
        let verify = try d.ctlSucceeds(["audit", "verify", "--json"])
        #expect(verify.stdout.contains("\"ok\":true"), "\(verify.stdout)")
    }

    /// Finding 11: deleting the newest version of a static secret never serves the rotated-out
    /// value; a new put is served.
    @Test func aDeletedSecretVersionNeverServesTheOldValue() throws {
        let d = try DaemonProcess(policy: Self.policy())
        defer { d.cleanup() }
        try d.start()
        let agent = E2EUsers.agent!
        for value in ["sk-rotated-out", "sk-current"] {
            #expect(try d.ctl(["secret", "put", "openai"], stdin: value + "\n").status == 0)
        }
        #expect(try d.ctl(["provision", "openai", "--scope", "openai:chat"], as: agent).stdout == "sk-current\n")
        #expect(d.stop() == 0)

        try d.sql("DELETE FROM secrets WHERE service = 'openai' AND version = 2")
        try d.start()
        let refused = try d.ctl(["provision", "openai", "--scope", "openai:chat"], as: agent)
        #expect(refused.status == 1 && !refused.stdout.contains("sk-rotated-out"), "the rotated-out value was served: \(refused)")
        #expect(refused.stderr.contains("DATA_LOSS") && refused.stderr.contains("secret put openai"), "\(refused.stderr)")

        #expect(try d.ctl(["secret", "put", "openai"], stdin: "sk-next\n").status == 0)
        #expect(try d.ctl(["provision", "openai", "--scope", "openai:chat"], as: agent).stdout == "sk-next\n")
    }

    /// A grant's counter deleted at rest would mean "nothing used": the restarted daemon
    /// refuses the limited grant (DATA_LOSS, naming the remedy, audited) while others still
    /// work, until an admin resets every counter; the counters then count, and are anchored,
    /// again. Counters follow the agent's name: its stored id lost at rest resets nothing.
    @Test(.enabled(if: TestSupport.isRoot, "needs root to create the agent uid"))
    func aCounterDeletedAtRestRefusesLimitedGrantsUntilResetAll() throws {
        let policy = """
            trust_domain: e2e.internal
            services:
              pay: { kind: opaque }
            capabilities:
              pay:charge: { risk: low }
              pay:read:   { risk: low }
            agents:
              a:
                uid: \(E2EUsers.agent!.uid)
                grants: [{ capability: pay:charge, rate: 1000/day }, pay:read]

            """
        let d = try DaemonProcess(policy: policy)
        defer { d.cleanup() }
        try d.start()
        let agent = E2EUsers.agent!
        for _ in 0..<2 { #expect(try d.ctl(["authorize", "pay:charge"], as: agent).status == 0) }
        #expect(d.stop() == 0)
        try d.sql("DELETE FROM agents")  // a new id for `a` at the next start
        try d.start()
        #expect(try d.ctl(["authorize", "pay:charge"], as: agent).status == 0)
        #expect(try d.ctlSucceeds(["limits", "show", "--json"]).stdout.contains("\"used\":3"))
        #expect(d.stop() == 0)

        try d.sql("DELETE FROM limit_counters")
        try d.start()
        #expect(d.waitForLog("do not match the audit head"))
        let refused = try d.ctl(["authorize", "pay:charge"], as: agent)
        #expect(refused.status != 0 && refused.stderr.contains("DATA_LOSS") && refused.stderr.contains("lanyardctl limits reset --all"), "\(refused)")
        #expect(try d.ctl(["authorize", "pay:read"], as: agent).status == 0)
        #expect(try d.sql("SELECT count(*) FROM audit WHERE capability = 'pay:charge' AND reason_code = 'integrity_failure'") == "1")

        try d.ctlSucceeds(["limits", "reset", "--all"])
        #expect(try d.ctl(["authorize", "pay:charge"], as: agent).status == 0)
        #expect(d.stop() == 0)
        try d.start()
        let shown = try d.ctlSucceeds(["limits", "show", "--json"])
        #expect(shown.stdout.contains("\"used\":1"), "\(shown.stdout)")
        try d.ctlSucceeds(["audit", "verify"])
    }

    /// Deletion never revives: a revoked identity token whose row is deleted, and a revoked
    /// lease marked active again, stay dead after the restart.
    @Test func deletedOrEditedRevocationsDoNotRevive() throws {
        let d = try DaemonProcess(policy: Self.policy())
        defer { d.cleanup() }
        try d.start()
        let agent = E2EUsers.agent!
        let token = try d.ctlSucceeds(["identity", "issue", "--audience", "svc"], as: agent).stdout
        let jti = try #require(Self.jti(token))
        try d.ctlSucceeds(["identity", "revoke", jti])
        let kept = try d.ctlSucceeds(["identity", "issue", "--audience", "svc"], as: agent).stdout
        let secret = try d.ctlSucceeds(["provision", "github", "--scope", "github:read_repo", "--json"], as: agent).stdout
        let lease = try #require((try JSONSerialization.jsonObject(with: Data(secret.utf8)) as? [String: Any]).flatMap { $0["lease_id"] as? String })
        let value = try #require((try JSONSerialization.jsonObject(with: Data(secret.utf8)) as? [String: Any]).flatMap { $0["secret"] as? String })
        try d.ctlSucceeds(["revoke", lease], as: agent)
        #expect(d.stop() == 0)

        try d.sql("DELETE FROM issued_identities WHERE jti = '\(jti)'")
        try d.sql("UPDATE leases SET state = 'active', ended_us = NULL, ended_reason = '' WHERE id = '\(lease)'")
        try d.start()
        let revived = try d.ctl(["identity", "validate", "-", "--audience", "svc"], as: agent, stdin: token)
        #expect(revived.status == 2, "a revoked token validated once its row was deleted: \(revived)")
        let introspected = try d.ctl(["introspect", "--json"], as: agent, stdin: value + "\n")
        #expect(!introspected.stdout.contains("\"active\":true"), "a revoked lease is active again: \(introspected)")
        let leases = try d.ctlSucceeds(["leases", "list", "--json"]).stdout
        #expect(!leases.contains(lease))

        // The controls: an unrevoked token still validates; new leases are issued and live.
        #expect(try d.ctl(["identity", "validate", "-", "--audience", "svc"], as: agent, stdin: kept).status == 0)
        let fresh = try d.ctlSucceeds(["provision", "github", "--scope", "github:read_repo"], as: agent).stdout
        let live = try d.ctl(["introspect", "--json"], as: agent, stdin: fresh)
        #expect(live.stdout.contains("\"active\":true"), "\(live)")
    }

    static func jti(_ token: String) -> String? {
        let parts = token.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ".")
        guard parts.count == 3 else { return nil }
        var b64 = parts[1].replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while b64.count % 4 != 0 { b64 += "=" }
        guard let data = Data(base64Encoded: b64), let claims = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        return claims["jti"] as? String
    }
}

/// An Ed25519 key the attacker made (with the openssl CLI), to plant in the database.
struct PlantedKey {
    let pem: String
    let publicKey: Data
    let kid: String

    init(in dir: String) throws {
        pem = dir + "/planted-\(UUID().uuidString).pem"
        guard try run(["/usr/bin/openssl", "genpkey", "-algorithm", "ed25519", "-out", pem]).status == 0 else { throw HarnessError("openssl genpkey failed") }
        let der = dir + "/planted.der"
        guard try run(["/usr/bin/openssl", "pkey", "-in", pem, "-pubout", "-outform", "DER", "-out", der]).status == 0,
              let bytes = TestSupport.read(der), bytes.count == 44 else { throw HarnessError("openssl pkey failed") }
        publicKey = bytes.suffix(32)
        kid = Self.base64URL(Data((0..<32).map { _ in UInt8.random(in: 0...255) }))
    }

    var publicKeyHex: String { publicKey.map { String(format: "%02x", $0) }.joined() }
    var publicKeyBase64URL: String { Self.base64URL(publicKey) }

    func sign(_ message: String) throws -> String {
        let input = pem + ".msg", output = pem + ".sig"
        TestSupport.write(message, to: input)
        guard try run(["/usr/bin/openssl", "pkeyutl", "-sign", "-inkey", pem, "-rawin", "-in", input, "-out", output]).status == 0,
              let signature = TestSupport.read(output), signature.count == 64 else { throw HarnessError("openssl pkeyutl failed") }
        return Self.base64URL(signature)
    }

    func jwt(claims: String) throws -> String {
        let header = Self.base64URL(Data("{\"alg\":\"EdDSA\",\"kid\":\"\(kid)\",\"typ\":\"JWT\"}".utf8))
        let payload = Self.base64URL(Data(claims.utf8))
        return "\(header).\(payload).\(try sign("\(header).\(payload)"))"
    }

    static func base64URL(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}
