import Foundation
import XCTest
@testable import SottoCoAP

/// The in-memory box cache on its own, and the store that uses it against a reference model.
final class BoxCacheTests: XCTestCase {
    private func envelope(_ id: Int64, bytes: Int = 1, expiresAt: Int64 = 1_000) -> StoredEnvelope {
        StoredEnvelope(id: id, envelope: [UInt8](repeating: UInt8(truncatingIfNeeded: id), count: bytes), storedAt: 0, expiresAt: expiresAt)
    }

    func testAMissIsNilAndAFilledBoxAnswersWithAfterLimitAndExpiry() {
        var cache = BoxCache()
        XCTAssertNil(cache.list(box: "a", after: 0, limit: 10, now: 0))
        cache.fill(box: "a", envelopes: [envelope(1), envelope(2, expiresAt: 5), envelope(3), envelope(4)])
        XCTAssertEqual(cache.list(box: "a", after: 0, limit: 10, now: 0)?.map(\.id), [1, 2, 3, 4])
        XCTAssertEqual(cache.list(box: "a", after: 0, limit: 10, now: 5)?.map(\.id), [1, 3, 4], "expired at 5 is left out")
        XCTAssertEqual(cache.list(box: "a", after: 1, limit: 2, now: 0)?.map(\.id), [2, 3])
        XCTAssertEqual(cache.list(box: "a", after: 4, limit: 2, now: 0)?.map(\.id), [])
        XCTAssertEqual(cache.hits, 4)
        XCTAssertEqual(cache.misses, 1)
    }

    func testAppendedAndDeletedKeepTheEntryAndItsBytesInStep() {
        var cache = BoxCache()
        cache.appended(box: "a", envelope: envelope(1))
        XCTAssertNil(cache.list(box: "a", after: 0, limit: 10, now: 0), "an uncached box stays uncached")
        cache.fill(box: "a", envelopes: [])
        let empty = cache.bytes
        XCTAssertEqual(empty, BoxCache.boxOverhead + 1)
        cache.appended(box: "a", envelope: envelope(1, bytes: 10))
        cache.appended(box: "a", envelope: envelope(2, bytes: 20))
        XCTAssertEqual(cache.bytes, empty + 30 + 2 * BoxCache.entryOverhead)
        cache.deleted(box: "a", ids: [1, 99])
        XCTAssertEqual(cache.list(box: "a", after: 0, limit: 10, now: 0)?.map(\.id), [2])
        XCTAssertEqual(cache.bytes, empty + 20 + BoxCache.entryOverhead)
        cache.remove("a")
        XCTAssertEqual(cache.bytes, 0)
    }

    func testABoxPastItsBoundsIsNotCachedOrLeavesTheCache() {
        var cache = BoxCache(maximumEnvelopesPerBox: 2, maximumBytesPerBox: 1_000, maximumBytes: 10_000)
        cache.fill(box: "many", envelopes: [envelope(1), envelope(2), envelope(3)])
        XCTAssertNil(cache.list(box: "many", after: 0, limit: 10, now: 0))
        cache.fill(box: "big", envelopes: [envelope(1, bytes: 1_000)])
        XCTAssertNil(cache.list(box: "big", after: 0, limit: 10, now: 0))
        cache.fill(box: "a", envelopes: [envelope(1), envelope(2)])
        XCTAssertNotNil(cache.list(box: "a", after: 0, limit: 10, now: 0))
        cache.appended(box: "a", envelope: envelope(3))
        XCTAssertNil(cache.list(box: "a", after: 0, limit: 10, now: 0), "a third envelope is past the bound: the box leaves")
        XCTAssertEqual(cache.bytes, 0)
        cache.fill(box: "b", envelopes: [envelope(5)])
        cache.appended(box: "b", envelope: envelope(4))
        XCTAssertNil(cache.list(box: "b", after: 0, limit: 10, now: 0), "an id out of order is never appended")
    }

    func testTheLeastRecentlyListedBoxesAreEvictedToStayWithinTheTotal() {
        let perBox = BoxCache.boxOverhead + 1 + 100 + BoxCache.entryOverhead
        var cache = BoxCache(maximumEnvelopesPerBox: 8, maximumBytesPerBox: 10_000, maximumBytes: 3 * perBox)
        for name in ["a", "b", "c"] { cache.fill(box: name, envelopes: [envelope(1, bytes: 100)]) }
        XCTAssertEqual(cache.bytes, 3 * perBox)
        _ = cache.list(box: "a", after: 0, limit: 1, now: 0)
        cache.fill(box: "d", envelopes: [envelope(1, bytes: 100)])
        XCTAssertEqual(cache.evictions, 1)
        XCTAssertNil(cache.list(box: "b", after: 0, limit: 1, now: 0), "b was the least recently used")
        for name in ["a", "c", "d"] { XCTAssertNotNil(cache.list(box: name, after: 0, limit: 1, now: 0), name) }
        XCTAssertLessThanOrEqual(cache.bytes, cache.maximumBytes)
    }

    /// Random puts, lists, deletes, expiries, flushes and reopenings of a real store, each list
    /// compared with a plain model of what the boxes hold; the boxes cross the cache's bounds.
    func testTheStoreAnswersLikeAModelThroughEveryKindOfChange() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("sotto-cache-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("store.sqlite").path
        var store = try MessageStore(path: path)
        var model: [String: [StoredEnvelope]] = [:]
        var random = SystemRandomNumberGenerator()
        var seed = UInt64.random(in: 0...UInt64.max, using: &random)
        let start = seed
        func next(_ bound: Int) -> Int {
            seed &+= 0x9E37_79B9_7F4A_7C15
            var z = seed
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Int((z ^ (z >> 31)) % UInt64(bound))
        }
        let boxes = ["a", "b", "c"]
        var now: Int64 = 100
        for step in 0..<3_000 {
            let box = boxes[next(boxes.count)]
            switch next(100) {
            case 0..<45:
                let body = [UInt8](repeating: UInt8(step & 0xFF), count: 1 + next(40))
                let ttl = Int64(1 + next(50))
                let id = try store.put(box: box, envelope: body, timeToLive: ttl, now: now)
                model[box, default: []].append(StoredEnvelope(id: id, envelope: body, storedAt: now, expiresAt: now + ttl))
            case 45..<80:
                let all = model[box, default: []].filter { $0.expiresAt > now }
                let after = all.isEmpty || next(2) == 0 ? 0 : all[next(all.count)].id
                let limit = 1 + next(100)
                let expected = Array(all.filter { $0.id > after }.prefix(limit))
                XCTAssertEqual(try store.list(box: box, after: after, limit: limit, now: now), expected, "step \(step), seed \(start)")
            case 80..<90:
                let held = model[box, default: []]
                guard !held.isEmpty else { continue }
                let ids = Set((0..<(1 + next(3))).map { _ in held[next(held.count)].id })
                XCTAssertEqual(try store.delete(box: box, ids: Array(ids)), ids.count, "step \(step), seed \(start)")
                model[box] = held.filter { !ids.contains($0.id) }
            case 90..<94:
                let gone = try store.expire(now: now)
                var expected = 0
                for (name, held) in model {
                    expected += held.filter { $0.expiresAt <= now }.count
                    model[name] = held.filter { $0.expiresAt > now }
                }
                XCTAssertEqual(gone, expected, "step \(step), seed \(start)")
            case 94..<97:
                try store.flush()
            case 97:
                store.close()
                store = try MessageStore(path: path)
            default:
                now += Int64(1 + next(10))
            }
        }
        let counts = store.currentCounts()
        XCTAssertGreaterThan(counts.cacheHits, 0)
        XCTAssertGreaterThan(counts.cacheMisses, 0)
        store.close()
    }
}
