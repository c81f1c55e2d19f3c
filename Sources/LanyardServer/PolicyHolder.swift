#if canImport(Glibc)
import Glibc
#endif
import LanyardCore
import LanyardCrypto
import LanyardStore
import Logging
import NIOConcurrencyHelpers

/// An active policy version with where it came from (its text is in the store, read back
/// by `policy show`: a large policy's text is not held twice).
public struct PolicySnapshot: Sendable {
    public var policy: Policy
    public var path: String
    public var version: String { policy.version }
}

/// Holds the active policy; a reload validates the new version whole and swaps it in
/// atomically, or keeps the old one.
public final class PolicyHolder: Sendable {
    public let path: String
    private let active: NIOLockedValueBox<PolicySnapshot>
    private let store: Store
    private let clock: any WallClock
    private let logger: Logger

    public init(path: String, store: Store, clock: any WallClock, logger: Logger) throws {
        self.path = path
        self.store = store
        self.clock = clock
        self.logger = logger
        active = NIOLockedValueBox(try Self.load(path: path, store: store, clock: clock, logger: logger))
    }

    public var current: PolicySnapshot { active.withLockedValue { $0 } }

    /// Reads, validates and activates the file again. Returns the new snapshot and whether
    /// the version changed; throws (keeping the old version) when the file is invalid.
    public func reload() throws -> (snapshot: PolicySnapshot, changed: Bool) {
        let next = try Self.load(path: path, store: store, clock: clock, logger: logger)
        let previous = active.withLockedValue { old in
            let v = old.version
            old = next
            return v
        }
        return (next, previous != next.version)
    }

    /// Parses and reviews the file (SelectorReview: errors refuse it, warnings are logged).
    static func load(path: String, store: Store, clock: any WallClock, logger: Logger) throws -> PolicySnapshot {
        let source = try readPolicyFile(path)
        var policy = try PolicyParser.parse(source, file: path)
        let review = SelectorReview.review(policy, file: path, host: LocalHost())
        if let error = review.errors.first { throw error }
        for warning in review.warnings { logger.warning("policy: \(warning)") }
        policy.version = SHA256.hex(Array(source.utf8))
        let ids = try store.recordPolicy(version: policy.version, path: path, source: source,
                                         agentNames: policy.agents.map(\.name), nowMicros: clock.nowMicros())
        policy.assignIDs(ids)
        return PolicySnapshot(policy: policy, path: path)
    }

    /// The policy decides who may do what: it must be a file only root or the daemon's user
    /// can change (TrustedPath), else it is refused like an invalid one.
    static func readPolicyFile(_ path: String) throws -> String {
        do {
            return try TrustedPath.read(path, what: "the policy file", limit: 64 * 1024 * 1024)
        } catch let error as StartupError {
            throw PolicyError(file: path, path: "", line: nil, message: error.description)
        }
    }
}
