/// How a policy decides one request, for operators (`lanyardctl policy explain` and
/// `policy test`, issue 19): which agent is asked about, the grant, the risk and where it
/// came from, the route and the limits. Offline (a file) and online (the running policy)
/// both call `PolicyExplain.explain`, so they give the same answer.
public enum PolicyExplain {
    /// Who asks: an agent by name, or the facts of a caller process.
    public enum Subject: Sendable, Equatable {
        case agent(String)
        case facts(CallerFacts)
    }

    public struct Request: Sendable, Equatable {
        public var subject: Subject
        public var capability: String
        public var resource = ""
        public var args: [String: String] = [:]
        /// What a grant's budget would count ("" none) and when it is asked (nil: now):
        /// for the grant limits' part of the explanation.
        public var amount = ""
        public var atMicros: Int64?

        public init(subject: Subject, capability: String, resource: String = "", args: [String: String] = [:]) {
            self.subject = subject
            self.capability = capability
            self.resource = resource
            self.args = args
        }
    }

    public struct Explanation: Sendable, Equatable {
        /// The agent the request is decided for (nil: none is selected).
        public var agent: String?
        /// How the agent was selected, or why none was.
        public var selection: String
        public var verdict: Verdict
        /// auto / async approval / blocking quorum / denied.
        public var route: String
        public var limits: [String]

        /// The explanation as `policy explain` prints it.
        public var text: String {
            var lines = ["agent:    \(selection)"]
            if let path = verdict.path {
                let source = path.riskSource == .grant ? "raised by the grant from \(path.catalogRisk) in the catalog" : "from the catalog"
                lines.append("grant:    \(path.grant) (risk \(path.risk), \(source))")
            } else {
                lines.append("grant:    none")
            }
            lines.append("decision: \(verdict.decision.rawValue) (\(verdict.code.rawValue)): \(verdict.reason)")
            lines.append("route:    \(route)")
            lines.append("limits:   " + (limits.isEmpty ? "none" : limits.joined(separator: "; ")))
            return lines.joined(separator: "\n")
        }
    }

    public static func explain(_ request: Request, in policy: Policy) -> Explanation {
        let (agent, selection) = select(request.subject, in: policy)
        guard let agent else {
            let verdict = Verdict(.deny, risk: nil, reason: selection, code: .unauthenticated)
            return Explanation(agent: nil, selection: selection, verdict: verdict, route: "denied: no agent", limits: [])
        }
        let verdict: Verdict
        do {
            verdict = Authorizer.decide(try Capability(parsing: request.capability), for: agent, in: policy)
        } catch {
            verdict = Verdict(.deny, risk: nil, reason: error.description, code: .invalidArgument)
        }
        return Explanation(agent: agent.name, selection: selection, verdict: verdict, route: route(verdict, policy),
                           limits: limits(request, agent: agent, policy: policy))
    }

    /// The limits that apply to this request's grant, each as one phrase. Grant limits
    /// (rate, budget, window; issue 19) add theirs here.
    static func limits(_ request: Request, agent: Agent, policy: Policy) -> [String] {
        guard let cap = try? Capability(parsing: request.capability), let limits = agent.limits[cap] else { return [] }
        var out: [String] = []
        if let rate = limits.rate { out.append("rate \(rate.description)") }
        if let budget = limits.budget {
            out.append("budget \(budget.description)" + (limits.overBudgetNeedsApproval ? " (over it: an approver decides)" : " (over it: denied)"))
        }
        if let window = limits.window {
            let inside = request.atMicros.map { window.contains(micros: $0) ? ", inside it at the asked time" : ", outside it at the asked time" } ?? ""
            out.append("window \(window.text)" + (limits.outsideWindowNeedsApproval ? " (outside it: an approver decides" : " (outside it: denied") + "\(inside))")
        }
        return out
    }

    static func route(_ verdict: Verdict, _ policy: Policy) -> String {
        switch (verdict.decision, verdict.risk) {
        case (.deny, _): return "denied"
        case (.allow, _): return "auto (low risk)"
        case (.pending, .medium?): return "async approval: one approver, or a standing approval"
        case (.pending, _):
            let quorum = policy.approvers?.highRiskQuorum ?? 1
            return "blocking quorum: " + (quorum == 1 ? "an approver approves" : "\(quorum) distinct approvers approve") + " this exact operation, single use"
        }
    }

    /// The agent `subject` selects, and how, or nil and why none is.
    static func select(_ subject: Subject, in policy: Policy) -> (Agent?, String) {
        switch subject {
        case .agent(let name):
            guard let agent = policy.agent(named: name) else { return (nil, "no agent named '\(name)' in the policy") }
            return (agent, "\(name) (named)")
        case .facts(let facts):
            let sameUID = policy.agents.filter { $0.selector.uid == facts.uid }.sorted { $0.name < $1.name }
            guard !sameUID.isEmpty else { return (nil, "none: no agent has uid \(facts.uid)") }
            let possible = sameUID.filter { facts.contradiction(with: $0.selector) == nil }
            if possible.count > 1 {
                let names = possible.map(\.name).joined(separator: ", ")
                return (nil, "ambiguous: the facts match agents \(names); give the facts that tell them apart (exe=, unit=, gid=)")
            }
            guard let agent = possible.first else {
                let why = sameUID.map { "\($0.name): \(facts.contradiction(with: $0.selector) ?? "")" }.joined(separator: "; ")
                return (nil, "none: no agent of uid \(facts.uid) matches (\(why))")
            }
            if let missing = facts.missing(for: agent.selector) {
                return (nil, "none: agent \(agent.name) also requires \(missing), which the facts do not give")
            }
            return (agent, "\(agent.name) (selected by \(facts))")
        }
    }
}

/// The facts of a would-be caller, as an operator writes them: `uid=N,gid=N,exe=PATH,unit=NAME`.
/// `exe` matches a selector's path as written, `unit` the selector's unit name.
public struct CallerFacts: Sendable, Equatable, CustomStringConvertible {
    public var uid: UInt32
    public var gid: UInt32?
    public var exe: String?
    public var exeSHA256: String?
    public var unit: String?

    public init(uid: UInt32, gid: UInt32? = nil, exe: String? = nil, exeSHA256: String? = nil, unit: String? = nil) {
        self.uid = uid
        self.gid = gid
        self.exe = exe
        self.exeSHA256 = exeSHA256
        self.unit = unit
    }

    /// Parses `uid=1001,exe=/usr/bin/python3.11,...`, or says what is wrong.
    public init(parsing text: String) throws(FactsError) {
        var fields: [String: String] = [:]
        for part in text.split(separator: ",", omittingEmptySubsequences: true) {
            guard let eq = part.firstIndex(of: "="), !part[..<eq].isEmpty else { throw FactsError("'\(part)' is not key=value") }
            let key = String(part[..<eq])
            guard ["uid", "gid", "exe", "exe_sha256", "unit"].contains(key) else {
                throw FactsError("unknown fact '\(key)': use uid, gid, exe, exe_sha256 or unit")
            }
            guard fields[key] == nil else { throw FactsError("fact '\(key)' is given twice") }
            fields[key] = String(part[part.index(after: eq)...])
        }
        guard let uidText = fields["uid"], let uid = UInt32(uidText) else { throw FactsError("uid=N is required (a number)") }
        var gid: UInt32?
        if let g = fields["gid"] {
            guard let n = UInt32(g) else { throw FactsError("gid '\(g)' is not a number") }
            gid = n
        }
        self.init(uid: uid, gid: gid, exe: fields["exe"], exeSHA256: fields["exe_sha256"], unit: fields["unit"])
    }

    public var description: String {
        var parts = ["uid=\(uid)"]
        if let gid { parts.append("gid=\(gid)") }
        if let exe { parts.append("exe=\(exe)") }
        if let exeSHA256 { parts.append("exe_sha256=\(exeSHA256)") }
        if let unit { parts.append("unit=\(unit)") }
        return parts.joined(separator: ",")
    }

    /// Which given fact rules `selector` out, or nil when none does.
    func contradiction(with selector: Selector) -> String? {
        if selector.uid != uid { return "uid \(selector.uid), not \(uid)" }
        if let want = selector.gid, let gid, want != gid { return "gid \(want), not \(gid)" }
        if let want = selector.exe, let exe, want != exe { return "exe \(want), not \(exe)" }
        if let want = selector.exeSHA256, let exeSHA256, want.lowercased() != exeSHA256.lowercased() { return "exe_sha256 differs" }
        if let want = selector.unit, let unit, !Self.unit(want, is: unit) { return "unit \(want), not \(unit)" }
        return nil
    }

    /// A fact `selector` requires that is not given, or nil when all are.
    func missing(for selector: Selector) -> String? {
        if let want = selector.gid, gid == nil { return "gid=\(want)" }
        if let want = selector.exe, exe == nil { return "exe=\(want)" }
        if selector.exeSHA256 != nil, exeSHA256 == nil { return "exe_sha256=…" }
        if let want = selector.unit, unit == nil { return "unit=\(Self.name(of: want))" }
        return nil
    }

    static func name(of unit: UnitSelector) -> String {
        switch unit {
        case .system(let cgroup): UnitSelector.innermostUnit(cgroup) ?? cgroup
        case .user(let name): name
        }
    }

    static func unit(_ selector: UnitSelector, is name: String) -> Bool {
        if case .system(let cgroup) = selector, cgroup == name { return true }
        return Self.name(of: selector) == name
    }
}

public struct FactsError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
