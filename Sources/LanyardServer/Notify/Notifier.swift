import AsyncHTTPClient
import LanyardCore
import LanyardCrypto
import LanyardStore
import Logging
import NIOCore
import NIOHTTP1
import NIOConcurrencyHelpers
import NIOPosix

/// Tells humans that an approval is waiting, through each of `approvers.notify`: webhooks
/// (a POST in the `generic`, `slack` or `ntfy` format; `X-Lanyard-Signature: sha256=<hex
/// HMAC-SHA256 of the body>` when a key is configured) and commands (`CommandRun`).
/// Each delivery is retried with exponential backoff, never on the decision path —
/// `notify` only enqueues. Deliveries that fail every attempt are logged and audited.
final class Notifier: Sendable {
    struct Event: Sendable {
        enum Target: Sendable {
            case webhook(Policy.Webhook)
            case command(Policy.NotifyCommand)
        }
        var target: Target
        var body: String
        var approvalID: String
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
    /// Where commands run: its threads bound how many run at once.
    private let commandThreads: NIOThreadPool
    private let store: Store
    private let logger: Logger
    private let retry: Retry
    private let inFlight = NIOLockedValueBox(0)
    /// The most notifications queued or in delivery at once (`defaultMaxQueued`).
    private let maxQueued: Int
    static let defaultMaxQueued = 1000
    static let maxConcurrentCommands = 2

    init(http: HTTPClient, store: Store, retry: Retry, logger: Logger, maxQueued: Int = defaultMaxQueued) {
        (queue, input) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .bufferingNewest(maxQueued))
        self.maxQueued = maxQueued
        self.http = http
        commandThreads = NIOThreadPool(numberOfThreads: Self.maxConcurrentCommands)
        commandThreads.start()
        self.store = store
        self.retry = retry
        self.logger = logger
    }

    /// Enqueues a notification per configured webhook and command; returns at once.
    func notify(_ approval: StoredApproval, policy: Policy) {
        guard let notify = policy.approvers?.notify, !notify.isEmpty else { return }
        let generic = NotificationFormat.generic(approval)
        var events = notify.webhooks.map { webhook in
            let body = switch webhook.format {
            case .generic: generic
            case .slack: NotificationFormat.slack(approval, consoleURL: notify.consoleURL)
            case .ntfy: NotificationFormat.ntfy(approval, topic: webhook.topic ?? "", consoleURL: notify.consoleURL)
            }
            return Event(target: .webhook(webhook), body: body, approvalID: approval.id, policyVersion: policy.version)
        }
        events += notify.commands.map { Event(target: .command($0), body: generic, approvalID: approval.id, policyVersion: policy.version) }
        for event in events {
            // Queued and in delivery together stay within `maxQueued`: agents cannot make the daemon hold more.
            let admitted = inFlight.withLockedValue { n in
                guard n < maxQueued else { return false }
                n += 1
                return true
            }
            if admitted, case .enqueued = input.yield(event) { continue }
            if admitted { inFlight.withLockedValue { $0 -= 1 } }
            logger.error("notification queue full; a notification was dropped", metadata: ["approval.id": "\(approval.id)"])
        }
    }

    /// Delivers until `finish()`; then drains what is queued.
    func run() async {
        await withDiscardingTaskGroup { group in
            for await event in queue {
                group.addTask { await self.deliver(event) }
            }
        }
        try? await commandThreads.shutdownGracefully()
    }

    func finish() { input.finish() }

    /// Notifications queued or being delivered (tests wait for 0 through the audit log).
    var pending: Int { inFlight.withLockedValue { $0 } }

    private func deliver(_ event: Event) async {
        defer { inFlight.withLockedValue { $0 -= 1 } }
        let (kind, target) = switch event.target {
        case .webhook(let w): ("webhook", Self.origin(of: w.url))
        case .command(let c): ("command", c.argv[0])
        }
        var backoff = retry.firstBackoff
        var lastError = ""
        for attempt in 1...retry.attempts {
            do {
                switch event.target {
                case .webhook(let webhook): try await post(event.body, to: webhook)
                case .command(let command): try await run(command, input: event.body)
                }
                logger.info("approval notification delivered", metadata: ["approval.id": "\(event.approvalID)", "notify.\(kind)": "\(target)", "attempt": "\(attempt)"])
                return
            } catch let failure as CommandRun.Failure {
                lastError = failure.description
                // The output may hold agent text: the log handler makes it inert.
                logger.warning("approval notification failed; retrying", metadata: ["approval.id": "\(event.approvalID)", "notify.command": "\(target)",
                                                                                   "attempt": "\(attempt)", "error": "\(lastError)", "output": "\(failure.output.prefix(512))"])
            } catch {
                lastError = "\(error)"
                logger.warning("approval notification failed; retrying", metadata: ["approval.id": "\(event.approvalID)", "notify.\(kind)": "\(target)",
                                                                                   "attempt": "\(attempt)", "error": "\(lastError)"])
            }
            if attempt < retry.attempts {
                try? await Task.sleep(for: backoff)
                backoff *= 2
            }
        }
        logger.error("approval notification gave up", metadata: ["approval.id": "\(event.approvalID)", "notify.\(kind)": "\(target)", "error": "\(lastError)"])
        var record = AuditRecord(event: "notify.\(kind)")
        record.approvalID = event.approvalID
        record.decision = Decision.deny.rawValue
        record.outcome = "failed"
        record.reason = "\(retry.attempts) attempts to \(target) failed; last: \(lastError.prefix(200))"
        record.policyVersion = event.policyVersion
        _ = try? await store.audit.append(record)  // best effort: the failure is in the log above
    }

    /// One POST of `body`; throws unless the answer is 2xx.
    private func post(_ body: String, to webhook: Policy.Webhook) async throws {
        var request = HTTPClientRequest(url: webhook.url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        if let secretFile = webhook.secretFile {
            let key = try Self.readKey(secretFile, what: "the webhook key file")
            request.headers.add(name: "X-Lanyard-Signature", value: "sha256=\(Hex.encode(HMAC.sha256(key: key, message: Array(body.utf8))))")
        }
        if let tokenFile = webhook.tokenFile {
            let token = String(decoding: try Self.readKey(tokenFile, what: "the ntfy token file"), as: UTF8.self)
            guard token.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
                throw DeliveryError(description: "the ntfy token file \(tokenFile) holds spaces or control characters; it must hold the token (tk_...) alone")
            }
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
        }
        request.body = .bytes(ByteBuffer(string: body))
        let response = try await http.execute(request, timeout: retry.requestTimeout)
        _ = try? await response.body.collect(upTo: 64 * 1024)
        guard (200..<300).contains(response.status.code) else { throw DeliveryError(description: "HTTP \(response.status.code)") }
    }

    /// One run of `command` on the command threads; throws `CommandRun.Failure` unless it exits 0 in time.
    private func run(_ command: Policy.NotifyCommand, input: String) async throws {
        try await commandThreads.runIfActive {
            try CommandRun.run(command.argv, input: Array(input.utf8), timeoutSeconds: command.timeoutSeconds)
        }
    }

    /// `scheme://host[:port]` of a URL: webhook URLs often carry a credential in their path
    /// or query, so only the origin may reach logs and audit records.
    static func origin(of url: String) -> String {
        guard let schemeEnd = url.firstRange(of: "://") else { return "(webhook)" }
        let rest = url[schemeEnd.upperBound...]
        let hostPort = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        return url[..<schemeEnd.upperBound] + String(hostPort.split(separator: "@").last ?? "")
    }

    struct DeliveryError: Error, CustomStringConvertible {
        var description: String
    }

    /// A key or token: the file's bytes, without a trailing newline.
    static func readKey(_ path: String, what: String) throws -> [UInt8] {
        let text: String
        do {
            text = try TrustedPath.read(path, what: what, limit: 4096, secret: true)
        } catch {
            throw DeliveryError(description: "\(error)")
        }
        let key = Array(text.utf8.reversed().drop { $0 == 0x0A || $0 == 0x0D }.reversed())
        guard !key.isEmpty else { throw DeliveryError(description: "\(what) \(path) is empty") }
        return key
    }
}
