import Logging
import NIOCore
import NIOPosix
import NIOSOCKS
import SottoConfig
import SottoSOCKS
import SottoTunnel

/// Socket options every UDP socket of the gateway needs: room for a 65,507-byte datagram.
extension DatagramBootstrap {
    func sottoDatagramOptions() -> DatagramBootstrap {
        self.channelOption(ChannelOptions.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 65_536))
            .channelOption(ChannelOptions.maxMessagesPerRead, value: 64)
            .channelOption(ChannelOptions.socketOption(.so_rcvbuf), value: 4 << 20)
            .channelOption(ChannelOptions.socketOption(.so_sndbuf), value: 4 << 20)
    }
}

/// A UDP flow that answers to a local address: one destination of a SOCKS association, or one
/// client of a UDP forward.
final class LocalUDPFlow: EntryFlow {
    let kind = FlowKind.udp
    let virtualPort: Int
    let tunnel: EntryTunnel
    /// Writes a datagram back to the application (the owner adds any SOCKS header).
    private let deliver: (ByteBuffer) -> Void
    private let flush: () -> Void
    /// The owner forgets the flow when the peer closes it.
    var onClosed: (() -> Void)?
    var lastActivity = NIODeadline.now()

    init(tunnel: EntryTunnel, virtualPort: Int, deliver: @escaping (ByteBuffer) -> Void, flush: @escaping () -> Void) {
        self.tunnel = tunnel
        self.virtualPort = virtualPort
        self.deliver = deliver
        self.flush = flush
    }

    func send(_ datagram: ByteBuffer) {
        lastActivity = .now()
        tunnel.sendDatagram(from: self, datagram)
    }

    func entryFlowBound(session: TunnelSession, flowID: UInt32) {}
    func tunnelDeliver(datagram: ByteBuffer) {
        lastActivity = .now()
        deliver(datagram)
    }
    func tunnelFlush() { flush() }
    func tunnelClosed(reason: CloseReason, message: String) {
        onClosed?()
        onClosed = nil
    }
}

/// The UDP relay of one SOCKS5 UDP ASSOCIATE (RFC 1928 section 7). Accepts datagrams only from
/// the client's address, drops fragments (FRAG != 0) and malformed headers with a count, and
/// keeps one tunnel flow per destination. Lives as long as the association's TCP connection.
final class UDPAssociation: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    static let maxFlows = 256

    private let gateway: GatewayContext
    private let profile: Profile
    private let clientIP: String
    private var clientAddress: SocketAddress?
    private var expectedPort: Int?
    private var channel: Channel?
    private var flows: [SOCKSAddress: LocalUDPFlow] = [:]
    /// Direct destinations (allow_direct) we sent to: their answers are relayed back.
    private var directPeers: [SocketAddress: SOCKSAddress] = [:]
    private var closed = false

    init(gateway: GatewayContext, profile: Profile, clientIP: String, expectedPort: Int?) {
        self.gateway = gateway
        self.profile = profile
        self.clientIP = clientIP
        self.expectedPort = expectedPort
    }

    func bind(host: String, on loop: EventLoop) -> EventLoopFuture<SocketAddress> {
        DatagramBootstrap(group: loop)
            .sottoDatagramOptions()
            .channelInitializer { $0.pipeline.addHandler(self) }
            .bind(host: host, port: 0)
            .flatMapThrowing { channel in
                self.channel = channel
                if self.closed { channel.close(promise: nil) }
                guard let address = channel.localAddress else { throw ChannelError.unknownLocalAddress }
                return address
            }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        if let destination = directPeers[envelope.remoteAddress] {
            relayDirectAnswer(envelope.data, from: destination)
            return
        }
        guard envelope.remoteAddress.ipAddress == clientIP,
              expectedPort == nil || envelope.remoteAddress.port == expectedPort else {
            gateway.counters.udpForeignSourceDropped += 1
            return
        }
        if clientAddress == nil {
            clientAddress = envelope.remoteAddress
            expectedPort = envelope.remoteAddress.port
        }
        var payload = envelope.data
        let header: SOCKSUDPHeader
        do {
            header = try payload.readSOCKSUDPHeader()
        } catch {
            gateway.counters.udpMalformedDropped += 1
            gateway.logger.debug("dropping a SOCKS UDP datagram: \(error)")
            return
        }
        guard header.fragment == 0 else {
            // Sotto does not reassemble SOCKS-level fragments (RFC 1928 makes it optional).
            gateway.counters.udpFragmentsDropped += 1
            return
        }
        let (host, port) = header.address.hostAndPort
        switch gateway.router.route(host: host, port: port, profile: profile) {
        case .peer(let peerName, let virtualPort):
            flow(for: header.address, peerName: peerName, virtualPort: virtualPort)?.send(payload)
        case .direct:
            sendDirect(payload, to: header.address)
        case .anonymized:
            // tor carries streams only: a datagram to anything but a peer has no way to go.
            gateway.counters.socksRefused += 1
            gateway.logger.info("dropping a UDP datagram to \(host):\(port): profile '\(profile.name)' (\(profile.anonymizer.rawValue)) carries UDP only to peers")
        case .refused(let refusal):
            gateway.counters.socksRefused += 1
            gateway.logger.info("dropping a UDP datagram: \(refusal)")
        }
    }

    private func flow(for destination: SOCKSAddress, peerName: String, virtualPort: Int) -> LocalUDPFlow? {
        if let flow = flows[destination] { return flow }
        guard flows.count < Self.maxFlows,
              let tunnel = gateway.entryTunnel(profile: profile, peerName: peerName) else {
            gateway.counters.udpFlowLimitDropped += 1
            return nil
        }
        let flow = LocalUDPFlow(
            tunnel: tunnel, virtualPort: virtualPort,
            deliver: { [weak self] datagram in self?.relayToClient(datagram, from: destination) },
            flush: { [weak self] in self?.channel?.flush() })
        flow.onClosed = { [weak self] in self?.flows[destination] = nil }
        flows[destination] = flow
        tunnel.attach(flow)
        return flow
    }

    private func relayToClient(_ datagram: ByteBuffer, from destination: SOCKSAddress) {
        guard let channel = channel, let client = clientAddress else { return }
        var buffer = channel.allocator.buffer(capacity: datagram.readableBytes + 262)
        buffer.writeSOCKSUDPHeader(SOCKSUDPHeader(fragment: 0, address: destination))
        var datagram = datagram
        buffer.writeBuffer(&datagram)
        channel.write(AddressedEnvelope(remoteAddress: client, data: buffer), promise: nil)
    }

    private func sendDirect(_ payload: ByteBuffer, to destination: SOCKSAddress) {
        guard case .address(let address) = destination else {
            // Resolving a name here would be a DNS lookup outside any anonymizer.
            gateway.counters.socksRefused += 1
            gateway.logger.info("dropping a direct UDP datagram to a domain name: send to an IP address")
            return
        }
        if directPeers[address] == nil {
            guard directPeers.count < Self.maxFlows else {
                gateway.counters.udpFlowLimitDropped += 1
                return
            }
            directPeers[address] = destination
        }
        channel?.writeAndFlush(AddressedEnvelope(remoteAddress: address, data: payload), promise: nil)
    }

    private func relayDirectAnswer(_ data: ByteBuffer, from destination: SOCKSAddress) {
        relayToClient(data, from: destination)
        channel?.flush()
    }

    /// The association's TCP connection closed: every flow and the socket go with it.
    func close() {
        closed = true
        for flow in flows.values { flow.tunnel.detach(flow) }
        flows.removeAll()
        channel?.close(promise: nil)
    }
}
