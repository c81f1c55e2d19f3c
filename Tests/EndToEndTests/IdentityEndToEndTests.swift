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
}
