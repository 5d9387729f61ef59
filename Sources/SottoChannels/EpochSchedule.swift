/// Time cut into numbered epochs: epoch = floor(unixTime / seconds). Identities, envelope keys
/// and hopping ports change from one epoch to the next. Time is always passed in (seconds since
/// 1970), so tests run on a clock of their own.
public struct EpochSchedule: Sendable, Equatable {
    public static let defaultSeconds = 3600
    /// A year: a longer epoch is a typo.
    public static let maximumSeconds = 366 * 86_400

    public let seconds: Int

    public init(seconds: Int) throws {
        guard (1...Self.maximumSeconds).contains(seconds) else { throw ChannelError.badEpochSeconds(seconds) }
        self.seconds = seconds
    }

    /// The epoch `unixTime` falls in. Times before 1970 (or not a number) count as epoch 0: a
    /// broken clock then fails the peers' epoch checks instead of crashing here.
    public func epoch(at unixTime: Double) -> UInt64 {
        guard unixTime.isFinite, unixTime > 0 else { return 0 }
        let epoch = (unixTime / Double(seconds)).rounded(.down)
        // 2^63 seconds is far beyond any clock; clamp rather than trap.
        return epoch >= 9.2e18 ? UInt64(Int64.max) : UInt64(epoch)
    }

    /// When `epoch` begins.
    public func start(of epoch: UInt64) -> Double {
        Double(epoch) * Double(seconds)
    }

    /// The first instant after `unixTime` at which the epoch changes.
    public func nextChange(after unixTime: Double) -> Double {
        start(of: epoch(at: unixTime) &+ 1)
    }
}
