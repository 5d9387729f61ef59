import Crypto

/// A port schedule both ends compute from a shared secret and the time (docs/channels.md,
/// "Port hopping"):
///
///     port(epoch) = lower + (first 8 bytes of HMAC-SHA256(secret, "sotto hop" || epoch (8, big-endian)) mod size)
///
/// The client sends to the current epoch's port. The server listens on the previous, current and
/// next epoch's ports, so a request sent just before a boundary, or by a client whose clock is
/// off by less than one epoch, still finds a socket. The modulo bias is at most size / 2^64.
public struct PortHopSchedule: Sendable, CustomStringConvertible, CustomReflectable {
    public let range: ClosedRange<UInt16>
    public let schedule: EpochSchedule
    private let secret: [UInt8]

    /// - Parameter secret: at least 16 bytes (a 32-byte key file in practice).
    public init(secret: [UInt8], range: ClosedRange<Int>, epochSeconds: Int) throws {
        guard secret.count >= 16, secret.count <= 64 else { throw ChannelError.badSecretLength(bytes: secret.count) }
        guard range.lowerBound >= 1, range.upperBound <= 65535 else {
            throw ChannelError.badPortRange(lower: range.lowerBound, upper: range.upperBound)
        }
        self.range = UInt16(range.lowerBound)...UInt16(range.upperBound)
        self.schedule = try EpochSchedule(seconds: epochSeconds)
        self.secret = secret
    }

    /// Never shows the secret.
    public var description: String {
        "port hopping over \(range.lowerBound)-\(range.upperBound), \(schedule.seconds) s epochs"
    }

    public var customMirror: Mirror { Mirror(self, children: ["schedule": description]) }

    public func port(forEpoch epoch: UInt64) -> UInt16 {
        let size = UInt64(range.upperBound - range.lowerBound) + 1
        let mac = Derivation.hmac(SymmetricKey(data: secret), Array("sotto hop".utf8), Derivation.bigEndian(epoch))
        return range.lowerBound + UInt16(Derivation.readBigEndian(mac.prefix(8)) % size)
    }

    /// The port a client sends to at `unixTime`.
    public func clientPort(at unixTime: Double) -> UInt16 {
        port(forEpoch: schedule.epoch(at: unixTime))
    }

    /// The ports a server listens on at `unixTime`: previous, current and next epoch's, without
    /// duplicates, in ascending order.
    public func listeningPorts(at unixTime: Double) -> [UInt16] {
        let ports = ChannelIdentityResolver.window(schedule.epoch(at: unixTime)).map(port(forEpoch:))
        return Array(Set(ports)).sorted()
    }

    /// What a server listening on `current` must do at `unixTime`: the ports to open (open them
    /// first, so no moment lacks the new one) and the ports to close.
    public func changes(from current: Set<UInt16>, at unixTime: Double) -> (open: [UInt16], close: [UInt16]) {
        let wanted = Set(listeningPorts(at: unixTime))
        return (wanted.subtracting(current).sorted(), current.subtracting(wanted).sorted())
    }

    /// When the listening set (and the client's port) next changes.
    public func nextChange(after unixTime: Double) -> Double {
        schedule.nextChange(after: unixTime)
    }
}
