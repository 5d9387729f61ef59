import NIOCore
import SottoShaping
import SottoTunnel

/// What became of a cell handed to a scheduler.
enum SubmitOutcome: Equatable {
    /// Queued or sent.
    case accepted
    /// Queued, after the oldest queued datagram was dropped to make room (counted once).
    case droppedOlder
    /// Not queued (the datagram is lost; the caller stops submitting its other fragments).
    case refused
}

/// Owns the send side of one tunnel: decides when each cell goes on the wire.
///
/// Everything a tunnel sends after the handshake (real cells, control cells, and later cover
/// cells) passes through its scheduler, so a shaping policy can pace the whole send side
/// without the tunnel or the flow code knowing. `ImmediateScheduler` is the `off` policy.
protocol CellScheduler: AnyObject {
    /// Hands a cell to the scheduler. Returns false when the cell was refused because the
    /// bounded queue is full (the caller counts the drop; only datagrams are ever refused).
    func submit(_ cell: Cell, droppable: Bool) -> Bool
    /// Hands a cell to the scheduler with its kind (docs/shaping.md, "Queues").
    func submit(_ cell: Cell, kind: ShapingCellKind) -> SubmitOutcome
    /// False while stream data must wait (the stream queue is at its bound): the flows stop
    /// reading their sockets until `onStreamResume` runs.
    var canAcceptStream: Bool { get }
    /// Called once the stream queue drained after back-pressure.
    var onStreamResume: (() -> Void)? { get set }
    /// The shaping policy this scheduler applies, and its counters (nil for `off`).
    var parameters: ShapingParameters { get }
    var shapingCounters: ShapingCounters? { get }
    /// The transport became writable again (or its writability changed).
    func writabilityChanged(isWritable: Bool)
    /// Cells waiting in the scheduler's queue.
    var queuedCells: Int { get }
    /// Cells that were refused because the queue was full.
    var droppedCells: Int { get }
    func stop()
}

/// The `off` policy: a cell leaves as soon as the transport can take it (still fixed-size).
/// While the transport's send buffer is above its high-water mark, cells wait in a bounded
/// queue; droppable (datagram) cells beyond the bound are refused and counted.
final class ImmediateScheduler: CellScheduler {
    private let emit: (Cell) -> Void
    private let flush: () -> Void
    private var queue = CircularBuffer<Cell>()
    private let canWrite: () -> Bool
    private let limit: Int
    private(set) var droppedCells = 0

    init(limit: Int, canWrite: @escaping () -> Bool, emit: @escaping (Cell) -> Void, flush: @escaping () -> Void) {
        self.limit = limit
        self.canWrite = canWrite
        self.emit = emit
        self.flush = flush
    }

    var queuedCells: Int { queue.count }
    var canAcceptStream: Bool { true }
    var onStreamResume: (() -> Void)?
    var parameters: ShapingParameters { .off }
    var shapingCounters: ShapingCounters? { nil }

    func submit(_ cell: Cell, kind: ShapingCellKind) -> SubmitOutcome {
        let droppable = kind == .datagram || kind == .datagramContinuation
        return submit(cell, droppable: droppable) ? .accepted : .refused
    }

    func submit(_ cell: Cell, droppable: Bool) -> Bool {
        if queue.isEmpty && canWrite() {
            emit(cell)
            return true
        }
        if droppable && queue.count >= limit {
            droppedCells += 1
            return false
        }
        queue.append(cell)
        return true
    }

    func writabilityChanged(isWritable: Bool) {
        guard isWritable, !queue.isEmpty else { return }
        // Drain until the transport pushes back again; the rest waits for the next change.
        var sent = 0
        while canWrite(), let cell = queue.popFirst() {
            emit(cell)
            sent += 1
            if sent % 64 == 0 { flush() }
        }
        flush()
    }

    func stop() {
        queue.removeAll()
    }
}

/// `padded`, `constant` and `poisson` (docs/shaping.md, "The gateway adapter"): drives a pure
/// `ShapingCore` on the tunnel's event loop with one deadline in the loop's `SlotTimer`,
/// re-armed at each `.wait`.
/// Real and cover cells leave through the same `emit` (encode, seal, write, flush: one cell per
/// write and flush), so neither the bytes nor the TCP push pattern tell them apart.
final class ShapedScheduler: CellScheduler {
    private var core: ShapingCore<Cell, PooledRandom>
    private let eventLoop: EventLoop
    private let canWrite: () -> Bool
    /// Seals, writes and flushes exactly one cell.
    private let emit: (Cell) -> Void
    private let slotTimer: SlotTimer
    private var slotTimerID: UInt64 = 0
    private var timerDeadline: UInt64?
    private var stopped = false
    private var polling = false
    private var streamPaused = false
    var onStreamResume: (() -> Void)?

    /// The receiver discards it (docs/protocol.md, cell type 0); it carries no payload.
    static let coverCell = Cell(type: .cover, flow: 0, payload: [])

    init(parameters: ShapingParameters, queueLimits: ShapingQueueLimits, cellSize: Int, eventLoop: EventLoop,
         canWrite: @escaping () -> Bool, emit: @escaping (Cell) -> Void) {
        self.eventLoop = eventLoop
        self.canWrite = canWrite
        self.emit = emit
        let slotTimer = SlotTimer.on(eventLoop)
        self.slotTimer = slotTimer
        self.core = ShapingCore(parameters: parameters, queueLimits: queueLimits, cellSize: cellSize,
                                now: eventLoop.now.uptimeNanoseconds, generator: PooledRandom(pool: slotTimer.random))
        self.slotTimerID = slotTimer.register { [weak self] in
            guard let self = self else { return }
            self.timerDeadline = nil
            self.poll()
        }
    }

    deinit { slotTimer.unregister(slotTimerID) }

    var parameters: ShapingParameters { core.parameters }
    var queuedCells: Int { core.queuedCells }
    var droppedCells: Int { core.counters.datagramCellsDropped }
    var canAcceptStream: Bool { core.canAcceptStream }
    var shapingCounters: ShapingCounters? { core.counters }

    /// Starts the schedule: `constant` and `poisson` send cover from the first slot on.
    func start() { poll() }

    func submit(_ cell: Cell, droppable: Bool) -> Bool {
        submit(cell, kind: droppable ? .datagram : .stream) != .refused
    }

    func submit(_ cell: Cell, kind: ShapingCellKind) -> SubmitOutcome {
        guard !stopped else { return .refused }
        let outcome: SubmitOutcome
        switch core.enqueue(cell, kind: kind, now: eventLoop.now.uptimeNanoseconds) {
        case .accepted: outcome = .accepted
        case .backPressure:
            streamPaused = true
            outcome = .accepted
        case .droppedOldest: outcome = .droppedOlder
        case .refused: return .refused
        }
        poll()
        return outcome
    }

    func writabilityChanged(isWritable: Bool) {
        if isWritable { poll() }
    }

    /// Sends what the core says is due while the transport takes it, then arms the timer for
    /// the next deadline. Not re-entrant: a cell emitted here may make the tunnel submit more.
    private func poll() {
        guard !stopped, !polling else { return }
        polling = true
        defer { polling = false }
        var deadline: UInt64?
        // Bounded: a core answers `.wait` once nothing is due; the bound only guards a stall.
        for _ in 0..<100_000 {
            guard canWrite() else { break }
            switch core.poll(now: eventLoop.now.uptimeNanoseconds) {
            case .send(let cell):
                emit(cell)
                continue
            case .sendCover:
                emit(Self.coverCell)
                continue
            case .wait(let until):
                deadline = until
            case .idle:
                deadline = nil
            }
            break
        }
        arm(deadline)
        if streamPaused, core.canAcceptStream {
            streamPaused = false
            onStreamResume?()
        }
    }

    /// Keeps exactly one deadline in the slot timer. While the transport is not writable no
    /// timer runs: writability coming back polls again (the core skips the slots it missed).
    private func arm(_ deadline: UInt64?) {
        guard let deadline = deadline, canWrite() else {
            slotTimer.cancel(slotTimerID)
            timerDeadline = nil
            return
        }
        if timerDeadline == deadline { return }
        timerDeadline = deadline
        slotTimer.schedule(slotTimerID, at: deadline)
    }

    func stop() {
        stopped = true
        _ = core.removeAll()
        slotTimer.unregister(slotTimerID)
        timerDeadline = nil
    }
}

// MARK: Configuration → shaping values

import SottoConfig

extension Profile {
    /// What this profile proposes to exits and shapes its own send side with.
    func shapingParameters() throws -> ShapingParameters {
        let o = shapingOptions
        switch shaping {
        case .off: return .off
        case .padded:
            return try .padded(minimumDelay: .microseconds(Int64((o.minDelayMs * 1000).rounded())),
                               maximumDelay: .microseconds(Int64((o.maxDelayMs * 1000).rounded())))
        case .constant: return try .constant(rate: o.rate, jitterFraction: o.jitter)
        case .poisson: return try .poisson(rate: o.rate)
        }
    }
}

extension ShapingLimits {
    /// ShapingLimits' documented defaults (all policies, 1 to 50 cells/s, 1 s delay); valid by construction.
    static let standardForGateway = try! ShapingLimits()
}

extension ShapingLimitSettings {
    /// The exit's limits; `fallback` (the service profile's shaping) is what a client gets
    /// whose policy is not allowed, when the profile's policy itself is allowed.
    func shapingLimits(fallback: ShapingParameters) throws -> ShapingLimits {
        let allowed = Set(policies.compactMap { SottoShaping.ShapingPolicy(rawValue: $0.rawValue) })
        return try ShapingLimits(
            allowedPolicies: allowed, minimumRate: minRate, maximumRate: maxRate, maximumJitterFraction: maxJitter,
            maximumDelay: .microseconds(Int64((maxDelayMs * 1000).rounded())),
            fallback: allowed.contains(fallback.policy) ? fallback : nil)
    }
}
