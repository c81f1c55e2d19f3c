import LanyardCore
import LanyardCrypto
import LanyardStore
import LanyardWire
import Logging
import NIOConcurrencyHelpers

/// Humans in the loop (DESIGN.md section 6): creates approvals, lets approvers decide
/// them, and lets exactly one matching operation use an approved one.
final class ApprovalService: Sendable {
    let store: Store
    let clock: any WallClock
    let logger: Logger
    let notifier: Notifier
    let limits: ServerLimits
    /// Moves whenever an approval is created, decided or used.
    let events = ChangeSignal()
    /// MEDIUM approvals granted for the requesting process's lifetime (`--for-process`).
    let processApprovals = ProcessApprovals()
    static let maxStandingSeconds: UInt32 = 7 * 86_400
    static let maxWaitMs: UInt32 = 60_000

    init(store: Store, notifier: Notifier, limits: ServerLimits, clock: any WallClock, logger: Logger) {
        self.store = store
        self.limits = limits
        self.notifier = notifier
        self.clock = clock
        self.logger = logger
    }

    /// A new PENDING approval for `subject`, and the change that stores it (committed
    /// with its audit record). The change fails with `BoundReached` when the agent already
    /// has its `maxPendingApprovalsPerAgent`: checked in the transaction, so pipelined
    /// requests cannot pass it together.
    /// `unique`: the change fails with `ApprovalAlreadyOpen` when a live approval of this
    /// operation appeared meanwhile (a concurrent identical call opened it first).
    func create(_ subject: ApprovalSubject, agent: Agent, caller: Caller, verdict: Verdict, unique: Bool = false) -> (StoredApproval, Mutation) {
        let now = clock.nowMicros()
        let approvers = caller.snapshot.policy.approvers
        let timeout = Int64(approvers?.timeoutSeconds ?? 300) * 1_000_000
        let risk = verdict.risk ?? .high
        let digest = SHA256.hex(subject.canonicalBytes)
        let approval = StoredApproval(
            id: SecureRandom.uuid(),
            machine: ApprovalMachine(risk: risk, digest: digest, requesterUID: caller.credentials.uid,
                                     quorum: risk == .high ? (approvers?.highRiskQuorum ?? 1) : 1,
                                     expiresMicros: now + timeout, timeoutMicros: timeout),
            bindingCode: ApprovalSubject.bindingCode(digestHex: digest), agentID: agent.id, agent: agent.name,
            uid: caller.credentials.uid, pid: caller.credentials.pid, exe: caller.connection.peer.facts.exe ?? "",
            capabilities: subject.capabilities.map(\.name), resource: subject.resource, args: subject.args, amount: subject.amount,
            reason: subject.tool.isEmpty ? verdict.reason : "MCP tool call \(subject.tool): \(verdict.reason)", createdMicros: now, decidedReason: "",
            unit: caller.connection.peer.facts.unit ?? "")
        let insert = store.insertApproval(approval)
        let (store, limit) = (self.store, limits.maxPendingApprovalsPerAgent)
        return (approval, { db in
            if unique, try store.countLiveApprovals(agentID: agent.id, digest: digest, nowMicros: now, on: db) > 0 { throw ApprovalAlreadyOpen() }
            guard try store.countPendingApprovals(agentID: agent.id, nowMicros: now, on: db) < limit else {
                throw BoundReached("too many pending approvals for agent \(agent.name) (limit \(limit), --max-pending-approvals-per-agent); "
                                   + "wait until an approver decides them or they expire, then ask again")
            }
            try insert(db)
        })
    }

    /// Commits records and a change that creates, decides or uses approvals, then wakes
    /// whoever waits on approvals (only after the commit, so they read the new state).
    /// `announce`: a new approval to tell approvers about once it is durable.
    func commit(_ records: [AuditRecord], with mutation: Mutation?, announce: (StoredApproval, Policy)? = nil) async throws {
        do {
            try await store.audit.append(records, with: mutation)
        } catch let bound as BoundReached {
            // The transaction that found the bound rolled the records back: record the refusal instead.
            try await store.audit.append(records.map(bound.refusal), with: nil)
            throw CallError(.resourceExhausted, bound.message)
        }
        if mutation != nil { events.bump() }
        if let (approval, policy) = announce { notifier.notify(approval, policy: policy) }
    }

    /// Checks that approval `id` is approved for exactly this operation, under the rules of
    /// the policy in force now (`risk` as it rates the operation now), and returns the change
    /// that consumes it (commit it with `commit`). Throws the refusal otherwise.
    func use(_ id: String, for subject: ApprovalSubject, agent: Agent, risk: RiskLevel, policy: Policy) throws(ApprovalRefusal) -> (StoredApproval, Mutation) {
        let found: StoredApproval?
        do { found = try store.approval(id: id) } catch { throw ApprovalRefusal("approval '\(id.prefix(64))' could not be read") }
        guard let stored = found, stored.agentID == agent.id else {
            throw ApprovalRefusal("approval '\(id.prefix(64))' does not exist for agent '\(agent.name)'")
        }
        var machine = stored.machine
        do {
            try machine.consume(digest: SHA256.hex(subject.canonicalBytes), atMicros: clock.nowMicros(), risk: risk,
                                quorum: policy.approvers?.highRiskQuorum ?? 1)
        } catch {
            throw ApprovalRefusal("approval '\(id.prefix(64))' cannot be used: \(error)", code: error.code)
        }
        return (stored, store.saveApproval(id, machine, from: .approved, decidedReason: stored.decidedReason))
    }

    /// Where a PENDING verdict goes for `subject`: the approved `approvalID` is used up
    /// (under the policy in force now), a standing approval covers it (MEDIUM only), or a
    /// new approval is opened. `change` stores what happened; commit it with the record.
    struct Route {
        var verdict: Verdict
        var change: Mutation?
        /// The approval used up, the one opened, or the one still pending that was found
        /// again (at most one of them is set).
        var approved: StoredApproval?
        var created: StoredApproval?
        var waiting: StoredApproval?
    }

    /// `reuse` (a retried MCP tool call): without an `approvalID`, the agent's live approval
    /// for exactly this operation is used if approved, or answered again if still pending,
    /// before a new one is opened.
    /// `standing`: whether a standing approval may cover it (not a limit's overrun).
    func route(_ verdict: Verdict, _ subject: ApprovalSubject, approvalID: String, agent: Agent, caller: Caller, reuse: Bool = false,
               standing mayStand: Bool = true) throws -> Route {
        if !approvalID.isEmpty { return consume(approvalID, verdict, subject, agent: agent, caller: caller) }
        if mayStand, verdict.risk == .medium, let standing = try standing(subject.capabilities, agent: agent, resource: subject.resource) {
            return Route(verdict: verdict.routed(.allow, reason: standing, code: .standingApproval))
        }
        if mayStand, verdict.risk == .medium, let process = caller.process,
           let covered = forProcess(subject.capabilities, agent: agent, resource: subject.resource, process: process, exe: caller.connection.peer.facts.exeFile) {
            return Route(verdict: verdict.routed(.allow, reason: covered, code: .approved))
        }
        if reuse, let live = try store.liveApproval(agentID: agent.id, digest: SHA256.hex(subject.canonicalBytes), nowMicros: clock.nowMicros()) {
            if live.machine.state == .approved { return consume(live.id, verdict, subject, agent: agent, caller: caller) }
            return Route(verdict: verdict.routed(.pending, reason: verdict.reason, code: .approvalPending), waiting: live)
        }
        let (approval, insert) = create(subject, agent: agent, caller: caller, verdict: verdict, unique: reuse)
        return Route(verdict: verdict, change: insert, created: approval)
    }

    /// Uses up approval `id` for `subject` (ALLOW), or says why it cannot be (DENY).
    private func consume(_ id: String, _ verdict: Verdict, _ subject: ApprovalSubject, agent: Agent, caller: Caller) -> Route {
        do {
            let (approved, consume) = try use(id, for: subject, agent: agent, risk: verdict.risk ?? .high, policy: caller.snapshot.policy)
            return Route(verdict: verdict.routed(.allow, reason: approved.decidedReason, code: .approved), change: consume, approved: approved)
        } catch {
            return Route(verdict: verdict.routed(.deny, reason: error.description, code: error.code))
        }
    }

    /// Standing approvals cover a MEDIUM operation when every MEDIUM capability in it has
    /// one for this agent and resource. HIGH is never covered.
    func standing(_ capabilities: [Capability], agent: Agent, resource: String) throws -> String? {
        var covered: [String] = []
        for cap in capabilities {
            switch agent.grants[cap] {
            case .high?, nil: return nil
            case .low?: continue
            case .medium?:
                guard let s = try store.standingApproval(agentID: agent.id, capability: cap.name, resource: resource, nowMicros: clock.nowMicros()) else {
                    return nil
                }
                covered.append("\(cap) by \(s.approver)")
            }
        }
        return covered.isEmpty ? nil : "standing approval: " + covered.joined(separator: ", ")
    }

    /// Process-lifetime approvals cover a MEDIUM operation when every MEDIUM capability in
    /// it has one for this agent, resource and process. HIGH is never covered.
    func forProcess(_ capabilities: [Capability], agent: Agent, resource: String, process: BoundProcess, exe: FileID?) -> String? {
        var covered: [String] = []
        for cap in capabilities {
            switch agent.grants[cap] {
            case .high?, nil: return nil
            case .low?: continue
            case .medium?:
                guard let approver = processApprovals.approver(agentID: agent.id, capability: cap.name, resource: resource, process: process, exe: exe) else {
                    return nil
                }
                covered.append("\(cap) by \(approver)")
            }
        }
        return covered.isEmpty ? nil : "approved for this process (pid \(process.pid)) while it lives: " + covered.joined(separator: ", ")
    }

    /// An approver approves or denies. The kernel-attested uid is the approver; roles were
    /// checked by the caller. Audited with the approver.
    func decide(_ c: Lanyard_V1_ApprovalDecideRequest, _ connection: Connection, _ snapshot: PolicySnapshot) async throws -> Lanyard_V1_Approval {
        guard let stored = try store.approval(id: c.approvalID) else {
            throw CallError(.notFound, "no approval '\(c.approvalID.prefix(64))'; list them with: lanyardctl approvals list")
        }
        let uid = connection.credentials.uid
        let who = "uid \(uid)" + (SystemGroups.userName(uid).map { " (\($0))" } ?? "")
        let now = clock.nowMicros()
        var record = AuditRecord(event: c.approve ? "approval.approve" : "approval.deny")
        record.uid = Int64(uid)
        record.pid = Int64(connection.credentials.pid)
        record.agent = stored.agent
        record.agentID = stored.agentID
        record.capability = stored.capabilities.joined(separator: " ")
        record.resource = stored.resource
        record.approvalID = stored.id
        record.approver = who
        record.policyVersion = snapshot.version

        var machine = stored.machine
        var standing: Mutation?
        var lifetime: (ProcessApprovals.Requester, PidFD)?
        do {
            if c.approve {
                if !c.bindingCode.isEmpty, let mismatch = Self.codeMismatch(typed: c.bindingCode, stored) { throw mismatch }
                if c.forProcess { lifetime = try requestingProcess(stored, standingSeconds: c.standingSeconds) }
                if c.standingSeconds > 0 {
                    guard machine.risk == .medium else {
                        throw CallError(.invalidArgument, "standing approvals are for MEDIUM risk only; each HIGH operation needs its own fresh approval")
                    }
                    guard c.standingSeconds <= Self.maxStandingSeconds else {
                        throw CallError(.invalidArgument, "a standing approval lasts at most 7 days (\(Self.maxStandingSeconds) s)")
                    }
                }
                let done = try machine.approve(by: uid, atMicros: now)
                record.outcome = done ? "approved" : "approved \(machine.approvers.count) of \(machine.quorum)"
                if c.standingSeconds > 0 {
                    let until = now + Int64(c.standingSeconds) * 1_000_000
                    let inserts = stored.capabilities.map {
                        store.insertStanding(agentID: stored.agentID, capability: $0, resource: stored.resource, untilMicros: until, approver: who, approvalID: stored.id)
                    }
                    standing = { db in for i in inserts { try i(db) } }
                    record.outcome += ", standing for \(c.standingSeconds) s"
                }
                if let (requester, _) = lifetime { record.outcome += ", for process pid \(requester.process.pid) until it exits" }
            } else {
                try machine.deny(by: uid, atMicros: now)
                record.outcome = "denied"
            }
        } catch let refusal as ApprovalMachine.Refusal {
            record.decision = Decision.deny.rawValue
            record.outcome = "refused"
            record.reason = refusal.description
            try await store.audit.append(record)
            throw CallError(.failedPrecondition, refusal.description)
        } catch let mismatch as BindingCodeMismatch {
            record.decision = Decision.deny.rawValue
            record.outcome = "refused"
            record.reason = mismatch.message
            try await store.audit.append(record)
            throw CallError(.failedPrecondition, mismatch.message)
        }
        record.decision = Decision.allow.rawValue
        record.reasonCode = (c.approve ? ReasonCode.approved : .approvalDenied).rawValue
        record.reason = String(c.reason.prefix(512))
        let save = store.saveApproval(stored.id, machine, from: stored.machine.state, decidedReason: c.approve ? "approved by \(who)" : "denied by \(who)" + (c.reason.isEmpty ? "" : ": \(c.reason.prefix(256))"))
        let addStanding = standing
        try await commit([record], with: { db in
            try save(db)
            try addStanding?(db)
        })
        if machine.state != .pending { _ = processApprovals.takeRequester(stored.id) }
        if let (requester, pidfd) = lifetime, machine.state == .approved { await coverProcess(stored, requester, pidfd, approver: who, policyVersion: snapshot.version) }
        logger.notice("approval decided", metadata: ["approval.id": "\(stored.id)", "approver": "\(who)", "outcome": "\(record.outcome)"])
        var updated = stored
        updated.machine = machine
        return Self.wire(updated, now: now)
    }

    /// Why a typed binding code does not approve `stored`: it is for HIGH requests (the
    /// approver confirms the operation the agent shows), and it must be the request's
    /// code, case, spaces and dashes aside. nil when it matches.
    static func codeMismatch(typed: String, _ stored: StoredApproval) -> BindingCodeMismatch? {
        guard stored.machine.risk == .high else {
            return BindingCodeMismatch(message: "a binding code is typed only for HIGH requests; approve this \(stored.machine.risk.description.uppercased()) request without one")
        }
        func plain(_ s: String) -> String { String(s.uppercased().unicodeScalars.filter { $0 != "-" && $0 != " " }.map(Character.init)) }
        guard plain(typed) == plain(stored.bindingCode) else {
            return BindingCodeMismatch(message: "the binding code typed (\(Inert.quoted(typed, limit: 32))) is not this request's: "
                                       + "read the code the agent shows for the operation it waits on, and approve only if they match")
        }
        return nil
    }

    /// The live process that asked for `stored` (MEDIUM only), for `--for-process`.
    private func requestingProcess(_ stored: StoredApproval, standingSeconds: UInt32) throws -> (ProcessApprovals.Requester, PidFD) {
        guard stored.machine.risk == .medium else {
            throw CallError(.invalidArgument, "process-lifetime approvals are for MEDIUM risk only; each HIGH operation needs its own fresh approval")
        }
        guard standingSeconds == 0 else {
            throw CallError(.invalidArgument, "an approval is either standing for a time or for the requesting process's lifetime, not both")
        }
        guard let requester = processApprovals.requesterIfKnown(stored.id) else {
            throw CallError(.failedPrecondition, "lanyardd does not know the process that asked for approval '\(stored.id)' (it was made before lanyardd "
                            + "last started); approve it without --for-process")
        }
        guard let pidfd = reopenPidFD(requester.process) else {
            throw CallError(.failedPrecondition, "the process that asked for approval '\(stored.id)' (pid \(requester.process.pid)) has exited; approve it without --for-process")
        }
        return (requester, pidfd)
    }

    /// Covers the approved operation for `process` until it exits; audited when it ends.
    private func coverProcess(_ stored: StoredApproval, _ requester: ProcessApprovals.Requester, _ pidfd: PidFD, approver: String, policyVersion: String) async {
        let process = requester.process
        // Strong: the watch holds this closure until the process exits, and the service lives
        // as long as the daemon (a weak reference left a side table LeakSanitizer reports at exit).
        let ended: @Sendable () -> Void = {
            Task { await self.processApprovalEnded(stored, process, policyVersion: policyVersion) }
        }
        guard processApprovals.cover(approvalID: stored.id, agentID: stored.agentID, capabilities: stored.capabilities, resource: stored.resource,
                                     requester: requester, pidfd: pidfd, approver: approver, onExit: ended) else {
            logger.warning("a process-lifetime approval cannot be watched; it covers only its one operation", metadata: ["approval.id": "\(stored.id)"])
            return
        }
    }

    /// The `approval.process_exit` record of a process-lifetime approval whose process exited.
    private func processApprovalEnded(_ stored: StoredApproval, _ process: BoundProcess, policyVersion: String) async {
        var r = AuditRecord(event: "approval.process_exit")
        r.agent = stored.agent
        r.agentID = stored.agentID
        r.uid = Int64(stored.uid)
        r.pid = Int64(process.pid)
        r.capability = stored.capabilities.joined(separator: " ")
        r.resource = stored.resource
        r.approvalID = stored.id
        r.decision = Decision.deny.rawValue
        r.outcome = "ended"
        r.reason = "the process it was approved for (pid \(process.pid)) exited"
        r.policyVersion = policyVersion
        do {
            try await store.audit.append(r)
        } catch {
            logger.error("cannot record the end of a process-lifetime approval", metadata: ["approval.id": "\(stored.id)", "error": "\(error)"])
        }
    }

    /// Long poll: the approval's state now, or when it changes, within `wait_ms` (at once when
    /// the call is cancelled: its connection closed, or the daemon stops gracefully).
    func await(_ c: Lanyard_V1_AwaitApprovalRequest, agent: Agent) async throws -> Lanyard_V1_AwaitApprovalResponse {
        let deadline = ContinuousClock.now + .milliseconds(Int(min(c.waitMs, Self.maxWaitMs)))
        while true {
            let version = events.version
            guard let stored = try store.approval(id: c.approvalID), stored.agentID == agent.id else {
                throw CallError(.notFound, "no approval '\(c.approvalID.prefix(64))' of agent '\(agent.name)'")
            }
            let state = stored.machine.state(atMicros: clock.nowMicros())
            if state != .pending || ContinuousClock.now >= deadline || Task.isCancelled {
                return .with {
                    $0.state = state.wire
                    $0.reason = stored.decidedReason.isEmpty ? (state == .expired ? "no approver decided in time" : "") : stored.decidedReason
                    $0.bindingCode = stored.bindingCode
                    $0.expiresAt = stored.machine.expiresMicros / 1_000_000
                }
            }
            await events.wait(since: version, until: deadline)
        }
    }

    /// Live pending approvals (or all), newest first, as many as fit in one reply; `omitted` counts the rest.
    func list(includeDecided: Bool, now: Int64) throws -> Lanyard_V1_ApprovalsListResponse {
        let rows = try store.approvals(includeDecided: includeDecided, nowMicros: now, limit: ReplyBudget.pageRows)
        let total = includeDecided ? UInt64(rows.count) : try store.countPendingApprovals(nowMicros: now)
        var budget = ReplyBudget()
        var r = Lanyard_V1_ApprovalsListResponse()
        r.approvals = budget.prefix(rows.map { Self.wire($0, now: now) })
        r.omitted = UInt32(clamping: max(total, UInt64(rows.count)) - UInt64(r.approvals.count))
        return r
    }

    /// Moves approvals past their expiry to EXPIRED (they already read as expired), one
    /// audit record each. Returns how many.
    func expireDue(policyVersion: String) async throws -> Int {
        let now = clock.nowMicros()
        let due = try store.approvalsToExpire(nowMicros: now)
        guard !due.isEmpty else { return 0 }
        var records: [AuditRecord] = []
        var saves: [Mutation] = []
        for a in due {
            var machine = a.machine
            machine.state = machine.state(atMicros: now)
            saves.append(store.saveApproval(a.id, machine, from: a.machine.state, decidedReason: a.decidedReason.isEmpty ? "no approver decided in time" : a.decidedReason))
            var r = AuditRecord(event: "approval.expire")
            r.agent = a.agent
            r.agentID = a.agentID
            r.uid = Int64(a.uid)
            r.capability = a.capabilities.joined(separator: " ")
            r.resource = a.resource
            r.approvalID = a.id
            r.decision = Decision.deny.rawValue
            r.outcome = "expired"
            r.reasonCode = ReasonCode.approvalExpired.rawValue
            r.reason = a.machine.state == .approved ? "approved but not used in time" : "no approver decided in time"
            r.policyVersion = policyVersion
            records.append(r)
        }
        let all = saves
        try await commit(records, with: { db in for save in all { try save(db) } })
        processApprovals.forget(due.map(\.id))
        return due.count
    }

    static func wire(_ a: StoredApproval, now: Int64) -> Lanyard_V1_Approval {
        .with {
            $0.approvalID = a.id
            $0.state = a.machine.state(atMicros: now).wire
            $0.agent = a.agent
            $0.agentID = a.agentID
            $0.uid = a.uid
            $0.pid = a.pid
            $0.exe = a.exe
            $0.capabilities = a.capabilities
            $0.resource = a.resource
            $0.args = a.args
            if !a.amount.isEmpty {
                let parts = a.amount.split(separator: " ", maxSplits: 1)
                $0.amount = .with {
                    $0.value = Int64(parts.first ?? "") ?? 0
                    $0.unit = parts.count > 1 ? String(parts[1]) : ""
                }
            }
            $0.risk = a.machine.risk.wire
            $0.reason = a.reason
            $0.bindingCode = a.bindingCode
            $0.createdAt = a.createdMicros / 1_000_000
            $0.expiresAt = a.machine.expiresMicros / 1_000_000
            $0.approvers = a.machine.approvers.map { "uid \($0)" }
            $0.unit = a.unit
        }
    }
}

extension ApprovalMachine.State {
    var wire: Lanyard_V1_ApprovalState {
        switch self {
        case .pending: .pending
        case .approved: .approved
        case .denied: .denied
        case .expired: .expired
        case .consumed: .consumed
        }
    }
}

/// A per-agent bound found full inside the transaction that would have passed it.
struct BoundReached: Error {
    var message: String
    init(_ message: String) { self.message = message }

    /// What `record` becomes when the bound refuses its change.
    func refusal(_ record: AuditRecord) -> AuditRecord {
        var r = record
        r.decision = Decision.deny.rawValue
        r.outcome = "resource_exhausted"
        r.reason = message
        r.leaseID = ""
        r.approvalID = ""
        return r
    }
}

/// A typed binding code that is not the request's (`ApprovalService.codeMismatch`).
struct BindingCodeMismatch: Error {
    var message: String
}

/// A live approval of the same operation was opened by a concurrent call: route again to find it.
struct ApprovalAlreadyOpen: Error {}

/// A refusal to use an approval, with the reason given to the agent.
struct ApprovalRefusal: Error, CustomStringConvertible {
    var description: String
    var code: ReasonCode
    init(_ d: String, code: ReasonCode = .approvalMismatch) {
        description = d
        self.code = code
    }
}
