import Foundation
import LanyardCore
import Testing

/// Grant limits (issue 19, acceptance 5), decided offline: the policy's syntax and its
/// file:line errors, fixed UTC periods, and windows read in their time zone across DST.
struct GrantLimitsTests {
    static let header = """
    trust_domain: t.internal
    services:
      pay: { kind: opaque }
    capabilities:
      pay:charge: { risk: low }

    agents:
      a:
        uid: 1001
        grants:

    """

    static func policy(_ grant: String) throws -> Policy {
        try PolicyParser.parse(header + "      - " + grant + "\n", file: "p.yaml")
    }

    /// UTC microseconds of an ISO 8601 instant.
    static func micros(_ iso: String) -> Int64 {
        Int64(ISO8601DateFormatter().date(from: iso)!.timeIntervalSince1970) * 1_000_000
    }

    @Test func rateBudgetAndWindowAreParsed() throws {
        let p = try Self.policy("""
            { capability: pay:charge, rate: 60/hour, budget: { amount: 500, unit: USD, per: day }, over_budget: approval,
                  window: { days: [mon-fri], hours: "08:00-19:00", tz: Europe/Berlin } }
            """)
        let limits = try #require(p.agent(named: "a")?.limits[try Capability(parsing: "pay:charge")])
        #expect(limits.rate == .init(count: 60, period: .hour))
        #expect(limits.budget == .init(amount: 500, unit: "USD", period: .day))
        #expect(limits.overBudgetNeedsApproval && !limits.outsideWindowNeedsApproval)
        #expect(limits.window?.days == [2, 3, 4, 5, 6] && limits.window?.startMinute == 480 && limits.window?.endMinute == 1140)
        #expect(limits.window?.timeZone.identifier == "Europe/Berlin")
    }

    /// Each invalid limit names its field, says what is wrong, and gives the grant's line (11).
    @Test(arguments: [
        ("{ capability: pay:charge, rate: 60/week }", "agents.a.grants[0].rate", "COUNT/minute"),
        ("{ capability: pay:charge, rate: 0/hour }", "agents.a.grants[0].rate", "not a rate"),
        ("{ capability: pay:charge, budget: { amount: 5, unit: USD } }", "agents.a.grants[0].budget", "needs amount, unit and per"),
        ("{ capability: pay:charge, budget: { amount: -5, unit: USD, per: day } }", "agents.a.grants[0].budget.amount", "positive"),
        ("{ capability: pay:charge, budget: { amount: 5, unit: USD, per: week } }", "agents.a.grants[0].budget.per", "unknown period"),
        ("{ capability: pay:charge, over_budget: approval }", "agents.a.grants[0].over_budget", "set budget"),
        ("{ capability: pay:charge, budget: { amount: 5, unit: USD, per: day }, over_budget: maybe }", "agents.a.grants[0].over_budget", "deny or approval"),
        ("{ capability: pay:charge, window: { days: [mon-fry], hours: \"08:00-19:00\", tz: UTC } }", "agents.a.grants[0].window.days[0]", "not a day"),
        ("{ capability: pay:charge, window: { days: [mon], hours: \"19:00-08:00\", tz: UTC } }", "agents.a.grants[0].window.hours", "start before the end"),
        ("{ capability: pay:charge, window: { days: [mon], hours: \"08:00-19:00\", tz: Europe/Atlantis } }", "agents.a.grants[0].window.tz", "unknown time zone"),
        ("{ capability: pay:charge, window: { days: [mon], hours: \"08:00-19:00\", tz: CEST } }", "agents.a.grants[0].window.tz", "unknown time zone"),
        ("{ capability: pay:charge, quota: 5 }", "agents.a.grants[0].quota", "unknown field"),
    ])
    func invalidLimitsAreLocated(grant: String, path: String, phrase: String) {
        #expect {
            _ = try Self.policy(grant)
        } throws: { error in
            guard let error = error as? PolicyError else { return false }
            #expect(error.path == path, "\(error)")
            #expect(error.message.contains(phrase), "\(error)")
            #expect(error.line == 11, "\(error)")
            return true
        }
    }

    /// The 61st decision in an hour is over, with the seconds until the hour's bucket ends.
    @Test func rateIsOverAfterItsCountWithTheTimeToWait() {
        var limits = GrantLimits()
        limits.rate = .init(count: 60, period: .hour)
        let now = Self.micros("2027-01-15T10:30:00Z")
        #expect(limits.check(amount: nil, used: LimitUsage(calls: 59), nowMicros: now) == .within)
        #expect(limits.check(amount: nil, used: LimitUsage(calls: 60), nowMicros: now)
                == .over(code: .rateLimited, reason: "rate limit 60/hour reached: the next call is possible in 1800 s", needsApproval: false))
        #expect(GrantLimits.Period.hour.start(of: now) == Self.micros("2027-01-15T10:00:00Z"))
        #expect(GrantLimits.Period.day.start(of: now) == Self.micros("2027-01-15T00:00:00Z"))
    }

    /// A budget allows exactly its amount; an overrun routes as the grant says; an amount in
    /// another unit, or none, is refused.
    /// Every limit is checked: an overrun that routes to approval never hides one that does
    /// not, and amounts that would overflow the counter are refused, never a trap.
    @Test func everyLimitIsCheckedAndAmountsCannotOverflow() {
        var limits = GrantLimits()
        limits.rate = .init(count: 1, period: .day)
        limits.budget = .init(amount: 500, unit: "USD", period: .day)
        limits.overBudgetNeedsApproval = true
        let now = Self.micros("2027-01-15T10:30:00Z")
        let codes = limits.overs(amount: (600, "USD"), used: LimitUsage(calls: 1), nowMicros: now).map(\.code)
        #expect(codes == [.rateLimited, .budgetExceeded])
        guard case .over(.rateLimited, _, false) = limits.check(amount: (600, "USD"), used: LimitUsage(calls: 1), nowMicros: now) else {
            Issue.record("a rate overrun hid behind an approvable budget overrun")
            return
        }
        let huge = limits.overs(amount: (.max, "USD"), used: LimitUsage(spent: 1), nowMicros: now)
        #expect(huge.map(\.code) == [.budgetExceeded] && huge.allSatisfy { !$0.needsApproval })
        #expect(limits.overs(amount: (-1, "USD"), used: LimitUsage(), nowMicros: now).map(\.needsApproval) == [false])
    }

    @Test func budgetAllowsExactlyItsAmount() {
        var limits = GrantLimits()
        limits.budget = .init(amount: 500, unit: "USD", period: .day)
        let now = Self.micros("2027-01-15T10:30:00Z")
        #expect(limits.check(amount: (5, "USD"), used: LimitUsage(spent: 495), nowMicros: now) == .within)
        guard case .over(.budgetExceeded, let reason, false) = limits.check(amount: (6, "USD"), used: LimitUsage(spent: 495), nowMicros: now) else {
            Issue.record("an overrun is not budget_exceeded")
            return
        }
        #expect(reason.contains("5 USD left"))
        limits.overBudgetNeedsApproval = true
        guard case .over(.budgetExceeded, _, true) = limits.check(amount: (6, "USD"), used: LimitUsage(spent: 495), nowMicros: now) else {
            Issue.record("over_budget: approval does not route to approval")
            return
        }
        for amount in [nil, (1, "EUR"), (-1, "USD")] as [(value: Int64, unit: String)?] {
            guard case .over(.budgetExceeded, _, false) = limits.check(amount: amount, used: LimitUsage(), nowMicros: now) else {
                Issue.record("amount \(String(describing: amount)) is not refused")
                return
            }
        }
    }

    /// mon-fri 08:00-19:00 Europe/Berlin: 08:00 local is 07:00 UTC in winter and 06:00 UTC in
    /// summer (the change of 28 March 2027), and weekends are outside.
    @Test(arguments: [
        ("2027-03-26T06:59:00Z", false),  // Friday 07:59 CET
        ("2027-03-26T07:00:00Z", true),  // Friday 08:00 CET
        ("2027-03-26T17:59:00Z", true),  // Friday 18:59 CET
        ("2027-03-26T18:00:00Z", false),  // Friday 19:00 CET
        ("2027-03-27T10:00:00Z", false),  // Saturday
        ("2027-03-28T10:00:00Z", false),  // Sunday, the day of the change
        ("2027-03-29T05:59:00Z", false),  // Monday 07:59 CEST
        ("2027-03-29T06:00:00Z", true),  // Monday 08:00 CEST (07:00 UTC a week before was outside by an hour)
        ("2027-03-29T16:59:00Z", true),  // Monday 18:59 CEST
        ("2027-03-29T17:00:00Z", false),  // Monday 19:00 CEST
        ("2027-10-29T06:30:00Z", true),  // Friday 08:30 CEST
        ("2027-11-01T06:30:00Z", false),  // Monday 07:30 CET, after the change back
        ("2027-11-01T07:30:00Z", true),  // Monday 08:30 CET
    ])
    func windowIsReadInItsTimeZoneAcrossDST(instant: String, inside: Bool) throws {
        let p = try Self.policy("{ capability: pay:charge, window: { days: [mon-fri], hours: \"08:00-19:00\", tz: Europe/Berlin } }")
        let limits = try #require(p.agent(named: "a")?.limits[try Capability(parsing: "pay:charge")])
        let check = limits.check(amount: nil, used: LimitUsage(), nowMicros: Self.micros(instant))
        if inside {
            #expect(check == .within)
        } else {
            guard case .over(.outsideWindow, let reason, false) = check else {
                Issue.record("\(instant) is not outside_window")
                return
            }
            #expect(reason.contains("mon-fri 08:00-19:00 Europe/Berlin"))
        }
    }

    /// A catalog entry's limits apply to every grant of it that sets none of its own.
    @Test func catalogLimitsAreTheDefaultOfItsGrants() throws {
        let p = try PolicyParser.parse("""
            trust_domain: t.internal
            services:
              pay: { kind: opaque }
            capabilities:
              pay:charge: { risk: low, rate: 10/minute }
            agents:
              a: { uid: 1001, grants: [pay:charge] }
              b: { uid: 1002, grants: [{ capability: pay:charge, rate: 2/day }] }
            """, file: "p.yaml")
        let cap = try Capability(parsing: "pay:charge")
        #expect(p.agent(named: "a")?.limits[cap]?.rate == .init(count: 10, period: .minute))
        #expect(p.agent(named: "b")?.limits[cap]?.rate == .init(count: 2, period: .day))
        #expect {
            _ = try PolicyParser.parse("trust_domain: t\nservices: { pay: { kind: opaque } }\ncapabilities:\n  pay:charge: { risk: low, rate: often }\n", file: "p.yaml")
        } throws: { error in
            (error as? PolicyError).map { $0.path == "capabilities.pay:charge.rate" && $0.line == 4 } ?? false
        }
    }

    @Test func dayRangesWrap() {
        #expect(GrantLimits.Window.days("fri-mon") == [6, 7, 1, 2])
        #expect(GrantLimits.Window.days("sun") == [1])
        #expect(GrantLimits.Window.days("monday") == nil)
    }
}
