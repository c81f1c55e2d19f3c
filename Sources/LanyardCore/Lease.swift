/// A credential handed to an agent: what it covers, for whom, until when.
public struct Lease: Sendable, Equatable {
    public enum State: String, Sendable { case active, revoked, expired }

    public var id: String
    public var agentID: String
    public var agent: String
    public var service: String
    public var kind: Policy.Service.Kind
    public var scope: [String]
    /// The service's credential version this lease was issued under (rotation revokes older ones).
    public var version: Int
    public var issuedMicros: Int64
    public var expiresMicros: Int64
    public var state: State
    public var singleUse: Bool = false
    /// The process the lease is bound to (`bind_to_process`): it ends when that process exits.
    public var process: BoundProcess?

    public init(id: String, agentID: String, agent: String, service: String, kind: Policy.Service.Kind, scope: [String],
                version: Int, issuedMicros: Int64, expiresMicros: Int64, state: State = .active, singleUse: Bool = false,
                process: BoundProcess? = nil) {
        self.id = id
        self.agentID = agentID
        self.agent = agent
        self.service = service
        self.kind = kind
        self.scope = scope
        self.version = version
        self.issuedMicros = issuedMicros
        self.expiresMicros = expiresMicros
        self.state = state
        self.singleUse = singleUse
        self.process = process
    }

    /// Active means not revoked, not expired, and not past its expiry even if the reaper
    /// has not run yet: a lease never outlives `expiresMicros`.
    public func isActive(atMicros now: Int64) -> Bool {
        state == .active && now < expiresMicros
    }

    /// The state as of `now` (an unreaped lease past its expiry reads as expired).
    public func state(atMicros now: Int64) -> State {
        state == .active && now >= expiresMicros ? .expired : state
    }
}

/// A process, named so that a recycled pid is never taken for it: pid and its start time
/// (field 22 of /proc/PID/stat, clock ticks since boot).
public struct BoundProcess: Sendable, Hashable {
    public var pid: Int32
    public var startTime: UInt64

    public init(pid: Int32, startTime: UInt64) {
        self.pid = pid
        self.startTime = startTime
    }
}

/// Credential lifetimes (DESIGN.md section 5): the service default when none is asked
/// for, never above the service's maximum, which is never above 900 s.
public enum TTLRule {
    public static func resolve(requested: UInt64, service: Policy.Service) -> Result<Int, TTLError> {
        if requested == 0 { return .success(service.defaultTTLSeconds) }
        let max = min(service.maxTTLSeconds, Policy.maxTTLCeilingSeconds)
        guard requested <= UInt64(max) else { return .failure(TTLError(requested: requested, max: max, service: service.name)) }
        return .success(Int(requested))
    }

    /// Whether a service with `rotation_days` is due for its scheduled rotation.
    public static func rotationDue(_ service: Policy.Service, lastRotatedMicros: Int64, nowMicros: Int64) -> Bool {
        guard let days = service.rotationDays else { return false }
        return nowMicros - lastRotatedMicros >= Int64(days) * 86_400 * 1_000_000
    }
}

public struct TTLError: Error, Equatable, CustomStringConvertible {
    public var requested: UInt64
    public var max: Int
    public var service: String
    public var description: String {
        "ttl_seconds \(requested) exceeds the maximum of \(max) s for service '\(service)' (no credential lives longer than \(Policy.maxTTLCeilingSeconds) s); ask for \(max) or less, or 0 for the default"
    }
}
