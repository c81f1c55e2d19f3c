import LanyardCore
import LanyardCrypto
import LanyardStore
import LanyardWire
import Logging
import NIOCore

/// Answers the agent socket. Every call acts as the kernel-attested caller; the
/// request has no field that changes who that is (invariant 1).
final class AgentService: Sendable {
    let policy: PolicyHolder
    let store: Store
    let credentials: CredentialService
    let approvals: ApprovalService
    let identities: IdentityService
    let attestor: any Attestor
    let clock: any WallClock
    let logger: Logger
    let unknownRefusals: RefusalTally
    private var spending: GrantSpending { GrantSpending(store: store) }

    init(policy: PolicyHolder, store: Store, credentials: CredentialService, approvals: ApprovalService, identities: IdentityService,
         attestor: any Attestor, clock: any WallClock, logger: Logger) {
        self.identities = identities
        self.attestor = attestor
        self.policy = policy
        self.store = store
        self.credentials = credentials
        self.approvals = approvals
        self.clock = clock
        self.logger = logger
        unknownRefusals = RefusalTally(interval: approvals.limits.unknownAuditInterval)
    }

    func handle(_ request: Lanyard_V1_Request, _ connection: Connection) async -> Lanyard_V1_Response {
        await .answering(request.id, logger: logger) { try await dispatch(request, connection) }
    }

    /// A Hello from the process that opened the connection, answered on the event loop as it
    /// is read: from the bytes the connection's Hello encoded to under this policy and agent.
    /// Nil for every other call.
    func answerAtOnce(_ request: Lanyard_V1_Request, _ connection: Connection) -> ByteBuffer? {
        guard case .hello = request.call, connection.senderRefusal == nil else { return nil }
        let snapshot = policy.current
        let agent = snapshot.policy.agent(matching: connection.peer.facts, exeFile: pinnableExeFile)
        let rest = connection.memo.hello(policy: snapshot.version, agent: agent?.name) {
            try? hello(Caller(connection: connection, agent: agent, snapshot: snapshot)).serializedBytes()
        }
        return rest.map { Framing.frame(id: request.id, rest: $0) }
    }

    private func dispatch(_ request: Lanyard_V1_Request, _ connection: Connection) async throws -> Lanyard_V1_Response {
        let snapshot = policy.current
        let agent = snapshot.policy.agent(matching: connection.peer.facts, exeFile: pinnableExeFile)
        let caller = Caller(connection: connection, agent: agent, snapshot: snapshot)
        if let refusal = connection.senderRefusal {
            return try await unauthenticated(request.call.map(Self.name(of:)) ?? "none", caller, reason: refusal, outcome: "foreign_sender")
        }
        // Invariant 2: a call that decides, consumes or mutates is answered only while the
        // attested process is still the one on the socket (not a forked or exec'd successor).
        if agent != nil, let call = request.call, Self.decides(call), !attestor.isStillSame(connection.peer) {
            return try await changedProcess(Self.name(of: call), caller)
        }
        switch request.call {
        case .hello:
            return hello(caller)
        case .authorize(let call):
            return try await authorize(call, caller)
        case .none:
            throw CallError(.invalidArgument, "the request names no call; set one of the Request.call fields")
        case .some(let call):
            guard let agent = caller.agent else { return try await unauthenticated(Self.name(of: call), caller) }
            switch call {
            case .provision(let c): return try await credentials.provision(c, caller, agent)
            case .revoke(let c): return try await credentials.revoke(c, caller, agent)
            case .listLeases(let c): return try credentials.listLeases(c, agent)
            case .introspect(let c): return try await credentials.introspect(c, caller, agent)
            case .rotate(let c): return try await rotate(c, caller, agent)
            case .issueIdentity(let c): return try await identities.issue(c, caller, agent)
            case .validateIdentity(let c): return try await identities.validate(c, caller)
            case .awaitApproval(let c):
                var response = Lanyard_V1_Response()
                response.awaitApproval = try await approvals.await(c, agent: agent)
                return response
            case .mcpServer(let c): return try mcpServer(c, caller.snapshot.policy, agent)
            case .hello, .authorize: throw CallError(.internal, "unreachable")
            }
        }
    }

    /// An agent rotates a service's credentials with `<service>:rotate`, routed by its risk.
    private func rotate(_ call: Lanyard_V1_RotateRequest, _ caller: Caller, _ agent: Agent) async throws -> Lanyard_V1_Response {
        var record = caller.record("rotate")
        record.capability = "\(call.service.prefix(64)):rotate"
        guard let service = caller.snapshot.policy.services[call.service], let cap = try? Capability(parsing: "\(call.service):rotate") else {
            record.decision = Decision.deny.rawValue
            record.outcome = "invalid_argument"
            record.reason = "service is not declared in the policy"
            record.reasonCode = ReasonCode.invalidArgument.rawValue
            try await store.audit.append(record)
            throw CallError(.invalidArgument, "service '\(call.service.prefix(64))' is not declared in the policy")
        }
        let verdict = Authorizer.decide(cap, for: agent, in: caller.snapshot.policy)
        guard verdict.decision == .allow else {
            record.decision = verdict.decision.rawValue
            record.outcome = "denied"
            record.reason = verdict.reason
            record.reasonCode = verdict.code.rawValue
            try await store.audit.append(record)
            let code: Lanyard_V1_Code = verdict.decision == .pending ? .failedPrecondition : .permissionDenied
            throw CallError(code, verdict.decision == .pending ? "\(verdict.reason); rotation needing approval is not available in this version" : verdict.reason)
        }
        record.reasonCode = verdict.code.rawValue
        let (version, revoked) = try await credentials.rotate(service: service, actor: record, reason: "requested by agent '\(agent.name)'")
        var response = Lanyard_V1_Response()
        response.rotate = .with {
            $0.version = UInt32(version)
            $0.revokedLeases = UInt32(revoked)
        }
        return response
    }


    // MARK: Calls

    private func hello(_ caller: Caller) -> Lanyard_V1_Response {
        var result = Lanyard_V1_HelloResponse()
        result.serverVersion = lanyardVersion
        result.protocolVersion = lanyardProtocolVersion
        result.caller = caller.identity
        var response = Lanyard_V1_Response()
        response.hello = result
        if caller.agent == nil {
            response.status = .init(.unauthenticated, caller.unauthenticatedMessage)
        }
        return response
    }

    /// What an Authorize decides: the capability, resource and args it names, or as the
    /// policy maps its MCP tool call.
    private struct Operation {
        var capability: Capability
        var resource: String
        var args: [String: String]
        /// A tool call's `server/tool`, bound into its approval ("" otherwise).
        var tool = ""
    }

    /// Why an Authorize is answered before any verdict: INVALID_ARGUMENT, or a DENY answer.
    private enum Refusal: Error {
        case invalid(String)
        case deny(String)
    }

    private func authorize(_ call: Lanyard_V1_AuthorizeRequest, _ caller: Caller) async throws -> Lanyard_V1_Response {
        guard let agent = caller.agent else {
            return try await unauthenticated(call.hasToolCall ? "tool_call" : "authorize", caller, capability: call.capability)
        }
        var record = caller.record(call.hasToolCall ? "tool_call" : "authorize")
        var result = Lanyard_V1_AuthorizeResponse()
        let operation: Operation
        do {
            operation = try self.operation(call, caller.snapshot.policy, &record, &result)
        } catch .invalid(let problem) {
            record.decision = Decision.deny.rawValue
            record.reason = problem
            record.outcome = "invalid_argument"
            record.reasonCode = ReasonCode.invalidArgument.rawValue
            try await store.audit.append(record)
            throw CallError(.invalidArgument, problem)
        } catch .deny(let reason) {
            record.decision = Decision.deny.rawValue
            record.reason = reason
            record.outcome = Decision.deny.rawValue
            record.reasonCode = ReasonCode.notInPolicy.rawValue
            try await store.audit.append(record)
            result.decision = .deny
            result.reason = reason
            result.reasonCode = ReasonCode.notInPolicy.rawValue
            var response = Lanyard_V1_Response()
            response.authorize = result
            return response
        }
        do {
            return try await decide(call, operation, agent, caller, record, result)
        } catch is ApprovalAlreadyOpen {
            // An identical tool call opened the approval first: this one finds it now. Twice
            // (a live row that never reads back authentic) is refused, not retried again.
            do {
                return try await decide(call, operation, agent, caller, record, result)
            } catch is ApprovalAlreadyOpen {
                throw CallError(.aborted, "an identical call's approval was opened meanwhile but cannot be read back; retry the call")
            }
        }
    }

    /// Decides `operation`, routes a PENDING verdict, commits the record with what changed.
    private func decide(_ call: Lanyard_V1_AuthorizeRequest, _ operation: Operation, _ agent: Agent, _ caller: Caller,
                        _ record: AuditRecord, _ result: Lanyard_V1_AuthorizeResponse) async throws -> Lanyard_V1_Response {
        var (record, result) = (record, result)
        let capability = operation.capability
        var verdict = Authorizer.decide(capability, for: agent, in: caller.snapshot.policy)
        verdict.dryRun = call.dryRun
        var change: Mutation?
        var created: StoredApproval?
        let amount = call.hasAmount ? (value: call.amount.value, unit: call.amount.unit) : nil
        let use = GrantSpending.Use(agent: agent, capabilities: [capability], amount: amount, nowMicros: clock.nowMicros())
        var overruns: [ReasonCode] = []
        var usedApproval = false
        if let use {
            do {
                (verdict, overruns) = try spending.check(verdict, use)
            } catch let e as SealError {
                try await refuseOnIntegrity(e, record)
            }
            if let wait = use.retryAfterSeconds(verdict) { result.retryAfterSeconds = wait }
        }
        if verdict.decision == .pending {
            let subject = ApprovalSubject(agentID: agent.id, capabilities: [capability], resource: operation.resource,
                                          args: operation.args, amount: call.hasAmount ? call.amount.text : "", tool: operation.tool, overruns: overruns)
            if !call.approvalID.isEmpty { record.approvalID = String(call.approvalID.prefix(64)) }
            let route = try approvals.route(verdict, subject, approvalID: call.approvalID, agent: agent, caller: caller, reuse: call.hasToolCall,
                                            standing: overruns.isEmpty)
            verdict = route.verdict
            // A dry run commits nothing the route would change: no approval opened or used.
            change = call.dryRun ? nil : route.change
            if let approved = route.approved {
                usedApproval = true
                record.approvalID = approved.id
                record.approver = approved.decidedReason
            }
            if let approval = call.dryRun ? route.waiting : route.created ?? route.waiting {
                record.approvalID = approval.id
                result.approvalID = approval.id
                result.bindingCode = approval.bindingCode
                result.approvalExpiresAt = approval.machine.expiresMicros / 1_000_000
                created = call.dryRun ? nil : route.created
            }
        }
        record.decision = verdict.decision.rawValue
        record.reason = verdict.reason
        record.reasonCode = verdict.code.rawValue
        record.outcome = call.dryRun ? "dry_run"
            : verdict.decision == .allow ? (verdict.risk == .low ? "auto_approved" : "approved") : verdict.decision.rawValue
        result.decision = verdict.decision.wire
        result.risk = verdict.risk?.wire ?? .unspecified
        result.reason = verdict.reason
        if verdict.decision == .allow, let use, !call.dryRun {
            change = spending.count(use, approved: usedApproval ? Set(overruns) : [], then: change)
        }
        result.reasonCode = verdict.code.rawValue
        result.dryRun = call.dryRun
        if let path = verdict.path { result.path = path.wire }
        do {
            try await approvals.commit([record], with: change, announce: created.map { ($0, caller.snapshot.policy) })
            if let created { approvals.processApprovals.noteRequester(created.id, caller.process, exe: caller.connection.peer.facts.exeFile) }
        } catch let over as LimitReached {
            verdict = verdict.routed(.deny, reason: over.reason, code: over.code)
            record.decision = Decision.deny.rawValue
            record.reason = over.reason
            record.reasonCode = over.code.rawValue
            record.outcome = Decision.deny.rawValue
            record.approvalID = ""
            record.approver = ""
            try await store.audit.append(record)
            result.decision = .deny
            result.reason = over.reason
            result.reasonCode = over.code.rawValue
            result.approvalID = ""
            if let wait = over.retryAfterSeconds { result.retryAfterSeconds = wait }
        }
        logger.debug("authorize", metadata: ["caller.uid": "\(caller.credentials.uid)", "agent": "\(agent.name)",
                                             "capability": "\(capability)", "policy.decision": "\(verdict.decision)"])
        var response = Lanyard_V1_Response()
        response.authorize = result
        return response
    }

    /// Audits a decision its stored state could not support (DENY integrity_failure), then fails it with `error` (DATA_LOSS).
    private func refuseOnIntegrity(_ error: SealError, _ record: AuditRecord) async throws -> Never {
        var r = record
        r.decision = Decision.deny.rawValue
        r.outcome = Decision.deny.rawValue
        r.reason = error.description
        r.reasonCode = ReasonCode.integrityFailure.rawValue
        try await store.audit.append(r)
        throw error
    }

    /// The operation `call` names (a tool call: as the policy maps it), with what it names
    /// noted in `record` and `result`, within the field bounds.
    private func operation(_ call: Lanyard_V1_AuthorizeRequest, _ policy: Policy, _ record: inout AuditRecord,
                           _ result: inout Lanyard_V1_AuthorizeResponse) throws(Refusal) -> Operation {
        let operation: Operation
        if call.hasToolCall {
            let tc = call.toolCall
            record.mcpServer = String(tc.server.prefix(64))
            record.mcpTool = String(tc.tool.prefix(128))
            guard call.capability.isEmpty, call.resource.isEmpty, call.args.isEmpty, !call.hasAmount else {
                throw .invalid("a tool call names no capability, resource, args or amount: the policy's mcp_servers section maps them; send only tool_call")
            }
            guard let server = policy.mcpServers[tc.server], server.name.sameBytes(as: tc.server) else {
                throw .deny("MCP server '\(record.mcpServer)' is not in the policy: add it under mcp_servers: \(record.mcpServer) (and its tools' capabilities)")
            }
            let mapping: ToolMapping
            do {
                mapping = try server.map(tool: tc.tool, argumentsJSON: tc.argumentsJson, catalog: policy.capabilities,
                                         maxArgs: approvals.limits.maxArgs, sha256Hex: { SHA256.hex($0) })
            } catch {
                throw .invalid(error.description)
            }
            record.argsDigest = mapping.argsDigest
            result.argsDigest = mapping.argsDigest
            record.resource = String(mapping.resource.prefix(1024))
            guard let cap = mapping.capability else { throw .deny(mapping.unmappedReason) }
            record.capability = cap.name
            result.capability = cap.name
            if let problem = approvals.limits.fieldProblem(resource: mapping.resource, args: mapping.args, unit: "") { throw .invalid(problem) }
            operation = Operation(capability: cap, resource: mapping.resource, args: mapping.args, tool: "\(server.name)/\(tc.tool)")
        } else {
            record.capability = String(call.capability.prefix(256))
            record.resource = String(call.resource.prefix(1024))
            if let problem = approvals.limits.fieldProblem(resource: call.resource, args: call.args, unit: call.amount.unit) { throw .invalid(problem) }
            do {
                operation = Operation(capability: try Capability(parsing: call.capability), resource: call.resource, args: call.args)
            } catch {
                throw .invalid(error.description)
            }
            result.capability = operation.capability.name
        }
        return operation
    }

    static let maxMcpTools = 1024

    /// What the policy says of one MCP server for this agent: which of the requested tools
    /// tools/list shows, and the credentials the server's process gets. Metadata only (not
    /// audited): it decides nothing, and every tools/call is authorized and audited.
    private func mcpServer(_ call: Lanyard_V1_McpServerRequest, _ policy: Policy, _ agent: Agent) throws -> Lanyard_V1_Response {
        guard let server = policy.mcpServers[call.server], server.name.sameBytes(as: call.server) else {
            throw CallError(.notFound, "MCP server '\(Inert.capped(call.server, limit: 64))' is not in the policy: add it under mcp_servers: in the policy")
        }
        guard call.tools.count <= Self.maxMcpTools else {
            throw CallError(.invalidArgument, "\(call.tools.count) tools asked for (limit \(Self.maxMcpTools)); ask in several calls")
        }
        var budget = ReplyBudget()
        var answer = Lanyard_V1_McpServerResponse()
        answer.credentials = server.credentials.map { c in
            .with {
                switch c.target {
                case .env(let name): $0.env = name
                case .file(let name): $0.file = name
                }
                $0.service = c.service
                $0.scope = c.scope.map(\.name)
                $0.ttlSeconds = UInt64(c.ttlSeconds ?? 0)
            }
        }
        answer.credentials.forEach { _ = budget.take($0) }
        for name in call.tools {
            guard name.utf8.count <= 128 else {
                throw CallError(.invalidArgument, "a tool name is \(name.utf8.count) bytes (limit 128)")
            }
            var tool = Lanyard_V1_McpTool()
            tool.name = name
            if Policy.McpServer.isToolName(name), case .success(let cap) = server.capability(of: name, catalog: policy.capabilities) {
                tool.capability = cap.name
                tool.risk = policy.grantedRisk(cap, to: agent)?.wire ?? .unspecified
                // Granted and callable (a HIGH one without approvers never is).
                tool.visible = Authorizer.decide(cap, for: agent, in: policy).decision != .deny
            }
            tool.visible = tool.visible || server.showUngrantedTools
            guard budget.take(tool) else {
                throw CallError(.invalidArgument, "the answer for \(call.tools.count) tools does not fit one reply; ask for fewer tools per call")
            }
            answer.tools.append(tool)
        }
        var response = Lanyard_V1_Response()
        response.mcpServer = answer
        return response
    }

    /// The calls that decide, consume or mutate (an approval, a lease, a credential, a token).
    static func decides(_ call: Lanyard_V1_Request.OneOf_Call) -> Bool {
        switch call {
        case .authorize, .provision, .revoke, .rotate, .introspect, .issueIdentity: true
        case .hello, .listLeases, .awaitApproval, .validateIdentity, .mcpServer: false
        }
    }

    /// A deciding call from a connection whose attested process exited or changed: audited, UNAUTHENTICATED.
    private func changedProcess(_ call: String, _ caller: Caller) async throws -> Lanyard_V1_Response {
        var record = caller.record(call)
        record.decision = Decision.deny.rawValue
        record.outcome = "unauthenticated"
        record.reason = "the process that opened this connection has exited or changed; reconnect"
        record.reasonCode = ReasonCode.unauthenticated.rawValue
        try await store.audit.append(record)
        return .failure(id: 0, .unauthenticated, record.reason)
    }

    /// Every call from a caller that matches no agent, or sent by a process other than the
    /// attested one, is answered UNAUTHENTICATED and audited. For uids that are no agent
    /// the first of each uid and interval is audited (and logged), the rest are counted
    /// (`unknownRefusals`); an agent's uid writes audit records with every call anyway.
    private func unauthenticated(_ call: String, _ caller: Caller, capability: String = "", reason: String? = nil,
                                 outcome: String = "unauthenticated") async throws -> Lanyard_V1_Response {
        let (recordNow, unrecorded) = caller.agent != nil ? (true, 0) : unknownRefusals.note(uid: caller.credentials.uid, nowMicros: clock.nowMicros())
        if recordNow {
            var record = caller.record(call)
            record.capability = String(capability.prefix(256))
            record.decision = Decision.deny.rawValue
            record.reasonCode = ReasonCode.unauthenticated.rawValue
            record.reason = (reason ?? "caller matches no registered agent")
                + (unrecorded > 0 ? "; \(unrecorded) more calls of this uid were refused since its last record" : "")
            record.outcome = outcome
            try await store.audit.append(record)
            logger.info("unauthenticated call", metadata: ["caller.uid": "\(caller.credentials.uid)", "caller.pid": "\(caller.credentials.pid)",
                                                           "sender.pid": "\(caller.connection.sender.map(String.init) ?? "unknown")", "rpc.method": "\(call)"])
        }
        return .failure(id: 0, .unauthenticated, reason ?? caller.unauthenticatedMessage)
    }

    /// Audits the refusals counted but not recorded, once their uid's interval has ended
    /// (the maintenance pass): one record per uid with the count.
    func flushUnknownRefusals(policyVersion: String) async throws {
        let ended = unknownRefusals.drain(nowMicros: clock.nowMicros())
        guard !ended.isEmpty else { return }
        let records = ended.map { e in
            var r = AuditRecord(event: "unauthenticated.summary")
            r.uid = Int64(e.uid)
            r.decision = Decision.deny.rawValue
            r.outcome = "unauthenticated"
            r.reason = "\(e.unrecorded) more calls refused since \(e.sinceMicros / 1_000_000) (unix s): caller matches no registered agent "
                + "(counted, one record per uid and --unknown-audit-interval-seconds)"
            r.policyVersion = policyVersion
            return r
        }
        try await store.audit.append(records, with: nil)
    }

    static func name(of call: Lanyard_V1_Request.OneOf_Call) -> String {
        switch call {
        case .hello: "hello"
        case .authorize: "authorize"
        case .provision: "provision"
        case .revoke: "revoke"
        case .rotate: "rotate"
        case .awaitApproval: "await_approval"
        case .issueIdentity: "issue_identity"
        case .validateIdentity: "validate_identity"
        case .introspect: "introspect"
        case .listLeases: "list_leases"
        case .mcpServer: "mcp_server"
        }
    }
}

/// The caller of one request: kernel facts plus the agent they match (if any).
struct Caller {
    var connection: Connection
    var agent: Agent?
    var snapshot: PolicySnapshot

    var credentials: PeerCredentials { connection.credentials }

    var unauthenticatedMessage: String {
        "uid \(credentials.uid) (pid \(credentials.pid)) matches no registered agent; register it under agents: in the policy"
    }

    var identity: Lanyard_V1_Identity {
        var id = Lanyard_V1_Identity()
        id.uid = credentials.uid
        id.gid = credentials.gid
        id.pid = credentials.pid
        id.exe = connection.peer.facts.exe ?? ""
        id.unit = connection.peer.facts.unit ?? ""
        if let agent {
            id.authenticated = true
            id.agent = agent.name
            id.agentID = agent.id
            id.uri = agent.uri(trustDomain: snapshot.policy.trustDomain)
            id.grants = agent.grants.sorted { $0.key < $1.key }.map { cap, risk in
                var g = Lanyard_V1_Grant()
                g.capability = cap.name
                g.risk = risk.wire
                return g
            }
        }
        return id
    }

    /// The calling process as the kernel named it (pid and start time), when known.
    var process: BoundProcess? {
        connection.peer.startTime.map { BoundProcess(pid: connection.peer.facts.pid, startTime: $0) }
    }

    func record(_ event: String) -> AuditRecord {
        var r = AuditRecord(event: event)
        r.uid = Int64(credentials.uid)
        r.gid = Int64(credentials.gid)
        r.pid = Int64(credentials.pid)
        r.agent = agent?.name ?? ""
        r.agentID = agent?.id ?? ""
        r.policyVersion = snapshot.version
        return r
    }
}

extension Lanyard_V1_Amount {
    /// How an amount enters an approval's digest: "value unit".
    var text: String { "\(value) \(unit)" }
}

extension Decision {
    var wire: Lanyard_V1_Decision {
        switch self {
        case .allow: .allow
        case .deny: .deny
        case .pending: .pending
        }
    }
}

extension DecisionPath {
    var wire: Lanyard_V1_DecisionPath {
        .with {
            $0.grant = grant.name
            $0.risk = risk.wire
            $0.riskSource = riskSource.rawValue
            $0.catalogRisk = catalogRisk.wire
        }
    }
}

extension RiskLevel {
    var wire: Lanyard_V1_RiskLevel {
        switch self {
        case .low: .low
        case .medium: .medium
        case .high: .high
        }
    }
}
