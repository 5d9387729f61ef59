/// Keys and PSKs are written as standard base64 (RFC 4648 section 4) of exactly 32 bytes.
///
/// Decoding is strict so that a damaged key is an error instead of a different key: only the
/// standard alphabet, padding required, no whitespace, and the unused bits of the last character
/// must be zero (RFC 4648 section 3.5, canonical encoding).
public enum KeyEncoding {
    /// The length of every key and PSK Sotto uses (X25519 keys, Noise PSK).
    public static let keyLength = 32

    /// The 32 bytes `base64` encodes, or nil if it is not strict base64 of exactly 32 bytes.
    public static func decode32(_ base64: String) -> [UInt8]? {
        guard let bytes = decode(base64), bytes.count == keyLength else { return nil }
        return bytes
    }

    /// The bytes of any strict standard base64 text, or nil if it is not one.
    public static func decode(_ base64: String) -> [UInt8]? {
        let chars = Array(base64.utf8)
        guard chars.count % 4 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count / 4 * 3)
        var index = 0
        while index < chars.count {
            let isLastQuad = index + 4 == chars.count
            var values: [UInt8] = []
            var padding = 0
            for offset in 0..<4 {
                let c = chars[index + offset]
                if c == UInt8(ascii: "=") {
                    // Padding only at the end of the last quad, at most two characters.
                    guard isLastQuad, offset >= 2 else { return nil }
                    padding += 1
                } else {
                    guard padding == 0, let v = sextet(c) else { return nil }
                    values.append(v)
                }
            }
            switch padding {
            case 0:
                out.append(values[0] << 2 | values[1] >> 4)
                out.append(values[1] << 4 | values[2] >> 2)
                out.append(values[2] << 6 | values[3])
            case 1:
                guard values[2] & 0b11 == 0 else { return nil }
                out.append(values[0] << 2 | values[1] >> 4)
                out.append(values[1] << 4 | values[2] >> 2)
            default:
                guard values[1] & 0b1111 == 0 else { return nil }
                out.append(values[0] << 2 | values[1] >> 4)
            }
            index += 4
        }
        return out
    }

    /// Standard base64 with padding.
    public static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var index = 0
        while index < bytes.count {
            let remaining = bytes.count - index
            let b0 = bytes[index]
            let b1 = remaining > 1 ? bytes[index + 1] : 0
            let b2 = remaining > 2 ? bytes[index + 2] : 0
            out.append(alphabet[Int(b0 >> 2)])
            out.append(alphabet[Int((b0 & 0b11) << 4 | b1 >> 4)])
            out.append(remaining > 1 ? alphabet[Int((b1 & 0b1111) << 2 | b2 >> 6)] : UInt8(ascii: "="))
            out.append(remaining > 2 ? alphabet[Int(b2 & 0b111111)] : UInt8(ascii: "="))
            index += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    private static func sextet(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): return c - UInt8(ascii: "A")
        case UInt8(ascii: "a")...UInt8(ascii: "z"): return c - UInt8(ascii: "a") + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0") + 52
        case UInt8(ascii: "+"): return 62
        case UInt8(ascii: "/"): return 63
        default: return nil
        }
    }
}

/// RFC 4648 section 6 base32 (lower case, no padding), as used by onion and I2P addresses.
enum Base32 {
    /// The bytes of an unpadded base32 string, or nil. Trailing bits that do not make a byte are
    /// ignored (a 56-character onion address carries 280 bits = 35 bytes exactly).
    static func decode(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        var buffer: UInt32 = 0
        var bits = 0
        for c in text.utf8 {
            let value: UInt8
            switch c {
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = c - UInt8(ascii: "a")
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = c - UInt8(ascii: "A")
            case UInt8(ascii: "2")...UInt8(ascii: "7"): value = c - UInt8(ascii: "2") + 26
            default: return nil
            }
            buffer = buffer << 5 | UInt32(value)
            bits += 5
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits)))
                buffer &= (1 << UInt32(bits)) - 1
            }
        }
        return out
    }
}
