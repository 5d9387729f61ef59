import Foundation
import XCTest
@testable import SottoCoAP

final class RoundTripStatisticsTests: XCTestCase {
    func testNearestRankPercentilesOfOneToAHundred() {
        let stats = RoundTripStatistics(samples: Array(1...100).reversed().map { UInt64($0) }, failures: 0)
        XCTAssertEqual(stats.p50, 50)
        XCTAssertEqual(stats.p90, 90)
        XCTAssertEqual(stats.p99, 99)
        XCTAssertEqual(stats.maximum, 100)
        XCTAssertEqual(stats.count, 100)
    }

    func testFewSamplesPutTheHighPercentilesOnTheLargest() {
        let stats = RoundTripStatistics(samples: [3, 1, 1000, 2], failures: 0)
        XCTAssertEqual(stats.p50, 2)
        XCTAssertEqual(stats.p90, 1000)
        XCTAssertEqual(stats.p99, 1000)
    }

    func testFailuresCountButAreNotTimed() {
        let stats = RoundTripStatistics(samples: [5], failures: 2)
        XCTAssertEqual(stats.count, 3)
        XCTAssertEqual(stats.failures, 2)
        XCTAssertEqual(stats.p50, 5)
    }

    func testNoSuccessGivesNoPercentilesAndNullsInJSON() {
        let stats = RoundTripStatistics(samples: [], failures: 4)
        XCTAssertNil(stats.p50)
        XCTAssertEqual(stats.summary, "count 4, failures 4")
        XCTAssertEqual(stats.jsonLine, #"{"count":4,"failures":4,"p50_ms":null,"p90_ms":null,"p99_ms":null,"max_ms":null}"#)
    }

    func testFiguresPrintInMillisecondsWithThreeDecimals() throws {
        let stats = RoundTripStatistics(samples: [412_000, 1_000_499, 2_113_500, 40_000], failures: 0)
        XCTAssertEqual(stats.summary, "count 4, failures 0, round trip ms: p50 0.412 p90 2.114 p99 2.114 max 2.114")
        let object = try JSONSerialization.jsonObject(with: Data(stats.jsonLine.utf8)) as? [String: Any]
        XCTAssertEqual(object?["count"] as? Int, 4)
        XCTAssertEqual(object?["p50_ms"] as? Double, 0.412)
        XCTAssertEqual(RoundTripStatistics.milliseconds(5_000), "0.005")
        XCTAssertEqual(RoundTripStatistics.milliseconds(12_345_678_901), "12345.679")
    }
}
