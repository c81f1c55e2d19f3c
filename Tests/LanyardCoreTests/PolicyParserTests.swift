import LanyardCore
import Testing

struct PolicyParserTests {
    static let header = """
    trust_domain: t.internal
    services:
      github: { kind: opaque }
    capabilities:
      github:read_repo: { risk: low }
      github:push: { risk: medium }

    """

    /// Each invalid policy, the field path it must name, a phrase of its message, and its line.
    @Test(arguments: [
        (header + "agents:\n  a: { uid: 1001, grants: [\"github:*\"] }\n", "agents.a.grants[0]", "wildcards are not allowed", 8),
        ("trust_domain: t\nservices: { github: { kind: opaque } }\ncapabilities:\n  \"github:*\": { risk: low }\n", "capabilities.github:*", "wildcards are not allowed", 4),
        (header + "agents:\n  root-agent: { uid: 0 }\n", "agents.root-agent.uid", "uid 0 (root) can never be an agent", 8),
        (header + "approvers: { uids: [1001] }\nagents:\n  a: { uid: 1001 }\n", "agents.a.uid", "also an approver", 9),
        (header + "agents:\n  a: { uid: 1001 }\n  b: { uid: 1001, exe: /usr/bin/python3 }\n", "agents.b", "selectors are ambiguous", 9),
        (header + "agents:\n  a: { uid: 1001, grants: [github:delete] }\n", "agents.a.grants[0]", "not in the capabilities catalog", 8),
        (header + "agents:\n  a: { uid: 1001, grants: [\"GitHub:Push\"] }\n", "agents.a.grants[0]", "malformed", 8),
        (header + "agents:\n  a: { uid: 1001, grants: [github] }\n", "agents.a.grants[0]", "2 to 4 segments", 8),
        ("trust_domain: t\nservices: { github: { kind: opaque } }\ncapabilities:\n  \"github:a:b:c:d\": { risk: low }\n", "capabilities.github:a:b:c:d", "2 to 4 segments", 4),
        (header + "agents:\n  a: { uid: 1001, grants: [{ capability: github:push, risk: low }] }\n", "agents.a.grants[0]", "never lower it", 8),
        (header + "agents:\n  a: { uid: 1001, exe: python3 }\n", "agents.a.exe", "absolute path", 8),
        (header + "agents:\n  a: { uid: 1001, unit: /user.slice/user-1001.slice/user@1001.service/x.service }\n", "agents.a.unit", "user_unit", 8),
        (header + "agents:\n  a: { uid: 1001, unit: ../x.service }\n", "agents.a.unit", "unit name", 8),
        (header + "agents:\n  a: { uid: 1001, unit: a.service, user_unit: a.service }\n", "agents.a.user_unit", "not both", 8),
        (header + "agents:\n  a: { uid: 1001, user_unit: a.target }\n", "agents.a.user_unit", "unit name", 8),
        (header + "agents:\n  a: { uid: 1001, grants: [github:push, github:push] }\n", "agents.a.grants[1]", "granted twice", 8),
        (header + "agents:\n  Bad_Name: { uid: 1001 }\n", "agents.Bad_Name", "not a slug", 8),
        (header + "agentz: {}\n", "agentz", "unknown field", 7),
        (header + "agents:\n  a: { uid: 01001 }\n", "agents.a.uid", "has a leading zero", 8),
        (header + "identity: { alg: HS256 }\n", "identity.alg", "not an identity token algorithm", 7),
        (header + "identity: {}\n", "identity.alg", "is required", 7),
        (header + "agents:\n  a: { uid: 1001, delegation: { max_depth: 4 } }\n", "agents.a.delegation.max_depth", "out of range", 8),
        (header + "agents:\n  a: { uid: 1001, delegation: {} }\n", "agents.a.delegation.max_depth", "is required", 8),
        (header + "agents:\n  a: { uid: 1001, delegation: { max_depth: 1, capabilities: [github:push] } }\n", "agents.a.delegation.capabilities[0]", "not granted", 8),
        (header + "agents:\n  a: { uid: 1001, grants: [github:push], delegation: { max_depth: 1, capabilities: [github:push] } }\n",
         "agents.a.delegation.capabilities[0]", "list only HIGH grants", 8),
        ("trust_domain: t\nservices: { github: { kind: opaque } }\ncapabilities:\n  other:read: { risk: low }\n", "capabilities.other:read", "not declared under services", 4),
        ("trust_domain: t\nservices:\n  github: { kind: opaque, max_ttl_seconds: 901 }\n", "services.github.max_ttl_seconds", "ceiling cannot be raised", 3),
        ("trust_domain: t\nservices:\n  github: { kind: magic }\n", "services.github.kind", "unknown kind", 3),
        // 200,000,000 days in microseconds overflows 64 bits: it trapped the maintenance pass.
        ("trust_domain: t\nservices:\n  github: { kind: opaque, rotation_days: 200000000 }\n", "services.github.rotation_days", "between 1 and 36500 days", 3),
        ("trust_domain: t\nservices:\n  github: { kind: jwt, single_use: true }\n", "services.github.single_use", "only opaque tokens", 3),
        ("trust_domain: t\nservices:\n  github: { kind: opaque, bind_to_process: sometimes }\n", "services.github.bind_to_process", "expected true or false", 3),
        ("trust_domain: t\napprovers: { uids: [5], high_risk_quorum: 3 }\n", "approvers.high_risk_quorum", "must be 1 or 2", 2),
        ("trust_domain: t\napprovers: { uids: [5], timeout_seconds: 1 }\n", "approvers.timeout_seconds", "between 5 and 86400", 2),
        ("services: {}\n", "trust_domain", "is required", 1),
        (header + "approvers:\n  uids: [5]\n  notify:\n    webhook: { url: \"http://x/\", format: teams }\n", "approvers.notify.webhook.format", "unknown format 'teams': use one of generic, slack, ntfy", 10),
        (header + "approvers:\n  uids: [5]\n  notify:\n    webhook: { format: slack }\n", "approvers.notify.webhook.url", "is required", 10),
        (header + "approvers:\n  uids: [5]\n  notify:\n    webhook: { url: \"ftp://x/\", format: slack }\n", "approvers.notify.webhook.url", "must start with http:// or https://", 10),
        (header + "approvers:\n  uids: [5]\n  notify:\n    webhook: { url: \"http://x/\" }\n", "approvers.notify.webhook.secret_file", "is required for the generic format", 10),
        (header + "approvers:\n  uids: [5]\n  notify:\n    webhook: { url: \"http://x/\", format: slack, secret_file: k }\n", "approvers.notify.webhook.secret_file", "absolute path", 10),
        (header + "approvers:\n  uids: [5]\n  notify:\n    webhook: { url: \"https://ntfy.sh\", format: ntfy }\n", "approvers.notify.webhook.topic", "is required for format: ntfy", 10),
        (header + "approvers:\n  uids: [5]\n  notify:\n    webhook: { url: \"https://ntfy.sh\", format: ntfy, topic: \"a/b\" }\n", "approvers.notify.webhook.topic", "not an ntfy topic", 10),
        (header + "approvers:\n  uids: [5]\n  notify:\n    webhook: { url: \"https://ntfy.sh/approvals\", format: ntfy, topic: approvals }\n", "approvers.notify.webhook.url", "must be the ntfy server's root", 10),
        (header + "approvers:\n  uids: [5]\n  notify:\n    webhook: { url: \"http://x/\", format: slack, topic: t }\n", "approvers.notify.webhook.topic", "is for format: ntfy only", 10),
        (header + "approvers:\n  uids: [5]\n  notify:\n    webhook: { url: \"http://x/\", format: slack, formt: x }\n", "approvers.notify.webhook.formt", "unknown field", 10),
        (header + "approvers:\n  uids: [5]\n  notify:\n    command: { argv: [notify-send, hi] }\n", "approvers.notify.command.argv[0]", "must be an absolute path", 10),
        (header + "approvers:\n  uids: [5]\n  notify:\n    command: { argv: [] }\n", "approvers.notify.command.argv", "is empty", 10),
        (header + "approvers:\n  uids: [5]\n  notify:\n    command: { timeout_seconds: 5 }\n", "approvers.notify.command.argv", "is required", 10),
        (header + "approvers:\n  uids: [5]\n  notify:\n    command: { argv: [/usr/bin/true], timeout_seconds: 0 }\n", "approvers.notify.command.timeout_seconds", "between 1 and 300 seconds, got 0", 10),
        (header + "approvers:\n  uids: [5]\n  notify:\n    command: { argv: [/usr/bin/true], timeout_seconds: 301 }\n", "approvers.notify.command.timeout_seconds", "between 1 and 300 seconds, got 301", 10),
        (header + "approvers:\n  uids: [5]\n  notify:\n    command: [{ argv: [/bin/true] }, { argv: [true] }]\n", "approvers.notify.command[1].argv[0]", "must be an absolute path", 10),
        (header + "approvers:\n  uids: [5]\n  notify:\n    command: [{ argv: [/bin/true] }, { argv: [/bin/true] }, { argv: [/bin/true] }, { argv: [/bin/true] }, { argv: [/bin/true] }, { argv: [/bin/true] }, { argv: [/bin/true] }, { argv: [/bin/true] }, { argv: [/bin/true] }]\n", "approvers.notify", "at most 8 webhooks and commands together, got 9", 10),
        (header + "approvers:\n  uids: [5]\n  notify:\n    console_url: \"javascript:alert(1)\"\n", "approvers.notify.console_url", "must be an http:// or https:// URL", 10),
        (header + "approvers:\n  uids: [5]\n  notify:\n    console_url: \"http://x/\\\">\"\n", "approvers.notify.console_url", "must be an http:// or https:// URL", 10),
        (header + "approvers:\n  uids: [5]\n  notify:\n    email: { to: me }\n", "approvers.notify.email", "unknown field", 10),
        ("trust_domain: t\ncapabilities:\n  github:read: { risk: extreme }\n", "capabilities.github:read", "not declared", 3),
    ])
    func refused(_ yaml: String, path: String, phrase: String, line: Int) {
        do {
            _ = try PolicyParser.parse(yaml, file: "/etc/lanyard/policy.yaml")
            Issue.record("accepted an invalid policy; expected \(path): \(phrase)")
        } catch {
            #expect(error.file == "/etc/lanyard/policy.yaml")
            #expect(error.path == path)
            #expect(error.message.contains(phrase), "message was: \(error.message)")
            #expect(error.line == line)
            #expect(error.description.hasPrefix("/etc/lanyard/policy.yaml:\(line): \(path): "))
        }
    }

    @Test func identityAlgorithmAndDelegationParse() throws {
        let p = try PolicyParser.parse(Self.header + """
        identity: { alg: ES256 }
        agents:
          a: { uid: 1001, grants: [{ capability: github:push, risk: high }, github:read_repo], delegation: { max_depth: 3, capabilities: [github:push] } }
          b: { uid: 1002 }
        """, file: "p.yaml")
        #expect(p.identityAlgorithm == "ES256")
        #expect(p.agent(named: "a")?.delegation == Agent.Delegation(maxDepth: 3, highRisk: [try Capability(parsing: "github:push")]))
        #expect(p.agent(named: "b")?.delegation == nil)
        let plain = try PolicyParser.parse(Self.header + "agents:\n  a: { uid: 1001 }\n  b: { uid: 1002 }\n", file: "p.yaml")
        #expect(plain.identityAlgorithm == "EdDSA")
        let changes = PolicyDiff.changes(from: plain, to: p)
        #expect(changes.contains { $0.hasPrefix("~ identity.alg: EdDSA -> ES256") })
        #expect(changes.contains("~ agent a: delegation none -> max_depth 3, HIGH [\"github:push\"]"))
    }

    @Test func notYAMLIsReportedWithItsLine() {
        do {
            _ = try PolicyParser.parse("trust_domain: t\nagents: [unclosed\n", file: "p.yaml")
            Issue.record("accepted broken YAML")
        } catch {
            #expect(error.message.hasPrefix("not valid YAML"))
            #expect(error.line != nil)
        }
    }

    @Test func designExampleParses() throws {
        let p = try PolicyParser.parse("""
        trust_domain: example.internal
        admins:
          groups: [lanyard-admin]
        approvers:
          uids: [1000]
          groups: [lanyard-approvers]
          high_risk_quorum: 1
          timeout_seconds: 300
          notify:
            webhook: { url: "http://127.0.0.1:9000/approvals", secret_file: /etc/lanyard/webhook.key }
        services:
          github:   { kind: opaque, default_ttl_seconds: 300, max_ttl_seconds: 900, rotation_days: 30 }
          deploy:   { kind: jwt,    default_ttl_seconds: 120 }
          openai:   { kind: static }
        capabilities:
          github:read_repo:   { risk: low }
          github:push:        { risk: medium }
          deploy:production:  { risk: high }
        agents:
          coder:
            uid: 1001
            exe: /usr/bin/python3.12
            grants: [github:read_repo, github:push]
          releaser:
            uid: 1002
            grants: [deploy:production]
        """, file: "p.yaml")
        #expect(p.trustDomain == "example.internal")
        #expect(p.agents.map(\.name).sorted() == ["coder", "releaser"])
        #expect(p.services["deploy"]?.defaultTTLSeconds == 120)
        #expect(p.services["openai"]?.defaultTTLSeconds == 300)
        #expect(p.approvers?.notify.webhooks.map(\.url) == ["http://127.0.0.1:9000/approvals"])
        #expect(p.approvers?.notify.webhooks.first?.format == .generic)
        #expect(p.agent(named: "coder")?.uri(trustDomain: p.trustDomain) == "spiffe://example.internal/agent/coder")
    }

    /// `approvers.notify`: several webhooks (one or a list) and commands side by side.
    @Test func notifiersOfEveryFormatParse() throws {
        let p = try PolicyParser.parse(Self.header + """
        approvers:
          uids: [5]
          notify:
            console_url: http://127.0.0.1:8484/
            webhook:
              - { url: "https://hooks.slack.com/services/T0/B0/x", format: slack }
              - { url: "https://ntfy.sh", format: ntfy, topic: lanyard-approvals, token_file: /etc/lanyard/ntfy.token }
              - { url: "http://127.0.0.1:9000/approvals", secret_file: /etc/lanyard/webhook.key }
            command: { argv: [/usr/bin/apprise, -vv], timeout_seconds: 30 }
        """, file: "p.yaml")
        let notify = try #require(p.approvers?.notify)
        #expect(notify.consoleURL == "http://127.0.0.1:8484/")
        #expect(notify.webhooks.map(\.format) == [.slack, .ntfy, .generic])
        #expect(notify.webhooks.map(\.secretFile) == [nil, nil, "/etc/lanyard/webhook.key"])
        #expect(notify.webhooks[1].topic == "lanyard-approvals" && notify.webhooks[1].tokenFile == "/etc/lanyard/ntfy.token")
        #expect(notify.commands == [.init(argv: ["/usr/bin/apprise", "-vv"], timeoutSeconds: 30)])
        let defaults = try PolicyParser.parse(Self.header + "approvers:\n  uids: [5]\n  notify: { command: { argv: [/usr/bin/notify-send] } }\n", file: "p")
        #expect(defaults.approvers?.notify.commands.first?.timeoutSeconds == 10)
        #expect(PolicyDiff.changes(from: defaults, to: p).contains {
            $0.hasPrefix("~ approvers: ") && $0.hasSuffix("notify [slack webhook, ntfy webhook, generic webhook, command /usr/bin/apprise]")
        })
    }

    @Test func diffNamesEachChange() throws {
        let old = try PolicyParser.parse(Self.header + "agents:\n  a: { uid: 1001, grants: [github:read_repo] }\n", file: "old")
        let new = try PolicyParser.parse(Self.header.replacingOccurrences(of: "github:push: { risk: medium }", with: "github:push: { risk: high }")
            + "agents:\n  a: { uid: 1001, grants: [github:push] }\n  b: { uid: 1002 }\n", file: "new")
        let changes = PolicyDiff.changes(from: old, to: new)
        #expect(changes.contains("~ capability github:push: risk medium -> high"))
        #expect(changes.contains("+ agent a: grant github:push [high]"))
        #expect(changes.contains("- agent a: grant github:read_repo"))
        #expect(changes.contains { $0.hasPrefix("+ agent b") })
        #expect(PolicyDiff.changes(from: old, to: old).isEmpty)
    }

    @Test func auditCanonicalFormCoversEveryField() {
        var a = AuditRecord(event: "authorize")
        a.seq = 1
        a.prevHash = AuditRecord.genesisHash
        let base = a.canonicalBytes
        var edits: [(inout AuditRecord) -> Void] = [
            { $0.seq = 2 }, { $0.timeMicros = 1 }, { $0.event = "x" }, { $0.agentID = "x" }, { $0.agent = "x" },
            { $0.uid = 1 }, { $0.gid = 1 }, { $0.pid = 1 }, { $0.capability = "x" }, { $0.resource = "x" },
            { $0.decision = "x" }, { $0.reason = "x" }, { $0.outcome = "x" }, { $0.leaseID = "x" },
            { $0.approvalID = "x" }, { $0.approver = "x" }, { $0.policyVersion = "x" }, { $0.prevHash = "x" },
        ]
        for i in edits.indices {
            var b = a
            edits[i](&b)
            #expect(b.canonicalBytes != base, "edit \(i) not covered by the hash")
        }
        edits.removeAll()
    }
}

/// The `openbao` section of a service (issue 9).
struct OpenBaoPolicyTests {
    static func service(_ openbao: String) -> String {
        "trust_domain: t\nservices:\n  db:\n    kind: openbao\n    openbao: \(openbao)\n"
    }

    @Test func bothModesParse() throws {
        let kv = try PolicyParser.parse(Self.service("""
            { addresses: ["https://bao-1.internal:8200/", "https://bao-2.internal:8200"], mode: kv, kv_path: lanyard/db,
              auth: { approle: { role_id_file: /etc/lanyard/role-id, secret_id_file: openbao-secret-id } }, ca_file: /etc/lanyard/ca.pem, timeout_ms: 1500 }
            """), file: "p").services["db"]!.openbao!
        #expect(kv.addresses == ["https://bao-1.internal:8200", "https://bao-2.internal:8200"])
        #expect(kv.mode == .kv && kv.kvMount == "secret" && kv.kvPath == "lanyard/db" && kv.kvField == "value")
        #expect(kv.auth == .appRole(roleIDFile: "/etc/lanyard/role-id", secretIDFile: "openbao-secret-id"))
        #expect(kv.caFile == "/etc/lanyard/ca.pem" && kv.timeoutMs == 1500)

        let token = try PolicyParser.parse(Self.service("""
            { addresses: ["http://127.0.0.1:8200"], mode: token, token_policies: [agents-ro, ci], auth: { token_file: /etc/lanyard/bao.token } }
            """), file: "p").services["db"]!.openbao!
        #expect(token.mode == .token && token.tokenPolicies == ["agents-ro", "ci"] && token.timeoutMs == 2000)
        #expect(token.auth == .tokenFile("/etc/lanyard/bao.token"))
    }

    static let auth = "auth: { token_file: /t }"

    @Test(arguments: [
        ("{ mode: kv, kv_path: a, \(auth) }", "services.db.openbao.addresses", "is required"),
        ("{ addresses: [], mode: kv, kv_path: a, \(auth) }", "services.db.openbao.addresses", "at least one"),
        ("{ addresses: [\"bao:8200\"], mode: kv, kv_path: a, \(auth) }", "services.db.openbao.addresses[0]", "http:// or https:// origin"),
        ("{ addresses: [\"http://bao/v1\"], mode: kv, kv_path: a, \(auth) }", "services.db.openbao.addresses[0]", "no path"),
        ("{ addresses: [\"http://b\"], mode: dynamic, \(auth) }", "services.db.openbao.mode", "use kv or token"),
        ("{ addresses: [\"http://b\"], mode: kv, \(auth) }", "services.db.openbao.kv_path", "is required for mode kv"),
        ("{ addresses: [\"http://b\"], mode: kv, kv_path: \"../sys/raw\", \(auth) }", "services.db.openbao.kv_path", "may hold only"),
        ("{ addresses: [\"http://b\"], mode: token, \(auth) }", "services.db.openbao.token_policies", "is required for mode token"),
        ("{ addresses: [\"http://b\"], mode: token, token_policies: [a], kv_path: x, \(auth) }", "services.db.openbao.kv_path", "does not apply to mode token"),
        ("{ addresses: [\"http://b\"], mode: kv, kv_path: a }", "services.db.openbao.auth", "is required"),
        ("{ addresses: [\"http://b\"], mode: kv, kv_path: a, auth: { token_file: /t, approle: { role_id_file: /r, secret_id_file: /s } } }", "services.db.openbao.auth", "exactly one"),
        ("{ addresses: [\"http://b\"], mode: kv, kv_path: a, auth: { token_file: etc/token } }", "services.db.openbao.auth.token_file", "absolute path"),
        ("{ addresses: [\"http://b\"], mode: kv, kv_path: a, \(auth), timeout_ms: 90000 }", "services.db.openbao.timeout_ms", "between 100 and 60000"),
    ])
    func refused(_ openbao: String, path: String, phrase: String) {
        do {
            _ = try PolicyParser.parse(Self.service(openbao), file: "p")
            Issue.record("accepted \(openbao)")
        } catch {
            #expect(error.path == path)
            #expect(error.message.contains(phrase), "message was: \(error.message)")
        }
    }

    @Test func kindAndSectionGoTogether() {
        #expect(throws: PolicyError.self) { try PolicyParser.parse("trust_domain: t\nservices:\n  db: { kind: openbao }\n", file: "p") }
        #expect(throws: PolicyError.self) {
            try PolicyParser.parse("trust_domain: t\nservices:\n  db: { kind: opaque, openbao: { mode: kv } }\n", file: "p")
        }
    }
}
