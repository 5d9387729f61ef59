#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a CoAP URI was refused.
public enum CoAPURIProblem: Sendable, Equatable, CustomStringConvertible {
    case empty
    case tooLong(limit: Int)
    /// A character RFC 3986 does not allow in a URI (space, control, non-ASCII), by offset.
    case badCharacter(offset: Int)
    case missingScheme
    case unsupportedScheme(String)
    case missingHost
    case userInfoNotAllowed
    case fragmentNotAllowed
    case badPort(String)
    case badHost(String)
    case badIPLiteral(String)
    case badPercentEncoding(String)
    case notUTF8(String)
    /// A Uri-Path or Uri-Query option would exceed its 255-byte limit (RFC 7252 section 5.10).
    case optionTooLong(String, limit: Int)

    public var description: String {
        switch self {
        case .empty: return "the URI is empty"
        case .tooLong(let limit): return "longer than \(limit) characters"
        case .badCharacter(let offset): return "character \(offset + 1) is not allowed in a URI (percent-encode it)"
        case .missingScheme: return "no scheme: write coap://HOST/PATH or coaps://HOST/PATH"
        case .unsupportedScheme(let scheme): return "scheme '\(scheme)' is not supported: use coap:// or coaps://"
        case .missingHost: return "no host after '://'"
        case .userInfoNotAllowed: return "CoAP URIs have no user part ('user@host')"
        case .fragmentNotAllowed: return "CoAP URIs have no fragment ('#...'; RFC 7252 section 6.4)"
        case .badPort(let text): return "port '\(text)' is not a number from 1 to 65535"
        case .badHost(let host):
            return host.contains(":")
                ? "host '\(host)' looks like an IPv6 address: put it in brackets, e.g. coap://[::1]/"
                : "host '\(host)' is not a valid host name"
        case .badIPLiteral(let text): return "'[\(text)]' is not an IPv6 address"
        case .badPercentEncoding(let text): return "'\(text)' has a '%' not followed by two hex digits"
        case .notUTF8(let text): return "'\(text)' does not decode to UTF-8 text"
        case .optionTooLong(let text, let limit): return "'\(CoAPURI.abbreviated(text))' is longer than \(limit) bytes once decoded"
        }
    }
}

/// A `coap://` or `coaps://` URI taken apart into what a request needs (RFC 7252 section 6):
/// where to send it and the Uri-Host, Uri-Path and Uri-Query options.
public struct CoAPURI: Sendable, Equatable, CustomStringConvertible {
    public enum Scheme: String, Sendable {
        case coap, coaps

        /// RFC 7252 section 6.1 and 6.2.
        public var defaultPort: UInt16 { self == .coap ? 5683 : 5684 }
    }

    public var scheme: Scheme
    /// The host as written, without brackets for IPv6.
    public var host: String
    public var port: UInt16
    /// Decoded Uri-Path segments; empty for "" and "/".
    public var pathSegments: [String]
    /// Decoded Uri-Query items.
    public var query: [String]

    /// Longer input is refused before any parsing.
    public static let maximumLength = 2048
    /// RFC 7252 section 5.10: Uri-Host, Uri-Path and Uri-Query values are 0-255 bytes.
    public static let maximumOptionLength = 255

    public init(scheme: Scheme, host: String, port: UInt16? = nil, pathSegments: [String] = [], query: [String] = []) {
        self.scheme = scheme
        self.host = host
        self.port = port ?? scheme.defaultPort
        self.pathSegments = pathSegments
        self.query = query
    }

    /// Parses `text` along RFC 7252 section 6.4 (decomposing URIs into options), refusing what
    /// a CoAP request cannot carry.
    public init(parsing text: String) throws {
        func fail(_ problem: CoAPURIProblem) -> CoAPError { .badURI(text, problem) }
        guard !text.isEmpty else { throw fail(.empty) }
        let bytes = Array(text.utf8)
        guard bytes.count <= Self.maximumLength else { throw fail(.tooLong(limit: Self.maximumLength)) }
        if let offset = bytes.firstIndex(where: { !Self.isURICharacter($0) }) {
            throw fail(.badCharacter(offset: offset))
        }
        guard let schemeEnd = text.range(of: "://") else { throw fail(.missingScheme) }
        let schemeText = String(text[..<schemeEnd.lowerBound]).lowercased()
        guard !schemeText.isEmpty else { throw fail(.missingScheme) }
        guard let scheme = Scheme(rawValue: schemeText) else { throw fail(.unsupportedScheme(schemeText)) }
        let rest = text[schemeEnd.upperBound...]
        guard !rest.contains("#") else { throw fail(.fragmentNotAllowed) }

        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        guard !authority.contains("@") else { throw fail(.userInfoNotAllowed) }

        // Host: "[v6]" or a name / IPv4 address, then an optional ":port" (RFC 3986 section 3.2).
        var host: Substring
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw fail(.badIPLiteral(String(authority.dropFirst()))) }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw fail(.badHost(String(authority))) }
                portText = after.dropFirst()
            }
            guard Self.isIPv6(String(host)) else { throw fail(.badIPLiteral(String(host))) }
        } else {
            // More than one ":" is an IPv6 address without its brackets.
            guard authority.filter({ $0 == ":" }).count <= 1 else { throw fail(.badHost(String(authority))) }
            if let colon = authority.lastIndex(of: ":") {
                host = authority[..<colon]
                portText = authority[authority.index(after: colon)...]
            } else {
                host = authority
            }
            guard !host.isEmpty else { throw fail(.missingHost) }
            guard Self.isRegisteredName(host) else { throw fail(.badHost(String(host))) }
        }
        guard !host.isEmpty else { throw fail(.missingHost) }

        var port = scheme.defaultPort
        if let portText, !portText.isEmpty {
            // RFC 3986 allows an empty port (the default); digits only, 1...65535.
            guard portText.count <= 5, portText.allSatisfy({ $0.isASCII && $0.isNumber }),
                  let value = Int(portText), (1...65535).contains(value) else {
                throw fail(.badPort(String(portText)))
            }
            port = UInt16(value)
        }

        let pathAndQuery = rest[authorityEnd...]
        let queryStart = pathAndQuery.firstIndex(of: "?")
        let pathText = pathAndQuery[..<(queryStart ?? pathAndQuery.endIndex)]
        var segments: [String] = []
        // Step 8: an empty path or a single "/" gives no Uri-Path option.
        if pathText.count > 1 {
            for raw in pathText.dropFirst().split(separator: "/", omittingEmptySubsequences: false) {
                segments.append(try Self.decodeOption(raw, in: text))
            }
        }
        var query: [String] = []
        if let queryStart {
            let queryText = pathAndQuery[pathAndQuery.index(after: queryStart)...]
            // Step 9: each "&"-separated argument is one Uri-Query option; "?" alone adds none.
            if !queryText.isEmpty {
                for raw in queryText.split(separator: "&", omittingEmptySubsequences: false) {
                    query.append(try Self.decodeOption(raw, in: text))
                }
            }
        }
        self.init(scheme: scheme, host: String(host), port: port, pathSegments: segments, query: query)
    }

    /// Whether the host is an IPv4 or IPv6 address rather than a name. RFC 7252 section 6.4
    /// step 5: a Uri-Host option is sent only for names.
    public var hostIsIPLiteral: Bool { Self.isIPv4(host) || Self.isIPv6(host) }

    /// "host:port", with brackets for IPv6, as errors and logs show the peer.
    public var endpoint: String { Self.endpoint(host: host, port: port) }

    static func endpoint(host: String, port: UInt16) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// The path with its segments percent-encoded again, "/" when there are none.
    public var path: String {
        "/" + pathSegments.map { Self.encode($0, keeping: Self.segmentCharacters) }.joined(separator: "/")
    }

    public var description: String {
        var text = "\(scheme.rawValue)://\(host.contains(":") ? "[\(host)]" : host)"
        if port != scheme.defaultPort { text += ":\(port)" }
        if !pathSegments.isEmpty { text += path }
        if !query.isEmpty {
            text += "?" + query.map { Self.encode($0, keeping: Self.queryCharacters) }.joined(separator: "&")
        }
        return text
    }

    /// Splits a percent-encoded request path such as "/mb/alice" into Uri-Path segments.
    public static func pathSegments(fromPath path: String) throws -> [String] {
        guard path != "/" && !path.isEmpty else { return [] }
        guard path.utf8.count <= maximumLength else { throw CoAPError.badURI(path, .tooLong(limit: maximumLength)) }
        if let offset = path.utf8.firstIndex(where: { !isURICharacter($0) || $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") }) {
            throw CoAPError.badURI(path, .badCharacter(offset: path.utf8.distance(from: path.utf8.startIndex, to: offset)))
        }
        let body = path.hasPrefix("/") ? path.dropFirst() : Substring(path)
        return try body.split(separator: "/", omittingEmptySubsequences: false).map { try decodeOption($0, in: path) }
    }

    /// At most 60 characters of `text`, for error messages.
    static func abbreviated(_ text: String) -> String {
        text.count <= 60 ? text : String(text.prefix(57)) + "..."
    }

    // MARK: - Character classes (RFC 3986 section 2)

    private static func isUnreserved(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"),
             UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    private static func isSubDelimiter(_ c: UInt8) -> Bool {
        Array("!$&'()*+,;=".utf8).contains(c)
    }

    /// Unreserved, reserved (gen-delims and sub-delims) or "%".
    static func isURICharacter(_ c: UInt8) -> Bool {
        isUnreserved(c) || isSubDelimiter(c) || Array(":/?#[]@%".utf8).contains(c)
    }

    /// pchar without "%" (RFC 3986 section 3.3): what a path segment may hold unencoded.
    private static func segmentCharacters(_ c: UInt8) -> Bool {
        isUnreserved(c) || isSubDelimiter(c) || c == UInt8(ascii: ":") || c == UInt8(ascii: "@")
    }

    /// Query characters, minus "&", which separates Uri-Query options here.
    private static func queryCharacters(_ c: UInt8) -> Bool {
        (segmentCharacters(c) || c == UInt8(ascii: "/") || c == UInt8(ascii: "?")) && c != UInt8(ascii: "&")
    }

    private static func isRegisteredName(_ host: Substring) -> Bool {
        host.utf8.count <= maximumOptionLength
            && host.utf8.allSatisfy { isUnreserved($0) }
    }

    static func isIPv4(_ text: String) -> Bool {
        var address = in_addr()
        return inet_pton(AF_INET, text, &address) == 1
    }

    static func isIPv6(_ text: String) -> Bool {
        var address = in6_addr()
        return inet_pton(AF_INET6, text, &address) == 1
    }

    // MARK: - Percent-encoding

    /// Percent-decodes one option value and checks that it is UTF-8 of at most 255 bytes.
    private static func decodeOption(_ raw: Substring, in uri: String) throws -> String {
        var out: [UInt8] = []
        let bytes = Array(raw.utf8)
        var index = 0
        while index < bytes.count {
            if bytes[index] == UInt8(ascii: "%") {
                guard index + 2 < bytes.count,
                      let high = hexValue(bytes[index + 1]), let low = hexValue(bytes[index + 2]) else {
                    throw CoAPError.badURI(uri, .badPercentEncoding(String(raw)))
                }
                out.append(high << 4 | low)
                index += 3
            } else {
                out.append(bytes[index])
                index += 1
            }
        }
        guard out.count <= maximumOptionLength else {
            throw CoAPError.badURI(uri, .optionTooLong(String(raw), limit: maximumOptionLength))
        }
        let text = String(decoding: out, as: UTF8.self)
        guard text.utf8.elementsEqual(out) else { throw CoAPError.badURI(uri, .notUTF8(String(raw))) }
        return text
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    private static func encode(_ text: String, keeping keep: (UInt8) -> Bool) -> String {
        let digits = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        for c in text.utf8 {
            if keep(c) {
                out.append(c)
            } else {
                out.append(contentsOf: [UInt8(ascii: "%"), digits[Int(c >> 4)], digits[Int(c & 0xF)]])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
