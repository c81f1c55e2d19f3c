@testable import LanyardServer
import Testing

/// The per-uid gate: a call waiting for its audit commit hands its place on, up to the
/// disk limit, and every place is given back.
@Suite struct UIDGateTests {
    /// Enters in a task; the stream yields the place once it is taken.
    static func enterLater(_ gate: UIDGate) -> AsyncStream<UIDGate.Place> {
        AsyncStream { c in Task { c.yield(await gate.enter(7)); c.finish() } }
    }

    /// Until `gate` has `queued` callers of uid 7 waiting (they enter in other tasks).
    static func untilQueued(_ gate: UIDGate, _ queued: Int) async {
        while gate.counts(7).queued < queued { await Task.yield() }
    }

    @Test func aCallWaitingOnTheDiskHandsItsPlaceOnUpToTheDiskLimit() async {
        let gate = UIDGate(limit: 1, diskLimit: 1)
        let a = await gate.enter(7)
        var b = Self.enterLater(gate).makeAsyncIterator()
        await Self.untilQueued(gate, 1)
        a.waitsOnDisk()
        let placeB = await b.next()!
        #expect(gate.counts(7) == (working: 1, onDisk: 1, queued: 0))

        var c = Self.enterLater(gate).makeAsyncIterator()
        await Self.untilQueued(gate, 1)
        placeB.waitsOnDisk()  // a already waits on the disk: b keeps its place
        #expect(gate.counts(7) == (working: 1, onDisk: 1, queued: 1))
        a.leave()
        #expect(gate.counts(7) == (working: 1, onDisk: 0, queued: 1))
        placeB.leave()
        let placeC = await c.next()!
        placeC.waitsOnDisk()
        placeC.waitsOnDisk()  // once only
        #expect(gate.counts(7) == (working: 0, onDisk: 1, queued: 0))
        placeC.leave()
        placeC.leave()
        #expect(gate.counts(7) == (working: 0, onDisk: 0, queued: 0))
    }
}
