extension PeerAddress {
    /// Why an address was refused; `description` is a sentence for the user.
    public struct ParseError: Error, CustomStringConvertible, Equatable, Sendable {
        public let input: String
        public let reason: String
        public var description: String { "'\(input)' is not a peer address: \(reason)" }
    }

    /// Characters of base32 before ".onion" in a v3 onion address (rend-spec-v3 6: 35 bytes).
    static let onionBase32Length = 56
    /// Characters of base32 before ".b32.i2p" (a SHA-256 destination hash, 32 bytes).
    static let i2pBase32Length = 52

    /// Parses `xxxx.onion[:port]` (v3 only), `xxxx.b32.i2p[:port]` or `host:port`.
    /// Onion and I2P addresses are case-insensitive and come back in lower case.
    public static func parse(_ s: String) throws -> PeerAddress {
        func fail(_ reason: String) -> ParseError { ParseError(input: s, reason: reason) }
        let (hostPart, port) = try splitOptionalPort(s, fail: fail)
        let host = hostPart.lowercased()

        if host.hasSuffix(".onion") {
            let label = String(host.dropLast(".onion".count))
            guard !label.contains(".") else { throw fail("a subdomain of an onion address is not supported") }
            guard label.count == onionBase32Length else {
                throw fail("a v3 onion address has \(onionBase32Length) base32 characters before '.onion', got \(label.count)"
                    + (label.count == 16 ? " (v2 onion addresses no longer work)" : ""))
            }
            // rend-spec-v3 6: base32(PUBKEY(32) | CHECKSUM(2) | VERSION(1)), VERSION = 3.
            guard let bytes = Base32.decode(label) else { throw fail("the part before '.onion' is not base32 (a-z, 2-7)") }
            guard bytes.count == 35, bytes[34] == 3 else { throw fail("not a version 3 onion address (damaged or mistyped?)") }
            return .onion(host, port: port)
        }
        if host.hasSuffix(".i2p") {
            guard host.hasSuffix(".b32.i2p") else {
                throw fail("only .b32.i2p addresses are supported, not address-book names")
            }
            let label = String(host.dropLast(".b32.i2p".count))
            guard label.count == i2pBase32Length else {
                throw fail("a .b32.i2p address has \(i2pBase32Length) base32 characters before '.b32.i2p', got \(label.count)")
            }
            guard Base32.decode(label) != nil else { throw fail("the part before '.b32.i2p' is not base32 (a-z, 2-7)") }
            return .i2p(host, port: port)
        }
        let hostPort: HostPort
        do {
            hostPort = try HostPort.parse(s)
        } catch let error as HostPort.ParseError {
            throw fail(error.reason + " (or give a .onion / .b32.i2p address)")
        }
        guard hostPort.port != 0 else { throw fail("port 0 cannot be connected to") }
        return .hostPort(hostPort)
    }

    /// The host of an onion or I2P address, nil for host:port.
    public var anonymousHost: String? {
        switch self {
        case .onion(let host, _), .i2p(let host, _): return host
        case .hostPort: return nil
        }
    }

    /// Splits a trailing `:PORT` off an onion / I2P address; host:port addresses keep theirs.
    private static func splitOptionalPort(_ s: String, fail: (String) -> ParseError) throws -> (Substring, Int?) {
        guard !s.hasPrefix("["), let colon = s.lastIndex(of: ":") else { return (Substring(s), nil) }
        let host = s[..<colon]
        let lowered = host.lowercased()
        guard lowered.hasSuffix(".onion") || lowered.hasSuffix(".i2p") else { return (Substring(s), nil) }
        let portText = s[s.index(after: colon)...]
        guard portText.utf8.count <= 5, !portText.isEmpty, portText.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
              let port = Int(portText), (1...65535).contains(port)
        else { throw fail("the port must be a number from 1 to 65535") }
        return (host, port)
    }
}
