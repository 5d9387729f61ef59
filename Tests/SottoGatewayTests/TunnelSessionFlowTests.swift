import NIOCore
import SottoConfig
import SottoTunnel
import XCTest
@testable import SottoGateway

/// Two TunnelSessions wired back to back: the handshake, UDP flows with fragmentation, TCP
/// streams under credit, closing and refusing flows (protocol.md, "Handshake" to "TCP streams").
final class TunnelSessionFlowTests: XCTestCase {
    func testTheHandshakeCompletesWithTheExitsKeyAndPSKAndBothSidesWriteExactlyOneCell() throws {
        let pair = try TunnelPair()
        try pair.connect()
        XCTAssertEqual(pair.entry.delegate.establishedCount, 1)
        XCTAssertEqual(pair.exit.delegate.establishedCount, 1)
        XCTAssertEqual(pair.entry.writeSizes, [514], "message 1 is exactly one cell")
        XCTAssertEqual(pair.exit.writeSizes, [514], "message 2 is exactly one cell")
        XCTAssertEqual(pair.exit.counters.tunnelHandshakeFailures, 0)
    }

    func testAHandshakeThatArrivesInPiecesCompletes() throws {
        let pair = try TunnelPair(cellSize: 256)
        let split: (ByteBuffer) -> [ByteBuffer] = { chunk in
            var chunk = chunk
            return [1, 100].compactMap { chunk.readSlice(length: $0) } + [chunk]
        }
        pair.entryToExit = split
        pair.exitToEntry = split
        try pair.connect()
        XCTAssertEqual(pair.entry.delegate.establishedCount, 1)
        XCTAssertEqual(pair.exit.delegate.establishedCount, 1)
    }

    func testA60000ByteDatagramArrivesIntactThroughFragmentationInBothDirections() throws {
        let pair = try TunnelPair()
        try pair.connect()
        let entryEndpoint = RecordingEndpoint()
        let id = try XCTUnwrap(pair.entry.session.openFlow(kind: .udp, virtualPort: 5684, endpoint: entryEndpoint))
        XCTAssertEqual(id % 2, 1, "flow ids chosen by the entry are odd")
        let outbound = patterned(count: 60_000)
        XCTAssertTrue(pair.entry.session.sendDatagram(flow: id, buffer(outbound)))
        try pair.pump()

        XCTAssertEqual(pair.exit.delegate.requests.map { $0.id }, [id])
        XCTAssertEqual(pair.exit.delegate.requests.first?.request, OpenRequest(kind: .udp, virtualPort: 5684))
        let exitEndpoint = try XCTUnwrap(pair.exit.delegate.accepted[id])
        XCTAssertEqual(exitEndpoint.datagrams.count, 1)
        XCTAssertTrue(exitEndpoint.datagrams.first == outbound, "the datagram changed on the way")
        XCTAssertGreaterThan(exitEndpoint.flushes, 0, "the endpoint was never asked to flush")
        // open + ceil(60000 / 484) fragments.
        XCTAssertEqual(pair.exit.session.counters.cellsReceived, 1 + 124)

        let inbound = patterned(count: 60_000, seed: 7)
        XCTAssertTrue(pair.exit.session.sendDatagram(flow: id, buffer(inbound)))
        try pair.pump()
        XCTAssertEqual(entryEndpoint.datagrams.count, 1)
        XCTAssertTrue(entryEndpoint.datagrams.first == inbound, "the answer changed on the way")
        XCTAssertEqual(pair.entry.session.counters.datagramsReceived, 1)
        pair.assertOnlyWholeCellsWritten()
    }

    func testDatagramsOfAllSizesAroundTheCellCapacityArriveInOrder() throws {
        let pair = try TunnelPair()
        try pair.connect()
        let id = try XCTUnwrap(pair.entry.session.openFlow(kind: .udp, virtualPort: 53, endpoint: RecordingEndpoint()))
        let sizes = [0, 1, 483, 484, 485, 968, 969, 65_507]
        for (n, size) in sizes.enumerated() {
            XCTAssertTrue(pair.entry.session.sendDatagram(flow: id, buffer(patterned(count: size, seed: n))), "size \(size)")
        }
        try pair.pump()
        let received = try XCTUnwrap(pair.exit.delegate.accepted[id]).datagrams
        XCTAssertEqual(received.map(\.count), sizes)
        XCTAssertTrue(received == sizes.enumerated().map { patterned(count: $0.element, seed: $0.offset) })
        pair.assertOnlyWholeCellsWritten()
    }

    func testADatagramBeyond65507BytesIsNotSentAndIsCounted() throws {
        let pair = try TunnelPair()
        try pair.connect()
        let id = try XCTUnwrap(pair.entry.session.openFlow(kind: .udp, virtualPort: 53, endpoint: RecordingEndpoint()))
        try pair.pump()
        let cellsBefore = pair.entry.session.counters.cellsSent
        XCTAssertFalse(pair.entry.session.sendDatagram(flow: id, buffer(patterned(count: 65_508))))
        try pair.pump()
        XCTAssertEqual(pair.entry.session.counters.datagramsDropped, 1)
        XCTAssertEqual(pair.entry.session.counters.cellsSent, cellsBefore)
        XCTAssertEqual(pair.exit.delegate.accepted[id]?.datagrams.count, 0)
    }

    func testAMegabyteStreamArrivesWholeAndInOrderAndNeverOutrunsTheReceiversWindow() throws {
        let window: UInt32 = 16_384
        let settings = TunnelSettings(streamWindow: window)
        let pair = try TunnelPair(entrySettings: settings, exitSettings: settings)
        try pair.connect()

        let payload = patterned(count: 1 << 20)
        var unsent = buffer(payload)
        let sender = RecordingEndpoint()
        var id: UInt32 = 0
        let session = pair.entry.session
        sender.onOpened = { session.sendStream(flow: id, &unsent) }
        sender.onCredit = { session.sendStream(flow: id, &unsent) }
        id = try XCTUnwrap(session.openFlow(kind: .tcp, virtualPort: 8080, endpoint: sender))
        try pair.pump()
        XCTAssertEqual(sender.openedCount, 1, "the exit's 'opened' never reached the entry")
        XCTAssertEqual(pair.exit.delegate.requests.first?.request, OpenRequest(kind: .tcp, virtualPort: 8080, window: window))
        let receiver = try XCTUnwrap(pair.exit.delegate.accepted[id])

        // The receiver's socket takes bytes only between pumps, so what arrives in one pump is
        // what the sender may have in flight: exactly the window while it has that much to send.
        var written = 0
        for _ in 0..<200 where written < payload.count {
            try pair.pump()
            let inFlight = receiver.stream.count - written
            XCTAssertEqual(inFlight, min(Int(window), payload.count - written),
                           "after \(written) bytes written, \(inFlight) bytes arrived unacknowledged")
            if inFlight == 0 { break }
            pair.exit.session.streamDelivered(flow: id, count: inFlight)
            written += inFlight
        }
        XCTAssertEqual(written, payload.count)
        XCTAssertTrue(receiver.stream == payload, "the stream arrived changed, reordered or incomplete")
        XCTAssertEqual(pair.exit.session.counters.streamBytesReceived, payload.count)
        XCTAssertEqual(pair.entry.session.counters.streamBytesSent, payload.count)
        XCTAssertTrue(receiver.closes.isEmpty && sender.closes.isEmpty, "a flow closed: \(receiver.closes) \(sender.closes)")
        pair.assertOnlyWholeCellsWritten()
    }

    func testTheExitStreamsBackWithinTheEntrysWindow() throws {
        let entryWindow: UInt32 = 4_000
        let pair = try TunnelPair(entrySettings: TunnelSettings(streamWindow: entryWindow))
        try pair.connect()
        let reply = patterned(count: 50_000, seed: 3)
        var unsent = buffer(reply)
        pair.exit.delegate.onAccept = { session, id, endpoint in
            endpoint.onCredit = { session.sendStream(flow: id, &unsent) }
            session.sendStream(flow: id, &unsent)
        }
        let receiver = RecordingEndpoint()
        let id = try XCTUnwrap(pair.entry.session.openFlow(kind: .tcp, virtualPort: 80, endpoint: receiver))
        var written = 0
        for _ in 0..<100 where written < reply.count {
            try pair.pump()
            let inFlight = receiver.stream.count - written
            XCTAssertLessThanOrEqual(inFlight, Int(entryWindow), "the exit outran the entry's window")
            if inFlight == 0 { break }
            pair.entry.session.streamDelivered(flow: id, count: inFlight)
            written += inFlight
        }
        XCTAssertTrue(receiver.stream == reply)
    }

    func testClosingAFlowOnEitherSideTellsTheOtherSide() throws {
        let pair = try TunnelPair()
        try pair.connect()
        let first = RecordingEndpoint()
        let firstID = try XCTUnwrap(pair.entry.session.openFlow(kind: .udp, virtualPort: 53, endpoint: first))
        let second = RecordingEndpoint()
        let secondID = try XCTUnwrap(pair.entry.session.openFlow(kind: .tcp, virtualPort: 80, endpoint: second))
        try pair.pump()
        XCTAssertEqual(pair.exit.session.flows.count, 2)

        pair.entry.session.closeFlow(firstID)
        try pair.pump()
        XCTAssertEqual(pair.exit.delegate.accepted[firstID]?.closes.map { $0.reason }, [.normal])
        XCTAssertNil(pair.exit.session.flows[firstID])
        XCTAssertNil(pair.entry.session.flows[firstID])
        XCTAssertFalse(pair.exit.session.sendDatagram(flow: firstID, buffer([1])), "a closed flow still carries datagrams")

        pair.exit.session.closeFlow(secondID, reason: .targetUnreachable, message: "connection reset")
        try pair.pump()
        XCTAssertEqual(second.closes.map { $0.reason }, [.targetUnreachable])
        XCTAssertEqual(second.closes.first?.message, "connection reset")
        XCTAssertNil(pair.entry.session.flows[secondID])
        XCTAssertTrue(pair.entry.channel.isActive && pair.exit.channel.isActive, "closing a flow closed the tunnel")
    }

    func testAFlowBeyondMaxFlowsIsRefusedWithLimitReachedAndCounted() throws {
        let pair = try TunnelPair(maxFlows: 2)
        try pair.connect()
        let endpoints = (0..<3).map { _ in RecordingEndpoint() }
        let ids = try endpoints.map { try XCTUnwrap(pair.entry.session.openFlow(kind: .udp, virtualPort: 53, endpoint: $0)) }
        try pair.pump()

        XCTAssertEqual(endpoints[2].closes.map { $0.reason }, [.limitReached])
        XCTAssertTrue(endpoints[0].closes.isEmpty && endpoints[1].closes.isEmpty)
        XCTAssertEqual(pair.exit.delegate.requests.map { $0.id }, Array(ids[0..<2]), "the delegate saw a flow past the limit")
        XCTAssertEqual(pair.exit.session.flows.count, 2)
        XCTAssertEqual(pair.exit.session.counters.flowLimitHits, 1)
        XCTAssertEqual(pair.exit.session.counters.flowsRefused, 1)
        XCTAssertNil(pair.entry.session.flows[ids[2]])
        XCTAssertTrue(pair.exit.channel.isActive, "a refused flow closed the tunnel")

        // The limit is on flows open at once: after one closes, a new one is accepted.
        pair.entry.session.closeFlow(ids[0])
        let fourth = RecordingEndpoint()
        let fourthID = try XCTUnwrap(pair.entry.session.openFlow(kind: .udp, virtualPort: 53, endpoint: fourth))
        try pair.pump()
        XCTAssertTrue(fourth.closes.isEmpty, "flow \(fourthID) refused: \(fourth.closes)")
        XCTAssertNotNil(pair.exit.session.flows[fourthID])
        XCTAssertEqual(pair.exit.session.counters.flowLimitHits, 1)
    }

    /// The exit answers a TCP open only once its target connected, so flows waiting for their
    /// target must count towards max_flows_per_tunnel, or an entry can make the exit open any
    /// number of sockets at once (configuration.md, "max_flows_per_tunnel").
    func testFlowsWaitingForTheirTargetCountTowardsMaxFlows() throws {
        let pair = try TunnelPair(maxFlows: 2)
        pair.exit.delegate.acceptsFlows = false  // like ExitService while its TCP connects are pending
        try pair.connect()
        let endpoints = (0..<3).map { _ in RecordingEndpoint() }
        for endpoint in endpoints {
            _ = try XCTUnwrap(pair.entry.session.openFlow(kind: .tcp, virtualPort: 80, endpoint: endpoint))
        }
        try pair.pump()
        XCTAssertEqual(pair.exit.delegate.requests.count, 2, "the delegate was asked to connect a flow past the limit")
        XCTAssertEqual(endpoints[2].closes.map { $0.reason }, [.limitReached])
        XCTAssertEqual(pair.exit.session.counters.flowLimitHits, 1)
    }

    /// A SOCKS client that hangs up while the exit is still connecting its target makes the
    /// entry close the flow; the exit's late 'opened' crosses that close on the wire. That race
    /// is normal and must cost neither the tunnel nor an orphaned flow at the exit.
    func testAFlowTheEntryClosedBeforeItOpenedNeitherEndsTheTunnelNorLingersAtTheExit() throws {
        let pair = try TunnelPair()
        pair.exit.delegate.acceptsFlows = false  // the exit's connect to its target is pending
        try pair.connect()
        let other = RecordingEndpoint()
        let otherID = try XCTUnwrap(pair.entry.session.openFlow(kind: .udp, virtualPort: 53, endpoint: other))
        let id = try XCTUnwrap(pair.entry.session.openFlow(kind: .tcp, virtualPort: 80, endpoint: RecordingEndpoint()))
        try pair.pump()
        let request = try XCTUnwrap(pair.exit.delegate.requests.last?.request)
        pair.exit.session.acceptFlow(otherID, request: pair.exit.delegate.requests[0].request, endpoint: RecordingEndpoint())

        pair.entry.session.closeFlow(id)  // the SOCKS client went away
        try pair.pump()
        let late = RecordingEndpoint()
        pair.exit.session.acceptFlow(id, request: request, endpoint: late)  // the target connected after all
        try pair.pump()

        XCTAssertTrue(pair.entry.channel.isActive, "the late 'opened' closed the entry's tunnel")
        XCTAssertTrue(other.closes.isEmpty, "an unrelated flow died with it: \(other.closes.map { $0.reason })")
        XCTAssertNil(pair.exit.session.flows[id], "the exit keeps a flow the entry already closed")
    }

    func testCellsWaitWhileTheTransportIsFullAndLeaveInOrderAndWholeDatagramsSurvive() throws {
        let pair = try TunnelPair()
        try pair.connect()
        let id = try XCTUnwrap(pair.entry.session.openFlow(kind: .udp, virtualPort: 53, endpoint: RecordingEndpoint()))
        try pair.pump()
        pair.entry.channel.isWritable = false
        pair.entry.channel.pipeline.fireChannelWritabilityChanged()

        // 40 datagrams of 124 cells each: more than the 4096-cell queue holds.
        var accepted: [[UInt8]] = []
        for n in 0..<40 {
            let datagram = patterned(count: 60_000, seed: n)
            if pair.entry.session.sendDatagram(flow: id, buffer(datagram)) { accepted.append(datagram) }
        }
        XCTAssertEqual(try pair.entry.takeOutbound().count, 0, "cells were written to a full transport")
        XCTAssertLessThanOrEqual(pair.entry.session.queuedCells, 4096, "the datagram queue grew past its bound")
        XCTAssertEqual(accepted.count, 4096 / 124, "the queue took \(accepted.count) whole datagrams")
        XCTAssertEqual(pair.entry.session.counters.datagramsDropped, 40 - accepted.count)

        pair.entry.channel.isWritable = true
        pair.entry.channel.pipeline.fireChannelWritabilityChanged()
        try pair.pump()
        XCTAssertEqual(pair.entry.session.queuedCells, 0)
        let received = try XCTUnwrap(pair.exit.delegate.accepted[id]).datagrams
        XCTAssertTrue(received == accepted, "\(received.count) datagrams arrived of \(accepted.count) accepted")
        XCTAssertTrue(pair.exit.channel.isActive)
        pair.assertOnlyWholeCellsWritten()
    }

    func testAFlowTheExitRefusesReachesTheEntryWithItsReasonAndMessage() throws {
        let pair = try TunnelPair()
        pair.exit.delegate.acceptsFlows = false
        try pair.connect()
        let endpoint = RecordingEndpoint()
        let id = try XCTUnwrap(pair.entry.session.openFlow(kind: .tcp, virtualPort: 9, endpoint: endpoint))
        try pair.pump()
        pair.exit.session.refuseFlow(id, reason: .noSuchPort, message: "tcp port 9 is not exposed")
        try pair.pump()
        XCTAssertEqual(endpoint.closes.map { $0.reason }, [.noSuchPort])
        XCTAssertEqual(endpoint.closes.first?.message, "tcp port 9 is not exposed")
        XCTAssertEqual(endpoint.openedCount, 0)
        XCTAssertEqual(pair.exit.session.counters.flowsRefused, 1)
    }

    func testEveryFlowIsToldWhenTheTunnelEnds() throws {
        let pair = try TunnelPair()
        try pair.connect()
        let endpoints = [RecordingEndpoint(), RecordingEndpoint()]
        _ = pair.entry.session.openFlow(kind: .udp, virtualPort: 53, endpoint: endpoints[0])
        _ = pair.entry.session.openFlow(kind: .tcp, virtualPort: 80, endpoint: endpoints[1])
        try pair.pump()
        try pair.entry.channel.close().wait()
        XCTAssertEqual(endpoints.map { $0.closes.count }, [1, 1])
        XCTAssertEqual(pair.entry.delegate.endings.count, 1)
        XCTAssertTrue(pair.entry.session.flows.isEmpty)
    }
}

/// The exit played by the test: what the entry session puts on the wire, cell by cell.
final class TunnelSessionCreditTests: XCTestCase {
    let keys = StaticKeyPair.generate()
    let psk = TunnelKeys.generatePSK()

    private func establishedEntry(window: UInt32 = 262_144) throws -> (SessionUnderTest, RawPeer) {
        let entry = try SessionUnderTest(entryTo: keys.publicKey, psk: psk, settings: TunnelSettings(streamWindow: window))
        try entry.activate()
        let peer = try RawPeer.acceptHandshake(from: entry, privateKey: keys.privateKey, psk: psk)
        return (entry, peer)
    }

    /// A sender with `count` bytes that sends whenever it gets credit.
    private func openStream(on entry: SessionUnderTest, count: Int) throws -> (UInt32, RecordingEndpoint) {
        var unsent = buffer(patterned(count: count))
        let endpoint = RecordingEndpoint()
        var id: UInt32 = 0
        let session = entry.session
        endpoint.onOpened = { session.sendStream(flow: id, &unsent) }
        endpoint.onCredit = { session.sendStream(flow: id, &unsent) }
        id = try XCTUnwrap(session.openFlow(kind: .tcp, virtualPort: 80, endpoint: endpoint))
        return (id, endpoint)
    }

    private func streamBytes(in cells: [Cell], flow: UInt32) -> Int {
        cells.filter { $0.type == .streamData && $0.flow == flow }.reduce(0) { $0 + $1.payload.count }
    }

    func testTheEntrySendsExactlyTheGrantedCreditAndThenWaitsForAWindowUpdate() throws {
        var (entry, peer) = try establishedEntry(window: 8_000)
        let (id, _) = try openStream(on: entry, count: 10_000)
        let open = try peer.open(entry.takeOutbound())
        XCTAssertEqual(open.map(\.type), [.open])
        XCTAssertEqual(try OpenRequest.decode(open[0].payload), OpenRequest(kind: .tcp, virtualPort: 80, window: 8_000))

        try entry.deliver(peer.seal(Cell(type: .opened, flow: id, payload: OpenedReply(window: 2_000).encode())))
        let first = try peer.open(entry.takeOutbound())
        XCTAssertEqual(streamBytes(in: first, flow: id), 2_000)
        XCTAssertTrue(first.allSatisfy { $0.payload.count <= CellCodec.payloadCapacity(cellSize: 514) })
        XCTAssertEqual(try entry.takeOutbound().count, 0, "the entry kept sending without credit")

        try entry.deliver(peer.seal(Cell(type: .windowUpdate, flow: id, payload: WindowUpdate(increment: 1_500).encode())))
        let second = try peer.open(entry.takeOutbound())
        XCTAssertEqual(streamBytes(in: second, flow: id), 1_500)
        XCTAssertEqual(try entry.takeOutbound().count, 0)
    }

    func testAWindowUpdateBeyondTheAnnouncedWindowEndsTheFlowWithProtocolError() throws {
        var (entry, peer) = try establishedEntry()
        let (id, endpoint) = try openStream(on: entry, count: 100)
        _ = try peer.open(entry.takeOutbound())  // the open cell
        try entry.deliver(peer.seal(Cell(type: .opened, flow: id, payload: OpenedReply(window: 2_000).encode())))
        _ = try peer.open(entry.takeOutbound())  // 100 bytes: credit is now 1900 of 2000
        try entry.deliver(peer.seal(Cell(type: .windowUpdate, flow: id, payload: WindowUpdate(increment: 101).encode())))
        let cells = try peer.open(entry.takeOutbound())
        XCTAssertEqual(cells.map(\.type), [.close])
        XCTAssertEqual(try CloseNotice.decode(cells[0].payload).reason, .protocolError)
        XCTAssertEqual(endpoint.closes.map { $0.reason }, [.protocolError])
        XCTAssertTrue(entry.channel.isActive, "one flow's error closed the whole tunnel")
    }

    func testStreamBytesBeyondTheEntrysWindowEndTheFlowAndAreNotDelivered() throws {
        var (entry, peer) = try establishedEntry(window: 1_000)
        let (id, endpoint) = try openStream(on: entry, count: 0)
        _ = try peer.open(entry.takeOutbound())  // the open cell
        try entry.deliver(peer.seal(Cell(type: .opened, flow: id, payload: OpenedReply(window: 1_000).encode())))
        for size in [484, 484, 33] {
            try entry.deliver(peer.seal(Cell(type: .streamData, flow: id, payload: patterned(count: size))))
        }
        XCTAssertEqual(endpoint.stream.count, 968, "bytes beyond the window were delivered")
        let cells = try peer.open(entry.takeOutbound())
        XCTAssertEqual(cells.map(\.type), [.close])
        XCTAssertEqual(try CloseNotice.decode(cells[0].payload).reason, .protocolError)
        XCTAssertEqual(endpoint.closes.map { $0.reason }, [.protocolError])
    }

    func testTheReceiverGrantsCreditOnceHalfItsWindowIsWritten() throws {
        var (entry, peer) = try establishedEntry(window: 1_000)
        let (id, endpoint) = try openStream(on: entry, count: 0)
        _ = try peer.open(entry.takeOutbound())  // the open cell
        try entry.deliver(peer.seal(Cell(type: .opened, flow: id, payload: OpenedReply(window: 1_000).encode())))
        try entry.deliver(peer.seal(Cell(type: .streamData, flow: id, payload: patterned(count: 484))))
        try entry.deliver(peer.seal(Cell(type: .streamData, flow: id, payload: patterned(count: 100))))
        XCTAssertEqual(endpoint.stream.count, 584)
        XCTAssertEqual(try entry.takeOutbound().count, 0, "credit returned before any byte was written")
        entry.session.streamDelivered(flow: id, count: 499)
        XCTAssertEqual(try entry.takeOutbound().count, 0, "credit returned before half the window was written")
        entry.session.streamDelivered(flow: id, count: 1)
        let cells = try peer.open(entry.takeOutbound())
        XCTAssertEqual(cells.map(\.type), [.windowUpdate])
        XCTAssertEqual(try WindowUpdate.decode(cells[0].payload).increment, 500)
    }
}

/// Cells that break the flow rules: the exit played by the test or the entry played by the test.
final class TunnelSessionViolationTests: XCTestCase {
    let keys = StaticKeyPair.generate()
    let psk = TunnelKeys.generatePSK()

    private func establishedExit() throws -> (SessionUnderTest, RawPeer) {
        let exit = try SessionUnderTest(exitWith: keys.privateKey, psk: psk)
        try exit.activate()
        let peer = try RawPeer.initiateHandshake(with: exit, publicKey: keys.publicKey, psk: psk)
        return (exit, peer)
    }

    private func openCell(flow: UInt32) -> Cell {
        Cell(type: .open, flow: flow, payload: OpenRequest(kind: .udp, virtualPort: 53).encode())
    }

    func testAnOpenForAnEvenFlowIDClosesTheTunnelAsAProtocolViolation() throws {
        var (exit, peer) = try establishedExit()
        try exit.deliver(peer.seal(openCell(flow: 2)))
        XCTAssertFalse(exit.channel.isActive)
        XCTAssertTrue(exit.delegate.requests.isEmpty, "the even flow reached the delegate")
        guard case .protocolViolation = exit.delegate.endedWithError else {
            return XCTFail("the tunnel ended with \(String(describing: exit.delegate.endings))")
        }
    }

    func testReusingAnOpenFlowIDClosesTheTunnel() throws {
        var (exit, peer) = try establishedExit()
        try exit.deliver(peer.seal(openCell(flow: 1)))
        XCTAssertEqual(exit.delegate.requests.map { $0.id }, [1])
        try exit.deliver(peer.seal(openCell(flow: 1)))
        XCTAssertFalse(exit.channel.isActive)
        XCTAssertEqual(exit.delegate.requests.count, 1)
    }

    func testAMalformedOpenIsRefusedWithProtocolErrorAndTheTunnelStays() throws {
        var (exit, peer) = try establishedExit()
        try exit.deliver(peer.seal(Cell(type: .open, flow: 1, payload: [9, 0, 53, 0, 0, 0, 0])))
        let cells = try peer.open(exit.takeOutbound())
        XCTAssertEqual(cells.map(\.type), [.close])
        XCTAssertEqual(cells.first?.flow, 1)
        XCTAssertEqual(try CloseNotice.decode(cells[0].payload).reason, .protocolError)
        XCTAssertTrue(exit.channel.isActive)
        XCTAssertTrue(exit.delegate.requests.isEmpty)
    }

    func testAnOpenSentByTheExitClosesTheEntrysTunnel() throws {
        let entry = try SessionUnderTest(entryTo: keys.publicKey, psk: psk)
        try entry.activate()
        var peer = try RawPeer.acceptHandshake(from: entry, privateKey: keys.privateKey, psk: psk)
        try entry.deliver(peer.seal(openCell(flow: 1)))
        XCTAssertFalse(entry.channel.isActive)
        guard case .protocolViolation = entry.delegate.endedWithError else {
            return XCTFail("the tunnel ended with \(String(describing: entry.delegate.endings))")
        }
    }

    func testAPingIsAnsweredWithAPongCarryingTheSameBytes() throws {
        var (exit, peer) = try establishedExit()
        let ping = PingPayload(value: 0x0102_0304_0506_0708).encode()
        try exit.deliver(peer.seal(Cell(type: .ping, payload: ping)))
        let cells = try peer.open(exit.takeOutbound())
        XCTAssertEqual(cells, [Cell(type: .pong, payload: ping)])
    }
}
