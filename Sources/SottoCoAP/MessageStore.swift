import CSQLite
import Foundation

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

    public var refused: Int { refusals.values.reduce(0, +) }
}

/// Mailboxes of opaque envelopes in an SQLite file (the system libsqlite3).
///
/// The database is in WAL mode with `synchronous = NORMAL`: a stored envelope survives the
/// process ending or being killed; after a power cut the last commits may be lost
/// (https://sqlite.org/wal.html, https://sqlite.org/pragma.html#pragma_synchronous).
/// It holds an exclusive lock, so a second server cannot open the same file.
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
    private var counts = MessageStoreCounts()
    /// Every box of the `box` table, so that a request for a known box reads nothing.
    private var knownBoxes: Set<String> = []
    /// Envelopes per box, filled on first use and kept in step with every write: a POST then
    /// costs one INSERT (the figure the benchmark in docs/coap-server.md depends on).
    private var boxCounts: [String: Int] = [:]

    /// Opens (or creates) the store at `path`.
    public init(path: String, limits: MessageStoreLimits = MessageStoreLimits()) throws {
        self.path = path
        self.limits = limits
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
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    /// Frees the statements and the connection; later calls throw `.closed`.
    public func close() {
        lock.lock()
        defer { lock.unlock() }
        for statement in statements.values { sqlite3_finalize(statement) }
        statements.removeAll()
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
        let ttl = timeToLive ?? limits.defaultTimeToLive
        if let refusal = try check(box: box, envelope: envelope, ttl: ttl) {
            counts.refusals[refusal.kind, default: 0] += 1
            throw MessageStoreError.refused(refusal)
        }
        let isNewBox = !knownBoxes.contains(box)
        // A known box needs one INSERT, atomic on its own; a new one also its box row.
        if isNewBox { try execute("BEGIN IMMEDIATE", "begin") }
        do {
            if isNewBox { try touchBox(box, now: now) }
            let insert = try statement("INSERT INTO envelope (box, body, stored_at, expires_at) VALUES (?1, ?2, ?3, ?4)")
            bind(insert, 1, box)
            bind(insert, 2, envelope)
            sqlite3_bind_int64(insert, 3, now)
            sqlite3_bind_int64(insert, 4, now &+ ttl)
            try stepDone(insert, "store an envelope")
            let id = sqlite3_last_insert_rowid(db)
            if isNewBox {
                try execute("COMMIT", "commit")
                knownBoxes.insert(box)
                counts.boxes += 1
            }
            counts.envelopes += 1
            counts.bytes += envelope.count
            counts.stored += 1
            boxCounts[box, default: 0] += 1
            return id
        } catch {
            if isNewBox { _ = try? execute("ROLLBACK", "roll back") }
            throw error
        }
    }

    private func check(box: String, envelope: [UInt8], ttl: Int64) throws -> MessageStoreRefusal? {
        if envelope.isEmpty { return .emptyEnvelope }
        if envelope.count > limits.maximumEnvelopeBytes {
            return .envelopeTooLarge(bytes: envelope.count, limit: limits.maximumEnvelopeBytes)
        }
        if ttl < 1 || ttl > limits.maximumTimeToLive { return .badTimeToLive(seconds: ttl, limit: limits.maximumTimeToLive) }
        if counts.bytes + envelope.count > limits.maximumTotalBytes { return .storeFull(limit: limits.maximumTotalBytes) }
        let waiting: Int
        if let cached = boxCounts[box] {
            waiting = cached
        } else {
            let inBox = try statement("SELECT count(*) FROM envelope WHERE box = ?1")
            bind(inBox, 1, box)
            waiting = Int(try stepInteger(inBox, "count a box's envelopes"))
            boxCounts[box] = waiting
        }
        if waiting >= limits.maximumEnvelopesPerBox { return .boxFull(box: box, limit: limits.maximumEnvelopesPerBox) }
        if !knownBoxes.contains(box), counts.boxes >= limits.maximumBoxes {
            return .tooManyBoxes(limit: limits.maximumBoxes)
        }
        return nil
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
        let select = try statement("""
            SELECT id, body, stored_at, expires_at FROM envelope
            WHERE box = ?1 AND id > ?2 AND expires_at > ?3 ORDER BY id LIMIT ?4
            """)
        bind(select, 1, box)
        sqlite3_bind_int64(select, 2, after)
        sqlite3_bind_int64(select, 3, now)
        sqlite3_bind_int64(select, 4, Int64(max(0, limit)))
        var found: [StoredEnvelope] = []
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
        return found
    }

    /// Removes the envelopes of `box` with these ids; ids of other boxes or unknown ids are
    /// ignored (a receiver may acknowledge twice). Returns how many went.
    @discardableResult
    public func delete(box: String, ids: [Int64]) throws -> Int {
        lock.lock()
        defer { lock.unlock() }
        guard db != nil else { throw MessageStoreError.closed }
        guard !ids.isEmpty else { return 0 }
        let delete = try statement("DELETE FROM envelope WHERE box = ?1 AND id = ?2 RETURNING length(body)")
        try execute("BEGIN IMMEDIATE", "begin")
        var removed = 0
        var bytes = 0
        do {
            for id in Set(ids) {
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
        return removed
    }

    /// Removes every envelope whose time to live is over, and boxes that have been empty and
    /// untouched for the longest time to live. Returns how many envelopes went.
    @discardableResult
    public func expire(now: Int64) throws -> Int {
        lock.lock()
        defer { lock.unlock() }
        guard db != nil else { throw MessageStoreError.closed }
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
        try loadKnownBoxes()
        return removed
    }

    /// Every box the store knows, in name order.
    public func boxes() throws -> [String] {
        lock.lock()
        defer { lock.unlock() }
        guard db != nil else { throw MessageStoreError.closed }
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
        return counts
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
