import LanyardWire
import Logging
@testable import LanyardServer
import NIOCore
import NIOEmbedded
import Testing

/// The reply deadline (issue 18's review): a peer that stops reading once its unread replies
/// pass the bound is cut after `--reply-deadline-ms`; one that reads again in time is not.
/// On the embedded loop's clock, moved by the test.
struct DeadlineHandlerTests {
    /// Whether the daemon holds the reads, as the test says.
    final class Held: @unchecked Sendable { var value = false }

    static func channel(replyDeadline: TimeAmount = .seconds(30), held: Held = Held()) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(DeadlineHandler(frameDeadline: .seconds(5), replyDeadline: replyDeadline,
                                                                       logger: Logger(label: "test"), readsHeld: { held.value }, timeoutFrame: { nil }))
        try channel.connect(to: SocketAddress(unixDomainSocketPath: "/peer")).wait()
        return channel
    }

    static func unwritable(_ channel: EmbeddedChannel, _ unwritable: Bool) {
        channel.isWritable = !unwritable
        channel.pipeline.fireChannelWritabilityChanged()
    }

    @Test func aPeerThatLeavesItsRepliesUnreadIsCutAtTheDeadline() throws {
        let channel = try Self.channel(replyDeadline: .seconds(30))
        Self.unwritable(channel, true)
        channel.embeddedEventLoop.advanceTime(by: .seconds(29))
        #expect(channel.isActive, "cut before the deadline")
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(!channel.isActive, "a peer reading nothing past the deadline keeps its connection")
    }

    @Test func aPeerThatReadsAgainInTimeKeepsItsConnection() throws {
        let channel = try Self.channel(replyDeadline: .seconds(30))
        Self.unwritable(channel, true)
        channel.embeddedEventLoop.advanceTime(by: .seconds(20))
        Self.unwritable(channel, false)
        // Unwritable again: the deadline counts from now, not from the first time.
        channel.embeddedEventLoop.advanceTime(by: .seconds(5))
        Self.unwritable(channel, true)
        channel.embeddedEventLoop.advanceTime(by: .seconds(29))
        #expect(channel.isActive, "a peer that read in time was cut")
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(!channel.isActive)
    }

    /// The frame deadline measures the peer: while the daemon holds the reads (its calls
    /// running, or its replies unread), the rest of a frame waiting in the socket is not late.
    @Test func aFrameTheDaemonLeavesUnreadIsNotThePeersDelay() throws {
        let held = Held()
        let channel = try Self.channel(held: held)
        held.value = true
        channel.pipeline.fireUserInboundEventTriggered(FrameProgress.started)
        channel.embeddedEventLoop.advanceTime(by: .seconds(12))
        #expect(channel.isActive, "cut for the frame the daemon did not read")
        held.value = false
        channel.embeddedEventLoop.advanceTime(by: .seconds(5))
        #expect(!channel.isActive, "a frame left incomplete while the daemon reads must still be cut")
    }

    @Test func aFrameLeftIncompleteIsCutAtTheDeadline() throws {
        let channel = try Self.channel()
        channel.pipeline.fireUserInboundEventTriggered(FrameProgress.started)
        channel.embeddedEventLoop.advanceTime(by: .seconds(4))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(!channel.isActive)
    }
}
