import Logging
import NIOCore
import NIOPosix
import SottoConfig
import SottoShaping
import SottoTunnel

/// The exit side of one `[[service]]`: accepts tunnels on its listener and delivers each flow to
/// the local target its virtual port exposes, like Tor's HiddenServicePort but for UDP too.
final class ExitService: TunnelSessionDelegate {
    let service: Service
    private let gateway: GatewayContext
    private var logger: Logger
    private var tunnels: [ObjectIdentifier: TunnelSession] = [:]
    /// Targets resolved once at start-up, so no lookup happens per flow.
    private var targets: [String: SocketAddress] = [:]
    /// `udp VPORT HOST:hopping` exposes: each flow's port comes from the `[hopping]` schedule.
    private var hopTargets: [String: HopTarget] = [:]
    /// The wall clock the hopping schedule is computed from.
    private let clock: WallClock
    private(set) var channel: Channel?

    var sessions: [TunnelSession] { Array(tunnels.values) }

    init(service: Service, gateway: GatewayContext, clock: @escaping WallClock = systemWallClock) {
        self.service = service
        self.gateway = gateway
        self.clock = clock
        self.logger = gateway.logger
        self.logger[metadataKey: "service"] = "\(service.name)"
    }

    private static func key(_ proto: TransportProtocol, _ port: Int) -> String { "\(proto.rawValue)/\(port)" }

    func start() -> EventLoopFuture<Channel> {
        do {
            for expose in service.exposes {
                let key = Self.key(expose.proto, expose.virtualPort)
                switch expose.target {
                case .fixed(let target):
                    targets[key] = try SocketAddress.makeAddressResolvingHost(target.host, port: target.port)
                case .hopping(let host):
                    // The parser refuses HOST:hopping without a [hopping] table.
                    guard let hopping = gateway.config.hopping else {
                        throw GatewayError.invalid("\(expose.target) needs a [hopping] table")
                    }
                    let address = try SocketAddress.makeAddressResolvingHost(host, port: 0)
                    let name = "service \(service.name): \(expose.proto.rawValue) \(expose.virtualPort) -> \(expose.target)"
                    let hop = try HopTarget(name: name, host: address, hopping: hopping, clock: clock,
                                            loop: gateway.loop, counters: gateway.counters, logger: logger)
                    hopTargets[key] = hop
                    logger.notice("\(name): \(hopping)")
                }
            }
        } catch {
            return gateway.loop.makeFailedFuture(GatewayError.invalid("service '\(service.name)': cannot resolve a target: \(error)"))
        }
        for hop in hopTargets.values { hop.start() }
        return ServerBootstrap(group: gateway.loop)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [weak self] channel in
                guard let self = self else { return channel.close() }
                return self.accept(channel)
            }
            .bind(host: service.listen.host, port: service.listen.port)
            .map { channel in
                self.channel = channel
                return channel
            }
    }

    private func accept(_ channel: Channel) -> EventLoopFuture<Void> {
        guard tunnels.count < service.maxTunnels else {
            gateway.counters.tunnelLimitHits += 1
            logger.warning("service \(service.name): limit of \(service.maxTunnels) tunnels reached; closing a new one")
            return channel.close()
        }
        do {
            let responder = try TunnelResponder(staticPrivateKey: service.privateKey, psk: service.psk, cellSize: service.cellSize)
            // The service's profile's shaping is its default; proposals are clamped to its limits.
            let shapingDefault = try gateway.config.profile(named: service.profile)?.shapingParameters() ?? .off
            let shapingLimits = try service.shapingLimits.shapingLimits(fallback: shapingDefault)
            let session = TunnelSession(responder: responder, name: service.name, cellSize: service.cellSize,
                                        settings: gateway.config.tunnel, maxFlows: service.maxFlowsPerTunnel,
                                        counters: gateway.counters, logger: logger,
                                        shapingDefault: shapingDefault, shapingLimits: shapingLimits)
            session.delegate = self
            tunnels[ObjectIdentifier(session)] = session
            return channel.pipeline.addHandler(session)
        } catch {
            logger.error("service \(service.name): cannot start a tunnel: \(error)")
            return channel.close()
        }
    }

    func tunnelEstablished(_ session: TunnelSession) {}

    func tunnelEnded(_ session: TunnelSession, error: Error?) {
        tunnels[ObjectIdentifier(session)] = nil
    }

    func tunnel(_ session: TunnelSession, requestsFlow id: UInt32, _ request: OpenRequest) {
        let proto: TransportProtocol = request.kind == .udp ? .udp : .tcp
        let key = Self.key(proto, Int(request.virtualPort))
        if request.kind == .udp, let hop = hopTargets[key] {
            let flow = hop.makeFlow(session: session, flowID: id)
            session.acceptFlow(id, request: request, endpoint: flow)
            flow.start(on: gateway.loop)
            return
        }
        guard let target = targets[key] else {
            logger.info("service \(service.name): refusing a flow to \(proto.rawValue) port \(request.virtualPort), which is not exposed")
            session.refuseFlow(id, reason: .noSuchPort, message: "\(proto.rawValue) port \(request.virtualPort) is not exposed")
            return
        }
        switch request.kind {
        case .udp:
            let flow = ExitUDPFlow(target: target, session: session, flowID: id)
            session.acceptFlow(id, request: request, endpoint: flow)
            flow.start(on: gateway.loop)
        case .tcp:
            let bridge = StreamBridge()
            ClientBootstrap(group: gateway.loop)
                .connectTimeout(.seconds(10))
                .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
                .channelOption(ChannelOptions.autoRead, value: false)
                .channelInitializer { $0.pipeline.addHandler(bridge) }
                .connect(to: target)
                .whenComplete { [weak self, weak session] result in
                    guard let session = session, session.isEstablished else {
                        if case .success(let channel) = result { channel.close(promise: nil) }
                        return
                    }
                    switch result {
                    case .success(let channel):
                        guard session.acceptFlow(id, request: request, endpoint: bridge) else {
                            channel.close(promise: nil)
                            return
                        }
                        bridge.bind(session: session, flowID: id)
                        channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
                    case .failure(let error):
                        self?.logger.info("service \(self?.service.name ?? ""): target for tcp port \(request.virtualPort) failed: \(error)")
                        session.refuseFlow(id, reason: .targetRefused, message: "the target refused the connection")
                    }
                }
        }
    }

    func stop() {
        for hop in hopTargets.values { hop.stop() }
        channel?.close(promise: nil)
        for session in tunnels.values { session.close() }
    }
}

/// One UDP flow at the exit: its own socket, so the target sees one peer per client flow and
/// nothing about who the client is. Datagrams that arrive before the socket is bound wait
/// (bounded); answers are accepted only from the target.
final class ExitUDPFlow: ChannelInboundHandler, TunnelFlowEndpoint {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    private let target: SocketAddress
    private weak var session: TunnelSession?
    private let flowID: UInt32
    private var channel: Channel?
    private var early: [ByteBuffer] = []
    private var closed = false
    private static let earlyLimit = 64
    /// Called once when the flow ends for any reason but `retire` (a hopping expose's bookkeeping).
    var onEnded: (() -> Void)?

    init(target: SocketAddress, session: TunnelSession, flowID: UInt32) {
        self.target = target
        self.session = session
        self.flowID = flowID
    }

    /// The hopping server closes this flow's port: the flow ends, the entry hears a close (and
    /// forgets it, so its client's next datagram opens a new flow), and the socket closes.
    func retire() {
        guard !closed else { return }
        closed = true
        onEnded = nil
        session?.closeFlow(flowID, reason: .normal, message: "the hopping server closed this flow's port")
        channel?.close(promise: nil)
    }

    func start(on loop: EventLoop) {
        let anyAddress = target.protocol == .inet6 ? "::" : "0.0.0.0"
        DatagramBootstrap(group: loop)
            .sottoDatagramOptions()
            .channelInitializer { $0.pipeline.addHandler(self) }
            .bind(host: anyAddress, port: 0)
            .whenComplete { [weak self] result in
                guard let self = self else { return }
                switch result {
                case .success(let channel):
                    if self.closed { channel.close(promise: nil); return }
                    self.channel = channel
                    for datagram in self.early {
                        channel.write(AddressedEnvelope(remoteAddress: self.target, data: datagram), promise: nil)
                    }
                    self.early.removeAll()
                    channel.flush()
                case .failure:
                    self.session?.closeFlow(self.flowID, reason: .targetUnreachable, message: "cannot open a UDP socket")
                }
            }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard envelope.remoteAddress == target else { return }
        session?.sendDatagram(flow: flowID, envelope.data)
    }

    func tunnelDeliver(datagram: ByteBuffer) {
        guard let channel = channel else {
            if early.count < Self.earlyLimit { early.append(datagram) }
            return
        }
        channel.write(AddressedEnvelope(remoteAddress: target, data: datagram), promise: nil)
    }

    func tunnelFlush() { channel?.flush() }

    func tunnelClosed(reason: CloseReason, message: String) {
        closed = true
        channel?.close(promise: nil)
        let ended = onEnded
        onEnded = nil
        ended?()
    }
}
