import Foundation
import LanyardCore

/// A client's JSON-RPC message (MCP's stdio transport: one JSON object per line), read by
/// LanyardCore's strict reader: numbers as written, and no duplicate member names, invalid
/// UTF-8 or lone surrogates — where JSON parsers disagree, so the gateway could decide on
/// one message and the server run another. What the server receives is this tree written
/// again (`forwarded`): one line whatever whitespace the client used (a bare CR is a line
/// break to some readers), exactly what was decided.
struct ClientMessage: Sendable {
    let json: JSON
    let method: String?
    /// A string or integer id; nil for a notification (or an id of another type: `badID`).
    let id: RequestID?
    let badID: Bool

    static let maxDepth = 64

    /// Throws why the line is not a message the gateway relays.
    init(_ raw: [UInt8]) throws(GatewayError) {
        let json: JSON
        do { json = try JSON.read(raw, maxDepth: Self.maxDepth, numbers: .asWritten) } catch { throw GatewayError("\(error)") }
        guard case .object = json else { throw GatewayError("the message is not a JSON object") }
        self.json = json
        if case .string(let m)? = json[member: "method"] { method = m } else { method = nil }
        let idMember = json[member: "id"]
        id = idMember.flatMap(RequestID.init(strict:))
        badID = idMember != nil && id == nil
    }

    var params: JSON? { json[member: "params"] }
    var forwarded: [UInt8] { Array(json.text.utf8) }
}

/// A server's message, read by Foundation: the gateway routes server output by id only,
/// and relays it as written (but for tools/list, which it filters).
struct ServerMessage: @unchecked Sendable {  // immutable JSON values
    let raw: [UInt8]
    let object: [String: Any]

    init?(_ raw: [UInt8]) {
        guard let value = try? JSONSerialization.jsonObject(with: Data(raw)), let object = value as? [String: Any] else { return nil }
        self.raw = raw
        self.object = object
    }

    var id: RequestID? { object["id"].flatMap(RequestID.init(foundation:)) }
    var isResponse: Bool { object["method"] == nil && (object["result"] != nil || object["error"] != nil) }

    /// A CR, NEL, LINE or PARAGRAPH SEPARATOR inside a line: one line to us, two to a client
    /// whose reader breaks lines there.
    static func hasHiddenLineBreak(_ raw: [UInt8]) -> Bool {
        for i in raw.indices {
            switch raw[i] {
            case 0x0D: return true
            case 0xC2 where i + 1 < raw.count && raw[i + 1] == 0x85: return true
            case 0xE2 where i + 2 < raw.count && raw[i + 1] == 0x80 && (raw[i + 2] == 0xA8 || raw[i + 2] == 0xA9): return true
            default: continue
            }
        }
        return false
    }
}

/// A JSON-RPC request id, as MCP allows it: a string or an integer.
struct RequestID: Hashable, Sendable, CustomStringConvertible {
    let json: JSON
    let key: String

    init?(strict value: JSON) {
        switch value {
        case .string(let s): (json, key) = (value, "s:" + s)
        case .int(let n): (json, key) = (value, "n:\(n)")
        case .number(let text):  // numbers as written: an integer only
            guard let n = Int64(text) else { return nil }
            (json, key) = (.int(n), "n:\(n)")
        default: return nil
        }
    }

    init?(foundation value: Any) {
        switch value {
        case let s as String: (json, key) = (.string(s), "s:" + s)
        case let n as NSNumber where n.doubleValue == n.doubleValue.rounded() && abs(n.doubleValue) < 9e15:
            (json, key) = (.int(n.int64Value), "n:\(n.int64Value)")
        default: return nil
        }
    }

    static func == (a: RequestID, b: RequestID) -> Bool { a.key == b.key }
    func hash(into h: inout Hasher) { h.combine(key) }
    /// For logs: inert and short whatever the client chose.
    var description: String { Inert.text(String(key.dropFirst(2)), limit: 64) }
}

/// The messages the gateway writes itself.
enum Reply {
    static func message(_ members: [(String, JSON)]) -> [UInt8] {
        Array(JSON.object([("jsonrpc", .string("2.0"))] + members).text.utf8)
    }

    /// A tool result with `isError: true`: what a model sees when its call did not run.
    static func toolError(_ id: RequestID, _ text: String) -> [UInt8] {
        message([("id", id.json), ("result", .object([
            ("content", .array([.object([("type", .string("text")), ("text", .string(text))])])), ("isError", .bool(true))]))])
    }

    /// A JSON-RPC error; `id` nil answers a message whose id could not be read.
    static func error(_ id: RequestID?, code: Int, _ text: String) -> [UInt8] {
        message([("id", id?.json ?? .null), ("error", .object([("code", .int(Int64(code))), ("message", .string(text))]))])
    }

    static func progress(token: JSON, progress: Int, text: String) -> [UInt8] {
        message([("method", .string("notifications/progress")),
                 ("params", .object([("progressToken", token), ("progress", .int(Int64(progress))), ("message", .string(text))]))])
    }

    static func request(_ id: RequestID, method: String, params: JSON) -> [UInt8] {
        message([("id", id.json), ("method", .string(method)), ("params", params)])
    }

    /// A server's message with a member replaced (Foundation values; sorted keys).
    static func encode(_ object: [String: Any]) -> [UInt8] {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return [UInt8](data)
    }
}

/// JSON-RPC error codes the gateway answers with.
enum RPCCode {
    static let parseError = -32700
    static let invalidRequest = -32600
    static let invalidParams = -32602
    static let internalError = -32603
    /// Implementation-defined server error: a bound of the gateway's.
    static let busy = -32000
    /// MCP SDKs' "request timeout".
    static let timeout = -32001
}

extension JSON {
    /// `self` without member `name` (an object), else `self`.
    func removing(_ name: String) -> JSON {
        guard case .object(let pairs) = self else { return self }
        return .object(pairs.filter { !$0.0.sameBytes(as: name) })
    }
}
