import Foundation
import LanyardTestSupport
import Testing

struct IdentityEndToEndTests {
    /// Acceptance 1: a token from IssueIdentity verifies with joserfc (a JOSE library this
    /// project did not write) against `lanyardctl jwks`.
    @Test func tokensVerifyWithAStandardJOSELibrary() throws {
        let d = try DaemonProcess(policy: E2EUsers.policy())
        defer { d.cleanup() }
        try d.start()
        let issued = try d.ctl(["identity", "issue", "--audience", "billing-agent"], as: E2EUsers.agent!)
        #expect(issued.status == 0, "\(issued)")
        let jwks = try d.ctl(["jwks"])
        #expect(jwks.status == 0 && jwks.stdout.contains("\"kty\":\"OKP\""))
        TestSupport.write(issued.stdout, to: d.dir + "/token")
        TestSupport.write(jwks.stdout, to: d.dir + "/jwks.json")

        let script = TestSupport.packageRoot.appendingPathComponent("Tests/EndToEndTests/Scripts/verify_jwt.py").path
        let verified = try run(["/usr/bin/env", "python3", script, d.dir + "/jwks.json", d.dir + "/token", "billing-agent", "spiffe://e2e.internal"])
        #expect(verified.status == 0, "joserfc refused the token: \(verified.stderr)")
        #expect(verified.stdout == "spiffe://e2e.internal/agent/a\n")
        let wrongAudience = try run(["/usr/bin/env", "python3", script, d.dir + "/jwks.json", d.dir + "/token", "someone-else", "spiffe://e2e.internal"])
        #expect(wrongAudience.status != 0)

        let validated = try d.ctl(["identity", "validate", "-", "--audience", "billing-agent"], as: E2EUsers.agent!, stdin: issued.stdout)
        #expect(validated.status == 0 && validated.stdout.hasPrefix("valid: spiffe://e2e.internal/agent/a"))
    }

    /// Invariant 9 for signing keys: a sealed private key altered at rest is never used.
    /// The next daemon refuses to sign (DATA_LOSS, saying what to do) until an admin
    /// rotates the key; the new key signs tokens that validate.
    @Test func aTamperedSigningKeyIsNeverUsed() throws {
        let d = try DaemonProcess(policy: E2EUsers.policy())
        defer { d.cleanup() }
        try d.start()
        let agent = E2EUsers.agent!
        try d.ctlSucceeds(["identity", "issue", "--audience", "svc"], as: agent)  // creates and seals the key
        #expect(d.stop() == 0)
        // Change one byte of the sealed private key (byte 21 of its nonce, ciphertext and tag).
        try d.sql("""
            UPDATE signing_keys SET sealed_private = substr(sealed_private, 1, 20)
              || CASE WHEN substr(sealed_private, 21, 1) = x'00' THEN x'01' ELSE x'00' END || substr(sealed_private, 22)
            """)
        try d.start()
        let refused = try d.ctl(["identity", "issue", "--audience", "svc"], as: agent)
        #expect(refused.status == 1 && refused.stdout.isEmpty)
        #expect(refused.stderr.contains("DATA_LOSS") && refused.stderr.contains("failed its integrity check") && refused.stderr.contains("keys rotate"),
                "got: \(refused.stderr)")
        try d.ctlSucceeds(["keys", "rotate"])
        let token = try d.ctlSucceeds(["identity", "issue", "--audience", "svc"], as: agent).stdout
        let validated = try d.ctl(["identity", "validate", "-", "--audience", "svc"], as: agent, stdin: token)
        #expect(validated.status == 0, "\(validated.stderr)")
    }
}
