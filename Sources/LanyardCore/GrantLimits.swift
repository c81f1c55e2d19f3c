/// What a grant may spend (issue 19): at most `rate` decisions per period, at most
/// `budget` of an amount per period, only inside `window`. Periods are fixed buckets
/// of UTC time (a minute, an hour, a day from midnight UTC).
public struct GrantLimits: Sendable, Equatable {
    public var rate: Rate?
    public var budget: Budget?
    public var window: Window?
    /// `over_budget: approval`: an overrun waits for an approver instead of being denied.
    public var overBudgetNeedsApproval = false
    /// `outside_window: approval`: outside the window waits for an approver instead of being denied.
    public var outsideWindowNeedsApproval = false

    public init() {}

    public var isEmpty: Bool { rate == nil && budget == nil && window == nil }

    public enum Period: String, Sendable, CaseIterable {
        case minute, hour, day

        public var seconds: Int64 {
            switch self {
            case .minute: 60
            case .hour: 3_600
            case .day: 86_400
            }
        }

        /// The start (UTC microseconds) of the bucket holding `micros`.
        public func start(of micros: Int64) -> Int64 {
            let length = seconds * 1_000_000
            return micros - ((micros % length) + length) % length
        }

        public func end(of micros: Int64) -> Int64 { start(of: micros) + seconds * 1_000_000 }
    }

    /// `rate: 60/hour`.
    public struct Rate: Sendable, Equatable {
        public var count: Int64
        public var period: Period
        public init(count: Int64, period: Period) {
            self.count = count
            self.period = period
        }
        public var description: String { "\(count)/\(period.rawValue)" }

        /// Whole seconds from `nowMicros` until the next period starts (when a call is possible again).
        public func waitSeconds(nowMicros: Int64) -> Int64 { (period.end(of: nowMicros) - nowMicros + 999_999) / 1_000_000 }
    }

    /// `budget: {amount: 500, unit: USD, per: day}`.
    public struct Budget: Sendable, Equatable {
        public var amount: Int64
        public var unit: String
        public var period: Period
        public init(amount: Int64, unit: String, period: Period) {
            self.amount = amount
            self.unit = unit
            self.period = period
        }
        public var description: String { "\(amount) \(unit) per \(period.rawValue)" }
    }

    /// `window: {days: [mon-fri], hours: "08:00-19:00", tz: Europe/Berlin}`: the local
    /// days and times (start inclusive, end exclusive) in a named time zone.
    public struct Window: Sendable, Equatable {
        /// Calendar weekdays: 1 = Sunday ... 7 = Saturday.
        public var days: Set<Int>
        /// Minutes after local midnight.
        public var startMinute: Int
        public var endMinute: Int
        public var timeZone: ZoneInfo
        public var text: String

        public init(days: Set<Int>, startMinute: Int, endMinute: Int, timeZone: ZoneInfo, text: String) {
            self.days = days
            self.startMinute = startMinute
            self.endMinute = endMinute
            self.timeZone = timeZone
            self.text = text
        }

        /// Whether `micros` (UTC) falls inside the window, read in its time zone (DST by the zone's rules).
        public func contains(micros: Int64) -> Bool {
            let utc = micros / 1_000_000
            let local = utc + Int64(timeZone.offset(at: utc))
            let day = local >= 0 ? local / 86_400 : (local - 86_399) / 86_400
            guard days.contains(Civil.weekday(day) + 1) else { return false }
            let minute = Int(local - day * 86_400) / 60
            return minute >= startMinute && minute < endMinute
        }

        public static let dayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

        /// `mon`, `mon-fri` (wrapping, like `fri-mon`) as calendar weekdays, or nil.
        public static func days(_ item: String) -> [Int]? {
            let parts = item.lowercased().split(separator: "-", omittingEmptySubsequences: false).map(String.init)
            guard (1...2).contains(parts.count), let first = dayNames.firstIndex(of: parts[0]) else { return nil }
            guard parts.count == 2 else { return [first + 1] }
            guard let last = dayNames.firstIndex(of: parts[1]) else { return nil }
            var out: [Int] = []
            var d = first
            while true {
                out.append(d + 1)
                if d == last { return out }
                d = (d + 1) % 7
            }
        }

        /// `"08:00-19:00"` as minutes after midnight (start < end), or nil.
        public static func hours(_ text: String) -> (Int, Int)? {
            func minutes(_ s: Substring) -> Int? {
                let hm = s.split(separator: ":", omittingEmptySubsequences: false)
                guard hm.count == 2, hm[0].count == 2, hm[1].count == 2, let h = Int(hm[0]), let m = Int(hm[1]),
                      (0...24).contains(h), (0...59).contains(m), h * 60 + m <= 1_440 else { return nil }
                return h * 60 + m
            }
            let parts = text.split(separator: "-", omittingEmptySubsequences: false)
            guard parts.count == 2, let start = minutes(parts[0]), let end = minutes(parts[1]), start < end else { return nil }
            return (start, end)
        }
    }
}

/// What a grant's limits say of one request before it is counted.
public enum LimitCheck: Sendable, Equatable {
    case within
    /// Over a limit: DENY with `code` and `reason` (or, `needsApproval`, route to an approver).
    case over(code: ReasonCode, reason: String, needsApproval: Bool)
}

/// One limit a request is over.
public struct LimitOver: Sendable, Equatable {
    public var code: ReasonCode
    public var reason: String
    /// The grant routes this overrun to an approver (`over_budget`/`outside_window: approval`).
    public var needsApproval: Bool
}

/// The use of a grant counted so far in the current periods, and the periods they count in
/// (nil: none stored yet). A period stored later than the clock's (a commit after a
/// boundary, a clock stepped back) is the one counted into: a count never moves back.
public struct LimitUsage: Sendable, Equatable {
    public var calls: Int64
    public var spent: Int64
    public var callsPeriodStart: Int64?
    public var spentPeriodStart: Int64?
    public init(calls: Int64 = 0, spent: Int64 = 0, callsPeriodStart: Int64? = nil, spentPeriodStart: Int64? = nil) {
        self.calls = calls
        self.spent = spent
        self.callsPeriodStart = callsPeriodStart
        self.spentPeriodStart = spentPeriodStart
    }
}

extension GrantLimits {
    /// Every limit one request (its `amount`, if any: value and unit) at `nowMicros` is
    /// over, given `used`: the window, the rate, the budget — each checked, none skipped.
    public func overs(amount: (value: Int64, unit: String)?, used: LimitUsage, nowMicros: Int64) -> [LimitOver] {
        var out: [LimitOver] = []
        if let window, !window.contains(micros: nowMicros) {
            out.append(LimitOver(code: .outsideWindow, reason: "outside the grant's window (\(window.text)): ask again inside it",
                                 needsApproval: outsideWindowNeedsApproval))
        }
        if let rate, used.calls >= rate.count {
            out.append(LimitOver(code: .rateLimited, reason: "rate limit \(rate.description) reached: the next call is possible in \(rate.waitSeconds(nowMicros: nowMicros)) s",
                                 needsApproval: false))
        }
        if let budget {
            if let amount, amount.unit == budget.unit, amount.value >= 0 {
                let (left, overflow) = budget.amount.subtractingReportingOverflow(used.spent)
                let (_, past) = used.spent.addingReportingOverflow(amount.value)
                if overflow || past {
                    out.append(LimitOver(code: .budgetExceeded, reason: "the amount \(amount.value) cannot be counted against the budget of \(budget.description)",
                                         needsApproval: false))
                } else if amount.value > left {
                    out.append(LimitOver(code: .budgetExceeded,
                                         reason: "budget \(budget.description) exceeded: \(max(left, 0)) \(budget.unit) left of it, \(amount.value) asked",
                                         needsApproval: overBudgetNeedsApproval))
                }
            } else {
                out.append(LimitOver(code: .budgetExceeded, reason: "the grant has a budget of \(budget.description): send the request's amount in \(budget.unit)",
                                     needsApproval: false))
            }
        }
        return out
    }

    /// The limits' say on one request (`LimitCheck(overs:)` of its `overs`).
    public func check(amount: (value: Int64, unit: String)?, used: LimitUsage, nowMicros: Int64) -> LimitCheck {
        LimitCheck(overs: overs(amount: amount, used: used, nowMicros: nowMicros))
    }
}

extension LimitCheck {
    /// Within; or DENY for the first limit that no approval can lift; or, when every limit
    /// the request is over routes to an approver, an approval for all of them.
    public init(overs: [LimitOver]) {
        guard let first = overs.first else {
            self = .within
            return
        }
        if let hard = overs.first(where: { !$0.needsApproval }) {
            self = .over(code: hard.code, reason: hard.reason, needsApproval: false)
        } else {
            self = .over(code: first.code, reason: overs.map(\.reason).joined(separator: "; "), needsApproval: true)
        }
    }
}

extension Verdict {
    /// This verdict once its grant's limits are checked. Within them, or already DENY:
    /// unchanged. Over one: DENY with the limit's code — or, when the grant routes the
    /// overrun to an approver, PENDING (an ALLOW becomes a MEDIUM approval). `overrun`: it
    /// waits because of a limit, so no standing or process-lifetime approval may cover it.
    public func limited(by check: LimitCheck) -> (verdict: Verdict, overrun: Bool) {
        guard decision != .deny, case .over(let code, let reason, let needsApproval) = check else { return (self, false) }
        guard needsApproval else { return (routed(.deny, reason: reason, code: code), false) }
        guard decision == .allow else { return (routed(.pending, reason: "\(reason); \(self.reason)", code: self.code), true) }
        var pending = routed(.pending, reason: "\(reason); waiting for an approver", code: .needsApproval)
        pending.risk = .medium
        return (pending, true)
    }
}
