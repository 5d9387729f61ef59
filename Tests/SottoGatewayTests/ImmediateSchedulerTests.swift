import SottoTunnel
import XCTest
@testable import SottoGateway

/// The `off` shaping policy: cells leave at once while the transport takes them, wait in a
/// bounded queue while it pushes back, and only datagram cells are ever refused.
final class ImmediateSchedulerTests: XCTestCase {
    private var writable = true
    private var emitted: [Cell] = []
    private var flushes = 0
    /// How many more cells the transport takes before it pushes back (nil: no limit).
    private var budget: Int?

    private func makeScheduler(limit: Int = 8) -> ImmediateScheduler {
        ImmediateScheduler(
            limit: limit,
            canWrite: { [unowned self] in self.writable && (self.budget ?? 1) > 0 },
            emit: { [unowned self] cell in
                self.emitted.append(cell)
                if let b = self.budget { self.budget = b - 1 }
            },
            flush: { [unowned self] in self.flushes += 1 })
    }

    private func cell(_ n: Int) -> Cell { Cell(type: .datagram, flow: UInt32(n), payload: [UInt8(truncatingIfNeeded: n)]) }

    func testCellsLeaveAtOnceAndInOrderWhileTheTransportIsWritable() {
        let scheduler = makeScheduler()
        for n in 1...3 { XCTAssertTrue(scheduler.submit(cell(n), droppable: true)) }
        XCTAssertEqual(emitted.map(\.flow), [1, 2, 3])
        XCTAssertEqual(scheduler.queuedCells, 0)
        XCTAssertEqual(scheduler.droppedCells, 0)
    }

    func testCellsWaitWhileTheTransportIsNotWritable() {
        let scheduler = makeScheduler()
        writable = false
        for n in 1...3 { XCTAssertTrue(scheduler.submit(cell(n), droppable: n % 2 == 0)) }
        XCTAssertEqual(emitted, [])
        XCTAssertEqual(scheduler.queuedCells, 3)
    }

    func testQueuedCellsLeaveInOrderOnceTheTransportIsWritableAgainAndAreFlushed() {
        let scheduler = makeScheduler()
        writable = false
        for n in 1...5 { _ = scheduler.submit(cell(n), droppable: false) }
        scheduler.writabilityChanged(isWritable: false)
        XCTAssertEqual(emitted, [], "a change to not writable must not drain")
        writable = true
        scheduler.writabilityChanged(isWritable: true)
        XCTAssertEqual(emitted.map(\.flow), [1, 2, 3, 4, 5])
        XCTAssertEqual(scheduler.queuedCells, 0)
        XCTAssertGreaterThanOrEqual(flushes, 1, "drained cells were never flushed")
    }

    func testACellSubmittedWhileOthersWaitQueuesBehindThemEvenIfTheTransportIsWritable() {
        let scheduler = makeScheduler()
        writable = false
        _ = scheduler.submit(cell(1), droppable: false)
        _ = scheduler.submit(cell(2), droppable: false)
        writable = true  // writable again, but the change has not been signalled yet
        _ = scheduler.submit(cell(3), droppable: false)
        XCTAssertEqual(emitted, [], "cell 3 overtook cells 1 and 2")
        scheduler.writabilityChanged(isWritable: true)
        XCTAssertEqual(emitted.map(\.flow), [1, 2, 3])
    }

    func testDrainingStopsWhenTheTransportPushesBackAndResumesOnTheNextChange() {
        let scheduler = makeScheduler()
        writable = false
        for n in 1...6 { _ = scheduler.submit(cell(n), droppable: false) }
        writable = true
        budget = 2
        scheduler.writabilityChanged(isWritable: true)
        XCTAssertEqual(emitted.map(\.flow), [1, 2])
        XCTAssertEqual(scheduler.queuedCells, 4)
        budget = nil
        scheduler.writabilityChanged(isWritable: true)
        XCTAssertEqual(emitted.map(\.flow), [1, 2, 3, 4, 5, 6])
    }

    func testDroppableCellsPastTheLimitAreRefusedAndCounted() {
        let scheduler = makeScheduler(limit: 3)
        writable = false
        for n in 1...3 { XCTAssertTrue(scheduler.submit(cell(n), droppable: true)) }
        XCTAssertFalse(scheduler.submit(cell(4), droppable: true))
        XCTAssertFalse(scheduler.submit(cell(5), droppable: true))
        XCTAssertEqual(scheduler.droppedCells, 2)
        XCTAssertEqual(scheduler.queuedCells, 3)
        writable = true
        scheduler.writabilityChanged(isWritable: true)
        XCTAssertEqual(emitted.map(\.flow), [1, 2, 3], "a refused cell was sent anyway")
    }

    func testNonDroppableCellsAreNeverRefusedEvenPastTheLimit() {
        let scheduler = makeScheduler(limit: 2)
        writable = false
        for n in 1...2 { _ = scheduler.submit(cell(n), droppable: true) }
        for n in 3...10 { XCTAssertTrue(scheduler.submit(cell(n), droppable: false), "cell \(n) refused") }
        XCTAssertEqual(scheduler.queuedCells, 10)
        XCTAssertEqual(scheduler.droppedCells, 0)
        writable = true
        scheduler.writabilityChanged(isWritable: true)
        XCTAssertEqual(emitted.map(\.flow), Array(UInt32(1)...10))
    }

    func testStopDiscardsWhatWaits() {
        let scheduler = makeScheduler()
        writable = false
        for n in 1...3 { _ = scheduler.submit(cell(n), droppable: false) }
        scheduler.stop()
        XCTAssertEqual(scheduler.queuedCells, 0)
        writable = true
        scheduler.writabilityChanged(isWritable: true)
        XCTAssertEqual(emitted, [])
    }
}
