import LanyardCore
import Testing

/// The policy's `mcp_servers:` section and the pure mapping of a tool call (issue 17).
struct McpServerPolicyTests {
    static let header = """
    trust_domain: t.internal
    services:
      github: { kind: opaque, max_ttl_seconds: 600 }
      gcloud: { kind: static }
    capabilities:
      github:read_repo: { risk: low }
      gcloud:read:      { risk: low }
      files:read:       { risk: low }
      files:write_file: { risk: medium }
      files:delete:     { risk: high }

    """

    @Test func theSectionParses() throws {
        let p = try PolicyParser.parse(Self.header + """
        mcp_servers:
          files:
            show_ungranted_tools: true
            tools:
              read_file:  { capability: files:read, resource: path }
              write_file: { resource: path, bind: [path, content] }
            env:
              GITHUB_TOKEN: { service: github, scope: [github:read_repo], ttl_seconds: 300 }
            files:
              gcloud.json: { service: gcloud, scope: [gcloud:read] }
          plain:
        agents:
          a: { uid: 1001, grants: [files:read, files:write_file] }
        """, file: "p.yaml")
        let files = try #require(p.mcpServers["files"])
        #expect(files.showUngrantedTools)
        #expect(files.tools["read_file"] == .init(capability: try Capability(parsing: "files:read"), resource: "path"))
        #expect(files.tools["write_file"] == .init(capability: try Capability(parsing: "files:write_file"), resource: "path", bind: ["path", "content"]))
        #expect(files.credentials == [
            .init(target: .env("GITHUB_TOKEN"), service: "github", scope: [try Capability(parsing: "github:read_repo")], ttlSeconds: 300),
            .init(target: .file("gcloud.json"), service: "gcloud", scope: [try Capability(parsing: "gcloud:read")]),
        ])
        #expect(p.mcpServers["plain"] == Policy.McpServer(name: "plain"))
        #expect(p.capabilities[try Capability(parsing: "files:read")] == .low)  // a capability of an MCP server, no fake service
    }

    static func server(_ body: String) -> String { header + "mcp_servers:\n  files:\n" + body }

    /// Each invalid section, the field path it must name, a phrase of its message, and its line.
    @Test(arguments: [
        (header + "mcp_servers:\n  Files: {}\n", "mcp_servers.Files", "lowercase", 12),
        (header + "mcp_servers:\n  github: {}\n", "mcp_servers.github", "also a service", 12),
        ("trust_domain: t\ncapabilities:\n  files:read: { risk: low }\n", "capabilities.files:read", "nor is it an MCP server", 3),
        (server("    tools:\n      \"read file\": {}\n"), "mcp_servers.files.tools.read file", "not an MCP tool name", 14),
        (server("    tools:\n      ReadFile: {}\n"), "mcp_servers.files.tools.ReadFile", "give it a capability", 14),
        (server("    tools:\n      list_dir: {}\n"), "mcp_servers.files.tools.list_dir", "capability 'files:list_dir' is not in the capabilities catalog", 14),
        (server("    tools:\n      x: { capability: files:nope }\n"), "mcp_servers.files.tools.x.capability", "not in the capabilities catalog", 14),
        (server("    tools:\n      read: { capability: files:read, mode: x }\n"), "mcp_servers.files.tools.read.mode", "unknown field", 14),
        (server("    tools:\n      read: { capability: files:read, bind: [a, a] }\n"), "mcp_servers.files.tools.read.bind[1]", "listed twice", 14),
        (server("    tools:\n      read: { capability: files:read, resource: \"\" }\n"), "mcp_servers.files.tools.read.resource", "1 to 128 bytes", 14),
        (server("    shows_ungranted_tools: true\n"), "mcp_servers.files.shows_ungranted_tools", "unknown field", 13),
        (server("    show_ungranted_tools: maybe\n"), "mcp_servers.files.show_ungranted_tools", "true or false", 13),
        (server("    env:\n      LD_PRELOAD: { service: github, scope: [github:read_repo] }\n"), "mcp_servers.files.env.LD_PRELOAD", "how programs load", 14),
        (server("    env:\n      PATH: { service: github, scope: [github:read_repo] }\n"), "mcp_servers.files.env.PATH", "how programs load", 14),
        (server("    env:\n      NODE_OPTIONS: { service: github, scope: [github:read_repo] }\n"), "mcp_servers.files.env.NODE_OPTIONS", "how programs load", 14),
        (server("    env:\n      github_token: { service: github, scope: [github:read_repo] }\n"), "mcp_servers.files.env.github_token", "not an environment variable name", 14),
        (server("    env:\n      1TOKEN: { service: github, scope: [github:read_repo] }\n"), "mcp_servers.files.env.1TOKEN", "not an environment variable name", 14),
        (server("    env:\n      T: { service: gitlab, scope: [github:read_repo] }\n"), "mcp_servers.files.env.T.service", "not declared under services", 14),
        (server("    env:\n      T: { service: github, scope: [gcloud:read] }\n"), "mcp_servers.files.env.T.scope[0]", "not one of service 'github'", 14),
        (server("    env:\n      T: { service: github, scope: [github:push] }\n"), "mcp_servers.files.env.T.scope[0]", "not in the capabilities catalog", 14),
        (server("    env:\n      T: { service: github, scope: [] }\n"), "mcp_servers.files.env.T.scope", "at least one", 14),
        (server("    env:\n      T: { service: github, scope: [github:read_repo], ttl_seconds: 601 }\n"), "mcp_servers.files.env.T.ttl_seconds", "max_ttl_seconds (600)", 14),
        (server("    env:\n      T: { service: github }\n"), "mcp_servers.files.env.T.scope", "is required", 14),
        (server("    files:\n      ../key: { service: gcloud, scope: [gcloud:read] }\n"), "mcp_servers.files.files.../key", "not a file name", 14),
        (server("    files:\n      ..: { service: gcloud, scope: [gcloud:read] }\n"), "mcp_servers.files.files...", "not a file name", 14),
    ])
    func refused(_ yaml: String, path: String, phrase: String, line: Int) {
        do {
            _ = try PolicyParser.parse(yaml, file: "/etc/lanyard/policy.yaml")
            Issue.record("accepted an invalid policy; expected \(path): \(phrase)")
        } catch {
            #expect(error.path == path)
            #expect(error.message.contains(phrase), "message was: \(error.message)")
            #expect(error.line == line, "line of \(path)")
            #expect(error.description.hasPrefix("/etc/lanyard/policy.yaml:\(line): \(path): "))
        }
    }

    @Test func sectionsAreBounded() {
        let tools = (0...Policy.McpServer.maxTools).map { "      t\($0): { capability: files:read }\n" }.joined()
        #expect { try PolicyParser.parse(Self.server("    tools:\n" + tools), file: "p") } throws: {
            ($0 as? PolicyError)?.message.contains("limit 64") == true
        }
        let env = (0...Policy.McpServer.maxCredentials).map { "      T\($0): { service: github, scope: [github:read_repo] }\n" }.joined()
        #expect { try PolicyParser.parse(Self.server("    env:\n" + env), file: "p") } throws: {
            ($0 as? PolicyError)?.message.contains("more than 16 credentials") == true
        }
    }

    @Test func diffNamesServers() throws {
        let old = try PolicyParser.parse(Self.server("    show_ungranted_tools: false\n"), file: "old")
        let new = try PolicyParser.parse(Self.server("    show_ungranted_tools: true\n  plain: {}\n"), file: "new")
        #expect(PolicyDiff.changes(from: old, to: new) == [
            "~ mcp_server files: 0 tools, 0 credentials -> 0 tools, 0 credentials (show_ungranted_tools false -> true)", "+ mcp_server plain",
        ])
    }
}

struct ToolMappingTests {
    /// A stand-in for SHA-256 (LanyardCore has no crypto): distinct inputs give distinct strings.
    static func fakeHash(_ bytes: [UInt8]) -> String { "H(" + String(decoding: bytes, as: UTF8.self) + ")" }

    static let policy = try! PolicyParser.parse(McpServerPolicyTests.server("""
        show_ungranted_tools: false
        tools:
          read_file:  { capability: files:read, resource: path }
          write_file: { resource: path, bind: [path, content] }
    """), file: "p")
    static let files = policy.mcpServers["files"]!

    func map(_ tool: String, _ args: String, maxArgs: Int = 16) throws(ToolCallError) -> ToolMapping {
        try Self.files.map(tool: tool, argumentsJSON: args, catalog: Self.policy.capabilities, maxArgs: maxArgs, sha256Hex: Self.fakeHash)
    }

    @Test func canonicalJSONSortsKeysByBytesDropsSpaceKeepsNumbersAsWritten() throws {
        let text = #" { "b" : [1, 2.50, -0.0e+10, true, null], "a" : {"z": "\u00e9\n\"\\\/\u0001", "é": 1, "Z": false}, "": "" } "#
        let value = try JSON.read(Array(text.utf8), maxDepth: 8, numbers: .asWritten)
        #expect(value.canonicalText == #"{"":"","a":{"Z":false,"z":"é\n\"\\/\u0001","é":1},"b":[1,2.50,-0.0e+10,true,null]}"#)
        // The same arguments, written differently, have one digest; different ones do not.
        #expect(try map("delete", #"{"a":1,"b":"x"}"#).argsDigest == map("delete", "{ \"b\": \"x\",\n \"a\": 1 }").argsDigest)
        #expect(try map("delete", #"{"a":1}"#).argsDigest != map("delete", #"{"a":1.0}"#).argsDigest)
        #expect(try map("delete", "").argsDigest == Self.fakeHash(Array("{}".utf8)))
    }

    @Test func mapsByTheListedToolOrTheDefault() throws {
        let read = try map("read_file", #"{"path": "/etc/hosts", "offset": 3}"#)
        #expect(read.capability?.name == "files:read" && read.resource == "/etc/hosts")
        #expect(read.args == ["offset": "3", "path": #""/etc/hosts""#])
        #expect(read.argsDigest == Self.fakeHash(Array(#"{"offset":3,"path":"/etc/hosts"}"#.utf8)))

        let write = try map("write_file", #"{"path": {"dir": "/tmp", "name": "x"}, "content": "hi", "mode": 420}"#)
        #expect(write.capability?.name == "files:write_file")
        #expect(write.resource == #"{"dir":"/tmp","name":"x"}"#)  // not a string: its canonical JSON
        #expect(write.args == ["content": #""hi""#, "path": #"{"dir":"/tmp","name":"x"}"#])  // only the bound ones

        #expect(try map("delete", "{}").capability?.name == "files:delete")  // unlisted: files:delete is in the catalog
        let unknown = try map("list_dir", "{}")
        #expect(unknown.capability == nil && unknown.unmappedReason.contains("capability 'files:list_dir' is not in the catalog"))
        let odd = try map("List.Dir", "{}")
        #expect(odd.capability == nil && odd.unmappedReason.contains("no capability segment"))
    }

    static func key(_ i: Int) -> String { i < 10 ? "k0\(i)" : "k\(i)" }

    @Test func longValuesAreDigestedAndExtraArgumentsFolded() throws {
        let long = String(repeating: "é", count: 200)  // 400 bytes
        let m = try map("delete", "{\"text\": \"\(long)\", \"n\": 1}")
        let stored = try #require(m.args["text"])
        #expect(stored.hasPrefix("sha256:H(\"\(long)\") (402 bytes): \"" + String(repeating: "é", count: 47)))
        #expect(stored.hasSuffix("…") && !stored.contains("\u{FFFD}"))  // cut between characters
        #expect(m.args["n"] == "1")

        let many = "{" + (0..<20).map { "\"\(Self.key($0))\": \($0)" }.joined(separator: ",") + "}"
        let folded = try map("delete", many, maxArgs: 4)
        #expect(folded.args.count == 4)
        #expect(folded.args["k00"] == "0" && folded.args["k02"] == "2" && folded.args["k03"] == nil)
        let rest = "{" + (3..<20).map { "\"\(Self.key($0))\":\($0)" }.joined(separator: ",") + "}"
        #expect(folded.args[Policy.McpServer.foldedKey] == "sha256:H(\(rest)) (17 more arguments)")
        // An argument named like the fold entry never takes its place.
        let named = try map("delete", #"{"…": "x", "a": 1, "b": 2}"#, maxArgs: 2)
        #expect(named.args == ["a": "1", "…": #"sha256:H({"b":2,"…":"x"}) (2 more arguments)"#])
    }

    @Test(arguments: [
        ("[1]", "must be a JSON object"), ("\"x\"", "must be a JSON object"), ("{\"a\": }", "not valid JSON"),
        ("{\"a\": 1, \"a\": 2}", "duplicate member name"), ("{\"a\": 01}", "leading zero"), ("{\"a\": 1.}", "needs digits"),
        ("[[1]]", "must be a JSON object"), ("{\"a\":" + String(repeating: "[", count: 40), "nested deeper than 32"),
    ])
    func malformedArgumentsAreRefused(_ text: String, phrase: String) {
        #expect { try map("delete", text) } throws: { ($0 as? ToolCallError)?.description.contains(phrase) == true }
    }

    @Test func badToolNamesAndHugeArgumentsAreRefused() {
        #expect(throws: ToolCallError.self) { try map("x:y", "{}") }  // never files:x:y
        #expect(throws: ToolCallError.self) { try map("", "{}") }
        #expect(throws: ToolCallError.self) { try map("delete", "{\"a\": \"" + String(repeating: "x", count: 70_000) + "\"}") }
    }

    @Test func approvalDigestBindsTheToolOnlyWhenSet() throws {
        let cap = try Capability(parsing: "files:read")
        let plain = ApprovalSubject(agentID: "a", capabilities: [cap], resource: "r", args: [:], amount: "")
        let read = ApprovalSubject(agentID: "a", capabilities: [cap], resource: "r", args: [:], amount: "", tool: "files/read_file")
        let stat = ApprovalSubject(agentID: "a", capabilities: [cap], resource: "r", args: [:], amount: "", tool: "files/stat")
        #expect(plain.canonicalBytes == Array("lanyard-approval-v1\n1:a\n1:1\n10:files:read\n1:r\n1:0\n0:\n".utf8))  // as before the tool existed
        #expect(read.canonicalBytes != plain.canonicalBytes && read.canonicalBytes != stat.canonicalBytes)
    }

    @Test func auditHashCoversTheToolFieldsOnlyWhenSet() {
        var a = AuditRecord(event: "authorize")
        a.seq = 1
        let old = a.canonicalBytes
        #expect(!String(decoding: old, as: UTF8.self).contains("mcp_"))
        for edit in [{ $0.mcpServer = "files" }, { $0.mcpTool = "x" }, { $0.argsDigest = "ab" }] as [(inout AuditRecord) -> Void] {
            var b = a
            edit(&b)
            #expect(b.canonicalBytes != old)
        }
    }
}
