import NIOCore
import NIOEmbedded
import XCTest
@testable import SottoGateway

/// The shared slot timer of shaped tunnels: deadlines served in order, at most one granule
/// late, moved or cancelled deadlines never fire, the heap stays bounded, and the NIO timer
/// goes away with the last client.
final class SlotTimerTests: XCTestCase {
    private let ms: UInt64 = 1_000_000

    func testHeapPopsInDeadlineOrder() {
        var heap = DeadlineHeap()
        var generator = SystemRandomNumberGenerator()
        var pushed: [UInt64] = []
        for id in 0..<500 {
            let deadline = UInt64.random(in: 0...1_000, using: &generator)
            pushed.append(deadline)
            heap.push(deadline: deadline, id: UInt64(id))
        }
        var popped: [UInt64] = []
        while let top = heap.minimum, popped.count < 1_000 {
            popped.append(top.deadline)
            heap.popMinimum()
        }
        XCTAssertEqual(popped, pushed.sorted())
        XCTAssertEqual(heap.count, 0)
        heap.popMinimum()  // empty: nothing happens
        XCTAssertNil(heap.minimum)
    }

    func testDeadlinesFireInOrderAtMostOneGranuleLate() throws {
        let loop = EmbeddedEventLoop()
        let timer = SlotTimer.on(loop)
        let start = loop.now.uptimeNanoseconds
        var fired: [(String, UInt64)] = []
        let a = timer.register { fired.append(("a", loop.now.uptimeNanoseconds - start)) }
        let b = timer.register { fired.append(("b", loop.now.uptimeNanoseconds - start)) }
        defer { timer.unregister(a); timer.unregister(b) }
        timer.schedule(b, at: start + 30 * ms + 200)
        timer.schedule(a, at: start + 10 * ms + 500)

        loop.advanceTime(by: .milliseconds(10))
        XCTAssertTrue(fired.isEmpty, "not due yet")
        loop.advanceTime(by: .milliseconds(1))
        XCTAssertEqual(fired.map(\.0), ["a"])
        XCTAssertLessThanOrEqual(fired[0].1 - (10 * ms + 500), SlotTimer.granularityNanoseconds)
        loop.advanceTime(by: .milliseconds(25))
        XCTAssertEqual(fired.map(\.0), ["a", "b"])
        XCTAssertGreaterThanOrEqual(fired[1].1, 30 * ms + 200)
        XCTAssertLessThanOrEqual(fired[1].1 - (30 * ms + 200), SlotTimer.granularityNanoseconds)
        // Served once: nothing more fires.
        loop.advanceTime(by: .seconds(1))
        XCTAssertEqual(fired.count, 2)
    }

    func testMovedAndCancelledDeadlinesDoNotFire() {
        let loop = EmbeddedEventLoop()
        let timer = SlotTimer.on(loop)
        let start = loop.now.uptimeNanoseconds
        var fired: [UInt64] = []
        let a = timer.register { fired.append(loop.now.uptimeNanoseconds - start) }
        let b = timer.register { XCTFail("b was cancelled") }
        defer { timer.unregister(a); timer.unregister(b) }
        timer.schedule(a, at: start + 5 * ms)
        timer.schedule(a, at: start + 20 * ms)     // moved later: the 5 ms entry is stale
        timer.schedule(b, at: start + 8 * ms)
        timer.cancel(b)
        loop.advanceTime(by: .milliseconds(10))
        XCTAssertEqual(fired, [])
        loop.advanceTime(by: .milliseconds(15))
        XCTAssertEqual(fired, [20 * ms])
    }

    func testAClientThatReschedulesWhileFiredIsServedAtItsNextDeadline() {
        let loop = EmbeddedEventLoop()
        let timer = SlotTimer.on(loop)
        let start = loop.now.uptimeNanoseconds
        var count = 0
        var id: UInt64 = 0
        id = timer.register {
            count += 1
            if count < 100 { timer.schedule(id, at: loop.now.uptimeNanoseconds + 10 * self.ms) }
        }
        defer { timer.unregister(id) }
        timer.schedule(id, at: start + 10 * ms)
        loop.advanceTime(by: .milliseconds(505))
        XCTAssertEqual(count, 50, "one slot every 10 ms")
        XCTAssertLessThanOrEqual(timer.heapCount, 2 * timer.clientCount + 64)
    }

    func testHeapStaysBoundedUnderManyReschedules() {
        let loop = EmbeddedEventLoop()
        let timer = SlotTimer.on(loop)
        let start = loop.now.uptimeNanoseconds
        let ids = (0..<10).map { _ in timer.register {} }
        defer { ids.forEach(timer.unregister) }
        for round in 0..<1_000 {
            for id in ids { timer.schedule(id, at: start + UInt64(1_000 + round) * ms) }
        }
        XCTAssertLessThanOrEqual(timer.heapCount, 2 * ids.count + 64)
    }

    func testTheLastClientLeavingDropsTheTimer() {
        let loop = EmbeddedEventLoop()
        let timer = SlotTimer.on(loop)
        XCTAssertTrue(SlotTimer.on(loop) === timer, "one timer per loop")
        var fired = false
        let id = timer.register { fired = true }
        timer.schedule(id, at: loop.now.uptimeNanoseconds + 5 * ms)
        timer.unregister(id)
        loop.advanceTime(by: .milliseconds(10))
        XCTAssertFalse(fired)
        XCTAssertFalse(SlotTimer.on(loop) === timer, "a new timer after the last client left")
    }
}
