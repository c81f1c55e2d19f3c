/// What an approval is bound to (DESIGN.md section 6): the same agent asking for the
/// same capabilities on the same resource with the same args and amount.
public struct ApprovalSubject: Sendable, Equatable {
    public var agentID: String
    public var capabilities: [Capability]
    public var resource: String
    public var args: [String: String]
    public var amount: String
    /// An MCP tool call's `server/tool` ("" for any other operation): two tools mapped to one
    /// capability are different operations.
    public var tool: String
    /// The grant limits (reason codes, sorted) whose overrun this approval is asked for ([]
    /// for one asked for the risk alone): an approval lifts only the limits it was shown.
    public var overruns: [String]

    public init(agentID: String, capabilities: [Capability], resource: String, args: [String: String], amount: String, tool: String = "",
                overruns: [ReasonCode] = []) {
        self.agentID = agentID
        self.capabilities = capabilities.sorted()
        self.resource = resource
        self.args = args
        self.amount = amount
        self.tool = tool
        self.overruns = overruns.map(\.rawValue).sorted()
    }

    /// Canonical bytes for the digest: sorted capabilities and args, each length-prefixed,
    /// then the tool (when set).
    public var canonicalBytes: [UInt8] {
        var out: [UInt8] = Array("lanyard-approval-v1\n".utf8)
        func put(_ s: String) {
            out += Array("\(s.utf8.count):".utf8)
            out += Array(s.utf8)
            out.append(0x0A)
        }
        put(agentID)
        put(String(capabilities.count))
        capabilities.forEach { put($0.name) }
        put(resource)
        put(String(args.count))
        for key in args.keys.sorted() {
            put(key)
            put(args[key]!)
        }
        put(amount)
        // Only when set, so every other operation's digest is what it always was.
        if !tool.isEmpty { put(tool) }
        if !overruns.isEmpty {
            put("+overruns")  // no tool name looks like this: a tool is server/tool
            overruns.forEach { put($0) }
        }
        return out
    }

    /// A short code derived from the digest that both the agent and the approver see.
    public static func bindingCode(digestHex: String) -> String {
        let c = Array(digestHex.uppercased().prefix(8))
        return String(c[0..<4]) + "-" + String(c[4..<8])
    }
}
