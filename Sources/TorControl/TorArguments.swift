// Arguments inside a reply line, and the QuotedString / CString escapes tor writes (control-spec 2.1, 2.1.1).

/// One space-separated token of a reply line.
public struct TorArgument: Sendable, Equatable {
    /// The keyword before "=", or nil for a positional token.
    public var key: String?
    /// The value after "=" (unescaped when quoted), or the whole token when positional.
    public var value: String
    /// The token as it appeared on the wire (quotes and escapes intact), for positional fields whose
    /// grammar may itself contain "=" (a legacy LongName `$fingerprint=nickname`, control-spec 2.4).
    public var raw: String
}

/// The tokens of a reply line, in order, with lookup by keyword.
public struct TorArguments: Sendable, Equatable {
    public var all: [TorArgument]

    /// Tokens without a keyword, in order.
    public var positional: [String] { all.filter { $0.key == nil }.map(\.value) }

    /// The value of the first `KEY=...` token with this keyword (keywords compare case-sensitively,
    /// as tor writes them).
    public subscript(key: String) -> String? {
        all.first { $0.key == key }?.value
    }

    public init(_ all: [TorArgument]) {
        self.all = all
    }

    /// Tokenizes `text`: tokens are separated by runs of spaces; a token is `"quoted"`, `KEY="quoted"`,
    /// `KEY=value` or a bare word. Throws on an unterminated quote, a bad escape, or text glued to a
    /// closing quote.
    public init(parsing text: String) throws {
        let bytes = Array(text.utf8)
        var tokens: [TorArgument] = []
        var i = 0
        while i < bytes.count {
            if bytes[i] == ASCII.space { i += 1; continue }
            let start = i
            if bytes[i] == ASCII.quote {
                let (value, end) = try QuotedString.decode(bytes, from: i, context: text)
                i = end
                try Self.requireTokenEnd(bytes, at: i, context: text)
                tokens.append(TorArgument(key: nil, value: value, raw: String(decoding: bytes[start..<i], as: UTF8.self)))
                continue
            }
            // Read up to "=" or a space; only a plausible keyword before "=" makes a KEY=value token.
            var j = i
            while j < bytes.count, bytes[j] != ASCII.space, bytes[j] != ASCII.equals { j += 1 }
            let word = bytes[i..<j]
            if j < bytes.count, bytes[j] == ASCII.equals, !word.isEmpty, word.allSatisfy(ASCII.isKeywordByte) {
                let key = String(decoding: word, as: UTF8.self)
                let valueStart = j + 1
                if valueStart < bytes.count, bytes[valueStart] == ASCII.quote {
                    let (value, end) = try QuotedString.decode(bytes, from: valueStart, context: text)
                    i = end
                    try Self.requireTokenEnd(bytes, at: i, context: text)
                    tokens.append(TorArgument(key: key, value: value, raw: String(decoding: bytes[start..<i], as: UTF8.self)))
                } else {
                    var k = valueStart
                    while k < bytes.count, bytes[k] != ASCII.space { k += 1 }
                    i = k
                    tokens.append(TorArgument(key: key, value: String(decoding: bytes[valueStart..<k], as: UTF8.self),
                                              raw: String(decoding: bytes[start..<k], as: UTF8.self)))
                }
                continue
            }
            while j < bytes.count, bytes[j] != ASCII.space { j += 1 }
            i = j
            let token = String(decoding: bytes[start..<j], as: UTF8.self)
            tokens.append(TorArgument(key: nil, value: token, raw: token))
        }
        self.all = tokens
    }

    private static func requireTokenEnd(_ bytes: [UInt8], at index: Int, context: String) throws {
        guard index == bytes.count || bytes[index] == ASCII.space else {
            throw TorProtocolError.textAfterQuotedString(line: excerpt(context))
        }
    }
}

/// QuotedString as tor writes it. Tor emits many of these as CStrings (control-spec 2.1.1, bug #14555),
/// so decoding follows the spec's advice for both: `\n \t \r` and octal `\0`..`\377` are C escapes,
/// a backslash before any other character stands for that character.
public enum QuotedString {
    /// Decodes the QuotedString starting at `bytes[start]` (which must be a double quote).
    /// Returns the decoded text and the index just past the closing quote.
    public static func decode(_ bytes: [UInt8], from start: Int, context: String) throws -> (String, Int) {
        precondition(start < bytes.count && bytes[start] == ASCII.quote)
        var out: [UInt8] = []
        var i = start + 1
        while i < bytes.count {
            let b = bytes[i]
            if b == ASCII.quote {
                return (String(decoding: out, as: UTF8.self), i + 1)
            }
            guard b == ASCII.backslash else { out.append(b); i += 1; continue }
            guard i + 1 < bytes.count else { break }  // a lone backslash at the end: unterminated
            let e = bytes[i + 1]
            switch e {
            case UInt8(ascii: "n"): out.append(0x0A); i += 2
            case UInt8(ascii: "t"): out.append(0x09); i += 2
            case UInt8(ascii: "r"): out.append(0x0D); i += 2
            case UInt8(ascii: "0")...UInt8(ascii: "7"):
                // Up to three octal digits, as in C; above \377 there is no octet to stand for.
                var value = 0
                var j = i + 1
                while j < bytes.count, j < i + 4, (UInt8(ascii: "0")...UInt8(ascii: "7")).contains(bytes[j]) {
                    value = value * 8 + Int(bytes[j] - UInt8(ascii: "0"))
                    j += 1
                }
                guard value <= 0xFF else {
                    throw TorProtocolError.invalidEscape(sequence: String(decoding: bytes[i..<j], as: UTF8.self),
                                                         line: excerpt(context))
                }
                out.append(UInt8(value))
                i = j
            default:
                out.append(e); i += 2
            }
        }
        throw TorProtocolError.unterminatedQuotedString(line: excerpt(context))
    }

    /// Decodes a whole string that is one QuotedString (e.g. `"/var/lib/tor/control_auth_cookie"`).
    public static func decode(_ text: String) throws -> String {
        let bytes = Array(text.utf8)
        guard bytes.first == ASCII.quote else { throw TorProtocolError.unterminatedQuotedString(line: excerpt(text)) }
        let (value, end) = try decode(bytes, from: 0, context: text)
        guard end == bytes.count else { throw TorProtocolError.textAfterQuotedString(line: excerpt(text)) }
        return value
    }

    /// Encodes `text` as a QuotedString for a command: backslash and quote escaped (control-spec 2.1:
    /// "In QuotedStrings, backslashes and quotes must be escaped"). Tor reads a backslash before any
    /// character as that character, so CR, LF and NUL cannot be carried at all; callers refuse them first.
    public static func encode(_ text: String) -> String {
        var out = "\""
        for ch in text.unicodeScalars {
            if ch == "\\" || ch == "\"" { out.append("\\") }
            out.unicodeScalars.append(ch)
        }
        out.append("\"")
        return out
    }
}

enum ASCII {
    static let cr: UInt8 = 0x0D
    static let lf: UInt8 = 0x0A
    static let space: UInt8 = 0x20
    static let quote: UInt8 = 0x22
    static let equals: UInt8 = 0x3D
    static let backslash: UInt8 = 0x5C
    static let dot: UInt8 = 0x2E

    /// Characters tor uses in keywords of `KEY=value` arguments (StatusKeyword = 1*(ALNUM / "_") and the
    /// like), widened by "-", "/" and "." so GETINFO-style keys tokenise as keys too.
    static func isKeywordByte(_ b: UInt8) -> Bool {
        (0x30...0x39).contains(b) || (0x41...0x5A).contains(b) || (0x61...0x7A).contains(b)
            || b == UInt8(ascii: "_") || b == UInt8(ascii: "-") || b == UInt8(ascii: "/") || b == UInt8(ascii: ".")
    }
}

/// A short, printable rendering of protocol text for error messages: control bytes escaped, capped at 120.
func excerpt<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
    var out = ""
    var n = 0
    for b in bytes {
        if n == 120 { out += "…"; break }
        switch b {
        case 0x0D: out += "\\r"
        case 0x0A: out += "\\n"
        case 0x20...0x7E: out.unicodeScalars.append(Unicode.Scalar(b))
        default: out += "\\x" + String(b, radix: 16, uppercase: false).leftPadded(2)
        }
        n += 1
    }
    return out
}

func excerpt(_ text: String) -> String { excerpt(text.utf8) }

extension String {
    func leftPadded(_ width: Int, with pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
}
