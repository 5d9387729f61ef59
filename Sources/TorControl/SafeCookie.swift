import Crypto

/// SAFECOOKIE authentication hashes (control-spec 3.24 AUTHCHALLENGE, proposal 193):
///
///     ServerHash = HMAC-SHA256("Tor safe cookie authentication server-to-controller hash",
///                              CookieString | ClientNonce | ServerNonce)
///     ClientHash = HMAC-SHA256("Tor safe cookie authentication controller-to-server hash",
///                              CookieString | ClientNonce | ServerNonce)
///
/// with the constant string as the HMAC key. Checking ServerHash first proves the peer knows the
/// cookie before we prove that we do, so a fake control port learns nothing about the file.
public enum SafeCookie {
    public static let serverToControllerKey = "Tor safe cookie authentication server-to-controller hash"
    public static let controllerToServerKey = "Tor safe cookie authentication controller-to-server hash"

    /// "All authentication cookies are 32 bytes long" (control-spec 3.21).
    public static let cookieLength = 32
    /// "ServerNonce MUST be 32 bytes long" (control-spec 3.24); we send client nonces of the same size.
    public static let nonceLength = 32

    public enum Error: Swift.Error, Sendable, Equatable, CustomStringConvertible {
        case cookieWrongLength(Int)
        case serverNonceWrongLength(Int)
        case emptyClientNonce

        public var description: String {
            switch self {
            case let .cookieWrongLength(n):
                return "the cookie has \(n) bytes; tor cookies are exactly \(SafeCookie.cookieLength) bytes (control-spec 3.21)"
            case let .serverNonceWrongLength(n):
                return "tor's SERVERNONCE has \(n) bytes; it must be \(SafeCookie.nonceLength)"
            case .emptyClientNonce:
                return "the SAFECOOKIE client nonce is empty"
            }
        }
    }

    /// The hash the controller sends in AUTHENTICATE.
    public static func clientHash(cookie: [UInt8], clientNonce: [UInt8], serverNonce: [UInt8]) throws -> [UInt8] {
        try hash(key: controllerToServerKey, cookie: cookie, clientNonce: clientNonce, serverNonce: serverNonce)
    }

    /// The hash tor must send in its AUTHCHALLENGE reply.
    public static func serverHash(cookie: [UInt8], clientNonce: [UInt8], serverNonce: [UInt8]) throws -> [UInt8] {
        try hash(key: serverToControllerKey, cookie: cookie, clientNonce: clientNonce, serverNonce: serverNonce)
    }

    /// True when `serverHash` is what tor holding `cookie` would send; compared in constant time.
    public static func isValidServerHash(_ serverHash: [UInt8], cookie: [UInt8], clientNonce: [UInt8],
                                         serverNonce: [UInt8]) throws -> Bool {
        let message = try self.message(cookie: cookie, clientNonce: clientNonce, serverNonce: serverNonce)
        return HMAC<SHA256>.isValidAuthenticationCode(serverHash, authenticating: message,
                                                      using: SymmetricKey(data: Array(serverToControllerKey.utf8)))
    }

    private static func hash(key: String, cookie: [UInt8], clientNonce: [UInt8], serverNonce: [UInt8]) throws -> [UInt8] {
        let message = try self.message(cookie: cookie, clientNonce: clientNonce, serverNonce: serverNonce)
        return Array(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: Array(key.utf8))))
    }

    private static func message(cookie: [UInt8], clientNonce: [UInt8], serverNonce: [UInt8]) throws -> [UInt8] {
        guard cookie.count == cookieLength else { throw Error.cookieWrongLength(cookie.count) }
        guard serverNonce.count == nonceLength else { throw Error.serverNonceWrongLength(serverNonce.count) }
        guard !clientNonce.isEmpty else { throw Error.emptyClientNonce }
        return cookie + clientNonce + serverNonce
    }
}
