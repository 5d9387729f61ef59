import NIOCore
import NIOPosix
import SottoSOCKS

/// Sends transfers in the sink's framing (`SinkFraming`) as fast as the channel drains and times
/// each from its first byte written to the sink's acknowledgement.
final class ThroughputHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    static let chunkLength = 64 * 1024

    private var context: ChannelHandlerContext?
    private let chunk: ByteBuffer
    private var remaining: UInt64 = 0
    private var expected: UInt64 = 0
    private var startedAt: UInt64 = 0
    private var acknowledgement: [UInt8] = []
    private var promise: EventLoopPromise<UInt64>?

    init() {
        chunk = ByteBuffer(bytes: ProbePayload.template(length: Self.chunkLength))
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Starts one transfer; the future gives its duration in nanoseconds. Call on the event loop.
    func transfer(bytes: UInt64, on eventLoop: EventLoop) -> EventLoopFuture<UInt64> {
        guard let context else {
            return eventLoop.makeFailedFuture(BenchError("the connection closed before the transfer"))
        }
        precondition(promise == nil, "one transfer at a time")
        let promise = context.eventLoop.makePromise(of: UInt64.self)
        self.promise = promise
        remaining = bytes
        expected = bytes
        acknowledgement = []
        startedAt = monotonicNanoseconds()
        context.write(wrapOutboundOut(context.channel.allocator.buffer(bytes: SinkFraming.encodeLength(bytes))), promise: nil)
        pump(context: context)
        return promise.futureResult
    }

    /// Writes while the channel is writable; resumes on `channelWritabilityChanged`.
    private func pump(context: ChannelHandlerContext) {
        while remaining > 0, context.channel.isWritable {
            let length = Int(min(remaining, UInt64(chunk.readableBytes)))
            context.write(wrapOutboundOut(chunk.getSlice(at: chunk.readerIndex, length: length)!), promise: nil)
            remaining -= UInt64(length)
        }
        context.flush()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if remaining > 0, context.channel.isWritable { pump(context: context) }
        context.fireChannelWritabilityChanged()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let now = monotonicNanoseconds()
        var buffer = unwrapInboundIn(data)
        guard let promise else {
            return fail(context: context, BenchError("the sink sent \(buffer.readableBytes) bytes while no transfer was running"))
        }
        acknowledgement += buffer.readBytes(length: buffer.readableBytes) ?? []
        guard acknowledgement.count >= 8 else { return }
        guard acknowledgement.count == 8, remaining == 0,
              let length = SinkFraming.decodeLength(acknowledgement), length == expected else {
            return fail(context: context, BenchError("the sink acknowledged \(acknowledgement) for a transfer of \(expected) bytes: is the target a sotto-bench tcp-sink?"))
        }
        self.promise = nil
        promise.succeed(now - startedAt)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(context: context, BenchError("the connection closed during the transfer (\(expected - remaining) of \(expected) bytes written)"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        fail(context: context, BenchError("the transfer failed: \(error)"))
    }

    private func fail(context: ChannelHandlerContext, _ error: Error) {
        let promise = self.promise
        self.promise = nil
        remaining = 0
        promise?.fail(error)
        context.close(promise: nil)
    }
}

enum TCPPath {
    case direct(target: Endpoint)
    case socks(server: Endpoint, credentials: UsernamePasswordRequest?, target: Endpoint)
}

enum TCPBench {
    /// Room for several chunks in flight so the socket never waits for the sender.
    static let waterMark = ChannelOptions.Types.WriteBufferWaterMark(low: 512 * 1024, high: 2 * 1024 * 1024)

    static func connect(on eventLoop: EventLoop, path: TCPPath) async throws -> (Channel, ThroughputHandler) {
        let handler = ThroughputHandler()
        switch path {
        case .direct(let target):
            let channel = try await ClientBootstrap(group: eventLoop)
                .connectTimeout(.seconds(10))
                .channelOption(.writeBufferWaterMark, value: waterMark)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                }
                .connect(to: try socketAddress(target)).get()
            return (channel, handler)
        case .socks(let server, let credentials, let target):
            let (channel, _) = try await SOCKSConnector.connect(
                group: eventLoop, server: server, credentials: credentials,
                command: .connect, destination: target, next: handler,
                configure: { $0.channelOption(.writeBufferWaterMark, value: waterMark) })
            return (channel, handler)
        }
    }
}

// Confined to its channel's event loop, like every handler.
extension ThroughputHandler: @unchecked Sendable {}
