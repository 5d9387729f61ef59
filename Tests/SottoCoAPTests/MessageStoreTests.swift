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

    // MARK: - The pending log

    private func record(_ id: Int64, _ box: String = "alice", _ envelope: [UInt8] = [1, 2, 3]) -> PendingLog.Record {
        PendingLog.Record(id: id, box: box, envelope: envelope, storedAt: 100 + id, expiresAt: 1000 + id)
    }

    /// The files of an open store copied elsewhere: what a killed process leaves on disk.
    private func snapshot(_ name: String) throws -> String {
        let copy = folder.appendingPathComponent(name).path
        for suffix in ["", "-wal", "-pending"] where FileManager.default.fileExists(atPath: path + suffix) {
            try FileManager.default.copyItem(atPath: path + suffix, toPath: copy + suffix)
        }
        return copy
    }

    func testCRC32GivesTheCheckValueOfItsStandard() {
        // CRC-32/ISO-HDLC's check value: the CRC of "123456789".
        XCTAssertEqual(CRC32.checksum(Array("123456789".utf8)), 0xCBF4_3926)
        XCTAssertEqual(CRC32.checksum([UInt8]()), 0)
    }

    func testPendingLogRecordsRoundTrip() {
        let records = [record(1), record(2, "bob", [9]), record(7, "a.b-c_D", Array(repeating: 0xAB, count: 5000))]
        let bytes = PendingLog.header + records.flatMap(PendingLog.encode)
        let decoded = PendingLog.decode(bytes)
        XCTAssertEqual(decoded.records, records)
        XCTAssertEqual(decoded.validLength, bytes.count)
        XCTAssertNil(decoded.problem)
        XCTAssertEqual(PendingLog.encode(records[0]).count, 8 + 25 + 5 + 3)
    }

    func testPendingLogReadingStopsWhereARecordIsCutShort() {
        let first = PendingLog.encode(record(1))
        let second = PendingLog.encode(record(2))
        let whole = PendingLog.header + first + second
        let secondStart = PendingLog.header.count + first.count
        for length in PendingLog.header.count..<whole.count {
            let decoded = PendingLog.decode(Array(whole.prefix(length)))
            let expected = length >= secondStart ? 1 : 0
            XCTAssertEqual(decoded.records.count, expected, "cut at \(length)")
            if length == PendingLog.header.count || length == secondStart {
                XCTAssertNil(decoded.problem, "cut at \(length)")
            } else {
                XCTAssertEqual(decoded.problem, .truncated(offset: expected == 1 ? secondStart : PendingLog.header.count), "cut at \(length)")
                XCTAssertEqual(decoded.validLength, expected == 1 ? secondStart : PendingLog.header.count)
            }
        }
    }

    func testPendingLogRefusesDamagedRecords() {
        let good = PendingLog.encode(record(1))
        let start = PendingLog.header.count
        func decode(_ second: [UInt8]) -> (count: Int, problem: PendingLog.Problem?) {
            let result = PendingLog.decode(PendingLog.header + good + second)
            return (result.records.count, result.problem)
        }
        let offset = start + good.count
        // A record whose body is `body`, with a correct checksum.
        func framed(_ body: [UInt8]) -> [UInt8] {
            var out: [UInt8] = []
            for shift in stride(from: 24, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: UInt32(body.count) >> UInt32(shift))) }
            let crc = CRC32.checksum(body)
            for shift in stride(from: 24, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: crc >> UInt32(shift))) }
            return out + body
        }
        let body = Array(PendingLog.encode(record(2)).dropFirst(8))

        var flipped = PendingLog.encode(record(2))
        flipped[flipped.count - 1] ^= 0x01
        XCTAssertEqual(decode(flipped).problem, .badChecksum(offset: offset))
        XCTAssertEqual(decode(flipped).count, 1)

        XCTAssertEqual(decode([0, 0, 0, 0, 0, 0, 0, 0]).problem, .badLength(offset: offset, length: 0))
        XCTAssertEqual(decode([0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]).problem, .badLength(offset: offset, length: 0xFFFF_FFFF))
        XCTAssertEqual(decode(framed(body)).count, 2, "the framing helper makes good records")

        var zeroID = body
        for index in 0..<8 { zeroID[index] = 0 }
        XCTAssertEqual(decode(framed(zeroID)).problem, .badRecord(offset: offset, reason: "id 0"))

        var noBox = body
        noBox[24] = 0
        XCTAssertEqual(decode(framed(noBox)).problem, .badRecord(offset: offset, reason: "box of 0 bytes in a \(body.count)-byte record"))
        var boxTooLong = body
        boxTooLong[24] = UInt8(body.count - 25)  // no envelope byte left
        XCTAssertEqual(decode(framed(boxTooLong)).problem,
                       .badRecord(offset: offset, reason: "box of \(body.count - 25) bytes in a \(body.count)-byte record"))

        var slash = body
        slash[25] = UInt8(ascii: "/")
        XCTAssertEqual(decode(framed(slash)).problem, .badRecord(offset: offset, reason: "bad box name: \(MailboxNameProblem.badCharacter(position: 1))"))

        XCTAssertEqual(decode(PendingLog.encode(record(1))).problem, .badRecord(offset: offset, reason: "id 1 after id 1"))
        XCTAssertEqual(decode(Array(repeating: 0x41, count: 3)).problem, .truncated(offset: offset))
    }

    func testAPutIsInTheLogBeforeItReturnsAndSurvivesAKill() throws {
        let store = try MessageStore(path: path)
        let kept = try store.put(box: "keep", envelope: [0], now: 0)
        try store.flush()
        let first = try store.put(box: "alice", envelope: [1, 2, 3], now: 10)
        let second = try store.put(box: "bob", envelope: [4], timeToLive: 60, now: 11)
        XCTAssertEqual(store.currentCounts().pending, 2)
        XCTAssertEqual(try store.list(box: "alice", limit: 10, now: 12).map(\.envelope), [[1, 2, 3]], "pending envelopes are listed")
        let mode = try FileManager.default.attributesOfItem(atPath: store.logPath)[.posixPermissions] as? Int
        XCTAssertEqual(mode, 0o600)

        // The store is not closed: its files are what a SIGKILL would leave.
        let copy = try snapshot("killed.sqlite")
        let recovered = try MessageStore(path: copy)
        XCTAssertEqual(recovered.currentCounts().recovered, 2)
        XCTAssertEqual(recovered.currentCounts().pending, 0, "opening moves the log into the tables")
        XCTAssertEqual(try recovered.list(box: "alice", limit: 10, now: 12).map(\.id), [first])
        XCTAssertEqual(try recovered.list(box: "bob", limit: 10, now: 12).map(\.expiresAt), [71])
        XCTAssertEqual(try recovered.list(box: "keep", limit: 10, now: 12).map(\.id), [kept])
        XCTAssertEqual(try recovered.boxes(), ["alice", "bob", "keep"])
        XCTAssertEqual(recovered.currentCounts().envelopes, 3)
        XCTAssertEqual(recovered.currentCounts().bytes, 5)
        XCTAssertGreaterThan(try recovered.put(box: "alice", envelope: [5], now: 13), second, "ids go on above the log's")
        let logSize = try FileManager.default.attributesOfItem(atPath: copy + "-pending")[.size] as? Int
        XCTAssertEqual(logSize, PendingLog.header.count + PendingLog.encode(record(1, "alice", [5])).count)
    }

    func testARecordTheTablesAlreadyHaveIsNotStoredTwice() throws {
        // A kill between a flush's commit and the emptying of the log leaves records that are
        // in the tables already (and may have been deleted since).
        var store: MessageStore? = try MessageStore(path: path)
        let a = try store!.put(box: "alice", envelope: [1], now: 0)
        let b = try store!.put(box: "alice", envelope: [2], now: 0)
        let staleLog = try Data(contentsOf: URL(fileURLWithPath: store!.logPath))
        XCTAssertEqual(try store!.delete(box: "alice", ids: [a]), 1)
        store!.close()
        store = nil
        try staleLog.write(to: URL(fileURLWithPath: path + "-pending"))
        let reopened = try MessageStore(path: path)
        XCTAssertEqual(reopened.currentCounts().recovered, 0)
        XCTAssertEqual(try reopened.list(box: "alice", limit: 10, now: 1).map(\.id), [b])
    }

    func testACutShortRecordAtTheEndOfTheLogIsDroppedAndCounted() throws {
        let store = try MessageStore(path: path)
        let id = try store.put(box: "alice", envelope: [1], now: 0)
        let copy = try snapshot("torn.sqlite")
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: copy + "-pending"))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(PendingLog.encode(record(id + 1)).prefix(20)))
        try handle.close()
        let recovered = try MessageStore(path: copy)
        XCTAssertEqual(recovered.currentCounts().recovered, 1)
        XCTAssertEqual(recovered.currentCounts().discardedLogBytes, 20)
        XCTAssertEqual(try recovered.list(box: "alice", limit: 10, now: 1).map(\.id), [id])
    }

    func testAForeignFileWhereTheLogBelongsIsRefusedAndLeftAlone() throws {
        let text = Data("someone else's notes\n".utf8)
        try text.write(to: URL(fileURLWithPath: path + "-pending"))
        XCTAssertThrowsError(try MessageStore(path: path)) { error in
            XCTAssertEqual(error as? MessageStoreError, .foreignLog(path: path + "-pending"))
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path + "-pending")), text)
    }

    func testPendingEnvelopesAreFlushedAtTheLimitAndListedInIDOrder() throws {
        let store = try MessageStore(path: path, limits: MessageStoreLimits(maximumEnvelopesPerBox: 10_000))
        var ids: [Int64] = []
        for index in 0..<(MessageStore.maximumPendingEnvelopes + 3) {
            ids.append(try store.put(box: "alice", envelope: [UInt8(truncatingIfNeeded: index)], now: 0))
        }
        XCTAssertEqual(store.currentCounts().flushes, 1)
        XCTAssertEqual(store.currentCounts().pending, 3)
        XCTAssertEqual(ids, ids.sorted())
        let boundary = ids[MessageStore.maximumPendingEnvelopes - 2]
        // Two from the tables, then pending ones.
        XCTAssertEqual(try store.list(box: "alice", after: boundary, limit: 4, now: 1).map(\.id), Array(ids.suffix(4)))
        XCTAssertEqual(try store.list(box: "alice", limit: 100_000, now: 1).count, ids.count)
        XCTAssertEqual(try store.list(box: "bob", limit: 10, now: 1), [])
    }

    func testABoxNameTheMailboxRefusesIsRefusedByTheStore() throws {
        let store = try MessageStore(path: path)
        XCTAssertThrowsError(try store.put(box: "a/b", envelope: [1], now: 0)) { error in
            XCTAssertEqual(error as? MessageStoreError, .badBoxName(.badCharacter(position: 2)))
        }
        XCTAssertThrowsError(try store.put(box: "", envelope: [1], now: 0))
        XCTAssertEqual(store.currentCounts().envelopes, 0)
    }
}
