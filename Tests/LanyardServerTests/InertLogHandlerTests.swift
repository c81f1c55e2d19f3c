@testable import LanyardServer
import Logging
import NIOConcurrencyHelpers
import Testing

/// Finding 2: a forged line cannot reach the daemon's log through a message or a value.
struct InertLogHandlerTests {
    /// Keeps what the wrapped handler is given.
    struct Capture: LogHandler {
        let events: NIOLockedValueBox<[LogEvent]>
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) { events.withLockedValue { $0.append(event) } }
    }

    @Test func messagesAndValuesAreInertAndDelimited() throws {
        let events = NIOLockedValueBox<[LogEvent]>([])
        var logger = Logger(label: "t") { _ in InertLogHandler(wrapping: Capture(events: events)) }
        logger[metadataKey: "handler.value"] = "a\u{1B}[2Kb"
        let forged = "x\n999999  2026-01-01T00:00:00Z  provision  releaser  deploy:production  allow"
        logger.info("decision \(forged)", metadata: ["capability": "\(forged)", "agent": "a", "policy.decision": "deny",
                                                   "nested": ["k": "\u{202E}v"]])
        let event = try #require(events.withLockedValue { $0.first })
        #expect(event.message.description == "decision x\\n999999  2026-01-01T00:00:00Z  provision  releaser  deploy:production  allow")
        let m = try #require(event.metadata)
        #expect(m["capability"]?.description == "\"x\\n999999  2026-01-01T00:00:00Z  provision  releaser  deploy:production  allow\"")
        #expect(m["agent"]?.description == "a" && m["policy.decision"]?.description == "deny", "plain tokens stay bare")
        #expect(m["handler.value"]?.description == "\"a\\x1b[2Kb\"", "the handler's own metadata too")
        #expect(m["nested"]?.description.contains("\\u{202e}") == true && m["nested"]?.description.contains("\u{202E}") == false)
        let everything = event.message.description + m.values.map(\.description).joined()
        #expect(everything.unicodeScalars.allSatisfy { $0.value >= 0x20 && !(0x7F...0x9F).contains($0.value) && !(0x202A...0x202E).contains($0.value) })
    }

    @Test func longValuesAreCutWithAMarker() throws {
        let events = NIOLockedValueBox<[LogEvent]>([])
        let logger = Logger(label: "t") { _ in InertLogHandler(wrapping: Capture(events: events)) }
        logger.error("failed", metadata: ["error": "\(String(repeating: "y", count: 100_000))"])
        let value = try #require(events.withLockedValue { $0.first?.metadata?["error"]?.description })
        #expect(value.utf8.count < InertLogHandler.limit + 64 && value.hasSuffix("bytes]\""))
    }
}
