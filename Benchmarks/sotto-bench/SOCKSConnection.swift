import NIOCore
import NIOPosix
import NIOSOCKS
import SottoSOCKS

/// Drives SottoSOCKS's `SOCKS5ClientNegotiation` (RFC 1928 sections 3 to 6, RFC 1929) on a
/// connected TCP channel. When the server's reply arrives it puts `next` in its place (the
/// application handler), hands it any bytes that followed the reply, and reports the bound address.
final class SOCKS5HandshakeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var negotiation: SOCKS5ClientNegotiation
    /// What the server sent that the negotiation has not consumed yet.
    private var received: ByteBuffer?
    private let next: ChannelHandler
    private let promise: EventLoopPromise<SOCKSAddress>
    private let timeout: TimeAmount
    /// "CONNECT to exit:9", for the timeout message.
    private let what: String
    private var timeoutTask: Scheduled<Void>?
    private var finished = false

    init(negotiation: SOCKS5ClientNegotiation, what: String, next: ChannelHandler,
         promise: EventLoopPromise<SOCKSAddress>, timeout: TimeAmount) {
        self.negotiation = negotiation
        self.what = what
        self.next = next
        self.promise = promise
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        // Added to a channel that is already connected.
        let seconds = timeout.nanoseconds / 1_000_000_000
        let what = self.what
        timeoutTask = context.eventLoop.scheduleTask(in: timeout) { [self] in
            fail(context: context, BenchError("SOCKS server did not complete the \(what) handshake within \(seconds) s"))
        }
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: negotiation.greeting)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !finished else { return context.fireChannelRead(data) }
        var incoming = unwrapInboundIn(data)
        if received == nil {
            received = incoming
        } else {
            received!.writeBuffer(&incoming)
        }
        act(on: negotiation.receive(&received!), context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !finished {
            act(on: negotiation.receiveEndOfInput(unparsedBytes: received?.readableBytes ?? 0), context: context)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if finished { return context.fireErrorCaught(error) }
        fail(context: context, error)
    }

    private func act(on action: SOCKS5ClientNegotiation.Action, context: ChannelHandlerContext) {
        switch action {
        case .waitForMoreData:
            break
        case .send(let bytes):
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: bytes)), promise: nil)
        case .established(let bound):
            finished = true
            timeoutTask?.cancel()
            do {
                try context.pipeline.syncOperations.addHandler(next, position: .after(self))
            } catch {
                promise.fail(error)
                context.close(promise: nil)
                return
            }
            // Bytes after the reply are the application's (RFC 1928 section 6: for CONNECT the
            // stream carries data from then on).
            let leftover = received
            received = nil
            if let leftover, leftover.readableBytes > 0 {
                context.fireChannelRead(wrapInboundOut(leftover))
            }
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            promise.succeed(bound)
        case .failed(let error):
            fail(context: context, error)
        }
    }

    private func fail(context: ChannelHandlerContext, _ error: Error) {
        guard !finished else { return }
        finished = true
        timeoutTask?.cancel()
        promise.fail(error)
        context.close(promise: nil)
    }
}

/// Watches the TCP control connection of a UDP association: RFC 1928 section 7 ends the
/// association when it closes, so a flow whose control connection closed is no longer measured.
final class ControlConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private(set) var closedByServer = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // The server has nothing to say on this connection after its reply; ignore anything.
    }

    func channelInactive(context: ChannelHandlerContext) {
        closedByServer = true
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

enum SOCKSConnector {
    static let handshakeTimeout = TimeAmount.seconds(15)

    /// Connects to `server`, negotiates `command` for `destination`, and leaves `next` in the
    /// pipeline. Returns the channel and the server's BND.ADDR/BND.PORT.
    /// With credentials the greeting offers both no authentication and username/password
    /// (RFC 1929), and the server chooses.
    static func connect(
        group: EventLoopGroup,
        server: Endpoint,
        credentials: UsernamePasswordRequest?,
        command: SOCKSCommand,
        destination: Endpoint,
        next: ChannelHandler,
        configure: (ClientBootstrap) -> ClientBootstrap = { $0 }
    ) async throws -> (Channel, Endpoint) {
        let negotiation = try SOCKS5ClientNegotiation(
            command: command, destination: try destination.socksAddress(),
            authentication: credentials.map { .noneOrUsernamePassword($0) } ?? .none)
        let address = try socketAddress(server)
        let bootstrap = configure(ClientBootstrap(group: group)
            .connectTimeout(.seconds(10))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1))
        let channel: Channel
        do {
            channel = try await bootstrap.connect(to: address).get()
        } catch {
            throw BenchError("cannot connect to the SOCKS server at \(server): \(error)")
        }
        let commandName = command == .udpAssociate ? "UDP ASSOCIATE" : "CONNECT"
        let promise = channel.eventLoop.makePromise(of: SOCKSAddress.self)
        let handler = HandOver(SOCKS5HandshakeHandler(
            negotiation: negotiation, what: "\(commandName) to \(destination)", next: next,
            promise: promise, timeout: handshakeTimeout))
        do {
            try await channel.eventLoop.submit {
                try channel.pipeline.syncOperations.addHandler(handler.value)
            }.get()
            let bound = try await promise.futureResult.get()
            guard let endpoint = Endpoint(bound) else {
                throw BenchError("the SOCKS server bound \(bound), which is no IP address or host name")
            }
            return (channel, endpoint)
        } catch {
            channel.close(promise: nil)
            throw error
        }
    }
}

extension Endpoint {
    /// The endpoint as a SOCKS5 address (RFC 1928 section 5): an IP literal as ATYP 1 or 4, a
    /// name as ATYP 3, unresolved, for the proxy to resolve (a Sotto peer name such as `exit`).
    func socksAddress() throws -> SOCKSAddress {
        switch host {
        case .ipv4(let bytes), .ipv6(let bytes):
            return .address(try SocketAddress(packedIPAddress: ByteBuffer(bytes: bytes), port: Int(port)))
        case .domain(let name):
            return .domain(name, port: Int(port))
        }
    }

    /// The endpoint of an address a SOCKS server sent (BND.ADDR/BND.PORT); nil for a Unix socket
    /// address, which SOCKS5 cannot carry.
    init?(_ address: SOCKSAddress) {
        switch address {
        case .address(let socketAddress):
            guard let endpoint = endpoint(of: socketAddress) else { return nil }
            self = endpoint
        case .domain(let name, let port):
            guard let port = UInt16(exactly: port) else { return nil }
            self.init(host: .domain(name), port: port)
        }
    }
}

/// Carries a handler built off the loop onto the loop, where it alone is used from then on.
private struct HandOver<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
