import NIOCore
import NIOSOCKS

/// The client side of a SOCKS5 handshake (RFC 1928 sections 3 to 6, RFC 1929), without I/O: send
/// `greeting`, then feed every read into `receive(_:)` and do what the returned action says.
/// NIOSOCKS's own client handler offers no authentication only; this one can also give a
/// username/password, e.g. per-profile credentials to tor's SocksPort with IsolateSOCKSAuth.
///
/// The messages the server answers after the greeting (the username/password request, the
/// CONNECT or UDP ASSOCIATE request) are sent one at a time, each after the server's answer to the
/// one before, as RFC 1928 describes the exchange.
public struct SOCKS5ClientNegotiation: Sendable {
    /// Which authentication methods the greeting offers (RFC 1928 section 3).
    public enum Authentication: Hashable, Sendable {
        /// Method 0x00 only.
        case none
        /// Method 0x02 (RFC 1929) only.
        case usernamePassword(UsernamePasswordRequest)
        /// Both, 0x02 first; the server chooses, and gets the credentials if it chooses 0x02.
        case noneOrUsernamePassword(UsernamePasswordRequest)
    }

    /// What the caller does next.
    public enum Action: Hashable, Sendable {
        /// The buffered bytes are not a whole message yet: read more and call `receive(_:)` again.
        case waitForMoreData
        /// Write these bytes to the server, then wait for its answer.
        case send([UInt8])
        /// The server accepted the request. For CONNECT the stream now carries application data,
        /// starting with any bytes still readable in the buffer; for UDP ASSOCIATE `boundAddress` is
        /// the relay to send datagrams to (an all-zero address means the server's own address).
        case established(boundAddress: SOCKSAddress)
        /// The negotiation failed; close the connection.
        case failed(SOCKS5ClientError)
    }

    /// The server message being waited for, named in errors.
    public enum Step: Hashable, Sendable, CustomStringConvertible {
        case methodSelection
        case authentication
        case reply

        public var description: String {
            switch self {
            case .methodSelection: return "the method selection"
            case .authentication: return "the username/password status"
            case .reply: return "the reply to the request"
            }
        }
    }

    private enum State: Hashable, Sendable {
        case awaiting(Step)
        case established(SOCKSAddress)
        case failed(SOCKS5ClientError)
    }

    public let command: SOCKSCommand
    public let destination: SOCKSAddress
    public let authentication: Authentication
    /// The first message: write it as soon as the connection is up.
    public let greeting: [UInt8]

    private let offeredMethods: [AuthenticationMethod]
    private let requestBytes: [UInt8]
    private var state: State = .awaiting(.methodSelection)

    /// Throws `UsernamePasswordError` for credentials that do not fit RFC 1929 and
    /// `SOCKSAddressError` for a destination with no SOCKS5 encoding.
    /// For UDP ASSOCIATE `destination` is the address the client will send datagrams from, or an
    /// all-zero address when it does not know it yet (RFC 1928 section 4).
    public init(command: SOCKSCommand, destination: SOCKSAddress, authentication: Authentication) throws {
        self.command = command
        self.destination = destination
        self.authentication = authentication

        switch authentication {
        case .none:
            self.offeredMethods = [.noneRequired]
        case .usernamePassword(let credentials):
            try credentials.checkEncodable()
            self.offeredMethods = [.usernamePassword]
        case .noneOrUsernamePassword(let credentials):
            try credentials.checkEncodable()
            self.offeredMethods = [.usernamePassword, .noneRequired]
        }
        try SOCKSAddressField.checkEncodable(destination)

        // Section 3: VER, NMETHODS, METHODS.
        self.greeting = [Self.socksVersion, UInt8(self.offeredMethods.count)] + self.offeredMethods.map(\.value)

        // Section 4: VER, CMD, RSV, DST.ADDR, DST.PORT.
        var request = ByteBuffer()
        request.writeInteger(Self.socksVersion)
        request.writeInteger(command.value)
        request.writeInteger(UInt8(0))
        _ = SOCKSAddressField.write(destination, to: &request)
        self.requestBytes = Array(request.readableBytesView)
    }

    static let socksVersion: UInt8 = 0x05

    /// Reads the server's next message from `buffer`. Consumes it when complete and nothing when it
    /// is not. After `.established` any bytes past the reply stay in `buffer`. After a terminal
    /// action (`.established`, `.failed`) further calls return it again.
    public mutating func receive(_ buffer: inout ByteBuffer) -> Action {
        switch self.state {
        case .established(let boundAddress):
            return .established(boundAddress: boundAddress)
        case .failed(let error):
            return .failed(error)
        case .awaiting(let step):
            let start = buffer.readerIndex
            do {
                let action: Action
                switch step {
                case .methodSelection: action = try self.receiveMethodSelection(&buffer)
                case .authentication: action = try self.receiveAuthenticationStatus(&buffer)
                case .reply: action = try self.receiveReply(&buffer)
                }
                if action == .waitForMoreData {
                    buffer.moveReaderIndex(to: start)
                }
                return action
            } catch let error as SOCKS5ClientError {
                self.state = .failed(error)
                return .failed(error)
            } catch {
                // The readers above throw nothing else.
                preconditionFailure("unexpected error \(error)")
            }
        }
    }

    /// The server closed the connection. `unparsedBytes` is how many bytes of an incomplete message
    /// were buffered, for the error's description. After `.established` this returns it again: what
    /// the end of the stream means then is the caller's business.
    public mutating func receiveEndOfInput(unparsedBytes: Int = 0) -> Action {
        switch self.state {
        case .established(let boundAddress):
            return .established(boundAddress: boundAddress)
        case .failed(let error):
            return .failed(error)
        case .awaiting(let step):
            let error = SOCKS5ClientError.closedEarly(during: step, unparsedBytes: unparsedBytes)
            self.state = .failed(error)
            return .failed(error)
        }
    }

    /// RFC 1928 section 3: VER, METHOD.
    private mutating func receiveMethodSelection(_ buffer: inout ByteBuffer) throws -> Action {
        guard let version = buffer.readInteger(as: UInt8.self) else { return .waitForMoreData }
        guard version == Self.socksVersion else {
            throw SOCKS5ClientError.unexpectedVersion(version, expected: Self.socksVersion, during: .methodSelection)
        }
        guard let method = buffer.readInteger(as: UInt8.self).map(AuthenticationMethod.init(value:)) else {
            return .waitForMoreData
        }
        if method == .noneAcceptable {
            throw SOCKS5ClientError.noAcceptableMethod(offered: self.offeredMethods)
        }
        guard self.offeredMethods.contains(method) else {
            throw SOCKS5ClientError.methodNotOffered(method, offered: self.offeredMethods)
        }
        try Self.requireNothingMore(in: buffer, after: .methodSelection)

        switch (method, self.authentication) {
        case (.usernamePassword, .usernamePassword(let credentials)),
            (.usernamePassword, .noneOrUsernamePassword(let credentials)):
            var message = ByteBuffer()
            // Checked in init.
            try! message.writeUsernamePasswordRequest(credentials)
            self.state = .awaiting(.authentication)
            return .send(Array(message.readableBytesView))
        default:
            self.state = .awaiting(.reply)
            return .send(self.requestBytes)
        }
    }

    /// RFC 1929 section 2: VER (0x01), STATUS.
    private mutating func receiveAuthenticationStatus(_ buffer: inout ByteBuffer) throws -> Action {
        guard let version = buffer.readInteger(as: UInt8.self) else { return .waitForMoreData }
        guard version == UsernamePasswordRequest.version else {
            throw SOCKS5ClientError.unexpectedVersion(
                version,
                expected: UsernamePasswordRequest.version,
                during: .authentication
            )
        }
        guard let status = buffer.readInteger(as: UInt8.self) else { return .waitForMoreData }
        guard status == UsernamePasswordReply.successStatus else {
            throw SOCKS5ClientError.authenticationRejected(username: self.username ?? "", status: status)
        }
        try Self.requireNothingMore(in: buffer, after: .authentication)
        self.state = .awaiting(.reply)
        return .send(self.requestBytes)
    }

    /// RFC 1928 section 6: VER, REP, RSV, BND.ADDR, BND.PORT.
    private mutating func receiveReply(_ buffer: inout ByteBuffer) throws -> Action {
        guard let version = buffer.readInteger(as: UInt8.self) else { return .waitForMoreData }
        guard version == Self.socksVersion else {
            throw SOCKS5ClientError.unexpectedVersion(version, expected: Self.socksVersion, during: .reply)
        }
        guard let reply = buffer.readInteger(as: UInt8.self).map(SOCKSServerReply.init(value:)) else {
            return .waitForMoreData
        }
        // A failure is final whatever follows, so it is reported without waiting for the address.
        guard reply == .succeeded else {
            throw SOCKS5ClientError.requestFailed(self.command, destination: self.destination, reply: reply)
        }
        guard let reserved = buffer.readInteger(as: UInt8.self) else { return .waitForMoreData }
        guard reserved == 0 else {
            throw SOCKS5ClientError.reservedNotZero(reserved)
        }
        let parse: SOCKSAddressField.Parse
        do {
            parse = try SOCKSAddressField.parse(buffer, at: buffer.readerIndex)
        } catch let error as SOCKSAddressError {
            throw SOCKS5ClientError.malformedBoundAddress(error)
        }
        switch parse {
        case .incomplete:
            return .waitForMoreData
        case .complete(let boundAddress, let length):
            buffer.moveReaderIndex(forwardBy: length)
            self.state = .established(boundAddress)
            return .established(boundAddress: boundAddress)
        }
    }

    /// Until the client sends its next message the server has nothing to say; bytes now mean the
    /// two sides disagree about the protocol, and waiting would hang.
    private static func requireNothingMore(in buffer: ByteBuffer, after step: Step) throws {
        guard buffer.readableBytes == 0 else {
            throw SOCKS5ClientError.unexpectedBytes(count: buffer.readableBytes, after: step)
        }
    }

    private var username: String? {
        switch self.authentication {
        case .none: return nil
        case .usernamePassword(let credentials), .noneOrUsernamePassword(let credentials):
            return credentials.username
        }
    }
}

/// Why a SOCKS5 client negotiation failed. Descriptions never contain the password.
public enum SOCKS5ClientError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The version byte of a server message is wrong: 0x05 for SOCKS5 messages, 0x01 for the
    /// username/password status.
    case unexpectedVersion(UInt8, expected: UInt8, during: SOCKS5ClientNegotiation.Step)
    /// The server chose 0xFF: it accepts none of the offered methods.
    case noAcceptableMethod(offered: [AuthenticationMethod])
    /// The server chose a method the greeting did not offer.
    case methodNotOffered(AuthenticationMethod, offered: [AuthenticationMethod])
    /// The server refused the username/password (RFC 1929 STATUS not 0).
    case authenticationRejected(username: String, status: UInt8)
    /// The server refused the request (RFC 1928 section 6 REP not 0).
    case requestFailed(SOCKSCommand, destination: SOCKSAddress, reply: SOCKSServerReply)
    /// The reply's RSV byte is not 0.
    case reservedNotZero(UInt8)
    case malformedBoundAddress(SOCKSAddressError)
    /// The server sent bytes before the client's next message.
    case unexpectedBytes(count: Int, after: SOCKS5ClientNegotiation.Step)
    /// The server closed the connection before the negotiation finished.
    case closedEarly(during: SOCKS5ClientNegotiation.Step, unparsedBytes: Int)

    public var description: String {
        let prefix = "SOCKS5 server: "
        switch self {
        case .unexpectedVersion(let version, let expected, let step):
            return prefix + "\(step) starts with version \(hexByte(version)), not \(hexByte(expected))"
                + Self.versionHint(version, expected: expected)
        case .noAcceptableMethod(let offered):
            return prefix + "accepts none of the offered authentication methods (\(Self.names(offered))); "
                + "check whether it requires credentials or supports username/password"
        case .methodNotOffered(let method, let offered):
            return prefix + "chose authentication method \(hexByte(method.value)), which was not offered "
                + "(\(Self.names(offered)))"
        case .authenticationRejected(let username, let status):
            return prefix + "rejected the credentials of username '\(escaped(username))' "
                + "(RFC 1929 status \(hexByte(status))); check the credentials configured for it"
        case .requestFailed(let command, let destination, let reply):
            return prefix + "refused \(Self.name(command)) \(SOCKSAddressText(destination)): reply "
                + "\(hexByte(reply.value)), \(Self.meaning(reply))"
        case .reservedNotZero(let reserved):
            return prefix + "the reply's reserved byte is \(hexByte(reserved)), not 0"
        case .malformedBoundAddress(let error):
            return prefix + "the reply's bound address: \(error)"
        case .unexpectedBytes(let count, let step):
            return prefix + "sent \(count) unexpected bytes after \(step), before the client's next "
                + "message; is this a SOCKS5 server?"
        case .closedEarly(let step, let unparsedBytes):
            let partial = unparsedBytes > 0 ? " after \(unparsedBytes) bytes of it" : ""
            return prefix + "closed the connection while the client waited for \(step)\(partial)"
        }
    }

    /// RFC 1928 section 6, and the onion service codes tor sends with `SocksPort ... ExtendedErrors`
    /// (tor proposal 304, section 2.2).
    public static func meaning(_ reply: SOCKSServerReply) -> String {
        switch reply.value {
        case 0x00: return "succeeded"
        case 0x01: return "general SOCKS server failure"
        case 0x02: return "connection not allowed by ruleset"
        case 0x03: return "network unreachable"
        case 0x04: return "host unreachable"
        case 0x05: return "connection refused"
        case 0x06: return "TTL expired"
        case 0x07: return "command not supported"
        case 0x08: return "address type not supported"
        case 0xF0: return "tor: onion service descriptor not found (the service is offline or the address is wrong)"
        case 0xF1: return "tor: onion service descriptor is invalid"
        case 0xF2: return "tor: onion service introduction failed"
        case 0xF3: return "tor: onion service rendezvous failed"
        case 0xF4: return "tor: onion service requires client authorization, and tor has no key for it"
        case 0xF5: return "tor: onion service rejected the client authorization key"
        case 0xF6: return "tor: onion address is invalid"
        case 0xF7: return "tor: onion service introduction timed out"
        default: return "an unassigned reply code"
        }
    }

    private static func versionHint(_ version: UInt8, expected: UInt8) -> String {
        switch version {
        case UInt8(ascii: "H"):
            return " ('H': an HTTP server answers here, not a SOCKS5 server)"
        case 0x00 where expected == 0x05, 0x04 where expected == 0x05:
            return " (a SOCKS4 answer: the server does not speak SOCKS5)"
        default:
            return ""
        }
    }

    private static func name(_ command: SOCKSCommand) -> String {
        switch command {
        case .connect: return "CONNECT"
        case .bind: return "BIND"
        case .udpAssociate: return "UDP ASSOCIATE"
        default: return "command \(hexByte(command.value))"
        }
    }

    private static func names(_ methods: [AuthenticationMethod]) -> String {
        methods.map { method in
            switch method {
            case .noneRequired: return "0x00 no authentication"
            case .gssapi: return "0x01 GSSAPI"
            case .usernamePassword: return "0x02 username/password"
            default: return hexByte(method.value)
            }
        }.joined(separator: ", ")
    }
}
