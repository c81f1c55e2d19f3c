import Foundation
import LanyardClient
import LanyardCrypto
import LanyardStore
import LanyardTestSupport
import LanyardWire
import Testing

@testable import LanyardServer

@Suite(.serialized)
struct WebhookTests {
    func policy(port: UInt16, keyFile: String, path: String = "/approvals") -> String {
        Users.policy(approverUID: 4242).replacingOccurrences(of: "approvers: { uids: [4242] }",
            with: "approvers:\n  uids: [4242]\n  notify:\n    webhook: { url: \"http://127.0.0.1:\(port)\(path)\", secret_file: \(keyFile) }")
    }

    /// Acceptance 6: the receiver gets the event with a valid HMAC-SHA256 signature.
    @Test func approversAreNotifiedWithASignedWebhook() async throws {
        let receiver = WebhookReceiver()
        defer { receiver.close() }
        let keyDir = TestSupport.tempDir("key")
        defer { TestSupport.remove(keyDir) }
        TestSupport.writeSecret("webhook-shared-key\n", to: keyDir + "/webhook.key")
        let d = try TestDaemon(policy: policy(port: receiver.port, keyFile: keyDir + "/webhook.key"))
        let a = d.client(as: Users.agent!)
        let pending = try await a.authorize("github:push", resource: "acme/api", args: ["branch": "main"])
        #expect(pending.decision == .pending)

        let request = try #require(try await onThread { receiver.waitForRequests(1) }.first)  // a blocking wait: off the pool
        let expected = "sha256=" + Hex.encode(HMAC.sha256(key: Array("webhook-shared-key".utf8), message: Array(request.body)))
        #expect(request.headers["x-lanyard-signature"] == expected)
        #expect(request.headers["content-type"] == "application/json")
        let event = try JSONSerialization.jsonObject(with: request.body) as! [String: Any]
        #expect(event["event"] as? String == "approval.pending" && event["approval_id"] as? String == pending.approvalID)
        #expect(event["agent"] as? String == "a" && event["binding_code"] as? String == pending.bindingCode)
        #expect((event["capabilities"] as? [String]) == ["github:push"] && event["resource"] as? String == "acme/api")
        await a.close()
        await d.stop()
    }

    /// Invariant 14: a webhook body carries the agent's exact text, but as JSON escapes: no
    /// raw control, C1 or bidi byte reaches a chat tool that shows it.
    @Test func webhookBodiesAreExactAndInert() async throws {
        let receiver = WebhookReceiver()
        defer { receiver.close() }
        let keyDir = TestSupport.tempDir("key")
        defer { TestSupport.remove(keyDir) }
        TestSupport.writeSecret("k", to: keyDir + "/webhook.key")
        let d = try TestDaemon(policy: policy(port: receiver.port, keyFile: keyDir + "/webhook.key"))
        let a = d.client(as: Users.agent!)
        let hostile = "\u{1B}[2Adocs-site\r\nLOW github:read_repo\u{0}\u{7F}\u{9B}\u{202E}x\u{2066}"
        #expect(try await a.authorize("github:push", resource: hostile, args: ["k\u{85}": hostile]).decision == .pending)
        let request = try #require(try await onThread { receiver.waitForRequests(1) }.first)
        let raw = String(decoding: request.body, as: UTF8.self)
        #expect(raw.unicodeScalars.allSatisfy { $0.value >= 0x20 && !(0x7F...0x9F).contains($0.value) && !(0x202A...0x202E).contains($0.value)
            && !(0x2066...0x2069).contains($0.value) }, "\(raw)")
        let event = try #require(try JSONSerialization.jsonObject(with: request.body) as? [String: Any])
        #expect(event["resource"] as? String == hostile, "the data is exact")
        #expect(event["risk"] as? String == "medium")
        await a.close()
        await d.stop()
    }

    /// A receiver that never answers does not hold up the agent.
    @Test func aStuckReceiverNeverSlowsTheAgentPath() async throws {
        let stuck = WebhookReceiver(hold: true)
        defer { stuck.close() }
        let keyDir = TestSupport.tempDir("key")
        defer { TestSupport.remove(keyDir) }
        TestSupport.writeSecret("k", to: keyDir + "/webhook.key")
        let d = try TestDaemon(policy: policy(port: stuck.port, keyFile: keyDir + "/webhook.key"))
        let a = d.client(as: Users.agent!)
        for _ in 0..<3 {
            #expect(try await a.authorize("github:push").decision == .pending)
        }
        #expect(try await a.authorize("github:read_repo").decision == .allow)
        #expect(stuck.responsesSent == 0)  // every answer came back while the receiver held its replies
        stuck.release()
        await a.close()
        await d.stop()
    }

    /// A receiver that is gone is retried with backoff, then the failure is logged and audited.
    @Test func failedDeliveriesAreRetriedThenAudited() async throws {
        let port = TestSupport.closedPort()
        let keyDir = TestSupport.tempDir("key")
        defer { TestSupport.remove(keyDir) }
        TestSupport.writeSecret("k", to: keyDir + "/webhook.key")
        // Like Slack's, this URL carries a credential in its path: it must not reach the audit.
        let d = try TestDaemon(policy: policy(port: port, keyFile: keyDir + "/webhook.key", path: "/hooks/T0/B0/s3cr3t-path-token")) {
            $0.webhookAttempts = 3
            $0.webhookFirstBackoff = .milliseconds(10)
            $0.webhookTimeout = .milliseconds(200)
        }
        let a = d.client(as: Users.agent!)
        let ids = [try await a.authorize("github:push").approvalID, try await a.authorize("deploy:production").approvalID]
        await a.close()
        await d.shutdown()  // drains queued notifications
        let failures = try d.daemon.store.queryAudit(AuditFilter()).filter { $0.event == "notify.webhook" }
        #expect(Set(failures.map(\.approvalID)) == Set(ids))
        #expect(failures.allSatisfy { $0.outcome == "failed" && $0.reason.contains("3 attempts to http://127.0.0.1:\(port) failed") })
        #expect(try d.daemon.store.queryAudit(AuditFilter()).allSatisfy { !$0.reason.contains("s3cr3t-path-token") })
        #expect(try d.daemon.store.verifyAudit().ok)
        TestSupport.remove(d.dir)
    }
}
