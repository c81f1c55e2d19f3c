import LanyardCore
import LanyardCrypto
import LanyardStore
import LanyardWire
import Logging
import NIOConcurrencyHelpers

/// Just-in-time credentials (DESIGN.md section 7): authorize every capability of the
/// scope, route by risk (the caller's process is re-checked by the dispatch), mint, make the lease and its
/// audit record durable together — only then does the secret leave.
final class CredentialService: Sendable {
    let store: Store
    let approvals: ApprovalService
    let backend: OpenBaoBackend
    let revoker: UpstreamRevoker
    let clock: any WallClock
    let logger: Logger
    let processWatcher = ProcessWatcher()
    /// A service's rotation runs alone: without its other rotations (each reads the version
    /// it moves from) and without its provisions (one in flight would make a lease the
    /// rotation does not revoke, or one of the version it leaves).
    let rotations = ServiceRotations()
    /// The active policy's version, for records no request carries (a process exit).
    let policyVersion: @Sendable () -> String

    init(store: Store, approvals: ApprovalService, backend: OpenBaoBackend, revoker: UpstreamRevoker,
         clock: any WallClock, policyVersion: @escaping @Sendable () -> String, logger: Logger) {
        self.policyVersion = policyVersion
        self.store = store
        self.approvals = approvals
        self.backend = backend
        self.revoker = revoker
        self.clock = clock
        self.logger = logger
    }

    // MARK: Provision

    private var spending: GrantSpending { GrantSpending(store: store) }

    /// A refused Provision: its status, and the decision's reason code (and what decided
    /// it) for the response body, as Authorize carries them.
    private struct Refusal: Error {
        var error: CallError
        var code: ReasonCode
        var path: DecisionPath?
        var retryAfterSeconds: UInt64?
    }

    func provision(_ call: Lanyard_V1_ProvisionRequest, _ caller: Caller, _ agent: Agent) async throws -> Lanyard_V1_Response {
        do {
            // Held per declared service: an undeclared name, which `issue` refuses, holds nothing.
            guard caller.snapshot.policy.services[call.service] != nil else { return try await issue(call, caller, agent) }
            return try await rotations.provisioning(call.service) { try await issue(call, caller, agent) }
        } catch let refusal as Refusal {
            var response = Lanyard_V1_Response.failure(id: 0, refusal.error.code, refusal.error.message)
            response.provision = .with {
                $0.reasonCode = refusal.code.rawValue
                if let path = refusal.path { $0.path = path.wire }
                if let wait = refusal.retryAfterSeconds { $0.retryAfterSeconds = wait }
            }
            return response
        }
    }

    private func issue(_ call: Lanyard_V1_ProvisionRequest, _ caller: Caller, _ agent: Agent) async throws -> Lanyard_V1_Response {
        var record = caller.record("provision")
        record.resource = String(call.resource.prefix(1024))
        record.capability = String(call.scope.joined(separator: " ").prefix(512))
        // `because`: the decision's code; otherwise the outcome names it (invalid_argument, no_secret, ...).
        func deny(_ code: Lanyard_V1_Code, _ outcome: String, _ reason: String, because reasonCode: ReasonCode? = nil,
                  path: DecisionPath? = nil, retryAfterSeconds: UInt64? = nil) async throws -> Never {
            record.decision = Decision.deny.rawValue
            record.outcome = outcome
            record.reason = reason
            let why = reasonCode ?? ReasonCode(rawValue: outcome) ?? .unclassified
            record.reasonCode = why.rawValue
            try await store.audit.append(record)
            throw Refusal(error: CallError(code, reason), code: why, path: path, retryAfterSeconds: retryAfterSeconds)
        }

        if let problem = approvals.limits.fieldProblem(resource: call.resource, args: call.args, unit: call.amount.unit) {
            try await deny(.invalidArgument, "invalid_argument", problem)
        }
        let policy = caller.snapshot.policy
        guard let service = policy.services[call.service] else {
            try await deny(.invalidArgument, "invalid_argument", "service '\(call.service.prefix(64))' is not declared in the policy")
        }
        guard !call.scope.isEmpty else {
            try await deny(.invalidArgument, "invalid_argument", "scope is empty: name the capabilities of '\(service.name)' the credential is for")
        }
        var scope: [Capability] = []
        for name in call.scope {
            do {
                let cap = try Capability(parsing: name)
                guard cap.service == service.name else {
                    try await deny(.invalidArgument, "invalid_argument", "scope capability '\(cap)' is not of service '\(service.name)'")
                }
                scope.append(cap)
            } catch let e as CapabilityError {
                try await deny(.invalidArgument, "invalid_argument", e.description)
            }
        }
        scope = Array(Set(scope)).sorted()
        record.capability = scope.map(\.name).joined(separator: " ")

        let ttl: Int
        switch TTLRule.resolve(requested: call.ttlSeconds, service: service) {
        case .success(let t): ttl = t
        case .failure(let e): try await deny(.invalidArgument, "invalid_argument", e.description)
        }

        // Authorization of every capability (and its grant's limits) happens before any
        // credential material is read.
        var verdict = Authorizer.decide(scope, for: agent, in: policy)
        let use = GrantSpending.Use(agent: agent, capabilities: scope, amount: call.hasAmount ? (call.amount.value, call.amount.unit) : nil,
                                    nowMicros: clock.nowMicros())
        var overruns: [ReasonCode] = []
        if let use {
            do {
                (verdict, overruns) = try spending.check(verdict, use)
            } catch let e as SealError {
                try await deny(.dataLoss, "integrity_failure", e.description, because: .integrityFailure)
            }
        }
        var granted = verdict  // as routed: auto, approved or standing
        var useApproval: Mutation?
        var usedApproval = false
        switch verdict.decision {
        case .deny:
            try await deny(Self.status(of: verdict.code), "denied", verdict.reason, because: verdict.code, path: verdict.path,
                           retryAfterSeconds: use?.retryAfterSeconds(verdict))
        case .pending:
            let subject = ApprovalSubject(agentID: agent.id, capabilities: scope, resource: call.resource, args: call.args,
                                          amount: call.hasAmount ? call.amount.text : "", overruns: overruns)
            if !call.approvalID.isEmpty { record.approvalID = String(call.approvalID.prefix(64)) }
            let route = try approvals.route(verdict, subject, approvalID: call.approvalID, agent: agent, caller: caller, standing: overruns.isEmpty)
            if route.verdict.decision == .deny {
                try await deny(.permissionDenied, "denied", route.verdict.reason, because: route.verdict.code, path: route.verdict.path)
            }
            if let approval = route.created {
                record.decision = Decision.pending.rawValue
                record.outcome = "approval_required"
                record.reason = verdict.reason
                record.reasonCode = verdict.code.rawValue
                record.approvalID = approval.id
                try await approvals.commit([record], with: route.change, announce: (approval, policy))
                approvals.processApprovals.noteRequester(approval.id, caller.process, exe: caller.connection.peer.facts.exeFile)
                var response = Lanyard_V1_Response.failure(id: 0, .failedPrecondition,
                    "\(verdict.reason); ask an approver to approve \(approval.id) (code \(approval.bindingCode)), then provision again with that approval_id")
                response.provision = .with {
                    $0.approvalID = approval.id
                    $0.bindingCode = approval.bindingCode
                    $0.reasonCode = verdict.code.rawValue
                    if let path = verdict.path { $0.path = path.wire }
                }
                return response
            }
            record.approver = route.approved?.decidedReason ?? route.verdict.reason  // the approval used, or the standing one
            useApproval = route.change
            usedApproval = route.approved != nil
            granted = route.verdict
        case .allow:
            break
        }

        var binding: (process: BoundProcess, pidfd: PidFD)?
        if call.bindToProcess || service.requiresProcessBinding {
            switch bindableProcess(caller) {
            case .success(let b): binding = b
            case .failure(let e): try await deny(e.code, "not_bindable", e.message)
            }
        }

        let now = clock.nowMicros()
        let leaseBound = leaseBound(agent)
        if try !store.agentHoldsFewerLeases(agent.id, than: UInt64(approvals.limits.maxLeasesPerAgent), nowMicros: now) {
            try await deny(.resourceExhausted, "resource_exhausted", leaseBound.message)
        }
        let (version, _) = try store.serviceVersion(service.name)
        var lease = Lease(id: SecureRandom.uuid(), agentID: agent.id, agent: agent.name, service: service.name, kind: service.kind,
                          scope: scope.map(\.name), version: version, issuedMicros: now, expiresMicros: now + Int64(ttl) * 1_000_000,
                          singleUse: service.singleUse, process: binding?.process)
        let secret: String
        let secretHash: String?
        var upstream = ""
        switch service.kind {
        case .opaque:
            secret = "lyt_" + Base64URL.encode(SecureRandom.bytes(32))
            secretHash = SHA256.hex(Array(secret.utf8))
        case .jwt:
            let (kid, key) = try store.signingKey(purpose: service.signingPurpose)
            let claims = JSON.object([
                ("iss", .string("spiffe://\(policy.trustDomain)")), ("sub", .string(agent.uri(trustDomain: policy.trustDomain))),
                ("aud", .string(service.name)), ("agent_id", .string(agent.id)), ("scope", .string(lease.scope.joined(separator: " "))),
                ("iat", .int(now / 1_000_000)), ("nbf", .int(now / 1_000_000)), ("exp", .int(lease.expiresMicros / 1_000_000)),
                ("jti", .string(lease.id)),
            ])
            secret = try JWT.sign(claims: claims, kid: kid, key: key, typ: Policy.Service.accessTokenType)
            secretHash = SHA256.hex(Array(secret.utf8))
        case .static:
            guard let (secretVersion, value) = try store.currentSecret(service: service.name) else {
                try await deny(.failedPrecondition, "no_secret", "no secret has been put for service '\(service.name)'; an admin runs: lanyardctl secret put \(service.name)")
            }
            lease.version = secretVersion
            secret = String(decoding: value, as: UTF8.self)
            secretHash = nil  // a static value is not unique per lease, and may be guessable: no hash at rest
        case .openbao:
            guard let config = service.openbao else {
                try await deny(.unavailable, "backend_unavailable", "service '\(service.name)' has no openbao section")
            }
            do {
                switch config.mode {
                case .kv:
                    secret = try await backend.readKV(config)
                    secretHash = nil  // shared by every lease, like a static secret
                case .token:
                    let token = try await backend.createToken(config, ttlSeconds: ttl, displayName: "lanyard-\(agent.name)", leaseID: lease.id)
                    guard (1...ttl).contains(token.ttlSeconds) else {
                        try? await backend.revoke(accessor: token.accessor, config)
                        throw UpstreamError("OpenBao made a token with a TTL of \(token.ttlSeconds) s for a \(ttl) s lease; it was revoked")
                    }
                    // A parent token near its end caps its children: the lease never outlives its token.
                    lease.expiresMicros = now + Int64(token.ttlSeconds) * 1_000_000
                    secret = token.token
                    secretHash = SHA256.hex(Array(token.token.utf8))
                    upstream = token.accessor
                }
            } catch let error as UpstreamError {
                try await deny(error.notFound ? .failedPrecondition : .unavailable, error.notFound ? "no_secret" : "backend_unavailable",
                               "service '\(service.name)': \(error.description)")
            }
        }

        record.decision = Decision.allow.rawValue
        record.outcome = "issued"
        record.reason = verdict.reason
        record.reasonCode = granted.code.rawValue
        record.leaseID = lease.id
        // Durable lease + audit record (+ the approval it consumes) first; the secret leaves
        // only after (invariant 6).
        let insert = store.insertLease(lease, secretHash: secretHash, upstream: upstream)
        let consume = use.map { spending.count($0, approved: usedApproval ? Set(overruns) : [], then: useApproval) } ?? useApproval
        let (limit, agentID) = (UInt64(approvals.limits.maxLeasesPerAgent), agent.id)
        do {
            try await approvals.commit([record], with: { db in
                // Again inside the transaction: pipelined provisions cannot pass the bound (or a grant's limit) together.
                guard try self.store.agentHoldsFewerLeases(agentID, than: limit, nowMicros: now, on: db) else { throw leaseBound }
                try consume?(db)
                try insert(db)
            })
        } catch {
            // Nothing durable names the upstream token, so nothing would revoke it later.
            if !upstream.isEmpty, let config = service.openbao { try? await backend.revoke(accessor: upstream, config) }
            if let over = error as? LimitReached {
                record.leaseID = ""
                record.approver = ""
                try await deny(Self.status(of: over.code), "denied", over.reason, because: over.code, path: granted.path,
                               retryAfterSeconds: over.retryAfterSeconds)
            }
            throw error
        }
        if let binding { try await watchProcess(of: lease.id, binding, uid: caller.credentials.uid) }
        logger.debug("lease issued", metadata: ["agent": "\(agent.name)", "service": "\(service.name)", "lease.id": "\(lease.id)", "ttl": "\(ttl)",
                                              "bound.pid": "\(binding.map { "\($0.process.pid)" } ?? "")"])

        var response = Lanyard_V1_Response()
        response.provision = .with {
            $0.lease = .with {
                $0.leaseID = lease.id
                $0.service = lease.service
                $0.kind = lease.kind.rawValue
                $0.secret = secret
                $0.scope = lease.scope
                $0.issuedAt = lease.issuedMicros / 1_000_000
                $0.expiresAt = lease.expiresMicros / 1_000_000
            }
            $0.reasonCode = granted.code.rawValue
            if let path = granted.path { $0.path = path.wire }
        }
        return response
    }

    /// The status of a Provision refused for `code`: a spent rate or budget is
    /// RESOURCE_EXHAUSTED (retry later), every other refusal PERMISSION_DENIED.
    private static func status(of code: ReasonCode) -> Lanyard_V1_Code {
        code == .rateLimited || code == .budgetExceeded ? .resourceExhausted : .permissionDenied
    }

    /// The refusal when `agent` holds its `maxLeasesPerAgent` active leases.
    private func leaseBound(_ agent: Agent) -> BoundReached {
        BoundReached("too many active leases for agent \(agent.name) (limit \(approvals.limits.maxLeasesPerAgent), --max-leases-per-agent); "
                     + "revoke leases it no longer needs or let them expire, then provision again")
    }

    // MARK: Revoke, ListLeases, Introspect

    func revoke(_ call: Lanyard_V1_RevokeRequest, _ caller: Caller, _ agent: Agent) async throws -> Lanyard_V1_Response {
        var record = caller.record("revoke")
        record.leaseID = String(call.leaseID.prefix(64))
        let lease = try store.lease(id: call.leaseID)
        guard let lease, lease.agentID == agent.id else {
            record.decision = Decision.deny.rawValue
            record.outcome = "not_found"
            record.reason = "no lease \(record.leaseID) of this agent"
            try await store.audit.append(record)
            throw CallError(.notFound, "no lease '\(record.leaseID)' of agent '\(agent.name)'; an agent revokes only its own leases")
        }
        record.capability = lease.scope.joined(separator: " ")
        let wasActive = lease.isActive(atMicros: clock.nowMicros())
        record.decision = Decision.allow.rawValue
        record.outcome = wasActive ? "revoked" : "already_ended"
        try await store.audit.append(record, with: wasActive ? store.endLeases([lease.id], as: .revoked, reason: "revoked by agent", nowMicros: clock.nowMicros()) : nil)
        revoker.poke()
        var response = Lanyard_V1_Response()
        response.revoke = .with { $0.revoked = wasActive }
        return response
    }

    func listLeases(_ call: Lanyard_V1_ListLeasesRequest, _ agent: Agent) throws -> Lanyard_V1_Response {
        let page = try leasePage(agentID: agent.id, service: call.service.isEmpty ? nil : call.service, pageToken: call.pageToken)
        var response = Lanyard_V1_Response()
        response.listLeases = .with {
            $0.leases = page.leases
            $0.nextPageToken = page.next
        }
        return response
    }

    /// One page of live leases, oldest first, that fits in a reply; `next` is empty on the last page.
    func leasePage(agentID: String? = nil, agent: String? = nil, service: String?, pageToken: String) throws -> (leases: [Lanyard_V1_LeaseInfo], next: String) {
        var cursor: LeaseCursor?
        if !pageToken.isEmpty {
            guard let c = LeaseCursor(token: pageToken) else {
                throw CallError(.invalidArgument, "page_token '\(pageToken.prefix(80))' is not one this daemon returned; start again with an empty page_token")
            }
            cursor = c
        }
        let now = clock.nowMicros()
        let rows = try store.activeLeases(agentID: agentID, agent: agent, service: service, liveAt: now, after: cursor, limit: ReplyBudget.pageRows)
        var budget = ReplyBudget()
        let page = budget.prefix(rows.map { Self.info($0, now: now) })
        let more = page.count < rows.count || rows.count == ReplyBudget.pageRows
        return (page, more ? page.indices.last.map { LeaseCursor(after: rows[$0]).token } ?? "" : "")
    }

    /// A service asks whether a secret it was shown is a live lease. The caller needs
    /// `<service>:introspect` for the lease's service, routed by its risk like every
    /// capability: MEDIUM and HIGH answer PENDING until an approver approves this lease's
    /// introspection, and the approved ask consumes the approval.
    func introspect(_ call: Lanyard_V1_IntrospectRequest, _ caller: Caller, _ agent: Agent) async throws -> Lanyard_V1_Response {
        let introspectable = agent.grants.keys.filter { $0.name.hasSuffix(":introspect") && $0.name.split(separator: ":").count == 2 }
        guard !introspectable.isEmpty else {
            throw CallError(.permissionDenied, "introspect needs a '<service>:introspect' grant; agent '\(agent.name)' has none")
        }
        var record = caller.record("introspect")
        record.capability = "introspect"
        let now = clock.nowMicros()
        let hash = SHA256.hex(Array(call.secret.utf8))
        var result = Lanyard_V1_IntrospectResponse()
        var response = Lanyard_V1_Response()
        // A secret of another service looks like an unknown one: no oracle across services.
        guard let lease = try store.lease(secretHash: hash), let capability = introspectable.first(where: { $0.service == lease.service }) else {
            result.decision = .deny
            result.reason = "no live lease of a service this agent may introspect"
            result.reasonCode = ReasonCode.notGranted.rawValue
            record.decision = Decision.deny.rawValue
            record.outcome = "inactive"
            record.reasonCode = ReasonCode.notGranted.rawValue
            try await store.audit.append(record)
            response.introspect = result
            return response
        }
        record.leaseID = lease.id
        record.capability = capability.name

        var verdict = Authorizer.decide(capability, for: agent, in: caller.snapshot.policy)
        var mutations: [Mutation] = []
        var created: StoredApproval?
        if verdict.decision == .pending {
            let subject = ApprovalSubject(agentID: agent.id, capabilities: [capability], resource: lease.id, args: [:], amount: "")
            if !call.approvalID.isEmpty { record.approvalID = String(call.approvalID.prefix(64)) }
            let route = try approvals.route(verdict, subject, approvalID: call.approvalID, agent: agent, caller: caller)
            verdict = route.verdict
            if let change = route.change { mutations.append(change) }
            if let approved = route.approved { record.approver = approved.decidedReason }
            if let approval = route.created {
                record.approvalID = approval.id
                result.approvalID = approval.id
                result.bindingCode = approval.bindingCode
                created = approval
            }
        }
        result.decision = verdict.decision.wire
        result.reason = verdict.reason
        result.reasonCode = verdict.code.rawValue
        if let path = verdict.path { result.path = path.wire }
        record.decision = verdict.decision.rawValue
        record.reason = verdict.reason
        record.reasonCode = verdict.code.rawValue
        if verdict.decision == .allow {
            result.active = lease.isActive(atMicros: now)
            if result.active {
                result.agent = lease.agent
                result.agentID = lease.agentID
                result.service = lease.service
                result.scope = lease.scope
                result.expiresAt = lease.expiresMicros / 1_000_000
                result.leaseID = lease.id
                if lease.singleUse { mutations.append(store.endLeases([lease.id], as: .revoked, reason: "single use consumed", nowMicros: now)) }
            }
            record.outcome = result.active ? "active" : "inactive"
        } else {
            record.outcome = verdict.decision == .pending ? "approval_required" : "denied"
        }
        let steps = mutations
        var change: Mutation?
        if !steps.isEmpty { change = { db in for step in steps { try step(db) } } }
        try await approvals.commit([record], with: change, announce: created.map { ($0, caller.snapshot.policy) })
        response.introspect = result
        return response
    }

    // MARK: Rotation and revocation at scale

    /// Moves a service to a new credential version and revokes every lease it has issued
    /// (DESIGN.md section 13: whatever its kind). For `jwt` services the signing key
    /// rotates too; `compromised` also drops the earlier keys from the service's JWKS at
    /// once, so tokens they signed stop verifying offline (a plain rotation keeps them
    /// published until those tokens expire). Returns the new version and how many leases
    /// were revoked.
    func rotate(service: Policy.Service, actor: AuditRecord, reason: String, compromised: Bool = false) async throws -> (version: Int, revoked: Int) {
        try await rotations.rotating(service.name) { try await rotateAlone(service: service, actor: actor, reason: reason, compromised: compromised) }
    }

    /// Puts a static service's next secret and, from the second on, rotates the service (its
    /// leases had the old value), in one hold of it: no provision in between hands out the new
    /// value on a lease the rotation then revokes, and two puts at once take two versions.
    func putSecret(_ value: [UInt8], of service: Policy.Service, record: AuditRecord, rotation: AuditRecord) async throws -> Int {
        try await rotations.rotating(service.name) {
            let (version, insert) = try store.putSecret(service: service.name, value: value, nowMicros: clock.nowMicros())
            var put = record
            put.outcome = "version \(version)"
            try await store.audit.append(put, with: insert)
            if version > 1 { _ = try await rotateAlone(service: service, actor: rotation, reason: "new secret put", compromised: false) }
            return version
        }
    }

    private func rotateAlone(service: Policy.Service, actor: AuditRecord, reason: String, compromised: Bool) async throws -> (version: Int, revoked: Int) {
        let now = clock.nowMicros()
        let (current, _) = try store.serviceVersion(service.name)
        var dropped: [String] = []
        if service.kind == .jwt {
            if compromised { dropped = try store.rotateCompromisedSigningKey(purpose: service.signingPurpose).dropped }
            else { try store.rotateSigningKey(purpose: service.signingPurpose) }
        }
        var rotation = actor
        rotation.capability = "\(service.name):rotate"
        rotation.decision = Decision.allow.rawValue
        rotation.outcome = "rotated to version \(current + 1)"
        rotation.reason = compromised ? reason + "; compromised: dropped \(dropped.isEmpty ? "no key" : dropped.joined(separator: ", ")) from the JWKS" : reason
        var revocation = actor
        revocation.event = "lease.revoke"
        // No provision of the service is in flight (`ServiceRotations`): the leases read here are all it has.
        let leases = try store.activeLeases(service: service.name)
        let revocations = Self.records(ending: leases, by: revocation, outcome: "revoked", reason: "service '\(service.name)' rotated")
        let setVersion = store.setServiceVersion(service.name, current + 1, nowMicros: now)
        let end = store.endLeases(leases.map(\.id), as: .revoked, reason: "rotation", nowMicros: now)
        try await store.audit.append([rotation] + revocations, with: { db in
            try setVersion(db)
            try end(db)
        })
        revoker.poke()
        logger.notice("service rotated", metadata: ["service": "\(service.name)", "version": "\(current + 1)", "revoked": "\(leases.count)"])
        return (current + 1, leases.count)
    }

    /// Revokes many leases at once (the kill switch), one audit record per lease.
    func revokeAll(_ leases: [Lease], actor: AuditRecord, reason: String) async throws -> Int {
        guard !leases.isEmpty else {
            var r = actor
            r.decision = Decision.allow.rawValue
            r.outcome = "revoked 0"
            r.reason = reason
            try await store.audit.append(r)
            return 0
        }
        let records = Self.records(ending: leases, by: actor, outcome: "revoked", reason: reason)
        try await store.audit.append(records, with: store.endLeases(leases.map(\.id), as: .revoked, reason: reason, nowMicros: clock.nowMicros()))
        revoker.poke()
        return leases.count
    }

    /// Marks leases past their expiry as expired (they already read as inactive).
    func reapExpired(policyVersion: String) async throws -> Int {
        let now = clock.nowMicros()
        let expired = try store.expiredLeases(nowMicros: now)
        guard !expired.isEmpty else { return 0 }
        var reaper = AuditRecord(event: "lease.expire")
        reaper.policyVersion = policyVersion
        let records = Self.records(ending: expired, by: reaper, outcome: "expired", reason: "")
        try await store.audit.append(records, with: store.endLeases(expired.map(\.id), as: .expired, reason: "expired", nowMicros: now))
        revoker.poke()
        return expired.count
    }

    /// Rotates every service whose `rotation_days` have passed; one that fails is logged and
    /// tried again at the next pass, and does not keep the others from rotating.
    @discardableResult
    func rotateDue(_ policy: Policy) async -> [String] {
        var rotated: [String] = []
        for service in policy.services.values.sorted(by: { $0.name < $1.name }) where service.rotationDays != nil {
            var actor = AuditRecord(event: "rotate")
            actor.policyVersion = policy.version
            do {
                // Due before it waits for the service (which holds its provisions off), and again
                // in turn with the other rotations: one just done (an admin's) is not repeated.
                func due() throws -> Bool {
                    TTLRule.rotationDue(service, lastRotatedMicros: try store.serviceVersion(service.name).rotatedMicros, nowMicros: clock.nowMicros())
                }
                guard try due() else { continue }
                let done = try await rotations.rotating(service.name) { () async throws -> Bool in
                    guard try due() else { return false }
                    _ = try await rotateAlone(service: service, actor: actor, reason: "scheduled: every \(service.rotationDays!) days", compromised: false)
                    return true
                }
                if done { rotated.append(service.name) }
            } catch {
                logger.error("scheduled rotation failed; tried again at the next maintenance pass", metadata: ["service": "\(service.name)", "error": "\(error)"])
            }
        }
        return rotated
    }

    /// One audit record per ended lease, carrying who ended it (`actor`) and why.
    static func records(ending leases: [Lease], by actor: AuditRecord, outcome: String, reason: String) -> [AuditRecord] {
        leases.map { lease in
            var r = actor
            r.leaseID = lease.id
            r.agent = lease.agent
            r.agentID = lease.agentID
            r.capability = lease.scope.joined(separator: " ")
            r.decision = Decision.allow.rawValue
            r.outcome = outcome
            r.reason = reason
            return r
        }
    }

    static func info(_ l: Lease, now: Int64) -> Lanyard_V1_LeaseInfo {
        .with {
            $0.leaseID = l.id
            $0.agent = l.agent
            $0.agentID = l.agentID
            $0.service = l.service
            $0.kind = l.kind.rawValue
            $0.scope = l.scope
            $0.issuedAt = l.issuedMicros / 1_000_000
            $0.expiresAt = l.expiresMicros / 1_000_000
            $0.state = l.state(atMicros: now).rawValue
        }
    }
}

extension Policy.Service {
    /// The purpose of the keys that sign this (jwt) service's access tokens: its own keys,
    /// in its own JWKS (`lanyardctl jwks --service NAME`), never the identity keys.
    var signingPurpose: String { "service:\(name)" }
    /// The `typ` of access tokens (RFC 9068), never an identity token's.
    static let accessTokenType = "at+jwt"
}

/// Per service, its provisions share it and a rotation holds it alone. A rotation waits for
/// the provisions in flight, and provisions that come meanwhile wait for it, so a flood of
/// provisions cannot hold a rotation off; when it ends, the provisions that waited go before
/// the next rotation, so rotations in a row cannot hold provisions off either. A provision
/// that waits gives up its place at its uid's gate meanwhile (`AuditWait`).
final class ServiceRotations: Sendable {
    private struct Service {
        var provisions = 0
        var rotating = false
        var rotations: [CheckedContinuation<Void, Never>] = []
        var provisionsWaiting: [CheckedContinuation<Void, Never>] = []
        var isIdle: Bool { provisions == 0 && !rotating && rotations.isEmpty && provisionsWaiting.isEmpty }
    }
    private let state = NIOLockedValueBox([String: Service]())

    func provisioning<T>(_ service: String, _ body: () async throws -> T) async rethrows -> T {
        try await hold(service, as: .provision, body)
    }

    func rotating<T>(_ service: String, _ body: () async throws -> T) async rethrows -> T {
        try await hold(service, as: .rotation, body)
    }

    private enum Holder { case provision, rotation }

    private func hold<T>(_ service: String, as holder: Holder, _ body: () async throws -> T) async rethrows -> T {
        if !admit(service, holder, orQueue: nil) {
            if holder == .provision { AuditWait.current?.willWait() }
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                if admit(service, holder, orQueue: c) { c.resume() }
            }
        }
        defer { leave(service, rotation: holder == .rotation) }
        return try await body()
    }

    /// Lets `holder` in now (true), or queues `waiter` for `leave` to let in later.
    private func admit(_ service: String, _ holder: Holder, orQueue waiter: CheckedContinuation<Void, Never>?) -> Bool {
        state.withLockedValue { s in
            var entry = s[service] ?? Service()
            defer { s[service] = entry.isIdle ? nil : entry }
            switch holder {
            case .provision:
                if !entry.rotating, entry.rotations.isEmpty { entry.provisions += 1; return true }
                if let waiter { entry.provisionsWaiting.append(waiter) }
            case .rotation:
                if entry.provisions == 0, !entry.rotating { entry.rotating = true; return true }
                if let waiter { entry.rotations.append(waiter) }
            }
            return false
        }
    }

    /// Whether nothing holds or waits for `service` (for tests).
    func isIdle(_ service: String) -> Bool { state.withLockedValue { $0[service] == nil } }

    /// A provision or a rotation leaves; lets in who goes next: after a rotation the
    /// provisions that waited (all at once), else the next rotation once no provision is in flight.
    private func leave(_ service: String, rotation: Bool) {
        let next = state.withLockedValue { s -> [CheckedContinuation<Void, Never>] in
            var entry = s[service, default: Service()]
            if rotation { entry.rotating = false } else { entry.provisions -= 1 }
            var next: [CheckedContinuation<Void, Never>] = []
            if rotation, !entry.provisionsWaiting.isEmpty {
                entry.provisions += entry.provisionsWaiting.count
                next = entry.provisionsWaiting
                entry.provisionsWaiting = []
            } else if entry.provisions == 0, !entry.rotating, !entry.rotations.isEmpty {
                entry.rotating = true
                next = [entry.rotations.removeFirst()]
            }
            s[service] = entry.isIdle ? nil : entry
            return next
        }
        for c in next { c.resume() }
    }
}
