import LanyardCore
import LanyardCrypto
import LanyardStore
import LanyardWire
import Logging

/// Answers the admin socket. Who may call what is checked per call against the
/// kernel-attested uid; refusals are audited.
final class AdminService: Sendable {
    let policy: PolicyHolder
    let store: Store
    let clock: any WallClock
    let logger: Logger
    let registry: ConnectionRegistry
    let credentials: CredentialService
    let approvals: ApprovalService
    let identities: IdentityService
    let startedMicros: Int64

    init(policy: PolicyHolder, store: Store, credentials: CredentialService, approvals: ApprovalService, identities: IdentityService,
         clock: any WallClock, registry: ConnectionRegistry, logger: Logger) {
        self.identities = identities
        self.policy = policy
        self.credentials = credentials
        self.approvals = approvals
        self.store = store
        self.clock = clock
        self.registry = registry
        self.logger = logger
        startedMicros = clock.nowMicros()
    }

    func handle(_ request: Lanyard_V1_AdminRequest, _ connection: Connection) async -> Lanyard_V1_AdminResponse {
        await .answering(request.id, logger: logger) { try await dispatch(request, connection) }
    }

    private enum Role { case anyone, adminOrApprover, admin, approver }

    private func dispatch(_ request: Lanyard_V1_AdminRequest, _ connection: Connection) async throws -> Lanyard_V1_AdminResponse {
        guard let call = request.call else {
            throw CallError(.invalidArgument, "the admin request names no call; set one of the AdminRequest.call fields")
        }
        let snapshot = policy.current
        let roles = Roles(credentials: connection.credentials, policy: snapshot.policy)
        let (name, needed) = Self.describe(call)
        if let refusal = connection.senderRefusal {
            var record = record(name, connection, snapshot)
            record.decision = Decision.deny.rawValue
            record.reason = refusal
            record.outcome = "foreign_sender"
            try await store.audit.append(record)
            throw CallError(.unauthenticated, refusal)
        }
        let allowed = switch needed {
        case .anyone: true
        case .adminOrApprover: roles.admin || roles.approver
        case .admin: roles.admin
        case .approver: roles.approver
        }
        guard allowed else {
            var record = record(name, connection, snapshot)
            record.decision = Decision.deny.rawValue
            record.reason = "uid \(connection.credentials.uid) is not " + (needed == .admin ? "an admin" : needed == .approver ? "an approver" : "an admin or approver")
            record.outcome = "permission_denied"
            if case .approvalDecide(let c) = call { record.approvalID = String(c.approvalID.prefix(64)) }
            try await store.audit.append(record)
            let who = switch needed {
            case .admin: "an admin (root, or a uid or group under admins: in the policy)"
            case .approver: "an approver (a uid or group under approvers: in the policy; never an agent's uid, never root)"
            default: "an admin or an approver (a uid or group under approvers: in the policy, never an agent's uid)"
            }
            throw CallError(.permissionDenied, "\(name) needs \(who); uid \(connection.credentials.uid) is not one")
        }

        var response = Lanyard_V1_AdminResponse()
        switch call {
        case .whoami:
            var r = Lanyard_V1_WhoamiResponse()
            r.uid = connection.credentials.uid
            r.gid = connection.credentials.gid
            r.pid = connection.credentials.pid
            r.admin = roles.admin
            r.approver = roles.approver
            response.whoami = r
        case .status:
            response.statusResult = try status(snapshot)
        case .policyReload:
            response.policyReload = try await reload(connection, snapshot)
        case .policyShow:
            var r = Lanyard_V1_PolicyShowResponse()
            r.policyVersion = snapshot.version
            guard let source = try store.policySource(version: snapshot.version) else {
                throw CallError(.dataLoss, "the stored text of the active policy (\(snapshot.version.prefix(12))) is missing or was altered at rest; "
                                + "the policy in force is unchanged: run `lanyardctl policy reload` to record it again")
            }
            r.source = source
            r.path = snapshot.path
            response.policyShow = r
        case .policyExplain(let c):
            response.policyExplain = try Self.explain(c, snapshot.policy)
        case .agentsList:
            var r = Lanyard_V1_AgentsListResponse()
            r.agents = snapshot.policy.agents.sorted { $0.name < $1.name }.map { agentInfo($0, snapshot.policy) }
            response.agentsList = r
        case .auditQuery(let q):
            response.auditQuery = try auditQuery(q)
        case .auditVerify:
            let v = try store.verifyAudit()
            var r = Lanyard_V1_AuditVerifyResponse()
            r.ok = v.ok
            r.records = v.records
            r.firstBrokenSeq = v.firstBrokenSeq ?? 0
            r.reason = v.reason
            r.headHash = v.headHash
            response.auditVerify = r
        case .approvalsList(let c):
            let deadline = ContinuousClock.now + .milliseconds(Int(min(c.waitMs, ApprovalService.maxWaitMs)))
            if c.waitMs > 0, approvals.events.version == c.sinceVersion {
                // Waiting is not working: the call's place at its uid's gate goes to the next
                // call meanwhile, and the list after it is worked in a place again.
                let wait = { await self.approvals.events.wait(since: c.sinceVersion, until: deadline) }
                if let place = UIDGate.Place.current { await place.away(while: wait) } else { await wait() }
            }
            let version = approvals.events.version
            response.approvalsList = try approvals.list(includeDecided: c.includeDecided, now: clock.nowMicros())
            response.approvalsList.version = version
        case .approvalDecide(let c):
            let approval = try await approvals.decide(c, connection, snapshot)
            response.approvalDecide = .with { $0.approval = approval }
        case .jwks(let c):
            var purpose = IdentityService.purpose
            var alg = IdentityService.algorithm(snapshot.policy)
            if !c.service.isEmpty {
                guard let service = snapshot.policy.services[c.service], service.kind == .jwt else {
                    throw CallError(.notFound, "'\(c.service.prefix(64))' is not a jwt service of the policy: only jwt services sign access tokens; "
                                    + "without --service, jwks prints the identity keys")
                }
                purpose = service.signingPurpose
                alg = .eddsa
            }
            let json = try identities.jwks(purpose: purpose, alg: alg)
            response.jwks = .with { $0.json = json }
        case .keysRotate(let c):
            var r = record("keys.rotate", connection, snapshot)
            r.decision = Decision.allow.rawValue
            if c.compromised {
                let (kid, dropped) = try store.rotateCompromisedSigningKey(purpose: IdentityService.purpose, alg: IdentityService.algorithm(snapshot.policy))
                r.outcome = "new kid \(kid)"
                r.reason = "compromised: dropped \(dropped.isEmpty ? "no key" : dropped.joined(separator: ", ")) from the JWKS; tokens they signed no longer validate"
                response.keysRotate = .with { $0.kid = kid }
            } else {
                let (kid, _) = try store.rotateSigningKey(purpose: IdentityService.purpose, alg: IdentityService.algorithm(snapshot.policy))
                r.outcome = "new kid \(kid)"
                response.keysRotate = .with { $0.kid = kid }
            }
            try await store.audit.append(r)
        case .identityRevoke(let c):
            var r = record("identity.revoke", connection, snapshot)
            r.decision = Decision.allow.rawValue
            r.outcome = "revoked"
            r.reason = "jti \(c.jti.prefix(64))"
            do {
                try await store.audit.append(r, with: store.revokeIdentity(jti: c.jti, nowMicros: clock.nowMicros()))
            } catch let e as StoreConflict {
                throw CallError(.notFound, e.description)
            }
            response.identityRevoke = .with { $0.revoked = true }
        case .limitsShow(let c):
            response.limitsShow = try limitsShow(c, snapshot.policy)
        case .limitsReset(let c):
            response.limitsReset = try await limitsReset(c, connection, snapshot)
        case .secretPut(let c):
            response.secretPut = try await secretPut(c, connection, snapshot)
        case .secretRotate(let c):
            guard let service = snapshot.policy.services[c.service] else {
                throw CallError(.notFound, "service '\(c.service.prefix(64))' is not declared in the policy")
            }
            guard !c.compromised || service.kind == .jwt else {
                throw CallError(.failedPrecondition, "service '\(service.name)' is of kind \(service.kind.rawValue) and signs no tokens: --compromised applies "
                                + "to jwt services; rotate without it (its leases are revoked either way)")
            }
            let (version, revoked) = try await credentials.rotate(service: service, actor: record("secret.rotate", connection, snapshot),
                                                                  reason: "requested by admin uid \(connection.credentials.uid)", compromised: c.compromised)
            response.secretRotate = .with {
                $0.version = UInt32(version)
                $0.revokedLeases = UInt32(revoked)
            }
        case .secretList:
            response.secretList = .with {
                $0.secrets = (try? store.secretVersions())?.map { s in
                    .with {
                        $0.service = s.service
                        $0.version = UInt32(s.version)
                        $0.updatedAt = s.createdMicros / 1_000_000
                    }
                } ?? []
            }
        case .leasesList(let c):
            let page = try credentials.leasePage(agent: c.agent.isEmpty ? nil : c.agent, service: c.service.isEmpty ? nil : c.service,
                                                 pageToken: c.pageToken)
            response.leasesList = .with {
                $0.leases = page.leases
                $0.nextPageToken = page.next
            }
        case .leasesRevoke(let c):
            let leases: [Lease]
            let what: String
            switch c.target {
            case .leaseID(let id):
                leases = try store.lease(id: id).map { [$0] }?.filter { $0.state == .active } ?? []
                what = "lease \(id.prefix(64))"
            case .agent(let a):
                leases = try store.activeLeases(agent: a)
                what = "every lease of agent '\(a.prefix(64))'"
            case .service(let sv):
                leases = try store.activeLeases(service: sv)
                what = "every lease of service '\(sv.prefix(64))'"
            case .none:
                throw CallError(.invalidArgument, "say what to revoke: a lease id, an agent or a service")
            }
            let n = try await credentials.revokeAll(leases, actor: record("leases.revoke", connection, snapshot),
                                                    reason: "kill switch by admin uid \(connection.credentials.uid): \(what)")
            response.leasesRevoke = .with { $0.revoked = UInt32(n) }
        }
        return response
    }

    /// Seals a static service's new secret (never logged, never audited); older leases
    /// of the service are revoked, since the value they carry is being replaced.
    private func secretPut(_ c: Lanyard_V1_SecretPutRequest, _ connection: Connection, _ snapshot: PolicySnapshot) async throws -> Lanyard_V1_SecretPutResponse {
        guard let service = snapshot.policy.services[c.service] else {
            throw CallError(.notFound, "service '\(c.service.prefix(64))' is not declared in the policy")
        }
        guard service.kind == .static else {
            throw CallError(.failedPrecondition, "service '\(service.name)' is of kind \(service.kind.rawValue); only static services hold a put secret")
        }
        guard !c.value.isEmpty, c.value.count <= 16 * 1024 else {
            throw CallError(.invalidArgument, "the secret must be 1 to 16384 bytes, got \(c.value.count)")
        }
        var r = record("secret.put", connection, snapshot)
        r.capability = "\(service.name):secret"
        r.decision = Decision.allow.rawValue
        let version = try await credentials.putSecret(Array(c.value), of: service, record: r, rotation: record("secret.rotate", connection, snapshot))
        logger.notice("secret put", metadata: ["service": "\(service.name)", "version": "\(version)"])
        return .with { $0.version = UInt32(version) }
    }

    private func status(_ snapshot: PolicySnapshot) throws -> Lanyard_V1_StatusResponse {
        var r = Lanyard_V1_StatusResponse()
        r.version = lanyardVersion
        r.uptimeSeconds = UInt64(max(0, (clock.nowMicros() - startedMicros) / 1_000_000))
        r.policyVersion = snapshot.version
        r.agents = UInt32(snapshot.policy.agents.count)
        r.activeLeases = try store.countActiveLeases(nowMicros: clock.nowMicros())
        r.pendingApprovals = try store.countPendingApprovals(nowMicros: clock.nowMicros())
        r.auditHead = store.audit.headRecord.seq
        r.connections = UInt32(registry.count)
        r.upstreamRevocations = UInt64(try store.revocationQueue().count)
        return r
    }

    private func reload(_ connection: Connection, _ old: PolicySnapshot) async throws -> Lanyard_V1_PolicyReloadResponse {
        var record = record("policy.reload", connection, old)
        do {
            let (next, changed) = try policy.reload()
            record.decision = Decision.allow.rawValue
            record.outcome = changed ? "activated" : "unchanged"
            record.reason = "policy \(next.version.prefix(12)) active"
            record.policyVersion = next.version
            try await store.audit.append(record)
            logger.notice("policy reloaded", metadata: ["policy.version": "\(next.version)", "changed": "\(changed)"])
            var r = Lanyard_V1_PolicyReloadResponse()
            r.policyVersion = next.version
            r.changed = changed
            return r
        } catch let error as PolicyError {
            record.decision = Decision.deny.rawValue
            record.outcome = "refused"
            record.reason = String(error.description.prefix(512))
            try await store.audit.append(record)
            throw CallError(.failedPrecondition, "the new policy was refused and the old one stays active: \(error)")
        }
    }

    /// One page of matching records from `from_seq`, in order, as many as fit one reply
    /// (at least one: a record stored before fields were capped is sent capped, its
    /// stored text intact). `next_seq` follows the last record sent while more match,
    /// and is 0 only when none does.
    private func auditQuery(_ q: Lanyard_V1_AuditQueryRequest) throws -> Lanyard_V1_AuditQueryResponse {
        var filter = AuditFilter()
        filter.fromSeq = max(q.fromSeq, 1)
        let limit = Int(q.limit == 0 ? 100 : min(q.limit, Self.auditPageLimit))
        filter.limit = limit + 1  // one more tells whether more match
        filter.agent = q.agent.isEmpty ? nil : q.agent
        filter.capability = q.capability.isEmpty ? nil : q.capability
        filter.decision = q.decision.isEmpty ? nil : q.decision
        filter.sinceMicros = q.sinceUs == 0 ? nil : q.sinceUs
        filter.untilMicros = q.untilUs == 0 ? nil : q.untilUs
        var r = Lanyard_V1_AuditQueryResponse()
        r.headSeq = store.audit.headRecord.seq  // before the query: every record up to it is in what the query reads
        let records = try store.queryAudit(filter)
        // Keep the page inside one frame (the client's cap is the default 64 KiB).
        var budget = Self.auditReplyBudget
        func size(_ w: Lanyard_V1_AuditRecord) -> Int { ((try? w.serializedBytes() as [UInt8])?.count ?? Self.auditReplyBudget) + 8 }
        for record in records.prefix(limit) {
            var wire = record.wire
            if r.records.isEmpty, size(wire) > budget { wire = record.capped.wire }
            budget -= size(wire)
            if budget < 0, !r.records.isEmpty { break }
            r.records.append(wire)
        }
        if r.records.count < records.count, let last = r.records.last {
            r.nextSeq = last.seq + 1
        }
        return r
    }

    /// Records per audit query page, and the bytes a page's records may take.
    static let auditPageLimit: UInt32 = 500
    static let auditReplyBudget = 48 * 1024

    private func agentInfo(_ agent: Agent, _ policy: Policy) -> Lanyard_V1_AgentInfo {
        var a = Lanyard_V1_AgentInfo()
        a.name = agent.name
        a.id = agent.id
        a.uri = agent.uri(trustDomain: policy.trustDomain)
        a.uid = agent.selector.uid
        var s = Lanyard_V1_Selector()
        s.uid = agent.selector.uid
        if let gid = agent.selector.gid { s.hasGid_p = true; s.gid = gid }
        s.exe = agent.selector.exe ?? ""
        s.exeSha256 = agent.selector.exeSHA256 ?? ""
        s.unit = agent.selector.unit?.description ?? ""
        a.selector = s
        a.grants = agent.grants.sorted { $0.key < $1.key }.map { cap, risk in
            var g = Lanyard_V1_Grant()
            g.capability = cap.name
            g.risk = risk.wire
            return g
        }
        return a
    }

    func record(_ event: String, _ connection: Connection, _ snapshot: PolicySnapshot) -> AuditRecord {
        var r = AuditRecord(event: "admin." + event)
        r.uid = Int64(connection.credentials.uid)
        r.gid = Int64(connection.credentials.gid)
        r.pid = Int64(connection.credentials.pid)
        r.policyVersion = snapshot.version
        return r
    }

    /// `policy explain` against the running policy: the same explanation as offline.
    static func explain(_ c: Lanyard_V1_PolicyExplainRequest, _ policy: Policy) throws -> Lanyard_V1_PolicyExplainResponse {
        let subject: PolicyExplain.Subject
        if !c.facts.isEmpty {
            do { subject = .facts(try CallerFacts(parsing: c.facts)) } catch { throw CallError(.invalidArgument, "facts: \(error)") }
        } else {
            guard !c.agent.isEmpty else { throw CallError(.invalidArgument, "name an agent or give caller facts") }
            subject = .agent(c.agent)
        }
        let e = PolicyExplain.explain(.init(subject: subject, capability: c.capability, resource: c.resource, args: c.args), in: policy)
        return .with {
            $0.text = e.text
            $0.decision = e.agent == nil ? "" : e.verdict.decision.rawValue
            $0.reasonCode = e.verdict.code.rawValue
        }
    }

    private static func describe(_ call: Lanyard_V1_AdminRequest.OneOf_Call) -> (String, Role) {
        switch call {
        case .whoami: ("whoami", .anyone)
        case .status: ("status", .adminOrApprover)
        case .policyReload: ("policy_reload", .admin)
        case .policyShow: ("policy_show", .admin)
        case .policyExplain: ("policy_explain", .admin)
        case .agentsList: ("agents_list", .admin)
        case .secretPut: ("secret_put", .admin)
        case .secretRotate: ("secret_rotate", .admin)
        case .secretList: ("secret_list", .admin)
        case .approvalsList: ("approvals_list", .adminOrApprover)
        case .approvalDecide: ("approval_decide", .approver)
        case .leasesList: ("leases_list", .admin)
        case .leasesRevoke: ("leases_revoke", .admin)
        case .auditQuery: ("audit_query", .admin)
        case .auditVerify: ("audit_verify", .admin)
        case .keysRotate: ("keys_rotate", .admin)
        case .jwks: ("jwks", .anyone)
        case .identityRevoke: ("identity_revoke", .admin)
        case .limitsShow: ("limits_show", .adminOrApprover)
        case .limitsReset: ("limits_reset", .admin)
        }
    }
}

extension AuditRecord {
    var wire: Lanyard_V1_AuditRecord {
        var w = Lanyard_V1_AuditRecord()
        w.seq = seq
        w.timeUs = timeMicros
        w.event = event
        w.agentID = agentID
        w.agent = agent
        w.uid = UInt32(truncatingIfNeeded: uid ?? 0)
        w.gid = UInt32(truncatingIfNeeded: gid ?? 0)
        w.pid = Int32(truncatingIfNeeded: pid ?? 0)
        w.capability = capability
        w.resource = resource
        w.decision = decision
        w.reason = reason
        w.outcome = outcome
        w.leaseID = leaseID
        w.approvalID = approvalID
        w.approver = approver
        w.policyVersion = policyVersion
        w.prevHash = prevHash
        w.hash = hash
        w.mcpServer = mcpServer
        w.mcpTool = mcpTool
        w.argsDigest = argsDigest
        w.reasonCode = reasonCode
        return w
    }
}
