/// Pure pieces of the measurements: the probe datagram, percentiles, the zero-loss rate search
/// and the TCP sink's framing. No sockets here.

/// The body of every UDP probe: a magic, the run it belongs to (a window of the rate search, the
/// round-trip series or a flow), its sequence number, then filler up to the requested size.
struct ProbePayload: Equatable {
    static let magic: [UInt8] = Array("SBv1".utf8)
    static let headerLength = 16
    /// The largest body that still fits an IPv4 UDP datagram with the longest SOCKS5 header.
    static let maximumLength = 65_507 - 262

    var run: UInt32
    var sequence: UInt64

    /// Writes the probe into `bytes`, which must be `headerLength...maximumLength` long; the
    /// filler is left as it is, so a buffer is prepared once and only its header rewritten.
    func write(into bytes: inout [UInt8], at offset: Int = 0) {
        for (index, byte) in Self.magic.enumerated() { bytes[offset + index] = byte }
        for index in 0..<4 { bytes[offset + 4 + index] = UInt8(truncatingIfNeeded: run >> (24 - 8 * index)) }
        for index in 0..<8 { bytes[offset + 8 + index] = UInt8(truncatingIfNeeded: sequence >> (56 - 8 * index)) }
    }

    /// Reads a probe; nil for anything that is not one (a stray datagram is ignored, not fatal).
    static func parse<Bytes: RandomAccessCollection>(_ bytes: Bytes) -> ProbePayload?
    where Bytes.Element == UInt8, Bytes.Index == Int {
        guard bytes.count >= headerLength else { return nil }
        let start = bytes.startIndex
        for index in 0..<4 where bytes[start + index] != magic[index] { return nil }
        var run: UInt32 = 0
        for index in 0..<4 { run = run << 8 | UInt32(bytes[start + 4 + index]) }
        var sequence: UInt64 = 0
        for index in 0..<8 { sequence = sequence << 8 | UInt64(bytes[start + 8 + index]) }
        return ProbePayload(run: run, sequence: sequence)
    }

    /// A body of `length` bytes with a non-constant filler, so nothing on the path can shrink it.
    static func template(length: Int) -> [UInt8] {
        var state: UInt32 = 0x9E37_79B9
        return (0..<length).map { _ in
            state ^= state << 13; state ^= state >> 17; state ^= state << 5
            return UInt8(truncatingIfNeeded: state)
        }
    }
}

/// Round-trip figures from samples in nanoseconds. Percentiles use the nearest-rank method.
struct LatencySummary: Equatable {
    var count: Int
    var p50: UInt64
    var p99: UInt64
    var minimum: UInt64
    var maximum: UInt64
    var mean: UInt64

    init?(samples: [UInt64]) {
        guard !samples.isEmpty else { return nil }
        let sorted = samples.sorted()
        count = sorted.count
        p50 = Self.nearestRank(sorted, percent: 50)
        p99 = Self.nearestRank(sorted, percent: 99)
        minimum = sorted.first!
        maximum = sorted.last!
        mean = sorted.reduce(0, +) / UInt64(sorted.count)
    }

    /// The smallest sample with at least `percent`% of the samples at or below it.
    static func nearestRank(_ sorted: [UInt64], percent: Int) -> UInt64 {
        let rank = (percent * sorted.count + 99) / 100
        return sorted[max(rank, 1) - 1]
    }
}

/// Finds the highest offered rate (datagrams/s) at which a window loses nothing: double from
/// `start` until a window loses datagrams or `maximum` is reached, then bisect between the best
/// loss-free rate and the lowest lossy one until they are within `resolution` of each other or
/// `maximumProbes` windows were spent.
struct ZeroLossRateSearch {
    let minimum: Int
    let maximum: Int
    /// Stop bisecting when the gap is below this fraction of the best rate.
    let resolution: Double
    let maximumProbes: Int

    private(set) var bestLossFree: Int = 0
    private(set) var lowestLossy: Int?
    private(set) var probes = 0
    private(set) var nextRate: Int?

    init(start: Int, minimum: Int = 100, maximum: Int, resolution: Double = 0.05, maximumProbes: Int = 20) {
        precondition(minimum > 0 && minimum <= maximum && maximumProbes > 0)
        self.minimum = minimum
        self.maximum = maximum
        self.resolution = resolution
        self.maximumProbes = maximumProbes
        self.nextRate = Swift.min(Swift.max(start, minimum), maximum)
    }

    var isFinished: Bool { nextRate == nil }

    mutating func record(rate: Int, lossFree: Bool) {
        precondition(rate == nextRate, "record the rate that nextRate asked for")
        probes += 1
        if lossFree {
            bestLossFree = Swift.max(bestLossFree, rate)
        } else {
            lowestLossy = Swift.min(lowestLossy ?? rate, rate)
        }
        nextRate = decideNext()
    }

    private func decideNext() -> Int? {
        guard probes < maximumProbes else { return nil }
        guard let lossy = lowestLossy else {
            // Still doubling.
            if bestLossFree >= maximum { return nil }
            return Swift.min(bestLossFree * 2, maximum)
        }
        let low = Swift.max(bestLossFree, 0)
        if lossy <= minimum { return nil }
        let gap = lossy - low
        if low > 0, Double(gap) <= Double(low) * resolution { return nil }
        let middle = low == 0 ? Swift.max(lossy / 2, minimum) : low + gap / 2
        // The floor reached and still lossy, or no integer left between the bounds.
        if middle <= low || middle >= lossy { return nil }
        return middle
    }
}

/// The TCP sink's framing: each transfer is an 8-byte big-endian length L followed by L bytes;
/// when all L have arrived the sink answers with L as 8 bytes, so the client times the transfer
/// end to end without relying on half-close (which not every proxy carries). Transfers may follow
/// one another on one connection.
struct SinkFraming {
    /// A declared transfer longer than this is refused (a stray client sending text, say).
    static let maximumTransfer: UInt64 = 1 << 40

    private var header: [UInt8] = []
    private var remaining: UInt64?
    private(set) var totalBytes: UInt64 = 0

    /// Consumes a chunk and returns the lengths of the transfers it completed, in order.
    mutating func consume<Bytes: Collection>(_ bytes: Bytes) throws -> [UInt64] where Bytes.Element == UInt8 {
        var completed: [UInt64] = []
        var index = bytes.startIndex
        while index != bytes.endIndex {
            if let left = remaining {
                let available = UInt64(bytes.distance(from: index, to: bytes.endIndex))
                let take = Swift.min(left, available)
                index = bytes.index(index, offsetBy: Int(take))
                totalBytes += take
                if take == left {
                    remaining = nil
                    completed.append(currentLength)
                } else {
                    remaining = left - take
                }
            } else {
                header.append(bytes[index])
                index = bytes.index(after: index)
                if header.count == 8 {
                    let length = header.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                    header = []
                    guard length <= Self.maximumTransfer else { throw SinkFramingError.transferTooLong(length) }
                    currentLength = length
                    if length == 0 { completed.append(0) } else { remaining = length }
                }
            }
        }
        return completed
    }

    private var currentLength: UInt64 = 0

    static func encodeLength(_ length: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: length >> (56 - 8 * $0)) }
    }

    static func decodeLength(_ bytes: [UInt8]) -> UInt64? {
        guard bytes.count == 8 else { return nil }
        return bytes.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }
}

enum SinkFramingError: Error, Equatable, CustomStringConvertible {
    case transferTooLong(UInt64)

    var description: String {
        switch self {
        case .transferTooLong(let length):
            return "tcp-sink: a transfer declared \(length) bytes, more than \(SinkFraming.maximumTransfer); is the client speaking the sink's framing (8-byte length, then the bytes)?"
        }
    }
}
