/// What a queued cell is, which decides its queue, its bound and what happens beyond it
/// (docs/shaping.md, "Queues").
public enum ShapingCellKind: Sendable, Hashable {
    /// The first (or only) cell of a datagram. Beyond the datagram bound the oldest whole
    /// datagram is dropped to make room.
    case datagram
    /// A later fragment of the datagram whose first cell was the last `.datagram` enqueued.
    case datagramContinuation
    /// Stream data, never dropped: beyond the stream bound the caller is told to stop reading.
    /// Also any cell that must stay in order behind data (a `close` after a flow's data).
    case stream
    /// Sent before queued data (window updates, open, opened, ping, pong): only cells whose
    /// order relative to data does not matter. Refused beyond a hard bound.
    case control
}

/// What `enqueue` did with a cell.
public enum EnqueueResult: Sendable, Hashable {
    /// Queued.
    case accepted
    /// Queued, after dropping the oldest queued datagram (this many cells) to make room.
    case droppedOldest(cells: Int)
    /// Queued; the stream queue is at its bound: stop reading stream data from the
    /// application until `canAcceptStream` is true again.
    case backPressure
    /// Not queued: a control cell beyond the hard bound, or a datagram larger than the whole
    /// datagram queue (its cells already queued are dropped too, and its later fragments refused).
    case refused
}

/// What the caller does next.
public enum ShapingAction<Item> {
    /// Send this real cell now.
    case send(Item)
    /// Build a cover cell and send it now, through the same path as real cells.
    case sendCover
    /// Nothing to send before this time (nanoseconds, the caller's clock): poll again then.
    case wait(until: UInt64)
    /// Nothing to send until something is enqueued (`off` and `padded` only).
    case idle
}

extension ShapingAction: Equatable where Item: Equatable {}
extension ShapingAction: Sendable where Item: Sendable {}

/// One tunnel's send-side counters. Bytes are cells × the cell size.
public struct ShapingCounters: Sendable, Equatable {
    public var realCells = 0
    public var coverCells = 0
    public var realBytes = 0
    public var coverBytes = 0
    /// Datagrams dropped (oldest-first, or refused as larger than the queue) and their cells.
    public var datagramsDropped = 0
    public var datagramCellsDropped = 0
    public var controlCellsRefused = 0
    /// Times the stream queue reached its bound and the caller was told to stop reading.
    public var backPressureEvents = 0
    /// Slots of `constant`/`poisson` skipped because the caller polled more than one mean
    /// interval late (transport not writable, event loop stalled). Skipped, not caught up:
    /// a catch-up burst would show on the wire.
    public var missedSlots = 0
    /// The most cells ever queued at once.
    public var peakQueuedCells = 0
    /// Enqueue → send of every real cell.
    public var addedLatency = LatencyHistogram()

    public init() {}

    /// Adds another tunnel's counters (per-profile totals); the peak is the larger one.
    public mutating func add(_ other: ShapingCounters) {
        realCells += other.realCells
        coverCells += other.coverCells
        realBytes += other.realBytes
        coverBytes += other.coverBytes
        datagramsDropped += other.datagramsDropped
        datagramCellsDropped += other.datagramCellsDropped
        controlCellsRefused += other.controlCellsRefused
        backPressureEvents += other.backPressureEvents
        missedSlots += other.missedSlots
        peakQueuedCells = max(peakQueuedCells, other.peakQueuedCells)
        addedLatency.merge(other.addedLatency)
    }
}

/// The send side of one tunnel, without I/O: cells in (`enqueue`), decisions out (`poll`).
///
/// Time is the caller's, in nanoseconds from any fixed origin (the gateway passes its event
/// loop's clock, tests a counter); randomness comes from the injected generator. The caller:
/// after every `enqueue` and whenever a timer fires, calls `poll` until it answers `.wait` or
/// `.idle`, sending what it is told; then arms one timer for the `.wait` deadline (docs/shaping.md,
/// "The gateway adapter").
///
/// Order: control cells first (FIFO among themselves), then data cells in exactly the order they
/// were enqueued, datagrams and stream cells interleaved as they came. `padded` keeps that order
/// too: a cell leaves at its own random deadline or right after the cell before it, whichever
/// is later, which still keeps each delay within [minimum, maximum].
///
/// Memory: the struct is a few hundred bytes (`MemoryLayout` in the tests); queues live on
/// the heap only while cells are queued, grow by doubling and are reused, so steady traffic
/// allocates nothing per cell; an idle core holds no queue storage and no histogram.
public struct ShapingCore<Item, Generator: RandomNumberGenerator> {
    struct Entry {
        var item: Item
        var enqueuedAt: UInt64
        /// When the cell may leave at the earliest (`padded`); the enqueue time otherwise.
        var due: UInt64
        /// Position among data cells, to interleave the datagram and stream queues in order.
        var sequence: UInt64
        var startsDatagram: Bool
    }

    public let parameters: ShapingParameters
    public let queueLimits: ShapingQueueLimits
    public let cellSize: Int
    public private(set) var counters = ShapingCounters()

    private var generator: Generator
    private var control = Ring<Entry>()
    private var datagrams = Ring<Entry>()
    private var streams = Ring<Entry>()
    private var nextSequence: UInt64 = 0
    /// `constant`/`poisson`: when the next cell (real or cover) leaves.
    private var nextSlot: UInt64 = 0
    /// Cells of the datagram being enqueued that are still queued (the queue's last ones).
    private var openDatagramCells = 0
    private var discardingDatagram = false
    private var streamPaused = false

    /// - Parameters:
    ///   - cellSize: bytes of one cell on the wire, for the byte counters.
    ///   - now: the start of the schedule; the first slot is one gap after it.
    public init(parameters: ShapingParameters, queueLimits: ShapingQueueLimits = .standard,
                cellSize: Int, now: UInt64, generator: Generator) {
        self.parameters = parameters
        self.queueLimits = queueLimits
        self.cellSize = cellSize
        self.generator = generator
        if parameters.policy.sendsCover { nextSlot = now &+ nextGap() }
    }

    // MARK: State

    public var queuedCells: Int { control.count + datagrams.count + streams.count }
    public var queuedDataCells: Int { datagrams.count + streams.count }
    public var queuedControlCells: Int { control.count }
    /// False from a `.backPressure` answer until the stream queue has drained to half its bound.
    public var canAcceptStream: Bool { !streamPaused }

    // MARK: Enqueue

    public mutating func enqueue(_ item: Item, kind: ShapingCellKind, now: UInt64) -> EnqueueResult {
        switch kind {
        case .control:
            guard control.count < queueLimits.controlCells else {
                counters.controlCellsRefused += 1
                return .refused
            }
            control.append(entry(item, now: now, startsDatagram: false))
            notePeak()
            return .accepted

        case .stream:
            streams.append(entry(item, now: now, startsDatagram: false))
            notePeak()
            if streams.count >= queueLimits.streamCells && !streamPaused {
                streamPaused = true
                counters.backPressureEvents += 1
            }
            return streamPaused ? .backPressure : .accepted

        case .datagram:
            // The previous datagram is complete: from now on it is droppable like any other.
            openDatagramCells = 0
            discardingDatagram = false
            let dropped = datagrams.count >= queueLimits.datagramCells ? dropOldestDatagram() : 0
            datagrams.append(entry(item, now: now, startsDatagram: true))
            openDatagramCells = 1
            notePeak()
            return dropped > 0 ? .droppedOldest(cells: dropped) : .accepted

        case .datagramContinuation:
            if discardingDatagram {
                counters.datagramCellsDropped += 1
                return .refused
            }
            var dropped = 0
            if datagrams.count >= queueLimits.datagramCells {
                if datagrams.count == openDatagramCells {
                    // This datagram alone fills the queue: it can never fit, so drop it whole
                    // rather than let it push out its own first fragments.
                    for _ in 0..<openDatagramCells { _ = datagrams.popFirst() }
                    counters.datagramsDropped += 1
                    counters.datagramCellsDropped += openDatagramCells + 1
                    openDatagramCells = 0
                    discardingDatagram = true
                    return .refused
                }
                dropped = dropOldestDatagram()
            }
            datagrams.append(entry(item, now: now, startsDatagram: false))
            openDatagramCells += 1
            notePeak()
            return dropped > 0 ? .droppedOldest(cells: dropped) : .accepted
        }
    }

    /// Discards every queued cell (the tunnel is closing). Returns how many there were.
    @discardableResult
    public mutating func removeAll() -> Int {
        let count = queuedCells
        control.removeAll()
        datagrams.removeAll()
        streams.removeAll()
        openDatagramCells = 0
        discardingDatagram = false
        streamPaused = false
        return count
    }

    // MARK: Poll

    public mutating func poll(now: UInt64) -> ShapingAction<Item> {
        switch parameters.policy {
        case .off:
            if let sent = takeReal(now: now, honourDue: false) { return .send(sent) }
            return .idle

        case .padded:
            if let sent = takeReal(now: now, honourDue: true) { return .send(sent) }
            var earliest: UInt64?
            if let head = control.first { earliest = head.due }
            if let head = dataHead() { earliest = min(earliest ?? head.due, head.due) }
            return earliest.map { .wait(until: $0) } ?? .idle

        case .constant, .poisson:
            guard now >= nextSlot else { return .wait(until: nextSlot) }
            advanceSlot(now: now)
            if let sent = takeReal(now: now, honourDue: false) { return .send(sent) }
            counters.coverCells += 1
            counters.coverBytes += cellSize
            return .sendCover
        }
    }

    // MARK: Internals

    private mutating func entry(_ item: Item, now: UInt64, startsDatagram: Bool) -> Entry {
        var due = now
        if parameters.policy == .padded {
            let minimum = UInt64(parameters.minimumDelayMicroseconds) * 1000
            let maximum = UInt64(parameters.maximumDelayMicroseconds) * 1000
            due = now &+ UInt64.random(in: minimum...maximum, using: &generator)
        }
        defer { nextSequence &+= 1 }
        return Entry(item: item, enqueuedAt: now, due: due, sequence: nextSequence, startsDatagram: startsDatagram)
    }

    private mutating func notePeak() {
        counters.peakQueuedCells = max(counters.peakQueuedCells, queuedCells)
    }

    /// Whether the oldest data cell is in the datagram queue; nil when both are empty.
    private func dataHeadIsDatagram() -> Bool? {
        switch (datagrams.first?.sequence, streams.first?.sequence) {
        case (nil, nil): return nil
        case (.some, nil): return true
        case (nil, .some): return false
        case let (datagram?, stream?): return datagram < stream
        }
    }

    private func dataHead() -> Entry? {
        guard let isDatagram = dataHeadIsDatagram() else { return nil }
        return isDatagram ? datagrams.first : streams.first
    }

    /// The next real cell to send (control first), counted; nil when none may leave yet.
    private mutating func takeReal(now: UInt64, honourDue: Bool) -> Item? {
        var taken: Entry?
        if let head = control.first, !honourDue || head.due <= now {
            taken = control.popFirst()
        } else if let isDatagram = dataHeadIsDatagram() {
            let head = isDatagram ? datagrams.first! : streams.first!
            if !honourDue || head.due <= now {
                if isDatagram {
                    taken = datagrams.popFirst()
                    openDatagramCells = min(openDatagramCells, datagrams.count)
                } else {
                    taken = streams.popFirst()
                    if streamPaused && streams.count <= queueLimits.streamResumeCells { streamPaused = false }
                }
            }
        }
        guard let sent = taken else { return nil }
        counters.realCells += 1
        counters.realBytes += cellSize
        counters.addedLatency.record(nanoseconds: now >= sent.enqueuedAt ? now - sent.enqueuedAt : 0)
        return sent.item
    }

    /// Drops the oldest queued datagram (its first cell and the continuations after it), never
    /// the one still being enqueued. Returns the cells dropped.
    private mutating func dropOldestDatagram() -> Int {
        guard datagrams.count > openDatagramCells else { return 0 }
        _ = datagrams.popFirst()
        var dropped = 1
        while let head = datagrams.first, !head.startsDatagram, datagrams.count > openDatagramCells {
            _ = datagrams.popFirst()
            dropped += 1
        }
        counters.datagramsDropped += 1
        counters.datagramCellsDropped += dropped
        return dropped
    }

    private mutating func nextGap() -> UInt64 {
        let mean = parameters.meanIntervalNanoseconds
        switch parameters.policy {
        case .constant:
            return Draw.around(mean, spread: mean * UInt64(parameters.jitterPermille) / 1000, using: &generator)
        case .poisson:
            return Draw.exponential(mean: mean, using: &generator)
        case .off, .padded:
            return 0
        }
    }

    /// Moves to the slot after the one being served. Gaps are added to the scheduled time, not
    /// to `now`, so a timer that fires a little late does not lower the rate; more than one
    /// mean interval behind, the missed slots are skipped instead of sent in a burst.
    private mutating func advanceSlot(now: UInt64) {
        let mean = max(parameters.meanIntervalNanoseconds, 1)
        let next = nextSlot &+ nextGap()
        if now > next, now - next > mean {
            counters.missedSlots += Int((now - next) / mean)
            nextSlot = now &+ nextGap()
        } else {
            nextSlot = next
        }
    }
}

extension ShapingCore where Generator == SystemRandomNumberGenerator {
    /// A core drawing from the system's cryptographically secure generator: what a gateway uses,
    /// since a predictable schedule would let an observer tell slots apart.
    public init(parameters: ShapingParameters, queueLimits: ShapingQueueLimits = .standard,
                cellSize: Int, now: UInt64) {
        self.init(parameters: parameters, queueLimits: queueLimits, cellSize: cellSize, now: now,
                  generator: SystemRandomNumberGenerator())
    }
}

extension ShapingCore.Entry: Sendable where Item: Sendable {}
extension ShapingCore: Sendable where Item: Sendable, Generator: Sendable {}
