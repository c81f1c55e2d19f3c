#if canImport(Glibc)
import Glibc
#endif

/// Wall-clock time in UTC microseconds, injected so that expiry and deadlines are
/// testable without sleeping.
public protocol WallClock: Sendable {
    func nowMicros() -> Int64
}

extension WallClock {
    public func nowSeconds() -> Int64 { nowMicros() / 1_000_000 }
}

public struct SystemWallClock: WallClock {
    public init() {}
    public func nowMicros() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1_000
    }
}
