/// systemd services as credential consumers (`service_units:`): systemd's
/// `LoadCredential=ID:/run/lanyard/credentials.sock` asks lanyardd for credential ID of a
/// unit, and gets a lease of the policy-declared agent the unit's entry names.
public struct ServiceUnitCredential: Sendable, Equatable {
    /// The unit, such as `github-sync.service`.
    public var unit: String
    /// The credential id of `LoadCredential=ID:...` (the file name under `$CREDENTIALS_DIRECTORY`).
    public var id: String
    /// The service principal: an agent of `agents:` the lease is issued to.
    public var agent: String
    /// A LOW-risk grant of that agent: the lease's scope and service (no approver is there at unit start).
    public var capability: Capability
    /// The lease's lifetime; nil: the service's default.
    public var ttlSeconds: Int?
    /// Where the entry is in the policy file.
    public var line: Int?
}

extension Policy {
    /// The `service_units:` entry for `unit`'s credential `id`, or nil when the policy names none.
    public func serviceUnitCredential(unit: String, id: String) -> ServiceUnitCredential? {
        serviceUnits.first { $0.unit.utf8.elementsEqual(unit.utf8) && $0.id.utf8.elementsEqual(id.utf8) }
    }
}

/// What systemd's credential request names, read from the peer's socket address:
/// systemd (PID 1) connects from the abstract address `\0<random>/unit/<unit>/<id>`
/// (systemd.exec(5), `LoadCredential=`).
public struct CredentialRequestAddress: Sendable, Equatable {
    public var unit: String
    public var id: String

    public init(unit: String, id: String) {
        self.unit = unit
        self.id = id
    }

    /// Parses the `sun_path` bytes of the peer's address (as long as getpeername says);
    /// nil unless it is exactly that form with a valid unit name and credential id.
    public static func parse(_ path: [UInt8]) -> CredentialRequestAddress? {
        guard path.count >= 2, path.count <= 108, path[0] == 0 else { return nil }
        let parts = path.dropFirst().split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        guard parts.count == 4, parts[1].elementsEqual("unit".utf8),
              !parts[0].isEmpty, parts[0].count <= 64, parts[0].allSatisfy(isAlphanumeric) else { return nil }
        let unit = String(decoding: parts[2], as: UTF8.self), id = String(decoding: parts[3], as: UTF8.self)
        guard isServiceUnitName(unit), isCredentialID(id) else { return nil }
        return CredentialRequestAddress(unit: unit, id: id)
    }

    /// Whether `cgroup` is the unit's own cgroup as the system manager makes it: every
    /// ancestor a `.slice`, the last component the unit, byte for byte
    /// (`^(/[^/]+\.slice)*/UNIT$`). A sub-cgroup of any unit is refused, whatever its name:
    /// under a `Delegate=` unit, a container's payload or `user@UID.service`, whoever
    /// writes that subtree names its cgroups, so a name there proves nothing.
    public func isUnitsOwnCgroup(_ cgroup: String?) -> Bool {
        guard let cgroup else { return false }
        let parts = Array(cgroup.utf8).split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        guard parts.count >= 2, parts[0].isEmpty, let last = parts.last, last.elementsEqual(unit.utf8) else { return false }
        return parts.dropFirst().dropLast().allSatisfy { $0.count > 6 && $0.reversed().starts(with: ".slice".utf8.reversed()) }
    }

    /// A service unit name as systemd allows it: `NAME.service` (an instance `NAME@I.service`),
    /// NAME of ASCII letters, digits and `:-_.\@`, at most 255 bytes.
    public static func isServiceUnitName(_ s: String) -> Bool {
        let b = Array(s.utf8)
        guard b.count <= 255, s.hasSuffix(".service"), b.count > 8 else { return false }
        return b.dropLast(8).allSatisfy { isAlphanumeric($0) || ":-_.\\@".utf8.contains($0) } && b[0] != UInt8(ascii: ".")
    }

    /// A credential id: 1 to 64 bytes of ASCII letters, digits and `-_.@`, not `.` or `..`.
    public static func isCredentialID(_ s: String) -> Bool {
        let b = Array(s.utf8)
        guard (1...64).contains(b.count), s != ".", s != ".." else { return false }
        return b.allSatisfy { isAlphanumeric($0) || "-_.@".utf8.contains($0) }
    }

    private static func isAlphanumeric(_ c: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(c) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(c)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c)
    }
}
