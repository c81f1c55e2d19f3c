import Foundation
import LanyardCore

/// One JSON-RPC 2.0 message as MCP's stdio transport carries it: a JSON object per line.
/// The gateway reads only what it routes by (method, id, params) and relays the original
/// bytes unchanged, except for the replies it writes itself and the tools/list it filters.
struct Message: @unchecked Sendable {  // immutable JSON values
    let raw: [UInt8]
    let object: [String: Any]
    /// The message as LanyardCore's strict reader reads it (client messages only): numbers
    /// as written, and no duplicate member names, invalid UTF-8 or lone surrogates — where
    /// JSON parsers disagree, so the gateway could decide on one message and the server
    /// run another.
    let strict: JSON?

    static let maxDepth = 64

    /// Nil when the line is not a JSON object (a batch array, a scalar, or not JSON).
    init?(_ raw: [UInt8]) {
        guard let value = try? JSONSerialization.jsonObject(with: Data(raw), options: [.fragmentsAllowed]),
              let object = value as? [String: Any] else { return nil }
        self.raw = raw
        self.object = object
        strict = nil
    }

    /// A client's message: only strict JSON (`strictProblem` says why not).
    init?(client raw: [UInt8]) {
        guard let strict = try? JSON.read(raw, maxDepth: Self.maxDepth, numbers: .asWritten), case .object = strict,
              let plain = Message(raw) else { return nil }
        self.raw = raw
        object = plain.object
        self.strict = strict
    }

    static func strictProblem(_ raw: [UInt8]) -> String {
        do {
            guard case .object = try JSON.read(raw, maxDepth: maxDepth, numbers: .asWritten) else { return "the message is not a JSON object" }
            return "the message cannot be read"
        } catch {
            return "\(error)"
        }
    }

    var method: String? { object["method"] as? String }
    var id: RequestID? { object["id"].flatMap(RequestID.init) }
    var params: [String: Any] { object["params"] as? [String: Any] ?? [:] }
    var isRequest: Bool { method != nil && id != nil }
    var isResponse: Bool { method == nil && id != nil && (object["result"] != nil || object["error"] != nil) }

    /// Whether the line is a JSON array: a JSON-RPC batch.
    static func isBatch(_ raw: [UInt8]) -> Bool {
        raw.first { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\t") } == UInt8(ascii: "[")
    }

    /// The ids of the requests in a batch (to refuse each).
    static func batchIDs(_ raw: [UInt8]) -> [RequestID] {
        guard let items = try? JSONSerialization.jsonObject(with: Data(raw)) as? [Any] else { return [] }
        return items.compactMap { ($0 as? [String: Any]).flatMap { $0["method"] != nil ? $0["id"].flatMap(RequestID.init) : nil } }
    }
}

/// A JSON-RPC request id: a string or a number (null ids are not requests).
struct RequestID: Hashable, CustomStringConvertible, @unchecked Sendable {  // an immutable String or NSNumber
    let json: Any
    let key: String

    init?(_ value: Any) {
        switch value {
        case let s as String:
            json = s
            key = "s:" + s
        case let n as NSNumber:
            json = n
            key = "n:" + n.stringValue
        default:
            return nil
        }
    }

    init(string: String) {
        json = string
        key = "s:" + string
    }

    static func == (a: RequestID, b: RequestID) -> Bool { a.key == b.key }
    func hash(into h: inout Hasher) { h.combine(key) }
    var description: String { String(key.dropFirst(2)) }
}

/// The messages the gateway writes itself.
enum Reply {
    static func encode(_ object: [String: Any]) -> [UInt8] {
        // .withoutEscapingSlashes keeps paths readable; sorted keys keep output stable.
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return [UInt8](data)
    }

    /// A tool result with `isError: true`: what a model sees when its call did not run.
    static func toolError(_ id: RequestID, _ text: String) -> [UInt8] {
        encode(["jsonrpc": "2.0", "id": id.json,
                "result": ["content": [["type": "text", "text": text]], "isError": true] as [String: Any]])
    }

    /// A JSON-RPC error; `id` nil answers a message whose id could not be read.
    static func error(_ id: RequestID?, code: Int, _ message: String) -> [UInt8] {
        encode(["jsonrpc": "2.0", "id": id?.json ?? NSNull(), "error": ["code": code, "message": message] as [String: Any]])
    }

    static func progress(token: Any, progress: Int, message: String) -> [UInt8] {
        encode(["jsonrpc": "2.0", "method": "notifications/progress",
                "params": ["progressToken": token, "progress": progress, "message": message] as [String: Any]])
    }

    static func request(_ id: RequestID, method: String, params: [String: Any]) -> [UInt8] {
        encode(["jsonrpc": "2.0", "id": id.json, "method": method, "params": params])
    }
}

/// JSON-RPC error codes the gateway answers with.
enum RPCCode {
    static let parseError = -32700
    static let invalidRequest = -32600
    static let internalError = -32603
    /// MCP SDKs' "request timeout".
    static let timeout = -32001
    /// Implementation-defined server error: a bound of the gateway's.
    static let busy = -32000
}
