import LanyardWire
import NIOCore
import NIOEmbedded
import NIOTestUtils
import Testing

private func framed(_ body: [UInt8]) -> ByteBuffer {
    var b = ByteBuffer()
    b.writeInteger(UInt32(body.count))
    b.writeBytes(body)
    return b
}

/// Records FrameProgress events so the deadline signals can be asserted.
private final class EventRecorder: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    var events: [FrameProgress] = []
    var frames: [ByteBuffer] = []
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? FrameProgress { events.append(e) }
    }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { frames.append(unwrapInboundIn(data)) }
}

/// Every EmbeddedChannel is finished: an unfinished one keeps its channel–pipeline cycle
/// (a leak to LeakSanitizer).
struct FramingTests {
    /// Byte-at-a-time, many-per-buffer and everything in between (NIO's verifier).
    @Test func decoderHandlesAnySplit() throws {
        let bodies: [[UInt8]] = [[1], Array("hello".utf8), [UInt8](repeating: 7, count: 1000), [0, 0, 0]]
        let pairs = bodies.map { (framed($0), [ByteBuffer(bytes: $0)]) }
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) { FrameDecoder(maxFrame: 4096) }
    }

    @Test func manyFramesInOneRead() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder()))
        var all = ByteBuffer()
        for i in 0..<100 { var f = framed([UInt8(i), 1, 2]); all.writeBuffer(&f) }
        try channel.writeInbound(all)
        for i in 0..<100 {
            let frame = try #require(try channel.readInbound(as: ByteBuffer.self))
            #expect(Array(frame.readableBytesView) == [UInt8(i), 1, 2])
        }
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
        #expect(try channel.finish().isClean)
    }

    @Test func byteAtATime() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder()))
        defer { _ = try? channel.finish() }
        for byte in framed(Array("abc".utf8)).readableBytesView {
            #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
        }
        let frame = try #require(try channel.readInbound(as: ByteBuffer.self))
        #expect(String(buffer: frame) == "abc")
    }

    @Test func zeroLengthIsRefused() {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder()))
        defer { _ = try? channel.finish() }
        #expect(throws: FrameError.zeroLength) { try channel.writeInbound(ByteBuffer(bytes: [0, 0, 0, 0])) }
    }

    /// The length is refused as soon as the 4 header bytes are in: no body needed.
    @Test func oversizedIsRefusedBeforeTheBody() {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(maxFrame: 64 * 1024)))
        defer { _ = try? channel.finish() }
        #expect(throws: FrameError.tooLarge(length: 64 * 1024 + 1, max: 64 * 1024)) {
            try channel.writeInbound(ByteBuffer(bytes: [0x00, 0x01, 0x00, 0x01]))
        }
        let huge = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder()))
        defer { _ = try? huge.finish() }
        #expect(throws: FrameError.tooLarge(length: Int(UInt32.max), max: 64 * 1024)) {
            try huge.writeInbound(ByteBuffer(bytes: [0xFF, 0xFF, 0xFF, 0xFF]))
        }
    }

    @Test func exactlyMaxIsAccepted() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(maxFrame: 16)))
        defer { _ = try? channel.finish() }
        try channel.writeInbound(framed([UInt8](repeating: 1, count: 16)))
        #expect(try channel.readInbound(as: ByteBuffer.self)?.readableBytes == 16)
    }

    @Test func truncatedBodyAtEOFIsAnError() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder()))
        try channel.writeInbound(ByteBuffer(bytes: [0, 0, 0, 10, 1, 2, 3]))
        #expect(throws: FrameError.truncated(have: 7, want: 14)) { try channel.finish() }
    }

    @Test func garbageBodyDoesNotDecodeAndItsIDIsRecovered() throws {
        var req = Lanyard_V1_Request()
        req.id = 300
        req.hello = .init()
        var bytes: [UInt8] = try req.serializedBytes()
        #expect(Lanyard_V1_Request.peekID(bytes) == 300)
        bytes += [0xFF, 0xFF, 0xFF]  // an invalid trailing tag
        #expect(throws: (any Error).self) { try Lanyard_V1_Request(serializedBytes: bytes) }
        #expect(Lanyard_V1_Request.peekID(bytes) == 300)
        #expect(Lanyard_V1_Request.peekID([0xFF, 0x01]) == nil)
        #expect(Lanyard_V1_Request.peekID([]) == nil)
    }

    /// Deadline signals: started when a frame is partial, completed when it finishes;
    /// a frame that arrives whole signals nothing.
    @Test func progressEventsDriveTheDeadline() throws {
        let recorder = EventRecorder()
        let channel = EmbeddedChannel(handlers: [ByteToMessageHandler(FrameDecoder()), recorder])
        defer { _ = try? channel.finish() }
        try channel.writeInbound(framed([1, 2]))
        #expect(recorder.events.isEmpty)
        try channel.writeInbound(ByteBuffer(bytes: [0, 0]))
        #expect(recorder.events == [.started])
        try channel.writeInbound(ByteBuffer(bytes: [0, 1]))
        #expect(recorder.events == [.started])
        try channel.writeInbound(ByteBuffer(bytes: [9, 0, 0]))  // completes, and the next one begins
        #expect(recorder.events == [.started, .completed, .started])
        #expect(recorder.frames.count == 2)
    }

    @Test func encoderRoundTrips() throws {
        var resp = Lanyard_V1_Response()
        resp.id = 42
        resp.status = .init(.permissionDenied, "no")
        let buffer = try Framing.frame(resp)
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder()))
        defer { _ = try? channel.finish() }
        try channel.writeInbound(buffer)
        let body = try #require(try channel.readInbound(as: ByteBuffer.self))
        let decoded = try Lanyard_V1_Response(serializedBytes: Array(body.readableBytesView))
        #expect(decoded == resp)
    }
}
