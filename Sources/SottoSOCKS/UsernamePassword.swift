import NIOCore

/// The client's username/password sub-negotiation message (RFC 1929 section 2), which NIOSOCKS's
/// `SOCKSServerHandshakeHandler` passes on raw as `ClientMessage.authenticationData`.
///
///     +----+------+----------+------+----------+
///     |VER | ULEN |  UNAME   | PLEN |  PASSWD  |
///     +----+------+----------+------+----------+
///     | 1  |  1   | 1 to 255 |  1   | 0 to 255 |
///
/// RFC 1929 asks for a password of 1 to 255 bytes; an empty one is accepted because clients that use
/// credentials only to select a profile or isolate streams (tor's IsolateSOCKSAuth, curl
/// `socks5h://user@host`) send PLEN 0.
public struct UsernamePasswordRequest: Hashable, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    /// Any UTF-8 text of 1 to 255 bytes.
    public var username: String
    /// Any UTF-8 text of 0 to 255 bytes.
    public var password: String

    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }

    /// Never shows the password, so a request can be logged or printed by a failing test.
    public var description: String {
        "UsernamePasswordRequest(username: '\(escaped(self.username))', password: \(self.password.utf8.count) bytes)"
    }

    public var debugDescription: String { self.description }

    /// RFC 1929 section 2: VER is 0x01 for this sub-negotiation, not the SOCKS version 5.
    public static let version: UInt8 = 0x01
    public static let maximumFieldLength = 255

    /// Throws when the request cannot be sent: an empty username or a field over 255 bytes.
    public func checkEncodable() throws {
        let usernameLength = self.username.utf8.count
        let passwordLength = self.password.utf8.count
        guard usernameLength > 0 else { throw UsernamePasswordError.emptyUsername }
        guard usernameLength <= Self.maximumFieldLength else {
            throw UsernamePasswordError.usernameTooLong(byteCount: usernameLength)
        }
        guard passwordLength <= Self.maximumFieldLength else {
            throw UsernamePasswordError.passwordTooLong(byteCount: passwordLength)
        }
    }
}

/// The server's answer to a `UsernamePasswordRequest` (RFC 1929 section 2): VER 0x01, then STATUS,
/// 0x00 for success. Any other status is a failure, after which the server must close the connection.
public enum UsernamePasswordReply {
    public static let successStatus: UInt8 = 0x00
    public static let failureStatus: UInt8 = 0x01

    /// `01 00` on success, `01 01` on failure.
    public static func bytes(success: Bool) -> [UInt8] {
        [UsernamePasswordRequest.version, success ? successStatus : failureStatus]
    }
}

/// A username/password message (RFC 1929) that cannot be read or written.
public enum UsernamePasswordError: Error, Hashable, Sendable, CustomStringConvertible {
    /// VER is not 0x01.
    case unsupportedVersion(UInt8)
    /// ULEN is 0.
    case emptyUsername
    case usernameNotUTF8
    case passwordNotUTF8
    /// Writing: a username of more than 255 bytes.
    case usernameTooLong(byteCount: Int)
    /// Writing: a password of more than 255 bytes.
    case passwordTooLong(byteCount: Int)

    public var description: String {
        let prefix = "SOCKS username/password request (RFC 1929): "
        switch self {
        case .unsupportedVersion(0x05):
            return prefix + "version is 0x05, not 0x01: the client sent a SOCKS5 message where the "
                + "username/password it chose in its greeting belongs"
        case .unsupportedVersion(let version):
            return prefix + "version is \(hexByte(version)), not 0x01"
        case .emptyUsername:
            return prefix + "the username is empty; give a username of 1 to 255 bytes"
        case .usernameNotUTF8:
            return prefix + "the username is not valid UTF-8"
        case .passwordNotUTF8:
            return prefix + "the password is not valid UTF-8"
        case .usernameTooLong(let byteCount):
            return prefix + "the username is \(byteCount) bytes of UTF-8; at most 255 fit"
        case .passwordTooLong(let byteCount):
            return prefix + "the password is \(byteCount) bytes of UTF-8; at most 255 fit"
        }
    }
}

extension ByteBuffer {
    /// Reads one RFC 1929 request. Returns nil and consumes nothing while the message is incomplete,
    /// so a caller can append the next `authenticationData` and call again. Bytes after the message
    /// stay readable. Throws `UsernamePasswordError` (consuming nothing) on a version other than 0x01,
    /// an empty username, or a field that is not UTF-8.
    public mutating func readUsernamePasswordRequest() throws -> UsernamePasswordRequest? {
        let start = self.readerIndex
        do {
            guard let request = try self.readUsernamePasswordRequestMovingReaderIndex() else {
                self.moveReaderIndex(to: start)
                return nil
            }
            return request
        } catch {
            self.moveReaderIndex(to: start)
            throw error
        }
    }

    private mutating func readUsernamePasswordRequestMovingReaderIndex() throws -> UsernamePasswordRequest? {
        guard let version = self.readInteger(as: UInt8.self) else { return nil }
        guard version == UsernamePasswordRequest.version else {
            throw UsernamePasswordError.unsupportedVersion(version)
        }
        guard let usernameLength = self.readInteger(as: UInt8.self) else { return nil }
        guard usernameLength > 0 else { throw UsernamePasswordError.emptyUsername }
        guard let usernameBytes = self.readBytes(length: Int(usernameLength)),
            let passwordLength = self.readInteger(as: UInt8.self),
            let passwordBytes = self.readBytes(length: Int(passwordLength))
        else {
            return nil
        }
        guard let username = validatedUTF8(usernameBytes) else { throw UsernamePasswordError.usernameNotUTF8 }
        guard let password = validatedUTF8(passwordBytes) else { throw UsernamePasswordError.passwordNotUTF8 }
        return UsernamePasswordRequest(username: username, password: password)
    }

    /// Writes `request` as the client's RFC 1929 message. Throws `UsernamePasswordError` (writing
    /// nothing) for an empty username or a field over 255 bytes.
    @discardableResult
    public mutating func writeUsernamePasswordRequest(_ request: UsernamePasswordRequest) throws -> Int {
        try request.checkEncodable()
        var written = self.writeInteger(UsernamePasswordRequest.version)
        written += self.writeInteger(UInt8(request.username.utf8.count))
        written += self.writeString(request.username)
        written += self.writeInteger(UInt8(request.password.utf8.count))
        written += self.writeString(request.password)
        return written
    }
}
