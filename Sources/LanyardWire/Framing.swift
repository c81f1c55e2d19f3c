import NIOCore
import SwiftProtobuf

/// Lanyard's framing (DESIGN.md section 4): a 4-byte big-endian length `N`, then `N`
/// bytes of one protobuf message, `1 ≤ N ≤ maxFrame`.
public enum Framing {
    public static let defaultMaxFrame = 64 * 1024
    public static let headerSize = 4

    /// Appends one framed message to `buffer`.
    public static func write(_ message: some SwiftProtobuf.Message, into buffer: inout ByteBuffer) throws {
        let body: [UInt8] = try message.serializedBytes()
        buffer.reserveCapacity(minimumWritableBytes: headerSize + body.count)
        buffer.writeInteger(UInt32(body.count))
        buffer.writeBytes(body)
    }

    /// One framed envelope from its `id` (field 1) and the encoding of its other fields,
    /// made once and reused: protobuf reads concatenated fields as one message.
    public static func frame(id: UInt64, rest: [UInt8], allocator: ByteBufferAllocator = .init()) -> ByteBuffer {
        var idField: [UInt8] = []
        if id != 0 {
            idField.append(0x08)  // field 1, varint
            var v = id
            while v >= 0x80 {
                idField.append(UInt8(truncatingIfNeeded: v) | 0x80)
                v >>= 7
            }
            idField.append(UInt8(v))
        }
        var buffer = allocator.buffer(capacity: headerSize + idField.count + rest.count)
        buffer.writeInteger(UInt32(idField.count + rest.count))
        buffer.writeBytes(idField)
        buffer.writeBytes(rest)
        return buffer
    }

    public static func frame(_ message: some SwiftProtobuf.Message, allocator: ByteBufferAllocator = .init()) throws -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 64)
        try write(message, into: &buffer)
        return buffer
    }
}

/// Why a frame was refused. The connection is closed after any of these.
public enum FrameError: Error, Equatable, CustomStringConvertible {
    case zeroLength
    case tooLarge(length: Int, max: Int)
    case truncated(have: Int, want: Int)

    public var description: String {
        switch self {
        case .zeroLength: "frame length 0 is not allowed"
        case .tooLarge(let n, let max): "frame of \(n) bytes exceeds the \(max)-byte limit"
        case .truncated(let have, let want): "connection closed inside a frame (\(have) of \(want) bytes)"
        }
    }
}

/// Signals for read deadlines: a frame has begun arriving but is not complete, or the
/// frame that had begun is now complete. A frame that arrives whole signals nothing.
public enum FrameProgress: Sendable, Equatable {
    case started
    case completed
}

/// Splits a byte stream into frame bodies. The length is checked against `maxFrame`
/// as soon as the 4 header bytes are in, before waiting for (or allocating) the body.
public struct FrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = ByteBuffer

    public let maxFrame: Int
    private var inFrame = false

    public init(maxFrame: Int = Framing.defaultMaxFrame) {
        precondition(maxFrame >= 1 && maxFrame <= Int(UInt32.max))
        self.maxFrame = maxFrame
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else {
            return started(context, buffer)
        }
        guard length > 0 else { throw FrameError.zeroLength }
        guard Int(length) <= maxFrame else { throw FrameError.tooLarge(length: Int(length), max: maxFrame) }
        guard buffer.readableBytes >= Framing.headerSize + Int(length) else {
            return started(context, buffer)
        }
        buffer.moveReaderIndex(forwardBy: Framing.headerSize)
        let body = buffer.readSlice(length: Int(length))!
        if inFrame {
            inFrame = false
            context.fireUserInboundEventTriggered(FrameProgress.completed)
        }
        context.fireChannelRead(Self.wrapInboundOut(body))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        if buffer.readableBytes > 0 {
            let want = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self).map { Int($0) + Framing.headerSize } ?? Framing.headerSize
            throw FrameError.truncated(have: buffer.readableBytes, want: want)
        }
        return .needMoreData
    }

    private mutating func started(_ context: ChannelHandlerContext, _ buffer: ByteBuffer) -> DecodingState {
        if buffer.readableBytes > 0, !inFrame {
            inFrame = true
            context.fireUserInboundEventTriggered(FrameProgress.started)
        }
        return .needMoreData
    }
}
