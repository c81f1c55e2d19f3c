import Foundation
import LanyardClient
import LanyardCrypto
import LanyardStore
import LanyardTestSupport
import LanyardWire
import Testing

@testable import LanyardServer

/// The daemon's side of `lanyard-mcp` (issue 17): Authorize with a tool_call, mapped by the
/// policy's mcp_servers section, routed like any Authorize; McpServer for tools/list and
/// the server's credentials.
@Suite(.serialized, .enabled(if: TestSupport.isRoot, "needs root to create agent and approver uids"))
struct McpGatewayTests {
    static func policy(approvers: Bool = true) -> String {
        """
        trust_domain: test.internal
        \(approvers ? "approvers: { uids: [\(Users.other!.uid)] }" : "")
        services:
          github: { kind: opaque, max_ttl_seconds: 600 }
        capabilities:
          github:read_repo: { risk: low }
          files:read:       { risk: low }
          files:write_file: { risk: medium }
          files:delete:     { risk: high }
          files:admin:      { risk: low }
          shown:admin:      { risk: low }
        mcp_servers:
          files:
            tools:
              read_file:  { capability: files:read, resource: path }
              write_file: { resource: path, bind: [path, content] }
            env:
              GITHUB_TOKEN: { service: github, scope: [github:read_repo], ttl_seconds: 300 }
            files:
              token.txt: { service: github, scope: [github:read_repo] }
          shown:
            show_ungranted_tools: true
        agents:
          a:
            uid: \(Users.agent!.uid)
            grants: [files:read, files:write_file, files:delete, github:read_repo]

        """
    }

    static func toolCall(_ tool: String, _ arguments: String, server: String = "files", approvalID: String = "") -> Lanyard_V1_Request {
        var r = Lanyard_V1_Request()
        r.authorize = .with {
            $0.toolCall = .with {
                $0.server = server
                $0.tool = tool
                $0.argumentsJson = arguments
            }
            $0.approvalID = approvalID
        }
        return r
    }

    func call(_ c: LanyardClient, _ tool: String, _ arguments: String, server: String = "files", approvalID: String = "") async throws -> Lanyard_V1_AuthorizeResponse {
        try await c.call(Self.toolCall(tool, arguments, server: server, approvalID: approvalID)).authorize
    }

    func code(_ error: any Error) -> Lanyard_V1_Code? { (error as? LanyardError)?.code }

    /// LOW: ALLOW with the mapped capability and the arguments' digest, one audit record
    /// naming server, tool, capability, resource and digest. Ungranted, unmapped, unknown
    /// servers and bad requests are denied, each with its reason, each audited.
    @Test func toolCallsAreMappedDecidedAndAudited() async throws {
        let d = try TestDaemon(policy: Self.policy())
        let a = d.client(as: Users.agent!)
        let read = try await call(a, "read_file", #"{ "path": "/etc/hosts", "lines": [1, 2.5] }"#)
        #expect(read.decision == .allow && read.risk == .low && read.capability == "files:read")
        #expect(read.argsDigest == SHA256.hex(Array(#"{"lines":[1,2.5],"path":"/etc/hosts"}"#.utf8)))
        // Plain Authorize echoes the capability too (and has no digest).
        let plain = try await a.authorize("github:read_repo")
        #expect(plain.capability == "github:read_repo" && plain.argsDigest.isEmpty)

        let ungranted = try await call(a, "admin", "{}")
        #expect(ungranted.decision == .deny && ungranted.capability == "files:admin" && ungranted.reason.contains("not granted 'files:admin'"))
        let unmapped = try await call(a, "list_dir", "{}")
        #expect(unmapped.decision == .deny && unmapped.capability.isEmpty && unmapped.reason.contains("not in the policy"))
        let unknown = try await call(a, "read_file", "{}", server: "nope")
        #expect(unknown.decision == .deny && unknown.reason.contains("mcp_servers: nope"))

        for bad in [#"{"path": "/x""#, "[1]", #"{"a": 1, "a": 2}"#] {
            await #expect { try await call(a, "read_file", bad) } throws: { code($0) == .invalidArgument }
        }
        var mixed = Self.toolCall("read_file", "{}")
        mixed.authorize.capability = "files:admin"
        await #expect { try await a.call(mixed) } throws: { code($0) == .invalidArgument && ($0 as! LanyardError).message.contains("only tool_call") }

        let records = try d.daemon.store.queryAudit(AuditFilter())
        let tools = records.filter { $0.event == "tool_call" }
        #expect(tools.count == 8 && records.count == 9)
        let first = try #require(tools.first)
        #expect(first.mcpServer == "files" && first.mcpTool == "read_file" && first.capability == "files:read")
        #expect(first.resource == "/etc/hosts" && first.argsDigest == read.argsDigest && first.decision == "allow" && first.outcome == "auto_approved")
        #expect(tools[1].capability == "files:admin" && tools[1].decision == "deny")
        #expect(tools[2].mcpTool == "list_dir" && tools[2].decision == "deny")
        #expect(tools[3].mcpServer == "nope" && tools[3].decision == "deny")
        #expect(tools[4...].allSatisfy { $0.outcome == "invalid_argument" && $0.decision == "deny" })
        #expect(records.first { $0.event == "authorize" }?.mcpServer == "")
        #expect(try d.daemon.store.verifyAudit().ok)
        await a.close()
        await d.stop()
    }

    /// MEDIUM: PENDING; a retry finds the same approval; different arguments open their own;
    /// approving A lets A through once (a retry without the id), never B; after that A waits anew.
    @Test func retriedCallsFindTheirApprovalBoundToTheArguments() async throws {
        let d = try TestDaemon(policy: Self.policy())
        let a = d.client(as: Users.agent!)
        let approver = d.admin(as: Users.other!)
        let argsA = #"{"path": "/tmp/x", "content": "A"}"#, argsB = #"{"path": "/tmp/x", "content": "B"}"#

        let first = try await call(a, "write_file", argsA)
        #expect(first.decision == .pending && first.risk == .medium && first.capability == "files:write_file" && first.approvalID.count == 36)
        let again = try await call(a, "write_file", argsA)
        #expect(again.decision == .pending && again.approvalID == first.approvalID && again.bindingCode == first.bindingCode)
        let b = try await call(a, "write_file", argsB)
        #expect(b.decision == .pending && b.approvalID != first.approvalID)
        #expect(try d.daemon.store.countPendingApprovals(nowMicros: Int64(Date().timeIntervalSince1970 * 1_000_000)) == 2)

        // The approver sees the tool and the bound arguments as canonical JSON.
        let shown = try await approver.decide(first.approvalID)
        #expect(shown.state == .approved && shown.resource == "/tmp/x" && shown.args == ["content": #""A""#, "path": #""/tmp/x""#])
        #expect(shown.reason.contains("MCP tool call files/write_file"))

        let stillB = try await call(a, "write_file", argsB)
        #expect(stillB.decision == .pending && stillB.approvalID == b.approvalID)
        // The same arguments written differently are the same call.
        let allowed = try await call(a, "write_file", #"{"content":"A","path":"/tmp/x"}"#)
        #expect(allowed.decision == .allow && allowed.argsDigest == first.argsDigest && allowed.reason.contains("approved by"))
        let anew = try await call(a, "write_file", argsA)
        #expect(anew.decision == .pending && anew.approvalID != first.approvalID)
        #expect(try await a.awaitApproval(first.approvalID).state == .consumed)

        // An approval id passed explicitly is used like any Authorize's.
        _ = try await approver.decide(b.approvalID)
        #expect(try await call(a, "write_file", argsA, approvalID: b.approvalID).decision == .deny)  // A is not B
        #expect(try await call(a, "write_file", argsB, approvalID: b.approvalID).decision == .allow)

        let records = try d.daemon.store.queryAudit(AuditFilter()).filter { $0.event == "tool_call" }
        #expect(records.map(\.decision) == ["pending", "pending", "pending", "pending", "allow", "pending", "deny", "allow"])
        #expect(records[1].approvalID == first.approvalID && records[4].approvalID == first.approvalID)
        #expect(try d.daemon.store.verifyAudit().ok)
        await a.close()
        await approver.close()
        await d.stop()
    }

    /// HIGH without approvers is denied, and tools/list does not show it.
    @Test func highWithoutApproversIsDenied() async throws {
        let d = try TestDaemon(policy: Self.policy(approvers: false))
        let a = d.client(as: Users.agent!)
        let high = try await call(a, "delete", #"{"path": "/"}"#)
        #expect(high.decision == .deny && high.risk == .high && high.capability == "files:delete" && high.reason.contains("no approvers"))
        let tools = try await mcpServer(a, "files", ["delete", "read_file"]).tools
        #expect(tools.map(\.visible) == [false, true] && tools[0].risk == .high)
        await a.close()
        await d.stop()
    }

    func mcpServer(_ c: LanyardClient, _ server: String, _ tools: [String]) async throws -> Lanyard_V1_McpServerResponse {
        var r = Lanyard_V1_Request()
        r.mcpServer = .with {
            $0.server = server
            $0.tools = tools
        }
        return try await c.call(r).mcpServer
    }

    /// McpServer: one answer per tool, visible when callable (or shown by the policy), and the
    /// server's credentials; unknown servers, too many tools and strangers are refused.
    @Test func mcpServerTellsVisibilityAndCredentials() async throws {
        let d = try TestDaemon(policy: Self.policy())
        let a = d.client(as: Users.agent!)
        let files = try await mcpServer(a, "files", ["read_file", "write_file", "delete", "admin", "list_dir", "Bad.Name"])
        #expect(files.tools.map(\.name) == ["read_file", "write_file", "delete", "admin", "list_dir", "Bad.Name"])
        #expect(files.tools.map(\.capability) == ["files:read", "files:write_file", "files:delete", "files:admin", "", ""])
        #expect(files.tools.map(\.risk) == [.low, .medium, .high, .unspecified, .unspecified, .unspecified])
        #expect(files.tools.map(\.visible) == [true, true, true, false, false, false])
        #expect(files.credentials.count == 2)
        #expect(files.credentials[0].env == "GITHUB_TOKEN" && files.credentials[0].file.isEmpty && files.credentials[0].service == "github")
        #expect(files.credentials[0].scope == ["github:read_repo"] && files.credentials[0].ttlSeconds == 300)
        #expect(files.credentials[1].file == "token.txt" && files.credentials[1].env.isEmpty && files.credentials[1].ttlSeconds == 0)

        let shown = try await mcpServer(a, "shown", ["admin", "anything"])
        #expect(shown.tools.map(\.visible) == [true, true] && shown.tools[0].capability == "shown:admin" && shown.credentials.isEmpty)

        await #expect { try await mcpServer(a, "nope", []) } throws: { code($0) == .notFound && ($0 as! LanyardError).message.contains("mcp_servers") }
        await #expect { try await mcpServer(a, "files", Array(repeating: "t", count: 1025)) } throws: { code($0) == .invalidArgument }
        await #expect { try await mcpServer(a, "files", [String(repeating: "t", count: 129)]) } throws: { code($0) == .invalidArgument }
        let stranger = d.client(as: Users.second!)
        await #expect { try await mcpServer(stranger, "files", ["read_file"]) } throws: { code($0) == .unauthenticated }
        await #expect { try await call(stranger, "read_file", "{}") } throws: { code($0) == .unauthenticated }
        await a.close()
        await stranger.close()
        await d.stop()
    }
}
