import Foundation
import LanyardClient
import LanyardCore
import LanyardCrypto
import LanyardStore
import LanyardTestSupport
import LanyardWire
import NIOConcurrencyHelpers
import Testing

@testable import LanyardServer

private func code(_ error: any Error) -> Lanyard_V1_Code? { (error as? LanyardError)?.code }

@Suite(.serialized)
struct CredentialTests {
    /// Acceptance 1: opaque lease → active by Introspect → inactive after Revoke or expiry.
    @Test func opaqueLeaseLivesUntilRevokedOrExpired() async throws {
        let clock = ManualClock()
        let d = try TestDaemon(policy: Users.credentialPolicy(), clock: clock)
        let a = d.client(as: Users.agent!)

        let lease = try await a.provision("github", ["github:read_repo"])
        #expect(lease.kind == "opaque" && lease.secret.hasPrefix("lyt_") && lease.secret.count > 40)
        #expect(lease.expiresAt - lease.issuedAt == 300)
        var seen = try await a.introspect(lease.secret)
        #expect(seen.active && seen.agent == "a" && seen.leaseID == lease.leaseID && seen.scope == ["github:read_repo"])
        #expect(try await a.introspect("lyt_not-a-token").active == false)

        if let second = Users.second {
            let b = d.client(as: second)
            await #expect { try await b.revoke(lease.leaseID) } throws: { code($0) == .notFound }
            #expect(try await a.introspect(lease.secret).active)
            await b.close()
        }
        #expect(try await a.revoke(lease.leaseID))
        #expect(try await a.revoke(lease.leaseID) == false)  // idempotent
        #expect(try await a.introspect(lease.secret).active == false)

        let short = try await a.provision("github", ["github:read_repo"], ttl: 60)
        clock.advance(seconds: 59)
        #expect(try await a.introspect(short.secret).active)
        clock.advance(seconds: 1)
        seen = try await a.introspect(short.secret)
        #expect(!seen.active)  // past expiry reads inactive before any reaper runs
        await d.daemon.maintenance()
        #expect(try d.daemon.store.lease(id: short.leaseID)?.state == .expired)
        let events = try d.daemon.store.queryAudit(AuditFilter()).map(\.event)
        #expect(events.contains("lease.expire") && events.filter { $0 == "provision" }.count == 2)
        #expect(try d.daemon.store.verifyAudit().ok)
        await a.close()
        await d.stop()
    }

    @Test func singleUseTokensAreConsumedByTheirFirstIntrospect() async throws {
        let d = try TestDaemon(policy: Users.credentialPolicy())
        let a = d.client(as: Users.agent!)
        let lease = try await a.provision("once", ["once:use"])
        #expect(try await a.introspect(lease.secret).active)
        #expect(try await a.introspect(lease.secret).active == false)
        #expect(try d.daemon.store.lease(id: lease.leaseID)?.state == .revoked)
        await a.close()
        await d.stop()
    }

    /// Acceptance 2: a jwt-kind lease verifies against the daemon's public key, exp - iat ≤ 900.
    @Test func jwtLeaseVerifiesWithTheDaemonKey() async throws {
        let d = try TestDaemon(policy: Users.credentialPolicy())
        let a = d.client(as: Users.agent!)
        let lease = try await a.provision("deploy", ["deploy:read"])
        let parts = lease.secret.split(separator: ".").map(String.init)
        #expect(parts.count == 3)
        let header = try JSONSerialization.jsonObject(with: Data(try #require(Base64URL.decode(parts[0])))) as! [String: Any]
        let claims = try JSONSerialization.jsonObject(with: Data(try #require(Base64URL.decode(parts[1])))) as! [String: Any]
        #expect(header["alg"] as? String == "EdDSA")
        let kid = try #require(header["kid"] as? String)
        let key = try #require(try d.daemon.store.publicKeys(purpose: "service:deploy").first { $0.kid == kid })
        #expect(Ed25519.isValidSignature(try #require(Base64URL.decode(parts[2])), for: Array("\(parts[0]).\(parts[1])".utf8), publicKey: key.publicKey))
        let iat = try #require(claims["iat"] as? Int), exp = try #require(claims["exp"] as? Int)
        #expect(exp - iat == 120 && exp - iat <= 900)
        #expect(claims["aud"] as? String == "deploy" && claims["scope"] as? String == "deploy:read")
        #expect(claims["sub"] as? String == "spiffe://test.internal/agent/a" && claims["jti"] as? String == lease.leaseID)
        var tampered = Array(try #require(Base64URL.decode(parts[2])))
        tampered[0] ^= 1
        #expect(!Ed25519.isValidSignature(tampered, for: Array("\(parts[0]).\(parts[1])".utf8), publicKey: key.publicKey))
        await a.close()
        await d.stop()
    }

    /// Acceptance 4: 0 gives the service default; above the max (≤ 900) is refused, never honoured.
    @Test func ttlIsTheDefaultOrRefusedAboveTheCeiling() async throws {
        let d = try TestDaemon(policy: Users.credentialPolicy())
        let a = d.client(as: Users.agent!)
        let byDefault = try await a.provision("github", ["github:read_repo"], ttl: 0)
        #expect(byDefault.expiresAt - byDefault.issuedAt == 300)
        let max = try await a.provision("github", ["github:read_repo"], ttl: 600)
        #expect(max.expiresAt - max.issuedAt == 600)
        for ttl: UInt64 in [601, 901, 1 << 63, UInt64.max] {
            await #expect { try await a.provision("github", ["github:read_repo"], ttl: ttl) } throws: {
                code($0) == .invalidArgument && ($0 as! LanyardError).message.contains("exceeds the maximum of 600")
            }
        }
        let leases = try d.daemon.store.activeLeases()
        #expect(leases.count == 2)  // the refused ones made none
        #expect(leases.allSatisfy { $0.expiresMicros - $0.issuedMicros <= 900_000_000 })
        await a.close()
        await d.stop()
    }

    /// Issue 20: a bound lease names the calling process (pid and start time, as /proc has
    /// them); a bound lease ended otherwise is no longer watched after the next maintenance pass.
    @Test func boundLeaseRecordsTheCallerAndEndedOnesAreNoLongerWatched() async throws {
        let d = try TestDaemon(policy: Users.credentialPolicy())
        let a = d.client(as: Users.agent!)
        var r = Lanyard_V1_Request()
        r.provision = .with {
            $0.service = "github"
            $0.scope = ["github:read_repo"]
            $0.bindToProcess = true
        }
        let lease = try await a.call(r).provision.lease
        let stored = try #require(try d.daemon.store.lease(id: lease.leaseID))
        #expect(stored.process == BoundProcess(pid: getpid(), startTime: try #require(ProcAttestor.startTime(getpid()))))
        #expect(d.daemon.credentials.processWatcher.count == 1)
        #expect(try await a.revoke(lease.leaseID))
        await d.daemon.maintenance()
        #expect(d.daemon.credentials.processWatcher.count == 0)
        await a.close()
        await d.stop()
    }

    /// At startup a recorded process is taken back only if it is the same one: its pid alive
    /// with the recorded start time. A recycled pid (another start time) or an exited process is gone.
    @Test func aRecordedProcessIsReopenedOnlyIfItIsTheSameOne() throws {
        let me = getpid()
        let start = try #require(ProcAttestor.startTime(me))
        #expect(reopenPidFD(BoundProcess(pid: me, startTime: start)) != nil)
        #expect(reopenPidFD(BoundProcess(pid: me, startTime: start + 1)) == nil)
        let child = try SpawnedProcess(["/bin/true"])
        let childStart = ProcAttestor.startTime(child.pid) ?? 0
        _ = child.stop(0)
        #expect(reopenPidFD(BoundProcess(pid: child.pid, startTime: childStart)) == nil)
    }

    @Test func provisionIsDeniedAsTheDesignSays() async throws {
        let d = try TestDaemon(policy: Users.credentialPolicy())
        let a = d.client(as: Users.agent!)
        await #expect { try await a.provision("github", ["github:admin"]) } throws: { code($0) == .permissionDenied }
        await #expect { try await a.provision("github", ["deploy:read"]) } throws: { code($0) == .invalidArgument }
        await #expect { try await a.provision("nope", ["nope:x"]) } throws: { code($0) == .invalidArgument }
        await #expect { try await a.provision("github", []) } throws: { code($0) == .invalidArgument }
        await #expect { try await a.provision("openai", ["openai:chat"]) } throws: { code($0) == .failedPrecondition }
        // MEDIUM: FAILED_PRECONDITION plus a new approval id; no lease, no secret.
        do {
            _ = try await a.provision("github", ["github:read_repo", "github:push"])
            Issue.record("a MEDIUM scope was provisioned without approval")
        } catch let e as LanyardError {
            #expect(e.code == .failedPrecondition)
            let r = try #require(e.response as? Lanyard_V1_Response)
            #expect(r.provision.approvalID.count == 36 && r.provision.lease.secret.isEmpty)
        }
        #expect(try d.daemon.store.activeLeases().isEmpty)
        if let stranger = Users.other {
            let s = d.client(as: stranger)
            await #expect { try await s.provision("github", ["github:read_repo"]) } throws: { code($0) == .unauthenticated }
            await s.close()
        }
        await a.close()
        await d.stop()
    }

    /// Acceptance 3 (in part) and 5: a static secret comes back; a tampered or swapped row
    /// fails with an error, never garbage.
    @Test func staticSecretRoundTripsAndTamperingFailsClosed() async throws {
        let d = try TestDaemon(policy: Users.credentialPolicy())
        let a = d.client(as: Users.agent!)
        let root = d.admin(as: Users.root)
        func put(_ value: String) async throws -> UInt32 {
            var r = Lanyard_V1_AdminRequest()
            r.secretPut = .with {
                $0.service = "openai"
                $0.value = Data(value.utf8)
            }
            return try await root.call(r).secretPut.version
        }
        #expect(try await put("sk-first-value") == 1)
        let first = try await a.provision("openai", ["openai:chat"])
        #expect(first.secret == "sk-first-value" && first.kind == "static")
        #expect(try await put("sk-second-value") == 2)
        #expect(try d.daemon.store.lease(id: first.leaseID)?.state == .revoked)  // the old value's lease
        #expect(try await a.provision("openai", ["openai:chat"]).secret == "sk-second-value")

        let db = d.daemon.store.path
        // Swap: version 1's sealed bytes under version 2's row (valid ciphertext, wrong place).
        #expect(sqlite(db, "UPDATE secrets SET sealed = (SELECT sealed FROM secrets WHERE version = 1) WHERE version = 2"))
        await #expect { try await a.provision("openai", ["openai:chat"]) } throws: {
            code($0) == .dataLoss && ($0 as! LanyardError).message.contains("integrity check")
        }
        // Flip one byte of a fresh newest row.
        #expect(try await put("sk-third-value") == 3)
        #expect(sqlite(db, "UPDATE secrets SET sealed = substr(sealed, 1, 20) || x'00' || substr(sealed, 22) WHERE version = 3"))
        await #expect { try await a.provision("openai", ["openai:chat"]) } throws: { code($0) == .dataLoss }
        await a.close()
        await root.close()
        await d.stop()
    }

    /// Secret puts at once take a version each, and each new value's rotation revokes the
    /// leases of the one before: each put reads the version it follows, in one hold of the service.
    @Test func concurrentSecretPutsEachTakeAVersion() async throws {
        let d = try TestDaemon(policy: Users.credentialPolicy())
        let a = d.client(as: Users.agent!)
        let root = d.admin(as: Users.root)
        let versions = try await withThrowingTaskGroup(of: UInt32.self) { group in
            for i in 0..<4 {
                group.addTask {
                    try await root.call(Lanyard_V1_AdminRequest.with { $0.secretPut = .with { $0.service = "openai"; $0.value = Data("sk-\(i)".utf8) } })
                        .secretPut.version
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(versions.sorted() == [1, 2, 3, 4])
        #expect(try d.daemon.store.serviceVersion("openai").version == 4)
        let lease = try await a.provision("openai", ["openai:chat"])
        #expect(try d.daemon.store.lease(id: lease.leaseID)?.version == 4)
        await a.close()
        await root.close()
        await d.stop()
    }

    /// Acceptance 7: rotation revokes old-version leases; the kill switch revokes every
    /// lease of an agent in one call; scheduled rotation runs on the injected clock.
    @Test func rotationAndKillSwitchRevokeEverything() async throws {
        let clock = ManualClock()
        let d = try TestDaemon(policy: Users.credentialPolicy(rotationDays: 1), clock: clock)
        let a = d.client(as: Users.agent!)
        let old = try await [a.provision("github", ["github:read_repo"]), a.provision("github", ["github:read_repo"])]

        var rotate = Lanyard_V1_Request()
        rotate.rotate = .with { $0.service = "github" }
        let r = try await a.call(rotate).rotate
        #expect(r.version == 2 && r.revokedLeases == 2)
        for l in old { #expect(try await a.introspect(l.secret).active == false) }
        let fresh = try await a.provision("github", ["github:read_repo"])
        #expect(try d.daemon.store.lease(id: fresh.leaseID)?.version == 2)

        // Scheduled: a day later the service rotates by itself.
        clock.advance(seconds: 86_400)
        await d.daemon.maintenance()
        #expect(try await a.introspect(fresh.secret).active == false)
        #expect(try d.daemon.store.serviceVersion("github").version == 3)

        // Kill switch: every lease of agent a, whatever the service.
        _ = try await [a.provision("github", ["github:read_repo"]), a.provision("deploy", ["deploy:read"])]
        let root = d.admin(as: Users.root)
        var kill = Lanyard_V1_AdminRequest()
        kill.leasesRevoke = .with { $0.agent = "a" }
        #expect(try await root.call(kill).leasesRevoke.revoked == 2)
        #expect(try d.daemon.store.activeLeases(agent: "a").isEmpty)
        let records = try d.daemon.store.queryAudit(AuditFilter())
        #expect(records.filter { $0.event == "admin.leases.revoke" && $0.outcome == "revoked" }.count == 2)
        #expect(try d.daemon.store.verifyAudit().ok)
        await a.close()
        await root.close()
        await d.stop()
    }

    /// Rotations at once each move the version by one: each reads the version it moves from
    /// before its commit, and two at once both recorded the same new version.
    @Test func concurrentRotationsEachMoveTheVersion() async throws {
        let d = try TestDaemon(policy: Users.credentialPolicy())
        let a = d.client(as: Users.agent!)
        let rotate = Lanyard_V1_Request.with { $0.rotate = .with { $0.service = "github" } }
        let versions = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<8 { group.addTask { Int(try await a.call(rotate).rotate.version) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(versions.sorted() == Array(2...9))
        #expect(try d.daemon.store.serviceVersion("github").version == 9)
        let outcomes = try d.daemon.store.queryAudit(AuditFilter()).filter { $0.capability == "github:rotate" }.map(\.outcome)
        #expect(outcomes == (2...9).map { "rotated to version \($0)" })
        await a.close()
        await d.stop()
    }

    /// Rotations in a row do not hold a service's provisions off: when a rotation ends, the
    /// provisions that waited for it go before the next one.
    @Test(.timeLimit(.minutes(1))) func rotationsInARowDoNotHoldProvisionsOff() async throws {
        let d = try TestDaemon(policy: Users.credentialPolicy())
        let a = d.client(as: Users.agent!), rotator = d.client(as: Users.agent!)
        let rotate = Lanyard_V1_Request.with { $0.rotate = .with { $0.service = "github" } }
        let provisioning = NIOLockedValueBox(true)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<6 {
                group.addTask { while provisioning.withLockedValue({ $0 }) { _ = try await rotator.call(rotate) } }
            }
            group.addTask {
                for _ in 0..<20 { _ = try await a.provision("github", ["github:read_repo"]) }
                provisioning.withLockedValue { $0 = false }
            }
            try await group.waitForAll()
        }
        #expect(d.daemon.credentials.rotations.isIdle("github"))
        await a.close()
        await rotator.close()
        await d.stop()
    }

    /// A lease made while its service rotates does not outlive the rotation: a rotation waits
    /// for the provisions in flight (one committed between its read of the leases and its
    /// commit was not revoked, or was made of the version it left), and provisions that come
    /// meanwhile wait for it, so a flood of them does not hold it off.
    @Test(.timeLimit(.minutes(1))) func aLeaseMadeDuringARotationDoesNotOutliveIt() async throws {
        let d = try TestDaemon(policy: Users.credentialPolicy())
        let a = d.client(as: Users.agent!), rotator = d.client(as: Users.agent!)
        _ = try await a.provision("github", ["github:read_repo"])
        let rotate = Lanyard_V1_Request.with { $0.rotate = .with { $0.service = "github" } }
        let rotating = NIOLockedValueBox(true)
        // Eight provisions in flight on one connection for as long as four rotations run on another.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    while rotating.withLockedValue({ $0 }) { _ = try await a.provision("github", ["github:read_repo"]) }
                }
            }
            group.addTask {
                for _ in 0..<4 { _ = try await rotator.call(rotate) }
                rotating.withLockedValue { $0 = false }
            }
            try await group.waitForAll()
        }
        let current = try d.daemon.store.serviceVersion("github").version
        #expect(current == 5)
        let stale = try d.daemon.store.activeLeases(service: "github").filter { $0.version != current }
        #expect(stale.count == 0, "leases of an earlier version outlived a rotation: versions \(stale.map(\.version))")
        #expect(d.daemon.credentials.rotations.isIdle("github"))
        #expect(try d.daemon.store.verifyAudit().ok)
        await a.close()
        await rotator.close()
        await d.stop()
    }
}

@discardableResult
func sqlite(_ db: String, _ sql: String) -> Bool {
    (try? run(["/usr/bin/sqlite3", db, sql]))?.status == 0
}
