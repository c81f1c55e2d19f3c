import LanyardCore
import LanyardServer

/// `--config FILE`: a YAML mapping whose keys are the long flag names (`state-dir: ...`).
enum ConfigFile {
    static let keys: Set<String> = [
        "policy", "state-dir", "agent-socket", "admin-socket", "master-key-file", "agent-socket-mode",
        "admin-socket-mode", "admin-group", "max-frame", "max-in-flight", "max-running-per-uid", "max-connections-per-uid",
        "max-connections", "frame-deadline-ms", "idle-timeout-seconds", "log-level", "max-admin-connections", "admin-reserve", "max-unknown-connections",
        "unknown-idle-timeout-seconds", "max-unsent-reply-bytes", "reply-deadline-ms", "max-pending-approvals-per-agent", "max-leases-per-agent",
        "max-field-bytes", "max-args", "unknown-audit-interval-seconds", "maintenance-interval-seconds", "retention-days", "max-exe-hash-bytes",
    ]

    struct Problem: Error, CustomStringConvertible {
        var description: String
    }

    static func load(_ path: String) throws -> [String: String] {
        // The config names the master key, the policy and the sockets: trusted like them.
        let text: String
        do {
            text = try TrustedPath.read(path, what: "the config file", limit: 1024 * 1024)
        } catch {
            throw Problem(description: "\(error)")
        }
        let node: YAMLNode?
        do { node = try YAML.compose(text) } catch { throw Problem(description: "\(path): not valid YAML: \(error)") }
        guard let node else { return [:] }
        guard case .mapping(let mapping) = node else { throw Problem(description: "\(path): expected a mapping of option: value") }
        var out: [String: String] = [:]
        for (k, v) in mapping {
            let key = String((k.string ?? "").map { $0 == "_" ? "-" : $0 })
            guard keys.contains(key) else {
                throw Problem(description: "\(path):\(k.mark?.line ?? 0): unknown option '\(key)' (known: \(keys.sorted().joined(separator: ", ")))")
            }
            guard case .scalar(let s) = v else { throw Problem(description: "\(path):\(v.mark?.line ?? 0): \(key): expected a single value") }
            out[key] = s.string
        }
        return out
    }
}
