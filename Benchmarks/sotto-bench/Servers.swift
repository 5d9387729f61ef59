import NIOCore
import NIOPosix

/// Socket buffers for the benchmark's own sockets, so that the tool's ends are not what drops
/// datagrams (the kernel caps the request at net.core.rmem_max / wmem_max).
let benchSocketBufferBytes: Int32 = 4 << 20

/// Echoes every datagram to its sender, unchanged; replies go out in one flush per read burst.
final class UDPEchoHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    private(set) var echoed: UInt64 = 0

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        echoed += 1
        context.write(wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: envelope.data)),
                      promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // A send error for one datagram (e.g. ENOBUFS) must not stop the echo.
        benchLog("udp-echo: \(error)")
    }
}

/// Counts what a client sends (see `SinkFraming`) and acknowledges each complete transfer.
final class TCPSinkHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var framing = SinkFraming()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        do {
            let completed = try buffer.withUnsafeReadableBytes { try framing.consume($0) }
            for length in completed {
                context.write(wrapOutboundOut(context.channel.allocator.buffer(bytes: SinkFraming.encodeLength(length))),
                              promise: nil)
            }
            if !completed.isEmpty { context.flush() }
        } catch {
            benchLog("\(error)")
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

enum BenchServers {
    static func datagramBootstrap(group: EventLoopGroup, maximumDatagram: Int, vectorCount: Int = 16) -> DatagramBootstrap {
        // No SO_REUSEADDR: on Linux it lets UDP sockets share a port, even an ephemeral one the
        // kernel picks, and then only one of them receives.
        DatagramBootstrap(group: group)
            .channelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(benchSocketBufferBytes))
            .channelOption(.socketOption(.so_sndbuf), value: SocketOptionValue(benchSocketBufferBytes))
            .channelOption(.datagramVectorReadMessageCount, value: vectorCount)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: maximumDatagram * vectorCount))
            .channelOption(.maxMessagesPerRead, value: 4)
    }

    static func startUDPEcho(group: EventLoopGroup, listen: Endpoint) async throws -> Channel {
        try await datagramBootstrap(group: group, maximumDatagram: 65_536)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(UDPEchoHandler())
                }
            }
            .bind(to: try socketAddress(listen)).get()
    }

    static func startTCPSink(group: EventLoopGroup, listen: Endpoint) async throws -> Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 256)
            .childChannelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(benchSocketBufferBytes))
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 4096, initial: 65_536, maximum: 1 << 20))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(TCPSinkHandler())
                }
            }
            .bind(to: try socketAddress(listen)).get()
    }
}

/// A NIO address for an IP-literal endpoint ("localhost" maps to 127.0.0.1).
func socketAddress(_ endpoint: Endpoint) throws -> SocketAddress {
    if case .domain(let name) = endpoint.host {
        guard name.lowercased() == "localhost" else {
            throw EndpointError.nameNotAllowed(role: "address", endpoint: endpoint, proxied: false)
        }
        return try SocketAddress(ipAddress: "127.0.0.1", port: Int(endpoint.port))
    }
    return try SocketAddress(ipAddress: endpoint.host.addressLiteral!, port: Int(endpoint.port))
}

/// The endpoint of an IP socket address (for the SOCKS UDP ASSOCIATE request).
func endpoint(of address: SocketAddress) -> Endpoint? {
    guard let ip = address.ipAddress, let port = address.port, let host = BenchHost.parse(ip) else { return nil }
    return Endpoint(host: host, port: UInt16(port))
}
