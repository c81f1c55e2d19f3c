import Foundation
import LanyardClient
import LanyardCore
import LanyardStore
import LanyardTestSupport
import LanyardWire
import Testing

@testable import LanyardServer

/// Grant limits (issue 19, acceptance 5) against an in-process daemon with an injected
/// clock: the 61st call of an hour, a budget under 16 concurrent connections, a window in
/// its time zone, and the counters as the store holds them.
@Suite(.serialized, .enabled(if: TestSupport.isRoot, "needs root for agent and approver uids"))
struct LimitsTests {
    static func policy(_ grant: String) -> String {
        """
        trust_domain: test.internal
        approvers: { uids: [\(Users.other!.uid)], timeout_seconds: 300 }
        services:
          pay: { kind: opaque }
        capabilities:
          pay:charge: { risk: low }
        agents:
          a:
            uid: \(Users.agent!.uid)
            grants:
              - \(grant)

        """
    }

    static func charge(_ client: LanyardClient, amount: Int64? = nil, approvalID: String = "") async throws -> Lanyard_V1_AuthorizeResponse {
        var r = Lanyard_V1_Request()
        r.authorize = .with {
            $0.capability = "pay:charge"
            if let amount { $0.amount = .with { $0.value = amount; $0.unit = "USD" } }
            $0.approvalID = approvalID
        }
        return try await client.call(r).authorize
    }

    /// A Provision of `pay:charge`: the lease, or the refusal's status and its reason code.
    static func provision(_ client: LanyardClient, amount: Int64? = nil, approvalID: String = "") async throws
        -> Result<Lanyard_V1_Lease, LanyardError> {
        var r = Lanyard_V1_Request()
        r.provision = .with {
            $0.service = "pay"
            $0.scope = ["pay:charge"]
            if let amount { $0.amount = .with { $0.value = amount; $0.unit = "USD" } }
            $0.approvalID = approvalID
        }
        do {
            return .success(try await client.call(r).provision.lease)
        } catch let e as LanyardError {
            return .failure(e)
        }
    }

    static func counters(_ d: TestDaemon) throws -> [String: Int64] {
        Dictionary(uniqueKeysWithValues: try d.daemon.store.limitCounters().map { ($0.kind, $0.used) })
    }

    /// Dry runs (issue 19, acceptance 2) count against no limit: at the limit a dry run
    /// still answers what a real call would get, and the counter does not move.
    @Test func dryRunsCountAgainstNoLimit() async throws {
        let d = try TestDaemon(policy: Self.policy("{ capability: pay:charge, rate: 2/hour }"), clock: ManualClock())
        let a = d.client(as: Users.agent!)
        func ask(dryRun: Bool) async throws -> Lanyard_V1_AuthorizeResponse {
            var r = Lanyard_V1_Request()
            r.authorize = .with {
                $0.capability = "pay:charge"
                $0.dryRun = dryRun
            }
            return try await a.call(r).authorize
        }
        for _ in 0..<5 { #expect(try await ask(dryRun: true).decision == .allow) }
        #expect(try Self.counters(d)["calls"] ?? 0 == 0)
        for _ in 0..<2 { #expect(try await ask(dryRun: false).decision == .allow) }
        #expect(try Self.counters(d)["calls"] == 2)
        let dry = try await ask(dryRun: true)
        #expect(dry.decision == .deny && dry.reasonCode == "rate_limited" && dry.dryRun)
        #expect(try Self.counters(d)["calls"] == 2)
        await a.close()
        await d.stop()
    }

    /// 60 calls pass, the 61st is DENY rate_limited with the seconds to wait (to the hour's
    /// end on the injected clock), and the next hour allows again.
    @Test func the61stCallInAnHourIsRateLimitedWithTheTimeToWait() async throws {
        let clock = ManualClock()  // 2027-01-15T08:00:00Z, the start of an hour
        clock.advance(seconds: 1_800)
        let d = try TestDaemon(policy: Self.policy("{ capability: pay:charge, rate: 60/hour }"), clock: clock)
        let a = d.client(as: Users.agent!)
        for i in 1...60 {
            let r = try await Self.charge(a)
            #expect(r.decision == .allow, "call \(i): \(r.reason)")
        }
        let over = try await Self.charge(a)
        #expect(over.decision == .deny)
        #expect(over.reason == "rate limit 60/hour reached: the next call is possible in 1800 s")
        #expect(try Self.counters(d) == ["calls": 60])
        let audited = try d.daemon.store.queryAudit({ var f = AuditFilter(); f.limit = 100; return f }()).filter { $0.event == "authorize" }
        #expect(audited.filter { $0.decision == "deny" }.map(\.reason) == [over.reason])

        clock.advance(seconds: 1_799)
        #expect(try await Self.charge(a).reason.hasSuffix("possible in 1 s"))
        clock.advance(seconds: 1)
        #expect(try await Self.charge(a).decision == .allow)
        #expect(try Self.counters(d) == ["calls": 1])
        await a.close()
        await d.stop()
    }

    /// 16 connections charge 5 USD each, 10 times, at once, against 500 USD a day: exactly
    /// 100 are allowed (500 USD, no overspend), every other is DENY budget_exceeded.
    @Test func aBudgetIsExhaustedExactlyAtItsAmountAcross16Connections() async throws {
        let d = try TestDaemon(policy: Self.policy("{ capability: pay:charge, budget: { amount: 500, unit: USD, per: day } }"), clock: ManualClock())
        let clients = (0..<16).map { _ in d.client(as: Users.agent!) }
        let answers = await withTaskGroup(of: [Lanyard_V1_AuthorizeResponse].self) { group in
            for client in clients {
                group.addTask {
                    await withTaskGroup(of: Lanyard_V1_AuthorizeResponse?.self) { calls in
                        for _ in 0..<10 { calls.addTask { try? await Self.charge(client, amount: 5) } }
                        return await calls.reduce(into: []) { if let r = $1 { $0.append(r) } }
                    }
                }
            }
            return await group.reduce(into: []) { $0 += $1 }
        }
        #expect(answers.count == 160)
        #expect(answers.filter { $0.decision == .allow }.count == 100)
        #expect(answers.filter { $0.decision == .deny }.allSatisfy { $0.reason.hasPrefix("budget 500 USD per day exceeded: 0 USD left") })
        #expect(try Self.counters(d) == ["spent": 500])
        for c in clients { await c.close() }
        await d.stop()
    }

    /// With `over_budget: approval` an overrun waits for an approver (no standing approval
    /// covers it); the approved overrun is allowed and counted.
    @Test func anApprovedOverrunIsCounted() async throws {
        let grant = "{ capability: pay:charge, budget: { amount: 10, unit: USD, per: day }, over_budget: approval }"
        let d = try TestDaemon(policy: Self.policy(grant), clock: ManualClock())
        let a = d.client(as: Users.agent!)
        #expect(try await Self.charge(a, amount: 8).decision == .allow)
        let over = try await Self.charge(a, amount: 5)
        #expect(over.decision == .pending && over.reason.hasPrefix("budget 10 USD per day exceeded: 2 USD left of it, 5 asked"))
        var approve = Lanyard_V1_AdminRequest()
        approve.approvalDecide = .with { $0.approvalID = over.approvalID; $0.approve = true }
        _ = try await d.admin(as: Users.other!).call(approve)
        #expect(try await Self.charge(a, amount: 5, approvalID: over.approvalID).decision == .allow)
        #expect(try Self.counters(d) == ["spent": 13])
        await a.close()
        await d.stop()
    }

    /// A window in Europe/Berlin on the injected clock: outside_window before 08:00 local
    /// on the Friday before the DST change (07:59 CET = 06:59 UTC) and at 07:59 CEST on
    /// the Monday after (05:59 UTC); allowed at 08:00 local on both.
    @Test func aWindowDeniesOutsideItsHoursInItsTimeZoneAcrossDST() async throws {
        let micros = { (iso: String) in Int64(ISO8601DateFormatter().date(from: iso)!.timeIntervalSince1970) * 1_000_000 }
        let clock = ManualClock(micros: micros("2027-03-26T06:59:00Z"))
        let grant = "{ capability: pay:charge, window: { days: [mon-fri], hours: \"08:00-19:00\", tz: Europe/Berlin } }"
        let d = try TestDaemon(policy: Self.policy(grant), clock: clock)
        let a = d.client(as: Users.agent!)
        let steps: [(String, Lanyard_V1_Decision)] = [
            ("2027-03-26T06:59:00Z", .deny), ("2027-03-26T07:00:00Z", .allow), ("2027-03-27T10:00:00Z", .deny),
            ("2027-03-29T05:59:00Z", .deny), ("2027-03-29T06:00:00Z", .allow),
        ]
        for (instant, expected) in steps {
            clock.advance(seconds: (micros(instant) - clock.nowMicros()) / 1_000_000)
            let r = try await Self.charge(a)
            #expect(r.decision == expected, "\(instant): \(r.reason)")
            if expected == .deny { #expect(r.reason.hasPrefix("outside the grant's window (mon-fri 08:00-19:00 Europe/Berlin)")) }
        }
        await a.close()
        await d.stop()
    }

    static func approve(_ d: TestDaemon, _ id: String) async throws {
        var approve = Lanyard_V1_AdminRequest()
        approve.approvalDecide = .with { $0.approvalID = id; $0.approve = true }
        _ = try await d.admin(as: Users.other!).call(approve)
    }

    /// An approved window overrun lifts the window only: every limit is checked, so the
    /// rate still refuses (DENY, not another approval), and a negative or wrong-unit amount
    /// is refused outside the window too.
    @Test func anApprovedWindowOverrunLiftsNoOtherLimit() async throws {
        let micros = { (iso: String) in Int64(ISO8601DateFormatter().date(from: iso)!.timeIntervalSince1970) * 1_000_000 }
        let clock = ManualClock(micros: micros("2027-03-27T10:00:00Z"))  // a Saturday
        let grant = """
            { capability: pay:charge, rate: 1/day, budget: { amount: 10, unit: USD, per: day }, \
            window: { days: [mon-fri], hours: "08:00-19:00", tz: UTC }, outside_window: approval }
            """
        let d = try TestDaemon(policy: Self.policy(grant), clock: clock)
        let a = d.client(as: Users.agent!)
        let asked = try await Self.charge(a, amount: 5)
        #expect(asked.decision == .pending && asked.reason.hasPrefix("outside the grant's window"), "\(asked.reason)")
        try await Self.approve(d, asked.approvalID)
        #expect(try await Self.charge(a, amount: 5, approvalID: asked.approvalID).decision == .allow)
        #expect(try Self.counters(d) == ["calls": 1, "spent": 5])
        let again = try await Self.charge(a, amount: 1)
        #expect(again.decision == .deny && again.reasonCode == "rate_limited", "\(again.reason)")
        let negative = try await Self.charge(a, amount: -9_223_372_036_854_775_807)
        #expect(negative.decision == .deny && negative.reasonCode != "needs_approval", "\(negative.reason)")
        #expect(try Self.counters(d) == ["calls": 1, "spent": 5])
        await a.close()
        await d.stop()
    }

    /// Approvals asked for the risk alone do not lift a budget: used when the budget is
    /// already spent, the approval no longer matches the operation (approval_mismatch), and
    /// nothing is counted past the budget.
    @Test func anApprovalForTheRiskAloneLiftsNoBudget() async throws {
        let grant = "{ capability: pay:charge, risk: medium, budget: { amount: 10, unit: USD, per: day }, over_budget: approval }"
        let d = try TestDaemon(policy: Self.policy(grant), clock: ManualClock())
        let a = d.client(as: Users.agent!)
        let first = try await Self.charge(a, amount: 8)
        let second = try await Self.charge(a, amount: 8)
        #expect(first.decision == .pending && second.decision == .pending && first.approvalID != second.approvalID)
        try await Self.approve(d, first.approvalID)
        try await Self.approve(d, second.approvalID)
        #expect(try await Self.charge(a, amount: 8, approvalID: first.approvalID).decision == .allow)
        let over = try await Self.charge(a, amount: 8, approvalID: second.approvalID)
        #expect(over.decision == .deny && over.reasonCode == "approval_mismatch", "\(over.reasonCode): \(over.reason)")
        #expect(try Self.counters(d) == ["spent": 8])
        // Asked again, the overrun itself goes to an approver, who sees it; approved, it is counted.
        let overrun = try await Self.charge(a, amount: 8)
        #expect(overrun.decision == .pending && overrun.reason.hasPrefix("budget 10 USD per day exceeded"), "\(overrun.reason)")
        try await Self.approve(d, overrun.approvalID)
        #expect(try await Self.charge(a, amount: 8, approvalID: overrun.approvalID).decision == .allow)
        #expect(try Self.counters(d) == ["spent": 16])
        await a.close()
        await d.stop()
    }

    /// Provision counts against the same grant limits as Authorize (issue 19: "the amount of
    /// Authorize/Provision"): a rate shared by both, refused RESOURCE_EXHAUSTED with the
    /// reason code and the seconds to wait in the response; a budget spent exactly at its
    /// amount by 16 connections provisioning at once; a dry run of either moves nothing.
    @Test func provisionsCountAgainstTheGrantsLimits() async throws {
        let clock = ManualClock()
        clock.advance(seconds: 600)
        let rated = try TestDaemon(policy: Self.policy("{ capability: pay:charge, rate: 3/hour }"), clock: clock)
        let a = rated.client(as: Users.agent!)
        #expect(try await Self.charge(a).decision == .allow)
        for _ in 0..<2 { #expect(try await Self.provision(a).get().secret.hasPrefix("lyt_")) }
        #expect(try Self.counters(rated) == ["calls": 3])
        guard case .failure(let refused) = try await Self.provision(a) else { Issue.record("the 4th use was allowed"); return }
        #expect(refused.code == .resourceExhausted)
        #expect(refused.message == "rate limit 3/hour reached: the next call is possible in 3000 s")
        #expect(refused.provision?.reasonCode == "rate_limited")
        #expect(refused.provision?.retryAfterSeconds == 3000)
        #expect(refused.provision?.path.grant == "pay:charge")
        #expect(try Self.counters(rated) == ["calls": 3])
        let audited = try rated.daemon.store.queryAudit({ var f = AuditFilter(); f.limit = 100; return f }()).filter { $0.event == "provision" }
        #expect(audited.map(\.reasonCode) == ["granted", "granted", "rate_limited"])
        #expect(try rated.daemon.store.activeLeases(agent: "a").count == 2)
        await a.close()
        await rated.stop()

        let budget = try TestDaemon(policy: Self.policy("{ capability: pay:charge, budget: { amount: 500, unit: USD, per: day } }"), clock: ManualClock())
        let clients = (0..<16).map { _ in budget.client(as: Users.agent!) }
        let results = await withTaskGroup(of: [Result<Lanyard_V1_Lease, LanyardError>].self) { group in
            for client in clients {
                group.addTask {
                    await withTaskGroup(of: Result<Lanyard_V1_Lease, LanyardError>?.self) { calls in
                        for _ in 0..<10 { calls.addTask { try? await Self.provision(client, amount: 5) } }
                        return await calls.reduce(into: []) { if let r = $1 { $0.append(r) } }
                    }
                }
            }
            return await group.reduce(into: []) { $0 += $1 }
        }
        let refusals = results.compactMap { if case .failure(let e) = $0 { e } else { nil } }
        #expect(results.count == 160)
        #expect(results.count - refusals.count == 100)
        #expect(refusals.allSatisfy { $0.code == .resourceExhausted && $0.provision?.reasonCode == "budget_exceeded" })
        #expect(try Self.counters(budget) == ["spent": 500])
        guard case .failure(let missing) = try await Self.provision(clients[0]) else { Issue.record("a budgeted provision without an amount was allowed"); return }
        #expect(missing.message == "the grant has a budget of 500 USD per day: send the request's amount in USD")
        for c in clients { await c.close() }
        await budget.stop()
    }
}

extension LanyardError {
    /// The Provision body sent with a refusal's status.
    var provision: Lanyard_V1_ProvisionResponse? { (response as? Lanyard_V1_Response)?.provision }
}
