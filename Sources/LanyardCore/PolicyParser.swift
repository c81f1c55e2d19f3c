
/// A policy problem, located: file, field path and (where known) line.
public struct PolicyError: Error, CustomStringConvertible, Sendable {
    public var file: String
    public var path: String
    public var line: Int?
    public var message: String

    public init(file: String, path: String, line: Int?, message: String) {
        self.file = file
        self.path = path
        self.line = line
        self.message = message
    }

    public var description: String {
        let location = line.map { "\(file):\($0)" } ?? file
        return path.isEmpty ? "\(location): \(message)" : "\(location): \(path): \(message)"
    }
}

/// Parses and validates a policy file completely; either the whole policy is valid or
/// the first problem is reported with its location.
public enum PolicyParser {
    public static func parse(_ yaml: String, file: String) throws(PolicyError) -> Policy {
        var reader = Reader(file: file)
        return try reader.policy(yaml)
    }

    /// An agent (or sub-agent) name: lowercase [a-z0-9-], starting with a letter, at most 63 bytes.
    public static func isValidAgentName(_ s: String) -> Bool { Reader.isValidAgentName(s) }
}

private struct Reader {
    let file: String
    /// Each zone a window names, read once however many grants name it.
    let zones = ZoneCache()

    func fail(_ path: String, _ node: YAMLNode?, _ message: String) -> PolicyError {
        PolicyError(file: file, path: path, line: node?.mark?.line, message: message)
    }

    mutating func policy(_ yaml: String) throws(PolicyError) -> Policy {
        let root: YAMLNode?
        do {
            root = try YAML.compose(yaml)
        } catch {
            throw PolicyError(file: file, path: "", line: error.line, message: "not valid YAML: \(error.problem)")
        }
        guard let root else { throw fail("", nil, "the policy is empty; it needs at least trust_domain") }
        let top = try mapping(root, "", allowed: ["trust_domain", "admins", "approvers", "services", "capabilities", "agents", "mcp_servers", "identity", "service_units"])

        guard let td = top["trust_domain"] else { throw fail("trust_domain", root, "is required (for example: example.internal)") }
        let trustDomain = try string(td, "trust_domain")
        guard Self.isValidTrustDomain(trustDomain) else {
            throw fail("trust_domain", td, "'\(trustDomain)' is not a valid trust domain: lowercase letters, digits, '.', '-' and '_'")
        }

        let admins = try top["admins"].map { n throws(PolicyError) in try principals(n, "admins", extra: []) } ?? .init()
        let approvers = try top["approvers"].map { n throws(PolicyError) in try self.approvers(n) }
        let services = try top["services"].map { n throws(PolicyError) in try self.services(n) } ?? [:]
        // MCP server names first: a capability's service may be one of them.
        let serverNames = try top["mcp_servers"].map { n throws(PolicyError) in try mcpServerNames(n, services: services) } ?? []
        var catalogLimits: [Capability: GrantLimits] = [:]
        let catalog = try top["capabilities"].map { n throws(PolicyError) in
            try self.catalog(n, services: services, mcpServers: serverNames, limits: &catalogLimits)
        } ?? [:]
        let mcpServers = try top["mcp_servers"].map { n throws(PolicyError) in try self.mcpServers(n, services: services, catalog: catalog) } ?? [:]
        let agents = try top["agents"].map { n throws(PolicyError) in
            try self.agents(n, catalog: catalog, catalogLimits: catalogLimits, approvers: approvers)
        } ?? []

        var policy = Policy(trustDomain: trustDomain, admins: admins, approvers: approvers,
                            services: services, capabilities: catalog, agents: agents, mcpServers: mcpServers)
        if let n = top["identity"] { policy.identityAlgorithm = try identityAlgorithm(n) }
        if let n = top["service_units"] { policy.serviceUnits = try serviceUnits(n, agents: agents, services: services) }
        policy.buildIndexes()
        return policy
    }

    // MARK: Sections

    func principals(_ node: YAMLNode, _ path: String, extra: Set<String>) throws(PolicyError) -> Policy.Principals {
        let m = try mapping(node, path, allowed: Set(["uids", "groups"]).union(extra))
        var p = Policy.Principals()
        if let uids = m["uids"] {
            for (i, n) in try sequence(uids, "\(path).uids").enumerated() {
                p.uids.append(try uid(n, "\(path).uids[\(i)]"))
            }
        }
        if let groups = m["groups"] {
            for (i, n) in try sequence(groups, "\(path).groups").enumerated() {
                let g = try string(n, "\(path).groups[\(i)]")
                guard !g.isEmpty else { throw fail("\(path).groups[\(i)]", n, "group name is empty") }
                p.groups.append(g)
            }
        }
        return p
    }

    func approvers(_ node: YAMLNode) throws(PolicyError) -> Policy.Approvers {
        let path = "approvers"
        let m = try mapping(node, path, allowed: ["uids", "groups", "high_risk_quorum", "timeout_seconds", "notify"])
        let who = try principals(node, path, extra: ["high_risk_quorum", "timeout_seconds", "notify"])
        if let u = who.uids.first(where: { $0 == 0 }) {
            throw fail("approvers.uids", m["uids"], "uid \(u) (root) cannot be an approver: approvers are named humans")
        }
        let quorum = try m["high_risk_quorum"].map { n throws(PolicyError) in try int(n, "approvers.high_risk_quorum") } ?? 1
        guard (1...2).contains(quorum) else {
            throw fail("approvers.high_risk_quorum", m["high_risk_quorum"], "must be 1 or 2, got \(quorum)")
        }
        let timeout = try m["timeout_seconds"].map { n throws(PolicyError) in try int(n, "approvers.timeout_seconds") } ?? 300
        guard (5...86_400).contains(timeout) else {
            throw fail("approvers.timeout_seconds", m["timeout_seconds"], "must be between 5 and 86400 seconds, got \(timeout)")
        }
        var approvers = Policy.Approvers(principals: who, highRiskQuorum: quorum, timeoutSeconds: timeout)
        if let n = m["notify"] { approvers.notify = try notify(n) }
        return approvers
    }

    /// `approvers.notify`: `webhook` and `command`, each one entry or a list of them, and
    /// `console_url`.
    func notify(_ node: YAMLNode) throws(PolicyError) -> Policy.Notify {
        let path = "approvers.notify"
        let m = try mapping(node, path, allowed: ["webhook", "command", "console_url"])
        var notify = Policy.Notify()
        if let n = m["console_url"] {
            let url = try string(n, "\(path).console_url")
            guard Self.isHTTPURL(url), !url.contains(where: { "<>|\" ".contains($0) || $0.isWhitespace }) else {
                throw fail("\(path).console_url", n, "must be an http:// or https:// URL without spaces, quotes, '<', '>' or '|'")
            }
            notify.consoleURL = url
        }
        for (n, p) in try entries(m["webhook"], "\(path).webhook") { notify.webhooks.append(try webhook(n, p)) }
        for (n, p) in try entries(m["command"], "\(path).command") { notify.commands.append(try notifyCommand(n, p)) }
        guard notify.webhooks.count + notify.commands.count <= Policy.Notify.maxTargets else {
            throw fail(path, node, "at most \(Policy.Notify.maxTargets) webhooks and commands together, got \(notify.webhooks.count + notify.commands.count)")
        }
        return notify
    }

    /// One mapping or a list of them, each with its field path.
    func entries(_ node: YAMLNode?, _ path: String) throws(PolicyError) -> [(YAMLNode, String)] {
        guard let node else { return [] }
        guard case .sequence = node else { return [(node, path)] }
        return try sequence(node, path).enumerated().map { ($0.element, "\(path)[\($0.offset)]") }
    }

    func webhook(_ node: YAMLNode, _ path: String) throws(PolicyError) -> Policy.Webhook {
        let w = try mapping(node, path, allowed: ["url", "secret_file", "format", "topic", "token_file"])
        let format = try w["format"].map { n throws(PolicyError) in
            let name = try string(n, "\(path).format")
            guard let f = Policy.Webhook.Format(rawValue: name) else {
                throw fail("\(path).format", n, "unknown format '\(name)': use one of \(Policy.Webhook.Format.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return f
        } ?? .generic
        guard let url = w["url"] else { throw fail("\(path).url", node, "is required") }
        let urlString = try string(url, "\(path).url")
        guard Self.isHTTPURL(urlString) else { throw fail("\(path).url", url, "must start with http:// or https://") }
        var webhook = Policy.Webhook(url: urlString, secretFile: try w["secret_file"].map { n throws(PolicyError) in try absolutePath(n, "\(path).secret_file") },
                                     format: format)
        if format == .generic && webhook.secretFile == nil {
            throw fail("\(path).secret_file", node, "is required for the generic format: the HMAC key file")
        }
        if let n = w["topic"] {
            guard format == .ntfy else { throw fail("\(path).topic", n, "is for format: ntfy only") }
            let topic = try string(n, "\(path).topic")
            guard (1...64).contains(topic.utf8.count), topic.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-" || $0 == "_") }) else {
                throw fail("\(path).topic", n, "'\(topic)' is not an ntfy topic: 1 to 64 letters, digits, '-' and '_'")
            }
            webhook.topic = topic
        }
        if let n = w["token_file"] {
            guard format == .ntfy else { throw fail("\(path).token_file", n, "is for format: ntfy only") }
            webhook.tokenFile = try absolutePath(n, "\(path).token_file")
        }
        if format == .ntfy {
            guard webhook.topic != nil else { throw fail("\(path).topic", node, "is required for format: ntfy (the url is the server's root, e.g. https://ntfy.sh)") }
            let afterHost = urlString.drop { $0 != "/" }.dropFirst(2).drop { $0 != "/" }
            guard afterHost.isEmpty || afterHost == "/" else {
                throw fail("\(path).url", url, "must be the ntfy server's root (e.g. https://ntfy.sh): JSON is published there, the topic goes in topic:")
            }
        }
        return webhook
    }

    func notifyCommand(_ node: YAMLNode, _ path: String) throws(PolicyError) -> Policy.NotifyCommand {
        let c = try mapping(node, path, allowed: ["argv", "timeout_seconds"])
        guard let argvNode = c["argv"] else { throw fail("\(path).argv", node, "is required: the program and its arguments, e.g. [/usr/bin/notify-send, Lanyard]") }
        var argv: [String] = []
        for (i, n) in try sequence(argvNode, "\(path).argv").enumerated() {
            let arg = try string(n, "\(path).argv[\(i)]")
            guard !arg.utf8.contains(0) else { throw fail("\(path).argv[\(i)]", n, "contains a NUL byte") }
            argv.append(arg)
        }
        guard let program = argv.first else { throw fail("\(path).argv", argvNode, "is empty: name the program to run") }
        guard program.hasPrefix("/") else {
            throw fail("\(path).argv[0]", argvNode, "'\(program)' must be an absolute path: no shell and no PATH search run it")
        }
        guard argv.count <= 64 else { throw fail("\(path).argv", argvNode, "at most 64 arguments, got \(argv.count)") }
        let timeout = try c["timeout_seconds"].map { n throws(PolicyError) in try int(n, "\(path).timeout_seconds") } ?? Policy.NotifyCommand.defaultTimeoutSeconds
        let range = Policy.NotifyCommand.timeoutRange
        guard range.contains(timeout) else {
            throw fail("\(path).timeout_seconds", c["timeout_seconds"], "must be between \(range.lowerBound) and \(range.upperBound) seconds, got \(timeout)")
        }
        return .init(argv: argv, timeoutSeconds: timeout)
    }

    func absolutePath(_ node: YAMLNode, _ path: String) throws(PolicyError) -> String {
        let f = try string(node, path)
        guard f.hasPrefix("/") else { throw fail(path, node, "must be an absolute path") }
        return f
    }

    static func isHTTPURL(_ s: String) -> Bool { s.hasPrefix("http://") || s.hasPrefix("https://") }

    func services(_ node: YAMLNode) throws(PolicyError) -> [String: Policy.Service] {
        var out: [String: Policy.Service] = [:]
        for (key, value) in try pairs(node, "services") {
            let name = try string(key, "services")
            let path = "services.\(name)"
            guard Capability.isValidService(name) else {
                throw fail(path, key, "service name '\(name)' is malformed: lowercase [a-z0-9_-]+")
            }
            let m = try mapping(value, path, allowed: ["kind", "default_ttl_seconds", "max_ttl_seconds", "rotation_days", "single_use", "openbao", "bind_to_process"])
            guard let kindNode = m["kind"] else { throw fail("\(path).kind", value, "is required: one of opaque, jwt, static, openbao") }
            let kindName = try string(kindNode, "\(path).kind")
            guard let kind = Policy.Service.Kind(rawValue: kindName) else {
                throw fail("\(path).kind", kindNode, "unknown kind '\(kindName)': use one of opaque, jwt, static, openbao")
            }
            let maxTTL = try m["max_ttl_seconds"].map { n throws(PolicyError) in try int(n, "\(path).max_ttl_seconds") } ?? Policy.maxTTLCeilingSeconds
            guard (1...Policy.maxTTLCeilingSeconds).contains(maxTTL) else {
                throw fail("\(path).max_ttl_seconds", m["max_ttl_seconds"], "must be between 1 and \(Policy.maxTTLCeilingSeconds) seconds (the ceiling cannot be raised), got \(maxTTL)")
            }
            let defaultTTL = try m["default_ttl_seconds"].map { n throws(PolicyError) in try int(n, "\(path).default_ttl_seconds") }
                ?? min(Policy.defaultTTLSeconds, maxTTL)
            guard (1...maxTTL).contains(defaultTTL) else {
                throw fail("\(path).default_ttl_seconds", m["default_ttl_seconds"], "must be between 1 and max_ttl_seconds (\(maxTTL)), got \(defaultTTL)")
            }
            let rotation = try m["rotation_days"].map { n throws(PolicyError) in try int(n, "\(path).rotation_days") }
            // Bounded above too: the schedule is computed in microseconds, in 64 bits.
            if let rotation, !(1...36_500).contains(rotation) {
                throw fail("\(path).rotation_days", m["rotation_days"], "must be between 1 and 36500 days, got \(rotation)")
            }
            var openbao: Policy.OpenBao?
            if let n = m["openbao"] {
                guard kind == .openbao else { throw fail("\(path).openbao", n, "only a service of kind openbao takes an openbao section") }
                openbao = try self.openbao(n, "\(path).openbao")
            } else if kind == .openbao {
                throw fail("\(path).openbao", value, "is required for kind openbao: addresses, mode and auth")
            }
            var singleUse = false
            if let n = m["single_use"] {
                guard case .scalar = n, let b = n.bool else { throw fail("\(path).single_use", n, "expected true or false") }
                guard kind == .opaque || !b else { throw fail("\(path).single_use", n, "only opaque tokens can be single-use") }
                singleUse = b
            }
            out[name] = .init(name: name, kind: kind, defaultTTLSeconds: defaultTTL, maxTTLSeconds: maxTTL, rotationDays: rotation, singleUse: singleUse, openbao: openbao)
            if let n = m["bind_to_process"] {
                guard case .scalar = n, let b = n.bool else { throw fail("\(path).bind_to_process", n, "expected true or false") }
                out[name]?.requiresProcessBinding = b
            }
        }
        return out
    }

    func openbao(_ node: YAMLNode, _ path: String) throws(PolicyError) -> Policy.OpenBao {
        let m = try mapping(node, path, allowed: ["addresses", "mode", "kv_mount", "kv_path", "kv_field", "token_policies", "auth", "ca_file", "timeout_ms"])
        guard let addressesNode = m["addresses"] else { throw fail("\(path).addresses", node, "is required: the OpenBao API addresses, tried in order") }
        var addresses: [String] = []
        for (i, n) in try sequence(addressesNode, "\(path).addresses").enumerated() {
            let a = try string(n, "\(path).addresses[\(i)]")
            let origin = a.hasSuffix("/") ? String(a.dropLast()) : a
            let host = origin.split(separator: "://", maxSplits: 1).last ?? ""
            guard origin.hasPrefix("http://") || origin.hasPrefix("https://"), !host.isEmpty, !host.contains("/") else {
                throw fail("\(path).addresses[\(i)]", n, "'\(a)' must be an http:// or https:// origin such as https://bao.internal:8200 (no path)")
            }
            addresses.append(origin)
        }
        guard !addresses.isEmpty else { throw fail("\(path).addresses", addressesNode, "needs at least one address") }

        guard let modeNode = m["mode"] else { throw fail("\(path).mode", node, "is required: kv or token") }
        let modeName = try string(modeNode, "\(path).mode")
        guard let mode = Policy.OpenBao.Mode(rawValue: modeName) else { throw fail("\(path).mode", modeNode, "unknown mode '\(modeName)': use kv or token") }

        guard let authNode = m["auth"] else { throw fail("\(path).auth", node, "is required: token_file, or approle with role_id_file and secret_id_file") }
        let am = try mapping(authNode, "\(path).auth", allowed: ["token_file", "approle"])
        let auth: Policy.OpenBao.Auth
        switch (am["token_file"], am["approle"]) {
        case (let t?, nil):
            auth = .tokenFile(try secretFile(t, "\(path).auth.token_file"))
        case (nil, let a?):
            let ar = try mapping(a, "\(path).auth.approle", allowed: ["role_id_file", "secret_id_file"])
            guard let r = ar["role_id_file"] else { throw fail("\(path).auth.approle.role_id_file", a, "is required") }
            guard let s = ar["secret_id_file"] else { throw fail("\(path).auth.approle.secret_id_file", a, "is required") }
            auth = .appRole(roleIDFile: try secretFile(r, "\(path).auth.approle.role_id_file"),
                            secretIDFile: try secretFile(s, "\(path).auth.approle.secret_id_file"))
        default:
            throw fail("\(path).auth", authNode, "set exactly one of token_file and approle")
        }

        var config = Policy.OpenBao(addresses: addresses, mode: mode, auth: auth)
        let kvFields = ["kv_mount", "kv_path", "kv_field"], tokenFields = ["token_policies"]
        for field in (mode == .kv ? tokenFields : kvFields) where m[field] != nil {
            throw fail("\(path).\(field)", m[field], "does not apply to mode \(mode.rawValue)")
        }
        switch mode {
        case .kv:
            guard let p = m["kv_path"] else { throw fail("\(path).kv_path", node, "is required for mode kv: the secret's path under kv_mount") }
            config.kvPath = try pathSegment(p, "\(path).kv_path", allowSlash: true)
            if let n = m["kv_mount"] { config.kvMount = try pathSegment(n, "\(path).kv_mount", allowSlash: true) }
            if let n = m["kv_field"] {
                config.kvField = try string(n, "\(path).kv_field")
                guard !config.kvField.isEmpty else { throw fail("\(path).kv_field", n, "is empty") }
            }
        case .token:
            guard let p = m["token_policies"] else { throw fail("\(path).token_policies", node, "is required for mode token: the OpenBao policies of each lease's token") }
            for (i, n) in try sequence(p, "\(path).token_policies").enumerated() {
                config.tokenPolicies.append(try pathSegment(n, "\(path).token_policies[\(i)]", allowSlash: false))
            }
            guard !config.tokenPolicies.isEmpty else { throw fail("\(path).token_policies", p, "needs at least one policy") }
        }
        if let n = m["ca_file"] {
            let f = try string(n, "\(path).ca_file")
            guard f.hasPrefix("/") else { throw fail("\(path).ca_file", n, "must be an absolute path") }
            config.caFile = f
        }
        if let n = m["timeout_ms"] {
            config.timeoutMs = try int(n, "\(path).timeout_ms")
            guard (100...60_000).contains(config.timeoutMs) else {
                throw fail("\(path).timeout_ms", n, "must be between 100 and 60000, got \(config.timeoutMs)")
            }
        }
        return config
    }

    /// An absolute path, or a systemd credential name (no '/').
    func secretFile(_ node: YAMLNode, _ path: String) throws(PolicyError) -> String {
        let f = try string(node, path)
        guard !f.isEmpty, f.hasPrefix("/") || !f.contains("/") else {
            throw fail(path, node, "must be an absolute path, or the name of a systemd credential (LoadCredential=)")
        }
        return f
    }

    /// A name or path that goes into an OpenBao URL: letters, digits, '-', '_', '.', and '/' between segments.
    func pathSegment(_ node: YAMLNode, _ path: String, allowSlash: Bool) throws(PolicyError) -> String {
        let s = try string(node, path)
        let segments = s.split(separator: "/", omittingEmptySubsequences: false)
        let ok = !s.isEmpty && (allowSlash || segments.count == 1) && segments.allSatisfy { seg in
            !seg.isEmpty && seg != "." && seg != ".." && seg.utf8.allSatisfy { c in
                (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
                    || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || c == UInt8(ascii: "-") || c == UInt8(ascii: "_") || c == UInt8(ascii: ".")
            }
        }
        guard ok else { throw fail(path, node, "'\(s)' may hold only letters, digits, '-', '_' and '.'\(allowSlash ? ", with '/' between segments" : "")") }
        return s
    }

    /// The capabilities catalog; `limits` gets each entry's limits (the default of its grants).
    func catalog(_ node: YAMLNode, services: [String: Policy.Service], mcpServers: Set<String>,
                 limits: inout [Capability: GrantLimits]) throws(PolicyError) -> [Capability: RiskLevel] {
        var out: [Capability: RiskLevel] = [:]
        for (key, value) in try pairs(node, "capabilities") {
            let raw = try string(key, "capabilities")
            let path = "capabilities.\(raw)"
            let cap = try capability(raw, path, key)
            guard services[cap.service] != nil || mcpServers.contains(cap.service) else {
                throw fail(path, key, "service '\(cap.service)' is not declared under services (nor is it an MCP server under mcp_servers)")
            }
            let m = try mapping(value, path, allowed: ["risk", "description", "rate", "budget", "over_budget", "window", "outside_window"])
            guard let riskNode = m["risk"] else { throw fail("\(path).risk", value, "is required: low, medium or high") }
            out[cap] = try risk(riskNode, "\(path).risk")
            let entryLimits = try grantLimits(m, path)
            if !entryLimits.isEmpty { limits[cap] = entryLimits }
        }
        return out
    }

    /// The names of `mcp_servers:` (slugs, none also a service's name).
    func mcpServerNames(_ node: YAMLNode, services: [String: Policy.Service]) throws(PolicyError) -> Set<String> {
        var names: Set<String> = []
        for (key, _) in try pairs(node, "mcp_servers") {
            let name = try string(key, "mcp_servers")
            let path = "mcp_servers.\(name)"
            guard Capability.isValidService(name), name.utf8.count <= 63 else {
                throw fail(path, key, "MCP server name '\(name)' is malformed: lowercase [a-z0-9_-], at most 63 characters (it is the first segment of its tools' capabilities)")
            }
            guard services[name] == nil else {
                throw fail(path, key, "'\(name)' is also a service under services: capabilities '\(name):...' would mean both; name the server differently (for example \(name)-mcp)")
            }
            names.insert(name)
        }
        return names
    }

    func mcpServers(_ node: YAMLNode, services: [String: Policy.Service], catalog: [Capability: RiskLevel]) throws(PolicyError) -> [String: Policy.McpServer] {
        var out: [String: Policy.McpServer] = [:]
        for (key, value) in try pairs(node, "mcp_servers") {
            let name = try string(key, "mcp_servers")
            let path = "mcp_servers.\(name)"
            var server = Policy.McpServer(name: name)
            if case .scalar(let s) = value, s.string.isEmpty || s.string == "~" || s.string == "null" {
                out[name] = server  // `files:` alone: every tool by its default capability
                continue
            }
            let m = try mapping(value, path, allowed: ["show_ungranted_tools", "tools", "env", "files"])
            if let n = m["show_ungranted_tools"] {
                guard case .scalar = n, let b = n.bool else { throw fail("\(path).show_ungranted_tools", n, "expected true or false") }
                server.showUngrantedTools = b
            }
            if let n = m["tools"] {
                let tools = try pairs(n, "\(path).tools")
                guard tools.count <= Policy.McpServer.maxTools else {
                    throw fail("\(path).tools", n, "lists \(tools.count) tools (limit \(Policy.McpServer.maxTools)); tools not listed map to \(name):TOOL")
                }
                for (k, v) in tools {
                    let tool = try string(k, "\(path).tools")
                    server.tools[tool] = try mcpTool(tool, v, server: name, "\(path).tools.\(tool)", k, catalog: catalog)
                }
            }
            for (field, target) in [("env", Policy.McpServer.Credential.Target.env), ("files", Policy.McpServer.Credential.Target.file)] {
                guard let n = m[field] else { continue }
                for (k, v) in try pairs(n, "\(path).\(field)") {
                    let targetName = try string(k, "\(path).\(field)")
                    let cpath = "\(path).\(field).\(targetName)"
                    if field == "env" { try envName(targetName, cpath, k) } else { try fileName(targetName, cpath, k) }
                    server.credentials.append(try mcpCredential(target(targetName), v, cpath, services: services, catalog: catalog))
                    guard server.credentials.count <= Policy.McpServer.maxCredentials else {
                        throw fail(cpath, k, "more than \(Policy.McpServer.maxCredentials) credentials for one server")
                    }
                }
            }
            out[name] = server
        }
        return out
    }

    func mcpTool(_ tool: String, _ node: YAMLNode, server: String, _ path: String, _ key: YAMLNode,
                 catalog: [Capability: RiskLevel]) throws(PolicyError) -> Policy.McpServer.Tool {
        guard Policy.McpServer.isToolName(tool) else {
            throw fail(path, key, "'\(tool)' is not an MCP tool name: 1 to 128 of A-Z a-z 0-9 _ . -")
        }
        let m = try mapping(node, path, allowed: ["capability", "resource", "bind"])
        let cap: Capability
        if let c = m["capability"] {
            cap = try capability(try string(c, "\(path).capability"), "\(path).capability", c)
        } else {
            guard let d = try? Capability(parsing: "\(server):\(tool)") else {
                throw fail(path, key, "tool name '\(tool)' is no capability segment (lowercase [a-z0-9_-]): give it a capability")
            }
            cap = d
        }
        guard catalog[cap] != nil else {
            throw fail(m["capability"] == nil ? path : "\(path).capability", m["capability"] ?? key,
                       "capability '\(cap)' is not in the capabilities catalog: add it there with its risk")
        }
        var spec = Policy.McpServer.Tool(capability: cap)
        if let n = m["resource"] { spec.resource = try argumentName(n, "\(path).resource") }
        if let n = m["bind"] {
            var names: [String] = []
            for (i, item) in try sequence(n, "\(path).bind").enumerated() {
                let arg = try argumentName(item, "\(path).bind[\(i)]")
                guard !names.contains(where: { $0.sameBytes(as: arg) }) else { throw fail("\(path).bind[\(i)]", item, "argument '\(arg)' is listed twice") }
                names.append(arg)
            }
            guard names.count <= Policy.McpServer.maxTools else { throw fail("\(path).bind", n, "binds \(names.count) arguments (limit \(Policy.McpServer.maxTools))") }
            spec.bind = names
        }
        return spec
    }

    /// The name of a tool's argument (a key of its arguments object).
    func argumentName(_ node: YAMLNode, _ path: String) throws(PolicyError) -> String {
        let s = try string(node, path)
        guard (1...128).contains(s.utf8.count), !s.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw fail(path, node, "an argument name is 1 to 128 bytes without control characters")
        }
        return s
    }

    /// Names a credential must never take: the loader's, the shell's and interpreters'
    /// start-up hooks, and what the gateway sets itself.
    static let refusedEnvNames: Set<String> = [
        "PATH", "HOME", "IFS", "ENV", "BASH_ENV", "SHELL", "SHELLOPTS", "BASHOPTS", "CDPATH", "GLOBIGNORE", "PS4", "PROMPT_COMMAND",
        "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "NODE_OPTIONS", "NODE_PATH", "PERL5LIB", "PERL5OPT", "PERLLIB", "RUBYOPT", "RUBYLIB",
        "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "GCONV_PATH", "LOCPATH", "NLSPATH", "HOSTALIASES", "RESOLV_HOST_CONF", "TMPDIR",
        "CREDENTIALS_DIRECTORY",
    ]
    static let refusedEnvPrefixes = ["LD_", "DYLD_", "BASH_FUNC_", "MALLOC_", "GLIBC_"]

    func envName(_ name: String, _ path: String, _ node: YAMLNode) throws(PolicyError) {
        let bytes = Array(name.utf8)
        let ok = (1...128).contains(bytes.count) && !(bytes[0] >= UInt8(ascii: "0") && bytes[0] <= UInt8(ascii: "9")) && bytes.allSatisfy {
            ($0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z")) || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || $0 == UInt8(ascii: "_")
        }
        guard ok else { throw fail(path, node, "'\(name)' is not an environment variable name: [A-Z_][A-Z0-9_]*, at most 128 characters") }
        guard !Self.refusedEnvNames.contains(name), !Self.refusedEnvPrefixes.contains(where: name.hasPrefix) else {
            throw fail(path, node, "'\(name)' changes how programs load or start (loader, shell or interpreter); a credential cannot take it, choose another name")
        }
    }

    func fileName(_ name: String, _ path: String, _ node: YAMLNode) throws(PolicyError) {
        let ok = (1...128).contains(name.utf8.count) && name != "." && name != ".." && name.utf8.allSatisfy {
            ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z")) || ($0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z"))
                || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-")
        }
        guard ok else { throw fail(path, node, "'\(name)' is not a file name: 1 to 128 of A-Z a-z 0-9 _ . - (one path component, not . or ..)") }
    }

    func mcpCredential(_ target: Policy.McpServer.Credential.Target, _ node: YAMLNode, _ path: String, services: [String: Policy.Service],
                       catalog: [Capability: RiskLevel]) throws(PolicyError) -> Policy.McpServer.Credential {
        let m = try mapping(node, path, allowed: ["service", "scope", "ttl_seconds"])
        guard let sn = m["service"] else { throw fail("\(path).service", node, "is required: the service whose credential the server gets") }
        let name = try string(sn, "\(path).service")
        guard let service = services[name] else { throw fail("\(path).service", sn, "service '\(name)' is not declared under services") }
        guard let scopeNode = m["scope"] else { throw fail("\(path).scope", node, "is required: the capabilities of \(name) the credential carries") }
        var scope: [Capability] = []
        for (i, item) in try sequence(scopeNode, "\(path).scope").enumerated() {
            let ipath = "\(path).scope[\(i)]"
            let cap = try capability(try string(item, ipath), ipath, item)
            guard cap.service == name else { throw fail(ipath, item, "capability '\(cap)' is not one of service '\(name)'") }
            guard catalog[cap] != nil else { throw fail(ipath, item, "capability '\(cap)' is not in the capabilities catalog: add it there with its risk") }
            guard !scope.contains(cap) else { throw fail(ipath, item, "capability '\(cap)' is listed twice") }
            scope.append(cap)
        }
        guard !scope.isEmpty else { throw fail("\(path).scope", scopeNode, "needs at least one capability of \(name)") }
        var credential = Policy.McpServer.Credential(target: target, service: name, scope: scope)
        if let n = m["ttl_seconds"] {
            let ttl = try int(n, "\(path).ttl_seconds")
            guard (1...service.maxTTLSeconds).contains(ttl) else {
                throw fail("\(path).ttl_seconds", n, "must be between 1 and the service's max_ttl_seconds (\(service.maxTTLSeconds)), got \(ttl)")
            }
            credential.ttlSeconds = ttl
        }
        return credential
    }

    /// `catalogLimits`: a grant without limits of its own takes its catalog entry's.
    func agents(_ node: YAMLNode, catalog: [Capability: RiskLevel], catalogLimits: [Capability: GrantLimits],
                approvers: Policy.Approvers?) throws(PolicyError) -> [Agent] {
        var out: [Agent] = []
        var keys: [String: YAMLNode] = [:]
        var byUID: [UInt32: [Int]] = [:]  // selectors overlap only on one uid
        for (key, value) in try pairs(node, "agents") {
            let name = try string(key, "agents")
            let path = "agents.\(name)"
            guard Self.isValidAgentName(name) else {
                throw fail(path, key, "agent name '\(name)' is not a slug: lowercase [a-z0-9-], starting with a letter, at most 63 characters")
            }
            let m = try mapping(value, path, allowed: ["uid", "gid", "exe", "exe_sha256", "unit", "user_unit", "grants", "delegation"])
            guard let uidNode = m["uid"] else { throw fail("\(path).uid", value, "is required: the uid the agent runs as") }
            let uid = try self.uid(uidNode, "\(path).uid")
            guard uid != 0 else { throw fail("\(path).uid", uidNode, "uid 0 (root) can never be an agent: run the agent as its own user") }
            if let approvers, approvers.principals.uids.contains(uid) {
                throw fail("\(path).uid", uidNode, "uid \(uid) is also an approver: an agent can never approve, give the human a different uid")
            }
            var selector = Selector(uid: uid)
            if let n = m["gid"] { selector.gid = try self.uid(n, "\(path).gid") }
            if let n = m["exe"] {
                let exe = try string(n, "\(path).exe")
                guard exe.hasPrefix("/") else { throw fail("\(path).exe", n, "must be an absolute path, got '\(exe)'") }
                selector.exe = exe
            }
            if let n = m["exe_sha256"] {
                let h = try string(n, "\(path).exe_sha256").lowercased()
                guard h.count == 64, h.allSatisfy(\.isHexDigit) else { throw fail("\(path).exe_sha256", n, "must be 64 hex digits (sha256sum of the binary)") }
                selector.exeSHA256 = h
            }
            switch (m["unit"], m["user_unit"]) {
            case (let n?, nil): selector.unit = try systemUnit(n, "\(path).unit")
            case (nil, let n?): selector.unit = .user(try unitName(n, "\(path).user_unit"))
            case (_?, let n?): throw fail("\(path).user_unit", n, "set unit (a system unit) or user_unit (a unit of the agent's own user manager), not both")
            case (nil, nil): break
            }
            var grants: [Capability: RiskLevel] = [:]
            var limits: [Capability: GrantLimits] = [:]
            if let g = m["grants"] {
                let items = try sequence(g, "\(path).grants")
                grants.reserveCapacity(items.count)  // sized once: no outgrown tables left between the policy's
                for (i, item) in items.enumerated() {
                    let gpath = "\(path).grants[\(i)]"
                    let (named, raised, limit) = try grant(item, gpath)
                    guard let entry = catalog.index(forKey: named) else {
                        throw fail(gpath, item, "capability '\(named)' is not in the capabilities catalog: add it there with its risk")
                    }
                    // The catalog's own key: every agent's grant of it shares one name's storage.
                    let (cap, base) = catalog[entry]
                    if let effective = limit.isEmpty ? catalogLimits[cap] : limit { limits[cap] = effective }
                    if let raised, raised < base {
                        throw fail(gpath, item, "a grant may raise the risk of '\(cap)' but never lower it (catalog: \(base), grant: \(raised))")
                    }
                    guard grants[cap] == nil else { throw fail(gpath, item, "capability '\(cap)' is granted twice") }
                    grants[cap] = max(base, raised ?? base)
                }
            }
            var agent = Agent(name: name, selector: selector, grants: grants)
            agent.limits = limits
            agent.delegation = try m["delegation"].map { n throws(PolicyError) in try delegation(n, "\(path).delegation", grants: grants) }
            agent.lines.reserveCapacity(m.count + 1)
            agent.lines[""] = key.mark?.line
            for (field, n) in m { agent.lines[field] = n.mark?.line }
            if let other = byUID[uid, default: []].lazy.map({ out[$0] }).first(where: { $0.selector.overlaps(selector) }) {
                throw fail(path, key, "selectors are ambiguous: a process could match both '\(other.name)' and '\(name)'; add an exe, gid, exe_sha256 or unit that tells them apart")
            }
            keys[name] = key
            byUID[uid, default: []].append(out.count)
            out.append(agent)
        }
        return out
    }

    /// `service_units: {UNIT: {ID: {agent, capability, ttl_seconds}}}`: each credential a LOW
    /// grant of a declared agent (a unit starts with no approver at hand).
    func serviceUnits(_ node: YAMLNode, agents: [Agent], services: [String: Policy.Service]) throws(PolicyError) -> [ServiceUnitCredential] {
        var out: [ServiceUnitCredential] = []
        for (unitKey, ids) in try pairs(node, "service_units") {
            let unit = try string(unitKey, "service_units")
            guard CredentialRequestAddress.isServiceUnitName(unit) else {
                throw fail("service_units.\(unit)", unitKey, "'\(unit)' is not a service unit name: NAME.service, as in LoadCredential= of that unit")
            }
            // systemd asks for a running unit, an instance (foo@bar.service), never the template.
            guard !unit.hasSuffix("@.service") else {
                throw fail("service_units.\(unit)", unitKey, "'\(unit)' is a template, which never runs: name each instance (NAME@INSTANCE.service) that gets the credential")
            }
            for (idKey, value) in try pairs(ids, "service_units.\(unit)") {
                let id = try string(idKey, "service_units.\(unit)")
                let path = "service_units.\(unit).\(id)"
                guard CredentialRequestAddress.isCredentialID(id) else {
                    throw fail(path, idKey, "'\(id)' is not a credential id: 1 to 64 letters, digits, '-', '_', '.' or '@' (the ID of LoadCredential=ID:...)")
                }
                let m = try mapping(value, path, allowed: ["agent", "capability", "ttl_seconds"])
                guard let agentNode = m["agent"] else { throw fail("\(path).agent", value, "is required: the agent (of agents:) the lease is issued to") }
                let agentName = try string(agentNode, "\(path).agent")
                guard let agent = agents.first(where: { $0.name == agentName }) else {
                    throw fail("\(path).agent", agentNode, "agent '\(agentName)' is not declared under agents:")
                }
                guard let capNode = m["capability"] else { throw fail("\(path).capability", value, "is required: a grant of agent '\(agentName)'") }
                let cap = try capability(try string(capNode, "\(path).capability"), "\(path).capability", capNode)
                guard let risk = agent.grants[cap] else {
                    throw fail("\(path).capability", capNode, "agent '\(agentName)' is not granted '\(cap)': grant it under agents.\(agentName).grants")
                }
                guard risk == .low else {
                    throw fail("\(path).capability", capNode, "'\(cap)' is \(risk) risk for agent '\(agentName)': a unit's credential must be a low-risk grant (nobody approves at unit start)")
                }
                guard let service = services[cap.service] else {
                    throw fail("\(path).capability", capNode, "service '\(cap.service)' is not declared under services:")
                }
                guard !service.requiresProcessBinding else {
                    throw fail("\(path).capability", capNode, "service '\(service.name)' binds every lease to its process (bind_to_process): a unit's credential is fetched by systemd, not by the unit's process")
                }
                var credential = ServiceUnitCredential(unit: unit, id: id, agent: agentName, capability: cap, line: idKey.mark?.line)
                if let n = m["ttl_seconds"] {
                    let ttl = try int(n, "\(path).ttl_seconds")
                    guard (1...service.maxTTLSeconds).contains(ttl) else {
                        throw fail("\(path).ttl_seconds", n, "must be between 1 and the service's max_ttl_seconds (\(service.maxTTLSeconds)), got \(ttl)")
                    }
                    credential.ttlSeconds = ttl
                }
                out.append(credential)
            }
        }
        return out
    }

    /// `identity: {alg: EdDSA | ES256}`.
    func identityAlgorithm(_ node: YAMLNode) throws(PolicyError) -> String {
        let m = try mapping(node, "identity", allowed: ["alg"])
        guard let n = m["alg"] else { throw fail("identity.alg", node, "is required: EdDSA or ES256 (SPIFFE JWT-SVID verifiers need ES256)") }
        let alg = try string(n, "identity.alg")
        guard Policy.identityAlgorithms.contains(alg) else {
            throw fail("identity.alg", n, "'\(alg)' is not an identity token algorithm: use EdDSA or ES256 (SPIFFE JWT-SVID verifiers need ES256)")
        }
        return alg
    }

    /// An agent's `delegation: {max_depth, capabilities}`; `capabilities` lists HIGH grants
    /// that may be delegated, so each must be a HIGH grant of the agent.
    func delegation(_ node: YAMLNode, _ path: String, grants: [Capability: RiskLevel]) throws(PolicyError) -> Agent.Delegation {
        let m = try mapping(node, path, allowed: ["max_depth", "capabilities"])
        guard let n = m["max_depth"] else { throw fail("\(path).max_depth", node, "is required: how deep sub-agents may chain (1 to \(Agent.Delegation.depthLimit))") }
        let depth = try int(n, "\(path).max_depth")
        guard (1...Agent.Delegation.depthLimit).contains(depth) else {
            throw fail("\(path).max_depth", n, "\(depth) is out of range: 1 to \(Agent.Delegation.depthLimit)")
        }
        var high: Set<Capability> = []
        if let list = m["capabilities"] {
            for (i, item) in try sequence(list, "\(path).capabilities").enumerated() {
                let ipath = "\(path).capabilities[\(i)]"
                let cap = try capability(try string(item, ipath), ipath, item)
                guard let risk = grants[cap] else { throw fail(ipath, item, "'\(cap)' is not granted to this agent: only its own grants can be delegated") }
                guard risk == .high else { throw fail(ipath, item, "'\(cap)' is \(risk) risk, delegable without being listed: list only HIGH grants here") }
                high.insert(cap)
            }
        }
        return Agent.Delegation(maxDepth: depth, highRisk: high)
    }

    /// `NAME.service` (a unit of system.slice) or a whole cgroup path such as
    /// `/agents.slice/NAME.service`; never a path into a user manager's delegated subtree.
    func systemUnit(_ node: YAMLNode, _ path: String) throws(PolicyError) -> UnitSelector {
        let s = try string(node, path)
        guard s.hasPrefix("/") else { return .system(cgroup: "/system.slice/" + (try unitName(node, path))) }
        let parts = s.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        let slices = parts.dropLast()
        guard let last = parts.last, Self.isUnitName(last), !slices.isEmpty,
              slices.allSatisfy({ $0.hasSuffix(".slice") && $0.count > 6 && !$0.contains("@") }) else {
            throw fail(path, node, "'\(s)' is not a unit's cgroup: use NAME.service (in system.slice) or /SLICE.slice/NAME.service; a user manager's unit goes under user_unit")
        }
        return .system(cgroup: s)
    }

    /// A systemd unit name: no '/', ending in .service or .scope.
    func unitName(_ node: YAMLNode, _ path: String) throws(PolicyError) -> String {
        let s = try string(node, path)
        guard Self.isUnitName(Substring(s)) else {
            throw fail(path, node, "must be a systemd unit name ending in .service or .scope, got '\(s)'")
        }
        return s
    }

    static func isUnitName(_ s: Substring) -> Bool {
        let stem = s.hasSuffix(".service") ? s.dropLast(8) : s.hasSuffix(".scope") ? s.dropLast(6) : ""
        return !stem.isEmpty && !s.contains("/") && stem != "." && stem != ".."
    }

    func grant(_ node: YAMLNode, _ path: String) throws(PolicyError) -> (Capability, RiskLevel?, GrantLimits) {
        if case .scalar = node {
            return (try capability(try string(node, path), path, node), nil, GrantLimits())
        }
        let m = try mapping(node, path, allowed: ["capability", "risk", "rate", "budget", "over_budget", "window", "outside_window"])
        guard let c = m["capability"] else { throw fail("\(path).capability", node, "is required") }
        let cap = try capability(try string(c, "\(path).capability"), "\(path).capability", c)
        let raised = try m["risk"].map { n throws(PolicyError) in try risk(n, "\(path).risk") }
        return (cap, raised, try grantLimits(m, path))
    }

    /// A grant's `rate`, `budget` (+ `over_budget`) and `window` (+ `outside_window`).
    func grantLimits(_ m: [String: YAMLNode], _ path: String) throws(PolicyError) -> GrantLimits {
        var limits = GrantLimits()
        if let n = m["rate"] {
            let s = try string(n, "\(path).rate")
            let parts = s.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 2, let count = Int64(parts[0].trimmed), count > 0,
                  let period = GrantLimits.Period(rawValue: String(parts[1].trimmed)) else {
                throw fail("\(path).rate", n, "'\(s)' is not a rate: write COUNT/minute, COUNT/hour or COUNT/day (for example 60/hour)")
            }
            limits.rate = .init(count: count, period: period)
        }
        if let n = m["budget"] {
            let bpath = "\(path).budget"
            let b = try mapping(n, bpath, allowed: ["amount", "unit", "per"])
            guard let a = b["amount"], let u = b["unit"], let p = b["per"] else {
                throw fail(bpath, n, "needs amount, unit and per (for example {amount: 500, unit: USD, per: day})")
            }
            let amount = try int(a, "\(bpath).amount")
            guard amount > 0 else { throw fail("\(bpath).amount", a, "must be a positive whole number") }
            let unit = try string(u, "\(bpath).unit")
            guard !unit.isEmpty, unit.utf8.count <= 16, unit.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
                throw fail("\(bpath).unit", u, "'\(unit)' is not a unit: 1-16 printable characters without spaces (for example USD)")
            }
            let per = try string(p, "\(bpath).per")
            guard let period = GrantLimits.Period(rawValue: per) else {
                throw fail("\(bpath).per", p, "unknown period '\(per)': use minute, hour or day")
            }
            limits.budget = .init(amount: Int64(amount), unit: unit, period: period)
        }
        limits.overBudgetNeedsApproval = try overrun(m["over_budget"], "\(path).over_budget", needs: limits.budget != nil, of: "budget")
        if let n = m["window"] { limits.window = try window(n, "\(path).window") }
        limits.outsideWindowNeedsApproval = try overrun(m["outside_window"], "\(path).outside_window", needs: limits.window != nil, of: "window")
        return limits
    }

    /// `over_budget` / `outside_window`: `deny` (the default) or `approval`.
    func overrun(_ node: YAMLNode?, _ path: String, needs present: Bool, of limit: String) throws(PolicyError) -> Bool {
        guard let node else { return false }
        guard present else { throw fail(path, node, "applies to a \(limit): set \(limit) on this grant, or remove it") }
        switch try string(node, path) {
        case "deny": return false
        case "approval": return true
        case let s: throw fail(path, node, "'\(s)' is not a route: use deny or approval")
        }
    }

    /// `window: {days: [mon-fri], hours: "08:00-19:00", tz: Europe/Berlin}`.
    func window(_ node: YAMLNode, _ path: String) throws(PolicyError) -> GrantLimits.Window {
        let w = try mapping(node, path, allowed: ["days", "hours", "tz"])
        guard let d = w["days"], let h = w["hours"], let z = w["tz"] else {
            throw fail(path, node, "needs days, hours and tz (for example {days: [mon-fri], hours: \"08:00-19:00\", tz: Europe/Berlin})")
        }
        var days: Set<Int> = []
        var dayTexts: [String] = []
        for (i, item) in try sequence(d, "\(path).days").enumerated() {
            let s = try string(item, "\(path).days[\(i)]")
            guard let some = GrantLimits.Window.days(s) else {
                throw fail("\(path).days[\(i)]", item, "'\(s)' is not a day: use mon, tue, wed, thu, fri, sat, sun or a range like mon-fri")
            }
            days.formUnion(some)
            dayTexts.append(s)
        }
        guard !days.isEmpty else { throw fail("\(path).days", d, "lists no day: name at least one") }
        let hours = try string(h, "\(path).hours")
        guard let (start, end) = GrantLimits.Window.hours(hours) else {
            throw fail("\(path).hours", h, "'\(hours)' is not a time range: write \"HH:MM-HH:MM\" with the start before the end (for example \"08:00-19:00\")")
        }
        let tz = try string(z, "\(path).tz")
        guard tz.contains("/") || tz == "UTC", let zone = zones.zone(tz) else {
            throw fail("\(path).tz", z, "unknown time zone '\(tz)': name one of the system's tz database (for example Europe/Berlin or UTC)")
        }
        return .init(days: days, startMinute: start, endMinute: end, timeZone: zone,
                     text: "\(dayTexts.joined(separator: ",")) \(hours) \(tz)")
    }

    // MARK: Scalars

    func capability(_ raw: String, _ path: String, _ node: YAMLNode?) throws(PolicyError) -> Capability {
        do { return try Capability(parsing: raw) } catch { throw fail(path, node, error.description) }
    }

    func risk(_ node: YAMLNode, _ path: String) throws(PolicyError) -> RiskLevel {
        let s = try string(node, path)
        guard let r = RiskLevel(name: s) else { throw fail(path, node, "unknown risk '\(s)': use low, medium or high") }
        return r
    }

    func string(_ node: YAMLNode, _ path: String) throws(PolicyError) -> String {
        guard case .scalar(let s) = node else { throw fail(path, node, "expected a string") }
        return s.string
    }

    func int(_ node: YAMLNode, _ path: String) throws(PolicyError) -> Int {
        guard let v = node.int else {
            throw fail(path, node, node.hasLeadingZero
                ? "'\(node.string ?? "")' has a leading zero: write the number without it (YAML 1.1 read it as octal; 0o755 for octal)"
                : "expected a whole number")
        }
        return v
    }

    func uid(_ node: YAMLNode, _ path: String) throws(PolicyError) -> UInt32 {
        let v = try int(node, path)
        guard v >= 0, v < Int(UInt32.max) else { throw fail(path, node, "\(v) is not a valid uid/gid") }
        return UInt32(v)
    }

    func sequence(_ node: YAMLNode, _ path: String) throws(PolicyError) -> [YAMLNode] {
        guard case .sequence(let s) = node else { throw fail(path, node, "expected a list") }
        return Array(s)
    }

    func pairs(_ node: YAMLNode, _ path: String) throws(PolicyError) -> [(YAMLNode, YAMLNode)] {
        // The composer refuses a key given twice.
        guard case .mapping(let m) = node else { throw fail(path, node, "expected a mapping") }
        return m.pairs
    }

    func mapping(_ node: YAMLNode, _ path: String, allowed: Set<String>) throws(PolicyError) -> [String: YAMLNode] {
        var out: [String: YAMLNode] = [:]
        for (k, v) in try pairs(node, path) {
            let key = k.string ?? ""
            guard allowed.contains(key) else {
                let field = path.isEmpty ? key : "\(path).\(key)"
                throw fail(field, k, "unknown field '\(key)' (expected one of: \(allowed.sorted().joined(separator: ", ")))")
            }
            out[key] = v
        }
        return out
    }

    // MARK: Names

    static func isValidAgentName(_ s: String) -> Bool {
        guard let first = s.utf8.first, first >= UInt8(ascii: "a"), first <= UInt8(ascii: "z"), s.utf8.count <= 63 else { return false }
        return s.utf8.allSatisfy { ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z")) || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || $0 == UInt8(ascii: "-") }
    }

    static func isValidTrustDomain(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 255 && s.utf8.allSatisfy {
            ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z")) || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9"))
                || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_")
        }
    }
}

/// The zones of one policy's windows, by name.
private final class ZoneCache {
    private var zones: [String: ZoneInfo?] = [:]

    func zone(_ name: String) -> ZoneInfo? {
        if let known = zones[name] { return known }
        let zone = ZoneInfo(identifier: name)
        zones[name] = zone
        return zone
    }
}
