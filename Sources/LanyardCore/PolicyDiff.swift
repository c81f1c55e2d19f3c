/// What changes between two policies, one line per change ("+ added", "- removed",
/// "~ changed"), for `lanyardctl policy diff`.
public enum PolicyDiff {
    public static func changes(from old: Policy, to new: Policy) -> [String] {
        var out: [String] = []
        if old.trustDomain != new.trustDomain {
            out.append("~ trust_domain: \(old.trustDomain) -> \(new.trustDomain) (every agent URI changes)")
        }
        if old.identityAlgorithm != new.identityAlgorithm {
            out.append("~ identity.alg: \(old.identityAlgorithm) -> \(new.identityAlgorithm) (the current identity key is retired; its tokens validate until they expire)")
        }
        if old.admins != new.admins { out.append("~ admins: \(describe(old.admins)) -> \(describe(new.admins))") }
        if old.approvers != new.approvers {
            out.append("~ approvers: \(old.approvers.map(describe) ?? "none") -> \(new.approvers.map(describe) ?? "none")")
        }
        diff(old.services, new.services, "service", &out) { a, b in
            "\(a.kind.rawValue) ttl \(a.defaultTTLSeconds)/\(a.maxTTLSeconds)s -> \(b.kind.rawValue) ttl \(b.defaultTTLSeconds)/\(b.maxTTLSeconds)s"
        }
        diff(Dictionary(uniqueKeysWithValues: old.capabilities.map { ($0.key.name, $0.value) }),
             Dictionary(uniqueKeysWithValues: new.capabilities.map { ($0.key.name, $0.value) }), "capability", &out) { "risk \($0) -> \($1)" }
        diff(old.mcpServers, new.mcpServers, "mcp_server", &out) { a, b in
            "\(a.tools.count) tools, \(a.credentials.count) credentials -> \(b.tools.count) tools, \(b.credentials.count) credentials"
                + (a.tools == b.tools && a.credentials == b.credentials ? " (show_ungranted_tools \(a.showUngrantedTools) -> \(b.showUngrantedTools))" : "")
        }
        let oldAgents = Dictionary(uniqueKeysWithValues: old.agents.map { ($0.name, $0) })
        let newAgents = Dictionary(uniqueKeysWithValues: new.agents.map { ($0.name, $0) })
        for name in Set(oldAgents.keys).union(newAgents.keys).sorted() {
            switch (oldAgents[name], newAgents[name]) {
            case (nil, let b?): out.append("+ agent \(name) (uid \(b.selector.uid), \(b.grants.count) grants)")
            case (_?, nil): out.append("- agent \(name)")
            case (let a?, let b?):
                if a.selector != b.selector { out.append("~ agent \(name): selectors changed") }
                if a.delegation != b.delegation { out.append("~ agent \(name): delegation \(describe(a.delegation)) -> \(describe(b.delegation))") }
                let caps = Set(a.grants.keys).union(b.grants.keys).sorted()
                for cap in caps {
                    switch (a.grants[cap], b.grants[cap]) {
                    case (nil, let r?): out.append("+ agent \(name): grant \(cap) [\(r)]")
                    case (_?, nil): out.append("- agent \(name): grant \(cap)")
                    case (let x?, let y?) where x != y: out.append("~ agent \(name): grant \(cap) risk \(x) -> \(y)")
                    default: break
                    }
                }
            default: break
            }
        }
        return out
    }

    private static func diff<V: Equatable>(_ a: [String: V], _ b: [String: V], _ what: String, _ out: inout [String], _ change: (V, V) -> String) {
        for key in Set(a.keys).union(b.keys).sorted() {
            switch (a[key], b[key]) {
            case (nil, _?): out.append("+ \(what) \(key)")
            case (_?, nil): out.append("- \(what) \(key)")
            case (let x?, let y?) where x != y: out.append("~ \(what) \(key): \(change(x, y))")
            default: break
            }
        }
    }

    private static func describe(_ d: Agent.Delegation?) -> String {
        d.map { "max_depth \($0.maxDepth), HIGH \($0.highRisk.map(\.name).sorted())" } ?? "none"
    }
    private static func describe(_ p: Policy.Principals) -> String { "uids \(p.uids) groups \(p.groups)" }
    private static func describe(_ a: Policy.Approvers) -> String {
        "\(describe(a.principals)) quorum \(a.highRiskQuorum) timeout \(a.timeoutSeconds)s"
            + " notify [\((a.notify.webhooks.map { "\($0.format.rawValue) webhook" } + a.notify.commands.map { "command \($0.argv[0])" }).joined(separator: ", "))]"
    }
}
