import NIOCore
import NIOPosix

/// Drives `SOCKS5ClientHandshake` on a connected TCP channel. When the server's reply arrives it
/// puts `next` in its place (the application handler), hands it any bytes that followed the reply,
/// and reports the bound address.
final class SOCKS5HandshakeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var machine: SOCKS5ClientHandshake
    private let next: ChannelHandler
    private let promise: EventLoopPromise<Endpoint>
    private let timeout: TimeAmount
    private var timeoutTask: Scheduled<Void>?
    private var finished = false

    init(machine: SOCKS5ClientHandshake, next: ChannelHandler, promise: EventLoopPromise<Endpoint>,
         timeout: TimeAmount) {
        self.machine = machine
        self.next = next
        self.promise = promise
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        // Added to a channel that is already connected.
        let seconds = timeout.nanoseconds / 1_000_000_000
        let description = "\(machine.command) to \(machine.destination)"
        timeoutTask = context.eventLoop.scheduleTask(in: timeout) { [self] in
            fail(context: context, BenchError("SOCKS server did not complete the \(description) handshake within \(seconds) s"))
        }
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: machine.start())), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !finished else { return context.fireChannelRead(data) }
        let buffer = unwrapInboundIn(data)
        do {
            switch try machine.receive(Array(buffer.readableBytesView)) {
            case .needMore:
                break
            case .send(let bytes):
                context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: bytes)), promise: nil)
            case .established(let bound, let leftover):
                finished = true
                timeoutTask?.cancel()
                try context.pipeline.syncOperations.addHandler(next, position: .after(self))
                if !leftover.isEmpty {
                    context.fireChannelRead(wrapInboundOut(context.channel.allocator.buffer(bytes: leftover)))
                }
                context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
                promise.succeed(bound)
            }
        } catch {
            fail(context: context, error)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !finished { fail(context: context, SOCKS5Error.closedDuringHandshake) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if finished { return context.fireErrorCaught(error) }
        fail(context: context, error)
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
    static func connect(
        group: EventLoopGroup,
        server: Endpoint,
        credentials: SOCKS5.Credentials?,
        command: SOCKS5.Command,
        destination: Endpoint,
        next: ChannelHandler,
        configure: (ClientBootstrap) -> ClientBootstrap = { $0 }
    ) async throws -> (Channel, Endpoint) {
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
        let machine = SOCKS5ClientHandshake(credentials: credentials, command: command, destination: destination)
        let promise = channel.eventLoop.makePromise(of: Endpoint.self)
        let handler = HandOver(
            SOCKS5HandshakeHandler(machine: machine, next: next, promise: promise, timeout: handshakeTimeout))
        do {
            try await channel.eventLoop.submit {
                try channel.pipeline.syncOperations.addHandler(handler.value)
            }.get()
            let bound = try await promise.futureResult.get()
            return (channel, bound)
        } catch {
            channel.close(promise: nil)
            throw error
        }
    }
}

/// Carries a handler built off the loop onto the loop, where it alone is used from then on.
private struct HandOver<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
