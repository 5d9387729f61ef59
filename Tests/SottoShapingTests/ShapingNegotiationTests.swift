import XCTest
@testable import SottoShaping

final class ShapingNegotiationTests: XCTestCase {
    // MARK: parameters

    func testDefaultsAreTheDocumentedOnes() {
        let constant = ShapingParameters.defaults(for: .constant)
        XCTAssertEqual(constant.rate, 10)
        XCTAssertEqual(constant.jitterFraction, 0.2)
        XCTAssertEqual(constant.meanIntervalNanoseconds, 100 * millisecond)
        XCTAssertEqual(ShapingParameters.defaults(for: .poisson).rate, 10)
        let padded = ShapingParameters.defaults(for: .padded)
        XCTAssertEqual(padded.minimumDelayMicroseconds, 10_000)
        XCTAssertEqual(padded.maximumDelayMicroseconds, 50_000)
        XCTAssertEqual(ShapingParameters.defaults(for: .off), .off)
    }

    func testParametersOutOfRangeAreRefusedWithReasons() {
        XCTAssertThrowsError(try ShapingParameters.constant(rate: 0)) { error in
            XCTAssertEqual(error as? ShapingError, .rateOutOfRange(0))
            XCTAssertTrue("\(error)".contains("cells per second"), "\(error)")
        }
        XCTAssertThrowsError(try ShapingParameters.constant(rate: .nan))
        XCTAssertThrowsError(try ShapingParameters.constant(rate: -5))
        XCTAssertThrowsError(try ShapingParameters.poisson(rate: 10_001))
        XCTAssertThrowsError(try ShapingParameters.poisson(rate: .infinity))
        XCTAssertThrowsError(try ShapingParameters.constant(rate: 10, jitterFraction: 0.95)) { error in
            XCTAssertEqual(error as? ShapingError, .jitterOutOfRange(0.95))
        }
        XCTAssertThrowsError(try ShapingParameters.constant(rate: 10, jitterFraction: -0.1))
        XCTAssertThrowsError(try ShapingParameters.padded(minimumDelay: .milliseconds(60), maximumDelay: .milliseconds(50))) { error in
            XCTAssertTrue("\(error)".contains("minimum <= maximum"), "\(error)")
        }
        XCTAssertThrowsError(try ShapingParameters.padded(minimumDelay: .milliseconds(-1), maximumDelay: .milliseconds(5)))
        XCTAssertThrowsError(try ShapingParameters.padded(minimumDelay: .zero, maximumDelay: .seconds(11)))
        XCTAssertNoThrow(try ShapingParameters.padded(minimumDelay: .zero, maximumDelay: .seconds(10)))
        XCTAssertNoThrow(try ShapingParameters.constant(rate: 0.1, jitterFraction: 0.9))
    }

    func testParametersAreQuantizedToTheEncodedUnits() throws {
        let constant = try ShapingParameters.constant(rate: 12.3456, jitterFraction: 0.12345)
        XCTAssertEqual(constant.rateMillihertz, 12_346)
        XCTAssertEqual(constant.jitterPermille, 123)
        let padded = try ShapingParameters.padded(minimumDelay: .nanoseconds(1_999), maximumDelay: .milliseconds(3))
        XCTAssertEqual(padded.minimumDelayMicroseconds, 1)
        XCTAssertEqual(padded.maximumDelayMicroseconds, 3000)
    }

    // MARK: encoding

    func testTheConstantProposalHasTheDocumentedBytes() throws {
        // docs/shaping.md: version 1, policy 2, rate 10,000 mHz, jitter 200 per mille.
        XCTAssertEqual(try ShapingParameters.constant(rate: 10, jitterFraction: 0.2).encoded(),
                       [1, 2, 0x00, 0x00, 0x27, 0x10, 0x00, 0xC8])
        XCTAssertEqual(ShapingParameters.off.encoded(), [1, 0])
        XCTAssertEqual(try ShapingParameters.poisson(rate: 0.5).encoded(), [1, 3, 0, 0, 0x01, 0xF4])
        XCTAssertEqual(try ShapingParameters.padded(minimumDelay: .microseconds(1), maximumDelay: .microseconds(258)).encoded(),
                       [1, 1, 0, 0, 0, 1, 0, 0, 1, 2])
    }

    func testEveryPolicyRoundTripsThroughItsEncoding() throws {
        var generator = SeededGenerator(seed: 31)
        var proposals: [ShapingParameters] = ShapingPolicy.allCases.map { .defaults(for: $0) }
        for _ in 0..<500 {
            let minimum = Int64.random(in: 0...5_000_000, using: &generator)
            proposals.append(try .padded(minimumDelay: .microseconds(minimum),
                                         maximumDelay: .microseconds(Int64.random(in: minimum...10_000_000, using: &generator))))
            proposals.append(try .constant(rate: Double.random(in: 0.1...10_000, using: &generator),
                                           jitterFraction: Double.random(in: 0...0.9, using: &generator)))
            proposals.append(try .poisson(rate: Double.random(in: 0.1...10_000, using: &generator)))
        }
        for proposal in proposals {
            let bytes = proposal.encoded()
            XCTAssertLessThanOrEqual(bytes.count, ShapingParameters.maximumEncodedLength)
            XCTAssertEqual(try ShapingParameters(encoded: bytes), proposal)
            XCTAssertEqual(try ShapingParameters(encoded: bytes[...]), proposal, "slices parse too")
        }
    }

    func testMalformedProposalsAreRefusedWithTheReason() {
        func refusal(_ bytes: [UInt8]) -> ShapingError? {
            do { _ = try ShapingParameters(encoded: bytes); return nil } catch { return error as? ShapingError }
        }
        XCTAssertEqual(refusal([]), .truncated(expected: 2, actual: 0))
        XCTAssertEqual(refusal([1]), .truncated(expected: 2, actual: 1))
        XCTAssertEqual(refusal([2, 0]), .unsupportedVersion(2))
        XCTAssertEqual(refusal([0, 0]), .unsupportedVersion(0))
        XCTAssertEqual(refusal([1, 4]), .unknownPolicy(4))
        XCTAssertEqual(refusal([1, 0xFF, 0, 0]), .unknownPolicy(0xFF))
        XCTAssertEqual(refusal([1, 2, 0, 0, 0x27, 0x10, 0]), .truncated(expected: 8, actual: 7))
        XCTAssertEqual(refusal([1, 1, 0, 0, 0, 1]), .truncated(expected: 10, actual: 6))
        XCTAssertEqual(refusal([1, 3, 0, 0, 1]), .truncated(expected: 6, actual: 5))
        XCTAssertEqual(refusal([1, 0, 0]), .trailingBytes(count: 1))
        XCTAssertEqual(refusal([1, 3, 0, 0, 0x27, 0x10, 0, 0]), .trailingBytes(count: 2))
        XCTAssertEqual(refusal([UInt8](repeating: 1, count: 11)), .oversized(bytes: 11))
        XCTAssertEqual(refusal([UInt8](repeating: 0, count: 70_000)), .oversized(bytes: 70_000))
        // Well formed but out of range: the same validation as the constructors.
        XCTAssertEqual(refusal([1, 3, 0, 0, 0, 0]), .rateOutOfRange(0))
        XCTAssertEqual(refusal([1, 3, 0xFF, 0xFF, 0xFF, 0xFF]), .rateOutOfRange(4_294_967.295))
        XCTAssertEqual(refusal([1, 2, 0, 0, 0x27, 0x10, 0x03, 0xE8]), .jitterOutOfRange(1.0))
        XCTAssertEqual(refusal([1, 1, 0, 0, 0, 2, 0, 0, 0, 1]), .delayOutOfRange(minimumMicroseconds: 2, maximumMicroseconds: 1))
        XCTAssertEqual(refusal([1, 1, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]),
                       .delayOutOfRange(minimumMicroseconds: 0, maximumMicroseconds: 4_294_967_295))
        for error in [refusal([]), refusal([9, 0]), refusal([1, 9]), refusal([1, 0, 0])] {
            XCTAssertFalse("\(error!)".isEmpty)
        }
    }

    func testNoRandomInputCrashesTheParserAndWhatParsesReEncodesIdentically() {
        var generator = SeededGenerator(seed: 77)
        var parsed = 0
        for _ in 0..<50_000 {
            let length = Int.random(in: 0...12, using: &generator)
            var bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            // Bias toward the valid prefix so the field checks get exercised, not just the version.
            if length >= 2 && Bool.random(using: &generator) { bytes[0] = 1; bytes[1] = UInt8.random(in: 0...4, using: &generator) }
            if let parameters = try? ShapingParameters(encoded: bytes) {
                XCTAssertEqual(parameters.encoded(), bytes)
                parsed += 1
            }
        }
        XCTAssertGreaterThan(parsed, 100)
    }

    // MARK: limits and clamp

    func testClampKeepsAProposalWithinTheLimitsUnchanged() throws {
        let limits = try ShapingLimits()
        for proposal in [ShapingParameters.off, try .padded(), try .constant(rate: 20, jitterFraction: 0.3), try .poisson(rate: 5)] {
            XCTAssertEqual(limits.clamp(proposal), proposal)
        }
    }

    func testClampPullsEachFieldToTheNearestBound() throws {
        let limits = try ShapingLimits(minimumRate: 2, maximumRate: 30, maximumJitterFraction: 0.25, maximumDelay: .milliseconds(100))
        XCTAssertEqual(limits.clamp(try .constant(rate: 1000, jitterFraction: 0.5)), try .constant(rate: 30, jitterFraction: 0.25))
        XCTAssertEqual(limits.clamp(try .constant(rate: 0.5, jitterFraction: 0.1)), try .constant(rate: 2, jitterFraction: 0.1))
        XCTAssertEqual(limits.clamp(try .poisson(rate: 400)), try .poisson(rate: 30))
        XCTAssertEqual(limits.clamp(try .padded(minimumDelay: .milliseconds(20), maximumDelay: .seconds(5))),
                       try .padded(minimumDelay: .milliseconds(20), maximumDelay: .milliseconds(100)))
        XCTAssertEqual(limits.clamp(try .padded(minimumDelay: .seconds(2), maximumDelay: .seconds(5))),
                       try .padded(minimumDelay: .milliseconds(100), maximumDelay: .milliseconds(100)))
    }

    func testAPolicyTheExitDoesNotAllowGetsItsFallback() throws {
        let limits = try ShapingLimits(allowedPolicies: [.off, .constant], fallback: try .constant(rate: 100))
        // The fallback itself is clamped to the limits (50 cells/s by default).
        XCTAssertEqual(limits.fallback, try .constant(rate: 50))
        XCTAssertEqual(limits.clamp(try .poisson(rate: 10)), try .constant(rate: 50))
        XCTAssertEqual(limits.clamp(try .padded()), try .constant(rate: 50))
        XCTAssertEqual(limits.clamp(.off), .off)

        XCTAssertEqual(try ShapingLimits(allowedPolicies: [.off, .padded]).fallback, .off)
        XCTAssertEqual(try ShapingLimits(allowedPolicies: [.poisson, .constant]).fallback, .defaults(for: .constant))
    }

    func testClampAlwaysLandsWithinTheLimits() throws {
        let limits = try ShapingLimits(allowedPolicies: [.padded, .constant, .poisson], minimumRate: 5, maximumRate: 25,
                                       maximumJitterFraction: 0.3, maximumDelay: .milliseconds(200))
        var generator = SeededGenerator(seed: 5)
        for _ in 0..<2000 {
            let proposals: [ShapingParameters] = [
                .off,
                try .constant(rate: Double.random(in: 0.1...10_000, using: &generator), jitterFraction: Double.random(in: 0...0.9, using: &generator)),
                try .poisson(rate: Double.random(in: 0.1...10_000, using: &generator)),
                try .padded(minimumDelay: .microseconds(Int64.random(in: 0...5_000_000, using: &generator)), maximumDelay: .seconds(10)),
            ]
            for proposal in proposals {
                let applied = limits.clamp(proposal)
                XCTAssertTrue(limits.allowedPolicies.contains(applied.policy))
                if applied.policy.sendsCover {
                    XCTAssertTrue((5_000...25_000).contains(applied.rateMillihertz))
                    XCTAssertLessThanOrEqual(applied.jitterPermille, 300)
                }
                XCTAssertLessThanOrEqual(applied.maximumDelayMicroseconds, 200_000)
                XCTAssertLessThanOrEqual(applied.minimumDelayMicroseconds, applied.maximumDelayMicroseconds)
                XCTAssertEqual(limits.clamp(applied), applied, "clamping is idempotent")
            }
        }
    }

    func testLimitsThatContradictThemselvesAreRefused() {
        XCTAssertThrowsError(try ShapingLimits(allowedPolicies: []))
        XCTAssertThrowsError(try ShapingLimits(minimumRate: 30, maximumRate: 20)) { error in
            XCTAssertTrue("\(error)".contains("above maximum rate"), "\(error)")
        }
        XCTAssertThrowsError(try ShapingLimits(maximumRate: 0))
        XCTAssertThrowsError(try ShapingLimits(maximumJitterFraction: 1.5))
        XCTAssertThrowsError(try ShapingLimits(maximumDelay: .seconds(60)))
        XCTAssertThrowsError(try ShapingLimits(allowedPolicies: [.off], fallback: try .constant())) { error in
            XCTAssertTrue("\(error)".contains("not among the allowed"), "\(error)")
        }
    }
}
