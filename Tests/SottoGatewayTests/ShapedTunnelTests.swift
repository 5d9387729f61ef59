import NIOCore
import NIOEmbedded
import SottoConfig
import SottoShaping
import SottoTunnel
import XCTest
@testable import SottoGateway

/// Shaping in a running tunnel (docs/shaping.md, "The gateway adapter"): two TunnelSessions on
/// one EmbeddedEventLoop, wired back to back, the loop's virtual clock driving the shapers'
/// timers. Every cell crossing the wire is counted per direction and per second.
/// The exit's flows: accepts every request, records what arrives, grants credit back for
/// stream bytes, and echoes datagrams when asked to.
final class ShapedExitDelegate: TunnelSessionDelegate {
    final class Endpoint: TunnelFlowEndpoint {
        weak var session: TunnelSession?
        let id: UInt32
        let echo: Bool
        var datagrams: [[UInt8]] = []
        var stream: [UInt8] = []

        init(session: TunnelSession, id: UInt32, echo: Bool) {
            self.session = session
            self.id = id
            self.echo = echo
        }

        func tunnelDeliver(datagram: ByteBuffer) {
            datagrams.append(bytes(datagram))
            if echo { session?.sendDatagram(flow: id, datagram) }
        }
        func tunnelDeliver(stream buffer: ByteBuffer) {
            stream.append(contentsOf: buffer.readableBytesView)
            session?.streamDelivered(flow: id, count: buffer.readableBytes)
        }
        func tunnelFlush() {}
        func tunnelClosed(reason: CloseReason, message: String) {}
    }

    var echo = false
    var accepted: [UInt32: Endpoint] = [:]

    func tunnelEstablished(_ session: TunnelSession) {}
    func tunnelEnded(_ session: TunnelSession, error: Error?) {}
    func tunnel(_ session: TunnelSession, requestsFlow id: UInt32, _ request: OpenRequest) {
        let endpoint = Endpoint(session: session, id: id, echo: echo)
        accepted[id] = endpoint
        session.acceptFlow(id, request: request, endpoint: endpoint)
    }
}

final class ShapedPair {
    let loop = EmbeddedEventLoop()
    let keys = StaticKeyPair.generate()
    let psk = TunnelKeys.generatePSK()
    let cellSize = 514
    let entry: TunnelSession
    let exit: TunnelSession
    let entryChannel: EmbeddedChannel
    let exitChannel: EmbeddedChannel
    let entryDelegate = RecordingDelegate()
    let exitDelegate = ShapedExitDelegate()
    /// Virtual nanoseconds of every cell that crossed, per direction.
    private(set) var entryToExitTimes: [Int64] = []
    private(set) var exitToEntryTimes: [Int64] = []
    /// Sizes of the writes each side made after the handshake.
    private(set) var entryWriteSizes: [Int] = []
    private(set) var exitWriteSizes: [Int] = []

    init(proposal: ShapingParameters, exitDefault: ShapingParameters = .off,
         exitLimits: ShapingLimits = .standardForGateway, sendProposal: Bool = true) throws {
        let responder = try TunnelResponder(staticPrivateKey: keys.privateKey, psk: psk, cellSize: cellSize)
        exit = TunnelSession(responder: responder, name: "svc", cellSize: cellSize, settings: .defaults, maxFlows: 256,
                             counters: GatewayCounters(), logger: quietLogger,
                             shapingDefault: exitDefault, shapingLimits: exitLimits)
        exit.delegate = exitDelegate
        let initiator = try TunnelInitiator(serverPublicKey: keys.publicKey, psk: psk, cellSize: cellSize,
                                            options: sendProposal ? proposal.encoded() : [])
        entry = TunnelSession(initiator: initiator, name: "p->svc", cellSize: cellSize, settings: .defaults,
                              counters: GatewayCounters(), logger: quietLogger, shaping: proposal)
        entry.delegate = entryDelegate
        exitChannel = EmbeddedChannel(handler: exit, loop: loop)
        entryChannel = EmbeddedChannel(handler: entry, loop: loop)
    }

    func connect() throws {
        let address = try SocketAddress(ipAddress: "192.0.2.7", port: 40_000)
        try exitChannel.connect(to: address).wait()
        try entryChannel.connect(to: address).wait()
        try pump()
        XCTAssertTrue(entry.isEstablished)
        XCTAssertTrue(exit.isEstablished)
        entryToExitTimes = []
        exitToEntryTimes = []
        entryWriteSizes = []
        exitWriteSizes = []
    }

    /// Moves what both sides wrote to the other side until nothing more moves (bounded).
    func pump() throws {
        let now = Int64(loop.now.uptimeNanoseconds)
        for _ in 0..<10_000 {
            loop.run()
            var moved = false
            while let chunk = try entryChannel.readOutbound(as: ByteBuffer.self) {
                moved = true
                entryWriteSizes.append(chunk.readableBytes)
                entryToExitTimes += Array(repeating: now, count: chunk.readableBytes / cellSize)
                if exitChannel.isActive { try exitChannel.writeInbound(chunk) }
            }
            while let chunk = try exitChannel.readOutbound(as: ByteBuffer.self) {
                moved = true
                exitWriteSizes.append(chunk.readableBytes)
                exitToEntryTimes += Array(repeating: now, count: chunk.readableBytes / cellSize)
                if entryChannel.isActive { try entryChannel.writeInbound(chunk) }
            }
            if !moved { return }
        }
        XCTFail("the sessions kept talking")
    }

    /// Advances the virtual clock by `duration` in `step`s, moving bytes after each step;
    /// `each` runs before every step (to inject traffic).
    func run(for duration: TimeAmount, step: TimeAmount = .milliseconds(5), each: (Int) throws -> Void = { _ in }) throws {
        let steps = Int(duration.nanoseconds / step.nanoseconds)
        for index in 0..<steps {
            try each(index)
            loop.advanceTime(by: step)
            try pump()
        }
    }

    /// Cells per whole second in [from, to) seconds of virtual time.
    static func perSecond(_ times: [Int64], from: Int64, to: Int64) -> [Int] {
        (from..<to).map { second in
            times.filter { $0 >= second * 1_000_000_000 && $0 < (second + 1) * 1_000_000_000 }.count
        }
    }
}

final class ShapedTunnelTests: XCTestCase {
    private let constant10 = try! ShapingParameters.constant(rate: 10, jitterFraction: 0.2)

    private func openUDP(_ pair: ShapedPair, echo: Bool) -> (UInt32, RecordingEndpoint) {
        pair.exitDelegate.echo = echo
        let endpoint = RecordingEndpoint()
        let id = pair.entry.openFlow(kind: .udp, virtualPort: 5684, endpoint: endpoint)!
        return (id, endpoint)
    }

    func testWithConstantTheCellRateIsTheSameIdleAndActiveInBothDirections() throws {
        let pair = try ShapedPair(proposal: constant10)
        try pair.connect()
        let (flow, entryEndpoint) = openUDP(pair, echo: true)
        let start = Int64(pair.loop.now.uptimeNanoseconds) / 1_000_000_000 + 1
        // 5 s idle, then 5 s with a 300-byte datagram every 400 ms each way (echoed).
        try pair.run(for: .seconds(6))
        var sent = 0
        try pair.run(for: .seconds(6)) { index in
            if index % 80 == 0 {
                pair.entry.sendDatagram(flow: flow, buffer(patterned(count: 300, seed: sent)))
                sent += 1
            }
        }
        // The last echo may still be on its way.
        XCTAssertGreaterThanOrEqual(entryEndpoint.datagrams.count, sent - 1, "echoes came back")
        for (direction, times) in [("entry→exit", pair.entryToExitTimes), ("exit→entry", pair.exitToEntryTimes)] {
            let idle = ShapedPair.perSecond(times, from: start, to: start + 5)
            let active = ShapedPair.perSecond(times, from: start + 6, to: start + 11)
            // Gaps are 100 ms ± 20 %: 80 to 120 ms, so 8 to 13 cells in any second.
            for count in idle + active {
                XCTAssertTrue((8...13).contains(count), "\(direction): \(count) cells in a second; idle \(idle), active \(active)")
            }
            // Over 5 s the jitter averages out: 50 ± a few either way, whatever the load.
            XCTAssertLessThanOrEqual(abs(idle.reduce(0, +) - active.reduce(0, +)), 4, "\(direction): idle \(idle), active \(active)")
        }
        // One cell per write (and flush), real or cover alike.
        XCTAssertEqual(Set(pair.entryWriteSizes), [pair.cellSize])
        XCTAssertEqual(Set(pair.exitWriteSizes), [pair.cellSize])
        let entryCounters = try XCTUnwrap(pair.entry.snapshot(side: "entry").shaping)
        let exitCounters = try XCTUnwrap(pair.exit.snapshot(side: "exit").shaping)
        XCTAssertGreaterThan(entryCounters.coverCells, 50)
        XCTAssertGreaterThan(exitCounters.coverCells, 50)
        XCTAssertGreaterThanOrEqual(entryCounters.realCells, sent)
        XCTAssertGreaterThanOrEqual(exitCounters.realCells, sent - 1)
        XCTAssertGreaterThan(exitCounters.coverCellsReceived, 50)
        XCTAssertNotNil(entryCounters.addedLatencyP50Ms)
    }

    func testDatagramsSentDuringShapingArriveIntactAndInOrder() throws {
        let pair = try ShapedPair(proposal: constant10)
        try pair.connect()
        let (flow, _) = openUDP(pair, echo: false)
        try pair.run(for: .milliseconds(300))
        // Sizes from one cell to several fragments, sent in one burst.
        let sizes = [1, 484, 2_000, 40, 5_000, 300]
        for (index, size) in sizes.enumerated() {
            XCTAssertTrue(pair.entry.sendDatagram(flow: flow, buffer(patterned(count: size, seed: index))))
        }
        try pair.run(for: .seconds(4))
        let received = try XCTUnwrap(pair.exitDelegate.accepted.values.first).datagrams
        XCTAssertEqual(received, sizes.enumerated().map { patterned(count: $1, seed: $0) })
        XCTAssertEqual(pair.entry.snapshot(side: "entry").shaping?.datagramsDropped, 0)
    }

    func testAShapedTCPTransferCompletesThroughBackPressureWithoutLoss() throws {
        let rate50 = try ShapingParameters.constant(rate: 50, jitterFraction: 0.1)
        let pair = try ShapedPair(proposal: rate50)
        try pair.connect()
        // Plays StreamBridge: keeps what the tunnel did not take and sends it when told to.
        let payload = patterned(count: 200_000, seed: 7)
        var pending = buffer(payload)
        let endpoint = RecordingEndpoint()
        var flowID: UInt32 = 0
        var pumps = 0
        let pumpStream = {
            pumps += 1
            pair.entry.sendStream(flow: flowID, &pending)
        }
        endpoint.onOpened = pumpStream
        endpoint.onCredit = pumpStream
        flowID = try XCTUnwrap(pair.entry.openFlow(kind: .tcp, virtualPort: 80, endpoint: endpoint))
        var elapsed = 0
        while elapsed < 60, (pair.exitDelegate.accepted.values.first?.stream.count ?? 0) < payload.count {
            try pair.run(for: .seconds(1))
            elapsed += 1
        }
        XCTAssertEqual(pair.exitDelegate.accepted.values.first?.stream, payload)
        XCTAssertEqual(pending.readableBytes, 0)
        let shaping = try XCTUnwrap(pair.entry.snapshot(side: "entry").shaping)
        XCTAssertGreaterThan(shaping.backPressureEvents, 0, "the 256-cell stream queue never filled")
        XCTAssertLessThanOrEqual(shaping.peakQueueDepth, 256 + 2 + 16, "stream data beyond the bound was queued")
        XCTAssertGreaterThan(pumps, 2, "the endpoint was never told to resume")
        // 200 KB in 484-byte cells at 50 cells/s takes about 8.3 s.
        XCTAssertGreaterThanOrEqual(elapsed, 8)
    }

    func testTheExitClampsAProposalToItsLimitsAndBothSidesApplyTheResult() throws {
        let limits = try ShapingLimits(allowedPolicies: [.off, .constant], maximumRate: 20, maximumJitterFraction: 0.5)
        let pair = try ShapedPair(proposal: try .constant(rate: 200, jitterFraction: 0.9), exitLimits: limits)
        try pair.connect()
        let expected = try ShapingParameters.constant(rate: 20, jitterFraction: 0.5)
        XCTAssertEqual(pair.exit.appliedShaping, expected)
        XCTAssertEqual(pair.entry.appliedShaping, expected)
        XCTAssertTrue(pair.entry.peerAnsweredShaping)
        XCTAssertEqual(pair.entry.snapshot(side: "entry").shaping?.policy, "\(expected)")
        try pair.run(for: .seconds(3))
        let perSecond = ShapedPair.perSecond(pair.exitToEntryTimes, from: 1, to: 3)
        for count in perSecond { XCTAssertTrue((13...30).contains(count), "exit sent \(perSecond) cells per second at 20/s") }
    }

    func testAPolicyTheExitDoesNotAllowGetsItsFallback() throws {
        let limits = try ShapingLimits(allowedPolicies: [.off, .constant])
        let pair = try ShapedPair(proposal: try .poisson(rate: 5), exitLimits: limits)
        try pair.connect()
        XCTAssertEqual(pair.exit.appliedShaping, .off)
        XCTAssertEqual(pair.entry.appliedShaping, .off)
    }

    func testAClientThatProposesNothingGetsTheServiceDefault() throws {
        let pair = try ShapedPair(proposal: .off, exitDefault: constant10, sendProposal: false)
        try pair.connect()
        XCTAssertEqual(pair.exit.appliedShaping, constant10)
        XCTAssertFalse(pair.exit.peerAnsweredShaping)
        // The entry proposed nothing and learns what the exit applies to its replies.
        XCTAssertEqual(pair.entry.appliedShaping, constant10)
    }

    func testOffSendsNoCoverAndBatchesAsBefore() throws {
        let pair = try ShapedPair(proposal: .off)
        try pair.connect()
        XCTAssertEqual(pair.exit.appliedShaping, .off)
        let (flow, _) = openUDP(pair, echo: false)
        try pair.run(for: .seconds(3))
        // Only the open crossed: no cover while idle.
        XCTAssertEqual(pair.entryToExitTimes.count, 1)
        XCTAssertEqual(pair.exitToEntryTimes.count, 0)
        for n in 0..<5 { pair.entry.sendDatagram(flow: flow, buffer(patterned(count: 100, seed: n))) }
        try pair.pump()
        // Five cells written in one event-loop turn leave in one write, as before shaping.
        XCTAssertEqual(pair.entryWriteSizes.last, 5 * pair.cellSize)
        let snapshot = try XCTUnwrap(pair.entry.snapshot(side: "entry").shaping)
        XCTAssertEqual(snapshot.coverCells, 0)
        XCTAssertEqual(snapshot.realCells, 6)
        XCTAssertEqual(snapshot.policy, "off")
    }
}

extension ShapedTunnelTests {
    func testDatagramsBeyondTheQueueBoundDropTheOldestAndAreCounted() throws {
        let slow = try ShapingParameters.constant(rate: 1, jitterFraction: 0)
        let pair = try ShapedPair(proposal: slow)
        try pair.connect()
        let (flow, _) = openUDP(pair, echo: false)
        try pair.run(for: .seconds(2))
        // 300 one-cell datagrams at once into a 256-cell datagram queue draining 1 cell/s.
        for n in 0..<300 { pair.entry.sendDatagram(flow: flow, buffer([UInt8(truncatingIfNeeded: n), 0xAB])) }
        let shaping = try XCTUnwrap(pair.entry.snapshot(side: "entry").shaping)
        XCTAssertEqual(shaping.datagramsDropped, 44)
        XCTAssertEqual(shaping.queueDepth, 256)
        try pair.run(for: .seconds(3), step: .milliseconds(50))
        // What arrives is the newest ones, in order: the oldest 44 were dropped.
        let received = try XCTUnwrap(pair.exitDelegate.accepted.values.first).datagrams
        XCTAssertFalse(received.isEmpty)
        XCTAssertEqual(received, (44..<(44 + received.count)).map { [UInt8(truncatingIfNeeded: $0), 0xAB] })
    }
}
