/// The validated policy: the single source of truth for agents, capabilities,
/// services, approvers and admins (DESIGN.md section 5). Built only by `PolicyParser`.
public struct Policy: Sendable {
    public var trustDomain: String
    public var admins: Principals
    public var approvers: Approvers?
    public var services: [String: Service]
    public var capabilities: [Capability: RiskLevel]
    /// In policy order; changed only with the indexes below (`assignIDs`).
    public private(set) var agents: [Agent]
    /// The MCP servers of `lanyard-mcp --server NAME`, by name.
    public var mcpServers: [String: McpServer] = [:]
    /// The credentials systemd units get through `LoadCredential=` (`service_units:`).
    public var serviceUnits: [ServiceUnitCredential] = []
    /// The JWS `alg` identity tokens are signed with (`identity: {alg: ...}`): `EdDSA`
    /// (Ed25519, the default) or `ES256` (P-256, what SPIFFE JWT-SVID verifiers accept).
    public var identityAlgorithm = Policy.identityAlgorithms[0]
    public static let identityAlgorithms = ["EdDSA", "ES256"]

    /// The policy's version: SHA-256 (hex) of its source bytes, set by the loader.
    public var version: String = ""

    public struct Principals: Sendable, Equatable {
        public var uids: [UInt32] = []
        public var groups: [String] = []
    }

    public struct Approvers: Sendable, Equatable {
        public var principals: Principals
        public var highRiskQuorum: Int
        public var timeoutSeconds: Int
        public var notify = Notify()
    }

    /// Who is told that an approval waits (`approvers.notify`): every webhook and command
    /// gets every new request.
    public struct Notify: Sendable, Equatable {
        public var webhooks: [Webhook] = []
        public var commands: [NotifyCommand] = []
        /// Linked from Slack and ntfy messages (`console_url`): where approvers act.
        public var consoleURL: String?

        public var isEmpty: Bool { webhooks.isEmpty && commands.isEmpty }
        /// At most this many webhooks and commands together.
        public static let maxTargets = 8
    }

    public struct Webhook: Sendable, Equatable {
        /// What the POST body looks like: `generic` (Lanyard's signed JSON), `slack`
        /// (an incoming-webhook message), `ntfy` (ntfy's JSON publish, to the server root).
        public enum Format: String, Sendable, CaseIterable { case generic, slack, ntfy }
        public var url: String
        /// The HMAC key of `X-Lanyard-Signature`: required for `generic`, optional otherwise.
        public var secretFile: String?
        public var format: Format = .generic
        /// ntfy: the topic published to.
        public var topic: String?
        /// ntfy: a file holding an access token, sent as `Authorization: Bearer`.
        public var tokenFile: String?

        public init(url: String, secretFile: String?, format: Format = .generic) {
            self.url = url
            self.secretFile = secretFile
            self.format = format
        }
    }

    /// A program run per request (`approvers.notify.command`), never through a shell: the
    /// request as JSON on stdin, a clean environment, killed with its process group at
    /// `timeoutSeconds`.
    public struct NotifyCommand: Sendable, Equatable {
        public var argv: [String]
        public var timeoutSeconds: Int
        public static let timeoutRange = 1...300
        public static let defaultTimeoutSeconds = 10

        public init(argv: [String], timeoutSeconds: Int = defaultTimeoutSeconds) {
            self.argv = argv
            self.timeoutSeconds = timeoutSeconds
        }
    }

    public struct Service: Sendable, Equatable {
        public enum Kind: String, Sendable, CaseIterable { case opaque, jwt, `static`, openbao }
        public var name: String
        public var kind: Kind
        public var defaultTTLSeconds: Int
        public var maxTTLSeconds: Int
        public var rotationDays: Int?
        /// Opaque tokens of this service are consumed by their first successful Introspect.
        public var singleUse: Bool = false
        /// Where an `openbao` service's credentials come from (set exactly for that kind).
        public var openbao: OpenBao?
        /// Every lease of this service is bound to the provisioning process (`bind_to_process: true`).
        public var requiresProcessBinding: Bool = false
    }

    /// An OpenBao / HashiCorp Vault backend (DESIGN.md section 7).
    public struct OpenBao: Sendable, Hashable {
        public enum Mode: String, Sendable, Hashable { case kv, token }
        /// How lanyardd logs in. File names without a '/' are read from `$CREDENTIALS_DIRECTORY`.
        public enum Auth: Sendable, Hashable {
            case tokenFile(String)
            case appRole(roleIDFile: String, secretIDFile: String)
        }
        /// Tried in order; the next one on a connection failure, a timeout or a 5xx.
        public var addresses: [String]
        public var mode: Mode
        public var kvMount = "secret"
        public var kvPath = ""
        public var kvField = "value"
        public var tokenPolicies: [String] = []
        public var auth: Auth
        public var caFile: String?
        /// The budget for one Provision's upstream work, failover included.
        public var timeoutMs = 2000

        public init(addresses: [String], mode: Mode, auth: Auth) {
            self.addresses = addresses
            self.mode = mode
            self.auth = auth
        }
    }

    /// The hard ceiling on any credential's lifetime; configuration may lower it, never raise it.
    public static let maxTTLCeilingSeconds = 900
    public static let defaultTTLSeconds = 300

    /// The agent whose selectors all match `peer`, or nil when none does. `exeFile` names
    /// the file a configured `exe` path leads to now, as lanyardd sees it (nil: none, or
    /// none that can be pinned); it is asked at match time, so a replaced path is seen.
    /// The parser rejects policies in which two agents could match one process.
    public func agent(matching peer: PeerFacts, exeFile: (String) -> FileID?) -> Agent? {
        agents(uid: peer.uid).first { $0.selector.matches(peer, exeFile: exeFile) }
    }

    public func agent(named name: String) -> Agent? {
        agentsByName[name].map { agents[Int($0)] }
    }

    /// The effective risk of `capability` for `agent`, or nil when it is not granted.
    public func grantedRisk(_ capability: Capability, to agent: Agent) -> RiskLevel? {
        agent.grants[capability]
    }

    // Positions in `agents`, built by the parser (and again with the ids) so lookups stay
    // flat with many agents: one table sorted by uid, not an array per uid nor copies of agents.
    struct UIDEntry: Sendable {
        var uid: UInt32
        var index: Int32
    }
    var agentsByUID: [UIDEntry] = []
    var agentsByName: [String: Int32] = [:]

    mutating func buildIndexes() {
        agentsByUID = agents.indices.map { UIDEntry(uid: agents[$0].selector.uid, index: Int32($0)) }
        agentsByUID.sort { ($0.uid, $0.index) < ($1.uid, $1.index) }
        agentsByName = Dictionary(uniqueKeysWithValues: agents.indices.map { (agents[$0].name, Int32($0)) })
    }

    /// The agents with `uid`, in policy order.
    func agents(uid: UInt32) -> some Collection<Agent> {
        var lo = 0, hi = agentsByUID.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if agentsByUID[mid].uid < uid { lo = mid + 1 } else { hi = mid }
        }
        let end = agentsByUID[lo...].firstIndex { $0.uid != uid } ?? agentsByUID.count
        return agentsByUID[lo..<end].lazy.map { agents[Int($0.index)] }
    }
}

/// A registered agent identity.
public struct Agent: Sendable, Equatable {
    public var name: String
    /// Stable UUID; assigned by the store on first sight (the policy names agents, not ids).
    public var id: String = ""
    public var selector: Selector
    /// Each granted capability with its effective risk (catalog risk, possibly raised).
    public var grants: [Capability: RiskLevel]
    /// The limits of each grant that has any (`rate`, `budget`, `window`).
    public var limits: [Capability: GrantLimits] = [:]
    /// Whether and how far the agent may delegate its identity to sub-agents (nil: never).
    public var delegation: Delegation?
    /// Where the agent and each of its fields ("" for the agent's key) are in the policy file.
    public var lines: [String: Int] = [:]

    /// `delegation: {max_depth, capabilities}`: sub-agent tokens chained at most `maxDepth`
    /// deep, carrying grants of the agent; a HIGH grant only when `highRisk` lists it.
    public struct Delegation: Sendable, Equatable {
        public static let depthLimit = 3
        public var maxDepth: Int
        /// The HIGH grants that may be delegated (every lower grant may be).
        public var highRisk: Set<Capability>

        public init(maxDepth: Int, highRisk: Set<Capability>) {
            self.maxDepth = maxDepth
            self.highRisk = highRisk
        }
    }

    public func uri(trustDomain: String) -> String { "spiffe://\(trustDomain)/agent/\(name)" }
}

/// A file as the kernel names it, whatever path leads to it: device and inode.
public struct FileID: Sendable, Hashable {
    public var device: UInt64
    public var inode: UInt64
    public init(device: UInt64, inode: UInt64) {
        self.device = device
        self.inode = inode
    }
}

/// The systemd unit an agent runs in, matched against the process's whole cgroup path.
public enum UnitSelector: Sendable, Hashable, CustomStringConvertible {
    /// A system unit by its cgroup, such as `/system.slice/releaser.service`: only root
    /// creates cgroups there (and, under a unit with `Delegate=`, that unit's own user).
    case system(cgroup: String)
    /// A unit of the agent uid's own systemd user manager (`user_unit:`). That uid can
    /// create any cgroup there, so this tells its processes apart from nothing it runs.
    case user(String)

    public var description: String {
        switch self {
        case .system(let cgroup): cgroup
        case .user(let name): "user:\(name)"
        }
    }

    func matches(cgroup: String?, uid: UInt32) -> Bool {
        // Byte for byte: String's == and hasPrefix are canonical equivalence (KELVIN SIGN = K).
        guard let cgroup else { return false }
        let bytes = Array(cgroup.utf8)
        switch self {
        case .system(let path):
            return bytes == Array(path.utf8) || bytes.starts(with: Array((path + "/").utf8))
        case .user(let name):
            guard bytes.starts(with: Array("/user.slice/user-\(uid).slice/user@\(uid).service/".utf8)) else { return false }
            return Self.innermostUnit(cgroup)?.sameBytes(as: name) == true
        }
    }

    /// The last `.service` or `.scope` component of a cgroup path (for display).
    public static func innermostUnit(_ cgroup: String) -> String? {
        cgroup.split(separator: "/").last(where: { $0.hasSuffix(".service") || $0.hasSuffix(".scope") }).map(String.init)
    }
}

/// What binds an agent to processes. Every selector that is set must match.
public struct Selector: Sendable, Equatable {
    public var uid: UInt32
    public var gid: UInt32?
    public var exe: String?
    public var exeSHA256: String?
    public var unit: UnitSelector?

    /// Whether the selector names what runs (a file, or its bytes).
    public var pinsExecutable: Bool { exe != nil || exeSHA256 != nil }

    public func matches(_ peer: PeerFacts, exeFile: (String) -> FileID?) -> Bool {
        guard peer.uid == uid else { return false }
        if let gid, peer.gid != gid { return false }
        // In a user namespace of its own a process has its own mounts (libraries, loader,
        // the file behind a path): what it runs is its own choice. (Its ids are translated
        // by the kernel, and its cgroup is not the namespace's to choose: uid, gid and unit hold.)
        if pinsExecutable, peer.inForeignUserNamespace { return false }
        if let exe {
            guard let running = peer.exeFile, running == exeFile(exe) else { return false }
        }
        if let exeSHA256, peer.exeSHA256?.lowercased() != exeSHA256.lowercased() { return false }
        if let unit, !unit.matches(cgroup: peer.cgroup, uid: peer.uid) { return false }
        return true
    }

    /// Whether one process could match both selectors (an ambiguous registry).
    public func overlaps(_ other: Selector) -> Bool {
        func compatible<T: Equatable>(_ a: T?, _ b: T?) -> Bool { a == nil || b == nil || a == b }
        return uid == other.uid && compatible(gid, other.gid) && compatible(exe, other.exe)
            && compatible(exeSHA256?.lowercased(), other.exeSHA256?.lowercased()) && compatible(unit, other.unit)
    }
}

/// The facts the kernel attested about a peer process (taken at accept).
public struct PeerFacts: Sendable, Equatable {
    public var uid: UInt32
    public var gid: UInt32
    public var pid: Int32
    /// `/proc/PID/exe` as the peer's mount namespace renders it: for display only.
    public var exe: String?
    /// The file that runs, whatever its path: what `exe` selectors match.
    public var exeFile: FileID?
    public var exeSHA256: String?
    /// The whole cgroup v2 path, such as `/system.slice/releaser.service`.
    public var cgroup: String?
    /// The peer's user namespace is not lanyardd's (or could not be read).
    public var inForeignUserNamespace = false

    /// The innermost unit of the cgroup (for display).
    public var unit: String? { cgroup.flatMap(UnitSelector.innermostUnit) }

    public init(uid: UInt32, gid: UInt32, pid: Int32, exe: String? = nil, exeFile: FileID? = nil, exeSHA256: String? = nil,
                cgroup: String? = nil, inForeignUserNamespace: Bool = false) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
        self.exe = exe
        self.exeFile = exeFile
        self.exeSHA256 = exeSHA256
        self.cgroup = cgroup
        self.inForeignUserNamespace = inForeignUserNamespace
    }
}

extension Policy {
    /// Sets each agent's stable id (from the store) and rebuilds the indexes.
    public mutating func assignIDs(_ ids: [String: String]) {
        for i in agents.indices { agents[i].id = ids[agents[i].name] ?? "" }
        buildIndexes()
    }

    /// Whether any agent with this uid is bound by exe_sha256 (hashing is costly; do it only then).
    public func needsExeHash(uid: UInt32) -> Bool {
        agents(uid: uid).contains { $0.selector.exeSHA256 != nil }
    }
}
