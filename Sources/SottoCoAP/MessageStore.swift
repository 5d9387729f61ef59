import CSQLite
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// How much the message store holds before it refuses envelopes.
public struct MessageStoreLimits: Sendable, Equatable {
    /// One envelope's bytes (what a POST carries).
    public var maximumEnvelopeBytes: Int
    /// Envelopes waiting in one box.
    public var maximumEnvelopesPerBox: Int
    /// The bytes of every waiting envelope together (envelope bytes only, not SQLite's overhead).
    public var maximumTotalBytes: Int
    /// Boxes the store knows (each one is a CoAP resource while the server runs).
    public var maximumBoxes: Int
    /// Seconds an envelope waits when the sender names no time to live.
    public var defaultTimeToLive: Int64
    /// The longest time to live a sender may ask for.
    public var maximumTimeToLive: Int64

    public init(maximumEnvelopeBytes: Int = 65_536, maximumEnvelopesPerBox: Int = 1_000,
                maximumTotalBytes: Int = 256 << 20, maximumBoxes: Int = 10_000,
                defaultTimeToLive: Int64 = 7 * 86_400, maximumTimeToLive: Int64 = 30 * 86_400) {
        self.maximumEnvelopeBytes = maximumEnvelopeBytes
        self.maximumEnvelopesPerBox = maximumEnvelopesPerBox
        self.maximumTotalBytes = maximumTotalBytes
        self.maximumBoxes = maximumBoxes
        self.defaultTimeToLive = defaultTimeToLive
        self.maximumTimeToLive = maximumTimeToLive
    }
}

/// Why the store refused an envelope: a limit the sender ran into, not a fault of the server.
public enum MessageStoreRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    case emptyEnvelope
    case envelopeTooLarge(bytes: Int, limit: Int)
    case badTimeToLive(seconds: Int64, limit: Int64)
    case boxFull(box: String, limit: Int)
    case storeFull(limit: Int)
    case tooManyBoxes(limit: Int)

    /// The refusal without its figures, for counting.
    public enum Kind: String, Sendable, CaseIterable {
        case emptyEnvelope = "empty_envelope"
        case envelopeTooLarge = "envelope_too_large"
        case badTimeToLive = "bad_time_to_live"
        case boxFull = "box_full"
        case storeFull = "store_full"
        case tooManyBoxes = "too_many_boxes"
    }

    public var kind: Kind {
        switch self {
        case .emptyEnvelope: return .emptyEnvelope
        case .envelopeTooLarge: return .envelopeTooLarge
        case .badTimeToLive: return .badTimeToLive
        case .boxFull: return .boxFull
        case .storeFull: return .storeFull
        case .tooManyBoxes: return .tooManyBoxes
        }
    }

    public var description: String {
        switch self {
        case .emptyEnvelope: return "the envelope is empty"
        case .envelopeTooLarge(let bytes, let limit): return "the envelope is \(bytes) bytes; this server takes at most \(limit)"
        case .badTimeToLive(let seconds, let limit): return "time to live \(seconds) s is not from 1 to \(limit) s"
        case .boxFull(let box, let limit): return "box '\(box)' holds \(limit) envelopes, its limit: fetch and delete some first"
        case .storeFull(let limit): return "the server's store is full (\(limit) bytes of envelopes); try later"
        case .tooManyBoxes(let limit): return "the server knows \(limit) boxes, its limit; no new box can be made"
        }
    }
}

/// A fault of the store itself: its file, or SQLite.
public enum MessageStoreError: Error, Sendable, Equatable, CustomStringConvertible {
    case refused(MessageStoreRefusal)
    case cannotOpen(path: String, reason: String)
    /// The file is no SQLite database (SQLITE_NOTADB) or a damaged one (SQLITE_CORRUPT).
    case notADatabase(path: String)
    /// An SQLite database that some other program made.
    case foreignDatabase(path: String)
    /// Made by a newer sotto whose layout this one does not know.
    case newerSchema(path: String, version: Int32, supported: Int32)
    /// Another process (another sotto coap-server) holds the database.
    case inUse(path: String)
    case sqlite(path: String, operation: String, code: Int32, message: String)
    /// The pending log (`MessageStore.logPath`) could not be read or written.
    case log(path: String, operation: String, reason: String)
    /// The pending log is there but is no sotto pending log: it is left as it is.
    case foreignLog(path: String)
    /// `put` takes only box names `MailboxName` accepts (the mailbox service checks them first).
    case badBoxName(MailboxNameProblem)
    case closed

    public var description: String {
        switch self {
        case .refused(let refusal): return refusal.description
        case .cannotOpen(let path, let reason): return "cannot open the message store \(path): \(reason)"
        case .notADatabase(let path):
            return "the message store \(path) is not an SQLite database, or it is damaged: move it away to start with an empty store (its envelopes are lost), or point --database elsewhere"
        case .foreignDatabase(let path):
            return "\(path) is an SQLite database of another program, not a sotto message store: point --database at another file"
        case .newerSchema(let path, let version, let supported):
            return "the message store \(path) has layout version \(version); this sotto knows up to \(supported): use a newer sotto"
        case .inUse(let path):
            return "the message store \(path) is in use by another process (another sotto coap-server?)"
        case .sqlite(let path, let operation, let code, let message):
            return "message store \(path): \(operation) failed: \(message) (SQLite error \(code))"
        case .log(let path, let operation, let reason): return "message store log \(path): \(operation) failed: \(reason)"
        case .foreignLog(let path):
            return "\(path) is not a sotto message-store log: move it away (it may hold another program's data)"
        case .badBoxName(let problem): return "bad box name: \(problem)"
        case .closed: return "the message store is closed"
        }
    }
}

/// An envelope as the store hands it out.
public struct StoredEnvelope: Sendable, Equatable {
    /// Unique for the life of the store: ids are never reused (AUTOINCREMENT), so an id a
    /// receiver acknowledges can only name the envelope it fetched.
    public var id: Int64
    public var envelope: [UInt8]
    /// Unix seconds.
    public var storedAt: Int64
    public var expiresAt: Int64
}

/// What the store holds and what it did since it was opened.
public struct MessageStoreCounts: Sendable, Equatable {
    public var envelopes = 0
    public var bytes = 0
    public var boxes = 0
    public var stored = 0
    public var deleted = 0
    public var expired = 0
    public var refusals: [MessageStoreRefusal.Kind: Int] = [:]
    /// Envelopes waiting in the pending log for the next SQLite transaction (see `MessageStore`).
    public var pending = 0
    /// SQLite transactions that moved pending envelopes into the tables.
    public var flushes = 0
    /// Envelopes found in the pending log when the store was opened (the last run ended before
    /// moving them into the tables) and moved into the tables then.
    public var recovered = 0
    /// Bytes at the end of the pending log that did not form a whole, intact record when the
    /// store was opened (a write cut short by a crash): dropped.
    public var discardedLogBytes = 0
    /// `list` calls answered from memory (`BoxCache`) and from the tables, and cached boxes
    /// evicted to keep the cache within its bytes.
    public var cacheHits = 0
    public var cacheMisses = 0
    public var cacheEvictions = 0

    public var refused: Int { refusals.values.reduce(0, +) }
}

/// Mailboxes of opaque envelopes in an SQLite file (the system libsqlite3), with a pending log.
///
/// `put` appends the envelope to the *pending log* (`logPath`: the database's path with
/// `-pending`) with one `write` before it returns, and keeps it in memory; `flush()` moves the
/// pending envelopes into the SQLite tables in one transaction and empties the log. Flushes
/// happen when `maximumPendingEnvelopes` or `maximumPendingBytes` is reached, before `delete`,
/// `expire` and `boxes` (which read or change what pending envelopes would change), in `close()`,
/// and on the server's timers (`CoAPServerCore.flushIdle`, `flushDelay`). Opening the store
/// moves whatever the log still holds (a run that was killed) into the tables first. `list`
/// shows pending envelopes like stored ones. A WAL commit per envelope wrote four pages (about
/// 17 KB in eight `pwrite`s) and now and then a checkpoint with an fsync, several times what the
/// rest of a POST costs; one appended record costs one `write` of the envelope plus 33 bytes.
///
/// Durability: an envelope `put` returned for is in the operating system's page cache (the log,
/// or SQLite's WAL), so it survives the process ending or being killed (SIGTERM, SIGKILL, a
/// crash). Neither the log nor the commits are fsynced: after a power cut the envelopes of the
/// last moments may be lost (the database is in WAL mode with `synchronous = NORMAL`,
/// https://sqlite.org/wal.html, https://sqlite.org/pragma.html#pragma_synchronous).
/// It holds an exclusive lock, so a second server cannot open the same file (nor its log).
///
/// Time is passed in (`now`, Unix seconds), so expiry is testable without waiting. Every method
/// may be called from any thread: one lock serializes them.
public final class MessageStore: @unchecked Sendable {
    public let path: String
    public let limits: MessageStoreLimits

    /// `PRAGMA application_id`: "Stto", so that another program's database is recognized.
    static let applicationID: Int32 = 0x5374_746F
    static let schemaVersion: Int32 = 1

    private let lock = NSLock()
    private var db: OpaquePointer?
    private var statements: [String: OpaquePointer] = [:]
    /// `list`'s statement, also in `statements` (which finalizes it).
    private var listStatement: OpaquePointer?
    private var counts = MessageStoreCounts()
    /// Every box of the `box` table, so that a request for a known box reads nothing.
    private var knownBoxes: Set<String> = []
    /// Envelopes per box, filled on first use and kept in step with every write: a POST then
    /// costs no SQL query at all (Benchmarks/coap-bench.sh measures it).
    private var boxCounts: [String: Int] = [:]
    /// The complete envelope lists of recently listed small boxes: `list` of such a box runs no
    /// SQL. Kept in step with `put`, `delete` and `expire`.
    private var boxCache = BoxCache()

    /// Where envelopes wait for the next flush: `path` + "-pending".
    public let logPath: String
    /// Pending envelopes (and their bytes) at which `put` flushes first.
    public static let maximumPendingEnvelopes = 1_024
    public static let maximumPendingBytes = 4 << 20
    private var logFD: Int32 = -1
    /// The log's length: the header and the records of `pending`.
    private var logLength = 0
    /// Envelopes in the log and not yet in the tables, in id order.
    private var pending: [PendingLog.Record] = []
    private var pendingBytes = 0
    /// Pending envelopes per box, so that `list` of another box does not look through them.
    private var pendingPerBox: [String: Int] = [:]
    /// The id the next envelope gets: above every id the tables or the log ever held.
    private var nextID: Int64 = 1

    /// Opens (or creates) the store at `path`.
    public init(path: String, limits: MessageStoreLimits = MessageStoreLimits()) throws {
        self.path = path
        self.limits = limits
        self.logPath = path + "-pending"
        // Envelopes are nobody else's business: a new store file is readable by its owner only
        // (SQLite gives the -wal file the same mode).
        if !FileManager.default.fileExists(atPath: path) {
            _ = FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600])
        }
        var handle: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let opened = sqlite3_open_v2(path, &handle, flags, nil)
        guard opened == SQLITE_OK, let handle else {
            let reason = handle.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(opened))
            sqlite3_close_v2(handle)
            throw MessageStoreError.cannotOpen(path: path, reason: reason)
        }
        db = handle
        do {
            try setUp()
            try openLog()
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    /// Moves the pending envelopes into the tables, then frees the statements, the log and the
    /// connection; later calls throw `.closed`. Should the move fail, the envelopes stay in the
    /// log for the next opening.
    public func close() {
        lock.lock()
        defer { lock.unlock() }
        if db != nil, logFD >= 0 { _ = try? flushPending() }
        if logFD >= 0 { Glibc.close(logFD) }
        logFD = -1
        for statement in statements.values { sqlite3_finalize(statement) }
        statements.removeAll()
        listStatement = nil
        boxCache.removeAll()
        if let db { sqlite3_close_v2(db) }
        db = nil
    }

    private func setUp() throws {
        // Exclusive locking before the first WAL access: no shared-memory file, and no other
        // process can open the store behind this one's counters (https://sqlite.org/wal.html#noshm).
        try execute("PRAGMA locking_mode = EXCLUSIVE", "set the locking mode")
        sqlite3_busy_timeout(db, 200)
        let applicationID = try integer("PRAGMA application_id", "read the application id")
        let version = try integer("PRAGMA user_version", "read the layout version")
        let tables = try integer("SELECT count(*) FROM sqlite_master", "list the tables")
        if applicationID != Int64(Self.applicationID) && (applicationID != 0 || tables != 0) {
            throw MessageStoreError.foreignDatabase(path: path)
        }
        guard version <= Int64(Self.schemaVersion) else {
            throw MessageStoreError.newerSchema(path: path, version: Int32(clamping: version), supported: Self.schemaVersion)
        }
        try execute("PRAGMA journal_mode = WAL", "switch to WAL mode")
        try execute("PRAGMA synchronous = NORMAL", "set synchronous mode")
        try execute("""
            BEGIN IMMEDIATE;
            CREATE TABLE IF NOT EXISTS envelope (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                box TEXT NOT NULL,
                body BLOB NOT NULL,
                stored_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL);
            CREATE INDEX IF NOT EXISTS envelope_by_box ON envelope (box, id);
            CREATE INDEX IF NOT EXISTS envelope_by_expiry ON envelope (expires_at);
            CREATE TABLE IF NOT EXISTS box (name TEXT PRIMARY KEY, touched_at INTEGER NOT NULL) WITHOUT ROWID;
            PRAGMA application_id = \(Self.applicationID);
            PRAGMA user_version = \(Self.schemaVersion);
            COMMIT;
            """, "create the tables")
        counts.envelopes = Int(try integer("SELECT count(*) FROM envelope", "count envelopes"))
        counts.bytes = Int(try integer("SELECT coalesce(sum(length(body)), 0) FROM envelope", "count bytes"))
        try loadKnownBoxes()
    }

    private func loadKnownBoxes() throws {
        let select = try statement("SELECT name FROM box")
        var names: Set<String> = []
        while true {
            let step = sqlite3_step(select)
            if step == SQLITE_DONE { break }
            guard step == SQLITE_ROW else { throw failure("list boxes", step) }
            names.insert(String(cString: sqlite3_column_text(select, 0)))
        }
        sqlite3_reset(select)
        knownBoxes = names
        counts.boxes = names.count
    }

    // MARK: - The API

    /// Stores `envelope` in `box` for `timeToLive` seconds (the default when nil).
    /// - Returns: the new envelope's id.
    /// - Throws: `MessageStoreError.refused` when a limit stops it (counted), or a store fault.
    public func put(box: String, envelope: [UInt8], timeToLive: Int64? = nil, now: Int64) throws -> Int64 {
        lock.lock()
        defer { lock.unlock() }
        guard db != nil else { throw MessageStoreError.closed }
        if let problem = MailboxName.problem(Array(box.utf8)) { throw MessageStoreError.badBoxName(problem) }
        let ttl = timeToLive ?? limits.defaultTimeToLive
        if let refusal = try check(box: box, envelope: envelope, ttl: ttl) {
            counts.refusals[refusal.kind, default: 0] += 1
            throw MessageStoreError.refused(refusal)
        }
        if pending.count >= Self.maximumPendingEnvelopes || pendingBytes + envelope.count > Self.maximumPendingBytes {
            try flushPending()
        }
        let record = PendingLog.Record(id: nextID, box: box, envelope: envelope, storedAt: now, expiresAt: now &+ ttl)
        try appendToLog(PendingLog.encode(record))
        nextID += 1
        pending.append(record)
        pendingBytes += envelope.count
        pendingPerBox[box, default: 0] += 1
        if knownBoxes.insert(box).inserted { counts.boxes += 1 }
        counts.envelopes += 1
        counts.bytes += envelope.count
        counts.stored += 1
        boxCounts[box, default: 0] += 1
        boxCache.appended(box: box, envelope: StoredEnvelope(id: record.id, envelope: envelope, storedAt: now, expiresAt: record.expiresAt))
        return record.id
    }

    /// Moves the pending envelopes into the tables now (one transaction) and empties the log.
    public func flush() throws {
        lock.lock()
        defer { lock.unlock() }
        guard db != nil else { throw MessageStoreError.closed }
        try flushPending()
    }

    /// Whether envelopes wait in the log for a flush.
    public var hasPending: Bool {
        lock.lock()
        defer { lock.unlock() }
        return !pending.isEmpty
    }

    private func check(box: String, envelope: [UInt8], ttl: Int64) throws -> MessageStoreRefusal? {
        if envelope.isEmpty { return .emptyEnvelope }
        // The pending log takes envelopes up to 16 MiB, whatever the configuration says.
        let largest = min(limits.maximumEnvelopeBytes, PendingLog.maximumBodyLength - PendingLog.fixedBodyLength - 255)
        if envelope.count > largest {
            return .envelopeTooLarge(bytes: envelope.count, limit: largest)
        }
        if ttl < 1 || ttl > limits.maximumTimeToLive { return .badTimeToLive(seconds: ttl, limit: limits.maximumTimeToLive) }
        if counts.bytes + envelope.count > limits.maximumTotalBytes { return .storeFull(limit: limits.maximumTotalBytes) }
        let waiting = try waitingCount(box)
        if waiting >= limits.maximumEnvelopesPerBox { return .boxFull(box: box, limit: limits.maximumEnvelopesPerBox) }
        if !knownBoxes.contains(box), counts.boxes >= limits.maximumBoxes {
            return .tooManyBoxes(limit: limits.maximumBoxes)
        }
        return nil
    }

    /// The envelopes in `box`, pending ones included (kept in `boxCounts` after the first query).
    private func waitingCount(_ box: String) throws -> Int {
        if let cached = boxCounts[box] { return cached }
        let inBox = try statement("SELECT count(*) FROM envelope WHERE box = ?1")
        bind(inBox, 1, box)
        let waiting = Int(try stepInteger(inBox, "count a box's envelopes"))
        boxCounts[box] = waiting
        return waiting
    }

    /// Records that `box` exists (a receiver asked for it), so that it is a resource after a
    /// restart even while empty. False, and nothing written, when the box limit is reached.
    @discardableResult
    public func register(box: String, now: Int64) throws -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard db != nil else { throw MessageStoreError.closed }
        if knownBoxes.contains(box) { return true }
        guard counts.boxes < limits.maximumBoxes else {
            counts.refusals[.tooManyBoxes, default: 0] += 1
            return false
        }
        try touchBox(box, now: now)
        knownBoxes.insert(box)
        counts.boxes += 1
        return true
    }

    /// Up to `limit` envelopes of `box` with an id above `after`, oldest first; expired ones are
    /// left out even before `expire` removes them.
    public func list(box: String, after: Int64 = 0, limit: Int, now: Int64) throws -> [StoredEnvelope] {
        lock.lock()
        defer { lock.unlock() }
        guard db != nil else { throw MessageStoreError.closed }
        if let cached = boxCache.list(box: box, after: after, limit: limit, now: now) { return cached }
        if boxCache.admits(count: try waitingCount(box)) {
            // A small box: read whole, answered from what was read, cached when its bytes fit.
            let every = try everyEnvelope(of: box)
            boxCache.fill(box: box, envelopes: every)
            return BoxCache.select(every, after: after, limit: limit, now: now)
        }
        // Kept apart from `statements`: looking it up there hashes its text on every GET.
        let select: OpaquePointer
        if let prepared = listStatement {
            sqlite3_reset(prepared)
            select = prepared
        } else {
            select = try statement("""
                SELECT id, body, stored_at, expires_at FROM envelope
                WHERE box = ?1 AND id > ?2 AND expires_at > ?3 ORDER BY id LIMIT ?4
                """)
            listStatement = select
        }
        bind(select, 1, box)
        sqlite3_bind_int64(select, 2, after)
        sqlite3_bind_int64(select, 3, now)
        sqlite3_bind_int64(select, 4, Int64(max(0, limit)))
        var found: [StoredEnvelope] = []
        try readEnvelopes(select, into: &found)
        // Pending envelopes have higher ids than every stored one: they come after.
        if pendingPerBox[box] != nil {
            for record in pending where found.count < limit {
                guard record.box == box, record.id > after, record.expiresAt > now else { continue }
                found.append(StoredEnvelope(id: record.id, envelope: record.envelope, storedAt: record.storedAt, expiresAt: record.expiresAt))
            }
        }
        return found
    }

    /// Every envelope of `box`, expired ones too, in id order: the tables' rows, then the
    /// pending ones (what `BoxCache.fill` takes).
    private func everyEnvelope(of box: String) throws -> [StoredEnvelope] {
        let select = try statement("SELECT id, body, stored_at, expires_at FROM envelope WHERE box = ?1 ORDER BY id")
        bind(select, 1, box)
        var found: [StoredEnvelope] = []
        try readEnvelopes(select, into: &found)
        sqlite3_reset(select)
        if pendingPerBox[box] != nil {
            for record in pending where record.box == box {
                found.append(StoredEnvelope(id: record.id, envelope: record.envelope, storedAt: record.storedAt, expiresAt: record.expiresAt))
            }
        }
        return found
    }

    /// Steps `select` (columns id, body, stored_at, expires_at) to its end.
    private func readEnvelopes(_ select: OpaquePointer, into found: inout [StoredEnvelope]) throws {
        while true {
            let step = sqlite3_step(select)
            if step == SQLITE_DONE { break }
            guard step == SQLITE_ROW else { throw failure("read a box", step) }
            let length = Int(sqlite3_column_bytes(select, 1))
            let body: [UInt8] = length > 0 && sqlite3_column_blob(select, 1) != nil
                ? Array(UnsafeRawBufferPointer(start: sqlite3_column_blob(select, 1), count: length)) : []
            found.append(StoredEnvelope(id: sqlite3_column_int64(select, 0), envelope: body,
                                        storedAt: sqlite3_column_int64(select, 2), expiresAt: sqlite3_column_int64(select, 3)))
        }
    }

    /// Removes the envelopes of `box` with these ids; ids of other boxes or unknown ids are
    /// ignored (a receiver may acknowledge twice). Returns how many went.
    @discardableResult
    public func delete(box: String, ids: [Int64]) throws -> Int {
        lock.lock()
        defer { lock.unlock() }
        guard db != nil else { throw MessageStoreError.closed }
        guard !ids.isEmpty else { return 0 }
        try flushPending()
        let delete = try statement("DELETE FROM envelope WHERE box = ?1 AND id = ?2 RETURNING length(body)")
        try execute("BEGIN IMMEDIATE", "begin")
        var removed = 0
        var bytes = 0
        let unique = Set(ids)
        do {
            for id in unique {
                bind(delete, 1, box)
                sqlite3_bind_int64(delete, 2, id)
                while true {
                    let step = sqlite3_step(delete)
                    if step == SQLITE_DONE { break }
                    guard step == SQLITE_ROW else { throw failure("delete an envelope", step) }
                    removed += 1
                    bytes += Int(sqlite3_column_int64(delete, 0))
                }
                sqlite3_reset(delete)
            }
            try execute("COMMIT", "commit")
        } catch {
            sqlite3_reset(delete)
            _ = try? execute("ROLLBACK", "roll back")
            throw error
        }
        counts.envelopes -= removed
        counts.bytes -= bytes
        counts.deleted += removed
        if let cached = boxCounts[box] { boxCounts[box] = max(0, cached - removed) }
        boxCache.deleted(box: box, ids: unique)
        return removed
    }

    /// Removes every envelope whose time to live is over, and boxes that have been empty and
    /// untouched for the longest time to live. Returns how many envelopes went.
    @discardableResult
    public func expire(now: Int64) throws -> Int {
        lock.lock()
        defer { lock.unlock() }
        guard db != nil else { throw MessageStoreError.closed }
        try flushPending()
        let expire = try statement("DELETE FROM envelope WHERE expires_at <= ?1 RETURNING length(body)")
        let forget = try statement("""
            DELETE FROM box WHERE touched_at <= ?1 AND NOT EXISTS (SELECT 1 FROM envelope WHERE envelope.box = box.name)
            """)
        try execute("BEGIN IMMEDIATE", "begin")
        var removed = 0
        var bytes = 0
        do {
            sqlite3_bind_int64(expire, 1, now)
            while true {
                let step = sqlite3_step(expire)
                if step == SQLITE_DONE { break }
                guard step == SQLITE_ROW else { throw failure("expire envelopes", step) }
                removed += 1
                bytes += Int(sqlite3_column_int64(expire, 0))
            }
            sqlite3_reset(expire)
            sqlite3_bind_int64(forget, 1, now &- limits.maximumTimeToLive)
            try stepDone(forget, "forget idle boxes")
            try execute("COMMIT", "commit")
        } catch {
            sqlite3_reset(expire)
            _ = try? execute("ROLLBACK", "roll back")
            throw error
        }
        counts.envelopes -= removed
        counts.bytes -= bytes
        counts.expired += removed
        boxCounts.removeAll()
        if removed > 0 { boxCache.removeAll() }
        try loadKnownBoxes()
        return removed
    }

    /// Every box the store knows, in name order.
    public func boxes() throws -> [String] {
        lock.lock()
        defer { lock.unlock() }
        guard db != nil else { throw MessageStoreError.closed }
        try flushPending()
        let select = try statement("SELECT name FROM box ORDER BY name")
        var names: [String] = []
        while true {
            let step = sqlite3_step(select)
            if step == SQLITE_DONE { break }
            guard step == SQLITE_ROW else { throw failure("list boxes", step) }
            names.append(String(cString: sqlite3_column_text(select, 0)))
        }
        return names
    }

    /// Whether a box exists (it holds or held envelopes, or a receiver asked for it).
    public func contains(box: String) throws -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard db != nil else { throw MessageStoreError.closed }
        return knownBoxes.contains(box)
    }

    public func currentCounts() -> MessageStoreCounts {
        lock.lock()
        defer { lock.unlock() }
        var current = counts
        current.pending = pending.count
        current.cacheHits = boxCache.hits
        current.cacheMisses = boxCache.misses
        current.cacheEvictions = boxCache.evictions
        return current
    }

    // MARK: - The pending log (called with the lock held)

    /// Opens (or creates) the log, moves what it holds into the tables and empties it; sets
    /// `nextID` above every id ever given.
    private func openLog() throws {
        let fd = Glibc.open(logPath, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw logFailure("open", errno) }
        logFD = fd
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        // Flushes keep the log below this; more can only be another file or damage.
        let readable = Self.maximumPendingBytes + PendingLog.maximumBodyLength
            + Self.maximumPendingEnvelopes * (PendingLog.recordHeaderLength + PendingLog.fixedBodyLength + 255)
        while bytes.count < readable {
            let count = chunk.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress, $0.count, off_t(bytes.count)) }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { throw logFailure("read", errno) }
            if count == 0 { break }
            bytes.append(contentsOf: chunk[0..<min(count, readable - bytes.count)])
        }
        var status = stat()
        let fileSize = fstat(fd, &status) == 0 ? Int(status.st_size) : bytes.count
        var highest = try integer("SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'envelope'), 0), coalesce((SELECT max(id) FROM envelope), 0))",
                                  "read the last envelope id")
        if bytes.count >= PendingLog.header.count {
            guard Array(bytes.prefix(PendingLog.header.count)) == PendingLog.header else {
                throw MessageStoreError.foreignLog(path: logPath)
            }
            let (records, validLength, _) = PendingLog.decode(bytes)
            counts.discardedLogBytes = fileSize - validLength
            // A record whose id the tables already reached was moved before the last run ended
            // (between its commit and the emptying of the log); it may even be deleted since.
            pending = records.filter { $0.id > highest }
            counts.recovered = pending.count
            if let last = pending.last { highest = last.id }
        } else if !bytes.isEmpty && !PendingLog.header.starts(with: bytes) {
            throw MessageStoreError.foreignLog(path: logPath)
        } else {
            // Empty, or a header cut short when the log was made: start it again.
            counts.discardedLogBytes = fileSize
        }
        nextID = highest + 1
        if !pending.isEmpty {
            try flushPending()
            counts.envelopes = Int(try integer("SELECT count(*) FROM envelope", "count envelopes"))
            counts.bytes = Int(try integer("SELECT coalesce(sum(length(body)), 0) FROM envelope", "count bytes"))
            try loadKnownBoxes()
        } else {
            try resetLog()
        }
    }

    /// One transaction with every pending envelope (and the rows of boxes new among them); then
    /// the log is emptied. On failure nothing changes and the envelopes stay pending.
    private func flushPending() throws {
        guard !pending.isEmpty else { return }
        let insert = try statement("INSERT INTO envelope (id, box, body, stored_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)")
        let addBox = try statement("INSERT INTO box (name, touched_at) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING")
        try execute("BEGIN IMMEDIATE", "begin")
        do {
            var seen: Set<String> = []
            for record in pending {
                if seen.insert(record.box).inserted {
                    sqlite3_reset(addBox)
                    bind(addBox, 1, record.box)
                    sqlite3_bind_int64(addBox, 2, record.storedAt)
                    try stepDone(addBox, "record a box")
                }
                sqlite3_reset(insert)
                sqlite3_bind_int64(insert, 1, record.id)
                bind(insert, 2, record.box)
                bind(insert, 3, record.envelope)
                sqlite3_bind_int64(insert, 4, record.storedAt)
                sqlite3_bind_int64(insert, 5, record.expiresAt)
                try stepDone(insert, "store an envelope")
            }
            try execute("COMMIT", "commit")
        } catch {
            _ = try? execute("ROLLBACK", "roll back")
            throw error
        }
        pending.removeAll(keepingCapacity: true)
        pendingBytes = 0
        pendingPerBox.removeAll(keepingCapacity: true)
        counts.flushes += 1
        // Should this fail, the records stay in the log; the next opening skips them (their ids
        // are not above the tables' highest).
        try resetLog()
    }

    /// Cuts the log back to its header (writing the header into a new or cut-short log).
    private func resetLog() throws {
        guard Glibc.ftruncate(logFD, 0) == 0 else { throw logFailure("empty", errno) }
        logLength = 0
        try appendToLog(PendingLog.header)
    }

    /// Appends `bytes` with one write (more only when the kernel takes part of them); a failed
    /// append is cut off again, so that the records after it stay readable.
    private func appendToLog(_ bytes: [UInt8]) throws {
        var written = 0
        var failure: Int32 = 0
        bytes.withUnsafeBytes { raw in
            var attempts = 0
            while written < raw.count && attempts < 64 {
                attempts += 1
                let count = Glibc.write(logFD, raw.baseAddress! + written, raw.count - written)
                if count < 0 {
                    if errno == EINTR { continue }
                    failure = errno
                    return
                }
                written += count
            }
            if written < raw.count { failure = EIO }
        }
        if failure != 0 {
            if written > 0 { _ = Glibc.ftruncate(logFD, off_t(logLength)) }
            throw logFailure("append to", failure)
        }
        logLength += bytes.count
    }

    private func logFailure(_ operation: String, _ code: Int32) -> MessageStoreError {
        .log(path: logPath, operation: operation, reason: String(cString: strerror(code)))
    }

    // MARK: - SQLite helpers (called with the lock held)

    /// Inserts or refreshes the box row.
    private func touchBox(_ box: String, now: Int64) throws {
        let write = try statement("INSERT INTO box (name, touched_at) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET touched_at = excluded.touched_at")
        bind(write, 1, box)
        sqlite3_bind_int64(write, 2, now)
        try stepDone(write, "record a box")
    }

    /// A prepared statement, kept for reuse; reset and unbound before it is handed out.
    private func statement(_ sql: String) throws -> OpaquePointer {
        if let cached = statements[sql] {
            sqlite3_reset(cached)
            sqlite3_clear_bindings(cached)
            return cached
        }
        var prepared: OpaquePointer?
        let status = sqlite3_prepare_v2(db, sql, -1, &prepared, nil)
        guard status == SQLITE_OK, let prepared else { throw failure("prepare a statement", status) }
        statements[sql] = prepared
        return prepared
    }

    private func bind(_ statement: OpaquePointer, _ index: Int32, _ text: String) {
        sqlite3_bind_text(statement, index, text, -1, sotto_sqlite_transient())
    }

    private func bind(_ statement: OpaquePointer, _ index: Int32, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { raw in
            // A zero-length blob still has to be a blob, not NULL (the column is NOT NULL).
            _ = sqlite3_bind_blob(statement, index, raw.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32(raw.count),
                                  sotto_sqlite_transient())
        }
    }

    private func stepDone(_ statement: OpaquePointer, _ operation: String) throws {
        let status = sqlite3_step(statement)
        sqlite3_reset(statement)
        guard status == SQLITE_DONE || status == SQLITE_ROW else { throw failure(operation, status) }
    }

    private func stepInteger(_ statement: OpaquePointer, _ operation: String) throws -> Int64 {
        defer { sqlite3_reset(statement) }
        let status = sqlite3_step(statement)
        guard status == SQLITE_ROW else { throw failure(operation, status) }
        return sqlite3_column_int64(statement, 0)
    }

    private func integer(_ sql: String, _ operation: String) throws -> Int64 {
        var prepared: OpaquePointer?
        let status = sqlite3_prepare_v2(db, sql, -1, &prepared, nil)
        guard status == SQLITE_OK, let prepared else {
            sqlite3_finalize(prepared)
            throw failure(operation, status)
        }
        defer { sqlite3_finalize(prepared) }
        let step = sqlite3_step(prepared)
        guard step == SQLITE_ROW else { throw failure(operation, step) }
        return sqlite3_column_int64(prepared, 0)
    }

    private func execute(_ sql: String, _ operation: String) throws {
        var message: UnsafeMutablePointer<CChar>?
        let status = sqlite3_exec(db, sql, nil, nil, &message)
        defer { sqlite3_free(message) }
        guard status == SQLITE_OK else {
            throw failure(operation, status, message: message.map { String(cString: $0) })
        }
    }

    private func failure(_ operation: String, _ status: Int32, message: String? = nil) -> MessageStoreError {
        switch status & 0xFF {
        case SQLITE_NOTADB, SQLITE_CORRUPT: return .notADatabase(path: path)
        case SQLITE_BUSY, SQLITE_LOCKED: return .inUse(path: path)
        case SQLITE_CANTOPEN: return .cannotOpen(path: path, reason: message ?? String(cString: sqlite3_errmsg(db)))
        default:
            return .sqlite(path: path, operation: operation, code: status,
                           message: message ?? (db.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(status))))
        }
    }
}

/// The pending log's format, without I/O: a file header, then one record per stored envelope.
///
///     header:  "SttoLog" 0x01                                          (8 bytes)
///     record:  length (4) | CRC-32 of the body (4) | body (length bytes)
///     body:    id (8) | stored_at (8) | expires_at (8) | box length (1) | box | envelope
///
/// Integers are big-endian; the CRC is CRC-32/ISO-HDLC (the one of zlib and Ethernet). Records are
/// only ever appended, so a crash can only leave a cut-short record at the end.
enum PendingLog {
    static let header: [UInt8] = Array("SttoLog".utf8) + [1]
    /// id, stored_at, expires_at and the box length.
    static let fixedBodyLength = 25
    static let recordHeaderLength = 8
    /// The largest body read back: a 255-byte box name and a 16 MiB envelope. Larger lengths can
    /// only be damage.
    static let maximumBodyLength = fixedBodyLength + 255 + (16 << 20)

    struct Record: Equatable {
        var id: Int64
        var box: String
        var envelope: [UInt8]
        var storedAt: Int64
        var expiresAt: Int64
    }

    /// Why reading stopped before the end of the log.
    enum Problem: Equatable, CustomStringConvertible {
        /// Fewer bytes left than the record header or the length it gives.
        case truncated(offset: Int)
        case badLength(offset: Int, length: Int)
        case badChecksum(offset: Int)
        /// The body's fields do not make an envelope (box name, id or envelope).
        case badRecord(offset: Int, reason: String)

        var description: String {
            switch self {
            case .truncated(let offset): return "record at byte \(offset) is cut short"
            case .badLength(let offset, let length): return "record at byte \(offset) claims \(length) bytes"
            case .badChecksum(let offset): return "record at byte \(offset) fails its checksum"
            case .badRecord(let offset, let reason): return "record at byte \(offset): \(reason)"
            }
        }
    }

    static func encode(_ record: Record) -> [UInt8] {
        let box = Array(record.box.utf8)
        precondition(!box.isEmpty && box.count <= 255, "box names are checked before they reach the log")
        let bodyLength = fixedBodyLength + box.count + record.envelope.count
        var out: [UInt8] = []
        out.reserveCapacity(recordHeaderLength + bodyLength)
        appendBigEndian(UInt32(bodyLength), to: &out)
        appendBigEndian(UInt32(0), to: &out)  // the CRC, once the body is there
        appendBigEndian(UInt64(bitPattern: record.id), to: &out)
        appendBigEndian(UInt64(bitPattern: record.storedAt), to: &out)
        appendBigEndian(UInt64(bitPattern: record.expiresAt), to: &out)
        out.append(UInt8(box.count))
        out.append(contentsOf: box)
        out.append(contentsOf: record.envelope)
        let crc = CRC32.checksum(out[recordHeaderLength...])
        for index in 0..<4 { out[4 + index] = UInt8(truncatingIfNeeded: crc >> (24 - 8 * index)) }
        return out
    }

    /// The intact records after the header, in order, and how many bytes they take (header
    /// included); reading stops at the first record that is cut short or damaged.
    static func decode(_ bytes: [UInt8]) -> (records: [Record], validLength: Int, problem: Problem?) {
        var records: [Record] = []
        var offset = header.count
        while offset < bytes.count {
            guard bytes.count - offset >= recordHeaderLength else { return (records, offset, .truncated(offset: offset)) }
            let length = Int(readBigEndian(bytes, offset, 4))
            guard length >= fixedBodyLength + 2, length <= maximumBodyLength else {
                return (records, offset, .badLength(offset: offset, length: length))
            }
            let start = offset + recordHeaderLength
            guard bytes.count - start >= length else { return (records, offset, .truncated(offset: offset)) }
            let body = bytes[start..<start + length]
            guard CRC32.checksum(body) == UInt32(readBigEndian(bytes, offset + 4, 4)) else {
                return (records, offset, .badChecksum(offset: offset))
            }
            let id = Int64(bitPattern: readBigEndian(bytes, start, 8))
            let storedAt = Int64(bitPattern: readBigEndian(bytes, start + 8, 8))
            let expiresAt = Int64(bitPattern: readBigEndian(bytes, start + 16, 8))
            let boxLength = Int(bytes[start + 24])
            let boxStart = start + fixedBodyLength
            guard id > 0 else { return (records, offset, .badRecord(offset: offset, reason: "id \(id)")) }
            guard boxLength >= 1, length - fixedBodyLength - boxLength >= 1 else {
                return (records, offset, .badRecord(offset: offset, reason: "box of \(boxLength) bytes in a \(length)-byte record"))
            }
            let boxBytes = Array(bytes[boxStart..<boxStart + boxLength])
            if let problem = MailboxName.problem(boxBytes) {
                return (records, offset, .badRecord(offset: offset, reason: "bad box name: \(problem)"))
            }
            if let last = records.last, id <= last.id {
                return (records, offset, .badRecord(offset: offset, reason: "id \(id) after id \(last.id)"))
            }
            records.append(Record(id: id, box: String(decoding: boxBytes, as: UTF8.self),
                                  envelope: Array(bytes[boxStart + boxLength..<start + length]),
                                  storedAt: storedAt, expiresAt: expiresAt))
            offset = start + length
        }
        return (records, offset, nil)
    }

    private static func appendBigEndian<T: FixedWidthInteger>(_ value: T, to out: inout [UInt8]) {
        for shift in stride(from: T.bitWidth - 8, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: value >> shift)) }
    }

    private static func readBigEndian(_ bytes: [UInt8], _ offset: Int, _ count: Int) -> UInt64 {
        var value: UInt64 = 0
        for index in offset..<offset + count { value = value << 8 | UInt64(bytes[index]) }
        return value
    }
}

/// CRC-32/ISO-HDLC (reflected polynomial 0xEDB88320, initial and final XOR 0xFFFFFFFF).
enum CRC32 {
    private static let table: [UInt32] = (0..<256).map { index in
        var value = UInt32(index)
        for _ in 0..<8 { value = value & 1 == 1 ? (value >> 1) ^ 0xEDB8_8320 : value >> 1 }
        return value
    }

    static func checksum<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        var crc: UInt32 = 0xFFFF_FFFF
        table.withUnsafeBufferPointer { table in
            for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        }
        return crc ^ 0xFFFF_FFFF
    }
}
