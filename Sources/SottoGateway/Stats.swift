import NIOCore
import SottoShaping

/// Counters of one tunnel. Loop-confined: only the tunnel's event loop touches them.
final class TunnelCounters {
    var cellsSent = 0
    var cellsReceived = 0
    var bytesSent = 0           // wire bytes, cells included whole
    var bytesReceived = 0
    var datagramsSent = 0
    var datagramsReceived = 0
    var datagramsDropped = 0     // queue full, reassembly drops, no such flow
    var streamBytesSent = 0
    var streamBytesReceived = 0
    var flowsOpened = 0
    var flowsRefused = 0         // limit reached, no such port, target refused
    var flowLimitHits = 0
    var coverCellsReceived = 0    // cover cells from the peer (discarded)
}

/// Gateway-wide counters. Loop-confined.
final class GatewayCounters {
    var socksConnections = 0
    var socksRefused = 0           // by reply code != succeeded, or max_connections
    var socksAuthFailures = 0
    var socksMalformed = 0         // greetings/requests NIOSOCKS rejected, bad RFC 1929
    var udpFragmentsDropped = 0    // SOCKS UDP datagrams with FRAG != 0
    var udpMalformedDropped = 0    // SOCKS UDP datagrams with a header we cannot parse
    var udpForeignSourceDropped = 0 // datagrams to an association from another source
    var udpFlowLimitDropped = 0    // datagrams for a new destination past the flow limit
    var tunnelHandshakeFailures = 0 // exit: refused handshakes; entry: failed connects/handshakes
    var tunnelLimitHits = 0        // exit: max_tunnels
    var tunnelReconnects = 0
    var cellAuthenticationFailures = 0
    var pendingDatagramsDropped = 0 // entry: datagrams queued for a tunnel that was not up
    var hopFlowsRetired = 0        // exit: UDP flows to a HOST:hopping expose closed at an epoch boundary
    /// Shaping counters of tunnels that ended, per profile (entry) or service (exit), so that
    /// `sotto status` shows totals that survive reconnects. Keyed by `ShapingTotals.key`.
    var endedShaping: [String: ShapingTotals] = [:]

    func recordEnded(side: String, group: String, counters: ShapingCounters, coverCellsReceived: Int) {
        let key = ShapingTotals.key(side: side, group: group)
        let totals = endedShaping[key] ?? ShapingTotals(side: side, group: group)
        totals.counters.add(counters)
        totals.coverCellsReceived += coverCellsReceived
        totals.tunnels += 1
        endedShaping[key] = totals
    }
}

/// Shaping counters summed over tunnels: one profile's (entry) or one service's (exit).
final class ShapingTotals {
    let side: String
    let group: String
    var counters = ShapingCounters()
    var coverCellsReceived = 0
    var tunnels = 0

    init(side: String, group: String) {
        self.side = side
        self.group = group
    }

    static func key(side: String, group: String) -> String { "\(side)\u{0}\(group)" }
}

/// What `sotto status` shows: a snapshot encoded as JSON on the status socket.
struct StatusSnapshot: Codable {
    struct Tunnel: Codable {
        var side: String           // "entry" or "exit"
        var name: String           // entry: "profile->peer"; exit: service name
        var remote: String
        var state: String
        var ageSeconds: Double
        var cellSize: Int
        var cellsSent: Int
        var cellsReceived: Int
        var bytesSent: Int
        var bytesReceived: Int
        var datagramsSent: Int
        var datagramsReceived: Int
        var datagramsDropped: Int
        var streamBytesSent: Int
        var streamBytesReceived: Int
        var queuedCells: Int
        var flowsOpen: Int
        var flowsOpened: Int
        var flowsRefused: Int
        var flowLimitHits: Int
        var reassemblyPartial: Int
        var flows: [Flow]
        /// This side's send shaping (docs/shaping.md, "Counters"); nil before the handshake.
        var shaping: Shaping? = nil
    }
    struct Shaping: Codable {
        var policy: String           // the applied parameters, e.g. "constant 10 cells/s ±20%"
        var peerAnswered: Bool       // false: the peer sent no shaping options (an old peer)
        var realCells: Int
        var coverCells: Int
        var realBytes: Int
        var coverBytes: Int
        var coverCellsReceived: Int
        var queueDepth: Int
        var peakQueueDepth: Int
        var datagramsDropped: Int
        var datagramCellsDropped: Int
        var controlCellsRefused: Int
        var backPressureEvents: Int
        var missedSlots: Int
        var addedLatencyP50Ms: Double?
        var addedLatencyP99Ms: Double?
    }
    struct Flow: Codable {
        var id: UInt32
        var kind: String
        var virtualPort: Int
        var datagramsSent: Int
        var datagramsReceived: Int
        var bytesSent: Int
        var bytesReceived: Int
        var idleSeconds: Double
    }
    var pid: Int32
    var uptimeSeconds: Double
    var profiles: [String]
    var listeners: [String]
    var counters: [String: Int]
    struct Tor: Codable {
        var mode: String           // "managed" or "external ADDRESS"
        var state: String          // starting, bootstrapping, ready, down, stopped
        var detail: String
        var bootstrapProgress: Int
        var socks: String?
        var restarts: Int
        var onionServices: [String: String]  // service name -> onion address
    }
    var tor: Tor?
    var tunnels: [Tunnel]
    /// Shaping totals per profile (entry side) and per service (exit side): the live tunnels
    /// plus every tunnel that ended since the gateway started.
    struct ShapingTotal: Codable {
        var side: String             // "entry": `group` is a profile; "exit": a service
        var group: String
        var liveTunnels: Int
        var endedTunnels: Int
        /// Sums; `policy` lists the live tunnels' policies, `queueDepth` is summed over them and
        /// `peakQueueDepth` is the highest of any one tunnel.
        var shaping: Shaping
    }
    var shapingTotals: [ShapingTotal] = []
}

extension GatewayCounters {
    var dictionary: [String: Int] {
        [
            "socks_connections": socksConnections,
            "socks_refused": socksRefused,
            "socks_auth_failures": socksAuthFailures,
            "socks_malformed": socksMalformed,
            "udp_fragments_dropped": udpFragmentsDropped,
            "udp_malformed_dropped": udpMalformedDropped,
            "udp_foreign_source_dropped": udpForeignSourceDropped,
            "udp_flow_limit_dropped": udpFlowLimitDropped,
            "tunnel_handshake_failures": tunnelHandshakeFailures,
            "tunnel_limit_hits": tunnelLimitHits,
            "tunnel_reconnects": tunnelReconnects,
            "cell_authentication_failures": cellAuthenticationFailures,
            "pending_datagrams_dropped": pendingDatagramsDropped,
            "hop_flows_retired": hopFlowsRetired,
        ]
    }
}

extension StatusSnapshot.Shaping {
    init(policy: String, peerAnswered: Bool, counters c: ShapingCounters, coverCellsReceived: Int, queueDepth: Int) {
        let ms = { (ns: UInt64?) in ns.map { Double($0) / 1e6 } }
        self.init(
            policy: policy, peerAnswered: peerAnswered,
            realCells: c.realCells, coverCells: c.coverCells, realBytes: c.realBytes, coverBytes: c.coverBytes,
            coverCellsReceived: coverCellsReceived, queueDepth: queueDepth,
            peakQueueDepth: c.peakQueuedCells, datagramsDropped: c.datagramsDropped,
            datagramCellsDropped: c.datagramCellsDropped, controlCellsRefused: c.controlCellsRefused,
            backPressureEvents: c.backPressureEvents, missedSlots: c.missedSlots,
            addedLatencyP50Ms: ms(c.addedLatency.p50), addedLatencyP99Ms: ms(c.addedLatency.p99))
    }
}
