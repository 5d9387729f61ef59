import SottoChannels

/// Secrets and channels the tests share; the bytes are recognisable so a leak would show.
enum TestChannels {
    static let secretA = [UInt8](repeating: 0xA1, count: 32)
    static let secretB = [UInt8](repeating: 0xB2, count: 32)

    /// 2026-01-01T00:00:00Z, a whole number of hours, minutes and 10-second steps.
    static let t0: Double = 1_767_225_600

    static func channel(_ name: String = "friends", secret: [UInt8] = secretA, mode: IdentityMode = .perChannel,
                        epochSeconds: Int = 3600, maxAgeSeconds: Int = Channel.defaultMaxAgeSeconds) -> Channel {
        try! Channel(name: name, secret: secret, identityMode: mode, epochSeconds: epochSeconds, maxAgeSeconds: maxAgeSeconds)
    }
}

/// A deterministic generator (SplitMix64) so a test can repeat a nonce on purpose.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
