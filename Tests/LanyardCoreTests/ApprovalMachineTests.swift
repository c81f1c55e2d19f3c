import LanyardCore
import Testing

private let t0: Int64 = 1_000_000_000
private let timeout: Int64 = 300_000_000

private func machine(_ risk: RiskLevel = .medium, quorum: Int = 1) -> ApprovalMachine {
    ApprovalMachine(risk: risk, digest: "D", requesterUID: 1001, quorum: quorum, expiresMicros: t0 + timeout, timeoutMicros: timeout)
}

struct ApprovalMachineTests {
    @Test func approveThenConsumeOnce() throws {
        var m = machine()
        #expect(try m.approve(by: 2000, atMicros: t0 + 1))
        #expect(m.state == .approved)
        #expect(m.expiresMicros == t0 + 1 + timeout)  // usable for a full timeout after approval
        try m.consume(digest: "D", atMicros: t0 + 2, risk: m.risk, quorum: m.quorum)
        #expect(m.state == .consumed)
        #expect(throws: ApprovalMachine.Refusal.notApproved(.consumed)) { try m.consume(digest: "D", atMicros: t0 + 3, risk: m.risk, quorum: m.quorum) }
    }

    @Test func highNeedsQuorumOfDistinctApprovers() throws {
        var m = machine(.high, quorum: 2)
        #expect(try m.approve(by: 2000, atMicros: t0) == false)
        #expect(m.state == .pending)
        #expect(throws: ApprovalMachine.Refusal.alreadyApprovedBy(2000)) { try m.approve(by: 2000, atMicros: t0) }
        #expect(throws: ApprovalMachine.Refusal.notApproved(.pending)) { try m.consume(digest: "D", atMicros: t0, risk: m.risk, quorum: m.quorum) }
        #expect(try m.approve(by: 2001, atMicros: t0))
        try m.consume(digest: "D", atMicros: t0, risk: m.risk, quorum: m.quorum)
    }

    @Test func theRequesterNeverApprovesOrDenies() {
        var m = machine()
        #expect(throws: ApprovalMachine.Refusal.ownRequest) { try m.approve(by: 1001, atMicros: t0) }
        #expect(throws: ApprovalMachine.Refusal.ownRequest) { try m.deny(by: 1001, atMicros: t0) }
        #expect(m.state == .pending && m.approvers.isEmpty)
    }

    /// Every transition out of each state, at a time before and after expiry.
    @Test(arguments: [
        (ApprovalMachine.State.pending, false, ApprovalMachine.State.pending),
        (.pending, true, .expired), (.approved, false, .approved), (.approved, true, .expired),
        (.denied, false, .denied), (.denied, true, .denied), (.consumed, true, .consumed), (.expired, false, .expired),
    ])
    func effectiveState(stored: ApprovalMachine.State, late: Bool, expected: ApprovalMachine.State) {
        var m = machine()
        m.state = stored
        #expect(m.state(atMicros: late ? t0 + timeout : t0 + timeout - 1) == expected)
    }

    @Test func expiredPendingCannotBeApprovedOrUsed() {
        var m = machine()
        #expect(throws: ApprovalMachine.Refusal.notPending(.expired)) { try m.approve(by: 2000, atMicros: t0 + timeout) }
        #expect(throws: ApprovalMachine.Refusal.notApproved(.expired)) { try m.consume(digest: "D", atMicros: t0 + timeout, risk: m.risk, quorum: m.quorum) }
    }

    @Test func approvedButUnusedExpiresToo() throws {
        var m = machine()
        _ = try m.approve(by: 2000, atMicros: t0)
        #expect(throws: ApprovalMachine.Refusal.notApproved(.expired)) { try m.consume(digest: "D", atMicros: t0 + timeout, risk: m.risk, quorum: m.quorum) }
    }

    @Test func deniedStaysDenied() throws {
        var m = machine()
        try m.deny(by: 2000, atMicros: t0)
        #expect(throws: ApprovalMachine.Refusal.notPending(.denied)) { try m.approve(by: 2001, atMicros: t0) }
        #expect(throws: ApprovalMachine.Refusal.notApproved(.denied)) { try m.consume(digest: "D", atMicros: t0, risk: m.risk, quorum: m.quorum) }
    }

    @Test func digestMismatchIsRefusedAndLeavesItApproved() throws {
        var m = machine()
        _ = try m.approve(by: 2000, atMicros: t0)
        #expect(throws: ApprovalMachine.Refusal.differentOperation) { try m.consume(digest: "E", atMicros: t0, risk: m.risk, quorum: m.quorum) }
        #expect(m.state == .approved)
        try m.consume(digest: "D", atMicros: t0, risk: m.risk, quorum: m.quorum)
    }

    /// Security I finding 6: the policy in force at use decides. An approval granted while
    /// MEDIUM, or by one approver, does not cover the operation once it is HIGH with quorum 2.
    @Test func aStricterPolicyAtUseRefusesAnOlderApproval() throws {
        var medium = ApprovalMachine(risk: .medium, digest: "D", requesterUID: 1, quorum: 1, expiresMicros: 1_000, timeoutMicros: 1_000)
        _ = try medium.approve(by: 2, atMicros: 0)
        var m = medium
        #expect(throws: ApprovalMachine.Refusal.riskRaised(from: .medium, to: .high)) { try m.consume(digest: "D", atMicros: 1, risk: .high, quorum: 1) }
        #expect(m.state == .approved)  // refused, not used up

        var high = ApprovalMachine(risk: .high, digest: "D", requesterUID: 1, quorum: 1, expiresMicros: 1_000, timeoutMicros: 1_000)
        _ = try high.approve(by: 2, atMicros: 0)
        m = high
        #expect(throws: ApprovalMachine.Refusal.quorumRaised(have: 1, need: 2)) { try m.consume(digest: "D", atMicros: 1, risk: .high, quorum: 2) }
        try m.consume(digest: "D", atMicros: 1, risk: .high, quorum: 1)  // control: the rules it was granted under
        m = medium
        try m.consume(digest: "D", atMicros: 1, risk: .low, quorum: 2)  // a lowered risk is still covered
        #expect(m.state == .consumed)
    }
}
