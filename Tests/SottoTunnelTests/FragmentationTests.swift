import XCTest
@testable import SottoTunnel

final class FragmenterTests: XCTestCase {
    private let cellSize = 514
    private var capacity: Int { CellCodec.payloadCapacity(cellSize: cellSize) }

    private func datagram(_ length: Int, seed: UInt8 = 0) -> [UInt8] {
        (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed)) }
    }

    func testFragmentCountsAndLengthsFollowCeilOfLengthOverCapacity() throws {
        let cases: [(length: Int, fragments: Int)] = [
            (0, 1), (1, 1), (484, 1), (485, 2), (60_000, 124), (65_507, 136),
        ]
        for (length, fragments) in cases {
            let bytes = datagram(length)
            let cells = try Fragmenter.cells(for: bytes, flow: 5, message: 9, cellSize: cellSize)
            XCTAssertEqual(cells.count, fragments, "\(length) bytes")
            for (index, cell) in cells.enumerated() {
                XCTAssertEqual(cell.type, .datagram)
                XCTAssertEqual(cell.flow, 5)
                XCTAssertEqual(cell.message, 9)
                XCTAssertEqual(Int(cell.fragmentIndex), index)
                XCTAssertEqual(Int(cell.fragmentCount), fragments)
                let expectedLength = index < fragments - 1 ? capacity : length - capacity * (fragments - 1)
                XCTAssertEqual(cell.payload.count, expectedLength, "\(length) bytes, fragment \(index)")
                // Every fragment survives the codec.
                XCTAssertEqual(try CellCodec.decode(CellCodec.encode(cell, cellSize: cellSize)), cell)
            }
            XCTAssertEqual(cells.flatMap(\.payload), bytes)
        }
    }

    func testLargestDatagramFitsTheSmallestCell() throws {
        let cells = try Fragmenter.cells(for: datagram(65_507), flow: 1, message: 0, cellSize: 128)
        XCTAssertEqual(cells.count, 669)
        XCTAssertEqual(cells.last?.payload.count, 65_507 - 98 * 668)
    }

    func testDatagramBeyondTheMaximumThrows() {
        XCTAssertEqual(Fragmenter.maxDatagramSize, 65_507)
        XCTAssertThrowsError(try Fragmenter.cells(for: datagram(65_508), flow: 1, message: 0, cellSize: cellSize)) { error in
            XCTAssertEqual(error as? FragmentationError, .datagramTooLarge(size: 65_508, maximum: 65_507))
            XCTAssertTrue("\(error)".contains("65508"))
        }
    }
}

final class ReassemblerTests: XCTestCase {
    private let cellSize = 514
    private let second: UInt64 = 1_000_000_000

    private func datagram(_ length: Int, seed: Int = 0) -> [UInt8] {
        (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ seed) }
    }

    /// `length` bytes from `random`, eight per draw (byte-wise closures are slow in debug builds).
    private func randomBytes(_ length: Int, _ random: inout CellTestRandom) -> [UInt8] {
        var bytes = [UInt8]()
        bytes.reserveCapacity(length + 8)
        while bytes.count < length {
            withUnsafeBytes(of: random.next()) { bytes.append(contentsOf: $0) }
        }
        bytes.removeLast(bytes.count - length)
        return bytes
    }

    private func fragments(_ bytes: [UInt8], flow: UInt32 = 1, message: UInt16 = 0, cellSize: Int = 514) -> [Cell] {
        try! Fragmenter.cells(for: bytes, flow: flow, message: message, cellSize: cellSize)
    }

    /// Feeds all cells; returns the completed datagrams in completion order.
    private func feed(_ cells: [Cell], into reassembler: inout Reassembler, now: UInt64 = 0) -> [[UInt8]] {
        var completed: [[UInt8]] = []
        for cell in cells {
            if case let .complete(bytes) = reassembler.receive(cell, now: now) { completed.append(bytes) }
        }
        return completed
    }

    // MARK: Completion

    func testEachSizeReassemblesInOrderAndCompletesOnTheLastFragment() {
        for length in [0, 1, 484, 485, 60_000, 65_507] {
            var reassembler = Reassembler()
            let bytes = datagram(length, seed: length)
            let cells = fragments(bytes)
            for cell in cells.dropLast() {
                XCTAssertEqual(reassembler.receive(cell, now: 0), .pending)
            }
            XCTAssertEqual(reassembler.receive(cells.last!, now: 0), .complete(bytes), "\(length) bytes")
            XCTAssertEqual(reassembler.partialCount, 0)
            XCTAssertEqual(reassembler.partialBytes, 0)
            XCTAssertEqual(reassembler.counters.completed, 1)
            XCTAssertEqual(reassembler.counters.dropped, 0)
        }
    }

    func testSingleFragmentDatagramCompletesWithoutState() {
        var reassembler = Reassembler()
        XCTAssertEqual(reassembler.receive(Cell(type: .datagram, flow: 3, payload: [1, 2]), now: 0), .complete([1, 2]))
        XCTAssertEqual(reassembler.receive(Cell(type: .datagram, flow: 3), now: 0), .complete([]))
        XCTAssertEqual(reassembler.partialCount, 0)
        XCTAssertEqual(reassembler.counters.completed, 2)
    }

    func testReverseOrderCompletesOnTheFirstFragment() {
        var reassembler = Reassembler()
        let bytes = datagram(60_000)
        let cells = fragments(bytes)
        for cell in cells.reversed().dropLast() {
            XCTAssertEqual(reassembler.receive(cell, now: 0), .pending)
        }
        XCTAssertEqual(reassembler.receive(cells[0], now: 0), .complete(bytes))
        XCTAssertEqual(reassembler.partialBytes, 0)
    }

    func testShuffledOrderCompletes() {
        var random = CellTestRandom(seed: 7)
        for length in [485, 1_000, 60_000, 65_507] {
            var reassembler = Reassembler()
            let bytes = datagram(length, seed: 3)
            let cells = fragments(bytes).shuffled(using: &random)
            XCTAssertEqual(feed(cells, into: &reassembler), [bytes], "\(length) bytes")
        }
    }

    func testInterleavedFlowsAndMessagesCompleteIndependently() {
        var reassembler = Reassembler()
        let datagrams: [(flow: UInt32, message: UInt16, bytes: [UInt8])] = [
            (1, 0, datagram(60_000, seed: 1)), (1, 1, datagram(1_500, seed: 2)),
            (3, 0, datagram(65_507, seed: 3)), (5, 0, datagram(485, seed: 4)), (3, 1, datagram(0)),
        ]
        let queues = datagrams.map { fragments($0.bytes, flow: $0.flow, message: $0.message) }
        // Round-robin: one fragment of each datagram in turn.
        var interleaved: [Cell] = []
        for position in 0..<queues.map(\.count).max()! {
            for queue in queues where position < queue.count { interleaved.append(queue[position]) }
        }
        let completed = feed(interleaved, into: &reassembler)
        XCTAssertEqual(Set(completed), Set(datagrams.map(\.bytes)))
        XCTAssertEqual(completed.count, datagrams.count)
        XCTAssertEqual(reassembler.partialCount, 0)
    }

    func testSameMessageNumberOnDifferentFlowsDoesNotMix() {
        var reassembler = Reassembler()
        let a = fragments(datagram(1_000, seed: 1), flow: 1, message: 4)
        let b = fragments(datagram(1_000, seed: 2), flow: 3, message: 4)
        let completed = feed([a[0], b[0], b[1], a[1], a[2], b[2]], into: &reassembler)
        XCTAssertEqual(completed, [datagram(1_000, seed: 1), datagram(1_000, seed: 2)])
    }

    // MARK: Fragment-level drops

    func testDuplicateFragmentIsDroppedAndCountedAndTheDatagramStillCompletes() {
        var reassembler = Reassembler()
        let bytes = datagram(2_000)
        let cells = fragments(bytes)
        XCTAssertEqual(reassembler.receive(cells[0], now: 0), .pending)
        XCTAssertEqual(reassembler.receive(cells[0], now: 0), .dropped(.duplicateFragment))
        XCTAssertEqual(reassembler.receive(cells[4], now: 0), .pending)
        XCTAssertEqual(reassembler.receive(cells[4], now: 0), .dropped(.duplicateFragment))
        XCTAssertEqual(feed(Array(cells[1...3]), into: &reassembler), [bytes])
        XCTAssertEqual(reassembler.counters.duplicateFragment, 2)
    }

    func testChangedFragmentCountIsDropped() {
        var reassembler = Reassembler()
        let cells = fragments(datagram(2_000))
        XCTAssertEqual(reassembler.receive(cells[0], now: 0), .pending)
        var changed = cells[1]
        changed.fragmentCount = 6
        XCTAssertEqual(reassembler.receive(changed, now: 0), .dropped(.inconsistentCount))
        // A single-fragment datagram under the key of a partial one also changes the count.
        XCTAssertEqual(reassembler.receive(Cell(type: .datagram, flow: 1, message: 0, payload: [1]), now: 0),
                       .dropped(.inconsistentCount))
        XCTAssertEqual(reassembler.counters.inconsistentCount, 2)
        XCTAssertEqual(feed(Array(cells[1...]), into: &reassembler), [datagram(2_000)])
    }

    func testIndexOutOfRangeIsDropped() {
        var reassembler = Reassembler()
        let bad = [
            Cell(type: .datagram, flow: 1, fragmentIndex: 2, fragmentCount: 2, payload: [1]),
            Cell(type: .datagram, flow: 1, fragmentIndex: 0, fragmentCount: 0, payload: [1]),
            Cell(type: .datagram, flow: 1, fragmentIndex: 1, fragmentCount: 1, payload: [1]),
        ]
        for cell in bad { XCTAssertEqual(reassembler.receive(cell, now: 0), .dropped(.indexOutOfRange)) }
        XCTAssertEqual(reassembler.counters.indexOutOfRange, 3)
        XCTAssertEqual(reassembler.partialCount, 0)
    }

    func testFragmentLengthsThatNoFragmenterProducesAreDropped() {
        var reassembler = Reassembler()
        func cell(_ index: UInt16, _ count: UInt16, _ length: Int, message: UInt16 = 0) -> Cell {
            Cell(type: .datagram, flow: 1, message: message, fragmentIndex: index, fragmentCount: count,
                 payload: [UInt8](repeating: 9, count: length))
        }
        XCTAssertEqual(reassembler.receive(cell(0, 3, 0), now: 0), .dropped(.inconsistentSize), "empty non-last")
        XCTAssertEqual(reassembler.receive(cell(2, 3, 0), now: 0), .dropped(.inconsistentSize), "empty last")
        XCTAssertEqual(reassembler.receive(cell(0, 3, 100), now: 0), .pending)
        XCTAssertEqual(reassembler.receive(cell(1, 3, 99), now: 0), .dropped(.inconsistentSize), "shorter middle")
        XCTAssertEqual(reassembler.receive(cell(2, 3, 101), now: 0), .dropped(.inconsistentSize), "last longer")
        // The last fragment first, then a middle one shorter than it.
        XCTAssertEqual(reassembler.receive(cell(2, 3, 50, message: 1), now: 0), .pending)
        XCTAssertEqual(reassembler.receive(cell(0, 3, 49, message: 1), now: 0), .dropped(.inconsistentSize))
        XCTAssertEqual(reassembler.counters.inconsistentSize, 5)
        XCTAssertEqual(reassembler.receive(cell(1, 3, 100), now: 0), .pending)
        XCTAssertEqual(reassembler.receive(cell(2, 3, 100), now: 0),
                       .complete([UInt8](repeating: 9, count: 300)))
    }

    func testFragmentsAnnouncingMoreThanTheMaximumDatagramAreDropped() {
        var reassembler = Reassembler()
        func cell(_ index: UInt16, _ count: UInt16, _ length: Int, message: UInt16 = 0) -> Cell {
            Cell(type: .datagram, flow: 1, message: message, fragmentIndex: index, fragmentCount: count,
                 payload: [UInt8](repeating: 1, count: length))
        }
        // 136 full fragments of 484 bytes plus one byte is 65,825 bytes.
        XCTAssertEqual(reassembler.receive(cell(0, 137, 484), now: 0), .dropped(.tooLarge))
        // The last fragment alone tells the least the others weigh: 137 * 480 > 65,507.
        XCTAssertEqual(reassembler.receive(cell(136, 137, 480), now: 0), .dropped(.tooLarge))
        // Size learnt from the middle, then a last fragment that tips the total over.
        XCTAssertEqual(reassembler.receive(cell(0, 136, 484, message: 1), now: 0), .pending)
        XCTAssertEqual(reassembler.receive(cell(135, 136, 168, message: 1), now: 0), .dropped(.tooLarge))
        XCTAssertEqual(reassembler.receive(cell(135, 136, 167, message: 1), now: 0), .pending)
        // A count no datagram can have, even with one-byte fragments.
        XCTAssertEqual(reassembler.receive(cell(0, 65_508, 1, message: 2), now: 0), .dropped(.tooLarge))
        // A single-fragment datagram built by hand beyond the maximum.
        XCTAssertEqual(reassembler.receive(cell(0, 1, 65_508, message: 3), now: 0), .dropped(.tooLarge))
        XCTAssertEqual(reassembler.counters.tooLarge, 5)
        XCTAssertEqual(reassembler.partialCount, 1)
    }

    // MARK: Bounds

    func testPartialCountLimitEvictsTheOldestAndCounts() {
        var reassembler = Reassembler(limits: ReassemblyLimits(maxPartialDatagrams: 3))
        let datagrams = (0..<4).map { datagram(1_000, seed: $0) }
        let cells = datagrams.enumerated().map { fragments($1, message: UInt16($0)) }
        for (index, queue) in cells.enumerated() {
            XCTAssertEqual(reassembler.receive(queue[0], now: UInt64(index)), .pending)
        }
        XCTAssertEqual(reassembler.partialCount, 3)
        XCTAssertEqual(reassembler.counters.evictedForSpace, 1)
        // Message 0 was the oldest: its remaining fragments cannot complete it.
        XCTAssertEqual(feed(Array(cells[0][1...]), into: &reassembler, now: 10), [])
        XCTAssertEqual(feed(Array(cells[3][1...]), into: &reassembler, now: 10), [datagrams[3]])
    }

    func testDefaultLimitOfSixtyFourPartialDatagrams() {
        var reassembler = Reassembler()
        let cells = (0..<65).map { fragments(datagram(600, seed: $0), message: UInt16($0)) }
        for queue in cells { XCTAssertEqual(reassembler.receive(queue[0], now: 0), .pending) }
        XCTAssertEqual(reassembler.partialCount, 64)
        XCTAssertEqual(reassembler.counters.evictedForSpace, 1)
        XCTAssertEqual(reassembler.receive(cells[0][1], now: 0), .pending, "message 0 starts over")
        XCTAssertEqual(reassembler.counters.evictedForSpace, 2, "and message 1, now the oldest, makes room")
        XCTAssertEqual(reassembler.receive(cells[64][1], now: 0), .complete(datagram(600, seed: 64)))
    }

    func testByteLimitEvictsTheOldestAndCounts() {
        var reassembler = Reassembler(limits: ReassemblyLimits(maxPartialBytes: 1_000))
        let a = fragments(datagram(1_000, seed: 1), message: 1)
        let b = fragments(datagram(1_000, seed: 2), message: 2)
        XCTAssertEqual(reassembler.receive(a[0], now: 0), .pending)
        XCTAssertEqual(reassembler.receive(b[0], now: 1), .pending)
        XCTAssertEqual(reassembler.partialBytes, 968)
        XCTAssertEqual(reassembler.receive(b[1], now: 2), .pending, "needs 484 more bytes: a goes")
        XCTAssertEqual(reassembler.counters.evictedForSpace, 1)
        XCTAssertEqual(reassembler.partialCount, 1)
        XCTAssertEqual(reassembler.partialBytes, 968)
        XCTAssertEqual(reassembler.receive(b[2], now: 3), .complete(datagram(1_000, seed: 2)))
        XCTAssertEqual(reassembler.partialBytes, 0)
    }

    func testAPartialDatagramThatOutgrowsTheByteLimitAloneIsDropped() {
        var reassembler = Reassembler(limits: ReassemblyLimits(maxPartialBytes: 1_000))
        let cells = fragments(datagram(2_000))
        XCTAssertEqual(reassembler.receive(cells[0], now: 0), .pending)
        XCTAssertEqual(reassembler.receive(cells[1], now: 0), .pending)
        XCTAssertEqual(reassembler.receive(cells[2], now: 0), .dropped(.evictedForSpace))
        XCTAssertEqual(reassembler.partialCount, 0)
        XCTAssertEqual(reassembler.partialBytes, 0)
        XCTAssertEqual(reassembler.counters.evictedForSpace, 1)
    }

    func testDefaultByteLimitOfOneMebibyte() {
        var reassembler = Reassembler()
        // Each datagram held back by its last fragment keeps 135 * 484 = 65,340 bytes: 16 fit.
        let queues = (0..<17).map { fragments(datagram(65_507, seed: $0), message: UInt16($0)) }
        for queue in queues.prefix(16) {
            XCTAssertEqual(feed(Array(queue.dropLast()), into: &reassembler), [])
        }
        XCTAssertEqual(reassembler.partialBytes, 16 * 65_340)
        XCTAssertEqual(reassembler.counters.evictedForSpace, 0)
        XCTAssertEqual(feed(Array(queues[16].dropLast()), into: &reassembler), [])
        XCTAssertEqual(reassembler.counters.evictedForSpace, 1)
        XCTAssertLessThanOrEqual(reassembler.partialBytes, 1 << 20)
        XCTAssertEqual(reassembler.receive(queues[0].last!, now: 0), .pending, "the oldest was dropped")
        XCTAssertEqual(reassembler.receive(queues[16].last!, now: 0), .complete(datagram(65_507, seed: 16)))
    }

    func testOutOfOrderFragmentsCountTheGapTheyHold() {
        var reassembler = Reassembler()
        let cells = fragments(datagram(2_000))
        XCTAssertEqual(reassembler.receive(cells[2], now: 0), .pending)
        XCTAssertEqual(reassembler.partialBytes, 3 * 484)
        XCTAssertEqual(reassembler.receive(cells[4], now: 0), .pending)
        XCTAssertEqual(reassembler.partialBytes, 3 * 484 + 64)
        XCTAssertEqual(reassembler.receive(cells[0], now: 0), .pending)
        XCTAssertEqual(reassembler.partialBytes, 3 * 484 + 64, "filling a gap holds nothing new")
    }

    func testPartialDatagramsOlderThanTheAgeLimitExpireOldestFirst() {
        var reassembler = Reassembler()
        let a = fragments(datagram(1_000, seed: 1), message: 1)
        let b = fragments(datagram(1_000, seed: 2), message: 2)
        XCTAssertEqual(reassembler.receive(a[0], now: 0), .pending)
        XCTAssertEqual(reassembler.receive(b[0], now: 5 * second), .pending)
        XCTAssertEqual(reassembler.receive(a[1], now: 9 * second), .pending, "later fragments do not refresh the age")
        XCTAssertEqual(reassembler.expire(now: 10 * second), 0, "exactly 10 s is not older than 10 s")
        XCTAssertEqual(reassembler.expire(now: 10 * second + 1), 1)
        XCTAssertEqual(reassembler.partialCount, 1)
        XCTAssertEqual(reassembler.partialBytes, 484)
        XCTAssertEqual(reassembler.counters.expired, 1)
        XCTAssertEqual(reassembler.receive(a[2], now: 11 * second), .pending, "a is gone")
        XCTAssertEqual(feed(Array(b[1...]), into: &reassembler, now: 12 * second), [datagram(1_000, seed: 2)])
    }

    func testReceiveExpiresStalePartialsBeforeUsingThem() {
        var reassembler = Reassembler(limits: ReassemblyLimits(maxAgeNanoseconds: 2 * second))
        let cells = fragments(datagram(1_000))
        XCTAssertEqual(reassembler.receive(cells[0], now: 0), .pending)
        XCTAssertEqual(reassembler.receive(cells[1], now: 1 * second), .pending)
        // The last fragment arrives too late: the partial expired, so it starts a new one.
        XCTAssertEqual(reassembler.receive(cells[2], now: 3 * second), .pending)
        XCTAssertEqual(reassembler.counters.expired, 1)
        XCTAssertEqual(reassembler.partialBytes, 32)
    }

    func testRemoveFlowForgetsOnlyThatFlowsPartials() {
        var reassembler = Reassembler()
        let a = fragments(datagram(1_000, seed: 1), flow: 1)
        let b = fragments(datagram(1_000, seed: 2), flow: 3)
        let c = fragments(datagram(1_000, seed: 3), flow: 1, message: 1)
        _ = feed([a[0], b[0], c[0], c[1]], into: &reassembler)
        reassembler.removeFlow(1)
        XCTAssertEqual(reassembler.partialCount, 1)
        XCTAssertEqual(reassembler.partialBytes, 484)
        XCTAssertEqual(reassembler.counters.dropped, 0)
        XCTAssertEqual(feed(Array(b[1...]), into: &reassembler), [datagram(1_000, seed: 2)])
        XCTAssertEqual(feed([a[1], a[2]], into: &reassembler), [], "flow 1's earlier fragments are gone")
    }

    func testBookkeepingStaysBoundedWhileAnOldPartialLingers() {
        var reassembler = Reassembler()
        let stuck = fragments(datagram(1_000), flow: 99)
        XCTAssertEqual(reassembler.receive(stuck[0], now: 0), .pending)
        for message in 0..<5_000 {
            let completed = feed(fragments(datagram(600, seed: message), message: UInt16(message)), into: &reassembler)
            XCTAssertEqual(completed.count, 1)
        }
        XCTAssertEqual(reassembler.partialCount, 1)
        XCTAssertLessThan(reassembler.orderBacklog, 200)
    }

    // MARK: Randomized

    func testRandomizedInterleavingAcrossManyFlowsDeliversEveryDatagramIntact() {
        var random = CellTestRandom(seed: 0xC0FFEE)
        var reassembler = Reassembler(limits: ReassemblyLimits(maxPartialDatagrams: 100_000, maxPartialBytes: 1 << 30))
        var expected: [String: [UInt8]] = [:]
        var cells: [Cell] = []
        var duplicates = 0
        for flow in stride(from: UInt32(1), through: 99, by: 2) {
            for message in 0..<8 {
                let length: Int
                switch random.next() % 4 {
                case 0: length = Int(random.next() % 485)
                case 1: length = Int(random.next() % 65_508)
                default: length = Int(random.next() % 4_000)
                }
                let bytes = randomBytes(length, &random)
                let cellSize = [128, 514, 1400][Int(random.next() % 3)]
                expected["\(flow)/\(message)"] = bytes
                for cell in fragments(bytes, flow: flow, message: UInt16(message), cellSize: cellSize) {
                    cells.append(cell)
                    // Duplicate some fragments of multi-fragment datagrams, never the last, so a
                    // copy arriving after completion cannot complete a second time.
                    if cell.fragmentIndex + 1 < cell.fragmentCount && random.next() % 10 == 0 {
                        cells.append(cell)
                        duplicates += 1
                    }
                }
            }
        }
        cells.shuffle(using: &random)
        var delivered: [String: [UInt8]] = [:]
        var lateCopies = 0
        for cell in cells {
            let key = "\(cell.flow)/\(cell.message)"
            switch reassembler.receive(cell, now: 0) {
            case let .complete(bytes):
                XCTAssertNil(delivered[key], "\(key) delivered twice")
                delivered[key] = bytes
            case .pending:
                // After completion only a second copy can arrive; it starts a leftover partial
                // that never completes (last fragments are never duplicated).
                if delivered[key] != nil { lateCopies += 1 }
            case .dropped(let reason):
                XCTAssertEqual(reason, .duplicateFragment)
            }
        }
        XCTAssertEqual(delivered.count, expected.count)
        XCTAssertTrue(delivered == expected, "some datagram was reassembled wrongly")
        XCTAssertEqual(reassembler.counters.completed, expected.count)
        XCTAssertEqual(reassembler.counters.duplicateFragment + lateCopies, duplicates)
        XCTAssertGreaterThan(reassembler.counters.duplicateFragment, 0)
    }

    func testRandomizedTrafficUnderDefaultLimitsStaysWithinBoundsAndNeverCorrupts() {
        var random = CellTestRandom(seed: 2024)
        var reassembler = Reassembler()
        var originals: [String: [UInt8]] = [:]
        var now: UInt64 = 0
        // Many flows, each sending datagrams in order; the streams are interleaved at random,
        // and some flows abandon datagrams halfway (the sender's queue dropped the rest).
        var queues: [[Cell]] = []
        for flow in stride(from: UInt32(1), through: 119, by: 2) {
            var queue: [Cell] = []
            for message in 0..<6 {
                let length = Int(random.next() % (random.next() % 3 == 0 ? 65_508 : 3_000))
                let bytes = randomBytes(length, &random)
                originals["\(flow)/\(message)"] = bytes
                var cells = fragments(bytes, flow: flow, message: UInt16(message))
                if cells.count > 1 && random.next() % 5 == 0 {
                    cells.removeLast(Int(random.next() % UInt64(cells.count - 1)) + 1)
                }
                queue += cells
            }
            queues.append(queue)
        }
        var positions = [Int](repeating: 0, count: queues.count)
        var active = Array(queues.indices)
        var completed = 0
        while !active.isEmpty {
            let pick = Int(random.next() % UInt64(active.count))
            let queueIndex = active[pick]
            let cell = queues[queueIndex][positions[queueIndex]]
            positions[queueIndex] += 1
            if positions[queueIndex] == queues[queueIndex].count { active.remove(at: pick) }
            now += UInt64(random.next() % 200_000)  // up to 0.2 ms per cell
            if case let .complete(bytes) = reassembler.receive(cell, now: now) {
                XCTAssertEqual(bytes, originals["\(cell.flow)/\(cell.message)"])
                completed += 1
            }
            XCTAssertLessThanOrEqual(reassembler.partialCount, 64)
            XCTAssertLessThanOrEqual(reassembler.partialBytes, 1 << 20)
        }
        XCTAssertGreaterThan(completed, originals.count / 4)
        XCTAssertGreaterThan(reassembler.counters.evictedForSpace + reassembler.counters.expired, 0,
                             "the traffic should be heavy enough to hit a bound")
        XCTAssertEqual(reassembler.counters.completed, completed)
        reassembler.expire(now: now + 11 * second)
        XCTAssertEqual(reassembler.partialCount, 0)
        XCTAssertEqual(reassembler.partialBytes, 0)
    }
}
