/// A capability name: 2–4 lowercase segments `[a-z0-9_-]+` joined by `:`.
/// The first segment is the service. There are no wildcards, ever.
public struct Capability: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let name: String

    /// Parses a capability name, or says why it is not one.
    public init(parsing name: String) throws(CapabilityError) {
        if name.contains("*") { throw .wildcard(name) }
        let segments = name.split(separator: ":", omittingEmptySubsequences: false)
        guard (2...4).contains(segments.count) else { throw .segmentCount(name) }
        for segment in segments {
            guard !segment.isEmpty, segment.utf8.allSatisfy(Capability.isSegmentByte) else {
                throw .malformed(name)
            }
        }
        self.name = name
    }

    public var service: String { String(name.prefix { $0 != ":" }) }
    public var description: String { name }
    public static func < (a: Capability, b: Capability) -> Bool { a.name < b.name }

    /// Whether `s` is a valid service name (one capability segment).
    public static func isValidService(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.allSatisfy(isSegmentByte)
    }

    private static func isSegmentByte(_ b: UInt8) -> Bool {
        (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9"))
            || b == UInt8(ascii: "_") || b == UInt8(ascii: "-")
    }
}

public enum CapabilityError: Error, Equatable, CustomStringConvertible {
    case wildcard(String)
    case segmentCount(String)
    case malformed(String)

    public var description: String {
        switch self {
        case .wildcard(let n): "capability '\(n)' contains '*': wildcards are not allowed, list each capability"
        case .segmentCount(let n): "capability '\(n)' must have 2 to 4 segments joined by ':' (service:action)"
        case .malformed(let n): "capability '\(n)' is malformed: segments are lowercase [a-z0-9_-]+"
        }
    }
}

/// How much harm a capability can do, and so which route its calls take.
public enum RiskLevel: Int, Comparable, Sendable, CaseIterable, CustomStringConvertible {
    case low = 1, medium = 2, high = 3

    public init?(name: String) {
        switch name {
        case "low": self = .low
        case "medium": self = .medium
        case "high": self = .high
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .low: "low"
        case .medium: "medium"
        case .high: "high"
        }
    }

    public static func < (a: RiskLevel, b: RiskLevel) -> Bool { a.rawValue < b.rawValue }
}
