/// The exit's bounds on what a client may propose (docs/shaping.md, "Negotiation"). The exit
/// pays for the cover it sends back, so it caps the rate; it keeps cells for the padded delay, so
/// it caps the delay; and it may refuse policies outright, answering with its fallback.
public struct ShapingLimits: Sendable, Equatable {
    public let allowedPolicies: Set<ShapingPolicy>
    /// Cells per second × 1000.
    public let minimumRateMillihertz: UInt32
    public let maximumRateMillihertz: UInt32
    public let maximumJitterPermille: UInt16
    public let maximumDelayMicroseconds: UInt32
    /// Applied when the proposed policy is not allowed; itself allowed and within the limits.
    public private(set) var fallback: ShapingParameters

    public var minimumRate: Double { Double(minimumRateMillihertz) / 1000 }
    public var maximumRate: Double { Double(maximumRateMillihertz) / 1000 }

    /// - Parameters:
    ///   - minimumRate: below this a shaped queue drains too slowly to be useful (1 cell/s).
    ///   - maximumRate: 50 cells/s is about 25 KB/s of cover per tunnel in each direction.
    ///   - maximumDelay: how long a padded cell may be held (1 s).
    ///   - fallback: what the exit applies to a policy it does not allow (`off` when allowed,
    ///     else the defaults of an allowed policy, clamped).
    public init(allowedPolicies: Set<ShapingPolicy> = Set(ShapingPolicy.allCases),
                minimumRate: Double = 1, maximumRate: Double = 50,
                maximumJitterFraction: Double = ShapingParameters.maximumJitterFraction,
                maximumDelay: Duration = .seconds(1),
                fallback: ShapingParameters? = nil) throws {
        guard !allowedPolicies.isEmpty else { throw ShapingError.badLimits("at least one policy must be allowed") }
        guard let minimum = ShapingParameters.millihertz(minimumRate),
              ShapingParameters.rateRange.contains(minimumRate) else { throw ShapingError.rateOutOfRange(minimumRate) }
        guard let maximum = ShapingParameters.millihertz(maximumRate),
              ShapingParameters.rateRange.contains(maximumRate) else { throw ShapingError.rateOutOfRange(maximumRate) }
        guard minimum <= maximum else {
            throw ShapingError.badLimits("minimum rate \(minimumRate) cells/s is above maximum rate \(maximumRate) cells/s")
        }
        guard let jitter = ShapingParameters.permille(maximumJitterFraction),
              maximumJitterFraction <= ShapingParameters.maximumJitterFraction else {
            throw ShapingError.jitterOutOfRange(maximumJitterFraction)
        }
        let delay = ShapingParameters.microseconds(maximumDelay)
        guard delay >= 0, delay <= Int64(ShapingParameters.maximumDelayMicroseconds) else {
            throw ShapingError.delayOutOfRange(minimumMicroseconds: 0, maximumMicroseconds: delay)
        }
        self.allowedPolicies = allowedPolicies
        self.minimumRateMillihertz = minimum
        self.maximumRateMillihertz = maximum
        self.maximumJitterPermille = jitter
        self.maximumDelayMicroseconds = UInt32(delay)
        // A placeholder until the fallback is clamped by the limits just set.
        self.fallback = .off
        let chosen: ShapingParameters
        if let fallback = fallback {
            guard allowedPolicies.contains(fallback.policy) else {
                throw ShapingError.badLimits("fallback policy \(fallback.policy) is not among the allowed policies")
            }
            chosen = fallback
        } else if allowedPolicies.contains(.off) {
            chosen = .off
        } else {
            // Deterministic pick: the first allowed policy in declaration order.
            chosen = .defaults(for: ShapingPolicy.allCases.first(where: allowedPolicies.contains)!)
        }
        self.fallback = clampAllowed(chosen)
    }

    /// The parameters the exit applies for `proposal`: the proposal itself where it is within
    /// the limits, each field pulled to the nearest bound where it is not, and the fallback
    /// when the policy is not allowed. The client learns the result from the exit's reply.
    public func clamp(_ proposal: ShapingParameters) -> ShapingParameters {
        guard allowedPolicies.contains(proposal.policy) else { return fallback }
        return clampAllowed(proposal)
    }

    private func clampAllowed(_ proposal: ShapingParameters) -> ShapingParameters {
        let rate = min(max(proposal.rateMillihertz, minimumRateMillihertz), maximumRateMillihertz)
        // Each value below is within both the limits and the parameters' own ranges, which the
        // initializer checked, so these constructions cannot throw.
        switch proposal.policy {
        case .off:
            return .off
        case .padded:
            let maximum = min(proposal.maximumDelayMicroseconds, maximumDelayMicroseconds)
            let minimum = min(proposal.minimumDelayMicroseconds, maximum)
            return try! .padded(minimumMicroseconds: Int64(minimum), maximumMicroseconds: Int64(maximum))
        case .constant:
            return try! .constant(rateMillihertz: rate, jitterPermille: min(proposal.jitterPermille, maximumJitterPermille))
        case .poisson:
            return try! .poisson(rateMillihertz: rate)
        }
    }
}

/// The bounds of one tunnel's send queues, in cells (docs/shaping.md, "Queues").
public struct ShapingQueueLimits: Sendable, Equatable {
    public static let maximumCells = 1 << 20

    /// Datagram cells queued at most; beyond it the oldest datagram is dropped.
    public let datagramCells: Int
    /// Stream cells at which the caller is told to stop reading (nothing is dropped); it may
    /// read again once the queue has drained to half of this.
    public let streamCells: Int
    /// Control cells queued at most; beyond it a control cell is refused.
    public let controlCells: Int

    /// The defaults hold 25 s of datagrams and of stream data at 10 cells/s: longer than any
    /// datagram is worth waiting, and within a stream window's worth (256 × 484 ≈ 124 KB).
    public init(datagramCells: Int = 256, streamCells: Int = 256, controlCells: Int = 64) throws {
        for (name, value) in [("datagram", datagramCells), ("stream", streamCells), ("control", controlCells)]
        where !(1...Self.maximumCells).contains(value) {
            throw ShapingError.badQueueLimit(name: name, value: value)
        }
        self.datagramCells = datagramCells
        self.streamCells = streamCells
        self.controlCells = controlCells
    }

    public static let standard = try! ShapingQueueLimits()

    /// The stream queue depth at which a paused caller may read again.
    public var streamResumeCells: Int { streamCells / 2 }
}
