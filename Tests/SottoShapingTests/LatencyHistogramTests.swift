import XCTest
@testable import SottoShaping

final class LatencyHistogramTests: XCTestCase {
    func testAnEmptyHistogramHasNoQuantiles() {
        XCTAssertNil(LatencyHistogram().p50)
        XCTAssertNil(LatencyHistogram().p99)
    }

    func testQuantilesOfAUniformSpreadAreWithinTheBucketError() {
        var histogram = LatencyHistogram()
        // 1 ms to 1,000 ms in 1 ms steps.
        for value in 1...1000 { histogram.record(nanoseconds: UInt64(value) * millisecond) }
        XCTAssertEqual(histogram.count, 1000)
        XCTAssertEqual(Double(histogram.p50!), 500e6, accuracy: 500e6 / 16)
        XCTAssertEqual(Double(histogram.p99!), 990e6, accuracy: 990e6 / 16)
        XCTAssertEqual(Double(histogram.quantile(0)!), 1e6, accuracy: 1e6 / 16)
        XCTAssertEqual(Double(histogram.quantile(1)!), 1000e6, accuracy: 1000e6 / 16)
    }

    func testEveryValueIsReportedWithinASixteenthOfItself() {
        var generator = SeededGenerator(seed: 3)
        for _ in 0..<10_000 {
            let microseconds = UInt64.random(in: 0...(1 << 35), using: &generator) >> UInt64.random(in: 0...35, using: &generator)
            var histogram = LatencyHistogram()
            histogram.record(nanoseconds: microseconds * 1000)
            let reported = histogram.p50! / 1000
            let error = reported > microseconds ? reported - microseconds : microseconds - reported
            XCTAssertLessThanOrEqual(Double(error), max(Double(microseconds) / 16, 0), "\(microseconds) µs reported as \(reported)")
        }
    }

    func testHugeValuesLandInTheLastBucket() {
        var histogram = LatencyHistogram()
        histogram.record(nanoseconds: UInt64.max)
        XCTAssertEqual(LatencyHistogram.bucket(microseconds: UInt64.max / 1000), LatencyHistogram.bucketCount - 1)
        XCTAssertNotNil(histogram.p99)
    }

    func testMergingAddsTheSamples() {
        var fast = LatencyHistogram(), slow = LatencyHistogram()
        for _ in 0..<99 { fast.record(nanoseconds: 1 * millisecond) }
        slow.record(nanoseconds: 900 * millisecond)
        var total = LatencyHistogram()
        total.merge(fast)
        total.merge(slow)
        total.merge(LatencyHistogram())
        XCTAssertEqual(total.count, 100)
        XCTAssertEqual(Double(total.p50!), 1e6, accuracy: 1e6 / 16)
        XCTAssertEqual(Double(total.quantile(1)!), 900e6, accuracy: 900e6 / 16)

        var counters = ShapingCounters()
        var other = ShapingCounters()
        other.realCells = 3
        other.peakQueuedCells = 7
        other.addedLatency = total
        counters.add(other)
        counters.add(other)
        XCTAssertEqual(counters.realCells, 6)
        XCTAssertEqual(counters.peakQueuedCells, 7)
        XCTAssertEqual(counters.addedLatency.count, 200)
    }

    func testTheNaturalLogarithmMatchesKnownValues() {
        XCTAssertEqual(naturalLog(1), 0, accuracy: 1e-15)
        XCTAssertEqual(naturalLog(0.5), -0.693_147_180_559_945_3, accuracy: 1e-14)
        XCTAssertEqual(naturalLog(2.718_281_828_459_045), 1, accuracy: 1e-14)
        XCTAssertEqual(naturalLog(1e-10), -23.025_850_929_940_457, accuracy: 1e-12)
        XCTAssertEqual(naturalLog(0x1p-53), -36.736_800_569_677_1, accuracy: 1e-12)
        XCTAssertEqual(naturalLog(1.999_999), 0.693_146_680_559_82, accuracy: 1e-12)
    }
}
