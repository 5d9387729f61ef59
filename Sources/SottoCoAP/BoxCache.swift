/// Every envelope of recently listed small boxes, in memory, so that a GET of such a box runs no
/// SQL (Benchmarks/coap-bench.sh: the SELECT was about a quarter of the server's own CPU per GET).
///
/// A plain value with no I/O: `MessageStore` fills it from its tables and keeps it in step with
/// every write under its lock (`appended`, `deleted`, `removeAll` after expiry). An entry holds a
/// box's *complete* list of envelopes in id order, expired ones included until `expire` removes
/// them (`list` leaves those out), so every answer is the one the tables would give.
///
/// Bounds: a box with more than `maximumEnvelopesPerBox` envelopes or more than
/// `maximumBytesPerBox` bytes is not cached (and leaves the cache when it grows past them); all
/// entries together hold at most `maximumBytes` (envelope bytes plus `entryOverhead` per
/// envelope and `boxOverhead` per box); beyond that the least recently listed boxes are
/// evicted, counted in `evictions`.
struct BoxCache {
    struct Entry {
        var envelopes: [StoredEnvelope]
        var bytes: Int
        var lastUse: UInt64
    }

    /// What an envelope costs besides its bytes (the struct, the array slot, the allocation).
    static let entryOverhead = 64
    /// What a cached box costs even when empty (its name, the dictionary slot).
    static let boxOverhead = 128

    let maximumEnvelopesPerBox: Int
    let maximumBytesPerBox: Int
    let maximumBytes: Int

    private(set) var entries: [String: Entry] = [:]
    /// Bytes of all entries, as `cost` counts them.
    private(set) var bytes = 0
    private(set) var hits = 0
    private(set) var misses = 0
    private(set) var evictions = 0
    private var clock: UInt64 = 0

    init(maximumEnvelopesPerBox: Int = 64, maximumBytesPerBox: Int = 1 << 20, maximumBytes: Int = 16 << 20) {
        self.maximumEnvelopesPerBox = maximumEnvelopesPerBox
        self.maximumBytesPerBox = maximumBytesPerBox
        self.maximumBytes = maximumBytes
    }

    static func cost(_ envelope: StoredEnvelope) -> Int { envelope.envelope.count + entryOverhead }

    /// Whether a box of `count` envelopes may be cached (so that filling it is worth a query).
    func admits(count: Int) -> Bool { count <= maximumEnvelopesPerBox }

    /// Up to `limit` envelopes of `box` with an id above `after` that have not expired at `now`,
    /// oldest first; nil when the box is not cached (counted as a miss).
    mutating func list(box: String, after: Int64, limit: Int, now: Int64) -> [StoredEnvelope]? {
        guard var entry = entries[box] else {
            misses += 1
            return nil
        }
        hits += 1
        clock &+= 1
        entry.lastUse = clock
        entries[box] = entry
        return Self.select(entry.envelopes, after: after, limit: limit, now: now)
    }

    /// Up to `limit` of `envelopes` (in id order) with an id above `after` that have not expired at `now`.
    static func select(_ envelopes: [StoredEnvelope], after: Int64, limit: Int, now: Int64) -> [StoredEnvelope] {
        var found: [StoredEnvelope] = []
        for envelope in envelopes where found.count < limit {
            if envelope.id > after && envelope.expiresAt > now { found.append(envelope) }
        }
        return found
    }

    /// Caches `envelopes`, the complete list of `box` in id order, when it is within the bounds.
    mutating func fill(box: String, envelopes: [StoredEnvelope]) {
        remove(box)
        let cost = envelopes.reduce(Self.boxOverhead + box.utf8.count) { $0 + Self.cost($1) }
        guard envelopes.count <= maximumEnvelopesPerBox, cost <= maximumBytesPerBox, cost <= maximumBytes else { return }
        clock &+= 1
        entries[box] = Entry(envelopes: envelopes, bytes: cost, lastUse: clock)
        bytes += cost
        evict(keeping: box)
    }

    /// A new envelope of `box` (its id above every other): appended when the box is cached.
    mutating func appended(box: String, envelope: StoredEnvelope) {
        guard var entry = entries[box] else { return }
        let cost = Self.cost(envelope)
        guard entry.envelopes.count < maximumEnvelopesPerBox, entry.bytes + cost <= maximumBytesPerBox,
              entry.envelopes.last.map({ $0.id < envelope.id }) ?? true else {
            remove(box)
            return
        }
        entry.envelopes.append(envelope)
        entry.bytes += cost
        entries[box] = entry
        bytes += cost
        evict(keeping: box)
    }

    /// Envelopes of `box` that the store removed.
    mutating func deleted(box: String, ids: Set<Int64>) {
        guard var entry = entries[box], !ids.isEmpty else { return }
        var freed = 0
        entry.envelopes.removeAll { envelope in
            guard ids.contains(envelope.id) else { return false }
            freed += Self.cost(envelope)
            return true
        }
        entry.bytes -= freed
        entries[box] = entry
        bytes -= freed
    }

    mutating func remove(_ box: String) {
        guard let entry = entries.removeValue(forKey: box) else { return }
        bytes -= entry.bytes
    }

    mutating func removeAll() {
        entries.removeAll()
        bytes = 0
    }

    /// Evicts the least recently used boxes other than `box` until the total fits.
    private mutating func evict(keeping box: String) {
        while bytes > maximumBytes {
            guard let victim = entries.filter({ $0.key != box }).min(by: { $0.value.lastUse < $1.value.lastUse })?.key else {
                remove(box)
                evictions += 1
                return
            }
            remove(victim)
            evictions += 1
        }
    }
}
