#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Logging
import NIOCore
import SottoConfig
import SottoShaping

/// What the entry- and exit-side pieces of one running gateway share. Confined to the
/// gateway's single event loop, so nothing here needs a lock.
final class GatewayContext {
    let config: SottoConfig
    let loop: EventLoop
    let counters = GatewayCounters()
    let logger: Logger
    let router: Router
    let startedAt = NIODeadline.now()
    private(set) var entryTunnels: [String: EntryTunnel] = [:]
    var exitServices: [ExitService] = []
    var listeners: [String] = []
    /// The gateway's tor, when anything it runs uses a tor profile.
    var tor: TorRuntime?

    init(config: SottoConfig, loop: EventLoop, logger: Logger) {
        self.config = config
        self.loop = loop
        self.logger = logger
        self.router = Router(config: config)
    }

    /// The transport a profile's tunnels use; nil when this gateway cannot drive its anonymizer
    /// (refused at start-up, see `Gateway.validate`), never replaced by a weaker path.
    func transport(for profile: Profile) -> TunnelTransport? {
        switch profile.anonymizer {
        case .none: return DirectTCPTransport()
        case .tor: return tor.map { TorTransport(runtime: $0, profile: profile) }
        case .i2p: return nil
        }
    }

    /// tor is ready (again): tunnels waiting for it connect now instead of at their next backoff.
    func anonymizerReady(_ anonymizer: Anonymizer) {
        for tunnel in entryTunnels.values where tunnel.profile.anonymizer == anonymizer { tunnel.retryNow() }
    }

    /// The one tunnel of a (profile, peer) pair, created on first use.
    func entryTunnel(profile: Profile, peerName: String) -> EntryTunnel? {
        let key = "\(profile.name)\u{0}\(peerName)"
        if let tunnel = entryTunnels[key] { return tunnel }
        guard let peer = config.peer(named: peerName), let transport = transport(for: profile) else { return nil }
        let tunnel = EntryTunnel(profile: profile, peer: peer, transport: transport, settings: config.tunnel,
                                 counters: counters, loop: loop, logger: logger)
        entryTunnels[key] = tunnel
        return tunnel
    }

    func snapshot() -> StatusSnapshot {
        var tunnels: [StatusSnapshot.Tunnel] = []
        for (_, tunnel) in entryTunnels.sorted(by: { $0.key < $1.key }) {
            if let session = tunnel.session {
                tunnels.append(session.snapshot(side: "entry"))
            } else {
                tunnels.append(StatusSnapshot.Tunnel(
                    side: "entry", name: tunnel.name, remote: "\(tunnel.peer.address)",
                    state: tunnel.lastError.map { "down: \($0)" } ?? "down", ageSeconds: 0,
                    cellSize: tunnel.peer.cellSize, cellsSent: 0, cellsReceived: 0, bytesSent: 0, bytesReceived: 0,
                    datagramsSent: 0, datagramsReceived: 0, datagramsDropped: 0, streamBytesSent: 0,
                    streamBytesReceived: 0, queuedCells: tunnel.pendingDatagrams, flowsOpen: 0, flowsOpened: 0,
                    flowsRefused: 0, flowLimitHits: 0, reassemblyPartial: 0, flows: []))
            }
        }
        for service in exitServices {
            for session in service.sessions { tunnels.append(session.snapshot(side: "exit")) }
        }
        var snapshot = StatusSnapshot(
            pid: getpid(), uptimeSeconds: Double((NIODeadline.now() - startedAt).nanoseconds) / 1e9,
            profiles: config.profiles.map { "\($0.name) (\($0.anonymizer.rawValue), shaping \($0.shaping.rawValue))" },
            listeners: listeners, counters: counters.dictionary, tor: tor.map { tor in
                StatusSnapshot.Tor(mode: tor.mode, state: tor.phase.rawValue, detail: tor.stateDescription,
                                   bootstrapProgress: tor.progress, socks: tor.socksAddress.map { "\($0)" },
                                   restarts: tor.restarts, onionServices: tor.published)
            }, tunnels: tunnels)
        snapshot.shapingTotals = shapingTotals()
        return snapshot
    }

    /// Per profile (entry) and service (exit): the ended tunnels' shaping counters plus the live ones'.
    private func shapingTotals() -> [StatusSnapshot.ShapingTotal] {
        var groups: [String: (ended: ShapingTotals?, live: [TunnelSession])] = [:]
        for (key, totals) in counters.endedShaping { groups[key, default: (nil, [])].ended = totals }
        let live = entryTunnels.values.compactMap(\.session) + exitServices.flatMap(\.sessions)
        for session in live where session.shapingCounters != nil {
            groups[ShapingTotals.key(side: session.sideName, group: session.group), default: (nil, [])].live.append(session)
        }
        return groups.sorted { $0.key < $1.key }.map { _, group in
            var sum = group.ended?.counters ?? ShapingCounters()
            var coverReceived = group.ended?.coverCellsReceived ?? 0
            var queueDepth = 0
            for session in group.live {
                if let c = session.shapingCounters { sum.add(c) }
                coverReceived += session.counters.coverCellsReceived
                queueDepth += session.queuedCells
            }
            let first = group.live.first
            let policies = Set(group.live.map { "\($0.appliedShaping)" }).sorted().joined(separator: ", ")
            return StatusSnapshot.ShapingTotal(
                side: group.ended?.side ?? first?.sideName ?? "?", group: group.ended?.group ?? first?.group ?? "?",
                liveTunnels: group.live.count, endedTunnels: group.ended?.tunnels ?? 0,
                shaping: StatusSnapshot.Shaping(policy: policies, peerAnswered: group.live.allSatisfy(\.peerAnsweredShaping),
                                                counters: sum, coverCellsReceived: coverReceived, queueDepth: queueDepth))
        }
    }
}
