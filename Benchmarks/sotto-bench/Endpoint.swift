#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A host as SOCKS5 carries it (RFC 1928 section 5: ATYP 1, 3 or 4).
enum BenchHost: Equatable, Hashable, CustomStringConvertible {
    case ipv4([UInt8])
    case ipv6([UInt8])
    /// Sent unresolved (ATYP 3): the proxy resolves it, e.g. a Sotto peer name such as `exit`.
    case domain(String)

    var description: String {
        switch self {
        case .ipv4(let bytes):
            return bytes.map(String.init).joined(separator: ".")
        case .ipv6(let bytes):
            return "[" + Self.formatIPv6(bytes) + "]"
        case .domain(let name):
            return name
        }
    }

    /// The literal without brackets, as `SocketAddress(ipAddress:port:)` wants it.
    var addressLiteral: String? {
        switch self {
        case .ipv4: return description
        case .ipv6(let bytes): return Self.formatIPv6(bytes)
        case .domain: return nil
        }
    }

    var isLoopback: Bool {
        switch self {
        case .ipv4(let bytes):
            return bytes.first == 127
        case .ipv6(let bytes):
            return bytes == [UInt8](repeating: 0, count: 15) + [1]
        case .domain(let name):
            return name.lowercased() == "localhost"
        }
    }

    var isUnspecified: Bool {
        switch self {
        case .ipv4(let bytes), .ipv6(let bytes): return bytes.allSatisfy { $0 == 0 }
        case .domain: return false
        }
    }

    /// Parses an IP literal; anything else that is a plausible DNS label sequence is a domain.
    static func parse(_ text: String) -> BenchHost? {
        if let v4 = parseIPv4(text) { return .ipv4(v4) }
        if let v6 = parseIPv6(text) { return .ipv6(v6) }
        let allowed = text.unicodeScalars.allSatisfy { scalar in
            (scalar.isASCII && (scalar.properties.isAlphabetic || ("0"..."9").contains(scalar)))
                || scalar == "-" || scalar == "_" || scalar == "."
        }
        guard !text.isEmpty, text.utf8.count <= 255, allowed else { return nil }
        return .domain(text)
    }

    static func parseIPv4(_ text: String) -> [UInt8]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy(\.isNumber),
                  let value = UInt8(part) else { return nil }
            bytes.append(value)
        }
        return bytes
    }

    static func parseIPv6(_ text: String) -> [UInt8]? {
        guard text.contains(":") else { return nil }
        var storage = in6_addr()
        let ok = text.withCString { inet_pton(AF_INET6, $0, &storage) }
        guard ok == 1 else { return nil }
        return withUnsafeBytes(of: &storage) { Array($0) }
    }

    static func formatIPv6(_ bytes: [UInt8]) -> String {
        var storage = in6_addr()
        withUnsafeMutableBytes(of: &storage) { raw in
            for (index, byte) in bytes.prefix(16).enumerated() { raw[index] = byte }
        }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        guard inet_ntop(AF_INET6, &storage, &text, socklen_t(text.count)) != nil else {
            return bytes.map { String($0, radix: 16) }.joined(separator: ":")
        }
        return String(cString: text)
    }
}

/// `host:port` or `[v6]:port`.
struct Endpoint: Equatable, Hashable, CustomStringConvertible {
    var host: BenchHost
    var port: UInt16

    var description: String { "\(host):\(port)" }

    init(host: BenchHost, port: UInt16) {
        self.host = host
        self.port = port
    }

    init(parsing text: String) throws {
        let hostText: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else {
                throw EndpointError.malformed(text, reason: "an IPv6 address needs a closing ']'")
            }
            hostText = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else {
                throw EndpointError.malformed(text, reason: "expected ':PORT' after ']'")
            }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                throw EndpointError.malformed(text, reason: "expected HOST:PORT")
            }
            hostText = text[..<colon]
            portText = text[text.index(after: colon)...]
            if hostText.contains(":") {
                throw EndpointError.malformed(text, reason: "write an IPv6 address as [ADDRESS]:PORT")
            }
        }
        guard let port = UInt16(portText), port != 0 else {
            throw EndpointError.malformed(text, reason: "port must be 1-65535, got '\(portText)'")
        }
        guard let host = BenchHost.parse(String(hostText)) else {
            throw EndpointError.malformed(text, reason: "'\(hostText)' is neither an IP address nor a host name")
        }
        if case .domain = host, text.hasPrefix("[") {
            throw EndpointError.malformed(text, reason: "'\(hostText)' in brackets is not an IPv6 address")
        }
        self.init(host: host, port: port)
    }

    /// The benchmark only ever sends to this machine. An IP literal must be loopback; a name is
    /// accepted only where the proxy resolves it (`allowPeerName`) and only when it is a single
    /// label such as a Sotto peer name (`exit`), so that a typo cannot aim traffic at a public host.
    func requireLoopback(role: String, allowPeerName: Bool) throws {
        switch host {
        case .ipv4, .ipv6:
            guard host.isLoopback else { throw EndpointError.notLoopback(role: role, endpoint: self) }
        case .domain(let name):
            if host.isLoopback { return }
            guard allowPeerName, !name.contains(".") else {
                throw EndpointError.nameNotAllowed(role: role, endpoint: self, proxied: allowPeerName)
            }
        }
    }
}

enum EndpointError: Error, CustomStringConvertible, Equatable {
    case malformed(String, reason: String)
    case notLoopback(role: String, endpoint: Endpoint)
    case nameNotAllowed(role: String, endpoint: Endpoint, proxied: Bool)

    var description: String {
        switch self {
        case .malformed(let text, let reason):
            return "'\(text)': \(reason)"
        case .notLoopback(let role, let endpoint):
            return "\(role) \(endpoint) is not a loopback address; the benchmark only talks to 127.0.0.0/8 or [::1]"
        case .nameNotAllowed(let role, let endpoint, let proxied):
            if proxied {
                return "\(role) \(endpoint): only single-label names (a peer name such as 'exit') or localhost may be sent to the proxy; use a loopback IP otherwise"
            }
            return "\(role) \(endpoint): give a loopback IP address (127.0.0.1 or [::1]); names are only sent unresolved through --socks"
        }
    }
}
