import Logging
import NIOCore
import SottoConfig
import SottoShaping
import SottoTunnel

/// Something on the entry side that wants to travel through a tunnel: a SOCKS UDP association's
/// destination, a UDP forward's client, or a TCP connection.
protocol EntryFlow: TunnelFlowEndpoint {
    var kind: FlowKind { get }
    var virtualPort: Int { get }
    /// The flow got an id on a (new) established tunnel.
    func entryFlowBound(session: TunnelSession, flowID: UInt32)
}

/// The tunnel of one (profile, peer) pair on the entry side: connects lazily through the
/// profile's transport, re-opens UDP flows after a reconnect, and reconnects with backoff while
/// flows want it. It never uses any other transport than the profile's (fail closed).
final class EntryTunnel: TunnelSessionDelegate {
    let profile: Profile
    let peer: Peer
    private let transport: TunnelTransport
    private let settings: TunnelSettings
    private let counters: GatewayCounters
    private let loop: EventLoop
    private var logger: Logger

    private(set) var session: TunnelSession?
    private var connecting = false
    private var reconnectTask: Scheduled<Void>?
    private var backoff = TimeAmount.milliseconds(500)
    private var attachments: [ObjectIdentifier: Attachment] = [:]
    private var pending = CircularBuffer<(ObjectIdentifier, ByteBuffer)>()
    private let pendingLimit = 256
    private(set) var connectFailures = 0
    private(set) var lastError: String?

    var name: String { "\(profile.name)->\(peer.name)" }
    var attachedFlows: Int { attachments.count }
    var pendingDatagrams: Int { pending.count }

    init(profile: Profile, peer: Peer, transport: TunnelTransport, settings: TunnelSettings,
         counters: GatewayCounters, loop: EventLoop, logger: Logger) {
        self.profile = profile
        self.peer = peer
        self.transport = transport
        self.settings = settings
        self.counters = counters
        self.loop = loop
        self.logger = logger
        self.logger[metadataKey: "tunnel"] = "\(profile.name)->\(peer.name)"
    }

    /// The session's view of one attached flow: survives reconnects for UDP.
    private final class Attachment: TunnelFlowEndpoint {
        let flow: EntryFlow
        weak var owner: EntryTunnel?
        var flowID: UInt32?

        init(flow: EntryFlow, owner: EntryTunnel) {
            self.flow = flow
            self.owner = owner
        }

        func tunnelDeliver(datagram: ByteBuffer) { flow.tunnelDeliver(datagram: datagram) }
        func tunnelDeliver(stream: ByteBuffer) { flow.tunnelDeliver(stream: stream) }
        func tunnelFlush() { flow.tunnelFlush() }
        func tunnelOpened() { flow.tunnelOpened() }
        func tunnelCreditAvailable() { flow.tunnelCreditAvailable() }
        func tunnelClosed(reason: CloseReason, message: String) {
            owner?.attachmentClosed(self, reason: reason, message: message)
        }
    }

    // MARK: Flows

    func attach(_ flow: EntryFlow) {
        let attachment = Attachment(flow: flow, owner: self)
        attachments[ObjectIdentifier(flow)] = attachment
        if let session = session, session.isEstablished {
            open(attachment, on: session)
        } else {
            ensureConnecting()
        }
    }

    func detach(_ flow: EntryFlow) {
        guard let attachment = attachments.removeValue(forKey: ObjectIdentifier(flow)) else { return }
        if let id = attachment.flowID, let session = session {
            attachment.flowID = nil
            session.closeFlow(id)
        }
    }

    /// Sends a datagram of an attached UDP flow; while the tunnel is not up it waits in a
    /// bounded queue (oldest dropped first, counted).
    func sendDatagram(from flow: EntryFlow, _ datagram: ByteBuffer) {
        guard let attachment = attachments[ObjectIdentifier(flow)] else { return }
        if let id = attachment.flowID, let session = session, session.isEstablished {
            session.sendDatagram(flow: id, datagram)
            return
        }
        if pending.count >= pendingLimit {
            _ = pending.popFirst()
            counters.pendingDatagramsDropped += 1
        }
        pending.append((ObjectIdentifier(flow), datagram))
        ensureConnecting()
    }

    private func open(_ attachment: Attachment, on session: TunnelSession) {
        guard let id = session.openFlow(kind: attachment.flow.kind, virtualPort: attachment.flow.virtualPort,
                                        endpoint: attachment) else { return }
        attachment.flowID = id
        attachment.flow.entryFlowBound(session: session, flowID: id)
    }

    private func attachmentClosed(_ attachment: Attachment, reason: CloseReason, message: String) {
        attachment.flowID = nil
        if session == nil, attachment.flow.kind == .udp, attachments[ObjectIdentifier(attachment.flow)] != nil {
            // The tunnel went away under a UDP flow: keep it; it re-opens on the next tunnel.
            return
        }
        attachments.removeValue(forKey: ObjectIdentifier(attachment.flow))
        attachment.flow.tunnelClosed(reason: reason, message: message)
    }

    // MARK: Connecting

    private func ensureConnecting() {
        guard session == nil, !connecting, reconnectTask == nil else { return }
        connect()
    }

    private func connect() {
        connecting = true
        let initiator: TunnelInitiator
        let shaping: ShapingParameters
        do {
            // The profile's shaping goes to the exit in message 1 (docs/shaping.md, "Negotiation").
            shaping = try profile.shapingParameters()
            initiator = try TunnelInitiator(serverPublicKey: peer.publicKey, psk: peer.psk, cellSize: peer.cellSize,
                                            options: shaping.encoded())
        } catch {
            connecting = false
            failWaiting(message: "cannot start a tunnel to peer '\(peer.name)': \(error)")
            return
        }
        let session = TunnelSession(initiator: initiator, name: name, cellSize: peer.cellSize,
                                    settings: settings, counters: counters, logger: logger, shaping: shaping,
                                    group: profile.name)
        session.delegate = self
        self.session = session
        logger.debug("connecting", metadata: ["transport": "\(transport.name)"])
        transport.connect(to: peer, on: loop) { channel in
            channel.pipeline.addHandler(session)
        }.whenFailure { [weak self] error in
            guard let self = self, self.session === session else { return }
            self.session = nil
            self.connectFailed(error)
        }
    }

    private func connectFailed(_ error: Error) {
        connecting = false
        connectFailures += 1
        lastError = "\(error)"
        logger.warning("cannot reach peer '\(peer.name)' through \(transport.name): \(error)")
        failWaiting(message: "cannot reach peer '\(peer.name)': \(error)")
        scheduleReconnect()
    }

    /// TCP flows that waited for this attempt fail now; UDP flows keep waiting (bounded).
    private func failWaiting(message: String) {
        for (key, attachment) in attachments where attachment.flow.kind == .tcp && attachment.flowID == nil {
            attachments.removeValue(forKey: key)
            attachment.flow.tunnelClosed(reason: .targetUnreachable, message: message)
        }
    }

    private func scheduleReconnect() {
        guard !attachments.isEmpty, reconnectTask == nil else {
            if attachments.isEmpty {
                counters.pendingDatagramsDropped += pending.count
                pending.removeAll()
            }
            return
        }
        let ceiling = TimeAmount.milliseconds(Int64(settings.maxReconnectDelaySeconds * 1000))
        let jitter = TimeAmount.milliseconds(Int64.random(in: 0...max(1, backoff.nanoseconds / 4_000_000)))
        let delay = min(backoff + jitter, ceiling)
        backoff = min(backoff * 2, ceiling)
        counters.tunnelReconnects += 1
        reconnectTask = loop.scheduleTask(in: delay) { [weak self] in
            guard let self = self else { return }
            self.reconnectTask = nil
            self.ensureConnecting()
        }
    }

    /// The anonymizer came back: try at once, with the backoff reset, if anything waits.
    func retryNow() {
        backoff = .milliseconds(500)
        guard reconnectTask != nil else { return }
        reconnectTask?.cancel()
        reconnectTask = nil
        ensureConnecting()
    }

    func tunnelEstablished(_ session: TunnelSession) {
        connecting = false
        backoff = .milliseconds(500)
        lastError = nil
        for attachment in attachments.values where attachment.flowID == nil {
            open(attachment, on: session)
        }
        while let (key, datagram) = pending.popFirst() {
            if let id = attachments[key]?.flowID {
                session.sendDatagram(flow: id, datagram)
            }
        }
    }

    func tunnelEnded(_ session: TunnelSession, error: Error?) {
        guard self.session === session else { return }
        let wasEstablished = !connecting
        self.session = nil
        connecting = false
        if let error = error { lastError = "\(error)" }
        if !wasEstablished {
            connectFailures += 1
            failWaiting(message: "tunnel to peer '\(peer.name)' failed: \(error.map { "\($0)" } ?? "closed during the handshake")")
        }
        for attachment in attachments.values { attachment.flowID = nil }
        scheduleReconnect()
    }

    func tunnel(_ session: TunnelSession, requestsFlow id: UInt32, _ request: OpenRequest) {}

    func shutdown() {
        reconnectTask?.cancel()
        reconnectTask = nil
        attachments.removeAll()
        pending.removeAll()
        session?.close()
    }
}
