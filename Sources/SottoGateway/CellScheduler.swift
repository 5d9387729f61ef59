import NIOCore
import SottoTunnel

/// Owns the send side of one tunnel: decides when each cell goes on the wire.
///
/// Everything a tunnel sends after the handshake (real cells, control cells, and later cover
/// cells) passes through its scheduler, so a shaping policy can pace the whole send side
/// without the tunnel or the flow code knowing. `ImmediateScheduler` is the `off` policy.
protocol CellScheduler: AnyObject {
    /// Hands a cell to the scheduler. Returns false when the cell was refused because the
    /// bounded queue is full (the caller counts the drop; only datagrams are ever refused).
    func submit(_ cell: Cell, droppable: Bool) -> Bool
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
