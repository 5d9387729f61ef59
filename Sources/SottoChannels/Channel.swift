import Crypto

/// Why a channel, schedule or derived value was refused. Never holds secret bytes.
public enum ChannelError: Error, Sendable, Equatable, CustomStringConvertible {
    case badSecretLength(bytes: Int)
    case badName(String)
    case badEpochSeconds(Int)
    case badPortRange(lower: Int, upper: Int)
    case badSender(String)
    case badMaxAge(Int)

    public var description: String {
        switch self {
        case .badSecretLength(let bytes):
            return "a channel secret is \(Channel.secretLength) bytes, got \(bytes)"
        case .badName(let name):
            return "channel name '\(name)' must be 1 to \(Channel.maximumNameLength) bytes of letters, digits, '-' and '_'"
        case .badEpochSeconds(let seconds):
            return "an epoch must last from 1 to \(EpochSchedule.maximumSeconds) seconds, got \(seconds)"
        case .badPortRange(let lower, let upper):
            return "port range \(lower)-\(upper) must lie within 1-65535 with the first port not above the last"
        case .badSender(let sender):
            return "sender '\(sender)' must be 1 to \(SealedEnvelope.maximumSenderLength) bytes of UTF-8"
        case .badMaxAge(let seconds):
            return "the maximum message age must be from 1 to \(Channel.maximumMaxAgeSeconds) seconds, got \(seconds)"
        }
    }
}

/// How a channel's members show themselves in the DTLS handshake (docs/channels.md).
public enum IdentityMode: String, Sendable, CaseIterable, Equatable {
    /// One fixed identity derived from the secret alone: every session looks the same on the
    /// wire. The baseline the other modes improve on.
    case global
    /// An identity (and key) per channel and epoch: sessions of one epoch share it, the next
    /// epoch's identity is unrelated.
    case perChannel = "per-channel"
    /// A fresh identity (and key) for every session, which only the server can tell apart
    /// from random: a nonce and a MAC over it.
    case throwaway
}

/// A channel: a name and a 32-byte secret its members share, and the keys derived from them.
///
/// Every key is HKDF-SHA256 (RFC 5869) of the secret with the salt `sotto channels v1` and an
/// info that starts with a label of its own (docs/channels.md, "Derivations"), so no two uses
/// share a key.
public struct Channel: Sendable, CustomStringConvertible, CustomReflectable {
    public static let secretLength = 32
    public static let maximumNameLength = 64
    /// A message older than a year is no message a mailbox should still hold.
    public static let maximumMaxAgeSeconds = 366 * 86_400
    public static let defaultMaxAgeSeconds = 7 * 86_400

    public let name: String
    public let identityMode: IdentityMode
    public let schedule: EpochSchedule
    /// How old (by its epoch) an envelope may be and still open.
    public let maxAgeSeconds: Int
    /// 16 bytes that name the channel in the envelopes' additional data; derived, never sent.
    public let id: [UInt8]

    // Bytes, not SymmetricKey, which is not Sendable; keys are made where they are used.
    private let secretBytes: [UInt8]
    private let identityKeyBytes: [UInt8]
    private let tagKeyBytes: [UInt8]

    var secret: SymmetricKey { SymmetricKey(data: secretBytes) }
    /// The HMAC key of per-channel and throwaway identities.
    var identityKey: SymmetricKey { SymmetricKey(data: identityKeyBytes) }
    /// The HMAC key of envelope channel tags.
    var tagKey: SymmetricKey { SymmetricKey(data: tagKeyBytes) }

    public init(name: String, secret: [UInt8], identityMode: IdentityMode = .perChannel,
                epochSeconds: Int = EpochSchedule.defaultSeconds, maxAgeSeconds: Int = Channel.defaultMaxAgeSeconds) throws {
        guard secret.count == Self.secretLength else { throw ChannelError.badSecretLength(bytes: secret.count) }
        guard Self.isValidName(name) else { throw ChannelError.badName(name) }
        guard (1...Self.maximumMaxAgeSeconds).contains(maxAgeSeconds) else { throw ChannelError.badMaxAge(maxAgeSeconds) }
        self.name = name
        self.identityMode = identityMode
        self.schedule = try EpochSchedule(seconds: epochSeconds)
        self.maxAgeSeconds = maxAgeSeconds
        let key = SymmetricKey(data: secret)
        self.secretBytes = secret
        self.id = Derivation.bytes(key, label: "channel id", name: name, count: 16)
        self.identityKeyBytes = Derivation.bytes(key, label: "identity key", name: name, count: 32)
        self.tagKeyBytes = Derivation.bytes(key, label: "envelope tag key", name: name, count: 32)
    }

    /// Never shows the secret or a key.
    public var description: String {
        "channel '\(name)' (\(identityMode.rawValue) identities, \(schedule.seconds) s epochs)"
    }

    /// Keeps `dump()` and debuggers from printing the secret.
    public var customMirror: Mirror { Mirror(self, children: ["channel": description]) }

    /// Letters, digits, '-' and '_', as the configuration's other names.
    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= maximumNameLength && name.utf8.allSatisfy { b in
            (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39)
                || b == UInt8(ascii: "-") || b == UInt8(ascii: "_")
        }
    }

    /// The envelope key of one epoch.
    func envelopeKey(epoch: UInt64) -> SymmetricKey {
        SymmetricKey(data: Derivation.bytes(secret, label: "envelope key", name: name, epoch: epoch, count: 32))
    }
}

/// The HKDF and HMAC constructions, in one place so docs/channels.md can be checked against them.
enum Derivation {
    static let salt = Array("sotto channels v1".utf8)

    /// HKDF-SHA256(ikm: secret, salt: "sotto channels v1",
    ///             info: label || 0x00 || name || 0x00 || epoch (8 bytes, big-endian, when given) || extra).
    /// The zero bytes end the label and the name, so ("ab", "c") and ("a", "bc") differ.
    static func bytes(_ secret: SymmetricKey, label: String, name: String, epoch: UInt64? = nil,
                      extra: [UInt8] = [], count: Int) -> [UInt8] {
        var info = Array(label.utf8)
        info.append(0)
        info += Array(name.utf8)
        info.append(0)
        if let epoch { info += bigEndian(epoch) }
        info += extra
        let key = HKDF<SHA256>.deriveKey(inputKeyMaterial: secret, salt: salt, info: info, outputByteCount: count)
        return key.withUnsafeBytes { Array($0) }
    }

    static func hmac(_ key: SymmetricKey, _ parts: [UInt8]...) -> [UInt8] {
        var mac = HMAC<SHA256>(key: key)
        for part in parts { mac.update(data: part) }
        return Array(mac.finalize())
    }

    static func bigEndian(_ value: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * UInt64($0))) }
    }

    static func readBigEndian<C: Collection>(_ bytes: C) -> UInt64 where C.Element == UInt8 {
        bytes.reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// Equality whose time depends on the lengths only, not on where the bytes first differ.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Lower-case hex only (as `hex` writes it), so one identity has one spelling.
    static func unhex<C: Collection>(_ text: C) -> [UInt8]? where C.Element == UInt8 {
        guard text.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(text.count / 2)
        var high: UInt8?
        for c in text {
            let value: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): value = c - UInt8(ascii: "a") + 10
            default: return nil
            }
            if let h = high {
                out.append(h << 4 | value)
                high = nil
            } else {
                high = value
            }
        }
        return out
    }
}
