/// Added latency (enqueue → send) in bounded memory: a log-linear histogram of microseconds.
///
/// Values below 16 µs have a bucket each; above, every power of two is cut into 8 buckets, so a
/// quantile is reported within 1/16 (6.25 %) of a recorded value. 272 buckets cover up to 2^36 µs
/// (19 hours; longer values land in the last bucket). The 1,088 bytes of counts are allocated on
/// the first sample, so a tunnel that never sends real data pays nothing.
public struct LatencyHistogram: Sendable, Equatable {
    static let exactBuckets = 16
    static let subBuckets = 8
    static let bucketCount = 272

    private var counts: [UInt32] = []
    public private(set) var count: UInt64 = 0

    public init() {}

    public mutating func record(nanoseconds: UInt64) {
        if counts.isEmpty { counts = [UInt32](repeating: 0, count: Self.bucketCount) }
        let index = Self.bucket(microseconds: nanoseconds / 1000)
        // Saturate rather than wrap: after 4 billion samples in one bucket the shape still holds.
        if counts[index] < UInt32.max { counts[index] += 1 }
        count += 1
    }

    /// The `q`-quantile (0 ≤ q ≤ 1) in nanoseconds, nil when nothing was recorded.
    public func quantile(_ q: Double) -> UInt64? {
        guard count > 0 else { return nil }
        let clamped = q.isNaN ? 0.5 : min(max(q, 0), 1)
        let total = counts.reduce(UInt64(0)) { $0 + UInt64($1) }
        let rank = max(1, UInt64((clamped * Double(total)).rounded(.up)))
        var seen: UInt64 = 0
        for (index, bucketCount) in counts.enumerated() {
            seen += UInt64(bucketCount)
            if seen >= rank { return Self.representative(of: index) * 1000 }
        }
        return Self.representative(of: Self.bucketCount - 1) * 1000
    }

    public var p50: UInt64? { quantile(0.5) }
    public var p99: UInt64? { quantile(0.99) }

    /// Adds another histogram's samples (for per-profile totals).
    public mutating func merge(_ other: LatencyHistogram) {
        guard !other.counts.isEmpty else { return }
        if counts.isEmpty { counts = [UInt32](repeating: 0, count: Self.bucketCount) }
        for index in counts.indices {
            let (sum, overflow) = counts[index].addingReportingOverflow(other.counts[index])
            counts[index] = overflow ? UInt32.max : sum
        }
        count += other.count
    }

    static func bucket(microseconds value: UInt64) -> Int {
        if value < UInt64(exactBuckets) { return Int(value) }
        let octave = 63 - value.leadingZeroBitCount            // ≥ 4
        let sub = Int((value >> UInt64(octave - 3)) & 7)
        return min(exactBuckets + (octave - 4) * subBuckets + sub, bucketCount - 1)
    }

    /// The middle of a bucket, in microseconds.
    static func representative(of index: Int) -> UInt64 {
        if index < exactBuckets { return UInt64(index) }
        let octave = (index - exactBuckets) / subBuckets + 4
        let sub = UInt64((index - exactBuckets) % subBuckets)
        let width = UInt64(1) << UInt64(octave - 3)
        return (8 + sub) * width + width / 2
    }
}
