/// Why shaping parameters, limits or an encoded proposal were refused. Every description says
/// what was wrong and what would be accepted.
public enum ShapingError: Error, Sendable, Equatable, CustomStringConvertible {
    case rateOutOfRange(Double)
    case jitterOutOfRange(Double)
    case delayOutOfRange(minimumMicroseconds: Int64, maximumMicroseconds: Int64)
    case badQueueLimit(name: String, value: Int)
    case badLimits(String)
    // Parsing an encoded proposal (docs/shaping.md, "Negotiation").
    case truncated(expected: Int, actual: Int)
    case oversized(bytes: Int)
    case trailingBytes(count: Int)
    case unsupportedVersion(UInt8)
    case unknownPolicy(UInt8)

    public var description: String {
        switch self {
        case .rateOutOfRange(let rate):
            return "a shaping rate must be from \(ShapingParameters.rateRange.lowerBound) to \(ShapingParameters.rateRange.upperBound) cells per second, got \(rate)"
        case .jitterOutOfRange(let fraction):
            return "a shaping jitter fraction must be from 0 to \(ShapingParameters.maximumJitterFraction) of the interval, got \(fraction)"
        case .delayOutOfRange(let minimum, let maximum):
            return "padded delays must satisfy 0 <= minimum <= maximum <= \(ShapingParameters.maximumDelayMicroseconds / 1000) ms, got \(Double(minimum) / 1000) ms to \(Double(maximum) / 1000) ms"
        case .badQueueLimit(let name, let value):
            return "the shaping queue limit \(name) must be from 1 to \(ShapingQueueLimits.maximumCells) cells, got \(value)"
        case .badLimits(let why):
            return "shaping limits refused: \(why)"
        case .truncated(let expected, let actual):
            return "shaping proposal truncated: \(actual) bytes where at least \(expected) are needed"
        case .oversized(let bytes):
            return "shaping proposal of \(bytes) bytes is longer than any version-\(ShapingParameters.encodingVersion) proposal (\(ShapingParameters.maximumEncodedLength) bytes at most)"
        case .trailingBytes(let count):
            return "shaping proposal has \(count) unexpected bytes after its fields"
        case .unsupportedVersion(let version):
            return "shaping proposal version \(version) is not supported (this gateway speaks version \(ShapingParameters.encodingVersion))"
        case .unknownPolicy(let code):
            return "shaping proposal names unknown policy \(code) (known: 0 off, 1 padded, 2 constant, 3 poisson)"
        }
    }
}

/// When a tunnel's cells leave (docs/shaping.md, "Policies").
public enum ShapingPolicy: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// Cells leave as soon as they are queued (still fixed-size).
    case off
    /// Each real cell waits a uniformly random delay in [minimum, maximum]; order is kept.
    case padded
    /// One cell every interval ± uniform jitter: a real cell if one is queued, cover otherwise.
    case constant
    /// Exponentially distributed gaps at a mean rate (Loopix), real or cover in the same way.
    case poisson

    /// The policy's number in the encoded proposal.
    public var code: UInt8 {
        switch self {
        case .off: return 0
        case .padded: return 1
        case .constant: return 2
        case .poisson: return 3
        }
    }

    public init?(code: UInt8) {
        guard let policy = Self.allCases.first(where: { $0.code == code }) else { return nil }
        self = policy
    }

    /// Whether the policy sends on a clock of its own, with cover cells when nothing is queued.
    public var sendsCover: Bool { self == .constant || self == .poisson }

    public var description: String { rawValue }
}

/// A shaping policy with its parameters, validated and quantized to the units of the encoded
/// proposal (millicells per second, per-mille jitter, microsecond delays), so what one side
/// encodes is exactly what the other decodes.
///
/// ## Why the defaults are 10 cells/s with 20 % jitter
///
/// The chat workload is Poisson at about 2 messages/s of 50 to 1,000 bytes (mean 525),
/// in 514-byte cells carrying 484 payload bytes: 46 % of messages take one cell, 51 % two and
/// 3 % three, 1.58 cells per message, so about 3.2 real cells/s and 1,050 application bytes/s
/// in the busy direction.
///
/// - Overhead: a constant policy puts `rate × 514` bytes per second on the wire whatever the
///   load, so 5× overhead allows at most 5 × 1,050 / 514 ≈ 10.2 cells/s (cell bytes only; the
///   TCP/IP headers of one packet per cell add about 10 % more on a capture).
/// - Latency: a message's first cell waits for the next slot (half an interval on average) and
///   each further cell one interval more, so the median message (a two-cell one) waits about
///   one interval plus a little: ≤ 100 ms needs about 13 cells/s.
///
/// A queueing model of that workload (jitter 0.2; per-message delay until its last cell
/// leaves, per-cell delay enqueue → send as `ShapingCounters.addedLatency` records it):
///
/// | rate (cells/s) | overhead (cell bytes) | p50 per message | p50 per cell |
/// | --- | --- | --- | --- |
/// | 8  | 3.9× | 184 ms | 151 ms |
/// | 10 | 4.9× | 137 ms | 107 ms |
/// | 12 | 5.9× | 109 ms |  84 ms |
/// | 14 | 6.9× |  90 ms |  69 ms |
/// | 20 | 9.8× |  60 ms |  48 ms |
///
/// So with 514-byte cells no constant rate meets both "≤ 5×" and "≤ 100 ms p50" for this
/// workload (nor does another cell size: at exactly 5× the p50 per message stays 130-140 ms
/// from 256- to 1,030-byte cells). The default takes the overhead bound, 10 cells/s (about
/// 4.9×, 100 ms interval, p50 ≈ 107 ms per cell and ≈ 137 ms per message); 12-14 cells/s buys
/// the latency bound for about 6-7×. AUC is not what decides the rate: a constant schedule is
/// independent of the data as long as the queue keeps up, which at 10 cells/s (31 % load) it
/// does. The jitter (±20 % of the interval) keeps the send times from being an exact clock an
/// observer could lock onto without changing the mean rate; it costs about 1 % of latency.
/// `poisson` at the same mean rate has the same overhead and about 20 % more latency.
/// `padded` defaults to 10-50 ms: it hides the exact instant of each message, not its presence.
public struct ShapingParameters: Sendable, Hashable, CustomStringConvertible {
    public static let rateRange: ClosedRange<Double> = 0.1...10_000
    public static let maximumJitterFraction = 0.9
    /// Ten seconds: a longer random delay is a typo, and it bounds how long cells sit queued.
    public static let maximumDelayMicroseconds: UInt32 = 10_000_000

    public static let defaultRate = 10.0
    public static let defaultJitterFraction = 0.2
    public static let defaultMinimumDelay = Duration.milliseconds(10)
    public static let defaultMaximumDelay = Duration.milliseconds(50)

    public let policy: ShapingPolicy
    /// Cells per second × 1000 (constant, poisson); 0 for the others.
    public let rateMillihertz: UInt32
    /// Jitter as thousandths of the interval, each side (constant); 0 for the others.
    public let jitterPermille: UInt16
    /// The padded policy's delay range in microseconds; 0 for the others.
    public let minimumDelayMicroseconds: UInt32
    public let maximumDelayMicroseconds: UInt32

    /// Cells per second.
    public var rate: Double { Double(rateMillihertz) / 1000 }
    /// The jitter as a fraction of the interval, each side.
    public var jitterFraction: Double { Double(jitterPermille) / 1000 }
    /// The mean gap between cells in nanoseconds (constant, poisson); 0 for the others.
    public var meanIntervalNanoseconds: UInt64 {
        rateMillihertz == 0 ? 0 : 1_000_000_000_000 / UInt64(rateMillihertz)
    }

    private init(policy: ShapingPolicy, rateMillihertz: UInt32 = 0, jitterPermille: UInt16 = 0,
                 minimumDelayMicroseconds: UInt32 = 0, maximumDelayMicroseconds: UInt32 = 0) {
        self.policy = policy
        self.rateMillihertz = rateMillihertz
        self.jitterPermille = jitterPermille
        self.minimumDelayMicroseconds = minimumDelayMicroseconds
        self.maximumDelayMicroseconds = maximumDelayMicroseconds
    }

    /// Send at once.
    public static let off = ShapingParameters(policy: .off)

    /// Each real cell waits a uniformly random delay in [minimumDelay, maximumDelay].
    public static func padded(minimumDelay: Duration = defaultMinimumDelay,
                              maximumDelay: Duration = defaultMaximumDelay) throws -> ShapingParameters {
        let minimum = microseconds(minimumDelay), maximum = microseconds(maximumDelay)
        return try padded(minimumMicroseconds: minimum, maximumMicroseconds: maximum)
    }

    /// One cell every `1 / rate` seconds ± `jitterFraction` of that interval.
    public static func constant(rate: Double = defaultRate,
                                jitterFraction: Double = defaultJitterFraction) throws -> ShapingParameters {
        try constant(rateMillihertz: millihertz(rate), jitterPermille: permille(jitterFraction))
    }

    /// Exponentially distributed gaps with mean `1 / rate` seconds.
    public static func poisson(rate: Double = defaultRate) throws -> ShapingParameters {
        try poisson(rateMillihertz: millihertz(rate))
    }

    /// The policy with its default parameters.
    public static func defaults(for policy: ShapingPolicy) -> ShapingParameters {
        switch policy {
        case .off: return .off
        // The defaults are in range by construction; `try!` documents that, it cannot trap.
        case .padded: return try! padded()
        case .constant: return try! constant()
        case .poisson: return try! poisson()
        }
    }

    // The quantized constructors, shared by the public ones, the decoder and the clamp.

    static func padded(minimumMicroseconds: Int64, maximumMicroseconds: Int64) throws -> ShapingParameters {
        guard minimumMicroseconds >= 0, minimumMicroseconds <= maximumMicroseconds,
              maximumMicroseconds <= Int64(maximumDelayMicroseconds) else {
            throw ShapingError.delayOutOfRange(minimumMicroseconds: minimumMicroseconds,
                                               maximumMicroseconds: maximumMicroseconds)
        }
        return ShapingParameters(policy: .padded, minimumDelayMicroseconds: UInt32(minimumMicroseconds),
                                 maximumDelayMicroseconds: UInt32(maximumMicroseconds))
    }

    static func constant(rateMillihertz: UInt32?, jitterPermille: UInt16?) throws -> ShapingParameters {
        let rate = try checkedRate(rateMillihertz)
        guard let jitter = jitterPermille, Double(jitter) <= maximumJitterFraction * 1000 else {
            throw ShapingError.jitterOutOfRange(jitterPermille.map { Double($0) / 1000 } ?? .nan)
        }
        return ShapingParameters(policy: .constant, rateMillihertz: rate, jitterPermille: jitter)
    }

    static func poisson(rateMillihertz: UInt32?) throws -> ShapingParameters {
        ShapingParameters(policy: .poisson, rateMillihertz: try checkedRate(rateMillihertz))
    }

    private static func checkedRate(_ millihertz: UInt32?) throws -> UInt32 {
        guard let millihertz = millihertz,
              Double(millihertz) >= rateRange.lowerBound * 1000,
              Double(millihertz) <= rateRange.upperBound * 1000 else {
            throw ShapingError.rateOutOfRange(millihertz.map { Double($0) / 1000 } ?? .nan)
        }
        return millihertz
    }

    /// nil for a value no UInt32 holds (negative, NaN, huge): the caller reports it as out of range.
    static func millihertz(_ rate: Double) -> UInt32? {
        let scaled = (rate * 1000).rounded()
        guard scaled.isFinite, scaled >= 0, scaled <= Double(UInt32.max) else { return nil }
        return UInt32(scaled)
    }

    static func permille(_ fraction: Double) -> UInt16? {
        let scaled = (fraction * 1000).rounded()
        guard scaled.isFinite, scaled >= 0, scaled <= Double(UInt16.max) else { return nil }
        return UInt16(scaled)
    }

    /// Whole microseconds, rounded down; negative durations stay negative so validation refuses them.
    static func microseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000)
        guard !overflow else { return seconds < 0 ? Int64.min : Int64.max }
        return scaled + attoseconds / 1_000_000_000_000
    }

    public var description: String {
        switch policy {
        case .off: return "off"
        case .padded:
            return "padded \(Double(minimumDelayMicroseconds) / 1000)-\(Double(maximumDelayMicroseconds) / 1000) ms"
        case .constant: return "constant \(rate) cells/s ±\(jitterFraction)"
        case .poisson: return "poisson \(rate) cells/s"
        }
    }
}

// MARK: - Negotiation encoding

extension ShapingParameters {
    /// docs/shaping.md, "Negotiation": version, policy code, then the policy's fields big-endian.
    public static let encodingVersion: UInt8 = 1
    /// The padded proposal: 2 + 4 + 4 bytes.
    public static let maximumEncodedLength = 10

    private static func fieldLength(_ policy: ShapingPolicy) -> Int {
        switch policy {
        case .off: return 0
        case .padded: return 8
        case .constant: return 6
        case .poisson: return 4
        }
    }

    /// The proposal as it goes into the handshake options (at most `maximumEncodedLength` bytes).
    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = [Self.encodingVersion, policy.code]
        bytes.reserveCapacity(2 + Self.fieldLength(policy))
        func put32(_ value: UInt32) { for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) } }
        switch policy {
        case .off:
            break
        case .padded:
            put32(minimumDelayMicroseconds)
            put32(maximumDelayMicroseconds)
        case .constant:
            put32(rateMillihertz)
            bytes.append(UInt8(truncatingIfNeeded: jitterPermille >> 8))
            bytes.append(UInt8(truncatingIfNeeded: jitterPermille))
        case .poisson:
            put32(rateMillihertz)
        }
        return bytes
    }

    /// Parses an encoded proposal: exactly one, nothing after it, every field in range.
    public init<Bytes: Collection>(encoded bytes: Bytes) throws where Bytes.Element == UInt8 {
        // Refuse oversized input before looking at it: a peer cannot make us walk a long buffer.
        guard bytes.count <= Self.maximumEncodedLength else { throw ShapingError.oversized(bytes: bytes.count) }
        let input = Array(bytes)
        guard input.count >= 2 else { throw ShapingError.truncated(expected: 2, actual: input.count) }
        guard input[0] == Self.encodingVersion else { throw ShapingError.unsupportedVersion(input[0]) }
        guard let policy = ShapingPolicy(code: input[1]) else { throw ShapingError.unknownPolicy(input[1]) }
        let expected = 2 + Self.fieldLength(policy)
        guard input.count >= expected else { throw ShapingError.truncated(expected: expected, actual: input.count) }
        guard input.count == expected else { throw ShapingError.trailingBytes(count: input.count - expected) }
        func u32(_ at: Int) -> UInt32 { input[at..<at + 4].reduce(0) { $0 << 8 | UInt32($1) } }
        switch policy {
        case .off:
            self = .off
        case .padded:
            self = try Self.padded(minimumMicroseconds: Int64(u32(2)), maximumMicroseconds: Int64(u32(6)))
        case .constant:
            self = try Self.constant(rateMillihertz: u32(2), jitterPermille: UInt16(input[6]) << 8 | UInt16(input[7]))
        case .poisson:
            self = try Self.poisson(rateMillihertz: u32(2))
        }
    }
}
