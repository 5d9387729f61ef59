// Cutting datagrams into cells and putting them back together with fixed bounds
// (protocol.md, "Datagrams"). Pure: the clock is passed in, nothing is scheduled.

/// Why a datagram cannot be sent.
public enum FragmentationError: Error, Equatable, Sendable, CustomStringConvertible {
    case datagramTooLarge(size: Int, maximum: Int)

    public var description: String {
        switch self {
        case let .datagramTooLarge(size, maximum):
            return "datagram of \(size) bytes exceeds the \(maximum) bytes the tunnel carries (the largest UDP payload over IPv4)"
        }
    }
}

/// Cuts a datagram into `.datagram` cells.
public enum Fragmenter {
    /// The largest UDP payload over IPv4: 65,535 - 20 (IP header) - 8 (UDP header).
    public static let maxDatagramSize = 65_507

    /// The cells carrying `datagram`, in order: `ceil(count / capacity)` fragments, all with the
    /// same flow and message number; an empty datagram is one fragment of length 0.
    public static func cells(for datagram: [UInt8], flow: UInt32, message: UInt16, cellSize: Int) throws -> [Cell] {
        guard datagram.count <= maxDatagramSize else {
            throw FragmentationError.datagramTooLarge(size: datagram.count, maximum: maxDatagramSize)
        }
        precondition(CellCodec.cellSizeRange.contains(cellSize), "cell size \(cellSize) outside \(CellCodec.cellSizeRange)")
        let capacity = CellCodec.payloadCapacity(cellSize: cellSize)
        if datagram.count <= capacity {
            // Shares the caller's storage: no copy for the common small datagram.
            return [Cell(type: .datagram, flow: flow, message: message, fragmentIndex: 0, fragmentCount: 1, payload: datagram)]
        }
        let count = (datagram.count + capacity - 1) / capacity  // at most 669 with the smallest cell
        var cells = [Cell]()
        cells.reserveCapacity(count)
        var start = 0
        for index in 0..<count {
            let end = min(start + capacity, datagram.count)
            cells.append(Cell(
                type: .datagram, flow: flow, message: message,
                fragmentIndex: UInt16(index), fragmentCount: UInt16(count),
                payload: Array(datagram[start..<end])
            ))
            start = end
        }
        return cells
    }
}

/// The bounds of one tunnel's reassembly (protocol.md, "Datagrams").
public struct ReassemblyLimits: Equatable, Sendable {
    /// Partial datagrams held at once; past it the oldest is dropped.
    public var maxPartialDatagrams: Int
    /// Bytes held by partial datagrams; past it the oldest is dropped.
    public var maxPartialBytes: Int
    /// A partial datagram whose first fragment arrived longer ago than this is dropped.
    public var maxAgeNanoseconds: UInt64

    public init(maxPartialDatagrams: Int = 64, maxPartialBytes: Int = 1 << 20, maxAgeNanoseconds: UInt64 = 10_000_000_000) {
        precondition(maxPartialDatagrams >= 1, "reassembly needs room for at least one partial datagram")
        precondition(maxPartialBytes >= 1, "reassembly needs room for at least one byte")
        self.maxPartialDatagrams = maxPartialDatagrams
        self.maxPartialBytes = maxPartialBytes
        self.maxAgeNanoseconds = maxAgeNanoseconds
    }

    public static let `default` = ReassemblyLimits()
}

/// Why a fragment (or a whole partial datagram) was dropped.
public enum ReassemblyDrop: Equatable, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// The fragment's count differs from the count of earlier fragments of the same message.
    case inconsistentCount
    /// The fragment's index is not below its count (or its count is 0).
    case indexOutOfRange
    /// A fragment with this index already arrived.
    case duplicateFragment
    /// The fragment's length cannot belong to a datagram cut by `Fragmenter`: every fragment but
    /// the last has the same, nonzero length, and the last is no longer than the others.
    case inconsistentSize
    /// The datagram would exceed `Fragmenter.maxDatagramSize`.
    case tooLarge
    /// The oldest partial datagram was dropped to stay within `ReassemblyLimits`.
    case evictedForSpace
    /// A partial datagram outlived `ReassemblyLimits.maxAgeNanoseconds`.
    case expired

    public var description: String {
        switch self {
        case .inconsistentCount: return "fragment count changed within a datagram"
        case .indexOutOfRange: return "fragment index not below fragment count"
        case .duplicateFragment: return "fragment arrived twice"
        case .inconsistentSize: return "fragment length inconsistent with the datagram's other fragments"
        case .tooLarge: return "datagram larger than \(Fragmenter.maxDatagramSize) bytes"
        case .evictedForSpace: return "oldest partial datagram dropped to stay within the reassembly bounds"
        case .expired: return "partial datagram expired before its last fragment arrived"
        }
    }
}

public enum ReassemblyResult: Equatable, Sendable {
    case complete([UInt8])
    case pending
    case dropped(ReassemblyDrop)
}

/// What a `Reassembler` did so far. Fragment-level drops (`inconsistentCount`, `indexOutOfRange`,
/// `duplicateFragment`, `inconsistentSize`, `tooLarge`) count fragments; `evictedForSpace` and
/// `expired` count partial datagrams.
public struct ReassemblyCounters: Equatable, Sendable {
    public var completed = 0
    public var inconsistentCount = 0
    public var indexOutOfRange = 0
    public var duplicateFragment = 0
    public var inconsistentSize = 0
    public var tooLarge = 0
    public var evictedForSpace = 0
    public var expired = 0

    public init() {}

    public subscript(drop: ReassemblyDrop) -> Int {
        get {
            switch drop {
            case .inconsistentCount: return inconsistentCount
            case .indexOutOfRange: return indexOutOfRange
            case .duplicateFragment: return duplicateFragment
            case .inconsistentSize: return inconsistentSize
            case .tooLarge: return tooLarge
            case .evictedForSpace: return evictedForSpace
            case .expired: return expired
            }
        }
        set {
            switch drop {
            case .inconsistentCount: inconsistentCount = newValue
            case .indexOutOfRange: indexOutOfRange = newValue
            case .duplicateFragment: duplicateFragment = newValue
            case .inconsistentSize: inconsistentSize = newValue
            case .tooLarge: tooLarge = newValue
            case .evictedForSpace: evictedForSpace = newValue
            case .expired: expired = newValue
            }
        }
    }

    /// All drops, whatever the reason.
    public var dropped: Int {
        ReassemblyDrop.allCases.reduce(0) { $0 + self[$1] }
    }
}

/// Reassembles the datagram fragments of one tunnel (all its flows), within `ReassemblyLimits`.
///
/// Fragments of one datagram are keyed by (flow, message). They normally arrive in order over
/// the reliable stream, but correctness does not depend on it: any order completes, and a
/// datagram with a missing fragment stays partial until it expires or is evicted.
///
/// Memory is bounded by `partialBytes`, which counts the bytes actually held: the received
/// fragments plus, when fragments arrive out of order, the zero-filled gap before them (a
/// partial datagram is kept in one buffer, so completing it costs no copy).
public struct Reassembler: Sendable {
    private struct Key: Hashable, Sendable {
        var flow: UInt32
        var message: UInt16
    }

    private struct Partial: Sendable {
        let count: Int
        /// Creation order, to tell a live `order` entry from a stale one.
        let serial: UInt64
        let firstSeen: UInt64
        /// Length of every fragment but the last; 0 until one of them arrives.
        var fragmentSize = 0
        /// Fragments 0 ..< count - 1 at `index * fragmentSize`; gaps zero-filled.
        var buffer: [UInt8] = []
        /// The last fragment, appended to `buffer` when the datagram completes.
        var last: [UInt8]?
        var received: [UInt64]
        var receivedCount = 0

        init(count: Int, serial: UInt64, firstSeen: UInt64) {
            self.count = count
            self.serial = serial
            self.firstSeen = firstSeen
            self.received = [UInt64](repeating: 0, count: (count + 63) / 64)
        }

        var heldBytes: Int { buffer.count + (last?.count ?? 0) }

        func has(_ index: Int) -> Bool {
            received[index >> 6] & (1 << UInt64(index & 63)) != 0
        }

        /// How much `heldBytes` grows if fragment `index` of `length` bytes is stored.
        func growth(index: Int, length: Int) -> Int {
            if index == count - 1 { return length }
            let size = fragmentSize == 0 ? length : fragmentSize
            return max(0, (index + 1) * size - buffer.count)
        }

        /// Stores a fragment that passed `Reassembler.sizeDrop`.
        mutating func store(index: Int, payload: [UInt8]) {
            received[index >> 6] |= 1 << UInt64(index & 63)
            receivedCount += 1
            if index == count - 1 {
                last = payload
                return
            }
            if fragmentSize == 0 { fragmentSize = payload.count }
            let start = index * fragmentSize
            if buffer.count < start {
                buffer.append(contentsOf: repeatElement(0, count: start - buffer.count))
            }
            if buffer.count == start {
                buffer.append(contentsOf: payload)
            } else {
                buffer.replaceSubrange(start..<(start + fragmentSize), with: payload)
            }
        }

        /// The datagram, once every fragment is stored.
        mutating func assemble() -> [UInt8] {
            var datagram = buffer
            buffer = []
            datagram.append(contentsOf: last!)
            return datagram
        }
    }

    public let limits: ReassemblyLimits
    public private(set) var counters = ReassemblyCounters()
    public private(set) var partialBytes = 0
    public var partialCount: Int { partials.count }
    /// Entries in the creation-order queue, live or stale; tests check it stays bounded.
    var orderBacklog: Int { order.count - orderHead }

    private var partials: [Key: Partial] = [:]
    /// Keys in creation order, oldest first from `orderHead`. Entries of partials that completed
    /// or were removed stay until skipped or compacted (their serial no longer matches).
    private var order: [(key: Key, serial: UInt64)] = []
    private var orderHead = 0
    private var nextSerial: UInt64 = 0

    public init(limits: ReassemblyLimits = .default) {
        self.limits = limits
    }

    /// Takes one `.datagram` cell received at `now` (monotonic nanoseconds). Drops partial
    /// datagrams that expired by `now` first.
    public mutating func receive(_ cell: Cell, now: UInt64) -> ReassemblyResult {
        precondition(cell.type == .datagram, "only datagram cells are reassembled, got \(cell.type)")
        expire(now: now)

        let count = Int(cell.fragmentCount)
        let index = Int(cell.fragmentIndex)
        let length = cell.payload.count
        guard index < count else { return drop(.indexOutOfRange) }
        let key = Key(flow: cell.flow, message: cell.message)

        if count == 1 {
            // A whole datagram in one cell: no state, unless it contradicts a partial one.
            if !partials.isEmpty, partials[key] != nil { return drop(.inconsistentCount) }
            guard length <= Fragmenter.maxDatagramSize else { return drop(.tooLarge) }
            counters.completed += 1
            return .complete(cell.payload)
        }

        if let admission = admit(key: key, index: index, length: length, count: count) {
            switch admission {
            case let .drop(reason):
                return drop(reason)
            case .completes:
                var partial = partials.removeValue(forKey: key)!
                partialBytes -= partial.heldBytes
                partial.store(index: index, payload: cell.payload)
                counters.completed += 1
                return .complete(partial.assemble())
            case let .grows(growth):
                while partialBytes + growth > limits.maxPartialBytes {
                    let evicted = evictOldest()
                    if evicted == nil || evicted == key { return .dropped(.evictedForSpace) }
                }
                // In place: the buffer is uniquely referenced, so storing copies nothing.
                partials[key]!.store(index: index, payload: cell.payload)
                partialBytes += growth
                return .pending
            }
        }

        if let reason = Self.sizeDrop(index: index, length: length, count: count, fragmentSize: 0, lastLength: nil) {
            return drop(reason)
        }
        var partial = Partial(count: count, serial: nextSerial, firstSeen: now)
        let growth = partial.growth(index: index, length: length)
        while partials.count >= limits.maxPartialDatagrams {
            evictOldest()
        }
        while partialBytes + growth > limits.maxPartialBytes {
            if evictOldest() == nil {
                // Even an empty store cannot hold this fragment under these limits.
                return drop(.evictedForSpace)
            }
        }
        partial.store(index: index, payload: cell.payload)
        partials[key] = partial
        partialBytes += growth
        order.append((key, nextSerial))
        nextSerial += 1
        compactOrder()
        return .pending
    }

    /// Drops partial datagrams whose first fragment arrived more than `maxAgeNanoseconds`
    /// before `now`; returns how many.
    @discardableResult
    public mutating func expire(now: UInt64) -> Int {
        var dropped = 0
        while let (key, partial) = oldest() {
            guard now > partial.firstSeen, now - partial.firstSeen > limits.maxAgeNanoseconds else { break }
            partials.removeValue(forKey: key)
            partialBytes -= partial.heldBytes
            orderHead += 1
            dropped += 1
        }
        counters.expired += dropped
        return dropped
    }

    /// Forgets the partial datagrams of a flow that closed. Not counted as drops: nobody is
    /// waiting for them any more.
    public mutating func removeFlow(_ flow: UInt32) {
        guard !partials.isEmpty else { return }
        let keys = partials.keys.filter { $0.flow == flow }
        for key in keys {
            partialBytes -= partials.removeValue(forKey: key)!.heldBytes
        }
        compactOrder()
    }

    // MARK: Private

    private enum Admission {
        case drop(ReassemblyDrop)
        case completes
        case grows(Int)
    }

    /// What a fragment does to the existing partial datagram of `key`, or nil if there is none.
    /// Reads through a copy of the partial that ends here, so storing afterwards stays in place.
    private func admit(key: Key, index: Int, length: Int, count: Int) -> Admission? {
        guard let partial = partials[key] else { return nil }
        guard partial.count == count else { return .drop(.inconsistentCount) }
        guard !partial.has(index) else { return .drop(.duplicateFragment) }
        if let reason = Self.sizeDrop(index: index, length: length, count: count,
                                      fragmentSize: partial.fragmentSize, lastLength: partial.last?.count) {
            return .drop(reason)
        }
        if partial.receivedCount + 1 == count { return .completes }
        return .grows(partial.growth(index: index, length: length))
    }

    private mutating func drop(_ reason: ReassemblyDrop) -> ReassemblyResult {
        counters[reason] += 1
        return .dropped(reason)
    }

    /// Why a fragment cannot belong to a datagram cut by `Fragmenter`, or nil if it can.
    /// A multi-fragment datagram is longer than one cell, so each of its fragments holds at
    /// least one byte, all but the last hold the same number, and the total is at most
    /// `maxDatagramSize`: checking this up front keeps a peer from announcing absurd counts.
    private static func sizeDrop(index: Int, length: Int, count: Int, fragmentSize: Int, lastLength: Int?) -> ReassemblyDrop? {
        let maximum = Fragmenter.maxDatagramSize
        if count > maximum { return .tooLarge }
        if index == count - 1 {
            if length == 0 { return .inconsistentSize }
            if fragmentSize > 0 {
                if length > fragmentSize { return .inconsistentSize }
                if (count - 1) * fragmentSize + length > maximum { return .tooLarge }
            } else if count * length > maximum {
                // Every other fragment is at least as long as the last.
                return .tooLarge
            }
        } else if fragmentSize > 0 {
            if length != fragmentSize { return .inconsistentSize }
        } else {
            if length == 0 { return .inconsistentSize }
            if let lastLength, lastLength > length { return .inconsistentSize }
            if (count - 1) * length + (lastLength ?? 1) > maximum { return .tooLarge }
        }
        return nil
    }

    /// The oldest live partial datagram, skipping stale `order` entries.
    private mutating func oldest() -> (Key, Partial)? {
        while orderHead < order.count {
            let entry = order[orderHead]
            if let partial = partials[entry.key], partial.serial == entry.serial {
                return (entry.key, partial)
            }
            orderHead += 1
        }
        return nil
    }

    /// Drops the oldest partial datagram (counted); returns its key, or nil if there is none.
    @discardableResult
    private mutating func evictOldest() -> Key? {
        guard let (key, partial) = oldest() else { return nil }
        partials.removeValue(forKey: key)
        partialBytes -= partial.heldBytes
        orderHead += 1
        counters.evictedForSpace += 1
        return key
    }

    /// Keeps `order` proportional to the live partials: completed datagrams leave entries
    /// behind, and a long-lived oldest partial would otherwise let them pile up.
    private mutating func compactOrder() {
        let pending = order.count - orderHead
        if pending > 2 * partials.count + 64 {
            order = order[orderHead...].filter { partials[$0.key]?.serial == $0.serial }
            orderHead = 0
        } else if orderHead >= 64 && orderHead * 2 >= order.count {
            order.removeFirst(orderHead)
            orderHead = 0
        }
    }
}
