import NIOConcurrencyHelpers
import NIOCore

/// One NIO timer per event loop for the slots of every shaped tunnel on it and the tunnels'
/// 500 ms housekeeping ticks.
///
/// Each `ShapedScheduler` needs a wake-up at its next slot: 10 per second per tunnel by
/// default, 10,000 per second for 1,000 tunnels. Scheduling each through `scheduleTask` puts a
/// reference-counted task into NIO's timer heap per slot, and every heap operation copies such
/// tasks (measured: about half of an exit's CPU with 1,000 idle shaped tunnels). Here the
/// deadlines live in a heap of plain integers, and one NIO task is armed at the earliest of
/// them, rounded up to `granularity`: all slots due by then are served in one wake-up. A slot
/// is therefore served at most `granularity` (1 ms) late, independently of the data, and the
/// core keeps its schedule (a slot's time is the previous slot's plus a gap, not "now").
///
/// Loop-confined: every method runs on `eventLoop`. Lazy deletion: a client that moves or
/// cancels its deadline leaves the old entry, skipped when it comes up; the heap is rebuilt
/// when stale entries outnumber the live ones, so its size stays bounded by the client count.
final class SlotTimer {
    static let granularityNanoseconds: UInt64 = 1_000_000

    private struct Client {
        var deadline: UInt64?
        let fire: () -> Void
    }

    private let eventLoop: EventLoop
    private var heap = DeadlineHeap()
    private var clients: [UInt64: Client] = [:]
    private var nextID: UInt64 = 1
    private var armed: Scheduled<Void>?
    private var armedAt: UInt64 = .max
    private var firing = false
    /// The shaping schedules' randomness for this loop's tunnels.
    let random = RandomPool()

    private init(eventLoop: EventLoop) {
        self.eventLoop = eventLoop
    }

    private static let timers = NIOLockedValueBox<[ObjectIdentifier: SlotTimer]>([:])

    /// The timer of `eventLoop`, created on first use and dropped when its last client leaves.
    static func on(_ eventLoop: EventLoop) -> SlotTimer {
        timers.withLockedValue { timers in
            let key = ObjectIdentifier(eventLoop)
            if let timer = timers[key] { return timer }
            let timer = SlotTimer(eventLoop: eventLoop)
            timers[key] = timer
            return timer
        }
    }

    var clientCount: Int { clients.count }
    var heapCount: Int { heap.count }

    /// A new client; `fire` runs on the loop once a deadline set with `schedule` has passed.
    func register(fire: @escaping () -> Void) -> UInt64 {
        eventLoop.preconditionInEventLoop()
        let id = nextID
        nextID += 1
        clients[id] = Client(deadline: nil, fire: fire)
        return id
    }

    func unregister(_ id: UInt64) {
        guard clients.removeValue(forKey: id) != nil else { return }
        if clients.isEmpty {
            armed?.cancel()
            armed = nil
            armedAt = .max
            heap.removeAll()
            let key = ObjectIdentifier(eventLoop)
            Self.timers.withLockedValue { timers in
                if timers[key] === self { timers[key] = nil }
            }
        }
    }

    /// Replaces the client's deadline (uptime nanoseconds).
    func schedule(_ id: UInt64, at deadline: UInt64) {
        guard clients[id] != nil else { return }
        clients[id]!.deadline = deadline
        heap.push(deadline: deadline, id: id)
        compactIfNeeded()
        if !firing { arm() }
    }

    func cancel(_ id: UInt64) {
        guard clients[id] != nil else { return }
        clients[id]!.deadline = nil
    }

    private func arm() {
        guard let earliest = heap.minimum?.deadline else {
            armed?.cancel()
            armed = nil
            armedAt = .max
            return
        }
        let g = Self.granularityNanoseconds
        let at = (earliest / g + (earliest % g == 0 ? 0 : 1)) * g
        if armed != nil, armedAt <= at { return }
        armed?.cancel()
        armedAt = at
        armed = eventLoop.scheduleTask(deadline: .uptimeNanoseconds(at)) { [weak self] in self?.fire() }
    }

    private func fire() {
        armed = nil
        armedAt = .max
        let now = eventLoop.now.uptimeNanoseconds
        firing = true
        // Bounded by the heap's size at the start: a client that schedules again while it is
        // served gets a later deadline, served at a later wake-up.
        var budget = heap.count
        while budget > 0, let top = heap.minimum, top.deadline <= now {
            budget -= 1
            heap.popMinimum()
            guard let client = clients[top.id], client.deadline == top.deadline else { continue }  // stale
            clients[top.id]!.deadline = nil
            client.fire()
        }
        firing = false
        arm()
    }

    private func compactIfNeeded() {
        guard heap.count > 2 * clients.count + 64 else { return }
        heap.removeAll()
        for (id, client) in clients {
            if let deadline = client.deadline { heap.push(deadline: deadline, id: id) }
        }
    }
}

/// A binary min-heap of (deadline, id): plain integers, so moving entries costs no reference
/// counting.
struct DeadlineHeap {
    private(set) var entries: [(deadline: UInt64, id: UInt64)] = []

    var count: Int { entries.count }
    var minimum: (deadline: UInt64, id: UInt64)? { entries.first }

    mutating func removeAll() { entries.removeAll(keepingCapacity: false) }

    mutating func push(deadline: UInt64, id: UInt64) {
        entries.append((deadline, id))
        var child = entries.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard entries[child].deadline < entries[parent].deadline else { break }
            entries.swapAt(child, parent)
            child = parent
        }
    }

    mutating func popMinimum() {
        guard !entries.isEmpty else { return }
        let last = entries.removeLast()
        guard !entries.isEmpty else { return }
        entries[0] = last
        var parent = 0
        while true {
            let left = 2 * parent + 1
            guard left < entries.count else { break }
            let right = left + 1
            let smaller = right < entries.count && entries[right].deadline < entries[left].deadline ? right : left
            guard entries[smaller].deadline < entries[parent].deadline else { break }
            entries.swapAt(smaller, parent)
            parent = smaller
        }
    }
}
