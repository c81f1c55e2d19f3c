import Foundation
import LanyardCore
import Testing

private let policyText = """
trust_domain: t.internal
approvers: { uids: [5000], high_risk_quorum: 2 }
services:
  github: { kind: opaque }
  deploy: { kind: jwt }
capabilities:
  github:read_repo:  { risk: low }
  github:push:       { risk: medium }
  deploy:production: { risk: high }
agents:
  coder:
    uid: 1001
    exe: /usr/bin/python3
    grants: [github:read_repo, github:push, deploy:production]
  raised:
    uid: 1002
    grants:
      - { capability: github:read_repo, risk: high }
  helper:
    uid: 1001
    exe: /usr/bin/perl
    grants: [github:read_repo]

"""

private func policy(_ text: String = policyText) throws -> Policy {
    try PolicyParser.parse(text, file: "policy.yaml")
}

/// Issue 19, acceptance 1: every decision carries its reason code and what decided it.
struct ReasonCodeTests {
    /// capability × risk × grant → decision, code, and the deciding grant with its risk source.
    @Test(arguments: [
        ("coder", "github:read_repo", Decision.allow, RiskLevel?.some(.low), ReasonCode.granted, DecisionPath.RiskSource?.some(.catalog)),
        ("coder", "github:push", .pending, .medium, .needsApproval, .catalog),
        ("coder", "deploy:production", .pending, .high, .needsApproval, .catalog),
        ("coder", "github:nope", .deny, nil, .notInCatalog, nil),
        ("raised", "github:read_repo", .pending, .high, .needsApproval, .grant),  // the grant raised LOW to HIGH
        ("raised", "github:push", .deny, .medium, .notGranted, nil),
    ])
    func everyAuthorizerPathHasACode(agent: String, capability: String, decision: Decision, risk: RiskLevel?,
                                     code: ReasonCode, source: DecisionPath.RiskSource?) throws {
        let p = try policy()
        let v = Authorizer.decide(try Capability(parsing: capability), for: try #require(p.agent(named: agent)), in: p)
        #expect(v.decision == decision)
        #expect(v.risk == risk)
        #expect(v.code == code)
        #expect(v.path?.riskSource == source)
        #expect(v.path.map(\.grant.name) == (source == nil ? nil : capability))
    }

    /// × limits: a grant's limit over its verdict. Over a limit, ALLOW and PENDING become
    /// DENY with the limit's code, or (an overrun routed to approval) PENDING — an ALLOW then
    /// waits as MEDIUM; DENY stays what it was. What decided it (the grant) is kept.
    @Test(arguments: [
        ("github:read_repo", LimitCheck.within, Decision.allow, ReasonCode.granted, false),
        ("github:read_repo", .over(code: .rateLimited, reason: "r", needsApproval: false), .deny, .rateLimited, false),
        ("github:read_repo", .over(code: .budgetExceeded, reason: "b", needsApproval: false), .deny, .budgetExceeded, false),
        ("github:read_repo", .over(code: .budgetExceeded, reason: "b", needsApproval: true), .pending, .needsApproval, true),
        ("github:read_repo", .over(code: .outsideWindow, reason: "w", needsApproval: false), .deny, .outsideWindow, false),
        ("github:read_repo", .over(code: .outsideWindow, reason: "w", needsApproval: true), .pending, .needsApproval, true),
        ("github:push", .over(code: .rateLimited, reason: "r", needsApproval: false), .deny, .rateLimited, false),
        ("github:push", .over(code: .budgetExceeded, reason: "b", needsApproval: true), .pending, .needsApproval, true),
        ("deploy:production", .over(code: .outsideWindow, reason: "w", needsApproval: true), .pending, .needsApproval, true),
        ("github:nope", .over(code: .rateLimited, reason: "r", needsApproval: false), .deny, .notInCatalog, false),
    ])
    func limitsOverEveryVerdictHaveACode(capability: String, check: LimitCheck, decision: Decision, code: ReasonCode, overrun: Bool) throws {
        let p = try policy()
        let decided = Authorizer.decide(try Capability(parsing: capability), for: try #require(p.agent(named: "coder")), in: p)
        let (v, routed) = decided.limited(by: check)
        #expect((v.decision, v.code, routed) == (decision, code, overrun))
        #expect(v.path == decided.path)
        if decided.decision == .allow, decision == .pending { #expect(v.risk == .medium) } else { #expect(v.risk == decided.risk) }
    }

    @Test func highWithoutApproversIsNoApprovers() throws {
        let p = try policy(policyText.replacingOccurrences(of: "approvers: { uids: [5000], high_risk_quorum: 2 }\n", with: ""))
        let v = Authorizer.decide(try Capability(parsing: "deploy:production"), for: try #require(p.agent(named: "coder")), in: p)
        #expect((v.decision, v.code, v.path?.risk) == (.deny, .noApprovers, .high))
        #expect(Authorizer.decide([], for: try #require(p.agent(named: "coder")), in: p).code == .invalidArgument)
    }

    /// approval state × use → the code of a refused use (approved and standing are set by
    /// the routes that use them: server and end-to-end tests).
    @Test func approvalStatesHaveCodes() throws {
        let t0: Int64 = 1_000_000
        func machine(_ state: ApprovalMachine.State) -> ApprovalMachine {
            ApprovalMachine(state: state, risk: .medium, digest: "D", requesterUID: 1001, quorum: 1, approvers: state == .approved ? [5000] : [],
                            expiresMicros: t0 + 100, timeoutMicros: 100)
        }
        func code(_ m: ApprovalMachine, digest: String = "D", at now: Int64 = t0, risk: RiskLevel = .medium) -> ReasonCode? {
            var m = m
            do { try m.consume(digest: digest, atMicros: now, risk: risk, quorum: 1) } catch { return error.code }
            return nil
        }
        #expect(code(machine(.approved)) == nil)
        #expect(code(machine(.consumed)) == .approvalConsumed)
        #expect(code(machine(.denied)) == .approvalDenied)
        #expect(code(machine(.pending)) == .approvalPending)
        #expect(code(machine(.approved), at: t0 + 100) == .approvalExpired)
        #expect(code(machine(.approved), digest: "other") == .approvalMismatch)
        #expect(code(machine(.approved), risk: .high) == .approvalMismatch)  // the policy raised the risk since
    }

    /// The raw names are stable: they are in audit records and operators' test files.
    @Test func rawNamesAreStable() {
        #expect(ReasonCode.allCases.map(\.rawValue).contains("not_granted"))
        #expect(Set(ReasonCode.allCases.map(\.rawValue)).count == ReasonCode.allCases.count)
        #expect(ReasonCode.allCases.allSatisfy { $0.rawValue.allSatisfy { $0.isLowercase || $0 == "_" } })
    }

    /// A record with a reason code hashes it; one without hashes exactly as before it existed.
    @Test func reasonCodeIsInTheChainHashOnlyWhenSet() {
        var r = AuditRecord(event: "authorize")
        r.decision = "allow"
        let before = r.canonicalBytes
        #expect(!String(decoding: before, as: UTF8.self).contains("reason_code"))
        r.reasonCode = "granted"
        #expect(String(decoding: r.canonicalBytes, as: UTF8.self).contains("reason_code=7:granted\n"))
    }
}

/// Issue 19, acceptance 3: `policy explain` names the agent, the grant, the risk and the route.
struct PolicyExplainTests {
    func explain(_ subject: PolicyExplain.Subject, _ capability: String) throws -> PolicyExplain.Explanation {
        PolicyExplain.explain(.init(subject: subject, capability: capability), in: try policy())
    }

    @Test func lowIsAutoByItsCatalogGrant() throws {
        let e = try explain(.agent("coder"), "github:read_repo")
        #expect(e.agent == "coder" && e.verdict.code == .granted && e.route.hasPrefix("auto"))
        #expect(e.text.contains("grant:    github:read_repo (risk low, from the catalog)"))
    }

    @Test func raisedToHighIsABlockingQuorum() throws {
        let e = try explain(.facts(CallerFacts(uid: 1002)), "github:read_repo")
        #expect(e.agent == "raised" && e.verdict.decision == .pending && e.verdict.path?.riskSource == .grant)
        #expect(e.text.contains("grant:    github:read_repo (risk high, raised by the grant from low in the catalog)"))
        #expect(e.route == "blocking quorum: 2 distinct approvers approve this exact operation, single use")
    }

    @Test func ungrantedNamesNoGrant() throws {
        let e = try explain(.agent("raised"), "github:push")
        #expect(e.verdict.code == .notGranted && e.verdict.path == nil && e.route == "denied")
        #expect(e.text.contains("grant:    none"))
        #expect(e.text.contains("agent 'raised' is not granted 'github:push'"))
    }

    @Test func mediumIsAnAsyncApproval() throws {
        let e = try explain(.facts(CallerFacts(uid: 1001, exe: "/usr/bin/python3")), "github:push")
        #expect(e.agent == "coder" && e.verdict.code == .needsApproval && e.route.hasPrefix("async approval"))
    }

    @Test func anAmbiguousSelectorIsExplained() throws {
        let e = try explain(.facts(CallerFacts(uid: 1001)), "github:read_repo")
        #expect(e.agent == nil && e.verdict.decision == .deny && e.verdict.code == .unauthenticated)
        #expect(e.selection == "ambiguous: the facts match agents coder, helper; give the facts that tell them apart (exe=, unit=, gid=)")
        #expect(try explain(.facts(CallerFacts(uid: 1001, exe: "/usr/bin/perl")), "github:read_repo").agent == "helper")
    }

    @Test func factsThatSelectNoAgentSayWhy() throws {
        #expect(try explain(.facts(CallerFacts(uid: 7)), "github:read_repo").selection == "none: no agent has uid 7")
        let e = try explain(.facts(CallerFacts(uid: 1001, exe: "/bin/sh")), "github:read_repo")
        #expect(e.selection.contains("coder: exe /usr/bin/python3, not /bin/sh"))
        #expect(try explain(.agent("ghost"), "github:read_repo").selection == "no agent named 'ghost' in the policy")
    }

    @Test func factsParse() throws {
        #expect(try CallerFacts(parsing: "uid=1001,gid=5,exe=/usr/bin/python3,unit=a.service")
            == CallerFacts(uid: 1001, gid: 5, exe: "/usr/bin/python3", unit: "a.service"))
        for bad in ["", "exe=/x", "uid=x", "uid=1,uid=2", "uid=1,color=red", "uid"] {
            #expect(throws: FactsError.self) { try CallerFacts(parsing: bad) }
        }
    }
}

/// Issue 19, acceptance 4 (the command's exits are in the end-to-end tests).
struct PolicyTestFileTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func example(_ name: String) throws -> String {
        try String(contentsOf: Self.root.appendingPathComponent("examples/\(name)"), encoding: .utf8)
    }

    @Test func theShippedExamplePasses() throws {
        let p = try PolicyParser.parse(try example("policy.yaml"), file: "policy.yaml")
        let file = try PolicyTestFile.parse(try example("policy.tests.yaml"), file: "policy.tests.yaml")
        #expect(file.cases.count >= 8)
        #expect(file.run(against: p).isEmpty)
    }

    @Test func aWrongExpectationFailsWithExpectedAndActual() throws {
        let file = try PolicyTestFile.parse("""
        cases:
          - name: raised reads without asking
            agent: raised
            capability: github:read_repo
            expect: { decision: allow, risk: low, reason_code: granted }
          - agent: coder
            capability: github:read_repo
            expect: { decision: allow }
        """, file: "t.yaml")
        let failures = file.run(against: try policy())
        #expect(failures.count == 1)
        #expect(failures.first?.description.hasPrefix("""
        FAIL raised reads without asking (line 2)
          decision: expected allow, got pending
          risk: expected low, got high
          reason_code: expected granted, got needs_approval
        """) == true)
    }

    @Test(arguments: [
        ("cases: [", "not valid YAML"),
        ("nothing: 1", "needs a top-level list `cases:`"),
        ("cases:\n  - capability: a:b\n    expect: { decision: allow }", "give exactly one of agent"),
        ("cases:\n  - agent: coder\n    capability: a:b\n    expect: { decision: maybe }", "t.yaml:4: cases[0].expect.decision"),
        ("cases:\n  - agent: coder\n    capability: a:b\n    expect: { decision: deny, reason_code: nope }", "is not a reason code"),
        ("cases:\n  - agent: coder\n    capability: a:b\n    colour: red\n    expect: { decision: deny }", "cases[0].colour: unknown field"),
    ])
    func aMalformedFileSaysWhere(_ text: String, _ message: String) {
        #expect {
            _ = try PolicyTestFile.parse(text, file: "t.yaml")
        } throws: { error in
            "\(error)".contains(message)
        }
    }
}
