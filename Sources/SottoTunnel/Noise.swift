// A generic Noise Protocol Framework implementation (spec revision 34,
// https://noiseprotocol.org/noise.html) for the one cipher suite Sotto uses:
// 25519_ChaChaPoly_SHA256. Pure: bytes in, bytes out, no I/O and no global state.
//
// Section numbers in comments refer to that spec.

import Crypto
import Foundation

// MARK: - Errors

/// Why a Noise operation failed. Every case means the handshake or transport session is
/// no longer trustworthy; callers should drop it, not retry.
public enum NoiseError: Error, CustomStringConvertible, Equatable, Sendable {
    /// An AEAD tag did not verify: the message was tampered with, or the peer holds
    /// different keys or a different PSK (§5.1 DecryptWithAd).
    case decryptFailed
    /// A handshake message is shorter than its tokens need, or one of its fields
    /// has the wrong size.
    case wrongMessageLength(expectedAtLeast: Int, actual: Int)
    /// A message exceeds the Noise limit of 65535 bytes (§3).
    case messageTooLong(length: Int)
    /// The 64-bit nonce reached 2^64-1, which Noise reserves (§5.1).
    case nonceExhausted
    /// `writeMessage` / `readMessage` was called when it was not this side's turn, or
    /// after the handshake finished or failed.
    case handshakeOutOfOrder(String)
    /// The pattern needs a key (local static, remote static or PSK) that was not given.
    case missingKey(String)
    /// A key has the wrong number of bytes.
    case badKeyLength(what: String, expected: Int, actual: Int)
    /// The pattern name is not one this implementation knows.
    case unsupportedPattern(String)
    /// A Diffie-Hellman result was all zeros: the peer sent a low-order public key (§12.1).
    case invalidPublicKey

    public var description: String {
        switch self {
        case .decryptFailed:
            return "noise: message authentication failed (tampered message, or the peer uses a different key or PSK)"
        case let .wrongMessageLength(expected, actual):
            return "noise: message is \(actual) bytes, needs at least \(expected)"
        case let .messageTooLong(length):
            return "noise: message of \(length) bytes exceeds the 65535-byte Noise limit"
        case .nonceExhausted:
            return "noise: nonce exhausted (2^64-1 messages under one key); start a new session"
        case let .handshakeOutOfOrder(detail):
            return "noise: handshake call out of order: \(detail)"
        case let .missingKey(detail):
            return "noise: missing key: \(detail)"
        case let .badKeyLength(what, expected, actual):
            return "noise: \(what) is \(actual) bytes, expected \(expected)"
        case let .unsupportedPattern(name):
            return "noise: unsupported handshake pattern \"\(name)\" (supported: NN, NK, XX, IK with pskN modifiers)"
        case .invalidPublicKey:
            return "noise: peer public key is a low-order point (Diffie-Hellman result is all zeros)"
        }
    }
}

// MARK: - Constants (§4 crypto functions, 25519_ChaChaPoly_SHA256)

enum NoiseConstants {
    static let dhLength = 32
    static let hashLength = 32
    static let keyLength = 32
    static let tagLength = 16
    static let pskLength = 32
    static let maxMessageLength = 65535
}

// MARK: - Handshake patterns (§7, §9)

/// A Noise handshake pattern: pre-messages and message token lists.
public struct NoisePattern: Sendable, Equatable, CustomStringConvertible {
    /// The tokens of §7.1 plus `psk` (§9).
    public enum Token: String, Sendable, Equatable {
        case e, s, ee, es, se, ss, psk
    }

    /// The pattern name, e.g. `NKpsk0`.
    public let name: String
    /// Tokens the initiator's pre-message makes known (only `e`/`s`).
    public let initiatorPreMessage: [Token]
    /// Tokens the responder's pre-message makes known (only `e`/`s`).
    public let responderPreMessage: [Token]
    /// Handshake messages; even indices are sent by the initiator, odd by the responder.
    public let messages: [[Token]]

    public var description: String { name }

    /// The full protocol name, e.g. `Noise_NKpsk0_25519_ChaChaPoly_SHA256` (§8).
    public var protocolName: String { "Noise_\(name)_25519_ChaChaPoly_SHA256" }

    /// Whether any message carries a `psk` token, which changes `e` processing (§9.2).
    public var usesPSK: Bool { messages.contains { $0.contains(.psk) } }

    /// How many PSKs the pattern consumes, in order.
    public var pskCount: Int { messages.reduce(0) { $0 + $1.filter { $0 == .psk }.count } }

    // The fundamental patterns this implementation supports (§7.4, §7.5).
    private static let basePatterns: [String: (initiatorPre: [Token], responderPre: [Token], messages: [[Token]])] = [
        "NN": ([], [], [[.e], [.e, .ee]]),
        "NK": ([], [.s], [[.e, .es], [.e, .ee]]),
        "XX": ([], [], [[.e], [.e, .ee, .s, .es], [.s, .se]]),
        "IK": ([], [.s], [[.e, .es, .s, .ss], [.e, .ee, .se]]),
    ]

    public static let NN = NoisePattern(validName: "NN")
    public static let NK = NoisePattern(validName: "NK")
    public static let XX = NoisePattern(validName: "XX")
    public static let IK = NoisePattern(validName: "IK")
    public static let NNpsk0 = NoisePattern(validName: "NNpsk0")
    public static let NKpsk0 = NoisePattern(validName: "NKpsk0")
    public static let NKpsk2 = NoisePattern(validName: "NKpsk2")
    public static let XXpsk3 = NoisePattern(validName: "XXpsk3")
    public static let IKpsk2 = NoisePattern(validName: "IKpsk2")

    private init(validName: String) {
        // Only called with the literal names above, which parse.
        try! self.init(name: validName)
    }

    /// Parses a pattern name: a base pattern (NN, NK, XX, IK) followed by optional
    /// `pskN` modifiers separated by `+` (§8, §9.2), e.g. `XXpsk3` or `NNpsk0+psk2`.
    public init(name: String) throws {
        let baseName = String(name.prefix(2))
        guard let base = Self.basePatterns[baseName] else {
            throw NoiseError.unsupportedPattern(name)
        }
        var messages = base.messages
        let modifierText = name.dropFirst(2)
        if !modifierText.isEmpty {
            for modifier in modifierText.split(separator: "+", omittingEmptySubsequences: false) {
                let digits = modifier.dropFirst(3)
                guard modifier.hasPrefix("psk"), !digits.isEmpty,
                      digits.allSatisfy({ ("0"..."9").contains($0) }),
                      let position = Int(digits), position <= messages.count
                else {
                    throw NoiseError.unsupportedPattern(name)
                }
                // §9.2: psk0 goes at the start of the first message, pskN at the end of message N.
                if position == 0 {
                    messages[0].insert(.psk, at: 0)
                } else {
                    messages[position - 1].append(.psk)
                }
            }
        }
        self.name = name
        self.initiatorPreMessage = base.initiatorPre
        self.responderPreMessage = base.responderPre
        self.messages = messages
    }

    /// Parses a full protocol name such as `Noise_IKpsk2_25519_ChaChaPoly_SHA256`.
    public init(protocolName: String) throws {
        let prefix = "Noise_", suffix = "_25519_ChaChaPoly_SHA256"
        guard protocolName.hasPrefix(prefix), protocolName.hasSuffix(suffix),
              protocolName.count > prefix.count + suffix.count
        else {
            throw NoiseError.unsupportedPattern(protocolName)
        }
        try self.init(name: String(protocolName.dropFirst(prefix.count).dropLast(suffix.count)))
    }
}

// MARK: - Primitives (§4)

/// A 32-byte ChaChaPoly key. `SymmetricKey` is an immutable value (its storage is never mutated
/// after creation), but swift-crypto 3.x does not declare it Sendable; this wrapper does.
struct CipherKey: @unchecked Sendable {
    let symmetricKey: SymmetricKey

    init<Bytes: ContiguousBytes>(_ bytes: Bytes) {
        symmetricKey = SymmetricKey(data: bytes)
    }
}

/// ChaChaPoly with the Noise nonce encoding (§5.1, §12.3): 4 zero bytes, then the 64-bit
/// counter little-endian. Shared by `NoiseCipherState` and the cell cipher.
enum NoiseAEAD {
    static func nonce(_ counter: UInt64) -> ChaChaPoly.Nonce {
        // 4 zero bytes, then the counter little-endian; built on the stack (hot path).
        var bytes: (UInt32, UInt32, UInt32) = (
            0, UInt32(truncatingIfNeeded: counter).littleEndian, UInt32(truncatingIfNeeded: counter >> 32).littleEndian)
        return withUnsafeBytes(of: &bytes) { raw in
            // 12 bytes is always a valid ChaChaPoly nonce.
            try! ChaChaPoly.Nonce(data: raw)
        }
    }

    /// ENCRYPT(k, n, ad, plaintext): ciphertext followed by the 16-byte tag, appended to `output`.
    static func seal(key: CipherKey, counter: UInt64, ad: [UInt8], plaintext: [UInt8], appendingTo output: inout [UInt8]) {
        // Sealing with a 32-byte key and a 12-byte nonce cannot fail.
        let box = try! ChaChaPoly.seal(plaintext, using: key.symmetricKey, nonce: nonce(counter), authenticating: ad)
        // `combined` is nonce || ciphertext || tag; skip the nonce, one memcpy (appending the
        // `Data` slice itself goes through its generic iterator).
        box.combined.withUnsafeBytes { raw in
            output.append(contentsOf: UnsafeRawBufferPointer(rebasing: raw.dropFirst(12)).assumingMemoryBound(to: UInt8.self))
        }
    }

    static func seal(key: CipherKey, counter: UInt64, ad: [UInt8], plaintext: [UInt8]) -> [UInt8] {
        var output = [UInt8]()
        output.reserveCapacity(plaintext.count + NoiseConstants.tagLength)
        seal(key: key, counter: counter, ad: ad, plaintext: plaintext, appendingTo: &output)
        return output
    }

    /// DECRYPT(k, n, ad, ciphertext) appended to `output`; returns false if the tag does not verify.
    static func open<Ciphertext: Collection>(
        key: CipherKey, counter: UInt64, ad: [UInt8], ciphertext: Ciphertext, appendingTo output: inout [UInt8]
    ) -> Bool where Ciphertext.Element == UInt8 {
        guard ciphertext.count >= NoiseConstants.tagLength else { return false }
        var combined = Data(capacity: 12 + ciphertext.count)
        nonce(counter).withUnsafeBytes { combined.append(contentsOf: $0) }
        // Contiguous input (the cells' arrays) is appended with one memcpy.
        if ciphertext.withContiguousStorageIfAvailable({ combined.append($0) }) == nil {
            combined.append(contentsOf: ciphertext)
        }
        guard let box = try? ChaChaPoly.SealedBox(combined: combined),
              let plaintext = try? ChaChaPoly.open(box, using: key.symmetricKey, authenticating: ad)
        else {
            return false
        }
        plaintext.withUnsafeBytes { output.append(contentsOf: $0.assumingMemoryBound(to: UInt8.self)) }
        return true
    }

    /// REKEY(k) = ENCRYPT(k, 2^64-1, empty, 32 zero bytes)[0..<32] (§4.2).
    static func rekey(_ key: CipherKey) -> CipherKey {
        let sealed = seal(key: key, counter: UInt64.max, ad: [], plaintext: [UInt8](repeating: 0, count: 32))
        return CipherKey(sealed[0..<32])
    }
}

enum NoiseHash {
    /// HASH(a || b) with SHA-256.
    static func hash(_ parts: [UInt8]...) -> [UInt8] {
        var hasher = SHA256()
        for part in parts { hasher.update(data: part) }
        return Array(hasher.finalize())
    }

    static func hmac(key: [UInt8], _ parts: [UInt8]...) -> [UInt8] {
        var mac = HMAC<SHA256>(key: SymmetricKey(data: key))
        for part in parts { mac.update(data: part) }
        return Array(mac.finalize())
    }

    /// HKDF(chaining_key, input_key_material, num_outputs) with HMAC-SHA256 (§4.3).
    static func hkdf(chainingKey: [UInt8], inputKeyMaterial: [UInt8], outputs: Int) -> [[UInt8]] {
        precondition(outputs == 2 || outputs == 3)
        let tempKey = hmac(key: chainingKey, inputKeyMaterial)
        let output1 = hmac(key: tempKey, [0x01])
        let output2 = hmac(key: tempKey, output1, [0x02])
        if outputs == 2 { return [output1, output2] }
        let output3 = hmac(key: tempKey, output2, [0x03])
        return [output1, output2, output3]
    }
}

// MARK: - CipherState (§5.1)

/// A Noise CipherState: a ChaChaPoly key and a 64-bit nonce counter.
/// Its description never shows the key.
public struct NoiseCipherState: Sendable, CustomStringConvertible {
    private var key: CipherKey?
    /// The nonce the next `encrypt`/`decrypt` uses.
    public private(set) var nonce: UInt64 = 0

    /// A CipherState with no key: encrypt and decrypt pass data through (used during handshakes).
    init() {}

    /// A CipherState with a 32-byte key and nonce 0.
    public init(key: [UInt8]) throws {
        guard key.count == NoiseConstants.keyLength else {
            throw NoiseError.badKeyLength(what: "cipher key", expected: NoiseConstants.keyLength, actual: key.count)
        }
        self.key = CipherKey(key)
    }

    init(cipherKey: CipherKey) {
        self.key = cipherKey
    }

    public var hasKey: Bool { key != nil }

    public var description: String { "NoiseCipherState(hasKey: \(hasKey), nonce: \(nonce))" }

    /// SetNonce(n) (§5.1), e.g. for out-of-band nonces or tests.
    public mutating func setNonce(_ nonce: UInt64) {
        self.nonce = nonce
    }

    /// EncryptWithAd: returns ciphertext plus 16-byte tag, or the plaintext unchanged if no key is set.
    public mutating func encrypt(ad: [UInt8] = [], plaintext: [UInt8]) throws -> [UInt8] {
        guard let key else { return plaintext }
        guard nonce != UInt64.max else { throw NoiseError.nonceExhausted }
        let output = NoiseAEAD.seal(key: key, counter: nonce, ad: ad, plaintext: plaintext)
        nonce += 1
        return output
    }

    /// DecryptWithAd: returns the plaintext; on failure throws and leaves the nonce unchanged.
    public mutating func decrypt(ad: [UInt8] = [], ciphertext: [UInt8]) throws -> [UInt8] {
        guard let key else { return ciphertext }
        guard nonce != UInt64.max else { throw NoiseError.nonceExhausted }
        var output = [UInt8]()
        output.reserveCapacity(max(0, ciphertext.count - NoiseConstants.tagLength))
        guard NoiseAEAD.open(key: key, counter: nonce, ad: ad, ciphertext: ciphertext, appendingTo: &output) else {
            throw NoiseError.decryptFailed
        }
        nonce += 1
        return output
    }

    /// Rekey(): k = REKEY(k); the nonce is not reset (§4.2, §11.3).
    public mutating func rekey() {
        guard let key else { return }
        self.key = NoiseAEAD.rekey(key)
    }

    /// The current key, for building cell ciphers from a split; internal so it is never logged.
    var cipherKey: CipherKey? { key }
}

// MARK: - SymmetricState (§5.2)

struct NoiseSymmetricState {
    var cipher = NoiseCipherState()
    private(set) var chainingKey: [UInt8]
    private(set) var handshakeHash: [UInt8]

    /// InitializeSymmetric(protocol_name).
    init(protocolName: String) {
        let nameBytes = Array(protocolName.utf8)
        if nameBytes.count <= NoiseConstants.hashLength {
            handshakeHash = nameBytes + [UInt8](repeating: 0, count: NoiseConstants.hashLength - nameBytes.count)
        } else {
            handshakeHash = NoiseHash.hash(nameBytes)
        }
        chainingKey = handshakeHash
    }

    mutating func mixHash(_ data: [UInt8]) {
        handshakeHash = NoiseHash.hash(handshakeHash, data)
    }

    mutating func mixKey(_ inputKeyMaterial: [UInt8]) {
        let outputs = NoiseHash.hkdf(chainingKey: chainingKey, inputKeyMaterial: inputKeyMaterial, outputs: 2)
        chainingKey = outputs[0]
        // HASHLEN is 32, so no truncation of temp_k is needed.
        cipher = NoiseCipherState(cipherKey: CipherKey(outputs[1]))
    }

    mutating func mixKeyAndHash(_ inputKeyMaterial: [UInt8]) {
        let outputs = NoiseHash.hkdf(chainingKey: chainingKey, inputKeyMaterial: inputKeyMaterial, outputs: 3)
        chainingKey = outputs[0]
        mixHash(outputs[1])
        cipher = NoiseCipherState(cipherKey: CipherKey(outputs[2]))
    }

    mutating func encryptAndHash(_ plaintext: [UInt8]) throws -> [UInt8] {
        let ciphertext = try cipher.encrypt(ad: handshakeHash, plaintext: plaintext)
        mixHash(ciphertext)
        return ciphertext
    }

    mutating func decryptAndHash(_ ciphertext: [UInt8]) throws -> [UInt8] {
        let plaintext = try cipher.decrypt(ad: handshakeHash, ciphertext: ciphertext)
        mixHash(ciphertext)
        return plaintext
    }

    func split() -> (NoiseCipherState, NoiseCipherState) {
        let outputs = NoiseHash.hkdf(chainingKey: chainingKey, inputKeyMaterial: [], outputs: 2)
        return (NoiseCipherState(cipherKey: CipherKey(outputs[0])),
                NoiseCipherState(cipherKey: CipherKey(outputs[1])))
    }
}

// MARK: - HandshakeState (§5.3)

/// A Noise HandshakeState for one side of one handshake. Any error leaves it failed:
/// a handshake that has thrown must be abandoned, never resumed.
public struct NoiseHandshakeState: CustomStringConvertible {
    private enum Phase: Equatable { case inProgress, complete, failed }

    public let pattern: NoisePattern
    public let isInitiator: Bool
    private var symmetric: NoiseSymmetricState
    private var localStatic: Curve25519.KeyAgreement.PrivateKey?
    private var localEphemeral: Curve25519.KeyAgreement.PrivateKey?
    private var remoteStaticKey: [UInt8]?
    private var remoteEphemeralKey: [UInt8]?
    private var psks: [[UInt8]]
    private var nextPSK = 0
    private var messageIndex = 0
    private var phase = Phase.inProgress

    /// Initialize(handshake_pattern, initiator, prologue, s, e, rs, re) (§5.3).
    ///
    /// - Parameters:
    ///   - localStatic: this side's 32-byte X25519 private key, if the pattern uses one.
    ///   - remoteStatic: the peer's 32-byte public key, if known in advance (pre-message `s`).
    ///   - psks: the 32-byte PSKs, in the order the pattern's `psk` tokens use them.
    ///   - localEphemeral: a fixed ephemeral private key, for test vectors only;
    ///     normally nil, and a fresh one is generated when the `e` token is written.
    public init(
        pattern: NoisePattern,
        initiator: Bool,
        prologue: [UInt8] = [],
        localStatic: [UInt8]? = nil,
        remoteStatic: [UInt8]? = nil,
        psks: [[UInt8]] = [],
        localEphemeral: [UInt8]? = nil
    ) throws {
        self.pattern = pattern
        self.isInitiator = initiator
        self.symmetric = NoiseSymmetricState(protocolName: pattern.protocolName)

        if let localStatic {
            self.localStatic = try Self.privateKey(localStatic, what: "local static private key")
        }
        if let localEphemeral {
            self.localEphemeral = try Self.privateKey(localEphemeral, what: "local ephemeral private key")
        }
        if let remoteStatic {
            guard remoteStatic.count == NoiseConstants.dhLength else {
                throw NoiseError.badKeyLength(what: "remote static public key", expected: NoiseConstants.dhLength, actual: remoteStatic.count)
            }
            self.remoteStaticKey = remoteStatic
        }
        for psk in psks where psk.count != NoiseConstants.pskLength {
            throw NoiseError.badKeyLength(what: "PSK", expected: NoiseConstants.pskLength, actual: psk.count)
        }
        guard psks.count == pattern.pskCount else {
            throw NoiseError.missingKey("pattern \(pattern.name) uses \(pattern.pskCount) PSK(s), \(psks.count) given")
        }
        self.psks = psks

        // Keys this side will need for its own `s` token or for DH with `s`.
        let (ownPre, peerPre) = initiator
            ? (pattern.initiatorPreMessage, pattern.responderPreMessage)
            : (pattern.responderPreMessage, pattern.initiatorPreMessage)
        let sendsStatic = pattern.messages.enumerated().contains { index, tokens in
            (index % 2 == 0) == initiator && tokens.contains(.s)
        }
        if (ownPre.contains(.s) || sendsStatic) && self.localStatic == nil {
            throw NoiseError.missingKey("pattern \(pattern.name) needs this side's static private key")
        }
        if peerPre.contains(.s) && self.remoteStaticKey == nil {
            throw NoiseError.missingKey("pattern \(pattern.name) needs the peer's static public key in advance")
        }

        symmetric.mixHash(prologue)
        // §7.1: pre-message keys are hashed initiator's first, then responder's.
        let initiatorPre = pattern.initiatorPreMessage, responderPre = pattern.responderPreMessage
        for token in initiatorPre where token == .s {
            symmetric.mixHash(initiator ? Self.publicKey(self.localStatic!) : self.remoteStaticKey!)
        }
        for token in responderPre where token == .s {
            symmetric.mixHash(initiator ? self.remoteStaticKey! : Self.publicKey(self.localStatic!))
        }
    }

    /// True once every handshake message has been written or read.
    public var isComplete: Bool { phase == .complete }

    /// True if this side writes the next handshake message.
    public var isMyTurn: Bool { phase == .inProgress && (messageIndex % 2 == 0) == isInitiator }

    /// The handshake hash `h` (§5.2 GetHandshakeHash); final once `isComplete`.
    public var handshakeHash: [UInt8] { symmetric.handshakeHash }

    /// The peer's static public key, once known (pre-message or received `s`).
    public var remoteStaticPublicKey: [UInt8]? { remoteStaticKey }

    public var description: String {
        "NoiseHandshakeState(\(pattern.protocolName), \(isInitiator ? "initiator" : "responder"), message \(messageIndex), \(phase))"
    }

    /// WriteMessage(payload, message_buffer) (§5.3).
    public mutating func writeMessage(payload: [UInt8] = []) throws -> [UInt8] {
        try checkTurn(writing: true)
        do {
            var message = [UInt8]()
            for token in pattern.messages[messageIndex] {
                switch token {
                case .e:
                    let ephemeral = localEphemeral ?? Curve25519.KeyAgreement.PrivateKey()
                    localEphemeral = ephemeral
                    let publicKey = Self.publicKey(ephemeral)
                    message += publicKey
                    symmetric.mixHash(publicKey)
                    // §9.2: with a PSK in the pattern, `e` also feeds the key schedule.
                    if pattern.usesPSK { symmetric.mixKey(publicKey) }
                case .s:
                    message += try symmetric.encryptAndHash(Self.publicKey(localStatic!))
                case .psk:
                    symmetric.mixKeyAndHash(psks[nextPSK])
                    nextPSK += 1
                default:
                    try mixDH(token)
                }
            }
            message += try symmetric.encryptAndHash(payload)
            guard message.count <= NoiseConstants.maxMessageLength else {
                throw NoiseError.messageTooLong(length: message.count)
            }
            advance()
            return message
        } catch {
            phase = .failed
            throw error
        }
    }

    /// ReadMessage(message, payload_buffer) (§5.3): returns the decrypted payload.
    public mutating func readMessage(_ message: [UInt8]) throws -> [UInt8] {
        try checkTurn(writing: false)
        do {
            guard message.count <= NoiseConstants.maxMessageLength else {
                throw NoiseError.messageTooLong(length: message.count)
            }
            let needed = minimumLength(of: messageIndex)
            guard message.count >= needed else {
                throw NoiseError.wrongMessageLength(expectedAtLeast: needed, actual: message.count)
            }
            var offset = 0
            for token in pattern.messages[messageIndex] {
                switch token {
                case .e:
                    let remote = Array(message[offset..<offset + NoiseConstants.dhLength])
                    offset += NoiseConstants.dhLength
                    remoteEphemeralKey = remote
                    symmetric.mixHash(remote)
                    if pattern.usesPSK { symmetric.mixKey(remote) }
                case .s:
                    let length = NoiseConstants.dhLength + (symmetric.cipher.hasKey ? NoiseConstants.tagLength : 0)
                    let field = Array(message[offset..<offset + length])
                    offset += length
                    remoteStaticKey = try symmetric.decryptAndHash(field)
                case .psk:
                    symmetric.mixKeyAndHash(psks[nextPSK])
                    nextPSK += 1
                default:
                    try mixDH(token)
                }
            }
            let payload = try symmetric.decryptAndHash(Array(message[offset...]))
            advance()
            return payload
        } catch {
            phase = .failed
            throw error
        }
    }

    /// Split() (§5.2): the first CipherState encrypts initiator → responder, the second
    /// responder → initiator. Only valid once `isComplete`.
    public func split() -> (NoiseCipherState, NoiseCipherState) {
        precondition(isComplete, "NoiseHandshakeState.split() called before the handshake completed")
        return symmetric.split()
    }

    // MARK: Internals

    private mutating func checkTurn(writing: Bool) throws {
        switch phase {
        case .complete:
            throw NoiseError.handshakeOutOfOrder("the handshake is already complete")
        case .failed:
            throw NoiseError.handshakeOutOfOrder("the handshake already failed and must be abandoned")
        case .inProgress:
            if isMyTurn != writing {
                throw NoiseError.handshakeOutOfOrder(
                    "message \(messageIndex + 1) is to be \(isMyTurn ? "written" : "read") by this side, not \(writing ? "written" : "read")")
            }
        }
    }

    private mutating func advance() {
        messageIndex += 1
        if messageIndex == pattern.messages.count { phase = .complete }
    }

    /// The fewest bytes message `index` can have: its keys plus, once a key is set, the payload tag.
    private func minimumLength(of index: Int) -> Int {
        // Whether a cipher key exists at each point can be replayed from the token lists.
        var hasKey = symmetric.cipher.hasKey
        var length = 0
        for token in pattern.messages[index] {
            switch token {
            case .e:
                length += NoiseConstants.dhLength
                if pattern.usesPSK { hasKey = true }
            case .s:
                length += NoiseConstants.dhLength + (hasKey ? NoiseConstants.tagLength : 0)
            default:
                hasKey = true
            }
        }
        return length + (hasKey ? NoiseConstants.tagLength : 0)
    }

    /// The DH tokens (§5.3): `es` is DH(initiator e, responder s), `se` the reverse.
    private mutating func mixDH(_ token: NoisePattern.Token) throws {
        let local: Curve25519.KeyAgreement.PrivateKey?
        let remote: [UInt8]?
        switch (token, isInitiator) {
        case (.ee, _): (local, remote) = (localEphemeral, remoteEphemeralKey)
        case (.ss, _): (local, remote) = (localStatic, remoteStaticKey)
        case (.es, true): (local, remote) = (localEphemeral, remoteStaticKey)
        case (.es, false): (local, remote) = (localStatic, remoteEphemeralKey)
        case (.se, true): (local, remote) = (localStatic, remoteEphemeralKey)
        case (.se, false): (local, remote) = (localEphemeral, remoteStaticKey)
        default: preconditionFailure("mixDH called with non-DH token \(token)")
        }
        guard let local, let remote else {
            // The pattern validity rules (§7.3) make this unreachable for the supported patterns.
            throw NoiseError.missingKey("token \(token.rawValue) needs a key that is not known yet")
        }
        symmetric.mixKey(try Self.dh(local, remote))
    }

    static func dh(_ privateKey: Curve25519.KeyAgreement.PrivateKey, _ publicKey: [UInt8]) throws -> [UInt8] {
        let peer = try Curve25519.KeyAgreement.PublicKey(rawRepresentation: publicKey)
        let shared = try privateKey.sharedSecretFromKeyAgreement(with: peer)
        let bytes = shared.withUnsafeBytes { Array($0) }
        // §12.1 allows rejecting the all-zero output of a low-order point; we do.
        guard bytes.contains(where: { $0 != 0 }) else { throw NoiseError.invalidPublicKey }
        return bytes
    }

    static func privateKey(_ bytes: [UInt8], what: String) throws -> Curve25519.KeyAgreement.PrivateKey {
        guard bytes.count == NoiseConstants.dhLength else {
            throw NoiseError.badKeyLength(what: what, expected: NoiseConstants.dhLength, actual: bytes.count)
        }
        return try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: bytes)
    }

    static func publicKey(_ privateKey: Curve25519.KeyAgreement.PrivateKey) -> [UInt8] {
        Array(privateKey.publicKey.rawRepresentation)
    }
}
