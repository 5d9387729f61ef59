import XCTest
@testable import SottoShaping

final class ShapingQueueTests: XCTestCase {
    private func limits(datagram: Int = 256, stream: Int = 256, control: Int = 64) throws -> ShapingQueueLimits {
        try ShapingQueueLimits(datagramCells: datagram, streamCells: stream, controlCells: control)
    }

    private func drain(_ core: inout TestCore, now: UInt64 = 0) -> [Int] {
        var sent: [Int] = []
        for _ in 0..<10_000 {
            guard case .send(let item) = core.poll(now: now) else { break }
            sent.append(item)
        }
        return sent
    }

    func testDatagramsBeyondTheBoundDropTheOldestAndCountIt() throws {
        var core = makeCore(.off, limits: try limits(datagram: 4))
        let results = (0..<6).map { core.enqueue($0, kind: .datagram, now: 0) }
        XCTAssertEqual(results, [.accepted, .accepted, .accepted, .accepted, .droppedOldest(cells: 1), .droppedOldest(cells: 1)])
        XCTAssertEqual(drain(&core), [2, 3, 4, 5])
        XCTAssertEqual(core.counters.datagramsDropped, 2)
        XCTAssertEqual(core.counters.datagramCellsDropped, 2)
        XCTAssertEqual(core.counters.peakQueuedCells, 4)
    }

    func testDroppingTheOldestDatagramTakesAllItsFragments() throws {
        var core = makeCore(.off, limits: try limits(datagram: 4))
        XCTAssertEqual(core.enqueue(0, kind: .datagram, now: 0), .accepted)
        XCTAssertEqual(core.enqueue(1, kind: .datagramContinuation, now: 0), .accepted)
        XCTAssertEqual(core.enqueue(2, kind: .datagramContinuation, now: 0), .accepted)
        XCTAssertEqual(core.enqueue(3, kind: .datagram, now: 0), .accepted)
        XCTAssertEqual(core.enqueue(4, kind: .datagram, now: 0), .droppedOldest(cells: 3))
        XCTAssertEqual(drain(&core), [3, 4])
        XCTAssertEqual(core.counters.datagramsDropped, 1)
        XCTAssertEqual(core.counters.datagramCellsDropped, 3)
    }

    func testAPartlySentDatagramIsDroppedFromItsRemainingFragments() throws {
        var core = makeCore(.off, limits: try limits(datagram: 3))
        _ = core.enqueue(0, kind: .datagram, now: 0)
        _ = core.enqueue(1, kind: .datagramContinuation, now: 0)
        _ = core.enqueue(2, kind: .datagramContinuation, now: 0)
        XCTAssertEqual(core.poll(now: 0), .send(0))
        _ = core.enqueue(3, kind: .datagram, now: 0)
        XCTAssertEqual(core.enqueue(4, kind: .datagram, now: 0), .droppedOldest(cells: 2))
        XCTAssertEqual(drain(&core), [3, 4])
    }

    func testAFragmentNeverPushesOutItsOwnDatagramsEarlierFragments() throws {
        var core = makeCore(.off, limits: try limits(datagram: 3))
        _ = core.enqueue(0, kind: .datagram, now: 0)
        _ = core.enqueue(1, kind: .datagram, now: 0)
        _ = core.enqueue(2, kind: .datagramContinuation, now: 0)
        // Full: datagram 0 goes, datagram 1 (still being enqueued) stays whole.
        XCTAssertEqual(core.enqueue(3, kind: .datagramContinuation, now: 0), .droppedOldest(cells: 1))
        XCTAssertEqual(drain(&core), [1, 2, 3])
    }

    func testADatagramLargerThanTheQueueIsRefusedWholeAndTheNextOneAccepted() throws {
        var core = makeCore(.off, limits: try limits(datagram: 2))
        XCTAssertEqual(core.enqueue(0, kind: .datagram, now: 0), .accepted)
        XCTAssertEqual(core.enqueue(1, kind: .datagramContinuation, now: 0), .accepted)
        XCTAssertEqual(core.enqueue(2, kind: .datagramContinuation, now: 0), .refused)
        XCTAssertEqual(core.enqueue(3, kind: .datagramContinuation, now: 0), .refused)
        XCTAssertEqual(core.queuedCells, 0, "no orphan fragments are left to waste slots")
        XCTAssertEqual(core.enqueue(4, kind: .datagram, now: 0), .accepted)
        XCTAssertEqual(drain(&core), [4])
        XCTAssertEqual(core.counters.datagramsDropped, 1)
        XCTAssertEqual(core.counters.datagramCellsDropped, 4)
    }

    func testDatagramDropsNeverTouchQueuedStreamCells() throws {
        var core = makeCore(.off, limits: try limits(datagram: 2, stream: 100))
        var expected: [Int] = []
        for item in 0..<20 {
            let kind: ShapingCellKind = item % 2 == 0 ? .stream : .datagram
            _ = core.enqueue(item, kind: kind, now: 0)
            if kind == .stream { expected.append(item) }
        }
        // The last two datagrams survive, in their places among the stream cells.
        XCTAssertEqual(drain(&core), (expected + [17, 19]).sorted())
        XCTAssertEqual(core.counters.datagramsDropped, 8)
    }

    func testStreamsGetBackPressureAtTheBoundAndLoseNothing() throws {
        var core = makeCore(try .constant(rate: 10, jitterFraction: 0), limits: try limits(stream: 4))
        let results = (0..<6).map { core.enqueue($0, kind: .stream, now: 0) }
        XCTAssertEqual(results, [.accepted, .accepted, .accepted, .backPressure, .backPressure, .backPressure])
        XCTAssertFalse(core.canAcceptStream)
        XCTAssertEqual(core.counters.backPressureEvents, 1)
        // Slots at 100 ms steps: the queue drains 6 → 3 without resuming, resumes at 2 (half the bound).
        var sent: [Int] = []
        var resumedAfter: Int?
        for slot in 1...10 {
            if case .send(let item) = core.poll(now: UInt64(slot) * 100 * millisecond) { sent.append(item) }
            if resumedAfter == nil && core.canAcceptStream { resumedAfter = sent.count }
        }
        XCTAssertEqual(resumedAfter, 4)
        XCTAssertEqual(sent, Array(0..<6))
        XCTAssertEqual(core.counters.datagramsDropped, 0)
        XCTAssertEqual(core.enqueue(6, kind: .stream, now: second), .accepted)
    }

    func testControlCellsBeyondTheHardBoundAreRefusedAndCounted() throws {
        var core = makeCore(.off, limits: try limits(control: 2))
        XCTAssertEqual(core.enqueue(0, kind: .control, now: 0), .accepted)
        XCTAssertEqual(core.enqueue(1, kind: .control, now: 0), .accepted)
        XCTAssertEqual(core.enqueue(2, kind: .control, now: 0), .refused)
        XCTAssertEqual(core.counters.controlCellsRefused, 1)
        XCTAssertEqual(drain(&core), [0, 1])
        XCTAssertEqual(core.enqueue(3, kind: .control, now: 0), .accepted)
    }

    func testRemoveAllEmptiesTheQueuesAndLiftsBackPressure() throws {
        var core = makeCore(.off, limits: try limits(stream: 2))
        _ = core.enqueue(0, kind: .stream, now: 0)
        _ = core.enqueue(1, kind: .stream, now: 0)
        _ = core.enqueue(2, kind: .control, now: 0)
        XCTAssertFalse(core.canAcceptStream)
        XCTAssertEqual(core.removeAll(), 3)
        XCTAssertEqual(core.queuedCells, 0)
        XCTAssertTrue(core.canAcceptStream)
        XCTAssertEqual(core.poll(now: 0), .idle)
    }

    func testQueueLimitsRefuseZeroAndHugeBounds() {
        XCTAssertThrowsError(try ShapingQueueLimits(datagramCells: 0)) { error in
            XCTAssertEqual(error as? ShapingError, .badQueueLimit(name: "datagram", value: 0))
            XCTAssertTrue("\(error)".contains("from 1 to"))
        }
        XCTAssertThrowsError(try ShapingQueueLimits(streamCells: ShapingQueueLimits.maximumCells + 1))
        XCTAssertThrowsError(try ShapingQueueLimits(controlCells: -1))
    }

    // MARK: memory

    func testTheCoreIsSmallAndAnIdleCoreHoldsNoQueueStorage() throws {
        // An Item the size of a gateway cell value (a few scalars and an array reference).
        struct CellLike { var type: UInt8; var flow: UInt32; var message: UInt16; var payload: [UInt8] }
        let size = MemoryLayout<ShapingCore<CellLike, SystemRandomNumberGenerator>>.size
        print("ShapingCore<cell, SystemRandomNumberGenerator> is \(size) bytes inline")
        XCTAssertLessThanOrEqual(size, 256)

        var core = makeCore(try .constant(rate: 1000, jitterFraction: 0))
        for item in 0..<500 { _ = core.enqueue(item, kind: .stream, now: 0) }
        _ = simulate(&core, until: 2 * second)
        XCTAssertEqual(core.queuedCells, 0)
        XCTAssertEqual(core.counters.realCells, 500)
        // Drained after a burst of 500: the grown ring was handed back.
        XCTAssertEqual(Mirror(reflecting: core).descendant("streams", "storage").map { ($0 as! [ShapingCore<Int, SeededGenerator>.Entry?]).count }, 0)
    }

    func testAThousandIdleConstantTunnelsCostLittleTimePerCell() throws {
        // The benchmark shape: 1,000 tunnels at 10 cells/s, here 10 simulated seconds
        // (100,000 cover cells) driven on one thread, timer by timer.
        let parameters = try ShapingParameters.constant(rate: 10, jitterFraction: 0.2)
        var cores = (0..<1000).map { makeCore(parameters, seed: UInt64($0)) }
        var deadlines = [UInt64](repeating: 0, count: cores.count)
        let clock = ContinuousClock()
        var cells = 0
        let elapsed = clock.measure {
            for index in cores.indices {
                if case .wait(let until) = cores[index].poll(now: 0) { deadlines[index] = until }
            }
            // Each round serves every tunnel whose slot has come; rounds advance 1 ms.
            for tick in 1...10_000 {
                let now = UInt64(tick) * millisecond
                for index in cores.indices where deadlines[index] <= now {
                    polling: for _ in 0..<4 {
                        switch cores[index].poll(now: now) {
                        case .sendCover, .send: cells += 1
                        case .wait(let until): deadlines[index] = until; break polling
                        case .idle: break polling
                        }
                    }
                }
            }
        }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        print("1,000 constant cores: \(cells) cells in \(seconds) s of CPU, \(seconds / Double(cells) * 1e9) ns per cell (incl. the 1 ms scan)")
        XCTAssertEqual(Double(cells), 100_000, accuracy: 1_000)
        XCTAssertLessThan(seconds, 10, "far more than the 30 % of a core the benchmark allows")
    }

    func testRingReusesItsStorageInSteadyStateAndReleasesItAfterABurst() {
        var ring = Ring<Int>()
        for value in 0..<5 { ring.append(value) }
        let capacity = ring.capacity
        for value in 5..<10_000 {
            ring.append(value)
            XCTAssertEqual(ring.popFirst(), value - 5)
        }
        XCTAssertEqual(ring.capacity, capacity, "a steady queue of five never grows")
        for value in 9995..<10_000 { XCTAssertEqual(ring.popFirst(), value) }
        for value in 0..<1000 { ring.append(value) }
        XCTAssertGreaterThan(ring.capacity, Ring<Int>.retainedCapacity)
        for value in 0..<1000 { XCTAssertEqual(ring.popFirst(), value) }
        XCTAssertNil(ring.popFirst())
        XCTAssertEqual(ring.capacity, 0)
    }
}
