import AsyncHTTPClient
import LanyardCore
import LanyardCrypto
import LanyardStore
import Logging
import NIOCore
import NIOHTTP1
import NIOConcurrencyHelpers

/// Tells humans that an approval is waiting: a signed webhook POST per event
/// (`X-Lanyard-Signature: sha256=<hex HMAC-SHA256 of the body>`), retried with
/// exponential backoff, never on the decision path — `notify` only enqueues.
/// Deliveries that fail every attempt are logged and audited.
final class Notifier: Sendable {
    struct Event: Sendable {
        var body: String
        var approvalID: String
        var webhook: Policy.Webhook
        var policyVersion: String
    }

    struct Retry: Sendable {
        var attempts = 5
        var firstBackoff: Duration = .milliseconds(500)
        var requestTimeout: TimeAmount = .seconds(5)
    }

    private let queue: AsyncStream<Event>
    private let input: AsyncStream<Event>.Continuation
    private let http: HTTPClient
    private let store: Store
    private let logger: Logger
    private let retry: Retry
    private let inFlight = NIOLockedValueBox(0)
    static let maxQueued = 1000

    init(http: HTTPClient, store: Store, retry: Retry, logger: Logger) {
        (queue, input) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .bufferingNewest(Self.maxQueued))
        self.http = http
        self.store = store
        self.retry = retry
        self.logger = logger
    }

    /// Enqueues a notification; returns at once.
    func notify(_ approval: StoredApproval, policy: Policy) {
        guard let webhook = policy.approvers?.webhook else { return }
        let args = JSON.object(approval.args.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })
        let body = JSON.object([
            ("event", .string("approval.pending")), ("approval_id", .string(approval.id)), ("agent", .string(approval.agent)),
            ("agent_id", .string(approval.agentID)), ("uid", .int(Int64(approval.uid))), ("pid", .int(Int64(approval.pid))),
            ("exe", .string(approval.exe)), ("capabilities", .array(approval.capabilities.map { .string($0) })),
            ("resource", .string(approval.resource)), ("args", args), ("amount", .string(approval.amount)),
            ("risk", .string(approval.machine.risk.description)), ("reason", .string(approval.reason)),
            ("binding_code", .string(approval.bindingCode)), ("expires_at", .int(approval.machine.expiresMicros / 1_000_000)),
        ]).text
        inFlight.withLockedValue { $0 += 1 }
        if case .dropped = input.yield(Event(body: body, approvalID: approval.id, webhook: webhook, policyVersion: policy.version)) {
            inFlight.withLockedValue { $0 -= 1 }
            logger.error("webhook queue full; a notification was dropped", metadata: ["approval.id": "\(approval.id)"])
        }
    }

    /// Delivers until `finish()`; then drains what is queued.
    func run() async {
        await withDiscardingTaskGroup { group in
            for await event in queue {
                group.addTask { await self.deliver(event) }
            }
        }
    }

    func finish() { input.finish() }

    /// Notifications queued or being delivered (tests wait for 0 through the audit log).
    var pending: Int { inFlight.withLockedValue { $0 } }

    private func deliver(_ event: Event) async {
        defer { inFlight.withLockedValue { $0 -= 1 } }
        var backoff = retry.firstBackoff
        var lastError = ""
        for attempt in 1...retry.attempts {
            do {
                let key = try Self.readKey(event.webhook.secretFile)
                let signature = Hex.encode(HMAC.sha256(key: key, message: Array(event.body.utf8)))
                var request = HTTPClientRequest(url: event.webhook.url)
                request.method = .POST
                request.headers.add(name: "Content-Type", value: "application/json")
                request.headers.add(name: "X-Lanyard-Signature", value: "sha256=\(signature)")
                request.body = .bytes(ByteBuffer(string: event.body))
                let response = try await http.execute(request, timeout: retry.requestTimeout)
                _ = try? await response.body.collect(upTo: 64 * 1024)
                if (200..<300).contains(response.status.code) {
                    logger.info("approval webhook delivered", metadata: ["approval.id": "\(event.approvalID)", "attempt": "\(attempt)"])
                    return
                }
                lastError = "HTTP \(response.status.code)"
            } catch {
                lastError = "\(error)"
            }
            logger.warning("approval webhook failed; retrying", metadata: ["approval.id": "\(event.approvalID)", "attempt": "\(attempt)", "error": "\(lastError)"])
            if attempt < retry.attempts {
                try? await Task.sleep(for: backoff)
                backoff *= 2
            }
        }
        logger.error("approval webhook gave up", metadata: ["approval.id": "\(event.approvalID)", "error": "\(lastError)"])
        var record = AuditRecord(event: "notify.webhook")
        record.approvalID = event.approvalID
        record.decision = Decision.deny.rawValue
        record.outcome = "failed"
        record.reason = "\(retry.attempts) attempts to \(Self.origin(of: event.webhook.url)) failed; last: \(lastError.prefix(200))"
        record.policyVersion = event.policyVersion
        _ = try? await store.audit.append(record)  // best effort: the failure is in the log above
    }

    /// `scheme://host[:port]` of a URL: webhook URLs often carry a credential in their path
    /// or query, so only the origin may reach logs and audit records.
    static func origin(of url: String) -> String {
        guard let schemeEnd = url.range(of: "://") else { return "(webhook)" }
        let rest = url[schemeEnd.upperBound...]
        let hostPort = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        return url[..<schemeEnd.upperBound] + String(hostPort.split(separator: "@").last ?? "")
    }

    struct KeyError: Error, CustomStringConvertible {
        var description: String
    }

    /// The HMAC key: the file's bytes, without a trailing newline.
    static func readKey(_ path: String) throws -> [UInt8] {
        let text: String
        do {
            text = try TrustedPath.read(path, what: "the webhook key file", limit: 4096, secret: true)
        } catch {
            throw KeyError(description: "\(error)")
        }
        let key = Array(text.utf8.reversed().drop { $0 == 0x0A || $0 == 0x0D }.reversed())
        guard !key.isEmpty else { throw KeyError(description: "the webhook key file \(path) is empty") }
        return key
    }
}
