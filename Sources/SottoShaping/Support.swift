/// A FIFO on a power-of-two ring: append and popFirst in O(1) without allocating once it has
/// grown to the working size. An empty ring that grew large gives its storage back, so an idle
/// tunnel holds no queue memory after a burst.
struct Ring<Element> {
    static var retainedCapacity: Int { 32 }

    private var storage: [Element?] = []
    private var head = 0
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }
    var capacity: Int { storage.count }
    var first: Element? { count == 0 ? nil : storage[head] }

    mutating func append(_ element: Element) {
        if count == storage.count { grow() }
        storage[(head + count) & (storage.count - 1)] = element
        count += 1
    }

    mutating func popFirst() -> Element? {
        guard count > 0 else { return nil }
        let element = storage[head]
        storage[head] = nil
        head = (head + 1) & (storage.count - 1)
        count -= 1
        if count == 0 {
            head = 0
            if storage.count > Self.retainedCapacity { storage = [] }
        }
        return element
    }

    mutating func removeAll() {
        storage = []
        head = 0
        count = 0
    }

    private mutating func grow() {
        let newCapacity = max(8, storage.count * 2)
        var grown = [Element?](repeating: nil, count: newCapacity)
        for offset in 0..<count { grown[offset] = storage[(head + offset) & (storage.count - 1)] }
        storage = grown
        head = 0
    }
}

extension Ring: Sendable where Element: Sendable {}

/// Random draws the schedules need, from the injected generator only.
enum Draw {
    /// Uniform in (0, 1]: never 0, so its logarithm is finite.
    static func unitOpenAtZero<G: RandomNumberGenerator>(using generator: inout G) -> Double {
        Double((generator.next() >> 11) + 1) * 0x1p-53
    }

    /// An exponential gap with the given mean: -ln(U) × mean (inverse transform sampling).
    /// The largest possible gap is ln(2^53) ≈ 36.7 means.
    static func exponential<G: RandomNumberGenerator>(mean: UInt64, using generator: inout G) -> UInt64 {
        let gap = -naturalLog(unitOpenAtZero(using: &generator)) * Double(mean)
        return UInt64(gap.rounded())
    }

    /// Uniform in [center - spread, center + spread] (spread ≤ center).
    static func around<G: RandomNumberGenerator>(_ center: UInt64, spread: UInt64, using generator: inout G) -> UInt64 {
        guard spread > 0 else { return center }
        return center - spread + UInt64.random(in: 0...(2 * spread), using: &generator)
    }
}

/// ln(x) for finite x > 0, with the standard library only (which has no `log`).
///
/// x = m · 2^e with m in [1, 2), so ln x = e · ln 2 + ln m, and ln m = 2 · atanh(z) with
/// z = (m - 1) / (m + 1) ≤ 1/3, whose series z + z³/3 + z⁵/5 + … reaches double precision
/// within 20 terms.
func naturalLog(_ x: Double) -> Double {
    precondition(x > 0 && x.isFinite, "naturalLog needs a finite positive argument")
    let ln2 = 0.693_147_180_559_945_309_417_232_121_458
    let exponent = Double(x.exponent)
    let mantissa = x.significand
    let z = (mantissa - 1) / (mantissa + 1)
    let z2 = z * z
    var term = z
    var sum = 0.0
    var k = 1.0
    while k < 40 {
        sum += term / k
        term *= z2
        k += 2
    }
    return exponent * ln2 + 2 * sum
}
