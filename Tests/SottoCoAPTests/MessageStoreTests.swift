import CSQLite
import Foundation
import XCTest
@testable import SottoCoAP

/// The SQLite message store on a temporary file.
final class MessageStoreTests: XCTestCase {
    private var folder: URL!
    private var path: String { folder.appendingPathComponent("store.sqlite").path }

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("sotto-store-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    override func tearDown() {
        if let folder { try? FileManager.default.removeItem(at: folder) }
    }

    func testPutThenListGivesTheEnvelopesOldestFirstWithTheirIDs() throws {
        let store = try MessageStore(path: path)
        let first = try store.put(box: "alice", envelope: [1, 2, 3], now: 1000)
        let second = try store.put(box: "alice", envelope: [4], now: 1001)
        _ = try store.put(box: "bob", envelope: [9], now: 1001)
        XCTAssertLessThan(first, second)
        let listed = try store.list(box: "alice", limit: 10, now: 1002)
        XCTAssertEqual(listed.map(\.id), [first, second])
        XCTAssertEqual(listed.map(\.envelope), [[1, 2, 3], [4]])
        XCTAssertEqual(listed[0].expiresAt, 1000 + store.limits.defaultTimeToLive)
        XCTAssertEqual(try store.list(box: "alice", after: first, limit: 10, now: 1002).map(\.id), [second])
        XCTAssertEqual(try store.list(box: "alice", limit: 1, now: 1002).map(\.id), [first])
        let counts = store.currentCounts()
        XCTAssertEqual(counts.envelopes, 3)
        XCTAssertEqual(counts.bytes, 5)
        XCTAssertEqual(counts.boxes, 2)
    }

    func testDeleteRemovesOnlyTheNamedEnvelopesOfThatBox() throws {
        let store = try MessageStore(path: path)
        let a = try store.put(box: "alice", envelope: [1], now: 0)
        let b = try store.put(box: "alice", envelope: [2, 2], now: 0)
        let c = try store.put(box: "bob", envelope: [3], now: 0)
        XCTAssertEqual(try store.delete(box: "alice", ids: [a, c, 999]), 1)
        XCTAssertEqual(try store.delete(box: "alice", ids: [a]), 0, "a repeated acknowledgement deletes nothing")
        XCTAssertEqual(try store.list(box: "alice", limit: 10, now: 1).map(\.id), [b])
        XCTAssertEqual(try store.list(box: "bob", limit: 10, now: 1).map(\.id), [c])
        XCTAssertEqual(store.currentCounts().bytes, 3)
        XCTAssertEqual(store.currentCounts().deleted, 1)
    }

    func testIDsAreNeverReusedAfterDeletion() throws {
        let store = try MessageStore(path: path)
        let a = try store.put(box: "alice", envelope: [1], now: 0)
        try store.delete(box: "alice", ids: [a])
        let b = try store.put(box: "alice", envelope: [1], now: 0)
        XCTAssertGreaterThan(b, a)
    }

    func testExpireRemovesEnvelopesWhoseTimeToLiveIsOverAndListHidesThemBefore() throws {
        let store = try MessageStore(path: path)
        _ = try store.put(box: "alice", envelope: [1], timeToLive: 10, now: 100)
        let kept = try store.put(box: "alice", envelope: [2], timeToLive: 100, now: 100)
        XCTAssertEqual(try store.list(box: "alice", limit: 10, now: 110).map(\.id), [kept])
        XCTAssertEqual(try store.expire(now: 110), 1)
        XCTAssertEqual(try store.expire(now: 110), 0)
        XCTAssertEqual(store.currentCounts().envelopes, 1)
        XCTAssertEqual(store.currentCounts().expired, 1)
    }

    func testEachLimitRefusesWithItsOwnKindAndIsCounted() throws {
        let limits = MessageStoreLimits(maximumEnvelopeBytes: 10, maximumEnvelopesPerBox: 2, maximumTotalBytes: 25,
                                        maximumBoxes: 2, defaultTimeToLive: 60, maximumTimeToLive: 120)
        let store = try MessageStore(path: path, limits: limits)
        func refusal(_ body: () throws -> Void) -> MessageStoreRefusal? {
            do {
                try body()
                return nil
            } catch MessageStoreError.refused(let refusal) {
                return refusal
            } catch {
                XCTFail("unexpected \(error)")
                return nil
            }
        }
        XCTAssertEqual(refusal { _ = try store.put(box: "a", envelope: [], now: 0) }, .emptyEnvelope)
        XCTAssertEqual(refusal { _ = try store.put(box: "a", envelope: Array(repeating: 0, count: 11), now: 0) },
                       .envelopeTooLarge(bytes: 11, limit: 10))
        XCTAssertEqual(refusal { _ = try store.put(box: "a", envelope: [1], timeToLive: 121, now: 0) },
                       .badTimeToLive(seconds: 121, limit: 120))
        XCTAssertEqual(refusal { _ = try store.put(box: "a", envelope: [1], timeToLive: 0, now: 0) },
                       .badTimeToLive(seconds: 0, limit: 120))
        _ = try store.put(box: "a", envelope: Array(repeating: 0, count: 10), now: 0)
        _ = try store.put(box: "a", envelope: Array(repeating: 0, count: 10), now: 0)
        XCTAssertEqual(refusal { _ = try store.put(box: "a", envelope: [1], now: 0) }, .boxFull(box: "a", limit: 2))
        XCTAssertEqual(refusal { _ = try store.put(box: "b", envelope: Array(repeating: 0, count: 6), now: 0) }, .storeFull(limit: 25))
        _ = try store.put(box: "b", envelope: [1], now: 0)
        XCTAssertEqual(refusal { _ = try store.put(box: "c", envelope: [1], now: 0) }, .tooManyBoxes(limit: 2))
        let counts = store.currentCounts()
        XCTAssertEqual(counts.refused, 7)
        XCTAssertEqual(counts.refusals[.badTimeToLive], 2)
        XCTAssertEqual(counts.refusals[.boxFull], 1)
        XCTAssertEqual(counts.envelopes, 3)
    }

    func testEnvelopesSurviveClosingAndReopening() throws {
        var store: MessageStore? = try MessageStore(path: path)
        let id = try store!.put(box: "alice", envelope: [7, 7], now: 0)
        XCTAssertTrue(try store!.register(box: "empty", now: 0))
        store!.close()
        store = nil
        let reopened = try MessageStore(path: path)
        XCTAssertEqual(try reopened.list(box: "alice", limit: 10, now: 1).map(\.id), [id])
        XCTAssertEqual(try reopened.boxes(), ["alice", "empty"])
        XCTAssertEqual(reopened.currentCounts().bytes, 2)
    }

    func testTheStoreFileIsReadableByItsOwnerOnly() throws {
        _ = try MessageStore(path: path)
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        XCTAssertEqual(mode, 0o600)
    }

    func testAFileThatIsNotSQLiteGivesAClearError() throws {
        try Data(repeating: 0x41, count: 4096).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try MessageStore(path: path)) { error in
            XCTAssertEqual(error as? MessageStoreError, .notADatabase(path: path))
            XCTAssertTrue("\(error)".contains("not an SQLite database"), "\(error)")
        }
    }

    func testATruncatedDatabaseGivesAClearError() throws {
        let store = try MessageStore(path: path)
        for index in 0..<50 { _ = try store.put(box: "alice", envelope: Array(repeating: UInt8(index), count: 500), now: 0) }
        store.close()
        // Keep the header page, lose the rest: the page count in the header no longer fits.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        var damaged = bytes.prefix(100)
        damaged.append(Data(repeating: 0xFF, count: 4096))
        try damaged.write(to: URL(fileURLWithPath: path))
        try? FileManager.default.removeItem(atPath: path + "-wal")
        XCTAssertThrowsError(try MessageStore(path: path).list(box: "alice", limit: 100, now: 0)) { error in
            XCTAssertEqual(error as? MessageStoreError, .notADatabase(path: path), "\(error)")
        }
    }

    func testAnotherProgramsDatabaseIsRefused() throws {
        var db: OpaquePointer?
        XCTAssertEqual(sqlite3_open(path, &db), SQLITE_OK)
        XCTAssertEqual(sqlite3_exec(db, "CREATE TABLE notes (text TEXT)", nil, nil, nil), SQLITE_OK)
        sqlite3_close(db)
        XCTAssertThrowsError(try MessageStore(path: path)) { error in
            XCTAssertEqual(error as? MessageStoreError, .foreignDatabase(path: path))
        }
    }

    func testASecondStoreOnTheSameFileIsRefusedWhileTheFirstIsOpen() throws {
        let first = try MessageStore(path: path)
        _ = try first.put(box: "a", envelope: [1], now: 0)
        XCTAssertThrowsError(try MessageStore(path: path)) { error in
            XCTAssertEqual(error as? MessageStoreError, .inUse(path: path), "\(error)")
        }
        first.close()
        XCTAssertNoThrow(try MessageStore(path: path))
    }

    func testAClosedStoreThrowsClosed() throws {
        let store = try MessageStore(path: path)
        store.close()
        XCTAssertThrowsError(try store.put(box: "a", envelope: [1], now: 0)) { error in
            XCTAssertEqual(error as? MessageStoreError, .closed)
        }
    }
}
