import XCTest
@testable import SottoShaping

final class ShapingScheduleTests: XCTestCase {
    // MARK: constant

    func testConstantTwentyPerSecondSendsTwelveHundredCellsInSixtySimulatedSeconds() throws {
        var core = makeCore(try .constant(rate: 20, jitterFraction: 0.2))
        let departures = simulate(&core, until: 60 * second)
        // Worst case the jitter allows: every gap 40 ms or every gap 60 ms.
        XCTAssertGreaterThanOrEqual(departures.count, 1000)
        XCTAssertLessThanOrEqual(departures.count, 1500)
        // Gaps average the interval: the sum of 1,200 uniform ±10 ms gaps spreads by about
        // ±0.2 s, i.e. ±4 cells; ±12 is over 5 standard deviations.
        XCTAssertEqual(Double(departures.count), 1200, accuracy: 12)
        XCTAssertTrue(departures.allSatisfy { $0.item == nil }, "an idle tunnel sends only cover")
        XCTAssertEqual(core.counters.coverCells, departures.count)
        XCTAssertEqual(core.counters.coverBytes, departures.count * 514)
        XCTAssertEqual(core.counters.realCells, 0)
    }

    func testConstantGapsStayWithinTheJitterBoundAndUseIt() throws {
        var core = makeCore(try .constant(rate: 20, jitterFraction: 0.2), seed: 7)
        let observed = gaps(simulate(&core, until: 120 * second))
        XCTAssertGreaterThan(observed.count, 2000)
        XCTAssertTrue(observed.allSatisfy { (40 * millisecond...60 * millisecond).contains($0) },
                      "gaps from \(observed.min()!) to \(observed.max()!) ns")
        // The jitter is really there: both ends of the range are reached closely.
        XCTAssertLessThan(observed.min()!, 41 * millisecond)
        XCTAssertGreaterThan(observed.max()!, 59 * millisecond)
    }

    func testConstantWithoutJitterIsAnExactClock() throws {
        var core = makeCore(try .constant(rate: 10, jitterFraction: 0))
        let departures = simulate(&core, until: 10 * second)
        XCTAssertEqual(departures.map(\.time), (1...100).map { UInt64($0) * 100 * millisecond })
    }

    func testConstantSendsTheSameCellsPerSecondIdleAndActive() throws {
        let parameters = try ShapingParameters.constant(rate: 10, jitterFraction: 0.2)
        var idle = makeCore(parameters, seed: 3)
        var active = makeCore(parameters, seed: 3)
        let idleDepartures = simulate(&idle, until: 60 * second)
        let activeDepartures = simulate(&active, arrivals: chatArrivals(rate: 2, duration: 60 * second, seed: 9),
                                   until: 60 * second)
        // Same generator, same slots: the schedule does not depend on the data at all.
        XCTAssertEqual(idleDepartures.map(\.time), activeDepartures.map(\.time))
        XCTAssertGreaterThan(active.counters.realCells, 200)
        XCTAssertEqual(active.counters.realCells + active.counters.coverCells, idle.counters.coverCells)
    }

    func testCoverIsSentOnlyWhenNothingIsQueued() throws {
        var core = makeCore(try .constant(rate: 50, jitterFraction: 0.5), seed: 11)
        var generator = SeededGenerator(seed: 5)
        var now: UInt64 = 0
        var item = 0
        var covers = 0
        for _ in 0..<20_000 {
            now += UInt64.random(in: 0...(30 * millisecond), using: &generator)
            if Bool.random(using: &generator) {
                _ = core.enqueue(item, kind: .stream, now: now)
                item += 1
            }
            while true {
                let queuedBefore = core.queuedCells
                let action = core.poll(now: now)
                if case .sendCover = action {
                    XCTAssertEqual(queuedBefore, 0, "cover sent while \(queuedBefore) cells were queued")
                    covers += 1
                } else if case .send = action {
                    XCTAssertGreaterThan(queuedBefore, 0)
                } else {
                    break
                }
            }
        }
        XCTAssertGreaterThan(covers, 100, "the load leaves room for cover")
        XCTAssertGreaterThan(core.counters.realCells, 5000)
    }

    func testALatePollSkipsMissedSlotsInsteadOfBursting() throws {
        var core = makeCore(try .constant(rate: 10, jitterFraction: 0))
        XCTAssertEqual(core.poll(now: 0), .wait(until: 100 * millisecond))
        // The transport was unwritable for two seconds: one cell now, then the clock goes on.
        XCTAssertEqual(core.poll(now: 2 * second), .sendCover)
        XCTAssertEqual(core.poll(now: 2 * second), .wait(until: 2 * second + 100 * millisecond))
        XCTAssertEqual(core.counters.missedSlots, 18)
        // A timer that fires slightly late keeps the original clock.
        XCTAssertEqual(core.poll(now: 2 * second + 105 * millisecond), .sendCover)
        XCTAssertEqual(core.poll(now: 2 * second + 105 * millisecond), .wait(until: 2 * second + 200 * millisecond))
    }

    func testConstantWaitsUntilTheNextSlotWithoutSendingEarly() throws {
        var core = makeCore(try .constant(rate: 10, jitterFraction: 0))
        _ = core.enqueue(1, kind: .datagram, now: 10 * millisecond)
        XCTAssertEqual(core.poll(now: 10 * millisecond), .wait(until: 100 * millisecond))
        XCTAssertEqual(core.poll(now: 99 * millisecond), .wait(until: 100 * millisecond))
        XCTAssertEqual(core.poll(now: 100 * millisecond), .send(1))
        assertNear(core.counters.addedLatency.p50!, 90 * millisecond, accuracy: 90 * millisecond / 16)
    }

    // MARK: poisson

    func testPoissonGapsAverageTheMeanAndVaryLikeAnExponential() throws {
        var core = makeCore(try .poisson(rate: 20), seed: 21)
        let observed = gaps(simulate(&core, until: 1000 * second)).map { Double($0) }
        XCTAssertGreaterThan(observed.count, 19_000)
        let mean = observed.reduce(0, +) / Double(observed.count)
        var squares = 0.0
        for gap in observed { squares += (gap - mean) * (gap - mean) }
        let variance = squares / Double(observed.count)
        // Mean 50 ms; the standard error over 20,000 gaps is 0.7 %, so 3 % is a wide margin.
        XCTAssertEqual(mean, 50e6, accuracy: 1.5e6)
        // An exponential's standard deviation equals its mean (a constant clock's would be ~0).
        XCTAssertEqual(variance.squareRoot() / mean, 1, accuracy: 0.05)
        // Memorylessness shows as P(gap > mean) = e^-1.
        let longer = Double(observed.filter { $0 > 50e6 }.count) / Double(observed.count)
        XCTAssertEqual(longer, 0.3679, accuracy: 0.02)
    }

    func testPoissonSendsRealCellsInOrderAndCoverOtherwise() throws {
        var core = makeCore(try .poisson(rate: 20), seed: 4)
        let arrivals = chatArrivals(rate: 2, duration: 60 * second, seed: 8)
        let departures = simulate(&core, arrivals: arrivals, until: 120 * second)
        XCTAssertEqual(departures.compactMap(\.item), arrivals.map(\.item))
        XCTAssertGreaterThan(core.counters.coverCells, 0)
    }

    // MARK: padded

    func testPaddedDelaysEveryCellWithinTheRangeAndKeepsOrder() throws {
        let parameters = try ShapingParameters.padded(minimumDelay: .milliseconds(10), maximumDelay: .milliseconds(50))
        var core = makeCore(parameters, seed: 13)
        var generator = SeededGenerator(seed: 2)
        var arrivals: [Arrival] = []
        var time: UInt64 = 0
        for item in 0..<5000 {
            // Often closer together than the delay range, so order and delays interact.
            time += UInt64.random(in: 0...(20 * millisecond), using: &generator)
            arrivals.append(Arrival(time: time, item: item, kind: item % 3 == 0 ? .datagram : .stream))
        }
        let departures = simulate(&core, arrivals: arrivals, until: time + second)
        XCTAssertEqual(departures.compactMap(\.item), Array(0..<5000))
        XCTAssertTrue(departures.allSatisfy { $0.item != nil }, "padded sends no cover")
        var delays: [UInt64] = []
        for (arrival, departure) in zip(arrivals, departures) { delays.append(departure.time - arrival.time) }
        XCTAssertTrue(delays.allSatisfy { (10 * millisecond...50 * millisecond).contains($0) },
                      "delays from \(delays.min()!) to \(delays.max()!)")
        XCTAssertLessThan(delays.min()!, 11 * millisecond)
        XCTAssertGreaterThan(delays.max()!, 49 * millisecond)
        XCTAssertEqual(core.poll(now: time + 2 * second), .idle)
    }

    func testPaddedWaitsForTheEarliestDeadline() throws {
        var core = makeCore(try .padded(minimumDelay: .milliseconds(20), maximumDelay: .milliseconds(20)))
        XCTAssertEqual(core.poll(now: 0), .idle)
        _ = core.enqueue(1, kind: .datagram, now: 5 * millisecond)
        XCTAssertEqual(core.poll(now: 5 * millisecond), .wait(until: 25 * millisecond))
        XCTAssertEqual(core.poll(now: 25 * millisecond), .send(1))
        XCTAssertEqual(core.poll(now: 25 * millisecond), .idle)
    }

    // MARK: off

    func testOffSendsEverythingAtOnceAndThenIdles() throws {
        var core = makeCore(.off)
        XCTAssertEqual(core.poll(now: 0), .idle)
        for item in 0..<3 { XCTAssertEqual(core.enqueue(item, kind: .stream, now: 7), .accepted) }
        XCTAssertEqual(core.poll(now: 7), .send(0))
        XCTAssertEqual(core.poll(now: 7), .send(1))
        XCTAssertEqual(core.poll(now: 7), .send(2))
        XCTAssertEqual(core.poll(now: 7), .idle)
        XCTAssertEqual(core.counters.realCells, 3)
        XCTAssertEqual(core.counters.realBytes, 3 * 514)
        XCTAssertEqual(core.counters.coverCells, 0)
        XCTAssertEqual(core.counters.addedLatency.p99, 0)
    }

    // MARK: every policy

    func testEveryPolicyKeepsTheOrderOfRealDataAcrossDatagramsAndStreams() throws {
        let policies: [ShapingParameters] = [
            .off, try .padded(), try .constant(rate: 50), try .poisson(rate: 50),
        ]
        for parameters in policies {
            var core = makeCore(parameters, seed: 17)
            var generator = SeededGenerator(seed: 99)
            var arrivals: [Arrival] = []
            var time: UInt64 = 0
            var item = 0
            while arrivals.count < 2000 {
                // About 20 cells/s, well within the shaped rate of 50: nothing is dropped.
                time += UInt64.random(in: 0...(200 * millisecond), using: &generator)
                let kind: ShapingCellKind = Bool.random(using: &generator) ? .stream : .datagram
                for index in 0..<Int.random(in: 1...3, using: &generator) {
                    let cellKind: ShapingCellKind = kind == .datagram && index > 0 ? .datagramContinuation : kind
                    arrivals.append(Arrival(time: time, item: item, kind: cellKind))
                    item += 1
                }
            }
            let departures = simulate(&core, arrivals: arrivals, until: time + 200 * second)
            XCTAssertEqual(core.counters.datagramsDropped, 0, "\(parameters)")
            XCTAssertEqual(core.queuedCells, 0, "\(parameters)")
            let sent = departures.compactMap(\.item)
            XCTAssertEqual(sent.count, arrivals.count, "\(parameters)")
            XCTAssertTrue(sent == arrivals.map(\.item), "\(parameters): real cells left out of order")
        }
    }

    func testControlCellsGoBeforeQueuedDataInEveryPolicy() throws {
        let policies: [ShapingParameters] = [
            .off, try .padded(minimumDelay: .zero, maximumDelay: .zero),
            try .constant(rate: 10, jitterFraction: 0), try .poisson(rate: 10),
        ]
        for parameters in policies {
            var core = makeCore(parameters)
            for item in 0..<3 { _ = core.enqueue(item, kind: .stream, now: 0) }
            _ = core.enqueue(100, kind: .control, now: 0)
            _ = core.enqueue(101, kind: .control, now: 0)
            let sent = simulate(&core, until: 10 * second).compactMap(\.item)
            XCTAssertEqual(sent, [100, 101, 0, 1, 2], "\(parameters)")
        }
    }

    func testTheSameSeedGivesTheSameScheduleAndAnotherSeedAnother() throws {
        let parameters = try ShapingParameters.poisson(rate: 20)
        var first = makeCore(parameters, seed: 1), again = makeCore(parameters, seed: 1), other = makeCore(parameters, seed: 2)
        let a = simulate(&first, until: 10 * second), b = simulate(&again, until: 10 * second), c = simulate(&other, until: 10 * second)
        XCTAssertEqual(a, b)
        XCTAssertNotEqual(a, c)
    }

    func testAddedLatencyIsRecordedForRealCellsOnly() throws {
        var core = makeCore(try .constant(rate: 10, jitterFraction: 0))
        // Slots at 100, 200, 300 ms: cells enqueued 30 ms after a slot wait 70 ms.
        let arrivals = (0..<3).map { Arrival(time: UInt64($0) * 100 * millisecond + 30 * millisecond, item: $0, kind: .datagram) }
        _ = simulate(&core, arrivals: arrivals, until: 2 * second)
        XCTAssertEqual(core.counters.addedLatency.count, 3)
        XCTAssertEqual(Double(core.counters.addedLatency.p50!), 70e6, accuracy: 70e6 / 16)
        XCTAssertEqual(core.counters.realCells, 3)
        XCTAssertEqual(core.counters.coverCells, 17)
    }
}

extension XCTestCase {
    func assertNear(_ value: UInt64, _ expected: UInt64, accuracy: UInt64, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(value >= expected - accuracy && value <= expected + accuracy,
                      "\(value) is not within \(accuracy) of \(expected)", file: file, line: line)
    }
}
