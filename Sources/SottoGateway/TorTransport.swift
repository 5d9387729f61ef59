import NIOCore
import NIOPosix
import NIOSOCKS
import SottoConfig
import SottoSOCKS

/// Why a stream through tor did not open. Every case fails closed: nothing is sent another way.
enum TorStreamError: Error, CustomStringConvertible {
    /// tor is starting, bootstrapping or gone.
    case notReady(String)
    /// tor's SocksPort refused (with tor's reply code, ExtendedErrors meanings included).
    case socks(SOCKS5ClientError)
    case timedOut(seconds: Int)

    var description: String {
        switch self {
        case .notReady(let state): return "tor is not ready (\(state)); refusing rather than sending another way"
        case .socks(let error): return "tor \(error)"
        case .timedOut(let seconds): return "tor's SocksPort did not complete the request within \(seconds) s"
        }
    }

    /// An onion service that restarted (new introduction points) can stay unreachable while tor
    /// holds its old descriptor: a timeout or an onion-service error is worth a fresh start.
    var suggestsStaleOnionState: Bool {
        switch self {
        case .timedOut: return true
        case .socks(.requestFailed(_, _, let reply)): return (0xF0...0xF7).contains(reply.value)
        case .notReady, .socks: return false
        }
    }

    /// The reply a SOCKS client of the gateway gets for this failure.
    var socksReply: SOCKSServerReply {
        switch self {
        case .notReady: return .networkUnreachable
        case .timedOut: return .ttlExpired
        case .socks(.requestFailed(_, _, let reply)) where (1...8).contains(reply.value): return reply
        case .socks(.requestFailed): return .hostUnreachable  // tor's onion service codes 0xF0-0xF7
        case .socks: return .serverFailure
        }
    }
}

/// Streams through the gateway's tor: a connection to tor's SocksPort, a SOCKS5 CONNECT with the
/// profile's isolation credentials, then the caller's handlers on the same channel.
enum TorStreams {
    /// How long tor may take to build circuits and reach an onion service (its own SocksTimeout is 2 min).
    static let negotiationTimeout = TimeAmount.seconds(90)

    /// Opens a stream to `host:port` (a name is resolved by tor, never here) and runs `ready` on the
    /// channel before the first byte of data flows.
    static func open(host: String, port: Int, profile: Profile, runtime: TorRuntime, on loop: EventLoop,
                     timeout: TimeAmount = negotiationTimeout,
                     ready: @escaping (Channel) -> EventLoopFuture<Void>) -> EventLoopFuture<Channel> {
        guard runtime.phase == .ready, let socks = runtime.socksAddress else {
            return loop.makeFailedFuture(TorStreamError.notReady(runtime.stateDescription))
        }
        let credentials = runtime.socksCredentials(for: profile)
        let negotiation: SOCKS5ClientNegotiation
        do {
            negotiation = try SOCKS5ClientNegotiation(
                command: .connect, destination: .domain(host, port: port),
                authentication: .usernamePassword(UsernamePasswordRequest(username: credentials.username,
                                                                         password: credentials.password)))
        } catch {
            return loop.makeFailedFuture(error)
        }
        let handler = SOCKS5ConnectHandler(negotiation: negotiation, timeout: timeout)
        var bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(.seconds(10))
            .channelInitializer { $0.pipeline.addHandler(handler) }
        if socks.protocol != .unix {
            bootstrap = bootstrap.channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
        }
        return bootstrap.connect(to: socks).flatMap { channel in
            handler.established.flatMap {
                ready(channel)
            }.flatMap {
                channel.pipeline.removeHandler(handler)
            }.map { channel }.flatMapErrorThrowing { error in
                channel.close(promise: nil)
                throw error
            }
        }
    }
}

/// A tor profile's tunnels: through tor's SocksPort to the peer's onion address (or, for a
/// host:port peer, out of a tor exit). Never anything else.
struct TorTransport: TunnelTransport {
    let runtime: TorRuntime
    let profile: Profile
    var name: String { "tor" }

    func connect(to peer: Peer, on loop: EventLoop,
                 initializer: @escaping @Sendable (Channel) -> EventLoopFuture<Void>) -> EventLoopFuture<Channel> {
        let host: String
        switch peer.address {
        case .onion(let onion, _): host = onion
        case .hostPort(let hostPort): host = hostPort.host
        case .i2p:
            return loop.makeFailedFuture(TransportError.addressNotReachable(
                peer: peer.name, address: "\(peer.address)", transport: name))
        }
        let runtime = self.runtime
        let isOnion = host.hasSuffix(".onion")
        // A tunnel attempt is retried with backoff, so it need not wait as long as tor would.
        return TorStreams.open(host: host, port: peer.remotePort, profile: profile, runtime: runtime, on: loop,
                               timeout: Self.tunnelTimeout, ready: initializer)
            .flatMapErrorThrowing { error in
                if isOnion, let error = error as? TorStreamError, error.suggestsStaleOnionState {
                    runtime.forgetOnionState()
                }
                throw error
            }
    }

    static let tunnelTimeout = TimeAmount.seconds(30)
}

/// Runs a sans-I/O `SOCKS5ClientNegotiation` on a fresh connection; `established` succeeds when
/// the server has accepted the CONNECT. Removing the handler then hands on any bytes that came
/// after the reply.
final class SOCKS5ConnectHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var negotiation: SOCKS5ClientNegotiation
    private let timeout: TimeAmount
    private var buffered: ByteBuffer?
    private var promise: EventLoopPromise<Void>?
    private var timer: Scheduled<Void>?
    private var done = false
    private(set) var established: EventLoopFuture<Void>!

    init(negotiation: SOCKS5ClientNegotiation, timeout: TimeAmount) {
        self.negotiation = negotiation
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let promise = context.eventLoop.makePromise(of: Void.self)
        self.promise = promise
        established = promise.futureResult
        if context.channel.isActive { start(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context: context)
        context.fireChannelActive()
    }

    private func start(context: ChannelHandlerContext) {
        guard timer == nil, !done else { return }
        let seconds = Int(timeout.nanoseconds / 1_000_000_000)
        timer = context.eventLoop.scheduleTask(in: timeout) { [weak self] in
            self?.finish(context: context, .failure(TorStreamError.timedOut(seconds: seconds)))
        }
        send(negotiation.greeting, context: context)
    }

    private func send(_ bytes: [UInt8], context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: bytes)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if done {
            // Data after the reply, before the caller removed this handler: keep it for them.
            if buffered == nil { buffered = bytes } else { buffered!.writeBuffer(&bytes) }
            return
        }
        if buffered == nil { buffered = bytes } else { buffered!.writeBuffer(&bytes) }
        advance(context: context, negotiation.receive(&buffered!))
    }

    private func advance(context: ChannelHandlerContext, _ action: SOCKS5ClientNegotiation.Action) {
        switch action {
        case .waitForMoreData:
            break
        case .send(let bytes):
            send(bytes, context: context)
            // The answer may already be buffered behind what was just read.
            if let remaining = buffered, remaining.readableBytes > 0 {
                advance(context: context, negotiation.receive(&buffered!))
            }
        case .established:
            finish(context: context, .success(()))
        case .failed(let error):
            finish(context: context, .failure(TorStreamError.socks(error)))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !done {
            let action = negotiation.receiveEndOfInput(unparsedBytes: buffered?.readableBytes ?? 0)
            if case .failed(let error) = action {
                finish(context: context, .failure(TorStreamError.socks(error)))
            } else {
                finish(context: context, .failure(TorStreamError.socks(.closedEarly(during: .reply, unparsedBytes: 0))))
            }
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        finish(context: context, .failure(error))
        context.close(promise: nil)
    }

    private func finish(context: ChannelHandlerContext, _ result: Result<Void, Error>) {
        guard !done else { return }
        done = true
        timer?.cancel()
        timer = nil
        if case .failure = result { context.close(promise: nil) }
        promise?.completeWith(result)
    }

    func removeHandler(context: ChannelHandlerContext, removalToken: ChannelHandlerContext.RemovalToken) {
        if let rest = buffered, rest.readableBytes > 0 {
            buffered = nil
            context.fireChannelRead(wrapInboundOut(rest))
            context.fireChannelReadComplete()
        }
        context.leavePipeline(removalToken: removalToken)
    }
}
