import Logging
import LanyardCore
@testable import LanyardServer
import LanyardWire
import NIOCore
import NIOEmbedded
import Testing

/// The dispatcher's bounds on the immediate path (Hello answered as it is read), found by
/// an attacker review: a peer that never reads must not make lanyardd hold its answers,
/// and one pipelining thousands of Hellos takes turns with the other connections of its loop.
struct CallDispatcherTests {
    typealias Dispatcher = CallDispatcher<Lanyard_V1_Request, Lanyard_V1_Response>

    static func hellos(_ n: Int) throws -> [SentFrame] {
        try (1...n).map { i in
            let body: [UInt8] = try Lanyard_V1_Request.with { $0.id = UInt64(i); $0.hello = .init() }.serializedBytes()
            return SentFrame(body: ByteBuffer(bytes: body), sender: 7)
        }
    }

    /// A channel whose dispatcher answers Hellos at once (and nothing else), started.
    static func channel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        let dispatcher = Dispatcher(loop: channel.embeddedEventLoop, maxInFlight: 4, executor: globalConcurrentExecutor, uid: 1,
                                    logger: Logger(label: "test"), immediate: { request, _ in
                                        Framing.frame(id: request.id, rest: [0x52, 0x00])
                                    }, call: { request, _ in .failure(id: request.id, .internal, "not under test") })
        try channel.pipeline.syncOperations.addHandler(dispatcher)
        dispatcher.start(Connection(peer: AttestedPeer(facts: PeerFacts(uid: 1, gid: 1, pid: 7)),
                                    credentials: PeerCredentials(uid: 1, gid: 1, pid: 7), sender: 7))
        channel.embeddedEventLoop.run()
        return channel
    }

    static func written(_ channel: EmbeddedChannel) throws -> [UInt64] {
        var ids: [UInt64] = []
        while var frame = try channel.readOutbound(as: ByteBuffer.self) {
            frame.moveReaderIndex(forwardBy: Framing.headerSize)
            ids.append(try Lanyard_V1_Response(serializedBytes: Array(frame.readableBytesView)).id)
        }
        return ids
    }

    @Test func noAnswerIsWrittenWhileThePeerDoesNotRead() throws {
        let channel = try Self.channel()
        channel.isWritable = false
        for frame in try Self.hellos(100) { channel.pipeline.fireChannelRead(frame) }
        channel.pipeline.fireChannelReadComplete()
        channel.embeddedEventLoop.run()
        #expect(try Self.written(channel).isEmpty, "answers written to a peer that reads none")

        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        channel.embeddedEventLoop.run()
        #expect(try Self.written(channel).count == 100)
        _ = try channel.finish()
    }

    @Test func aPipelineOfHellosTakesTurnsOnTheLoop() throws {
        let channel = try Self.channel()
        for frame in try Self.hellos(100) { channel.pipeline.fireChannelRead(frame) }
        channel.pipeline.fireChannelReadComplete()
        #expect(try Self.written(channel) == Array(1...16), "one turn answers 16, then yields")
        channel.embeddedEventLoop.run()
        #expect(try Self.written(channel) == Array(17...100))
        _ = try channel.finish()
    }
}
