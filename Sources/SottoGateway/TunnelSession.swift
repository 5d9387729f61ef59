import Logging
import NIOCore
import SottoConfig
import SottoShaping
import SottoTunnel

/// The local end of one flow: a SOCKS client, a forward's client, or (at the exit) the socket
/// to the exposed target. Every call comes on the tunnel's event loop.
protocol TunnelFlowEndpoint: AnyObject {
    /// A whole datagram arrived for this flow.
    func tunnelDeliver(datagram: ByteBuffer)
    /// Stream bytes arrived; the endpoint calls `TunnelSession.streamDelivered` once it wrote them.
    func tunnelDeliver(stream: ByteBuffer)
    /// Called once per read burst of the tunnel, so endpoints can flush what they wrote.
    func tunnelFlush()
    /// (entry, TCP) the exit connected the target; stream data may flow.
    func tunnelOpened()
    /// The flow is gone: the peer closed it, or the tunnel ended.
    func tunnelClosed(reason: CloseReason, message: String)
    /// The peer granted more stream credit.
    func tunnelCreditAvailable()
}

extension TunnelFlowEndpoint {
    func tunnelDeliver(stream: ByteBuffer) {}
    func tunnelOpened() {}
    func tunnelCreditAvailable() {}
}

protocol TunnelSessionDelegate: AnyObject {
    func tunnelEstablished(_ session: TunnelSession)
    /// The tunnel's transport closed. `error` says why when it was not a clean close.
    func tunnelEnded(_ session: TunnelSession, error: Error?)
    /// Exit side: the entry asks for a flow; answer with `acceptFlow` or `refuseFlow`.
    func tunnel(_ session: TunnelSession, requestsFlow id: UInt32, _ request: OpenRequest)
}

enum TunnelSessionError: Error, CustomStringConvertible {
    case handshakeTimeout
    case idleTimeout(seconds: Double)
    case protocolViolation(String)

    var description: String {
        switch self {
        case .handshakeTimeout: return "the handshake did not complete in time"
        case .idleTimeout(let s): return "nothing received for \(Int(s)) s"
        case .protocolViolation(let what): return "protocol violation: \(what)"
        }
    }
}

/// One tunnel over one reliable byte stream: the Noise handshake, then fixed-size cells that
/// multiplex many UDP flows and TCP streams (docs/protocol.md). Lives in the transport
/// channel's pipeline; all state is confined to that channel's event loop.
final class TunnelSession: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Role: String { case entry, exit }

    private enum State {
        case initiating(TunnelInitiator)
        case responding(TunnelResponder)
        case established
        case refusing
        case closed
    }

    final class Flow {
        let id: UInt32
        let kind: FlowKind
        let virtualPort: Int
        var endpoint: TunnelFlowEndpoint?
        var credit: StreamCredit?
        var awaitingOpened: Bool
        var nextMessage: UInt16 = 0
        var lastActivity: NIODeadline
        var datagramsSent = 0, datagramsReceived = 0, bytesSent = 0, bytesReceived = 0

        init(id: UInt32, kind: FlowKind, virtualPort: Int, endpoint: TunnelFlowEndpoint, awaitingOpened: Bool, now: NIODeadline) {
            self.id = id
            self.kind = kind
            self.virtualPort = virtualPort
            self.endpoint = endpoint
            self.awaitingOpened = awaitingOpened
            self.lastActivity = now
        }
    }

    let role: Role
    let name: String
    /// What `sotto status` sums this tunnel's shaping into: its profile (entry) or service (exit).
    let group: String
    let cellSize: Int
    let settings: TunnelSettings
    let maxFlows: Int
    let counters = TunnelCounters()
    private let gatewayCounters: GatewayCounters
    weak var delegate: TunnelSessionDelegate?
    private var logger: Logger

    private var state: State
    private var context: ChannelHandlerContext?
    private var inbound = ByteBuffer()
    private var sealer: CellSealer?
    private var opener: CellOpener?
    private var scheduler: CellScheduler?
    private var reassembler = Reassembler()
    private(set) var flows: [UInt32: Flow] = [:]
    /// Exit side: flows the delegate was asked for and has not yet accepted or refused.
    private var requestedFlows: Set<UInt32> = []
    private var nextFlowID: UInt32 = 1
    private var endpointsToFlush: [ObjectIdentifier: TunnelFlowEndpoint] = [:]
    private var flushScheduled = false
    /// The channel's writability as NIO last reported it (`channelWritabilityChanged`): the
    /// schedulers ask before every cell, and reading it through the channel each time cost
    /// about 4 % of a shaped exit's CPU samples.
    private var transportWritable = true
    private var canWriteNow: Bool { transportWritable && context != nil }
    /// The 500 ms housekeeping tick (keep-alive, idle timeout, flow expiry), a deadline in the
    /// loop's shared `SlotTimer` rather than a NIO task per tunnel.
    private var tickTimer: (slots: SlotTimer, id: UInt64)?
    private static let tickInterval = TimeAmount.milliseconds(500)
    // Times come from the event loop's clock, so tests can drive them.
    private var startedAt = NIODeadline.now()
    private var lastSent = NIODeadline.now()
    private var lastReceived = NIODeadline.now()
    private var now: NIODeadline { context?.eventLoop.now ?? NIODeadline.now() }
    private(set) var remoteDescription = "?"
    private let payloadCapacity: Int
    /// Entry: what this side proposes (and shapes with if the exit answers nothing).
    private let shapingProposal: ShapingParameters
    /// Exit: the limits proposals are clamped to, and what a client proposing nothing gets.
    private let shapingLimits: ShapingLimits?
    private let shapingDefault: ShapingParameters
    private let shapingQueueLimits: ShapingQueueLimits
    /// The parameters this side's send side applies, once negotiated.
    private(set) var appliedShaping: ShapingParameters = .off
    /// Whether the peer said what it applies (false: an old peer, empty options).
    private(set) var peerAnsweredShaping = false

    /// Entry side: the initiator, pinned to the peer's static key.
    /// `shaping` must be what the initiator's options carry (`shaping.encoded()`, or empty for `off`).
    init(initiator: TunnelInitiator, name: String, cellSize: Int, settings: TunnelSettings,
         counters: GatewayCounters, logger: Logger, shaping: ShapingParameters = .off, group: String? = nil,
         queueLimits: ShapingQueueLimits = TunnelSession.defaultQueueLimits) {
        self.group = group ?? name
        self.shapingProposal = shaping
        self.shapingLimits = nil
        self.shapingDefault = .off
        self.shapingQueueLimits = queueLimits
        self.role = .entry
        self.state = .initiating(initiator)
        self.name = name
        self.cellSize = cellSize
        self.plaintextScratch = [UInt8](repeating: 0, count: cellSize - TunnelConstants.tagSize)
        self.settings = settings
        self.maxFlows = Int.max
        self.gatewayCounters = counters
        self.logger = logger
        self.payloadCapacity = CellCodec.payloadCapacity(cellSize: cellSize)
    }

    /// Exit side: the responder with the service's static key.
    /// `shapingDefault` applies to a client that proposes nothing; every proposal is clamped
    /// to `shapingLimits` (ShapingLimits' defaults when nil).
    init(responder: TunnelResponder, name: String, cellSize: Int, settings: TunnelSettings,
         maxFlows: Int, counters: GatewayCounters, logger: Logger,
         shapingDefault: ShapingParameters = .off, shapingLimits: ShapingLimits? = nil,
         queueLimits: ShapingQueueLimits = TunnelSession.defaultQueueLimits) {
        self.group = name
        self.shapingProposal = .off
        self.shapingLimits = shapingLimits
        self.shapingDefault = shapingDefault
        self.shapingQueueLimits = queueLimits
        self.role = .exit
        self.state = .responding(responder)
        self.name = name
        self.cellSize = cellSize
        self.plaintextScratch = [UInt8](repeating: 0, count: cellSize - TunnelConstants.tagSize)
        self.settings = settings
        self.maxFlows = maxFlows
        self.gatewayCounters = counters
        self.logger = logger
        self.payloadCapacity = CellCodec.payloadCapacity(cellSize: cellSize)
    }

    deinit {
        if let (slots, id) = tickTimer { slots.unregister(id) }
    }

    var isEstablished: Bool { if case .established = state { return true } else { return false } }
    var queuedCells: Int { scheduler?.queuedCells ?? 0 }
    var reassemblyPartial: Int { reassembler.partialCount }
    var age: TimeAmount { now - startedAt }
    var eventLoop: EventLoop? { context?.eventLoop }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        transportWritable = context.channel.isWritable
        if context.channel.isActive { start(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context: context)
        context.fireChannelActive()
    }

    private func start(context: ChannelHandlerContext) {
        guard tickTimer == nil else { return }
        remoteDescription = context.channel.remoteAddress.map { "\($0)" } ?? "?"
        logger[metadataKey: "remote"] = "\(remoteDescription)"
        startedAt = now
        lastReceived = now
        lastSent = now
        let slots = SlotTimer.on(context.eventLoop)
        var nextTick = now + Self.tickInterval
        var id: UInt64 = 0
        id = slots.register { [weak self] in
            guard let self = self, self.tickTimer != nil else { return }
            self.tick()
            nextTick = nextTick + Self.tickInterval
            if self.tickTimer != nil { slots.schedule(id, at: nextTick.uptimeNanoseconds) }
        }
        tickTimer = (slots, id)
        slots.schedule(id, at: nextTick.uptimeNanoseconds)
        if case .initiating(var initiator) = state {
            do {
                let first = try initiator.makeFirstMessage()
                state = .initiating(initiator)
                writeRaw(first)
                context.flush()
            } catch {
                fail(error)
            }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if case .refusing = state { return }
        if case .closed = state { return }
        lastReceived = now
        // Whole cells are taken straight from the read; only a partial cell is kept over.
        if inbound.readableBytes > 0 {
            inbound.writeBuffer(&bytes)
            swap(&inbound, &bytes)
            inbound.clear()
        }
        while bytes.readableBytes >= cellSize, let block = bytes.readBytes(length: cellSize) {
            receiveBlock(block)
            if case .refusing = state { return }
            if case .closed = state { return }
        }
        if bytes.readableBytes > 0 { inbound.writeBuffer(&bytes) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushEndpoints()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        transportWritable = context.channel.isWritable
        scheduler?.writabilityChanged(isWritable: transportWritable)
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        end(error: nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        logger.debug("tunnel transport error", metadata: ["error": "\(error)"])
        fail(error)
    }

    // MARK: Receiving

    private func receiveBlock(_ block: [UInt8]) {
        switch state {
        case .initiating(var initiator):
            do {
                let established = try initiator.readResponse(block)
                appliedShaping = entryShaping(answer: established.peerOptions)
                becomeEstablished(established)
            } catch {
                gatewayCounters.tunnelHandshakeFailures += 1
                logger.warning("tunnel handshake with \(name) failed: \(error)")
                fail(error)
            }
        case .responding(var responder):
            do {
                let proposal = try responder.readFirstMessage(block)
                appliedShaping = exitShaping(proposal: proposal)
                let (reply, established) = try responder.makeResponse(options: appliedShaping.encoded())
                writeRaw(reply)
                context?.flush()
                becomeEstablished(established)
            } catch {
                refuseHandshake(error)
            }
        case .established:
            receiveCell(block)
        case .refusing, .closed:
            return
        }
    }

    /// Exit (docs/shaping.md, "Negotiation"): the client's proposal clamped to this service's
    /// limits; no proposal (an old client) or one that does not decode gets the default, clamped.
    private func exitShaping(proposal: [UInt8]) -> ShapingParameters {
        let limits = shapingLimits ?? ShapingLimits.standardForGateway
        guard !proposal.isEmpty else { return limits.clamp(shapingDefault) }
        do {
            peerAnsweredShaping = true
            return limits.clamp(try ShapingParameters(encoded: proposal))
        } catch {
            logger.notice("tunnel \(name): unusable shaping proposal (\(error)); applying this service's default")
            return limits.clamp(shapingDefault)
        }
    }

    /// Entry: what the exit says it applies, which this side applies too. An exit that answers
    /// nothing (an old one, which shapes nothing) leaves this side with its own proposal.
    private func entryShaping(answer: [UInt8]) -> ShapingParameters {
        guard !answer.isEmpty else { return shapingProposal }
        do {
            let applied = try ShapingParameters(encoded: answer)
            peerAnsweredShaping = true
            if applied != shapingProposal {
                logger.notice("tunnel \(name): the exit applies shaping \(applied) instead of the proposed \(shapingProposal)")
            }
            return applied
        } catch {
            logger.warning("tunnel \(name): the exit's shaping answer does not decode (\(error)); shaping with this side's proposal")
            return shapingProposal
        }
    }

    /// An exit that cannot authenticate the first message answers nothing at all: it stops
    /// reading and closes after a random delay, so a prober learns neither that this is Sotto
    /// nor, from the timing, why it failed.
    private func refuseHandshake(_ error: Error) {
        gatewayCounters.tunnelHandshakeFailures += 1
        logger.warning("refused tunnel handshake on service \(name) from \(remoteDescription): \(error)")
        state = .refusing
        guard let context = context else { return }
        context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
        let delay = TimeAmount.milliseconds(Int64.random(in: 500...3000))
        context.eventLoop.scheduleTask(in: delay) { [weak self] in
            self?.context?.close(promise: nil)
        }
    }

    private func becomeEstablished(_ established: TunnelEstablished) {
        sealer = established.sealer
        opener = established.opener
        state = .established
        if appliedShaping.policy == .off || context == nil {
            scheduler = ImmediateScheduler(
                limit: 4096,
                canWrite: { [weak self] in self?.canWriteNow ?? false },
                emit: { [weak self] cell in self?.emit(cell) },
                flush: { [weak self] in self?.flushNow() })
        } else {
            let shaped = ShapedScheduler(
                parameters: appliedShaping, queueLimits: shapingQueueLimits, cellSize: cellSize,
                eventLoop: context!.eventLoop,
                canWrite: { [weak self] in self?.canWriteNow ?? false },
                // One cell per write and flush, real or cover (docs/shaping.md, adapter step 4).
                emit: { [weak self] cell in self?.emitAndFlush(cell) })
            shaped.onStreamResume = { [weak self] in self?.streamQueueDrained() }
            scheduler = shaped
            shaped.start()
        }
        logger.info("tunnel established", metadata: ["tunnel": "\(name)", "side": "\(role.rawValue)",
                                                    "shaping": "\(appliedShaping)"])
        delegate?.tunnelEstablished(self)
    }

    private func receiveCell(_ block: [UInt8]) {
        let cell: Cell
        do {
            guard opener != nil else { return }
            // Opened in place into a reused buffer: no allocation per cell on this path.
            receiveScratch.removeAll(keepingCapacity: true)
            try opener!.open(block, appendingTo: &receiveScratch)
            cell = try receiveScratch.withUnsafeBytes { try CellCodec.decode($0) }
        } catch {
            // A cell that does not authenticate means the stream was tampered with (forged,
            // replayed, reordered or truncated cells): nothing after it can be trusted.
            gatewayCounters.cellAuthenticationFailures += 1
            logger.warning("tunnel \(name): closing after an invalid cell from \(remoteDescription): \(error)")
            fail(error)
            return
        }
        counters.cellsReceived += 1
        counters.bytesReceived += cellSize
        handle(cell)
    }

    private func handle(_ cell: Cell) {
        switch cell.type {
        case .cover:
            counters.coverCellsReceived += 1
        case .pong:
            return
        case .ping:
            send(Cell(type: .pong, payload: cell.payload))
        case .open:
            handleOpen(cell)
        case .opened:
            if flows[cell.flow] == nil, role == .entry, cell.flow % 2 == 1, cell.flow < nextFlowID {
                // We closed this flow before the exit's answer crossed our close: not an error.
                return
            }
            guard let flow = flows[cell.flow], flow.kind == .tcp, flow.awaitingOpened,
                  let reply = try? OpenedReply.decode(cell.payload) else {
                protocolViolation("unexpected 'opened' for flow \(cell.flow)")
                return
            }
            flow.awaitingOpened = false
            flow.credit = StreamCredit(initialSendWindow: reply.window, receiveWindow: settings.streamWindow)
            flow.endpoint?.tunnelOpened()
        case .close:
            let notice = (try? CloseNotice.decode(cell.payload)) ?? CloseNotice(reason: .protocolError, message: "malformed close")
            if requestedFlows.remove(cell.flow) != nil { return }  // the entry gave up before we answered
            guard let flow = flows.removeValue(forKey: cell.flow) else { return }
            reassembler.removeFlow(flow.id)
            let endpoint = flow.endpoint
            flow.endpoint = nil
            endpoint?.tunnelClosed(reason: notice.reason, message: notice.message)
        case .datagram:
            guard let flow = flows[cell.flow], flow.kind == .udp else {
                counters.datagramsDropped += 1
                return
            }
            flow.lastActivity = now
            switch reassembler.receive(cell, now: UInt64(now.uptimeNanoseconds)) {
            case .complete(let bytes):
                flow.datagramsReceived += 1
                flow.bytesReceived += bytes.count
                counters.datagramsReceived += 1
                var buffer = context?.channel.allocator.buffer(capacity: bytes.count) ?? ByteBuffer()
                buffer.writeBytes(bytes)
                if let endpoint = flow.endpoint {
                    endpoint.tunnelDeliver(datagram: buffer)
                    endpointsToFlush[ObjectIdentifier(endpoint)] = endpoint
                }
            case .pending:
                return
            case .dropped:
                counters.datagramsDropped += 1
            }
        case .streamData:
            guard let flow = flows[cell.flow], flow.kind == .tcp, var credit = flow.credit else {
                // Data may still arrive for a flow we closed a moment ago: not an error.
                return
            }
            do {
                try credit.received(cell.payload.count)
            } catch {
                flow.credit = credit
                closeFlow(flow.id, reason: .protocolError, message: "peer sent beyond its credit")
                return
            }
            flow.credit = credit
            flow.lastActivity = now
            flow.bytesReceived += cell.payload.count
            counters.streamBytesReceived += cell.payload.count
            var buffer = context?.channel.allocator.buffer(capacity: cell.payload.count) ?? ByteBuffer()
            buffer.writeBytes(cell.payload)
            if let endpoint = flow.endpoint {
                endpoint.tunnelDeliver(stream: buffer)
                endpointsToFlush[ObjectIdentifier(endpoint)] = endpoint
            }
        case .windowUpdate:
            guard let flow = flows[cell.flow], var credit = flow.credit,
                  let update = try? WindowUpdate.decode(cell.payload) else { return }
            do {
                try credit.grant(update.increment)
            } catch {
                flow.credit = credit
                closeFlow(flow.id, reason: .protocolError, message: "window overflow")
                return
            }
            flow.credit = credit
            flow.endpoint?.tunnelCreditAvailable()
        }
    }

    private func handleOpen(_ cell: Cell) {
        guard role == .exit else {
            protocolViolation("the exit opened a flow")
            return
        }
        let request: OpenRequest
        do {
            request = try OpenRequest.decode(cell.payload)
        } catch {
            logger.info("tunnel \(name): refusing a malformed open: \(error)")
            counters.flowsRefused += 1
            sendClose(cell.flow, reason: .protocolError, message: "malformed open: \(error)")
            return
        }
        guard flows[cell.flow] == nil, !requestedFlows.contains(cell.flow), cell.flow % 2 == 1 else {
            protocolViolation("flow id \(cell.flow) reused or even")
            return
        }
        if flows.count + requestedFlows.count >= maxFlows {
            counters.flowLimitHits += 1
            counters.flowsRefused += 1
            logger.notice("tunnel \(name): flow limit \(maxFlows) reached, refusing a new flow")
            sendClose(cell.flow, reason: .limitReached, message: "limit of \(maxFlows) flows per tunnel reached")
            return
        }
        requestedFlows.insert(cell.flow)
        delegate?.tunnel(self, requestsFlow: cell.flow, request)
    }

    private func protocolViolation(_ what: String) {
        logger.warning("tunnel \(name): \(what); closing")
        fail(TunnelSessionError.protocolViolation(what))
    }

    private func flushEndpoints() {
        guard !endpointsToFlush.isEmpty else { return }
        let endpoints = endpointsToFlush
        endpointsToFlush.removeAll(keepingCapacity: true)
        for (_, endpoint) in endpoints { endpoint.tunnelFlush() }
    }

    // MARK: Flows (called by endpoints, on the tunnel's event loop)

    /// Entry side: opens a flow to the exit's virtual port. Returns its id.
    func openFlow(kind: FlowKind, virtualPort: Int, endpoint: TunnelFlowEndpoint) -> UInt32? {
        guard role == .entry, isEstablished else { return nil }
        let id = nextFlowID
        nextFlowID &+= 2
        let flow = Flow(id: id, kind: kind, virtualPort: virtualPort, endpoint: endpoint,
                        awaitingOpened: kind == .tcp, now: now)
        flows[id] = flow
        counters.flowsOpened += 1
        let request = OpenRequest(kind: kind, virtualPort: UInt16(virtualPort), window: kind == .tcp ? settings.streamWindow : 0)
        send(Cell(type: .open, flow: id, payload: request.encode()))
        return id
    }

    /// Exit side: takes a requested flow. For TCP, call it once the target is connected.
    /// Returns false when the entry gave up on the flow meanwhile: the caller closes its socket.
    @discardableResult
    func acceptFlow(_ id: UInt32, request: OpenRequest, endpoint: TunnelFlowEndpoint) -> Bool {
        guard flows[id] == nil, requestedFlows.remove(id) != nil else { return false }
        let flow = Flow(id: id, kind: request.kind, virtualPort: Int(request.virtualPort), endpoint: endpoint,
                        awaitingOpened: false, now: now)
        if request.kind == .tcp {
            flow.credit = StreamCredit(initialSendWindow: request.window, receiveWindow: settings.streamWindow)
            send(Cell(type: .opened, flow: id, payload: OpenedReply(window: settings.streamWindow).encode()))
        }
        flows[id] = flow
        counters.flowsOpened += 1
        return true
    }

    /// Exit side: refuses a requested flow.
    func refuseFlow(_ id: UInt32, reason: CloseReason, message: String) {
        guard requestedFlows.remove(id) != nil else { return }
        counters.flowsRefused += 1
        sendClose(id, reason: reason, message: message)
    }

    /// Sends one datagram on a UDP flow. False when it was dropped (queue full, too large).
    @discardableResult
    func sendDatagram(flow id: UInt32, _ datagram: ByteBuffer) -> Bool {
        guard isEstablished, let flow = flows[id], flow.kind == .udp, let scheduler = scheduler else { return false }
        let bytes = Array(datagram.readableBytesView)
        let cells: [Cell]
        do {
            cells = try Fragmenter.cells(for: bytes, flow: id, message: flow.nextMessage, cellSize: cellSize)
        } catch {
            counters.datagramsDropped += 1
            return false
        }
        flow.nextMessage &+= 1
        flow.lastActivity = now
        for (index, cell) in cells.enumerated() {
            switch scheduler.submit(cell, kind: index == 0 ? .datagram : .datagramContinuation) {
            case .accepted:
                continue
            case .droppedOlder:
                // An older queued datagram made room for this one (drop-oldest).
                counters.datagramsDropped += 1
            case .refused:
                // The queue filled up part-way: the receiver's reassembly will drop the partial
                // datagram by age; count it here once.
                counters.datagramsDropped += 1
                return false
            }
        }
        flow.datagramsSent += 1
        flow.bytesSent += bytes.count
        counters.datagramsSent += 1
        return true
    }

    /// How many stream bytes the flow may send now.
    func sendableStreamBytes(flow id: UInt32) -> Int {
        guard isEstablished, scheduler?.canAcceptStream ?? false, let flow = flows[id], let credit = flow.credit else { return 0 }
        return credit.sendable
    }

    /// Sends as much of `buffer` as the flow's credit allows, consuming it from the buffer.
    func sendStream(flow id: UInt32, _ buffer: inout ByteBuffer) {
        guard isEstablished, let flow = flows[id], var credit = flow.credit else { return }
        // Back-pressure (docs/shaping.md, "Queues"): while the shaper's stream queue is full,
        // what is left stays with the endpoint, which stops reading its socket until
        // `tunnelCreditAvailable` (StreamBridge's existing credit path).
        while buffer.readableBytes > 0, scheduler?.canAcceptStream ?? false {
            let n = min(buffer.readableBytes, payloadCapacity, credit.sendable)
            guard n > 0, let chunk = buffer.readBytes(length: n) else { break }
            credit.consumeSend(n)
            flow.bytesSent += n
            counters.streamBytesSent += n
            _ = scheduler?.submit(Cell(type: .streamData, flow: id, payload: chunk), kind: .stream)
        }
        flow.credit = credit
        flow.lastActivity = now
    }

    /// The endpoint wrote `count` received stream bytes to its socket: maybe grant more credit.
    func streamDelivered(flow id: UInt32, count: Int) {
        guard let flow = flows[id], var credit = flow.credit else { return }
        let increment = credit.delivered(count)
        flow.credit = credit
        if let increment = increment {
            send(Cell(type: .windowUpdate, flow: id, payload: WindowUpdate(increment: increment).encode()))
        }
    }

    /// The local side of a flow ended: tell the peer and forget the flow.
    func closeFlow(_ id: UInt32, reason: CloseReason = .normal, message: String = "") {
        guard let flow = flows.removeValue(forKey: id) else { return }
        reassembler.removeFlow(id)
        sendClose(id, reason: reason, message: message)
        let endpoint = flow.endpoint
        flow.endpoint = nil
        if reason != .normal { endpoint?.tunnelClosed(reason: reason, message: message) }
    }

    private func sendClose(_ id: UInt32, reason: CloseReason, message: String) {
        // Queued as stream data, not control: a close must not overtake the flow's data.
        send(Cell(type: .close, flow: id, payload: CloseNotice(reason: reason, message: message).encode()), kind: .stream)
    }

    /// The shaper's stream queue drained after back-pressure: the flows read again.
    private func streamQueueDrained() {
        for flow in flows.values where flow.kind == .tcp {
            flow.endpoint?.tunnelCreditAvailable()
        }
    }

    /// Closes the whole tunnel.
    func close() {
        context?.close(promise: nil)
    }

    // MARK: Sending

    /// Control cells (open, opened, window update, ping, pong) by default: they may overtake data.
    private func send(_ cell: Cell, kind: ShapingCellKind = .control) {
        guard isEstablished else { return }
        if scheduler?.submit(cell, kind: kind) == .refused {
            logger.warning("tunnel \(name): the shaper's control queue is full; dropped a \(cell.type) cell")
        }
    }

    /// Shaped send side: seals, writes and flushes one cell, real or cover alike.
    private func emitAndFlush(_ cell: Cell) {
        guard seal(cell) else { return }
        flushNow()
    }

    /// Seals and writes one cell; the scheduler decides when this runs.
    private func emit(_ cell: Cell) {
        guard let context = context, seal(cell) else { return }
        if wireBatch.count >= Self.wireBatchLimit { writeBatch() }
        scheduleFlush(context)
    }

    /// Encodes and seals one cell onto the wire batch: the one path every cell takes, real,
    /// control or cover. False when the tunnel failed.
    private func seal(_ cell: Cell) -> Bool {
        guard sealer != nil, context != nil else { return false }
        do {
            plaintextScratch.withUnsafeMutableBytes { CellCodec.encode(cell, into: $0) }
            try sealer!.seal(plaintextScratch, appendingTo: &wireBatch)
            counters.cellsSent += 1
            counters.bytesSent += cellSize
            lastSent = now
            return true
        } catch {
            fail(error)
            return false
        }
    }

    /// Sealed cells collect here and go to the transport as one buffer per flush (or per
    /// 64 KiB), which costs far less than one write per cell.
    private static let wireBatchLimit = 64 * 1024
    /// Control cells get a larger bound than the core's default: a refused window update would
    /// stall its flow for good.
    static let defaultQueueLimits = try! ShapingQueueLimits(datagramCells: 256, streamCells: 256, controlCells: 4096)
    private var wireBatch: [UInt8] = []
    private var receiveScratch: [UInt8] = []
    /// One cell's plaintext, encoded in place before sealing. A stored property, not `lazy`: a
    /// lazy array has no in-place mutation, so every cell would copy it.
    private var plaintextScratch: [UInt8]

    private func writeBatch() {
        guard !wireBatch.isEmpty, let context = context else { return }
        let buffer = context.channel.allocator.buffer(bytes: wireBatch)
        wireBatch.removeAll(keepingCapacity: true)
        context.write(wrapOutboundOut(buffer), promise: nil)
    }

    private func flushNow() {
        writeBatch()
        context?.flush()
    }

    private func writeRaw(_ bytes: [UInt8]) {
        guard let context = context else { return }
        var buffer = context.channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        context.write(wrapOutboundOut(buffer), promise: nil)
    }

    /// Many cells written in one event-loop turn leave in one flush.
    private func scheduleFlush(_ context: ChannelHandlerContext) {
        guard !flushScheduled else { return }
        flushScheduled = true
        context.eventLoop.execute { [weak self] in
            guard let self = self else { return }
            self.flushScheduled = false
            self.flushNow()
        }
    }

    // MARK: Time

    private func tick() {
        let now = self.now
        switch state {
        case .initiating, .responding:
            if now - startedAt > .seconds(Int64(settings.handshakeTimeoutSeconds)) {
                if role == .exit {
                    refuseHandshake(TunnelSessionError.handshakeTimeout)
                } else {
                    fail(TunnelSessionError.handshakeTimeout)
                }
            }
        case .established:
            if now - lastReceived > .milliseconds(Int64(settings.idleTimeoutSeconds * 1000)) {
                logger.notice("tunnel \(name): nothing received for \(Int(settings.idleTimeoutSeconds)) s; closing")
                fail(TunnelSessionError.idleTimeout(seconds: settings.idleTimeoutSeconds))
                return
            }
            if now - lastSent > .milliseconds(Int64(settings.keepaliveSeconds * 1000)) {
                send(Cell(type: .ping, payload: (0..<8).map { _ in UInt8.random(in: 0...255) }))
            }
            let idleLimit = TimeAmount.milliseconds(Int64(settings.udpFlowIdleSeconds * 1000))
            for flow in flows.values where flow.kind == .udp && now - flow.lastActivity > idleLimit {
                closeFlow(flow.id, reason: .idleTimeout, message: "no datagram for \(Int(settings.udpFlowIdleSeconds)) s")
            }
            _ = reassembler.expire(now: UInt64(now.uptimeNanoseconds))
        case .refusing, .closed:
            return
        }
    }

    // MARK: Ending

    private func fail(_ error: Error) {
        end(error: error)
        context?.close(promise: nil)
    }

    private func end(error: Error?) {
        if case .closed = state { return }
        let wasEstablished = isEstablished
        state = .closed
        if let (slots, id) = tickTimer { slots.unregister(id) }
        tickTimer = nil
        scheduler?.stop()
        if let shaping = shapingCounters {
            gatewayCounters.recordEnded(side: sideName, group: group, counters: shaping,
                                        coverCellsReceived: counters.coverCellsReceived)
        }
        if wasEstablished {
            logger.info("tunnel closed", metadata: ["tunnel": "\(name)", "error": "\(error.map { "\($0)" } ?? "none")"])
        }
        // The owner learns first, so that flows told below can tell a lost tunnel from a
        // flow the peer closed.
        delegate?.tunnelEnded(self, error: error)
        delegate = nil
        let endedFlows = flows
        flows.removeAll()
        for flow in endedFlows.values {
            let endpoint = flow.endpoint
            flow.endpoint = nil
            endpoint?.tunnelClosed(reason: .targetUnreachable, message: "the tunnel closed")
        }
    }

    func snapshot(side: String) -> StatusSnapshot.Tunnel {
        let now = self.now
        var tunnel = StatusSnapshot.Tunnel(
            side: side, name: name, remote: remoteDescription,
            state: stateName, ageSeconds: Double(age.nanoseconds) / 1e9, cellSize: cellSize,
            cellsSent: counters.cellsSent, cellsReceived: counters.cellsReceived,
            bytesSent: counters.bytesSent, bytesReceived: counters.bytesReceived,
            datagramsSent: counters.datagramsSent, datagramsReceived: counters.datagramsReceived,
            datagramsDropped: counters.datagramsDropped,
            streamBytesSent: counters.streamBytesSent, streamBytesReceived: counters.streamBytesReceived,
            queuedCells: queuedCells, flowsOpen: flows.count, flowsOpened: counters.flowsOpened,
            flowsRefused: counters.flowsRefused, flowLimitHits: counters.flowLimitHits,
            reassemblyPartial: reassembler.partialCount,
            flows: flows.values.sorted { $0.id < $1.id }.map { flow in
                StatusSnapshot.Flow(
                    id: flow.id, kind: flow.kind == .udp ? "udp" : "tcp", virtualPort: flow.virtualPort,
                    datagramsSent: flow.datagramsSent, datagramsReceived: flow.datagramsReceived,
                    bytesSent: flow.bytesSent, bytesReceived: flow.bytesReceived,
                    idleSeconds: Double((now - flow.lastActivity).nanoseconds) / 1e9)
            })
        if scheduler != nil { tunnel.shaping = shapingSnapshot() }
        return tunnel
    }

    var sideName: String { role == .entry ? "entry" : "exit" }

    /// This side's shaping counters; nil before the handshake chose a scheduler. `off` has no
    /// core: its real cells are all the cells sent.
    var shapingCounters: ShapingCounters? {
        guard let scheduler else { return nil }
        return scheduler.shapingCounters ?? {
            var c = ShapingCounters()
            c.realCells = counters.cellsSent
            c.realBytes = counters.bytesSent
            return c
        }()
    }

    private func shapingSnapshot() -> StatusSnapshot.Shaping {
        StatusSnapshot.Shaping(policy: "\(appliedShaping)", peerAnswered: peerAnsweredShaping,
                               counters: shapingCounters ?? ShapingCounters(),
                               coverCellsReceived: counters.coverCellsReceived, queueDepth: queuedCells)
    }

    private var stateName: String {
        switch state {
        case .initiating, .responding: return "handshaking"
        case .established: return "established"
        case .refusing: return "refusing"
        case .closed: return "closed"
        }
    }
}
