import Logging
import NIOCore
import NIOPosix
import NIOSOCKS
import SottoConfig
import SottoSOCKS
import SottoTunnel

/// One SOCKS5 client connection after NIOSOCKS's handshake handler: method selection, RFC 1929
/// authentication (the username names the profile), then CONNECT or UDP ASSOCIATE.
final class SOCKSSessionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ClientMessage
    typealias OutboundOut = ServerMessage

    private let gateway: GatewayContext
    private let settings: SOCKSSettings
    private var profile: Profile?
    private var authBuffer: ByteBuffer?
    private var association: UDPAssociation?
    private var pendingBridge: (tunnel: EntryTunnel, bridge: StreamBridge)?
    private var logger: Logger
    private var replied = false
    private var inactive = false

    init(gateway: GatewayContext, settings: SOCKSSettings) {
        self.gateway = gateway
        self.settings = settings
        self.logger = gateway.logger
    }

    func channelActive(context: ChannelHandlerContext) {
        logger[metadataKey: "socks-client"] = "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")"
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // When the connection closes, NIOSOCKS's handler hands any bytes it still buffered
        // downstream as a ByteBuffer while it is removed; after channelInactive nothing here
        // may be unwrapped as a ClientMessage.
        guard !inactive else { return }
        switch unwrapInboundIn(data) {
        case .greeting(let greeting):
            selectMethod(context: context, offered: greeting.methods)
        case .authenticationData(var bytes):
            authenticate(context: context, bytes: &bytes)
        case .request(let request):
            guard let profile = profile else {
                refuse(context: context, .serverFailure, "request before authentication")
                return
            }
            switch request.command {
            case .connect:
                connect(context: context, to: request.addressType, profile: profile)
            case .udpAssociate:
                associate(context: context, clientAddress: request.addressType, profile: profile)
            default:
                refuse(context: context, .commandUnsupported, "command 0x\(String(request.command.value, radix: 16)) is not supported")
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        inactive = true
        association?.close()
        association = nil
        if let (tunnel, bridge) = pendingBridge {
            tunnel.detach(bridge)
            pendingBridge = nil
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // NIOSOCKS rejects malformed greetings and requests by throwing; nothing valid can be
        // answered any more, so the connection ends.
        gateway.counters.socksMalformed += 1
        logger.info("closing SOCKS connection: \(error)")
        context.close(promise: nil)
    }

    // MARK: Method selection and RFC 1929

    private func selectMethod(context: ChannelHandlerContext, offered: [AuthenticationMethod]) {
        let method: AuthenticationMethod
        if offered.contains(.usernamePassword) {
            method = .usernamePassword
        } else if offered.contains(.noneRequired), settings.auth == .optional, let profile = gateway.config.defaultProfile {
            self.profile = profile
            method = .noneRequired
        } else {
            gateway.counters.socksAuthFailures += 1
            logger.info("SOCKS client offered no acceptable authentication method")
            context.writeAndFlush(wrapOutboundOut(.selectedAuthenticationMethod(.init(method: .noneAcceptable))))
                .whenComplete { _ in context.close(promise: nil) }
            return
        }
        context.writeAndFlush(wrapOutboundOut(.selectedAuthenticationMethod(.init(method: method))), promise: nil)
    }

    private func authenticate(context: ChannelHandlerContext, bytes: inout ByteBuffer) {
        if authBuffer == nil { authBuffer = bytes } else { authBuffer!.writeBuffer(&bytes) }
        let request: UsernamePasswordRequest
        do {
            guard let parsed = try authBuffer!.readUsernamePasswordRequest() else { return }
            request = parsed
        } catch {
            gateway.counters.socksMalformed += 1
            logger.info("malformed SOCKS username/password request: \(error)")
            replyAuth(context: context, success: false)
            return
        }
        guard authBuffer!.readableBytes == 0 else {
            // RFC 1929 has the client wait for our answer; bytes after the request would be a
            // SOCKS request NIOSOCKS can no longer parse, so the connection ends here.
            gateway.counters.socksMalformed += 1
            logger.info("SOCKS client sent data before the username/password reply")
            replyAuth(context: context, success: false)
            return
        }
        guard let profile = gateway.config.profile(named: request.username),
              profile.password == nil || profile.password == request.password else {
            gateway.counters.socksAuthFailures += 1
            logger.info("SOCKS authentication failed: no profile '\(request.username)' or wrong password")
            replyAuth(context: context, success: false)
            return
        }
        self.profile = profile
        logger[metadataKey: "profile"] = "\(profile.name)"
        replyAuth(context: context, success: true)
    }

    private func replyAuth(context: ChannelHandlerContext, success: Bool) {
        var reply = context.channel.allocator.buffer(capacity: 2)
        reply.writeBytes(UsernamePasswordReply.bytes(success: success))
        let written = context.writeAndFlush(wrapOutboundOut(.authenticationData(reply, complete: true)))
        if !success { written.whenComplete { _ in context.close(promise: nil) } }
    }

    // MARK: Replies

    private func reply(context: ChannelHandlerContext, _ code: SOCKSServerReply, bound: SocketAddress? = nil) -> EventLoopFuture<Void> {
        replied = true
        let address = bound ?? (try! SocketAddress(ipAddress: "0.0.0.0", port: 0))
        return context.writeAndFlush(wrapOutboundOut(.response(SOCKSResponse(reply: code, boundAddress: .address(address)))))
    }

    private func refuse(context: ChannelHandlerContext, _ code: SOCKSServerReply, _ why: String) {
        gateway.counters.socksRefused += 1
        logger.info("SOCKS request refused (reply 0x\(String(code.value, radix: 16, uppercase: true))): \(why)")
        reply(context: context, code).whenComplete { _ in context.close(promise: nil) }
    }

    // MARK: CONNECT

    private func connect(context: ChannelHandlerContext, to address: SOCKSAddress, profile: Profile) {
        let (host, port) = address.hostAndPort
        switch gateway.router.route(host: host, port: port, profile: profile) {
        case .refused(let refusal):
            refuse(context: context, refusal.socksReply, refusal.description)
        case .direct(let host, let port):
            connectDirect(context: context, host: host, port: port)
        case .anonymized(let host, let port):
            connectThroughTor(context: context, host: host, port: port, profile: profile)
        case .peer(let peerName, let virtualPort):
            guard let tunnel = gateway.entryTunnel(profile: profile, peerName: peerName) else {
                refuse(context: context, .serverFailure, "no tunnel for peer '\(peerName)'")
                return
            }
            let bridge = StreamBridge(virtualPort: virtualPort)
            pendingBridge = (tunnel, bridge)
            bridge.onOpened = { [weak self] in
                guard let self = self else { return }
                self.pendingBridge = nil
                self.reply(context: context, .succeeded).whenSuccess {
                    self.becomeStream(context: context, with: bridge)
                }
            }
            bridge.onClosed = { [weak self] reason, message in
                guard let self = self, !self.replied else { return }
                self.pendingBridge = nil
                self.refuse(context: context, reason.socksReply, "peer '\(peerName)' port \(virtualPort): \(reason) \(message)")
            }
            tunnel.attach(bridge)
        }
    }

    /// After a successful reply the connection is a plain byte stream: the SOCKS handlers
    /// leave the pipeline, and bytes the client sent early reach the bridge.
    private func becomeStream(context: ChannelHandlerContext, with handler: ChannelHandler) {
        let pipeline = context.pipeline
        pipeline.addHandler(handler).flatMap {
            pipeline.removeHandler(self)
        }.flatMap {
            pipeline.handler(type: SOCKSServerHandshakeHandler.self).flatMap { pipeline.removeHandler($0) }
        }.whenFailure { error in
            context.close(promise: nil)
        }
    }

    private func connectDirect(context: ChannelHandlerContext, host: String, port: Int) {
        let (local, remote) = RelayHandler.pair()
        ClientBootstrap(group: context.eventLoop)
            .connectTimeout(.seconds(10))
            .channelOption(ChannelOptions.autoRead, value: false)
            .channelInitializer { $0.pipeline.addHandler(remote) }
            .connect(host: host, port: port)
            .whenComplete { [weak self] result in
                guard let self = self else { return }
                switch result {
                case .success(let channel):
                    guard context.channel.isActive else { channel.close(promise: nil); return }
                    self.reply(context: context, .succeeded, bound: channel.localAddress).whenSuccess {
                        self.becomeStream(context: context, with: local)
                        channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
                    }
                case .failure(let error):
                    self.refuse(context: context, .hostUnreachable, "direct connection to \(host):\(port) failed: \(error)")
                }
            }
    }

    /// An ordinary stream through tor with the profile's isolation credentials; refused while
    /// tor is not ready (fail closed), with tor's own reply code when tor refuses.
    private func connectThroughTor(context: ChannelHandlerContext, host: String, port: Int, profile: Profile) {
        guard let tor = gateway.tor else {
            refuse(context: context, .networkUnreachable, "profile '\(profile.name)' uses tor and this gateway runs none")
            return
        }
        let (local, remote) = RelayHandler.pair()
        TorStreams.open(host: host, port: port, profile: profile, runtime: tor, on: context.eventLoop) { channel in
            channel.setOption(ChannelOptions.autoRead, value: false).flatMap { channel.pipeline.addHandler(remote) }
        }.whenComplete { [weak self] result in
            guard let self = self else { return }
            switch result {
            case .success(let channel):
                guard context.channel.isActive else { channel.close(promise: nil); return }
                self.reply(context: context, .succeeded).whenSuccess {
                    self.becomeStream(context: context, with: local)
                    channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
                }
            case .failure(let error):
                let code = (error as? TorStreamError)?.socksReply ?? .serverFailure
                self.refuse(context: context, code, "through tor to \(host):\(port): \(error)")
            }
        }
    }

    // MARK: UDP ASSOCIATE

    private func associate(context: ChannelHandlerContext, clientAddress: SOCKSAddress, profile: Profile) {
        guard let peerAddress = context.channel.remoteAddress, let localAddress = context.channel.localAddress,
              let clientIP = peerAddress.ipAddress, let localIP = localAddress.ipAddress else {
            refuse(context: context, .serverFailure, "cannot tell the client's address")
            return
        }
        // RFC 1928 section 6: DST.ADDR/DST.PORT name where the client will send from; zeros
        // mean "not known yet", in which case the first datagram's port is taken.
        var expectedPort: Int?
        if case .address(let address) = clientAddress, let port = address.port, port != 0 { expectedPort = port }
        let association = UDPAssociation(gateway: gateway, profile: profile, clientIP: clientIP, expectedPort: expectedPort)
        self.association = association
        association.bind(host: localIP, on: context.eventLoop).whenComplete { [weak self] result in
            guard let self = self else { return }
            switch result {
            case .success(let bound):
                guard context.channel.isActive else { association.close(); return }
                self.logger.debug("UDP association bound at \(bound)")
                _ = self.reply(context: context, .succeeded, bound: bound)
            case .failure(let error):
                self.refuse(context: context, .serverFailure, "cannot bind a UDP relay: \(error)")
            }
        }
    }
}

extension CloseReason {
    /// The SOCKS reply that tells an application why its CONNECT failed.
    var socksReply: SOCKSServerReply {
        switch self {
        case .noSuchPort, .targetRefused: return .refused
        case .targetUnreachable: return .hostUnreachable
        case .idleTimeout: return .ttlExpired
        case .limitReached, .protocolError, .normal: return .serverFailure
        }
    }
}

/// Accepts SOCKS5 connections on loopback.
enum SOCKSServer {
    static func bind(gateway: GatewayContext, settings: SOCKSSettings) -> EventLoopFuture<Channel> {
        var active = 0
        return ServerBootstrap(group: gateway.loop)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                gateway.counters.socksConnections += 1
                guard active < settings.maxConnections else {
                    gateway.counters.socksRefused += 1
                    gateway.logger.warning("SOCKS connection limit \(settings.maxConnections) reached; refusing")
                    return channel.close()
                }
                active += 1
                channel.closeFuture.whenComplete { _ in active -= 1 }
                return channel.pipeline.addHandlers([
                    SOCKSServerHandshakeHandler(),
                    SOCKSSessionHandler(gateway: gateway, settings: settings),
                ])
            }
            .bind(host: settings.listen.host, port: settings.listen.port)
    }
}
