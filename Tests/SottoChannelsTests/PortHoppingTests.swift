import XCTest
@testable import SottoChannels

final class PortHoppingTests: XCTestCase {
    private let t0 = TestChannels.t0
    private let secret = [UInt8](repeating: 0x5C, count: 32)

    private func schedule(range: ClosedRange<Int> = 20000...20999, epochSeconds: Int = 5) throws -> PortHopSchedule {
        try PortHopSchedule(secret: secret, range: range, epochSeconds: epochSeconds)
    }

    func testBothEndsComputeTheSamePortsFromTheSecretAndTime() throws {
        let server = try schedule()
        let client = try schedule()
        for step in 0..<100 {
            XCTAssertEqual(server.clientPort(at: t0 + Double(step) * 2.5), client.clientPort(at: t0 + Double(step) * 2.5))
        }
        let other = try PortHopSchedule(secret: [UInt8](repeating: 0x5D, count: 32), range: 20000...20999, epochSeconds: 5)
        let differing = (0..<100).filter { server.port(forEpoch: UInt64($0)) != other.port(forEpoch: UInt64($0)) }.count
        XCTAssertGreaterThan(differing, 90, "another secret gives another schedule")
    }

    func testPortsStayWithinTheRangeAndSpreadOverIt() throws {
        let hop = try schedule(range: 20000...20009)
        var counts = [UInt16: Int]()
        for epoch in 0..<10_000 as Range<UInt64> {
            let port = hop.port(forEpoch: epoch)
            XCTAssertTrue((20000...20009).contains(port), "\(port)")
            counts[port, default: 0] += 1
        }
        XCTAssertEqual(counts.count, 10)
        // 1000 expected per port; a fair schedule stays well within ±20%.
        for (port, count) in counts { XCTAssertTrue((800...1200).contains(count), "port \(port): \(count)") }
        let single = try schedule(range: 30000...30000)
        XCTAssertEqual(single.clientPort(at: t0), 30000)
        XCTAssertEqual(single.listeningPorts(at: t0), [30000])
    }

    func testPortChangesOnlyAtEpochBoundaries() throws {
        let hop = try schedule(epochSeconds: 5)
        let start = hop.schedule.start(of: hop.schedule.epoch(at: t0))
        XCTAssertEqual(hop.clientPort(at: start), hop.clientPort(at: start + 4.999))
        XCTAssertEqual(hop.nextChange(after: start), start + 5)
        XCTAssertEqual(hop.nextChange(after: start + 4.999), start + 5)
        XCTAssertEqual(hop.clientPort(at: start + 5), hop.port(forEpoch: hop.schedule.epoch(at: t0) + 1))
    }

    /// A client sends every 0.25 s across ten 5-second boundaries, with its clock up to 4.9 s off
    /// either way; at every instant the server's listening set holds the port it sends to.
    func testServerListeningSetCoversEveryClientPortAcrossBoundariesAndClockSkew() throws {
        let hop = try schedule(epochSeconds: 5)
        var boundaries = 0
        var previousPort: UInt16?
        for step in 0..<200 {
            let serverTime = t0 + Double(step) * 0.25
            let listening = hop.listeningPorts(at: serverTime)
            XCTAssertLessThanOrEqual(listening.count, 3)
            for skew in [-4.9, -2.5, 0, 2.5, 4.9] {
                let port = hop.clientPort(at: serverTime + skew)
                XCTAssertTrue(listening.contains(port), "t+\(Double(step) * 0.25) skew \(skew): \(port) not in \(listening)")
            }
            let port = hop.clientPort(at: serverTime)
            if let previousPort, previousPort != port { boundaries += 1 }
            previousPort = port
        }
        XCTAssertGreaterThanOrEqual(boundaries, 5, "the test crossed boundaries with a port change")
        // Two epochs off is outside the overlap: the schedule does not pretend otherwise.
        let misses = (0..<50).filter { step in
            let t = t0 + Double(step) * 5
            return !hop.listeningPorts(at: t).contains(hop.clientPort(at: t + 10))
        }.count
        XCTAssertGreaterThan(misses, 0)
    }

    func testChangesOpenTheNextEpochsPortAndCloseTheOldOneAtEachBoundary() throws {
        let hop = try schedule(epochSeconds: 5)
        var listening = Set<UInt16>()
        var time = t0
        let first = hop.changes(from: listening, at: time)
        XCTAssertEqual(first.open, hop.listeningPorts(at: time))
        XCTAssertEqual(first.close, [])
        listening.formUnion(first.open)
        for _ in 0..<20 {
            time = hop.nextChange(after: time)
            let epoch = hop.schedule.epoch(at: time)
            let step = hop.changes(from: listening, at: time)
            listening.formUnion(step.open)
            listening.subtract(step.close)
            XCTAssertEqual(listening, Set(hop.listeningPorts(at: time)))
            // Only the next epoch's port can be new; only the one two epochs back can go.
            XCTAssertTrue(step.open.allSatisfy { $0 == hop.port(forEpoch: epoch + 1) }, "\(step.open)")
            XCTAssertTrue(step.close.allSatisfy { $0 == hop.port(forEpoch: epoch - 2) }, "\(step.close)")
        }
        XCTAssertEqual(hop.changes(from: listening, at: time).open, [])
    }

    func testScheduleRefusesBadRangesSecretsAndEpochs() {
        XCTAssertThrowsError(try PortHopSchedule(secret: secret, range: 0...10, epochSeconds: 5))
        XCTAssertThrowsError(try PortHopSchedule(secret: secret, range: 60000...70000, epochSeconds: 5))
        XCTAssertThrowsError(try PortHopSchedule(secret: [1, 2, 3], range: 20000...20999, epochSeconds: 5))
        XCTAssertThrowsError(try PortHopSchedule(secret: secret, range: 20000...20999, epochSeconds: 0))
        XCTAssertEqual(String(describing: try schedule()), "port hopping over 20000-20999, 5 s epochs")
    }

    func testEpochScheduleClampsBrokenClocks() throws {
        let s = try EpochSchedule(seconds: 10)
        XCTAssertEqual(s.epoch(at: -5), 0)
        XCTAssertEqual(s.epoch(at: .nan), 0)
        XCTAssertEqual(s.epoch(at: .infinity), 0)
        XCTAssertEqual(s.epoch(at: 1e30), UInt64(Int64.max))
        XCTAssertEqual(s.epoch(at: 19.999), 1)
        XCTAssertEqual(s.epoch(at: 20), 2)
    }
}
