/// The authentication exchange on a fresh control connection, without I/O (control-spec 3.5, 3.21,
/// 3.24). The caller writes the commands it returns, feeds back tor's replies, and reads the cookie
/// file when asked (so file access, and its errors, stay at the edge).
///
///     PROTOCOLINFO 1                  -> methods, cookie file
///     (read cookie file)              -> caller: provideCookie / cookieUnavailable
///     AUTHCHALLENGE SAFECOOKIE <hex>  -> server hash (checked) and nonce      [SAFECOOKIE]
///     AUTHENTICATE <hex|"password">   -> 250 OK
///
/// Preference: SAFECOOKIE > COOKIE > HASHEDPASSWORD > NULL, among what tor offers and what we have.
/// Tor closes the connection after a failed AUTHENTICATE, so there is no retry with another method.
public struct TorAuthenticator: Sendable {
    public enum Action: Sendable, Equatable {
        /// Write this command.
        case send(TorCommand)
        /// Read this cookie file and call `provideCookie(_:)` or `cookieUnavailable(_:)`.
        case readCookieFile(path: String)
        /// Done: the connection is authenticated.
        case authenticated(method: TorAuthMethod, protocolInfo: ProtocolInfo)
    }

    private enum State: Sendable {
        case idle
        case awaitingProtocolInfo
        case awaitingCookie(ProtocolInfo, path: String)
        case awaitingChallenge(ProtocolInfo, cookie: [UInt8])
        case awaitingAuthenticate(ProtocolInfo, TorAuthMethod)
        case authenticated
        case failed(TorAuthenticationError)
    }

    private var state: State = .idle
    private let password: String?
    private var cookie: [UInt8]?
    private let clientNonce: [UInt8]
    private let controlPort: String?

    /// - Parameters:
    ///   - controlPort: how to name the control port in errors ("127.0.0.1:9051").
    ///   - password: the HASHEDPASSWORD secret, if configured.
    ///   - cookie: the cookie's contents if already known (a tor Sotto launched); otherwise the
    ///     authenticator asks for the file tor names in PROTOCOLINFO.
    ///   - clientNonce: fresh random bytes for SAFECOOKIE (32 recommended); passed in so the machine
    ///     stays deterministic.
    public init(controlPort: String? = nil, password: String? = nil, cookie: [UInt8]? = nil, clientNonce: [UInt8]) {
        self.controlPort = controlPort
        self.password = password
        self.cookie = cookie
        self.clientNonce = clientNonce
    }

    public var isAuthenticated: Bool { if case .authenticated = state { return true } else { return false } }

    /// The first command: `PROTOCOLINFO 1`.
    public mutating func start() throws -> Action {
        guard case .idle = state else { throw fail(nil, .misuse("start() called twice")) }
        state = .awaitingProtocolInfo
        return .send(.protocolInfo())
    }

    /// Feeds tor's reply to the last command sent.
    public mutating func receive(_ reply: TorReply) throws -> Action {
        switch state {
        case .awaitingProtocolInfo:
            guard reply.isSuccess else { throw fail(nil, .refused(TorReplyError(reply: reply, command: "PROTOCOLINFO"))) }
            let info: ProtocolInfo
            do { info = try ProtocolInfo(reply: reply) } catch { throw fail(nil, .malformed("\(error)")) }
            return try choose(info)

        case let .awaitingChallenge(info, cookie):
            guard reply.isSuccess else {
                throw fail(.safeCookie, .refused(TorReplyError(reply: reply, command: "AUTHCHALLENGE")))
            }
            let challenge: AuthChallenge
            do { challenge = try AuthChallenge(reply: reply) } catch { throw fail(.safeCookie, .malformed("\(error)")) }
            do {
                guard try SafeCookie.isValidServerHash(challenge.serverHash, cookie: cookie, clientNonce: clientNonce,
                                                       serverNonce: challenge.serverNonce) else {
                    throw fail(.safeCookie, .serverHashMismatch(cookieFile: info.cookieFile))
                }
                let hash = try SafeCookie.clientHash(cookie: cookie, clientNonce: clientNonce, serverNonce: challenge.serverNonce)
                state = .awaitingAuthenticate(info, .safeCookie)
                return .send(.authenticate(token: hash))
            } catch let error as TorAuthenticationError {
                throw error
            } catch {
                throw fail(.safeCookie, .malformed("\(error)"))
            }

        case let .awaitingAuthenticate(info, method):
            guard reply.isSuccess else {
                throw fail(method, .refused(TorReplyError(reply: reply, command: "AUTHENTICATE")))
            }
            state = .authenticated
            return .authenticated(method: method, protocolInfo: info)

        case let .failed(error):
            throw error
        case .idle, .awaitingCookie, .authenticated:
            throw fail(nil, .misuse("received a reply (\(reply.status) \(reply.message)) while not waiting for one"))
        }
    }

    /// The contents of the cookie file asked for by `.readCookieFile`.
    public mutating func provideCookie(_ contents: [UInt8]) throws -> Action {
        guard case let .awaitingCookie(info, path) = state else { throw fail(nil, .misuse("provideCookie() while no cookie was asked for")) }
        guard contents.count == SafeCookie.cookieLength else {
            // "Controllers MUST NOT use the contents of a non-32-byte-long file as an authentication cookie."
            return try fallBackFromCookie(info, reason: "cookie file \(path) has \(contents.count) bytes, not \(SafeCookie.cookieLength)")
        }
        cookie = contents
        return try choose(info)
    }

    /// The cookie file could not be read; `reason` says why ("permission denied").
    public mutating func cookieUnavailable(_ reason: String) throws -> Action {
        guard case let .awaitingCookie(info, path) = state else { throw fail(nil, .misuse("cookieUnavailable() while no cookie was asked for")) }
        return try fallBackFromCookie(info, reason: "cookie file \(path) is not readable: \(reason)")
    }

    private mutating func fallBackFromCookie(_ info: ProtocolInfo, reason: String) throws -> Action {
        if let action = try nonCookieMethod(info) { return action }
        let method: TorAuthMethod = info.authMethods.contains(.safeCookie) ? .safeCookie : .cookie
        throw fail(method, .cookieUnusable(reason))
    }

    private mutating func choose(_ info: ProtocolInfo) throws -> Action {
        let offered = info.authMethods
        if offered.contains(.safeCookie) || offered.contains(.cookie) {
            if let cookie {
                guard cookie.count == SafeCookie.cookieLength else {
                    return try fallBackFromCookie(info, reason: "the cookie has \(cookie.count) bytes, not \(SafeCookie.cookieLength)")
                }
                if offered.contains(.safeCookie) {
                    let command: TorCommand
                    do { command = try .authChallenge(clientNonce: clientNonce) } catch { throw fail(.safeCookie, .malformed("\(error)")) }
                    state = .awaitingChallenge(info, cookie: cookie)
                    return .send(command)
                }
                state = .awaitingAuthenticate(info, .cookie)
                return .send(.authenticate(token: cookie))
            }
            if let path = info.cookieFile {
                state = .awaitingCookie(info, path: path)
                return .readCookieFile(path: path)
            }
        }
        if let action = try nonCookieMethod(info) { return action }
        throw fail(nil, .noUsableMethod(offered: offered, havePassword: password != nil))
    }

    private mutating func nonCookieMethod(_ info: ProtocolInfo) throws -> Action? {
        if info.authMethods.contains(.hashedPassword), let password {
            let command: TorCommand
            do { command = try .authenticate(password: password) } catch { throw fail(.hashedPassword, .malformed("\(error)")) }
            state = .awaitingAuthenticate(info, .hashedPassword)
            return .send(command)
        }
        if info.authMethods.contains(.null) {
            state = .awaitingAuthenticate(info, .null)
            return .send(.authenticate())
        }
        return nil
    }

    private mutating func fail(_ method: TorAuthMethod?, _ reason: TorAuthenticationError.Reason) -> TorAuthenticationError {
        let error = TorAuthenticationError(controlPort: controlPort, method: method, reason: reason)
        state = .failed(error)
        return error
    }
}

/// Authentication did not succeed; the description names the port, the method and tor's words:
/// `tor control port 127.0.0.1:9051 refused authentication (SAFECOOKIE): 515 Authentication failed: ...`
public struct TorAuthenticationError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Reason: Sendable, Equatable {
        /// Tor answered with an error code.
        case refused(TorReplyError)
        /// Tor's AUTHCHALLENGE hash does not match our cookie: a different tor, a stale cookie, or not tor.
        case serverHashMismatch(cookieFile: String?)
        /// The cookie could not be used and no other method is possible.
        case cookieUnusable(String)
        /// Nothing tor offers is something we can do.
        case noUsableMethod(offered: [TorAuthMethod], havePassword: Bool)
        /// A reply did not have the expected shape.
        case malformed(String)
        /// The caller drove the state machine out of order.
        case misuse(String)
    }

    public var controlPort: String?
    public var method: TorAuthMethod?
    public var reason: Reason

    public var description: String {
        let port = controlPort.map { "tor control port \($0)" } ?? "tor control port"
        let method = self.method.map { " (\($0))" } ?? ""
        switch reason {
        case let .refused(error):
            return "\(port) refused authentication\(method): \(error.code) \(error.message)"
        case let .serverHashMismatch(file):
            let cookie = file.map { "cookie file \($0)" } ?? "our cookie"
            return "\(port) refused authentication\(method): its AUTHCHALLENGE server hash does not match \(cookie) (another tor, a stale cookie, or not tor at all)"
        case let .cookieUnusable(text):
            return "\(port) refused authentication\(method): \(text)"
        case let .noUsableMethod(offered, havePassword):
            let list = offered.map(\.description).joined(separator: ", ")
            let hint = offered.contains(.hashedPassword) && !havePassword ? "; configure the control password" : ""
            return "\(port) offers no authentication method we can use (offered: \(list.isEmpty ? "none" : list))\(hint)"
        case let .malformed(text):
            return "\(port) authentication failed\(method): \(text)"
        case let .misuse(text):
            return "\(port) authentication: \(text)"
        }
    }
}
