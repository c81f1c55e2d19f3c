import LanyardWire
import NIOCore

/// The agent side of Lanyard: ask for permission, credentials and identities as the
/// process the kernel says you are. Calls may run concurrently over one connection.
///
/// Questions (`authorize`) answer with a decision; actions throw `LanyardError` when
/// they are not allowed. An unregistered caller gets `UNAUTHENTICATED` for every call.
public final class LanyardClient: Sendable {
    public static let defaultSocket = "/run/lanyard/agent.sock"
    let connection: FramedConnection<Lanyard_V1_Request, Lanyard_V1_Response>

    /// Connects (lazily) to `socketPath`, default `$LANYARD_SOCKET` or /run/lanyard/agent.sock.
    public init(socketPath: String? = nil, maxFrame: Int = Framing.defaultMaxFrame) {
        let path = socketPath ?? environment("LANYARD_SOCKET") ?? Self.defaultSocket
        connection = .init(.path(path), maxFrame: maxFrame)
    }

    /// Uses an already connected socket (inherited from a supervisor, or made by a test).
    public init(connectedSocket fd: Int32, maxFrame: Int = Framing.defaultMaxFrame) {
        connection = .init(.descriptor(fd), maxFrame: maxFrame)
    }

    /// Server version and who the daemon sees on this connection.
    public func hello(client: String = "LanyardClient") async throws -> Lanyard_V1_HelloResponse {
        var r = Lanyard_V1_Request()
        r.hello = .with { $0.client = client }
        return try await call(r).hello
    }

    public func authorize(_ capability: String, resource: String = "", args: [String: String] = [:],
                          approvalID: String = "", dryRun: Bool = false) async throws -> Lanyard_V1_AuthorizeResponse {
        var r = Lanyard_V1_Request()
        r.authorize = .with {
            $0.capability = capability
            $0.resource = resource
            $0.args = args
            $0.approvalID = approvalID
            $0.dryRun = dryRun
        }
        return try await call(r).authorize
    }

    /// Sends any request; throws `LanyardError` for a non-OK status.
    public func call(_ request: Lanyard_V1_Request) async throws -> Lanyard_V1_Response {
        let response = try await connection.send(request)
        guard response.status.code == .ok else {
            throw LanyardError(code: response.status.code, message: response.status.message, response: response)
        }
        return response
    }

    public func close() async { await connection.close() }
}

/// The operator side: the admin socket. Every call is checked against the caller's uid.
public final class LanyardAdminClient: Sendable {
    public static let defaultSocket = "/run/lanyard/admin.sock"
    let connection: FramedConnection<Lanyard_V1_AdminRequest, Lanyard_V1_AdminResponse>

    public init(socketPath: String? = nil, maxFrame: Int = Framing.defaultMaxFrame) {
        let path = socketPath ?? environment("LANYARD_ADMIN_SOCKET") ?? Self.defaultSocket
        connection = .init(.path(path), maxFrame: maxFrame)
    }

    public init(connectedSocket fd: Int32, maxFrame: Int = Framing.defaultMaxFrame) {
        connection = .init(.descriptor(fd), maxFrame: maxFrame)
    }

    public func call(_ request: Lanyard_V1_AdminRequest) async throws -> Lanyard_V1_AdminResponse {
        let response = try await connection.send(request)
        guard response.status.code == .ok else {
            throw LanyardError(code: response.status.code, message: response.status.message, response: response)
        }
        return response
    }

    public func close() async { await connection.close() }
}

#if canImport(Glibc)
import Glibc
#endif

func environment(_ name: String) -> String? {
    guard let v = getenv(name) else { return nil }
    let s = String(cString: v)
    return s.isEmpty ? nil : s
}
