extension Policy {
    /// A local MCP server reached through `lanyard-mcp --server NAME` (the `mcp_servers:`
    /// section): how its tools map to capabilities, and the credentials its process gets.
    public struct McpServer: Sendable, Equatable {
        public var name: String
        /// tools/list also shows the tools an agent may never call.
        public var showUngrantedTools = false
        /// The tools listed under `tools:`; any other maps to `<server>:<tool>` when the catalog has it.
        public var tools: [String: Tool] = [:]
        public var credentials: [Credential] = []

        public init(name: String) { self.name = name }

        public static let maxTools = 64
        public static let maxCredentials = 16

        public struct Tool: Sendable, Equatable {
            public var capability: Capability
            /// The argument whose value becomes the Authorize resource (nil: none).
            public var resource: String?
            /// The arguments bound into the approval digest (nil: all of them).
            public var bind: [String]?

            public init(capability: Capability, resource: String? = nil, bind: [String]? = nil) {
                self.capability = capability
                self.resource = resource
                self.bind = bind
            }
        }

        /// A credential the gateway provisions, as the calling agent, before it starts the server.
        public struct Credential: Sendable, Equatable {
            public enum Target: Sendable, Equatable {
                /// An environment variable of the server's process.
                case env(String)
                /// A file of the server's `$CREDENTIALS_DIRECTORY`.
                case file(String)
            }
            public var target: Target
            public var service: String
            public var scope: [Capability]
            /// Nil: the service's default.
            public var ttlSeconds: Int?

            public init(target: Target, service: String, scope: [Capability], ttlSeconds: Int? = nil) {
                self.target = target
                self.service = service
                self.scope = scope
                self.ttlSeconds = ttlSeconds
            }
        }
    }
}

/// A tool call as the policy maps it (`Policy.McpServer.map`).
public struct ToolMapping: Sendable, Equatable {
    /// The capability to decide; nil when the tool maps to none (`unmappedReason` says why).
    public var capability: Capability?
    public var unmappedReason = ""
    public var resource = ""
    /// Bound argument name → its canonical JSON (long values summarised, extras folded).
    public var args: [String: String] = [:]
    /// SHA-256 (hex) of the canonical JSON of the whole arguments object.
    public var argsDigest = ""
}

/// A tool call the daemon cannot map: malformed, or over a bound. The text never echoes the arguments.
public struct ToolCallError: Error, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

extension Policy.McpServer {
    public static let maxArgumentsBytes = 64 * 1024
    public static let maxArgumentsDepth = 32
    /// A bound argument's canonical JSON longer than this is stored as its digest and a preview.
    public static let maxValueBytes = 256
    public static let previewBytes = 96
    /// The args key that holds the digest of the bound arguments beyond `--max-args`.
    public static let foldedKey = "…"

    /// Whether `s` is an MCP tool name: 1–128 of `[A-Za-z0-9_.-]`.
    public static func isToolName(_ s: String) -> Bool {
        (1...128).contains(s.utf8.count) && s.utf8.allSatisfy {
            ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z")) || ($0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z"))
                || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-")
        }
    }

    /// The capability `tool` (a valid tool name) maps to: as listed under `tools:`, else
    /// `<server>:<tool>` when that is a capability of the catalog; or why there is none.
    public func capability(of tool: String, catalog: [Capability: RiskLevel]) -> Result<Capability, ToolCallError> {
        if let listed = tools[tool] { return .success(listed.capability) }
        let fix = "add it to capabilities with its risk and grant it, or map the tool under mcp_servers: \(name): tools:"
        guard let cap = try? Capability(parsing: "\(name):\(tool)") else {
            return .failure(.init("tool '\(tool)' of MCP server '\(name)' is not in the policy: its name is no capability segment; map it under mcp_servers: \(name): tools: with a capability"))
        }
        guard catalog[cap] != nil else {
            return .failure(.init("tool '\(tool)' of MCP server '\(name)' is not in the policy: capability '\(cap)' is not in the catalog; \(fix)"))
        }
        return .success(cap)
    }

    /// Maps one tools/call: `argumentsJSON` ("" is `{}`) must be a JSON object within the
    /// bounds. `sha256Hex` is SHA-256 as lowercase hex (LanyardCore has no crypto of its own).
    public func map(tool: String, argumentsJSON: String, catalog: [Capability: RiskLevel], maxArgs: Int,
                    sha256Hex: ([UInt8]) -> String) throws(ToolCallError) -> ToolMapping {
        guard Self.isToolName(tool) else {
            throw ToolCallError("tool name of \(tool.utf8.count) bytes is not an MCP tool name (1-128 of A-Z a-z 0-9 _ . -)")
        }
        let members = try Self.arguments(argumentsJSON)
        var out = ToolMapping()
        out.argsDigest = sha256Hex(Array(JSON.object(members).canonicalText.utf8))
        switch capability(of: tool, catalog: catalog) {
        case .success(let cap): out.capability = cap
        case .failure(let why): out.unmappedReason = why.description
        }
        let spec = tools[tool]
        if let key = spec?.resource, let value = Self.member(key, of: members) {
            if case .string(let s) = value { out.resource = s } else { out.resource = value.canonicalText }
        }
        var bound: [(String, JSON)] = []
        if let keys = spec?.bind {
            bound = keys.compactMap { key in Self.member(key, of: members).map { (key, $0) } }
        } else {
            bound = members
        }
        bound.sort { Array($0.0.utf8).lexicographicallyPrecedes(Array($1.0.utf8)) }
        if bound.count > maxArgs {
            // The first ones (by name) stay readable; the rest are bound by one digest.
            // An argument named like the fold entry is always folded, so it never takes its place.
            let readable = bound.filter { !$0.0.sameBytes(as: Self.foldedKey) }
            let kept = Array(readable.prefix(max(maxArgs - 1, 0)))
            let rest = bound.filter { arg in !kept.contains { $0.0.sameBytes(as: arg.0) } }
            let restText = JSON.object(rest).canonicalText
            out.args[Self.foldedKey] = "sha256:\(sha256Hex(Array(restText.utf8))) (\(rest.count) more arguments)"
            bound = kept
        }
        for (key, value) in bound { out.args[key] = Self.stored(value.canonicalText, sha256Hex: sha256Hex) }
        return out
    }

    /// The members of the arguments object, or why it is not one.
    static func arguments(_ text: String) throws(ToolCallError) -> [(String, JSON)] {
        let bytes = Array(text.utf8)
        if bytes.isEmpty { return [] }
        guard bytes.count <= maxArgumentsBytes else {
            throw ToolCallError("arguments_json is \(bytes.count) bytes (limit \(maxArgumentsBytes))")
        }
        let value: JSON
        do {
            value = try JSON.read(bytes, maxDepth: maxArgumentsDepth, numbers: .asWritten)
        } catch {
            throw ToolCallError("arguments_json is not valid JSON: \(error)")
        }
        guard case .object(let members) = value else { throw ToolCallError("arguments_json must be a JSON object") }
        return members
    }

    static func member(_ key: String, of members: [(String, JSON)]) -> JSON? {
        members.first { $0.0.sameBytes(as: key) }?.1
    }

    /// A canonical value as stored in an approval's args: itself when short, else its digest,
    /// its length and a preview (never valid JSON, so never mistaken for a short value).
    static func stored(_ canonical: String, sha256Hex: ([UInt8]) -> String) -> String {
        let bytes = Array(canonical.utf8)
        guard bytes.count > maxValueBytes else { return canonical }
        var end = previewBytes
        while end > 0, bytes[end] & 0xC0 == 0x80 { end -= 1 }  // never cut a UTF-8 sequence
        return "sha256:\(sha256Hex(bytes)) (\(bytes.count) bytes): \(String(decoding: bytes[..<end], as: UTF8.self))…"
    }
}

extension JSON {
    /// Canonical JSON: object members sorted by their names' UTF-8 bytes, no whitespace,
    /// strings escaped as RFC 8785 does (only `"`, `\` and controls), numbers as written.
    public var canonicalText: String {
        switch self {
        case .string(let s): return Self.canonicalQuote(s)
        case .int(let n): return String(n)
        case .number(let n): return n
        case .bool(let b): return b ? "true" : "false"
        case .null: return "null"
        case .array(let items): return "[" + items.map(\.canonicalText).joined(separator: ",") + "]"
        case .object(let pairs):
            let sorted = pairs.sorted { Array($0.0.utf8).lexicographicallyPrecedes(Array($1.0.utf8)) }
            return "{" + sorted.map { Self.canonicalQuote($0.0) + ":" + $0.1.canonicalText }.joined(separator: ",") + "}"
        }
    }

    static func canonicalQuote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20:
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }
}
