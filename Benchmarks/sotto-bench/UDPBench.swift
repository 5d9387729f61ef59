import NIOCore
import NIOPosix
import SottoSOCKS

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Where the probes go: straight to the echo server, or through a SOCKS5 UDP association.
enum UDPPath {
    case direct(target: Endpoint)
    case socks(server: Endpoint, credentials: UsernamePasswordRequest?, target: Endpoint)
}

func monotonicNanoseconds() -> UInt64 {
    NIODeadline.now().uptimeNanoseconds
}

/// Sends probes from one UDP socket and hands every echoed probe, with its arrival time, to
/// whichever measurement is running (`onProbe`). Lives on the channel's event loop.
final class UDPProbeHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    private var context: ChannelHandlerContext?
    /// The echo server (direct) or the SOCKS relay; set once the path is known.
    var destination: SocketAddress?
    /// Whether datagrams carry the RFC 1928 section 7 header (through a SOCKS relay).
    private let expectsHeader: Bool
    private let headerLength: Int
    private let payloadLength: Int
    /// Header and probe, written once; each send copies it and rewrites only run and sequence.
    private let template: ByteBuffer
    var onProbe: ((ProbePayload, UInt64) -> Void)?
    /// Datagrams that were no probe of the expected size (malformed, truncated or foreign).
    private(set) var strays: UInt64 = 0

    /// `socksHeader` must be encodable (`SOCKSUDPHeader.checkEncodable(_:)`).
    init(socksHeader: SOCKSUDPHeader?, payloadLength: Int) {
        self.payloadLength = payloadLength
        var body = ProbePayload.template(length: payloadLength)
        ProbePayload(run: 0, sequence: 0).write(into: &body)
        var buffer = ByteBuffer()
        buffer.reserveCapacity((socksHeader?.encodedLength ?? 0) + body.count)
        expectsHeader = socksHeader != nil
        headerLength = socksHeader.map { buffer.writeSOCKSUDPHeader($0) } ?? 0
        buffer.writeBytes(body)
        template = buffer
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Queues one probe; call `flush()` after a batch.
    func send(run: UInt32, sequence: UInt64) {
        guard let context, let destination else { return }
        context.write(wrapOutboundOut(AddressedEnvelope(remoteAddress: destination,
                                                        data: datagram(run: run, sequence: sequence))),
                      promise: nil)
    }

    /// The datagram of one probe: the template with its run and sequence set.
    func datagram(run: UInt32, sequence: UInt64) -> ByteBuffer {
        var buffer = template
        buffer.setInteger(run, at: headerLength + 4)
        buffer.setInteger(sequence, at: headerLength + 8)
        return buffer
    }

    /// The probe in a received datagram, or nil for anything else: a malformed or truncated
    /// header, a fragment (FRAG != 0: RFC 1928 section 7 lets a client drop what it does not
    /// reassemble, and no proxy under test fragments), or a body that is not a probe of the
    /// expected size.
    static func probe(in datagram: ByteBuffer, expectsHeader: Bool, payloadLength: Int) -> ProbePayload? {
        var buffer = datagram
        if expectsHeader {
            guard let header = try? buffer.readSOCKSUDPHeader(), header.fragment == 0 else { return nil }
        }
        guard buffer.readableBytes == payloadLength else { return nil }
        return buffer.withUnsafeReadableBytes { ProbePayload.parse($0) }
    }

    func flush() {
        context?.flush()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let now = monotonicNanoseconds()
        guard let probe = Self.probe(in: unwrapInboundIn(data).data, expectsHeader: expectsHeader,
                                     payloadLength: payloadLength) else {
            strays += 1
            return
        }
        onProbe?(probe, now)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // One failed send (ENOBUFS under load, say) is a lost datagram, not the end of the run.
        benchLog("udp: \(error)")
    }
}

/// One UDP source socket and, through SOCKS, its association's control connection.
final class UDPFlow {
    let channel: Channel
    let control: Channel?
    let handler: UDPProbeHandler
    var eventLoop: EventLoop { channel.eventLoop }

    private init(channel: Channel, control: Channel?, handler: UDPProbeHandler) {
        self.channel = channel
        self.control = control
        self.handler = handler
    }

    static func open(on eventLoop: EventLoop, path: UDPPath, payloadLength: Int) async throws -> UDPFlow {
        switch path {
        case .direct(let target):
            let handler = UDPProbeHandler(socksHeader: nil, payloadLength: payloadLength)
            let destination = try socketAddress(target)
            let channel = try await bind(on: eventLoop, like: target, handler: handler, payloadLength: payloadLength)
            try await eventLoop.submit { handler.destination = destination }.get()
            return UDPFlow(channel: channel, control: nil, handler: handler)

        case .socks(let server, let credentials, let target):
            // RFC 1928 section 7: every datagram to the relay starts with the target's address.
            let header = SOCKSUDPHeader(address: try target.socksAddress())
            try SOCKSUDPHeader.checkEncodable(header.address)
            let handler = UDPProbeHandler(socksHeader: header, payloadLength: payloadLength)
            let channel = try await bind(on: eventLoop, like: server, handler: handler, payloadLength: payloadLength)
            do {
                // RFC 1928 section 7: DST in the request is the address the client will send from.
                guard let local = channel.localAddress, let source = endpoint(of: local) else {
                    throw BenchError("the UDP socket has no local address")
                }
                let (control, bound) = try await SOCKSConnector.connect(
                    group: eventLoop, server: server, credentials: credentials,
                    command: .udpAssociate, destination: source, next: ControlConnectionHandler())
                // An unspecified BND.ADDR means "the address you reached me at".
                let relay = bound.host.isUnspecified ? Endpoint(host: server.host, port: bound.port) : bound
                do {
                    try relay.requireLoopback(role: "UDP relay (BND.ADDR of the SOCKS reply)", allowPeerName: false)
                    let destination = try socketAddress(relay)
                    try await eventLoop.submit { handler.destination = destination }.get()
                } catch {
                    control.close(promise: nil)
                    throw error
                }
                return UDPFlow(channel: channel, control: control, handler: handler)
            } catch {
                channel.close(promise: nil)
                throw error
            }
        }
    }

    private static func bind(on eventLoop: EventLoop, like peer: Endpoint, handler: UDPProbeHandler,
                             payloadLength: Int) async throws -> Channel {
        let local = if case .ipv6 = peer.host { "::1" } else { "127.0.0.1" }
        return try await BenchServers.datagramBootstrap(group: eventLoop, maximumDatagram: payloadLength + 512)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .bind(host: local, port: 0).get()
    }

    func close() async {
        if let control { try? await control.close() }
        try? await channel.close()
    }
}

// MARK: - Round trip

struct RoundTripResult {
    var summary: LatencySummary
    var lost: Int
}

/// Sends one probe, waits for its echo (or a timeout), sends the next: the round trip is timed on
/// the event loop from just before the send to the moment the echo is read.
final class RoundTripSeries {
    private let handler: UDPProbeHandler
    private let loop: EventLoop
    private let run: UInt32
    private let count: Int
    private let warmup: Int
    private let timeout: UInt64
    private let warmupTimeout: UInt64
    private let promise: EventLoopPromise<RoundTripResult>

    /// A path that loses this many probes in a row is treated as broken.
    static let maximumConsecutiveLosses = 10
    /// A path whose first warm-up probes all get no echo is treated as broken.
    static let maximumWarmupLosses = 3

    private var index = 0
    private var sentAt: UInt64 = 0
    private var samples: [UInt64] = []
    private var lost = 0
    private var warmupLost = 0
    private var consecutiveLosses = 0
    private var checker: RepeatedTask?
    private var done = false

    init(flow: UDPFlow, run: UInt32, count: Int, warmup: Int, timeout: TimeAmount, warmupTimeout: TimeAmount) {
        handler = flow.handler
        loop = flow.eventLoop
        self.run = run
        self.count = count
        self.warmup = warmup
        self.timeout = UInt64(timeout.nanoseconds)
        self.warmupTimeout = UInt64(warmupTimeout.nanoseconds)
        promise = loop.makePromise()
        samples.reserveCapacity(count)
    }

    func start() -> EventLoopFuture<RoundTripResult> {
        loop.execute { [self] in
            handler.onProbe = { [self] probe, now in received(probe, at: now) }
            checker = loop.scheduleRepeatedTask(initialDelay: .milliseconds(10), delay: .milliseconds(10)) { [self] _ in
                checkTimeout()
            }
            sendNext()
        }
        return promise.futureResult
    }

    private func sendNext() {
        if index == warmup + count {
            return finish()
        }
        sentAt = monotonicNanoseconds()
        handler.send(run: run, sequence: UInt64(index))
        handler.flush()
    }

    private func received(_ probe: ProbePayload, at now: UInt64) {
        // A late echo of a probe already counted lost is ignored.
        guard !done, probe.run == run, probe.sequence == UInt64(index) else { return }
        if index >= warmup { samples.append(now - sentAt) }
        consecutiveLosses = 0
        index += 1
        sendNext()
    }

    private func checkTimeout() {
        guard !done else { return }
        let inWarmup = index < warmup
        guard monotonicNanoseconds() - sentAt > (inWarmup ? warmupTimeout : timeout) else { return }
        consecutiveLosses += 1
        if inWarmup {
            warmupLost += 1
            if warmupLost >= Self.maximumWarmupLosses {
                return fail(BenchError("no echo came back for \(warmupLost) warm-up probes (\(warmupTimeout / 1_000_000_000) s each): is the echo server reachable on this path?"))
            }
        } else {
            lost += 1
            if consecutiveLosses >= Self.maximumConsecutiveLosses {
                return fail(BenchError("\(consecutiveLosses) probes in a row got no echo within \(timeout / 1_000_000) ms: the path stopped working"))
            }
        }
        index += 1
        sendNext()
    }

    private func finish() {
        guard !done else { return }
        done = true
        checker?.cancel()
        guard let summary = LatencySummary(samples: samples) else {
            return promise.fail(BenchError("no round trip was measured"))
        }
        promise.succeed(RoundTripResult(summary: summary, lost: lost))
    }

    private func fail(_ error: Error) {
        guard !done else { return }
        done = true
        checker?.cancel()
        promise.fail(error)
    }
}

// MARK: - Loss-free rate

struct WindowResult {
    var offered: Int
    var sent: Int
    var received: Int
    var sendNanoseconds: UInt64

    var lossFree: Bool { received == sent }
    /// What the sender really achieved; below `offered` when the sender could not keep up.
    var achievedRate: Double {
        guard sendNanoseconds > 0 else { return Double(sent) }
        return Double(sent) * 1_000_000_000 / Double(sendNanoseconds)
    }
}

/// Offers `rate` datagrams/s for one window, paced in small batches, then waits for the echoes.
final class RateWindow {
    private let handler: UDPProbeHandler
    private let loop: EventLoop
    private let run: UInt32
    private let rate: Int
    private let total: Int
    private let drain: UInt64
    private let tick: TimeAmount
    private let maximumPerTick: Int
    private let promise: EventLoopPromise<WindowResult>

    private var seen: [Bool]
    private var sent = 0
    private var received = 0
    private var startedAt: UInt64 = 0
    private var sendEndedAt: UInt64 = 0
    private var ticker: RepeatedTask?
    private var drainer: RepeatedTask?
    private var done = false

    init(flow: UDPFlow, run: UInt32, rate: Int, window: TimeAmount, drain: TimeAmount) {
        handler = flow.handler
        loop = flow.eventLoop
        self.run = run
        self.rate = rate
        total = max(1, Int(Double(rate) * Double(window.nanoseconds) / 1_000_000_000))
        self.drain = UInt64(drain.nanoseconds)
        // Small, frequent batches: about 8 datagrams per tick, ticks of 100 µs to 1 ms, so the
        // path sees a smooth rate rather than bursts that overflow a socket buffer.
        let tickNanos = min(max(8_000_000_000 / Int64(rate), 100_000), 1_000_000)
        tick = .nanoseconds(tickNanos)
        // Catch-up after a late tick is capped at 1 ms worth of datagrams, so a stalled sender
        // never fires a long burst; the window then takes longer and `achievedRate` says so.
        maximumPerTick = max(1, rate / 1000, Int(2 * Double(rate) * Double(tickNanos) / 1_000_000_000))
        seen = [Bool](repeating: false, count: total)
        promise = loop.makePromise()
    }

    func start() -> EventLoopFuture<WindowResult> {
        loop.execute { [self] in
            handler.onProbe = { [self] probe, _ in received(probe) }
            startedAt = monotonicNanoseconds()
            ticker = loop.scheduleRepeatedTask(initialDelay: .zero, delay: tick) { [self] _ in sendDue() }
        }
        return promise.futureResult
    }

    private func sendDue() {
        guard !done, sent < total else { return }
        let now = monotonicNanoseconds()
        let due = min(total, Int(Double(now - startedAt) * Double(rate) / 1_000_000_000) + 1)
        var batch = min(due - sent, maximumPerTick)
        guard batch > 0 else { return }
        while batch > 0 {
            handler.send(run: run, sequence: UInt64(sent))
            sent += 1
            batch -= 1
        }
        handler.flush()
        if sent == total {
            sendEndedAt = monotonicNanoseconds()
            ticker?.cancel()
            drainer = loop.scheduleRepeatedTask(initialDelay: .milliseconds(5), delay: .milliseconds(5)) { [self] _ in
                if received == sent || monotonicNanoseconds() - sendEndedAt > drain { finish() }
            }
        }
    }

    private func received(_ probe: ProbePayload) {
        guard !done, probe.run == run, probe.sequence < UInt64(total), !seen[Int(probe.sequence)] else { return }
        seen[Int(probe.sequence)] = true
        received += 1
        if sent == total, received == total { finish() }
    }

    private func finish() {
        guard !done else { return }
        done = true
        ticker?.cancel()
        drainer?.cancel()
        promise.succeed(WindowResult(offered: rate, sent: sent, received: received,
                                     sendNanoseconds: sendEndedAt - startedAt))
    }
}

// MARK: - Many flows

/// Keeps one flow alive with a probe a second and counts its echoes.
final class FlowKeeper {
    let flow: UDPFlow
    private let run: UInt32
    private var task: RepeatedTask?
    private(set) var sent = 0
    private(set) var received = 0

    init(flow: UDPFlow, run: UInt32) {
        self.flow = flow
        self.run = run
    }

    /// Called on the flow's event loop.
    func start(after delay: TimeAmount) {
        flow.handler.onProbe = { [self] probe, _ in
            if probe.run == run { received += 1 }
        }
        task = flow.eventLoop.scheduleRepeatedTask(initialDelay: delay, delay: .seconds(1)) { [self] _ in
            flow.handler.send(run: run, sequence: UInt64(sent))
            flow.handler.flush()
            sent += 1
        }
    }

    /// Called on the flow's event loop.
    func stop() {
        task?.cancel()
        task = nil
    }
}

/// Raises the open-file limit to the hard limit: 1,000 flows need 2,000 descriptors here.
func raiseOpenFileLimit(needed: Int) throws {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
    if limit.rlim_cur != rlim_t.max, Int(limit.rlim_cur) < needed {
        throw BenchError("\(needed) file descriptors are needed but the limit is \(limit.rlim_cur); raise it with 'ulimit -n'")
    }
}

// These classes are touched only on their channel's event loop (NIO's confinement); the
// @Sendable closures that carry them there (submit, execute, scheduled tasks) never race.
extension UDPProbeHandler: @unchecked Sendable {}
extension FlowKeeper: @unchecked Sendable {}
extension RoundTripSeries: @unchecked Sendable {}
extension RateWindow: @unchecked Sendable {}
