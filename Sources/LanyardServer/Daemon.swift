#if canImport(Glibc)
import Glibc
#endif
import LanyardCore
import LanyardCrypto
import LanyardStore
import LanyardWire
import AsyncHTTPClient
import CLanyardSys
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import UnixSignals

/// Everything `lanyardd` needs to serve (DESIGN.md section 11).
public struct DaemonConfig: Sendable {
    public var policyPath: String
    public var stateDir: String
    public var agentSocket: String
    public var adminSocket: String
    /// systemd's `LoadCredential=` provider socket (mode 0600); nil: none unless systemd passes one named `credentials`.
    public var credentialsSocket: String?
    public var agentSocketMode: mode_t = 0o666
    public var adminSocketMode: mode_t = 0o660
    /// Group of the admin socket; skipped when the group does not exist.
    public var adminGroup: String? = "lanyard-admin"
    /// Else `$CREDENTIALS_DIRECTORY/master.key`.
    public var masterKeyFile: String?
    public var limits = ServerLimits()
    /// How often expired leases are reaped and scheduled rotations checked.
    public var maintenanceInterval: Duration = .seconds(30)
    /// Ended approvals, leases, upstream revocations and expired identities older than this are
    /// deleted in the maintenance pass (the audit chain is kept).
    public var retentionDays = 30
    /// Approval webhook delivery: attempts and backoff.
    public var webhookAttempts = 5
    public var webhookFirstBackoff: Duration = .milliseconds(500)
    /// Each delivery attempt's deadline (connecting included).
    public var webhookTimeout: TimeAmount = .seconds(5)

    public init(policyPath: String, stateDir: String, agentSocket: String, adminSocket: String) {
        self.policyPath = policyPath
        self.stateDir = stateDir
        self.agentSocket = agentSocket
        self.adminSocket = adminSocket
    }
}

/// The daemon as one service: `prepare` does everything that can fail at startup
/// (so the process exits with one clear line), `run` serves until shutdown.
public final class Daemon: Service {
    public let config: DaemonConfig
    let logger: Logger
    let lock: StateLock
    public let store: Store
    public let policy: PolicyHolder
    let registry: ConnectionRegistry
    let agentService: AgentService
    let adminService: AdminService
    let credentials: CredentialService
    let approvals: ApprovalService
    let notifier: Notifier
    let revoker: UpstreamRevoker
    let backend: OpenBaoBackend
    /// HTTP clients (one library, AsyncHTTPClient) for the approval webhook and for
    /// OpenBao; shut down when `run` ends.
    let http: [HTTPClient]
    let attestor: any Attestor
    let sockets: (agent: Int32, admin: Int32)
    /// The `LoadCredential=` provider's listening socket, if any (CredentialProvider serves it).
    let credentialsSocket: Int32?
    /// True when systemd passed the sockets: they are systemd's to create and remove.
    let socketActivated: Bool

    public init(config: DaemonConfig, clock: any WallClock = SystemWallClock(), attestor: any Attestor = ProcAttestor(), logger: Logger) throws {
        self.config = config
        self.logger = logger
        self.attestor = attestor
        lock = try StateLock(directory: config.stateDir)
        let masterKey = try MasterKey.load(path: config.masterKeyFile)
        do {
            store = try Store(directory: config.stateDir, masterKey: masterKey, clock: clock, logger: logger)
        } catch {
            throw StartupError("cannot open the state database in \(config.stateDir): \(error)")
        }
        do {
            policy = try PolicyHolder(path: config.policyPath, store: store, clock: clock, logger: logger)
        } catch let error as PolicyError {
            throw StartupError("invalid policy: \(error)")
        }
        // Sockets last of what can fail; nothing after this throws (the HTTP client must be shut down).
        let passed = try Systemd.listenFDs()
        var credentialsFD: Int32?
        if !passed.isEmpty {
            guard let agentFD = passed["agent"], let adminFD = passed["admin"] else {
                throw StartupError("socket activation passed sockets named \(passed.keys.sorted()); lanyardd needs 'agent' and 'admin' (FileDescriptorName= in the socket units)")
            }
            sockets = (agentFD, adminFD)
            credentialsFD = passed["credentials"]
            socketActivated = true
        } else {
            let agentFD = try makeListeningSocket(path: config.agentSocket, mode: config.agentSocketMode, group: nil)
            do {
                let group = config.adminGroup.flatMap(SystemGroups.groupID)
                let adminFD = try makeListeningSocket(path: config.adminSocket, mode: config.adminSocketMode, group: group)
                sockets = (agentFD, adminFD)
                do {
                    credentialsFD = try config.credentialsSocket.map { try makeListeningSocket(path: $0, mode: 0o600, group: nil) }
                } catch {
                    close(adminFD)
                    unlink(config.adminSocket)
                    throw error
                }
            } catch {
                close(agentFD)
                unlink(config.agentSocket)
                throw error
            }
            socketActivated = false
        }
        registry = ConnectionRegistry(limits: config.limits)
        // OpenBao's client gives up on an address after 1 s without a connection (AsyncHTTPClient
        // retries a refused connection until then): failover to the next address is quick.
        let webhookHTTP = Self.httpClient(connectTimeout: .seconds(5))
        let openbaoHTTP = Self.httpClient(connectTimeout: .seconds(1))
        http = [webhookHTTP, openbaoHTTP]
        notifier = Notifier(http: webhookHTTP, store: store, retry: .init(attempts: config.webhookAttempts, firstBackoff: config.webhookFirstBackoff, requestTimeout: config.webhookTimeout), logger: logger)
        backend = OpenBaoBackend(http: openbaoHTTP, logger: logger)
        revoker = UpstreamRevoker(store: store, backend: backend, policy: policy, clock: clock, logger: logger)
        approvals = ApprovalService(store: store, notifier: notifier, limits: config.limits, clock: clock, logger: logger)
        let holder = policy
        credentials = CredentialService(store: store, approvals: approvals, backend: backend, revoker: revoker,
                                        clock: clock, policyVersion: { holder.current.version }, logger: logger)
        let identities = IdentityService(store: store, clock: clock, logger: logger)
        agentService = AgentService(policy: policy, store: store, credentials: credentials, approvals: approvals, identities: identities,
                                    attestor: attestor, clock: clock, logger: logger)
        adminService = AdminService(policy: policy, store: store, credentials: credentials, approvals: approvals, identities: identities,
                                    clock: clock, registry: registry, logger: logger)
        credentialsSocket = credentialsFD
    }

    /// Redirects are failures, never followed: a webhook or OpenBao answer must come from
    /// the address configured.
    static func httpClient(connectTimeout: TimeAmount) -> HTTPClient {
        var config = HTTPClient.Configuration()
        config.redirectConfiguration = .disallow
        config.timeout = .init(connect: connectTimeout, read: .seconds(30))
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
    }

    public func run() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let policy = self.policy
        let hasher = ExeHasher(maxBytes: config.limits.maxExeHashBytes, perUID: config.limits.exeHashesPerUID)
        let needsExeHash: @Sendable (UInt32) -> Bool = { uid in policy.current.policy.needsExeHash(uid: uid) }
        let agentRules = PeerRules(socket: .agent, known: { c in policy.current.policy.agents.contains { $0.selector.uid == c.uid } })
        let adminRules = PeerRules(socket: .admin, privileged: { Roles(credentials: $0, policy: policy.current.policy).admin },
                                   known: { c in let r = Roles(credentials: c, policy: policy.current.policy); return r.admin || r.approver })
        let agent: FramedListener<Lanyard_V1_Request, Lanyard_V1_Response>
        let admin: FramedListener<Lanyard_V1_AdminRequest, Lanyard_V1_AdminResponse>
        let provider: CredentialProvider?
        checkDescriptorLimit()
        do {
            agent = try await .start(name: "agent", descriptor: sockets.agent, group: group, limits: config.limits, registry: registry,
                                     rules: agentRules, attestor: attestor, exeHash: (hasher, needsExeHash), onEventLoop: true, logger: logger)
            admin = try await .start(name: "admin", descriptor: sockets.admin, group: group, limits: config.limits, registry: registry,
                                     rules: adminRules, attestor: attestor, exeHash: nil, logger: logger)
            provider = try credentialsSocket.map {
                try CredentialProvider(descriptor: $0, policy: policy, credentials: credentials, attestor: attestor, logger: logger)
            }
        } catch {
            await shutdownHTTP()
            throw error
        }
        // Trap SIGHUP before announcing readiness: an early reload must not kill us.
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        // What starting left free (the policy's parse tree above all) goes back before serving.
        lanyard_release_free_memory()
        Systemd.notify("READY=1\nSTATUS=serving")
        logger.notice("lanyardd ready", metadata: [
            "agent.socket": "\(socketActivated ? "systemd:agent" : config.agentSocket)",
            "admin.socket": "\(socketActivated ? "systemd:admin" : config.adminSocket)",
            "credentials.socket": "\(credentialsSocket == nil ? "none" : socketActivated ? "systemd:credentials" : config.credentialsSocket ?? "")",
            "policy.version": "\(policy.current.version)", "agents": "\(policy.current.policy.agents.count)",
        ])
        let registry = self.registry
        let notifier = self.notifier
        let agentService = self.agentService, adminService = self.adminService
        // Before serving: a lease whose process died while lanyardd was down ends now.
        do {
            try await credentials.reconcileProcessBindings(reason: "the process it was bound to was gone when lanyardd started")
        } catch {
            logger.critical("cannot check process-bound leases at startup; the maintenance pass retries", metadata: ["error": "\(error)"])
        }
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { tasks in
                tasks.addTask { await agent.run(agentService.handle, immediate: agentService.answerAtOnce) }
                tasks.addTask { await admin.run(adminService.handle) }
                if let provider { tasks.addTask { await provider.run() } }
                tasks.addTask { await self.reload(on: hangups) }
                tasks.addTask { await self.maintain() }
                tasks.addTask { await self.notifier.run() }
                tasks.addTask { await self.revoker.run() }
            }
        } onGracefulShutdown: {
            Systemd.notify("STOPPING=1")
            agent.close()
            admin.close()
            provider?.close()
            registry.closeAllInputs()
            notifier.finish()
        }
        await writeCheckpoint()
        await shutdownHTTP()
        store.audit.close()
        if !socketActivated {
            unlink(config.agentSocket)
            unlink(config.adminSocket)
            if credentialsSocket != nil, let path = config.credentialsSocket { unlink(path) }
        }
        logger.notice("lanyardd stopped")
    }

    /// Raises the soft open-files limit to what the connection limits need (up to the hard
    /// limit), and warns when even that is not enough: accepts would fail for everyone.
    private func checkDescriptorLimit() {
        let needed = config.limits.descriptorsNeeded
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        if limit.rlim_cur < rlim_t(needed) {
            var raised = limit
            raised.rlim_cur = min(limit.rlim_max, rlim_t(needed))
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        if limit.rlim_cur < rlim_t(needed) {
            logger.warning("the open-files limit is lower than the connection limits need; connections will be refused for everyone once it is reached", metadata: [
                "limit": "\(limit.rlim_cur)", "needed": "\(needed)",
                "fix": "set LimitNOFILE=\(needed) or more in the unit (ulimit -n), or lower --max-connections / --max-admin-connections",
            ])
        }
    }

    private func shutdownHTTP() async {
        for client in http { try? await client.shutdown() }
    }

    /// Reaps expired leases, runs scheduled rotations, records expired approvals and prunes
    /// what ended before the retention, until shutdown.
    private func maintain() async {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            await maintenance()
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: self.config.maintenanceInterval) }
            } catch {
                return
            }
        }
    }

    /// One maintenance pass (tests call this directly with an injected clock).
    func maintenance() async {
        let snapshot = policy.current
        // Each step on its own: one that fails (a full disk, a broken row) is logged and tried
        // again at the next pass, and keeps none of the others (OpenBao's sessions) from running.
        func step(_ what: String, _ body: () async throws -> Void) async {
            do {
                try await body()
            } catch {
                logger.error("maintenance: \(what) failed; tried again at the next pass", metadata: ["error": "\(error)"])
            }
        }
        await step("reaping expired leases") {
            let reaped = try await credentials.reapExpired(policyVersion: snapshot.version)
            if reaped > 0 { logger.info("expired leases reaped", metadata: ["leases": "\(reaped)"]) }
        }
        await step("ending the leases of exited processes") {
            try await credentials.reconcileProcessBindings(reason: "the process it was bound to exited")
        }
        await credentials.rotateDue(snapshot.policy)
        await backend.renewSessions(snapshot.policy.services.values.compactMap(\.openbao))
        // Bounded state: expiry recorded, strangers' refusals counted, old rows pruned.
        await step("recording expired approvals") {
            let expired = try await approvals.expireDue(policyVersion: snapshot.version)
            if expired > 0 { logger.info("expired approvals recorded", metadata: ["approvals": "\(expired)"]) }
        }
        await step("auditing refusals of unknown uids") { try await agentService.flushUnknownRefusals(policyVersion: snapshot.version) }
        await step("pruning ended rows") { try await prune(policyVersion: snapshot.version) }
        await writeCheckpoint()
        lanyard_release_free_memory()
    }

    /// Deletes what ended longer than the retention ago; one audit record says how much.
    private func prune(policyVersion: String) async throws {
        let cutoff = approvals.clock.nowMicros() - Int64(config.retentionDays) * 86_400_000_000
        let (counts, mutation) = try store.prune(endedBeforeMicros: cutoff)
        guard counts.total > 0 else { return }
        var r = AuditRecord(event: "maintenance.prune")
        r.decision = Decision.allow.rawValue
        r.outcome = counts.description
        r.reason = "ended more than \(config.retentionDays) days ago (--retention-days)"
        r.policyVersion = policyVersion
        try await store.audit.append(r, with: mutation)
        logger.info("pruned ended rows", metadata: ["pruned": "\(counts)"])
    }

    /// Signs the audit head into the state dir, so a truncated tail is detectable.
    func writeCheckpoint() async {
        do {
            try AuditCheckpoint.write(store: store)
        } catch {
            logger.critical("cannot write the audit checkpoint", metadata: ["error": "\(error)"])
        }
    }

    private func reload(on signals: UnixSignalsSequence) async {
        for await _ in signals.cancelOnGracefulShutdown() {
            do {
                let (next, changed) = try policy.reload()
                var r = AuditRecord(event: "policy.reload")
                r.decision = Decision.allow.rawValue
                r.outcome = changed ? "activated" : "unchanged"
                r.reason = "SIGHUP"
                r.policyVersion = next.version
                try await store.audit.append(r)
                logger.notice("policy reloaded on SIGHUP", metadata: ["policy.version": "\(next.version)", "changed": "\(changed)"])
            } catch {
                logger.error("policy reload refused; the old policy stays active", metadata: ["error": "\(error)"])
                var r = AuditRecord(event: "policy.reload")
                r.decision = Decision.deny.rawValue
                r.outcome = "refused"
                r.reason = String("\(error)".prefix(512))
                r.policyVersion = policy.current.version
                _ = try? await store.audit.append(r)  // best effort: the refusal is in the log above
            }
        }
    }
}
