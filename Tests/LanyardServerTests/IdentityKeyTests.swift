import Foundation
import LanyardClient
import LanyardCore
import LanyardCrypto
import LanyardStore
import LanyardTestSupport
import LanyardWire
import Testing

@testable import LanyardServer

private func code(_ error: any Error) -> Lanyard_V1_Code? { (error as? LanyardError)?.code }

extension LanyardAdminClient {
    func jwks(service: String = "") async throws -> [String] {
        var r = Lanyard_V1_AdminRequest()
        r.jwks = .with { $0.service = service }
        return try kids(try await call(r).jwks.json)
    }

    func rotateIdentityKey(compromised: Bool = false) async throws -> String {
        var r = Lanyard_V1_AdminRequest()
        r.keysRotate = .with { $0.compromised = compromised }
        return try await call(r).keysRotate.kid
    }

    func rotate(service: String, compromised: Bool = false) async throws -> Lanyard_V1_SecretRotateResponse {
        var r = Lanyard_V1_AdminRequest()
        r.secretRotate = .with {
            $0.service = service
            $0.compromised = compromised
        }
        return try await call(r).secretRotate
    }
}

/// Signing keys by purpose (Security I findings 13 and 17).
@Suite(.serialized)
struct IdentityKeyTests {
    /// Finding 13: the identity keys and each jwt service's keys are published apart;
    /// `jwks --service` answers only for jwt services.
    @Test func eachPurposeHasItsOwnJWKS() async throws {
        let d = try TestDaemon(policy: Users.credentialPolicy())
        let a = d.client(as: Users.agent!)
        let root = d.admin(as: Users.root)
        // Published before the first token, so relying parties can be set up first.
        let identity = try await root.jwks()
        let service = try await root.jwks(service: "deploy")
        #expect(identity.count == 1 && service.count == 1 && identity != service)
        #expect(try headerKid(try await a.issueIdentity("peer").token) == identity[0])
        #expect(try headerKid(try await a.provision("deploy", ["deploy:read"]).secret) == service[0])
        for other in ["github", "openai", "nope", ""] where !other.isEmpty {
            await #expect { try await root.jwks(service: other) } throws: { code($0) == .notFound }
        }
        await a.close()
        await root.close()
        await d.stop()
    }

    /// Finding 17: a plain rotation keeps the earlier public keys until their tokens
    /// expire; a compromise rotation drops them from the JWKS and from validation at once
    /// (every token they signed stops verifying: that is the point), and says so in the audit.
    @Test func compromisedRotationsDropEarlierKeysAtOnce() async throws {
        let clock = ManualClock()
        let d = try TestDaemon(policy: Users.credentialPolicy(), clock: clock)
        let a = d.client(as: Users.agent!)
        let root = d.admin(as: Users.root)

        let first = try await a.issueIdentity("peer").token
        let plain = try await root.rotateIdentityKey()
        let second = try await a.issueIdentity("peer").token
        #expect(Set(try await root.jwks()) == [try headerKid(first), plain])
        #expect(try await a.validateIdentity(first, "peer").valid)
        #expect(try await a.validateIdentity(second, "peer").valid)
        let fresh = try await root.rotateIdentityKey(compromised: true)
        #expect(try await root.jwks() == [fresh])
        #expect(try await a.validateIdentity(first, "peer").failedCheck == "kid")
        #expect(try await a.validateIdentity(second, "peer").failedCheck == "kid")
        #expect(try await a.validateIdentity(try await a.issueIdentity("peer").token, "peer").valid)

        let lease = try await a.provision("deploy", ["deploy:read"])
        let signedBy = try headerKid(lease.secret)
        let plainRotation = try await root.rotate(service: "deploy")
        #expect(plainRotation.revokedLeases == 1)
        let afterPlain = try await root.jwks(service: "deploy")
        #expect(afterPlain.count == 2 && afterPlain.contains(signedBy))  // still verifies offline until it expires
        let compromise = try await root.rotate(service: "deploy", compromised: true)
        #expect(compromise.version == plainRotation.version + 1)
        let afterCompromise = try await root.jwks(service: "deploy")
        #expect(afterCompromise.count == 1 && !afterPlain.contains(afterCompromise[0]))
        #expect(try await root.jwks() == [fresh])  // the identity keys are not touched
        await #expect { try await root.rotate(service: "github", compromised: true) } throws: { code($0) == .failedPrecondition }

        let records = try d.daemon.store.queryAudit(AuditFilter())
        let dropped = "compromised: dropped \(try headerKid(first)), \(plain) from the JWKS"
        #expect(records.contains { $0.event == "admin.keys.rotate" && $0.outcome == "new kid \(fresh)" && $0.reason.hasPrefix(dropped) })
        #expect(records.contains { $0.event == "admin.secret.rotate" && $0.capability == "deploy:rotate" && $0.reason.contains("compromised: dropped") })
        #expect(try d.daemon.store.verifyAudit().ok)
        await a.close()
        await root.close()
        await d.stop()
    }
}
