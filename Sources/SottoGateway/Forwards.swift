import Logging
import NIOCore
import NIOPosix
import SottoConfig
import SottoTunnel

/// Local port forwards for applications that speak no SOCKS: `udp 127.0.0.1:P -> PEER:VPORT`
/// and `tcp 127.0.0.1:P -> PEER:VPORT`.
enum LocalForward {
    static func bind(_ forward: Forward, gateway: GatewayContext) -> EventLoopFuture<Channel> {
        guard let profile = gateway.config.profile(named: forward.profile) else {
            return gateway.loop.makeFailedFuture(GatewayError.invalid("forward \(forward.listen): unknown profile '\(forward.profile)'"))
        }
        guard let tunnel = gateway.entryTunnel(profile: profile, peerName: forward.peer) else {
            return gateway.loop.makeFailedFuture(GatewayError.invalid("forward \(forward.listen): no tunnel to peer '\(forward.peer)'"))
        }
        switch forward.proto {
        case .udp:
            let handler = UDPForwardHandler(tunnel: tunnel, virtualPort: forward.virtualPort,
                                            idleLimit: gateway.config.tunnel.udpFlowIdleSeconds)
            return DatagramBootstrap(group: gateway.loop)
                .sottoDatagramOptions()
                .channelInitializer { $0.pipeline.addHandler(handler) }
                .bind(host: forward.listen.host, port: forward.listen.port)
        case .tcp:
            return ServerBootstrap(group: gateway.loop)
                .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
                // Nothing is read from the application until the exit has connected the target.
                .childChannelOption(ChannelOptions.autoRead, value: false)
                .childChannelInitializer { channel in
                    let bridge = StreamBridge(virtualPort: forward.virtualPort)
                    bridge.onOpened = {
                        channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
                    }
                    bridge.onClosed = { reason, message in
                        gateway.logger.info("TCP forward \(forward.listen) -> \(forward.peer):\(forward.virtualPort) closed: \(reason) \(message)")
                    }
                    channel.closeFuture.whenComplete { _ in tunnel.detach(bridge) }
                    return channel.pipeline.addHandler(bridge).map { tunnel.attach(bridge) }
                }
                .bind(host: forward.listen.host, port: forward.listen.port)
        }
    }
}

/// A UDP forward's socket: one tunnel flow per application source address, expired when idle.
final class UDPForwardHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    static let maxFlows = 1024

    private let tunnel: EntryTunnel
    private let virtualPort: Int
    private let idleLimit: TimeAmount
    private var flows: [SocketAddress: LocalUDPFlow] = [:]
    private var channel: Channel?
    private var sweep: RepeatedTask?
    private(set) var droppedForLimit = 0

    init(tunnel: EntryTunnel, virtualPort: Int, idleLimit: Double) {
        self.tunnel = tunnel
        self.virtualPort = virtualPort
        self.idleLimit = .milliseconds(Int64(idleLimit * 1000))
    }

    func channelActive(context: ChannelHandlerContext) {
        channel = context.channel
        sweep = context.eventLoop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { [weak self] _ in
            self?.expireIdle()
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        sweep?.cancel()
        for flow in flows.values { tunnel.detach(flow) }
        flows.removeAll()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        let source = envelope.remoteAddress
        if let flow = flows[source] {
            flow.send(envelope.data)
            return
        }
        guard flows.count < Self.maxFlows else {
            droppedForLimit += 1
            return
        }
        let flow = LocalUDPFlow(
            tunnel: tunnel, virtualPort: virtualPort,
            deliver: { [weak self] datagram in
                self?.channel?.write(AddressedEnvelope(remoteAddress: source, data: datagram), promise: nil)
            },
            flush: { [weak self] in self?.channel?.flush() })
        flow.onClosed = { [weak self] in self?.flows[source] = nil }
        flows[source] = flow
        tunnel.attach(flow)
        flow.send(envelope.data)
    }

    private func expireIdle() {
        let now = NIODeadline.now()
        for (source, flow) in flows where now - flow.lastActivity > idleLimit {
            flows[source] = nil
            tunnel.detach(flow)
        }
    }
}

enum GatewayError: Error, CustomStringConvertible {
    case invalid(String)

    var description: String {
        switch self {
        case .invalid(let s): return s
        }
    }
}
