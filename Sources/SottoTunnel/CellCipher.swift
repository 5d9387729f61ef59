// Sealing and opening fixed-size tunnel cells (docs/protocol.md "Cells").
//
// Every cell is ChaChaPoly(k, n, ad = empty, plaintext of cell_size - 16 bytes), where n is the
// cell's counter in its direction with the Noise nonce encoding. Both ends apply Noise REKEY()
// after every `rekeyAfter` cells (protocol.md "Parameters"); it is never signalled, so the two
// ends must count identically. The counter is not reset by a rekey (Noise §11.3).

import Crypto

/// Encrypts the cells one side sends. Its description never shows the key.
public struct CellSealer: Sendable, CustomStringConvertible {
    private var schedule: CellKeySchedule

    /// - Parameters:
    ///   - key: the 32-byte key from the handshake's Split().
    ///   - counter: the first cell's nonce; 0 for a new tunnel.
    ///   - rekeyAfter: cells per key; must be at least 1 (protocol: 65,536).
    public init(key: [UInt8], cellSize: Int, counter: UInt64 = 0,
                rekeyAfter: UInt64 = TunnelConstants.rekeyInterval) throws {
        schedule = try CellKeySchedule(key: key, cellSize: cellSize, counter: counter, rekeyAfter: rekeyAfter)
    }

    init(cipherKey: CipherKey, cellSize: Int, rekeyAfter: UInt64) throws {
        schedule = try CellKeySchedule(cipherKey: cipherKey, cellSize: cellSize, counter: 0, rekeyAfter: rekeyAfter)
    }

    /// The agreed cell size: every sealed cell is exactly this many bytes.
    public var cellSize: Int { schedule.cellSize }
    /// The nonce of the next cell; equals the number of cells sealed so far.
    public var counter: UInt64 { schedule.counter }
    /// A rekey happens each time `counter` reaches a multiple of this.
    public var rekeyAfter: UInt64 { schedule.rekeyAfter }
    /// The plaintext size of one cell: `cellSize - 16`.
    public var plaintextSize: Int { schedule.plaintextSize }

    public var description: String { "CellSealer(\(schedule))" }

    /// Seals exactly `cellSize - 16` plaintext bytes into one `cellSize`-byte cell.
    public mutating func seal(_ plaintext: [UInt8]) throws -> [UInt8] {
        var cell = [UInt8]()
        cell.reserveCapacity(cellSize)
        try seal(plaintext, appendingTo: &cell)
        return cell
    }

    /// Seals one cell and appends it to `output`, e.g. a send buffer holding several cells.
    public mutating func seal(_ plaintext: [UInt8], appendingTo output: inout [UInt8]) throws {
        guard plaintext.count == plaintextSize else {
            throw TunnelCryptoError.wrongCellLength(expected: plaintextSize, actual: plaintext.count)
        }
        try schedule.checkNonceAvailable()
        NoiseAEAD.seal(key: schedule.key, counter: schedule.counter, ad: [], plaintext: plaintext, appendingTo: &output)
        schedule.advance()
    }
}

/// Decrypts the cells the peer sends. The first failure poisons it: every later call throws,
/// because after a forged, replayed, reordered or truncated cell the byte stream is no longer
/// trustworthy (protocol.md "Cells"). Its description never shows the key.
public struct CellOpener: Sendable, CustomStringConvertible {
    private var schedule: CellKeySchedule
    /// True after any failed `open`; the tunnel must be closed.
    public private(set) var isPoisoned = false

    public init(key: [UInt8], cellSize: Int, counter: UInt64 = 0,
                rekeyAfter: UInt64 = TunnelConstants.rekeyInterval) throws {
        schedule = try CellKeySchedule(key: key, cellSize: cellSize, counter: counter, rekeyAfter: rekeyAfter)
    }

    init(cipherKey: CipherKey, cellSize: Int, rekeyAfter: UInt64) throws {
        schedule = try CellKeySchedule(cipherKey: cipherKey, cellSize: cellSize, counter: 0, rekeyAfter: rekeyAfter)
    }

    public var cellSize: Int { schedule.cellSize }
    /// The nonce the next cell must have been sealed with.
    public var counter: UInt64 { schedule.counter }
    public var rekeyAfter: UInt64 { schedule.rekeyAfter }
    public var plaintextSize: Int { schedule.plaintextSize }

    public var description: String { "CellOpener(\(schedule), poisoned: \(isPoisoned))" }

    /// Opens one `cellSize`-byte cell and returns its `cellSize - 16` plaintext bytes.
    public mutating func open(_ wire: [UInt8]) throws -> [UInt8] {
        var plaintext = [UInt8]()
        plaintext.reserveCapacity(plaintextSize)
        try open(wire, appendingTo: &plaintext)
        return plaintext
    }

    /// Opens one cell and appends its plaintext to `output`. On failure `output` is unchanged.
    public mutating func open(_ wire: [UInt8], appendingTo output: inout [UInt8]) throws {
        guard !isPoisoned else { throw TunnelCryptoError.cellAuthenticationFailed }
        // Every failure below ends the tunnel, so the opener is poisoned first.
        isPoisoned = true
        guard wire.count == cellSize else {
            throw TunnelCryptoError.wrongCellLength(expected: cellSize, actual: wire.count)
        }
        try schedule.checkNonceAvailable()
        guard NoiseAEAD.open(key: schedule.key, counter: schedule.counter, ad: [], ciphertext: wire, appendingTo: &output) else {
            throw TunnelCryptoError.cellAuthenticationFailed
        }
        isPoisoned = false
        schedule.advance()
    }
}

/// The state both cell directions share: key, counter and the rekey rule.
struct CellKeySchedule: Sendable, CustomStringConvertible {
    let cellSize: Int
    let rekeyAfter: UInt64
    private(set) var counter: UInt64
    private(set) var key: CipherKey

    init(key: [UInt8], cellSize: Int, counter: UInt64, rekeyAfter: UInt64) throws {
        guard key.count == TunnelConstants.keySize else {
            throw TunnelCryptoError.badKeyLength(what: "cell key", expected: TunnelConstants.keySize, actual: key.count)
        }
        try self.init(cipherKey: CipherKey(key), cellSize: cellSize, counter: counter, rekeyAfter: rekeyAfter)
    }

    init(cipherKey: CipherKey, cellSize: Int, counter: UInt64, rekeyAfter: UInt64) throws {
        guard TunnelConstants.cellSizeRange.contains(cellSize) else {
            throw TunnelCryptoError.cellSizeOutOfRange(cellSize)
        }
        guard rekeyAfter > 0 else { throw TunnelCryptoError.invalidRekeyInterval }
        self.key = cipherKey
        self.cellSize = cellSize
        self.counter = counter
        self.rekeyAfter = rekeyAfter
    }

    var plaintextSize: Int { cellSize - TunnelConstants.tagSize }

    var description: String { "cellSize: \(cellSize), counter: \(counter), rekeyAfter: \(rekeyAfter)" }

    /// Noise reserves nonce 2^64-1 for REKEY (§5.1).
    func checkNonceAvailable() throws {
        guard counter != UInt64.max else { throw TunnelCryptoError.cellCounterExhausted }
    }

    /// After each cell: next nonce, and REKEY() whenever the count reaches a multiple of `rekeyAfter`.
    mutating func advance() {
        counter += 1
        if counter % rekeyAfter == 0 { key = NoiseAEAD.rekey(key) }
    }
}
