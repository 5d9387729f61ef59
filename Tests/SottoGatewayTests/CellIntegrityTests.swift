import NIOCore
import SottoTunnel
import XCTest
@testable import SottoGateway

/// A cell that fails to decrypt ends the tunnel: forged, replayed or reordered cells mean the
/// byte stream can no longer be trusted (protocol.md, "Cells").
final class CellIntegrityTests: XCTestCase {
    /// A pair with one UDP flow open; returns the pair, the flow id and the entry's endpoint.
    private func pairWithFlow() throws -> (TunnelPair, UInt32, RecordingEndpoint) {
        let pair = try TunnelPair()
        try pair.connect()
        let endpoint = RecordingEndpoint()
        let id = try XCTUnwrap(pair.entry.session.openFlow(kind: .udp, virtualPort: 53, endpoint: endpoint))
        try pair.pump()
        XCTAssertNotNil(pair.exit.delegate.accepted[id])
        return (pair, id, endpoint)
    }

    private func flipping(bit: Int, of chunk: ByteBuffer) -> ByteBuffer {
        var raw = bytes(chunk)
        raw[bit / 8] ^= UInt8(1 << (bit % 8))
        return buffer(raw)
    }

    func testAForgedCellFromTheEntryClosesTheExitCountsAndDeliversNothing() throws {
        // A bit in the first byte, in the middle of the ciphertext, and in the tag.
        for bit in [0, 514 * 8 / 2 + 3, 514 * 8 - 1] {
            let (pair, id, _) = try pairWithFlow()
            var tamper = true
            pair.entryToExit = { [unowned self] chunk in
                defer { tamper = false }
                return tamper ? [self.flipping(bit: bit, of: chunk)] : [chunk]
            }
            XCTAssertTrue(pair.entry.session.sendDatagram(flow: id, buffer([1, 2, 3])))
            try pair.pump()
            XCTAssertFalse(pair.exit.channel.isActive, "bit \(bit): the exit kept a tampered tunnel")
            XCTAssertEqual(pair.exit.counters.cellAuthenticationFailures, 1, "bit \(bit)")
            XCTAssertEqual(pair.exit.delegate.accepted[id]?.datagrams.count, 0, "bit \(bit): the forged cell was delivered")
            XCTAssertEqual(pair.exit.session.counters.cellsReceived, 1, "bit \(bit): only the open counts as received")
            XCTAssertEqual(pair.exit.delegate.endings.count, 1)
            XCTAssertNotNil(pair.exit.delegate.endings.first ?? nil, "bit \(bit): the tunnel ended without an error")
        }
    }

    func testAForgedCellFromTheExitClosesTheEntryCountsAndDeliversNothing() throws {
        let (pair, id, endpoint) = try pairWithFlow()
        pair.exitToEntry = { [unowned self] chunk in [self.flipping(bit: 100, of: chunk)] }
        XCTAssertTrue(pair.exit.session.sendDatagram(flow: id, buffer([4, 5, 6])))
        try pair.pump()
        XCTAssertFalse(pair.entry.channel.isActive)
        XCTAssertEqual(pair.entry.counters.cellAuthenticationFailures, 1)
        XCTAssertTrue(endpoint.datagrams.isEmpty)
        XCTAssertEqual(endpoint.closes.count, 1, "the flow was not told its tunnel ended")
    }

    func testAReplayedCellClosesTheTunnelAndIsNotDeliveredTwice() throws {
        let (pair, id, _) = try pairWithFlow()
        var captured: [ByteBuffer] = []
        pair.entryToExit = { chunk in
            captured.append(chunk)
            return [chunk]
        }
        XCTAssertTrue(pair.entry.session.sendDatagram(flow: id, buffer([7, 7, 7])))
        try pair.pump()
        let exitEndpoint = try XCTUnwrap(pair.exit.delegate.accepted[id])
        XCTAssertEqual(exitEndpoint.datagrams, [[7, 7, 7]])
        XCTAssertEqual(captured.count, 1)

        try pair.exit.deliver(captured[0])
        XCTAssertFalse(pair.exit.channel.isActive, "a replayed cell was accepted")
        XCTAssertEqual(pair.exit.counters.cellAuthenticationFailures, 1)
        XCTAssertEqual(exitEndpoint.datagrams, [[7, 7, 7]], "the replayed cell was delivered again")
    }

    func testReorderedCellsCloseTheTunnelAndNeitherIsDelivered() throws {
        let (pair, id, _) = try pairWithFlow()
        var held: [ByteBuffer] = []
        pair.entryToExit = { chunk in
            held.append(chunk)
            return []
        }
        XCTAssertTrue(pair.entry.session.sendDatagram(flow: id, buffer([1])))
        XCTAssertTrue(pair.entry.session.sendDatagram(flow: id, buffer([2])))
        try pair.pump()
        XCTAssertEqual(held.count, 2)
        try pair.exit.deliver(held[1])
        try pair.exit.deliver(held[0])
        XCTAssertFalse(pair.exit.channel.isActive)
        XCTAssertEqual(pair.exit.counters.cellAuthenticationFailures, 1)
        XCTAssertEqual(pair.exit.delegate.accepted[id]?.datagrams.count, 0)
    }

    func testNothingAfterABadCellInTheSameReadIsDelivered() throws {
        let (pair, id, _) = try pairWithFlow()
        var held: [ByteBuffer] = []
        pair.entryToExit = { chunk in
            held.append(chunk)
            return []
        }
        XCTAssertTrue(pair.entry.session.sendDatagram(flow: id, buffer([1])))
        XCTAssertTrue(pair.entry.session.sendDatagram(flow: id, buffer([2])))
        try pair.pump()
        // The two cells may leave in one write; cut them apart at the cell size.
        var wire = ByteBuffer()
        for var chunk in held { wire.writeBuffer(&chunk) }
        let size = pair.entry.cellSize
        XCTAssertEqual(wire.readableBytes, 2 * size)
        // One read holding a forged cell followed by a genuine one.
        var both = flipping(bit: 9, of: wire.getSlice(at: wire.readerIndex, length: size)!)
        var second = wire.getSlice(at: wire.readerIndex + size, length: size)!
        both.writeBuffer(&second)
        try pair.exit.deliver(both)
        XCTAssertFalse(pair.exit.channel.isActive)
        XCTAssertEqual(pair.exit.delegate.accepted[id]?.datagrams.count, 0)
    }
}
