import NIOCore
import NIOPosix
import SottoConfig

/// Yields a reliable byte stream to a peer (entry side). The tunnel runs over whatever this
/// returns. `none` connects with plain TCP; Tor (through tor's SocksPort) and I2P (through a SAM
/// STREAM CONNECT) plug in here with the same shape.
protocol TunnelTransport {
    /// What the logs and `sotto status` call this transport.
    var name: String { get }
    /// Connects to `peer` on `loop`, running `initializer` on the new channel before any byte
    /// flows. Must fail rather than fall back to any other path.
    func connect(to peer: Peer, on loop: EventLoop,
                 initializer: @escaping @Sendable (Channel) -> EventLoopFuture<Void>) -> EventLoopFuture<Channel>
}

enum TransportError: Error, CustomStringConvertible {
    case addressNotReachable(peer: String, address: String, transport: String)

    var description: String {
        switch self {
        case .addressNotReachable(let peer, let address, let transport):
            return "peer '\(peer)' has address \(address), which the \(transport) transport cannot reach"
        }
    }
}

/// Anonymizer `none`: a direct TCP connection to the peer's host:port.
struct DirectTCPTransport: TunnelTransport {
    var name: String { "none" }
    var connectTimeout: TimeAmount = .seconds(10)

    func connect(to peer: Peer, on loop: EventLoop,
                 initializer: @escaping @Sendable (Channel) -> EventLoopFuture<Void>) -> EventLoopFuture<Channel> {
        guard case .hostPort(let hostPort) = peer.address else {
            return loop.makeFailedFuture(TransportError.addressNotReachable(
                peer: peer.name, address: "\(peer.address)", transport: name))
        }
        return ClientBootstrap(group: loop)
            .connectTimeout(connectTimeout)
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer(initializer)
            .connect(host: hostPort.host, port: hostPort.port)
    }
}
