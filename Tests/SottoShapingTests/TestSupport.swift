@testable import SottoShaping

/// SplitMix64 (Steele, Lea, Flood 2014): a seeded generator, so every schedule a test checks
/// is the same on every run.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE5_E9B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

typealias TestCore = ShapingCore<Int, SeededGenerator>

let second: UInt64 = 1_000_000_000
let millisecond: UInt64 = 1_000_000

/// A cell the simulated application hands over at a time.
struct Arrival {
    var time: UInt64
    var item: Int
    var kind: ShapingCellKind
}

/// A cell that left, with the time it left; `item` nil for a cover cell.
struct Departure: Equatable {
    var time: UInt64
    var item: Int?
}

func makeCore(_ parameters: ShapingParameters, limits: ShapingQueueLimits = .standard,
              seed: UInt64 = 1, now: UInt64 = 0) -> TestCore {
    ShapingCore(parameters: parameters, queueLimits: limits, cellSize: 514, now: now,
                generator: SeededGenerator(seed: seed))
}

/// Drives a core the way the gateway adapter does: enqueue arrivals when their time comes, then
/// poll until told to wait, and jump the clock to the next arrival or deadline. Stops at `end`.
/// Bounded: at most `maximumSteps` clock steps.
func simulate(_ core: inout TestCore, arrivals: [Arrival], until end: UInt64,
         results: inout [EnqueueResult], maximumSteps: Int = 2_000_000) -> [Departure] {
    var departures: [Departure] = []
    var now: UInt64 = 0
    var next = 0
    let sorted = arrivals.sorted { $0.time < $1.time }
    for _ in 0..<maximumSteps {
        while next < sorted.count, sorted[next].time <= now {
            results.append(core.enqueue(sorted[next].item, kind: sorted[next].kind, now: now))
            next += 1
        }
        var deadline: UInt64? = nil
        polling: for _ in 0..<100_000 {
            switch core.poll(now: now) {
            case .send(let item): departures.append(Departure(time: now, item: item))
            case .sendCover: departures.append(Departure(time: now, item: nil))
            case .wait(let until): deadline = until; break polling
            case .idle: break polling
            }
        }
        let nextArrival = next < sorted.count ? sorted[next].time : nil
        guard let step = [deadline, nextArrival].compactMap({ $0 }).min(), step <= end else { break }
        precondition(step >= now, "the clock never runs backwards")
        now = step
    }
    return departures
}

func simulate(_ core: inout TestCore, arrivals: [Arrival] = [], until end: UInt64) -> [Departure] {
    var results: [EnqueueResult] = []
    return simulate(&core, arrivals: arrivals, until: end, results: &results)
}

func gaps(_ departures: [Departure]) -> [UInt64] {
    zip(departures.dropFirst(), departures).map { $0.time - $1.time }
}

/// Poisson arrivals of messages at `rate` per second over `duration`, each 1 to 3 cells (the
/// chat workload's mix), numbered in order.
func chatArrivals(rate: Double, duration: UInt64, seed: UInt64) -> [Arrival] {
    var generator = SeededGenerator(seed: seed)
    var arrivals: [Arrival] = []
    var time: UInt64 = 0
    var item = 0
    while true {
        time += Draw.exponential(mean: UInt64(Double(second) / rate), using: &generator)
        guard time < duration else { break }
        let cells = Int.random(in: 1...3, using: &generator)
        for index in 0..<cells {
            arrivals.append(Arrival(time: time, item: item, kind: index == 0 ? .datagram : .datagramContinuation))
            item += 1
        }
    }
    return arrivals
}
