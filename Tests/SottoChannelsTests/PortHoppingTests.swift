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

    // MARK: HopFlowPlan (an exit gateway's flows to a hopping server)

    /// A test clock: the times at which flows begin, within each of `epochs` epochs from t0's
    /// epoch: at its start, just after, in the middle and a moment before the next boundary.
    private func beginTimes(_ hop: PortHopSchedule, epochs: Int) -> [Double] {
        let first = hop.schedule.start(of: hop.schedule.epoch(at: t0))
        let seconds = Double(hop.schedule.seconds)
        return (0..<epochs).flatMap { e in
            [0, 0.001, seconds / 2, seconds - 0.001].map { first + Double(e) * seconds + $0 }
        }
    }

    func testANewFlowTargetsTheCurrentEpochsPort() throws {
        let hop = try schedule(epochSeconds: 5)
        var plan = HopFlowPlan<Int>(schedule: hop)
        for (key, time) in beginTimes(hop, epochs: 6).enumerated() {
            let port = plan.begin(key, at: time)
            XCTAssertEqual(port, hop.port(forEpoch: hop.schedule.epoch(at: time)), "flow \(key) at \(time)")
            XCTAssertEqual(plan.port(of: key), port)
            XCTAssertTrue(hop.listeningPorts(at: time).contains(port), "the server listens on a new flow's port")
        }
        XCTAssertEqual(plan.count, 24)
        // Beginning a key again (a new flow under a reused id) takes the port of that moment.
        let later = t0 + 60
        XCTAssertEqual(plan.begin(0, at: later), hop.clientPort(at: later))
        XCTAssertEqual(plan.count, 24)
        plan.end(0)
        plan.end(0)
        XCTAssertNil(plan.port(of: 0))
        XCTAssertEqual(plan.count, 23)
        XCTAssertEqual(plan.nextCheck(after: later), hop.nextChange(after: later))
    }

    /// Runs `plan` against a server that applies `changes(from:at:)` at every boundary, the way
    /// `sotto coap-server` does, with flows beginning throughout; checks that a flow is retired at
    /// exactly the boundary where the server closes its port and never sends to a closed one.
    /// Returns how many boundaries each flow lived.
    private func runAgainstServer(_ hop: PortHopSchedule, epochs: Int) -> [Int: Int] {
        var plan = HopFlowPlan<Int>(schedule: hop)
        let starts = beginTimes(hop, epochs: epochs)
        var serverPorts = Set(hop.listeningPorts(at: starts[0]))
        var began: [Int: Double] = [:]
        var lived: [Int: Int] = [:]
        var next = 0
        var boundary = hop.nextChange(after: starts[0])
        for _ in 0..<(epochs + 8) {
            // Flows that begin before this boundary.
            while next < starts.count, starts[next] < boundary {
                let port = plan.begin(next, at: starts[next])
                XCTAssertTrue(serverPorts.contains(port), "flow \(next) targets port \(port), which the server does not listen on")
                began[next] = starts[next]
                next += 1
            }
            // The exit evaluates the boundary (its timer fires `lead` early); the server changes its
            // set at the boundary.
            let at = HopFlowPlan<Int>.evaluationTime(now: boundary - 0.05, boundary: boundary, lead: 0.05)
            XCTAssertEqual(at, boundary)
            let retired = plan.retire(at: at)
            let step = hop.changes(from: serverPorts, at: boundary)
            serverPorts.formUnion(step.open)
            serverPorts.subtract(step.close)
            for (key, port) in retired {
                XCTAssertTrue(step.close.contains(port), "flow \(key) retired though the server keeps port \(port)")
                lived[key] = Int(hop.schedule.epoch(at: boundary) - hop.schedule.epoch(at: began[key]!))
            }
            for key in 0..<next where plan.port(of: key) != nil {
                XCTAssertTrue(serverPorts.contains(plan.port(of: key)!), "flow \(key) kept a port the server closed")
            }
            boundary = hop.nextChange(after: boundary)
        }
        XCTAssertEqual(next, starts.count)
        XCTAssertEqual(plan.count, 0, "every flow was retired by the end")
        return lived
    }

    func testAFlowIsRetiredTwoBoundariesLaterWhenTheServerClosesItsPort() throws {
        // A wide range: no epoch in this run repeats a neighbour's port, so every port closes two
        // boundaries after its epoch began (the server listens on e-1, e, e+1).
        let hop = try schedule(range: 20000...29999, epochSeconds: 5)
        let first = hop.schedule.epoch(at: t0)
        let ports = (first - 2..<first + 20).map(hop.port(forEpoch:))
        XCTAssertEqual(Set(ports).count, ports.count, "the test needs distinct ports in this window")
        let lived = runAgainstServer(hop, epochs: 12)
        XCTAssertEqual(lived.count, 48)
        XCTAssertEqual(Set(lived.values), [2], "\(lived)")
    }

    func testAFlowKeepsItsPortWhileTheScheduleKeepsPickingIt() throws {
        // Three ports: the schedule often picks a port again within the window, and the server then
        // keeps it open; the flow must keep it too (its DTLS session lives on).
        let hop = try schedule(range: 20000...20002, epochSeconds: 5)
        let lived = runAgainstServer(hop, epochs: 30)
        XCTAssertEqual(lived.count, 120)
        XCTAssertTrue(lived.values.allSatisfy { $0 >= 2 }, "\(lived)")
        XCTAssertTrue(lived.values.contains { $0 > 2 }, "no flow outlived two boundaries: the collision case was not exercised")
    }

    func testASinglePortRangeNeverRetiresAFlow() throws {
        let hop = try schedule(range: 30000...30000, epochSeconds: 1)
        var plan = HopFlowPlan<String>(schedule: hop)
        XCTAssertEqual(plan.begin("a", at: t0), 30000)
        var time = t0
        for _ in 0..<50 {
            time = plan.nextCheck(after: time)
            XCTAssertTrue(plan.retire(at: time).isEmpty)
        }
        XCTAssertEqual(plan.port(of: "a"), 30000)
        var empty = HopFlowPlan<String>(schedule: hop)
        XCTAssertTrue(empty.retire(at: t0 + 3600).isEmpty, "an empty plan retires nothing")
    }

    func testRetireWithinAnEpochRetiresNothingAndAfterAClockJumpRetiresTheStale() throws {
        let hop = try schedule(range: 20000...29999, epochSeconds: 5)
        var plan = HopFlowPlan<Int>(schedule: hop)
        let start = hop.schedule.start(of: hop.schedule.epoch(at: t0))
        _ = plan.begin(1, at: start + 1)
        XCTAssertTrue(plan.retire(at: start + 4.9).isEmpty)
        XCTAssertTrue(plan.retire(at: start + 5).isEmpty, "the port of the epoch before stays open")
        _ = plan.begin(2, at: start + 5)
        // The clock jumps an hour ahead: both flows' ports are long closed.
        let retired = plan.retire(at: start + 3600)
        XCTAssertEqual(Set(retired.map(\.key)), [1, 2])
        XCTAssertEqual(retired.first { $0.key == 1 }?.port, hop.clientPort(at: start + 1))
        XCTAssertEqual(plan.count, 0)
    }

    func testEvaluationTimeOfABoundaryTimer() {
        typealias Plan = HopFlowPlan<Int>
        // Fired within `lead` before the boundary: the boundary itself.
        XCTAssertEqual(Plan.evaluationTime(now: 99.96, boundary: 100, lead: 0.05), 100)
        XCTAssertEqual(Plan.evaluationTime(now: 99.95, boundary: 100, lead: 0.05), 100)
        // Fired late: now.
        XCTAssertEqual(Plan.evaluationTime(now: 100.3, boundary: 100, lead: 0.05), 100.3)
        // Fired long before (the wall clock was set back): now, so nothing closes early.
        XCTAssertEqual(Plan.evaluationTime(now: 90, boundary: 100, lead: 0.05), 90)
        XCTAssertEqual(Plan.evaluationTime(now: 99.9, boundary: 100, lead: -1), 99.9)
        XCTAssertEqual(Plan.evaluationTime(now: 99.9, boundary: .nan, lead: 0.05), 99.9)
    }
}
