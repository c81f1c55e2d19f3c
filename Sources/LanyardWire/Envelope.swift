import SwiftProtobuf

/// A framed message with a request id: the agent and admin envelopes.
public protocol Envelope: SwiftProtobuf.Message {
    var id: UInt64 { get set }
    /// A long poll: its handler mostly waits (for a decision, a change). It is cancelled when
    /// its connection closes and at a graceful stop, and answers with what it has then.
    var waitsLong: Bool { get }
    /// Its handler works briefly and otherwise waits (no scan of many rows), so it may run on
    /// its connection's event loop.
    var isBrief: Bool { get }
}

/// A response envelope: it carries the status of the call it answers.
public protocol ResponseEnvelope: Envelope {
    var status: Lanyard_V1_Status { get set }
}

extension Lanyard_V1_Request: Envelope {
    public var waitsLong: Bool { if case .awaitApproval = call { true } else { false } }
    public var isBrief: Bool {
        switch call {
        case .hello, .authorize, .provision, .revoke, .introspect, .issueIdentity, .validateIdentity, .awaitApproval: true
        case .listLeases, .rotate, .mcpServer, .none: false  // a page of rows, every lease of a service, up to 1,024 tools
        }
    }
}
extension Lanyard_V1_AdminRequest: Envelope {
    /// `lanyardctl approvals watch`: a list that waits for a change (up to 60 s).
    public var waitsLong: Bool { if case .approvalsList(let c) = call { c.waitMs > 0 } else { false } }
    public var isBrief: Bool { false }
}
extension Lanyard_V1_Response: ResponseEnvelope {
    public var waitsLong: Bool { false }
    public var isBrief: Bool { false }
}
extension Lanyard_V1_AdminResponse: ResponseEnvelope {
    public var waitsLong: Bool { false }
    public var isBrief: Bool { false }
}

extension ResponseEnvelope {
    /// An error response for request `id`.
    public static func failure(id: UInt64, _ code: Lanyard_V1_Code, _ message: String) -> Self {
        var r = Self()
        r.id = id
        r.status = .init(code, message)
        return r
    }
}

extension Envelope {
    /// The request id of an undecodable body, when its first field is the id (as every
    /// encoder writes it): lets the server answer a garbage body by id.
    public static func peekID(_ body: [UInt8]) -> UInt64? {
        guard body.first == 0x08 else { return nil }  // field 1, varint
        var value: UInt64 = 0
        var shift: UInt64 = 0
        for byte in body.dropFirst().prefix(10) {
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
        }
        return nil
    }
}
