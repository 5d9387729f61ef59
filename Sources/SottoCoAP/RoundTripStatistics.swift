/// Round-trip figures of a run of requests. Percentiles use the nearest-rank method over the
/// successful requests; failures are counted, not timed.
public struct RoundTripStatistics: Sendable, Equatable {
    /// Requests attempted (successes and failures).
    public var count: Int
    public var failures: Int
    /// In nanoseconds; nil when no request succeeded.
    public var p50: UInt64?
    public var p90: UInt64?
    public var p99: UInt64?
    public var maximum: UInt64?

    public init(samples: [UInt64], failures: Int) {
        precondition(failures >= 0)
        count = samples.count + failures
        self.failures = failures
        let sorted = samples.sorted()
        p50 = Self.nearestRank(sorted, percent: 50)
        p90 = Self.nearestRank(sorted, percent: 90)
        p99 = Self.nearestRank(sorted, percent: 99)
        maximum = sorted.last
    }

    /// The smallest sample with at least `percent`% of the samples at or below it.
    static func nearestRank(_ sorted: [UInt64], percent: Int) -> UInt64? {
        guard !sorted.isEmpty else { return nil }
        let rank = (percent * sorted.count + 99) / 100
        return sorted[max(rank, 1) - 1]
    }

    /// "count 1000, failures 0, round trip ms: p50 0.412 p90 0.530 p99 0.911 max 2.113"
    public var summary: String {
        var text = "count \(count), failures \(failures)"
        if let p50, let p90, let p99, let maximum {
            text += ", round trip ms: p50 \(Self.milliseconds(p50)) p90 \(Self.milliseconds(p90)) p99 \(Self.milliseconds(p99)) max \(Self.milliseconds(maximum))"
        }
        return text
    }

    /// One JSON object on one line; the percentiles are null when nothing succeeded.
    public var jsonLine: String {
        func field(_ value: UInt64?) -> String { value.map(Self.milliseconds) ?? "null" }
        return "{\"count\":\(count),\"failures\":\(failures),\"p50_ms\":\(field(p50)),\"p90_ms\":\(field(p90)),\"p99_ms\":\(field(p99)),\"max_ms\":\(field(maximum))}"
    }

    /// Nanoseconds as milliseconds with three decimals ("0.412"), without Foundation formatting.
    static func milliseconds(_ nanoseconds: UInt64) -> String {
        let micros = (nanoseconds + 500) / 1000
        let fraction = micros % 1000
        let padded = fraction < 10 ? "00\(fraction)" : fraction < 100 ? "0\(fraction)" : "\(fraction)"
        return "\(micros / 1000).\(padded)"
    }
}
