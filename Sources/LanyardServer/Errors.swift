import LanyardStore
import LanyardWire
import Logging

/// An error about a call, with the status it maps to. Everything else becomes
/// INTERNAL with a generic message (details go to the log only).
struct CallError: Error {
    var code: Lanyard_V1_Code
    var message: String
    init(_ code: Lanyard_V1_Code, _ message: String) {
        self.code = code
        self.message = message
    }
}

extension ResponseEnvelope {
    /// The answer to request `id`: what `body` returns, or the status of its error.
    static func answering(_ id: UInt64, logger: Logger, _ body: () async throws -> Self) async -> Self {
        var response: Self
        do {
            response = try await body()
        } catch {
            response = .from(error, id: id, logger: logger)
        }
        response.id = id
        return response
    }

    /// The one place errors become wire statuses.
    static func from(_ error: any Error, id: UInt64, logger: Logger) -> Self {
        switch error {
        case let e as CallError:
            return .failure(id: id, e.code, e.message)
        case let e as StoreConflict:
            return .failure(id: id, .aborted, e.description)
        case let e as SealError:
            logger.error("sealed value failed its integrity check; call denied", metadata: ["error": "\(e)"])
            return .failure(id: id, .dataLoss, e.description)
        case let e as StoreError:
            logger.error("storage failure; call denied", metadata: ["error": "\(e)"])
            return .failure(id: id, .unavailable, "lanyardd cannot write its audit log or state; the call was denied (the operator should check the daemon's log)")
        default:
            logger.error("internal error; call denied", metadata: ["error": "\(error)"])
            return .failure(id: id, .internal, "internal error; the call was denied")
        }
    }
}
