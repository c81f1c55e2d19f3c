import Foundation
import LanyardTestSupport
import LanyardWire
import Testing

/// Process-lifetime approvals (issue 19, acceptance 6) against a real lanyardd: a MEDIUM
/// approval given `--for-process` is used by the same process repeatedly, is refused to
/// another process of the same agent, ends when the process exits; HIGH stays single-use.
@Suite(.serialized, .enabled(if: TestSupport.isRoot, "needs root (agent and approver uids)"))
struct ProcessApprovalEndToEndTests {
    static let approver = TestSupport.isRoot ? TestSupport.user("lanyard-test-b") : nil

    static var policy: String {
        """
        trust_domain: e2e.internal
        approvers: { uids: [\(approver!.uid)] }
        services:
          github: { kind: opaque }
        capabilities:
          github:push:  { risk: medium }
          github:admin: { risk: high }
        agents:
          a:
            uid: \(E2EUsers.agent!.uid)
            grants: [github:push, github:admin]

        """
    }

    /// A long-lived agent process (Scripts/agent_process.py as the agent uid) on one connection.
    final class AgentProcess {
        private let child: Child
        /// The process's stdin (we write) and stdout (we read).
        private var input: Int32
        private let output: Int32
        var nextID: UInt64 = 1

        init(socket: String) throws {
            let agent = E2EUsers.agent!
            let script = TestSupport.packageRoot.appendingPathComponent("Tests/EndToEndTests/Scripts/agent_process.py").path
            let stdin = try closingPipe()
            let stdout: (read: Int32, write: Int32)
            do { stdout = try closingPipe() } catch { close(stdin.read); close(stdin.write); throw error }
            defer { close(stdin.read); close(stdout.write) }
            do {
                child = try Child(["/usr/bin/setpriv", "--reuid=\(agent.uid)", "--regid=\(agent.gid)", "--clear-groups", "--", "/usr/bin/python3", script, socket],
                                  stdin: stdin.read, stdout: stdout.write, stderr: 2)
            } catch {
                close(stdin.write)
                close(stdout.read)
                throw error
            }
            (input, output) = (stdin.write, stdout.read)
        }

        deinit {
            if input >= 0 { close(input) }
            close(output)
            child.stop()
        }

        var pid: Int32 { child.pid }

        /// What the process wrote and no line has taken yet.
        private var pending: [UInt8] = []

        /// One line of the process's output, without its newline (60 s at most: against hanging only).
        private func line() throws -> [UInt8] {
            let deadline = Date().addingTimeInterval(60)
            while true {
                if let end = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    defer { pending.removeSubrange(...end) }
                    return Array(pending[..<end])
                }
                guard let chunk = readSome(output, until: deadline) else {
                    throw HarnessError("the agent process closed its output, or wrote no line in 60 s")
                }
                pending += chunk
            }
        }

        private func send(_ text: String) {
            TestSupport.writeAll(input, Array(text.utf8))
        }

        func authorize(_ capability: String, resource: String) throws -> Lanyard_V1_AuthorizeResponse {
            var r = Lanyard_V1_Request()
            r.authorize = .with { $0.capability = capability; $0.resource = resource }
            let response = try call(r)
            guard response.status.code == .ok else { throw HarnessError("authorize failed: \(response.status.message)") }
            return response.authorize
        }

        /// A Provision of `github:push` on `resource`: its response, whatever the status.
        func provision(resource: String) throws -> Lanyard_V1_Response {
            var r = Lanyard_V1_Request()
            r.provision = .with { $0.service = "github"; $0.scope = ["github:push"]; $0.resource = resource }
            return try call(r)
        }

        func call(_ request: Lanyard_V1_Request) throws -> Lanyard_V1_Response {
            var r = request
            r.id = nextID
            nextID += 1
            let frame = TestSupport.frame(try r.serializedBytes())
            send(frame.map { String(format: "%02x", $0) }.joined() + "\n")
            let hex = try line()
            let body = stride(from: 0, to: hex.count, by: 2).map { UInt8(String(decoding: hex[$0..<$0 + 2], as: UTF8.self), radix: 16)! }
            return try Lanyard_V1_Response(serializedBytes: body)
        }

        /// Replaces the process with `program` running the script again (same pid): stdin's
        /// buffered input is not carried over, so this waits for its acknowledgement.
        func exec(_ program: String) throws {
            send("exec \(program)\n")
            _ = try line()
        }

        /// Ends the process (end of its input) and waits until it has exited.
        func finish() throws {
            close(input)
            input = -1
            child.wait()
        }
    }

    @Test func aProcessLifetimeApprovalServesItsProcessOnlyAndEndsWithIt() async throws {
        try await onThread {
            let d = try DaemonProcess(policy: Self.policy)
            defer { d.cleanup() }
            try d.start()
            let first = try AgentProcess(socket: d.agentSocket)
            let asked = try first.authorize("github:push", resource: "repo")
            #expect(asked.decision == .pending)
            let approved = try d.ctl(["approvals", "approve", asked.approvalID, "--for-process"], as: Self.approver)
            #expect(approved.status == 0, "approve --for-process: \(approved.stderr)")

            // The same process, again and again, without asking.
            for i in 1...3 {
                let r = try first.authorize("github:push", resource: "repo")
                #expect(r.decision == .allow, "call \(i): \(r.reason)")
                #expect(r.reason.hasPrefix("approved for this process (pid \(first.pid)) while it lives: github:push by uid \(Self.approver!.uid)"))
            }
            // Not another resource, not another process of the same agent.
            #expect(try first.authorize("github:push", resource: "other-repo").decision == .pending)
            let second = try AgentProcess(socket: d.agentSocket)
            #expect(try second.authorize("github:push", resource: "repo").decision == .pending)

            // HIGH stays single-use: --for-process is refused, the approval stays pending.
            let high = try first.authorize("github:admin", resource: "repo")
            #expect(high.decision == .pending)
            let refused = try d.ctl(["approvals", "approve", high.approvalID, "--for-process"], as: Self.approver)
            #expect(refused.status != 0 && refused.stderr.contains("MEDIUM risk only"), "\(refused.status): \(refused.stderr)")

            // The process exits: its approval ends, audited.
            let pid = first.pid
            try first.finish()
            let deadline = Date().addingTimeInterval(10)
            var ended = ""
            while ended != "1", Date() < deadline {
                ended = try d.sql("SELECT count(*) FROM audit WHERE event = 'approval.process_exit' AND approval_id = '\(asked.approvalID)' AND pid = \(pid)")
                if ended != "1" { usleep(20_000) }  // polling the audit log for the record, with a deadline
            }
            #expect(ended == "1", "no approval.process_exit record for pid \(pid)")
            #expect(try second.authorize("github:push", resource: "repo").decision == .pending)
            try second.finish()
            try d.ctlSucceeds(["audit", "verify"])
        }
    }

    /// An approval that a Provision opened can be given for the process's lifetime too: the
    /// same process then provisions again without asking; another process of the agent asks.
    @Test func aProvisionsApprovalCanBeForTheProcessLifetime() async throws {
        try await onThread {
            let d = try DaemonProcess(policy: Self.policy)
            defer { d.cleanup() }
            try d.start()
            let first = try AgentProcess(socket: d.agentSocket)
            let asked = try first.provision(resource: "repo")
            #expect(asked.status.code == .failedPrecondition && !asked.provision.approvalID.isEmpty, "\(asked.status.message)")
            let approved = try d.ctl(["approvals", "approve", asked.provision.approvalID, "--for-process"], as: Self.approver)
            #expect(approved.status == 0, "approve --for-process: \(approved.stderr)")
            for i in 1...2 {
                let r = try first.provision(resource: "repo")
                #expect(r.status.code == .ok && r.provision.lease.secret.hasPrefix("lyt_"), "provision \(i): \(r.status.message)")
                #expect(r.provision.reasonCode == "approved")
            }
            let second = try AgentProcess(socket: d.agentSocket)
            #expect(try second.provision(resource: "repo").status.code == .failedPrecondition)
            try first.finish()
            try second.finish()
            try d.ctlSucceeds(["audit", "verify"])
        }
    }

    /// The cover is for the executable file that asked: the same process exec'ing another
    /// program (same pid and start time) asks again.
    @Test func anExecOfAnotherProgramEndsTheCover() async throws {
        try await onThread {
            let d = try DaemonProcess(policy: Self.policy)
            defer { d.cleanup() }
            try d.start()
            let copy = d.dir + "/python3-copy"
            try FileManager.default.copyItem(atPath: URL(fileURLWithPath: "/usr/bin/python3").resolvingSymlinksInPath().path, toPath: copy)
            chmod(copy, 0o755)
            let first = try AgentProcess(socket: d.agentSocket)
            let asked = try first.authorize("github:push", resource: "repo")
            #expect(try d.ctl(["approvals", "approve", asked.approvalID, "--for-process"], as: Self.approver).status == 0)
            #expect(try first.authorize("github:push", resource: "repo").decision == .allow)
            try first.exec(copy)
            let after = try first.authorize("github:push", resource: "repo")
            #expect(after.decision == .pending, "the cover outlived an exec of another program: \(after.reason)")
            try first.finish()
        }
    }
}
