import LanyardCore
import Logging

/// Wraps the daemon's log handler so that no line can be forged or rewrite a terminal
/// (invariant 14): the message and every metadata value are made inert (`Inert`) before
/// the wrapped handler writes them, and a value that is not a plain token is quoted
/// (`Inert.field`), so `key=value` pairs cannot run into each other. One log call stays one line.
package struct InertLogHandler: LogHandler {
    /// The most bytes kept of a message or of one metadata value.
    package static let limit = 2048

    private var wrapped: any LogHandler
    package var metadata: Logger.Metadata = [:]
    package var metadataProvider: Logger.MetadataProvider?

    package init(wrapping handler: any LogHandler) {
        wrapped = handler
        metadataProvider = handler.metadataProvider
        if metadataProvider != nil { wrapped.metadataProvider = nil }  // applied here, so that its values are made inert too
    }

    package var logLevel: Logger.Level {
        get { wrapped.logLevel }
        set { wrapped.logLevel = newValue }
    }

    package subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    package func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let explicit = event.metadata { merged.merge(explicit) { $1 } }
        var event = event
        if let error = event.error {
            merged["error"] = "\(error)"
            event.error = nil
        }
        event.message = "\(Inert.text(event.message.description, limit: Self.limit))"
        event.metadata = merged.isEmpty ? nil : merged.mapValues { .string(Self.shown($0)) }
        wrapped.log(event: event)
    }

    /// One metadata value as it may appear in a line (`Inert.field`).
    static func shown(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let s): Inert.field(s, limit: limit)
        default: Inert.field(value.description, limit: limit)
        }
    }
}
