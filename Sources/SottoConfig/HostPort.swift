#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A host and a port as written in the configuration: `127.0.0.1:80`, `[::1]:80`, `name:80`.
///
/// `host` holds an IPv6 address without its brackets; `description` puts them back.
/// The host is not resolved here: a name stays a name.
public struct HostPort: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// Why a `host:port` string was refused; `description` is a sentence for the user.
    public struct ParseError: Error, CustomStringConvertible, Equatable, Sendable {
        public let input: String
        public let reason: String
        public var description: String { "'\(input)' is not host:port: \(reason)" }
    }

    /// Parses `host:port`, `[ipv6]:port`; the port must be 0...65535 in decimal.
    public static func parse(_ s: String) throws -> HostPort {
        func fail(_ reason: String) -> ParseError { ParseError(input: s, reason: reason) }
        let host: Substring
        let portText: Substring
        if s.hasPrefix("[") {
            guard let close = s.firstIndex(of: "]") else { throw fail("'[' without a closing ']'") }
            host = s[s.index(after: s.startIndex)..<close]
            let rest = s[s.index(after: close)...]
            guard rest.hasPrefix(":") else { throw fail("expected ':PORT' after ']'") }
            portText = rest.dropFirst()
            guard isIPv6Literal(String(host)) else { throw fail("'\(host)' is not an IPv6 address") }
        } else {
            guard let colon = s.lastIndex(of: ":") else { throw fail("missing ':PORT'") }
            host = s[..<colon]
            portText = s[s.index(after: colon)...]
            if host.contains(":") { throw fail("an IPv6 address needs brackets, as in [::1]:\(portText)") }
            guard !host.isEmpty else { throw fail("the host is empty") }
            guard host.utf8.count <= 253, host.utf8.allSatisfy(isHostNameByte) else {
                throw fail("the host may hold only letters, digits, '-', '_' and '.' (at most 253)")
            }
        }
        guard !portText.isEmpty else { throw fail("the port is empty") }
        guard portText.utf8.count <= 5, portText.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
              let port = Int(portText), port <= 65535
        else { throw fail("the port must be a number from 0 to 65535") }
        return HostPort(host: String(host), port: port)
    }

    /// True for an IPv4 address in 127.0.0.0/8 or the IPv6 address ::1, in any spelling
    /// inet_pton accepts. A name (even `localhost`) is not: it could resolve elsewhere.
    public var isLoopback: Bool {
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 {
            // s_addr is in network byte order: the first octet is the first byte in memory.
            return withUnsafeBytes(of: &v4) { $0[0] } == 127
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, host, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { bytes in
                bytes.prefix(15).allSatisfy { $0 == 0 } && bytes[15] == 1
            }
        }
        return false
    }

    /// True when `host` is an IPv4 or IPv6 address literal rather than a name.
    public var isIPAddress: Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
    }

    private static func isIPv6Literal(_ host: String) -> Bool {
        var v6 = in6_addr()
        return inet_pton(AF_INET6, host, &v6) == 1
    }

    private static func isHostNameByte(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."):
            return true
        default:
            return false
        }
    }
}
