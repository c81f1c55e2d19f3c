/// Short names for the generated wire types, shared by the server and the clients.
public typealias Code = Lanyard_V1_Code

extension Lanyard_V1_Status {
    public init(_ code: Lanyard_V1_Code, _ message: String = "") {
        self.init()
        self.code = code
        self.message = message
    }

    public static let ok = Lanyard_V1_Status(.ok)
}

/// The protocol version this build speaks.
public let lanyardProtocolVersion: UInt32 = 1
/// The product version, reported by Hello and status.
public let lanyardVersion = "0.1.0"
