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
        try m.consume(digest: "D", atMicros: t0 + 2)
        #expect(m.state == .consumed)
        #expect(throws: ApprovalMachine.Refusal.notApproved(.consumed)) { try m.consume(digest: "D", atMicros: t0 + 3) }
    }

    @Test func highNeedsQuorumOfDistinctApprovers() throws {
        var m = machine(.high, quorum: 2)
        #expect(try m.approve(by: 2000, atMicros: t0) == false)
        #expect(m.state == .pending)
        #expect(throws: ApprovalMachine.Refusal.alreadyApprovedBy(2000)) { try m.approve(by: 2000, atMicros: t0) }
        #expect(throws: ApprovalMachine.Refusal.notApproved(.pending)) { try m.consume(digest: "D", atMicros: t0) }
        #expect(try m.approve(by: 2001, atMicros: t0))
        try m.consume(digest: "D", atMicros: t0)
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
        #expect(throws: ApprovalMachine.Refusal.notApproved(.expired)) { try m.consume(digest: "D", atMicros: t0 + timeout) }
    }

    @Test func approvedButUnusedExpiresToo() throws {
        var m = machine()
        _ = try m.approve(by: 2000, atMicros: t0)
        #expect(throws: ApprovalMachine.Refusal.notApproved(.expired)) { try m.consume(digest: "D", atMicros: t0 + timeout) }
    }

    @Test func deniedStaysDenied() throws {
        var m = machine()
        try m.deny(by: 2000, atMicros: t0)
        #expect(throws: ApprovalMachine.Refusal.notPending(.denied)) { try m.approve(by: 2001, atMicros: t0) }
        #expect(throws: ApprovalMachine.Refusal.notApproved(.denied)) { try m.consume(digest: "D", atMicros: t0) }
    }

    @Test func digestMismatchIsRefusedAndLeavesItApproved() throws {
        var m = machine()
        _ = try m.approve(by: 2000, atMicros: t0)
        #expect(throws: ApprovalMachine.Refusal.differentOperation) { try m.consume(digest: "E", atMicros: t0) }
        #expect(m.state == .approved)
        try m.consume(digest: "D", atMicros: t0)
    }
}
