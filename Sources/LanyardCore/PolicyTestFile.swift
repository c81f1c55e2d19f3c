
/// A policy test file (`lanyardctl policy test POLICY TESTS.yaml`, issue 19): cases that
/// each name a caller (an agent or facts), a request and the expected decision, risk and
/// reason code, run with `PolicyExplain` exactly as `policy explain` decides.
public struct PolicyTestFile: Sendable, Equatable {
    public struct Expectation: Sendable, Equatable {
        public var decision: Decision
        /// nil: not checked. `.some(nil)`: expected none (`risk: none`).
        public var risk: RiskLevel??
        public var code: ReasonCode?
    }

    public struct Case: Sendable, Equatable {
        public var name: String
        public var line: Int
        public var request: PolicyExplain.Request
        public var expect: Expectation
    }

    /// A case whose outcome is not the expected one: each differing field, expected vs actual.
    public struct Failure: Sendable, Equatable, CustomStringConvertible {
        public var name: String
        public var line: Int
        public var differences: [(field: String, expected: String, actual: String)]
        public var explanation: String

        public static func == (a: Failure, b: Failure) -> Bool { a.description == b.description }

        public var description: String {
            var lines = ["FAIL \(name) (line \(line))"]
            for d in differences { lines.append("  \(d.field): expected \(d.expected), got \(d.actual)") }
            lines.append(contentsOf: explanation.split(separator: "\n").map { "    \($0)" })
            return lines.joined(separator: "\n")
        }
    }

    public var cases: [Case]

    /// Parses a test file, or says where it is malformed (file:line).
    public static func parse(_ yaml: String, file: String) throws(PolicyError) -> PolicyTestFile {
        func fail(_ node: YAMLNode?, _ path: String, _ message: String) -> PolicyError {
            PolicyError(file: file, path: path, line: node?.mark?.line, message: message)
        }
        let root: YAMLNode?
        do { root = try YAML.compose(yaml) } catch { throw PolicyError(file: file, path: "", line: error.line, message: "not valid YAML: \(error.problem)") }
        guard let top = root?.mapping, let list = top["cases"] else { throw fail(root, "", "needs a top-level list `cases:`") }
        guard let items = list.sequence, !items.isEmpty else { throw fail(list, "cases", "must be a non-empty list of cases") }
        var cases: [Case] = []
        for (i, item) in items.enumerated() {
            let path = "cases[\(i)]"
            guard let m = item.mapping else { throw fail(item, path, "must be a mapping") }
            let allowed: Set<String> = ["name", "agent", "facts", "capability", "resource", "args", "amount", "time", "expect"]
            for key in m.keys { if let k = key.string, !allowed.contains(k) { throw fail(key, "\(path).\(k)", "unknown field: use \(allowed.sorted().joined(separator: ", "))") } }
            func text(_ key: String) throws(PolicyError) -> String? {
                guard let n = m[key] else { return nil }
                guard let s = n.scalar?.string else { throw fail(n, "\(path).\(key)", "must be a string") }
                return s
            }
            let subject: PolicyExplain.Subject
            switch (try text("agent"), try text("facts")) {
            case (let name?, nil): subject = .agent(name)
            case (nil, let facts?):
                do { subject = .facts(try CallerFacts(parsing: facts)) } catch { throw fail(m["facts"], "\(path).facts", error.description) }
            default: throw fail(item, path, "give exactly one of agent: NAME or facts: uid=N,...")
            }
            guard let capability = try text("capability") else { throw fail(item, "\(path).capability", "is required") }
            var request = PolicyExplain.Request(subject: subject, capability: capability, resource: try text("resource") ?? "")
            if let a = m["args"] {
                guard let am = a.mapping else { throw fail(a, "\(path).args", "must be a mapping of key: value") }
                for (k, v) in am {
                    guard let key = k.string, let value = v.scalar?.string else { throw fail(k, "\(path).args", "keys and values must be strings") }
                    request.args[key] = value
                }
            }
            request.amount = try text("amount") ?? ""
            if let t = m["time"] {
                guard let s = t.scalar?.string, let seconds = Int64(s), case let (micros, false) = seconds.multipliedReportingOverflow(by: 1_000_000) else {
                    throw fail(t, "\(path).time", "must be unix seconds")
                }
                request.atMicros = micros
            }
            guard let e = m["expect"], let em = e.mapping else { throw fail(item, "\(path).expect", "is required: {decision, risk, reason_code}") }
            for key in em.keys { if let k = key.string, !["decision", "risk", "reason_code"].contains(k) { throw fail(key, "\(path).expect.\(k)", "unknown field: use decision, risk, reason_code") } }
            guard let d = em["decision"]?.string, let decision = Decision(rawValue: d) else {
                throw fail(em["decision"] ?? e, "\(path).expect.decision", "is required: allow, deny or pending")
            }
            var expect = Expectation(decision: decision, risk: nil, code: nil)
            if let r = em["risk"] {
                guard let s = r.string else { throw fail(r, "\(path).expect.risk", "must be low, medium, high or none") }
                if s == "none" { expect.risk = .some(nil) } else {
                    guard let risk = RiskLevel(name: s) else { throw fail(r, "\(path).expect.risk", "'\(s)' is not low, medium, high or none") }
                    expect.risk = .some(risk)
                }
            }
            if let c = em["reason_code"] {
                guard let s = c.string, let code = ReasonCode(rawValue: s) else {
                    throw fail(c, "\(path).expect.reason_code", "'\(c.string ?? "")' is not a reason code: \(ReasonCode.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                expect.code = code
            }
            cases.append(Case(name: try text("name") ?? "\(path) \(capability)", line: item.mark?.line ?? 0, request: request, expect: expect))
        }
        return PolicyTestFile(cases: cases)
    }

    /// The failing cases against `policy` (empty: every case passes).
    public func run(against policy: Policy) -> [Failure] {
        cases.compactMap { c in
            let e = PolicyExplain.explain(c.request, in: policy)
            var diffs: [(String, String, String)] = []
            if e.verdict.decision != c.expect.decision { diffs.append(("decision", c.expect.decision.rawValue, e.verdict.decision.rawValue)) }
            if let risk = c.expect.risk, risk != e.verdict.risk {
                diffs.append(("risk", risk?.description ?? "none", e.verdict.risk?.description ?? "none"))
            }
            if let code = c.expect.code, code != e.verdict.code { diffs.append(("reason_code", code.rawValue, e.verdict.code.rawValue)) }
            return diffs.isEmpty ? nil : Failure(name: c.name, line: c.line, differences: diffs, explanation: e.text)
        }
    }
}
