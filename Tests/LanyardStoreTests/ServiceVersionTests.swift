import LanyardCore
@testable import LanyardStore
import LanyardTestSupport
import Logging
import Testing

/// A service's credential version (rotation): two rotations at once. (The race of the first
/// provision with the maintenance pass, which made a fresh service look tampered with and
/// rotated it, has no deterministic test: it showed as `CredentialTests`' rotation test
/// failing beside the other suites.)
struct ServiceVersionTests {
    let logger = Logger(label: "test")

    /// Two rotations at once read the same version: the second one's change fails, to be
    /// retried, rather than record that version again over leases the first did not see.
    @Test func aRotationFromAVersionNoLongerCurrentFails() async throws {
        let dir = TestSupport.tempDir("rot")
        defer { TestSupport.remove(dir) }
        let store = try Store(directory: dir, masterKey: testKey, clock: ManualClock(), logger: logger)
        defer { store.audit.close() }
        let (v, _) = try store.serviceVersion("github")
        try await store.audit.append([AuditRecord(event: "rotate")], with: store.setServiceVersion("github", v + 1, from: v, nowMicros: 1))
        await #expect(throws: StoreError.self) {
            try await store.audit.append([AuditRecord(event: "rotate")], with: store.setServiceVersion("github", v + 1, from: v, nowMicros: 2))
        }
        #expect(try store.serviceVersion("github") == (v + 1, 1))
    }
}
