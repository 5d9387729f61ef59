import NIOCore
import NIOPosix
import SottoSOCKS

// The raw-tor-stream side of issue 3's benchmark: a sized echo server and a client that times
// request/response exchanges one at a time over ONE TCP stream (straight, or through a SOCKS5
// server such as tor's SocksPort to an onion service), and a UDP relay that tallies datagram sizes
// (to learn the sizes of the DTLS datagrams that the stream exchanges must match).

/// Server: every `requestLength` bytes received are one request, answered with `responseLength`
/// bytes. Requests that arrive together are answered together.
final class SizedEchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var requests: FixedLengthMessages
    private let response: ByteBuffer

    init(requestLength: Int, responseLength: Int) {
        requests = FixedLengthMessages(length: requestLength)
        response = ByteBuffer(bytes: ProbePayload.template(length: responseLength))
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        let answers = requests.consume(buffer.readableBytes)
        for _ in 0..<answers { context.write(wrapOutboundOut(response), promise: nil) }
        if answers > 0 { context.flush() }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

/// Client: one exchange at a time, timed from the request's write to the last byte of the
/// response. A byte beyond the response, or a byte while no exchange runs, is a protocol error
/// (the peer is no sized echo with these sizes).
final class StreamRoundTripHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var context: ChannelHandlerContext?
    private let request: ByteBuffer
    private var responses: FixedLengthMessages
    private var promise: EventLoopPromise<UInt64>?
    private var startedAt: UInt64 = 0
    private var timeoutTask: Scheduled<Void>?

    init(requestLength: Int, responseLength: Int) {
        request = ByteBuffer(bytes: ProbePayload.template(length: requestLength))
        responses = FixedLengthMessages(length: responseLength)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    /// One exchange; the future gives its round trip in nanoseconds. Call on the event loop.
    func exchange(on eventLoop: EventLoop, timeout: TimeAmount) -> EventLoopFuture<UInt64> {
        guard let context else {
            return eventLoop.makeFailedFuture(BenchError("the stream closed before the exchange"))
        }
        precondition(promise == nil, "one exchange at a time")
        let promise = context.eventLoop.makePromise(of: UInt64.self)
        self.promise = promise
        let milliseconds = timeout.nanoseconds / 1_000_000
        timeoutTask = context.eventLoop.scheduleTask(in: timeout) { [self] in
            fail(context: context, BenchError("no complete response within \(milliseconds) ms (\(responses.partial) of \(responses.length) bytes came)"))
        }
        startedAt = monotonicNanoseconds()
        context.writeAndFlush(wrapOutboundOut(request), promise: nil)
        return promise.futureResult
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let now = monotonicNanoseconds()
        let buffer = unwrapInboundIn(data)
        guard let promise else {
            return fail(context: context, BenchError("the server sent \(buffer.readableBytes) bytes while no exchange was running: is it a sized-echo with these sizes?"))
        }
        let done = responses.consume(buffer.readableBytes)
        if done == 0 { return }
        guard done == 1, responses.partial == 0 else {
            return fail(context: context, BenchError("the server sent more than \(responses.length) bytes for one request: is it a sized-echo with --response-bytes \(responses.length)?"))
        }
        self.promise = nil
        timeoutTask?.cancel()
        promise.succeed(now - startedAt)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(context: context, BenchError("the stream closed during an exchange"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        fail(context: context, BenchError("the stream failed: \(error)"))
    }

    private func fail(context: ChannelHandlerContext, _ error: Error) {
        timeoutTask?.cancel()
        let promise = self.promise
        self.promise = nil
        promise?.fail(error)
        context.close(promise: nil)
    }
}

// Confined to its channel's event loop, like every handler.
extension StreamRoundTripHandler: @unchecked Sendable {}

enum StreamRTT {
    static func startSizedEcho(group: EventLoopGroup, listen: Endpoint, requestLength: Int, responseLength: Int) async throws -> Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        SizedEchoHandler(requestLength: requestLength, responseLength: responseLength))
                }
            }
            .bind(to: try socketAddress(listen)).get()
    }

    /// Opens the stream, straight or through SOCKS5 CONNECT (the target unresolved: tor resolves
    /// an onion address itself).
    static func connect(on eventLoop: EventLoop, socks: Endpoint?, credentials: UsernamePasswordRequest?,
                        target: Endpoint, requestLength: Int, responseLength: Int) async throws -> (Channel, StreamRoundTripHandler) {
        let handler = StreamRoundTripHandler(requestLength: requestLength, responseLength: responseLength)
        if let socks {
            let (channel, _) = try await SOCKSConnector.connect(
                group: eventLoop, server: socks, credentials: credentials,
                command: .connect, destination: target, next: handler)
            return (channel, handler)
        }
        let channel = try await ClientBootstrap(group: eventLoop)
            .connectTimeout(.seconds(10))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) }
            }
            .connect(to: try socketAddress(target)).get()
        return (channel, handler)
    }
}

// MARK: - UDP size relay

/// Relays datagrams between clients and one target, each client through an upstream socket of
/// its own (so the target sees one session per client, as without the relay), and tallies the
/// datagram sizes each way. Loop-confined: the listening channel, every upstream channel and the
/// tallies live on one event loop.
final class UDPSizeRelay {
    private(set) var toTarget = DatagramSizeTally()
    private(set) var toClients = DatagramSizeTally()
    private(set) var lastDatagramAt: UInt64?
    private var upstreams: [SocketAddress: EventLoopFuture<Channel>] = [:]
    private let target: SocketAddress
    private let eventLoop: EventLoop
    private var listener: Channel?
    static let maximumClients = 64

    init(target: SocketAddress, eventLoop: EventLoop) {
        self.target = target
        self.eventLoop = eventLoop
    }

    func start(listen: SocketAddress) -> EventLoopFuture<Channel> {
        DatagramBootstrap(group: eventLoop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ListenerHandler(relay: self))
                }
            }
            .bind(to: listen)
            .map { channel in
                self.listener = channel
                return channel
            }
    }

    fileprivate func fromClient(_ envelope: AddressedEnvelope<ByteBuffer>) {
        let client = envelope.remoteAddress
        let upstream: EventLoopFuture<Channel>
        if let existing = upstreams[client] {
            upstream = existing
        } else {
            guard upstreams.count < Self.maximumClients else {
                benchLog("udp-relay: more than \(Self.maximumClients) clients; dropping a datagram from \(client)")
                return
            }
            upstream = DatagramBootstrap(group: eventLoop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(UpstreamHandler(relay: self, client: client))
                    }
                }
                .bind(host: "127.0.0.1", port: 0)
            upstreams[client] = upstream
        }
        toTarget.record(envelope.data.readableBytes)
        lastDatagramAt = monotonicNanoseconds()
        let target = self.target
        upstream.whenSuccess { channel in
            channel.writeAndFlush(AddressedEnvelope(remoteAddress: target, data: envelope.data), promise: nil)
        }
    }

    fileprivate func fromTarget(_ data: ByteBuffer, client: SocketAddress) {
        toClients.record(data.readableBytes)
        lastDatagramAt = monotonicNanoseconds()
        listener?.writeAndFlush(AddressedEnvelope(remoteAddress: client, data: data), promise: nil)
    }

    func closeAll() -> EventLoopFuture<Void> {
        let closing = upstreams.values.map { $0.flatMap { $0.close() }.recover { _ in } }
        upstreams = [:]
        let listener = self.listener
        self.listener = nil
        return EventLoopFuture.andAllComplete(closing + [listener?.close() ?? eventLoop.makeSucceededVoidFuture()],
                                              on: eventLoop)
    }

    private final class ListenerHandler: ChannelInboundHandler {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        let relay: UDPSizeRelay
        init(relay: UDPSizeRelay) { self.relay = relay }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { relay.fromClient(unwrapInboundIn(data)) }
        func errorCaught(context: ChannelHandlerContext, error: Error) { benchLog("udp-relay: \(error)") }
    }

    private final class UpstreamHandler: ChannelInboundHandler {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        let relay: UDPSizeRelay
        let client: SocketAddress
        init(relay: UDPSizeRelay, client: SocketAddress) {
            self.relay = relay
            self.client = client
        }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let envelope = unwrapInboundIn(data)
            // Only the target's answers go back; anything else reaching this socket is dropped.
            guard envelope.remoteAddress == relay.target else { return }
            relay.fromTarget(envelope.data, client: client)
        }
        func errorCaught(context: ChannelHandlerContext, error: Error) { benchLog("udp-relay: \(error)") }
    }
}

// Loop-confined (see the type's comment).
extension UDPSizeRelay: @unchecked Sendable {}
