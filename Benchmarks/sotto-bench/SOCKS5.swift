/// The client side of SOCKS5 (RFC 1928) with username/password authentication (RFC 1929),
/// written out here so that the benchmark shares no code with the gateway it measures.
/// Pure: bytes in, values out.
enum SOCKS5 {
    static let version: UInt8 = 0x05

    enum Method: UInt8 {
        case noAuthentication = 0x00
        case usernamePassword = 0x02
        case noAcceptable = 0xFF
    }

    enum Command: UInt8, CustomStringConvertible {
        case connect = 0x01
        case udpAssociate = 0x03

        var description: String { self == .connect ? "CONNECT" : "UDP ASSOCIATE" }
    }

    enum AddressType: UInt8 {
        case ipv4 = 0x01
        case domain = 0x03
        case ipv6 = 0x04
    }

    struct Credentials: Equatable {
        var username: String
        var password: String
    }

    /// RFC 1928 section 3: VER NMETHODS METHODS.
    static func greeting(offering credentials: Credentials?) -> [UInt8] {
        if credentials != nil {
            return [version, 2, Method.noAuthentication.rawValue, Method.usernamePassword.rawValue]
        }
        return [version, 1, Method.noAuthentication.rawValue]
    }

    /// RFC 1929 section 2: VER(1) ULEN UNAME PLEN PASSWD, each field 1-255 bytes.
    static func authenticationRequest(_ credentials: Credentials) throws -> [UInt8] {
        let user = Array(credentials.username.utf8)
        let pass = Array(credentials.password.utf8)
        guard (1...255).contains(user.count) else { throw SOCKS5Error.credentialLength(field: "username", length: user.count) }
        guard (1...255).contains(pass.count) else { throw SOCKS5Error.credentialLength(field: "password", length: pass.count) }
        return [0x01, UInt8(user.count)] + user + [UInt8(pass.count)] + pass
    }

    /// RFC 1928 section 4: VER CMD RSV ATYP DST.ADDR DST.PORT.
    static func request(_ command: Command, to destination: Endpoint) throws -> [UInt8] {
        [version, command.rawValue, 0x00] + (try encodeAddress(destination))
    }

    /// RFC 1928 section 5: ATYP, then 4, 1+n or 16 address bytes, then the port big-endian.
    static func encodeAddress(_ endpoint: Endpoint) throws -> [UInt8] {
        var bytes: [UInt8]
        switch endpoint.host {
        case .ipv4(let address):
            bytes = [AddressType.ipv4.rawValue] + address
        case .ipv6(let address):
            bytes = [AddressType.ipv6.rawValue] + address
        case .domain(let name):
            let utf8 = Array(name.utf8)
            guard (1...255).contains(utf8.count) else { throw SOCKS5Error.domainLength(utf8.count) }
            bytes = [AddressType.domain.rawValue, UInt8(utf8.count)] + utf8
        }
        bytes.append(UInt8(endpoint.port >> 8))
        bytes.append(UInt8(endpoint.port & 0xFF))
        return bytes
    }

    /// Decodes an RFC 1928 section 5 address starting at `offset`; nil when more bytes are needed.
    /// Returns the endpoint and the index just past it.
    static func decodeAddress(_ bytes: [UInt8], at offset: Int) throws -> (Endpoint, Int)? {
        guard offset < bytes.count else { return nil }
        let length: Int
        let start: Int
        switch AddressType(rawValue: bytes[offset]) {
        case .ipv4: length = 4; start = offset + 1
        case .ipv6: length = 16; start = offset + 1
        case .domain:
            guard offset + 1 < bytes.count else { return nil }
            length = Int(bytes[offset + 1])
            guard length > 0 else { throw SOCKS5Error.domainLength(0) }
            start = offset + 2
        case nil:
            throw SOCKS5Error.unknownAddressType(bytes[offset])
        }
        let end = start + length + 2
        guard end <= bytes.count else { return nil }
        let raw = Array(bytes[start..<start + length])
        let host: BenchHost
        switch AddressType(rawValue: bytes[offset])! {
        case .ipv4: host = .ipv4(raw)
        case .ipv6: host = .ipv6(raw)
        case .domain:
            guard let name = String(validating: raw, as: UTF8.self) else { throw SOCKS5Error.domainNotUTF8 }
            host = .domain(name)
        }
        let port = UInt16(bytes[end - 2]) << 8 | UInt16(bytes[end - 1])
        return (Endpoint(host: host, port: port), end)
    }

    /// RFC 1928 section 7: RSV(2) FRAG ATYP DST.ADDR DST.PORT DATA.
    static func udpHeader(to destination: Endpoint) throws -> [UInt8] {
        [0x00, 0x00, 0x00] + (try encodeAddress(destination))
    }

    /// Parses a relayed datagram; returns the address it came from and where the payload starts.
    /// A fragment (FRAG != 0) is refused: RFC 1928 lets a client drop what it cannot reassemble,
    /// and no proxy under test fragments.
    static func parseUDPDatagram(_ bytes: [UInt8]) throws -> (source: Endpoint, payloadOffset: Int) {
        guard bytes.count >= 4 else { throw SOCKS5Error.truncatedDatagram(bytes.count) }
        guard bytes[0] == 0, bytes[1] == 0 else { throw SOCKS5Error.reservedNotZero }
        guard bytes[2] == 0 else { throw SOCKS5Error.fragmented(bytes[2]) }
        guard let (source, end) = try decodeAddress(bytes, at: 3) else {
            throw SOCKS5Error.truncatedDatagram(bytes.count)
        }
        return (source, end)
    }

    /// RFC 1928 section 6 reply codes.
    static func replyMeaning(_ code: UInt8) -> String {
        switch code {
        case 0x01: return "general SOCKS server failure"
        case 0x02: return "connection not allowed by ruleset"
        case 0x03: return "network unreachable"
        case 0x04: return "host unreachable"
        case 0x05: return "connection refused"
        case 0x06: return "TTL expired"
        case 0x07: return "command not supported"
        case 0x08: return "address type not supported"
        default: return "unassigned reply code"
        }
    }
}

enum SOCKS5Error: Error, Equatable, CustomStringConvertible {
    case wrongVersion(UInt8)
    case noAcceptableMethod
    case unofferedMethod(UInt8)
    case authenticationRejected(status: UInt8)
    case wrongAuthenticationVersion(UInt8)
    case requestRefused(command: SOCKS5.Command, destination: Endpoint, code: UInt8)
    case unknownAddressType(UInt8)
    case domainLength(Int)
    case domainNotUTF8
    case credentialLength(field: String, length: Int)
    case truncatedDatagram(Int)
    case reservedNotZero
    case fragmented(UInt8)
    case closedDuringHandshake

    var description: String {
        switch self {
        case .wrongVersion(let v):
            return "SOCKS server answered with version \(v), expected 5: is this port a SOCKS5 server?"
        case .noAcceptableMethod:
            return "SOCKS server accepted none of the offered methods (no authentication, username/password): give --user/--password if it requires them"
        case .unofferedMethod(let m):
            return "SOCKS server chose method \(m), which the client did not offer"
        case .authenticationRejected(let status):
            return "SOCKS server rejected the username/password (RFC 1929 status \(status))"
        case .wrongAuthenticationVersion(let v):
            return "SOCKS server answered the username/password request with version \(v), expected 1 (RFC 1929)"
        case .requestRefused(let command, let destination, let code):
            return "SOCKS \(command) to \(destination) refused: \(SOCKS5.replyMeaning(code)) (reply \(code))"
        case .unknownAddressType(let t):
            return "SOCKS address type \(t) is none of 1 (IPv4), 3 (domain), 4 (IPv6)"
        case .domainLength(let n):
            return "SOCKS domain name must be 1-255 bytes, got \(n)"
        case .domainNotUTF8:
            return "SOCKS domain name is not valid UTF-8"
        case .credentialLength(let field, let length):
            return "RFC 1929 \(field) must be 1-255 bytes, got \(length)"
        case .truncatedDatagram(let n):
            return "relayed datagram of \(n) bytes is shorter than its RFC 1928 section 7 header"
        case .reservedNotZero:
            return "relayed datagram has a non-zero RSV field (RFC 1928 section 7)"
        case .fragmented(let frag):
            return "relayed datagram is fragment \(frag); SOCKS UDP fragmentation is not supported"
        case .closedDuringHandshake:
            return "SOCKS server closed the connection during the handshake"
        }
    }
}

/// The client's half of the SOCKS5 negotiation as a state machine: feed it what the server sent,
/// it says what to send next or what the server bound.
struct SOCKS5ClientHandshake {
    enum Action: Equatable {
        case needMore
        case send([UInt8])
        /// BND.ADDR/BND.PORT of the reply (the relay for UDP ASSOCIATE) and any bytes the
        /// server sent after the reply, which belong to the application.
        case established(bound: Endpoint, leftover: [UInt8])
    }

    private enum State {
        case initial
        case awaitingMethod
        case awaitingAuthentication
        case awaitingReply
        case established
    }

    let credentials: SOCKS5.Credentials?
    let command: SOCKS5.Command
    let destination: Endpoint
    private var state: State = .initial
    private var buffer: [UInt8] = []

    init(credentials: SOCKS5.Credentials?, command: SOCKS5.Command, destination: Endpoint) {
        self.credentials = credentials
        self.command = command
        self.destination = destination
    }

    mutating func start() -> [UInt8] {
        precondition(state == .initial, "start() called twice")
        state = .awaitingMethod
        return SOCKS5.greeting(offering: credentials)
    }

    mutating func receive(_ bytes: [UInt8]) throws -> Action {
        buffer += bytes
        switch state {
        case .initial, .established:
            preconditionFailure("receive() outside the handshake")
        case .awaitingMethod:
            guard buffer.count >= 2 else { return .needMore }
            guard buffer[0] == SOCKS5.version else { throw SOCKS5Error.wrongVersion(buffer[0]) }
            let method = buffer[1]
            buffer.removeFirst(2)
            switch SOCKS5.Method(rawValue: method) {
            case .noAuthentication:
                state = .awaitingReply
                return .send(try SOCKS5.request(command, to: destination))
            case .usernamePassword:
                guard let credentials else { throw SOCKS5Error.unofferedMethod(method) }
                state = .awaitingAuthentication
                return .send(try SOCKS5.authenticationRequest(credentials))
            case .noAcceptable:
                throw SOCKS5Error.noAcceptableMethod
            case nil:
                throw SOCKS5Error.unofferedMethod(method)
            }
        case .awaitingAuthentication:
            guard buffer.count >= 2 else { return .needMore }
            guard buffer[0] == 0x01 else { throw SOCKS5Error.wrongAuthenticationVersion(buffer[0]) }
            guard buffer[1] == 0x00 else { throw SOCKS5Error.authenticationRejected(status: buffer[1]) }
            buffer.removeFirst(2)
            state = .awaitingReply
            return .send(try SOCKS5.request(command, to: destination))
        case .awaitingReply:
            // RFC 1928 section 6: VER REP RSV ATYP BND.ADDR BND.PORT
            guard buffer.count >= 2 else { return .needMore }
            guard buffer[0] == SOCKS5.version else { throw SOCKS5Error.wrongVersion(buffer[0]) }
            guard buffer[1] == 0x00 else {
                throw SOCKS5Error.requestRefused(command: command, destination: destination, code: buffer[1])
            }
            // decodeAddress succeeds once at most 262 bytes are here, so the buffer stays bounded.
            guard let (bound, end) = try SOCKS5.decodeAddress(buffer, at: 3) else { return .needMore }
            let leftover = Array(buffer[end...])
            buffer = []
            state = .established
            return .established(bound: bound, leftover: leftover)
        }
    }
}
