// The Sotto tunnel handshake (docs/protocol.md "Handshake"): Noise_NKpsk0_25519_ChaChaPoly_SHA256,
// prologue "sotto tunnel v1" || cell_size (u16 BE), two messages of exactly cell_size bytes each,
// carrying a padded payload of version, flags, cell size and options. Pure: bytes in, values out.

import Crypto

// MARK: - Constants

public enum TunnelConstants {
    /// protocol.md "Parameters": default and allowed `cell_size`.
    public static let defaultCellSize = 514
    public static let cellSizeRange = 128...16384
    /// ChaChaPoly tag appended to every cell and handshake payload.
    public static let tagSize = 16
    /// X25519 keys and PSKs are 32 bytes.
    public static let keySize = 32
    /// Cells per key in each direction before Noise REKEY().
    public static let rekeyInterval: UInt64 = 65_536
    public static let protocolVersion: UInt8 = 1
    public static let noisePattern = NoisePattern.NKpsk0
    /// Bytes before the options in the handshake payload: version, flags, cell size, options length.
    public static let handshakePayloadHeaderSize = 6

    /// "sotto tunnel v1" followed by the cell size as a big-endian u16: binding the cell size into
    /// the handshake hash means two ends that disagree on it can never complete the handshake.
    public static func prologue(cellSize: Int) -> [UInt8] {
        Array("sotto tunnel v1".utf8) + [UInt8(truncatingIfNeeded: cellSize >> 8), UInt8(truncatingIfNeeded: cellSize)]
    }

    /// The handshake payload size: a message is 32 bytes of `e`, the payload, and a 16-byte tag.
    public static func handshakePayloadSize(cellSize: Int) -> Int {
        cellSize - keySize - tagSize
    }

    /// The most option bytes a handshake message can carry at this cell size.
    public static func maxOptionsLength(cellSize: Int) -> Int {
        handshakePayloadSize(cellSize: cellSize) - handshakePayloadHeaderSize
    }
}

// MARK: - Errors

public enum TunnelCryptoError: Error, CustomStringConvertible, Equatable, Sendable {
    /// A handshake message was not exactly `cell_size` bytes.
    case wrongMessageLength(expected: Int, actual: Int)
    /// A handshake message did not decrypt: wrong PSK, wrong server key, tampering or garbage.
    case handshakeAuthenticationFailed
    /// The peer speaks another protocol version.
    case unsupportedVersion(UInt8)
    /// The peer's handshake payload announces a different cell size.
    case cellSizeMismatch(expected: Int, announced: Int)
    /// The handshake payload decrypted but its fields are inconsistent.
    case malformedHandshakePayload(String)
    /// A key or PSK has the wrong number of bytes.
    case badKeyLength(what: String, expected: Int, actual: Int)
    /// A cell did not decrypt (forged, replayed, reordered or truncated), or the opener already failed.
    case cellAuthenticationFailed
    /// A cell plaintext or wire cell has the wrong size for this tunnel.
    case wrongCellLength(expected: Int, actual: Int)
    /// The configured cell size is outside 128...16384.
    case cellSizeOutOfRange(Int)
    /// Options do not fit in one handshake message at this cell size.
    case optionsTooLong(length: Int, maximum: Int)
    /// `rekeyAfter` was 0.
    case invalidRekeyInterval
    /// 2^64-1 cells in one direction: the tunnel must be re-established.
    case cellCounterExhausted
    /// A handshake step was called twice, out of order, or after a failure.
    case handshakeOutOfOrder(String)

    public var description: String {
        switch self {
        case let .wrongMessageLength(expected, actual):
            return "tunnel handshake message is \(actual) bytes, expected exactly \(expected) (the cell_size): "
                + "both ends must use the same cell_size, or the peer is not a sotto gateway"
        case .handshakeAuthenticationFailed:
            return "tunnel handshake did not authenticate: the peer uses a different PSK or server key "
                + "(check the peer's public_key and psk), the message was tampered with, or it is not a sotto gateway"
        case let .unsupportedVersion(version):
            return "tunnel peer speaks protocol version \(version), this gateway speaks \(TunnelConstants.protocolVersion)"
        case let .cellSizeMismatch(expected, announced):
            return "tunnel peer announced cell_size \(announced), this end is configured for \(expected)"
        case let .malformedHandshakePayload(detail):
            return "tunnel handshake payload is malformed: \(detail)"
        case let .badKeyLength(what, expected, actual):
            return "\(what) is \(actual) bytes, expected \(expected)"
        case .cellAuthenticationFailed:
            return "tunnel cell failed authentication (forged, replayed, reordered or truncated); the tunnel must be closed"
        case let .wrongCellLength(expected, actual):
            return "tunnel cell is \(actual) bytes, expected \(expected)"
        case let .cellSizeOutOfRange(size):
            return "cell_size \(size) is outside \(TunnelConstants.cellSizeRange.lowerBound)...\(TunnelConstants.cellSizeRange.upperBound)"
        case let .optionsTooLong(length, maximum):
            return "tunnel handshake options are \(length) bytes, at most \(maximum) fit at this cell_size"
        case .invalidRekeyInterval:
            return "rekey interval must be at least 1 cell"
        case .cellCounterExhausted:
            return "tunnel cell counter exhausted (2^64-1 cells); re-establish the tunnel"
        case let .handshakeOutOfOrder(detail):
            return "tunnel handshake step out of order: \(detail)"
        }
    }
}

// MARK: - Keys

/// An X25519 static key pair (the exit gateway's identity). Its description shows only the public key.
public struct StaticKeyPair: Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    public let privateKey: [UInt8]
    public let publicKey: [UInt8]

    public static func generate() -> StaticKeyPair {
        let key = Curve25519.KeyAgreement.PrivateKey()
        return StaticKeyPair(privateKey: Array(key.rawRepresentation), publicKey: Array(key.publicKey.rawRepresentation))
    }

    /// Derives the public key from a 32-byte private key (any 32 bytes are a valid X25519 scalar).
    public init(privateKey: [UInt8]) throws {
        guard privateKey.count == TunnelConstants.keySize else {
            throw TunnelCryptoError.badKeyLength(what: "static private key", expected: TunnelConstants.keySize, actual: privateKey.count)
        }
        let key = try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: privateKey)
        self.init(privateKey: privateKey, publicKey: Array(key.publicKey.rawRepresentation))
    }

    private init(privateKey: [UInt8], publicKey: [UInt8]) {
        self.privateKey = privateKey
        self.publicKey = publicKey
    }

    public var description: String {
        "StaticKeyPair(publicKey: \(hex(publicKey)), privateKey: <redacted>)"
    }

    public var debugDescription: String { description }

    private func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef")
        return String(bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 0x0f)]] })
    }
}

public enum TunnelKeys {
    /// A fresh random 32-byte PSK for a service.
    public static func generatePSK() -> [UInt8] {
        SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
    }
}

// MARK: - Handshake payload (protocol.md "Handshake")

enum HandshakePayload {
    static func encode(cellSize: Int, options: [UInt8]) -> [UInt8] {
        var payload = [UInt8]()
        payload.reserveCapacity(TunnelConstants.handshakePayloadSize(cellSize: cellSize))
        payload.append(TunnelConstants.protocolVersion)
        payload.append(0)  // flags
        payload.append(UInt8(truncatingIfNeeded: cellSize >> 8))
        payload.append(UInt8(truncatingIfNeeded: cellSize))
        payload.append(UInt8(truncatingIfNeeded: options.count >> 8))
        payload.append(UInt8(truncatingIfNeeded: options.count))
        payload += options
        payload += [UInt8](repeating: 0, count: TunnelConstants.handshakePayloadSize(cellSize: cellSize) - payload.count)
        return payload
    }

    /// Returns the options. Flags and padding are authenticated but ignored: version 1 defines
    /// no flags, and ignoring them lets a later minor revision use them.
    static func decode(_ payload: [UInt8], cellSize: Int) throws -> [UInt8] {
        guard payload.count >= TunnelConstants.handshakePayloadHeaderSize else {
            throw TunnelCryptoError.malformedHandshakePayload("\(payload.count) bytes, shorter than its 6-byte header")
        }
        guard payload[0] == TunnelConstants.protocolVersion else {
            throw TunnelCryptoError.unsupportedVersion(payload[0])
        }
        let announced = Int(payload[2]) << 8 | Int(payload[3])
        guard announced == cellSize else {
            throw TunnelCryptoError.cellSizeMismatch(expected: cellSize, announced: announced)
        }
        let optionsLength = Int(payload[4]) << 8 | Int(payload[5])
        let available = payload.count - TunnelConstants.handshakePayloadHeaderSize
        guard optionsLength <= available else {
            throw TunnelCryptoError.malformedHandshakePayload("options length \(optionsLength) exceeds the \(available) bytes available")
        }
        let start = TunnelConstants.handshakePayloadHeaderSize
        return Array(payload[start..<start + optionsLength])
    }
}

enum HandshakeRules {
    static func validate(cellSize: Int, psk: [UInt8], options: [UInt8]?) throws {
        guard TunnelConstants.cellSizeRange.contains(cellSize) else {
            throw TunnelCryptoError.cellSizeOutOfRange(cellSize)
        }
        guard psk.count == TunnelConstants.keySize else {
            throw TunnelCryptoError.badKeyLength(what: "PSK", expected: TunnelConstants.keySize, actual: psk.count)
        }
        if let options {
            try validate(options: options, cellSize: cellSize)
        }
    }

    static func validate(options: [UInt8], cellSize: Int) throws {
        let maximum = TunnelConstants.maxOptionsLength(cellSize: cellSize)
        guard options.count <= maximum else {
            throw TunnelCryptoError.optionsTooLong(length: options.count, maximum: maximum)
        }
    }

    /// Any Noise failure while reading a peer's message means it did not authenticate;
    /// the details (which tag, which key) are deliberately not distinguished.
    static func readFailure(_ error: Error) -> TunnelCryptoError {
        if let error = error as? TunnelCryptoError { return error }
        return .handshakeAuthenticationFailed
    }

    static func established(
        from handshake: NoiseHandshakeState, initiator: Bool, cellSize: Int, peerOptions: [UInt8]
    ) throws -> TunnelEstablished {
        // protocol.md: the first cipher carries client → server cells, the second server → client.
        let (first, second) = handshake.split()
        let (send, receive) = initiator ? (first, second) : (second, first)
        return TunnelEstablished(
            sealer: try CellSealer(cipherKey: send.cipherKey!, cellSize: cellSize, rekeyAfter: TunnelConstants.rekeyInterval),
            opener: try CellOpener(cipherKey: receive.cipherKey!, cellSize: cellSize, rekeyAfter: TunnelConstants.rekeyInterval),
            handshakeHash: handshake.handshakeHash,
            peerOptions: peerOptions
        )
    }
}

// MARK: - Result

/// A finished handshake: the cell ciphers for both directions.
public struct TunnelEstablished: Sendable {
    public var sealer: CellSealer
    public var opener: CellOpener
    /// Equal on both ends; usable for channel binding.
    public let handshakeHash: [UInt8]
    /// The options the peer put in its handshake payload.
    public let peerOptions: [UInt8]
}

// MARK: - Initiator (entry gateway)

/// The client side: knows the server's static public key and the service PSK.
public struct TunnelInitiator {
    private enum Stage { case start, sentFirst, finished }

    public let cellSize: Int
    private let options: [UInt8]
    private var handshake: NoiseHandshakeState
    private var stage = Stage.start

    public init(serverPublicKey: [UInt8], psk: [UInt8], cellSize: Int, options: [UInt8] = []) throws {
        try self.init(serverPublicKey: serverPublicKey, psk: psk, cellSize: cellSize, options: options, ephemeralPrivateKey: nil)
    }

    /// With a fixed ephemeral key, for tests only.
    init(serverPublicKey: [UInt8], psk: [UInt8], cellSize: Int, options: [UInt8], ephemeralPrivateKey: [UInt8]?) throws {
        try HandshakeRules.validate(cellSize: cellSize, psk: psk, options: options)
        guard serverPublicKey.count == TunnelConstants.keySize else {
            throw TunnelCryptoError.badKeyLength(what: "server public key", expected: TunnelConstants.keySize, actual: serverPublicKey.count)
        }
        self.cellSize = cellSize
        self.options = options
        self.handshake = try NoiseHandshakeState(
            pattern: TunnelConstants.noisePattern, initiator: true,
            prologue: TunnelConstants.prologue(cellSize: cellSize),
            remoteStatic: serverPublicKey, psks: [psk], localEphemeral: ephemeralPrivateKey)
    }

    /// Message 1 (`psk, e, es` + payload): exactly `cellSize` bytes.
    public mutating func makeFirstMessage() throws -> [UInt8] {
        guard stage == .start else {
            throw TunnelCryptoError.handshakeOutOfOrder("the first message was already made")
        }
        stage = .finished  // until it succeeds; a failed attempt cannot be repeated
        let message = try handshake.writeMessage(payload: HandshakePayload.encode(cellSize: cellSize, options: options))
        assert(message.count == cellSize)
        stage = .sentFirst
        return message
    }

    /// Reads message 2 (`e, ee` + payload) and returns the established tunnel.
    public mutating func readResponse(_ message: [UInt8]) throws -> TunnelEstablished {
        guard stage == .sentFirst else {
            throw TunnelCryptoError.handshakeOutOfOrder(
                stage == .start ? "readResponse before makeFirstMessage" : "the handshake already finished or failed")
        }
        stage = .finished
        guard message.count == cellSize else {
            throw TunnelCryptoError.wrongMessageLength(expected: cellSize, actual: message.count)
        }
        do {
            let payload = try handshake.readMessage(message)
            let peerOptions = try HandshakePayload.decode(payload, cellSize: cellSize)
            return try HandshakeRules.established(from: handshake, initiator: true, cellSize: cellSize, peerOptions: peerOptions)
        } catch {
            throw HandshakeRules.readFailure(error)
        }
    }
}

// MARK: - Responder (exit gateway)

/// The server side: holds the static private key and the service PSK.
public struct TunnelResponder {
    private enum Stage { case start, readFirst, finished }

    public let cellSize: Int
    private var handshake: NoiseHandshakeState
    private var clientOptions: [UInt8] = []
    private var stage = Stage.start

    public init(staticPrivateKey: [UInt8], psk: [UInt8], cellSize: Int) throws {
        try self.init(staticPrivateKey: staticPrivateKey, psk: psk, cellSize: cellSize, ephemeralPrivateKey: nil)
    }

    /// With a fixed ephemeral key, for tests only.
    init(staticPrivateKey: [UInt8], psk: [UInt8], cellSize: Int, ephemeralPrivateKey: [UInt8]?) throws {
        try HandshakeRules.validate(cellSize: cellSize, psk: psk, options: nil)
        guard staticPrivateKey.count == TunnelConstants.keySize else {
            throw TunnelCryptoError.badKeyLength(what: "static private key", expected: TunnelConstants.keySize, actual: staticPrivateKey.count)
        }
        self.cellSize = cellSize
        self.handshake = try NoiseHandshakeState(
            pattern: TunnelConstants.noisePattern, initiator: false,
            prologue: TunnelConstants.prologue(cellSize: cellSize),
            localStatic: staticPrivateKey, psks: [psk], localEphemeral: ephemeralPrivateKey)
    }

    /// Reads message 1 and returns the client's options. On any error the caller sends nothing
    /// and closes after a random delay (protocol.md "Handshake"); this responder is then spent.
    public mutating func readFirstMessage(_ message: [UInt8]) throws -> [UInt8] {
        guard stage == .start else {
            throw TunnelCryptoError.handshakeOutOfOrder("the first message was already read")
        }
        stage = .finished
        guard message.count == cellSize else {
            throw TunnelCryptoError.wrongMessageLength(expected: cellSize, actual: message.count)
        }
        do {
            let payload = try handshake.readMessage(message)
            clientOptions = try HandshakePayload.decode(payload, cellSize: cellSize)
        } catch {
            throw HandshakeRules.readFailure(error)
        }
        stage = .readFirst
        return clientOptions
    }

    /// Message 2: exactly `cellSize` bytes, and the established tunnel.
    public mutating func makeResponse(options: [UInt8] = []) throws -> ([UInt8], TunnelEstablished) {
        guard stage == .readFirst else {
            throw TunnelCryptoError.handshakeOutOfOrder(
                stage == .start ? "makeResponse before readFirstMessage" : "the handshake already finished or failed")
        }
        try HandshakeRules.validate(options: options, cellSize: cellSize)
        stage = .finished
        let message = try handshake.writeMessage(payload: HandshakePayload.encode(cellSize: cellSize, options: options))
        assert(message.count == cellSize)
        let established = try HandshakeRules.established(from: handshake, initiator: false, cellSize: cellSize, peerOptions: clientOptions)
        return (message, established)
    }
}
