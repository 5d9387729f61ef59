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

/// The client side of a hopping server for flows that outlive a request: an exit gateway's UDP
/// flows to a `HOST:hopping` expose (docs/channels.md, "An exit gateway in front of a hopping
/// server"). Pure: every time is passed in, so tests run it on a clock of their own.
///
/// A flow targets the port of the epoch it begins in, `port(e)`, and keeps it while the server
/// listens there: a DTLS session lives on one server socket, so moving a flow to another port
/// would break its session. The server listens on `listeningPorts(at:)` and changes that set only
/// at boundaries; at the first boundary whose set lacks a flow's port (two boundaries later, or
/// more when the schedule picked that port again) the flow is retired, so the client's next
/// datagram opens a new flow to the port of the epoch then current.
public struct HopFlowPlan<Key: Hashable & Sendable>: Sendable {
    public let schedule: PortHopSchedule
    private var ports: [Key: UInt16] = [:]

    public init(schedule: PortHopSchedule) {
        self.schedule = schedule
    }

    /// Flows that have a port and were neither retired nor ended.
    public var count: Int { ports.count }

    public func port(of key: Key) -> UInt16? { ports[key] }

    /// A flow begins at `unixTime`: it targets the current epoch's port (the one a `sotto msg`
    /// client would use at that moment). Beginning a flow again gives it the current port again.
    public mutating func begin(_ key: Key, at unixTime: Double) -> UInt16 {
        let port = schedule.clientPort(at: unixTime)
        ports[key] = port
        return port
    }

    /// A flow ended for another reason (the client closed it, it idled out, the tunnel ended).
    public mutating func end(_ key: Key) {
        ports[key] = nil
    }

    /// The flows whose port the server does not listen on at `unixTime`, each with its port; they
    /// leave the plan. Call it at each boundary (`nextCheck(after:)`).
    public mutating func retire(at unixTime: Double) -> [(key: Key, port: UInt16)] {
        guard !ports.isEmpty else { return [] }
        let listening = Set(schedule.listeningPorts(at: unixTime))
        var retired: [(key: Key, port: UInt16)] = []
        for (key, port) in ports where !listening.contains(port) {
            retired.append((key, port))
        }
        for (key, _) in retired { ports[key] = nil }
        return retired
    }

    /// The next boundary after `unixTime`: the moment the server's listening set changes.
    public func nextCheck(after unixTime: Double) -> Double {
        schedule.nextChange(after: unixTime)
    }

    /// The instant to evaluate `retire(at:)` for when a timer meant for `boundary` fires at `now`.
    /// A timer set `lead` seconds early (so no datagram leaves for a port the server is closing
    /// right then) evaluates the boundary itself; one that fires later evaluates `now`; one that
    /// fires much earlier than its boundary (the wall clock was set back) evaluates `now`, so
    /// nothing is retired before the server closes its port.
    public static func evaluationTime(now: Double, boundary: Double, lead: Double) -> Double {
        guard now.isFinite, boundary.isFinite else { return now }
        if now >= boundary { return now }
        return boundary - now <= max(0, lead) ? boundary : now
    }
}
