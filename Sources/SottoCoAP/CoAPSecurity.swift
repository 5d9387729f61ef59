import SottoConfig

/// Why a PSK identity or key was refused. Never holds key bytes.
public enum PSKProblem: Sendable, Equatable, CustomStringConvertible {
    case emptyIdentity
    case identityTooLong(bytes: Int, limit: Int)
    case emptyKey
    case keyTooLong(bytes: Int, limit: Int)
    /// "hex:" text with a character that is not a hex digit, at this offset after the prefix.
    case badHex(offset: Int)
    case oddHexLength
    case badBase64
    /// A key file that is not UTF-8 text.
    case keyFileNotText

    public var description: String {
        switch self {
        case .emptyIdentity: return "the PSK identity is empty"
        case .identityTooLong(let bytes, let limit): return "the PSK identity is \(bytes) bytes; libcoap takes at most \(limit)"
        case .emptyKey: return "the PSK key is empty"
        case .keyTooLong(let bytes, let limit): return "the PSK key is \(bytes) bytes; libcoap takes at most \(limit)"
        case .badHex(let offset): return "the hex: key has a non-hex character at position \(offset + 1)"
        case .oddHexLength: return "the hex: key has an odd number of digits"
        case .badBase64: return "the base64: key is not standard base64 with padding (RFC 4648 section 4)"
        case .keyFileNotText: return "the key file is not text: write the key as hex:..., base64:... or plain text"
        }
    }
}

/// How a client secures its session.
///
/// The description never shows the key, so a configuration can be logged.
public enum CoAPSecurity: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// Plain CoAP over UDP (coap://).
    case none
    /// DTLS with a pre-shared key (coaps://, RFC 7252 section 9.1.3.1).
    case dtlsPSK(identity: [UInt8], key: [UInt8])

    /// libcoap 4.3.1's limits (COAP_DTLS_MAX_PSK_IDENTITY, COAP_DTLS_MAX_PSK).
    public static let maximumIdentityLength = 64
    public static let maximumKeyLength = 64

    /// A DTLS-PSK setting after checking both parts against libcoap's limits.
    public static func psk(identity: [UInt8], key: [UInt8]) throws -> CoAPSecurity {
        guard !identity.isEmpty else { throw CoAPError.badPSK(.emptyIdentity) }
        guard identity.count <= maximumIdentityLength else {
            throw CoAPError.badPSK(.identityTooLong(bytes: identity.count, limit: maximumIdentityLength))
        }
        guard !key.isEmpty else { throw CoAPError.badPSK(.emptyKey) }
        guard key.count <= maximumKeyLength else {
            throw CoAPError.badPSK(.keyTooLong(bytes: key.count, limit: maximumKeyLength))
        }
        return .dtlsPSK(identity: identity, key: key)
    }

    /// The bytes a key written as text stands for:
    /// - `hex:00ff...`: hex digits, two per byte;
    /// - `base64:...`: strict standard base64 (as `sotto keygen` writes PSKs);
    /// - `text:...` or anything without one of these prefixes: the UTF-8 bytes of the text, as
    ///   libcoap's `coap-client -k` and `coap-server -k` take keys.
    public static func parseKey(_ text: String) throws -> [UInt8] {
        let key: [UInt8]
        if text.hasPrefix("hex:") {
            key = try decodeHex(text.dropFirst(4))
        } else if text.hasPrefix("base64:") {
            guard let bytes = KeyEncoding.decode(String(text.dropFirst(7))) else { throw CoAPError.badPSK(.badBase64) }
            key = bytes
        } else if text.hasPrefix("text:") {
            key = Array(text.dropFirst(5).utf8)
        } else {
            key = Array(text.utf8)
        }
        guard !key.isEmpty else { throw CoAPError.badPSK(.emptyKey) }
        guard key.count <= maximumKeyLength else {
            throw CoAPError.badPSK(.keyTooLong(bytes: key.count, limit: maximumKeyLength))
        }
        return key
    }

    /// The key in a key file: its text without one trailing line end, read as `parseKey` reads.
    public static func parseKeyFile(_ contents: [UInt8]) throws -> [UInt8] {
        var bytes = contents[...]
        if bytes.last == UInt8(ascii: "\n") { bytes = bytes.dropLast() }
        if bytes.last == UInt8(ascii: "\r") { bytes = bytes.dropLast() }
        let text = String(decoding: bytes, as: UTF8.self)
        guard text.utf8.elementsEqual(bytes) else { throw CoAPError.badPSK(.keyFileNotText) }
        return try parseKey(text)
    }

    private static func decodeHex(_ digits: Substring) throws -> [UInt8] {
        let chars = Array(digits.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(chars.count / 2)
        var high: UInt8?
        for (offset, c) in chars.enumerated() {
            let value: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): value = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): value = c - UInt8(ascii: "A") + 10
            default: throw CoAPError.badPSK(.badHex(offset: offset))
            }
            if let h = high {
                out.append(h << 4 | value)
                high = nil
            } else {
                high = value
            }
        }
        guard high == nil else { throw CoAPError.badPSK(.oddHexLength) }
        return out
    }

    public var description: String {
        switch self {
        case .none:
            return "no security (plain CoAP)"
        case .dtlsPSK(let identity, let key):
            let name = String(decoding: identity, as: UTF8.self)
            return "DTLS-PSK (identity '\(name)', \(key.count)-byte key)"
        }
    }

    public var debugDescription: String { description }

    /// Keeps `dump()` and debuggers from printing the key.
    public var customMirror: Mirror { Mirror(self, children: ["security": description]) }
}
