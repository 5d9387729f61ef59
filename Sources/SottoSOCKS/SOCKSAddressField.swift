import NIOCore
import NIOSOCKS

/// Why a SOCKS5 address field (ATYP, address, port: RFC 1928 sections 4, 6 and 7) could not be read
/// or written. The context (UDP header, server reply) is added by the error that wraps this one.
public enum SOCKSAddressError: Error, Hashable, Sendable, CustomStringConvertible {
    /// ATYP is none of 0x01 (IPv4), 0x03 (domain) and 0x04 (IPv6).
    case unknownAddressType(UInt8)
    /// A domain address whose length byte is 0.
    case emptyDomain
    /// A domain byte that is not a hostname character: an ASCII letter, digit, '-', '.' or '_'.
    /// Bytes of invalid UTF-8 are reported here too, as they are never hostname characters.
    case domainCharacterNotAllowed(byte: UInt8, offset: Int)
    /// Writing: a domain longer than the 255 bytes its length byte can count.
    case domainTooLong(byteCount: Int)
    /// Writing: a port outside 0...65535.
    case portOutOfRange(Int)
    /// Writing: SOCKS5 has no encoding for a Unix domain socket address.
    case unixDomainSocket

    public var description: String {
        switch self {
        case .unknownAddressType(let type):
            return "address type \(hexByte(type)) is not 1 (IPv4), 3 (domain) or 4 (IPv6)"
        case .emptyDomain:
            return "domain name has length 0; a domain address needs 1 to 255 bytes"
        case .domainCharacterNotAllowed(let byte, let offset) where byte >= 0x80:
            return "domain name byte \(hexByte(byte)) at offset \(offset) is not ASCII; "
                + "send an internationalized name in its IDNA form (xn--...)"
        case .domainCharacterNotAllowed(let byte, let offset):
            return "domain name byte \(hexByte(byte))\(printable(byte)) at offset \(offset) is not "
                + "a letter, digit, '-', '.' or '_'"
        case .domainTooLong(let byteCount):
            return "domain name is \(byteCount) bytes; SOCKS5 carries at most 255"
        case .portOutOfRange(let port):
            return "port \(port) is outside 0...65535"
        case .unixDomainSocket:
            return "a Unix domain socket address has no SOCKS5 encoding; use an IPv4, IPv6 or domain address"
        }
    }
}

/// Reading and writing the address field shared by requests, replies (RFC 1928 sections 4 and 6)
/// and UDP datagram headers (section 7): ATYP, then 4, 16 or 1+n address bytes, then a 2-byte port.
enum SOCKSAddressField {
    static let ipv4Type: UInt8 = 0x01
    static let domainType: UInt8 = 0x03
    static let ipv6Type: UInt8 = 0x04
    static let portLength = 2

    enum Parse: Equatable {
        /// The field is not complete: at least `minimumLength` bytes from the start are needed,
        /// counting only what the bytes seen so far reveal (ATYP, domain length).
        case incomplete(minimumLength: Int)
        case complete(SOCKSAddress, length: Int)
    }

    /// Parses the field at `index` of `buffer` without moving its reader index. Throws as soon as the
    /// bytes seen prove the field invalid, so a bad ATYP is reported without waiting for more bytes.
    static func parse(_ buffer: ByteBuffer, at index: Int) throws -> Parse {
        let available = buffer.writerIndex - index
        // The smallest complete field is a one-byte domain: ATYP, length, 1 byte, port.
        guard let type = buffer.getInteger(at: index, as: UInt8.self) else {
            return .incomplete(minimumLength: 1 + 1 + 1 + portLength)
        }
        switch type {
        case ipv4Type, ipv6Type:
            let addressLength = type == ipv4Type ? 4 : 16
            let length = 1 + addressLength + portLength
            guard available >= length,
                let packed = buffer.getSlice(at: index + 1, length: addressLength),
                let port = buffer.getInteger(at: index + 1 + addressLength, as: UInt16.self)
            else {
                return .incomplete(minimumLength: length)
            }
            // Cannot throw: the slice has exactly 4 or 16 bytes.
            let address = try SocketAddress(packedIPAddress: packed, port: Int(port))
            return .complete(.address(address), length: length)
        case domainType:
            guard let domainLength = buffer.getInteger(at: index + 1, as: UInt8.self) else {
                return .incomplete(minimumLength: 1 + 1 + 1 + portLength)
            }
            guard domainLength > 0 else {
                throw SOCKSAddressError.emptyDomain
            }
            let length = 1 + 1 + Int(domainLength) + portLength
            guard available >= length,
                let domainBytes = buffer.getBytes(at: index + 2, length: Int(domainLength)),
                let port = buffer.getInteger(at: index + 2 + Int(domainLength), as: UInt16.self)
            else {
                return .incomplete(minimumLength: length)
            }
            let domain = try hostname(domainBytes)
            return .complete(.domain(domain, port: Int(port)), length: length)
        default:
            throw SOCKSAddressError.unknownAddressType(type)
        }
    }

    /// A domain is accepted only as hostname characters. Destinations are peer names, `.onion` and
    /// `.b32.i2p` addresses, or DNS names, all ASCII; refusing the rest keeps control characters and
    /// look-alike Unicode out of logs and lookups.
    static func hostname(_ bytes: [UInt8]) throws -> String {
        for (offset, byte) in bytes.enumerated() where !isHostnameByte(byte) {
            throw SOCKSAddressError.domainCharacterNotAllowed(byte: byte, offset: offset)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func isHostnameByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"):
            return true
        default:
            return false
        }
    }

    /// Throws when `address` has no SOCKS5 encoding. Characters of a domain are not checked here:
    /// that is the reader's job, and a writer should not refuse what it was asked to send.
    static func checkEncodable(_ address: SOCKSAddress) throws {
        switch address {
        case .address(.unixDomainSocket):
            throw SOCKSAddressError.unixDomainSocket
        case .address(.v4), .address(.v6):
            // NIO's IP socket addresses always hold a 16-bit port.
            break
        case .domain(let domain, let port):
            let byteCount = domain.utf8.count
            guard byteCount > 0 else { throw SOCKSAddressError.emptyDomain }
            guard byteCount <= 255 else { throw SOCKSAddressError.domainTooLong(byteCount: byteCount) }
            guard (0...65535).contains(port) else { throw SOCKSAddressError.portOutOfRange(port) }
        }
    }

    /// The field's length in bytes. `address` must be encodable (see `checkEncodable`).
    static func encodedLength(_ address: SOCKSAddress) -> Int {
        requireEncodable(address)
        switch address {
        case .address(.v4):
            return 1 + 4 + portLength
        case .address(.v6):
            return 1 + 16 + portLength
        case .address(.unixDomainSocket):
            preconditionFailure("unreachable: checked above")
        case .domain(let domain, _):
            return 1 + 1 + domain.utf8.count + portLength
        }
    }

    private static func requireEncodable(_ address: SOCKSAddress) {
        do {
            try checkEncodable(address)
        } catch {
            preconditionFailure("SOCKS5 address \(SOCKSAddressText(address)) cannot be encoded: \(error)")
        }
    }

    /// Writes the field; `address` must be encodable (see `checkEncodable`).
    static func write(_ address: SOCKSAddress, to buffer: inout ByteBuffer) -> Int {
        requireEncodable(address)
        switch address {
        case .address(.v4(let v4)):
            var written = buffer.writeInteger(ipv4Type)
            // sin_addr is stored in network byte order, which is the wire order.
            written += withUnsafeBytes(of: v4.address.sin_addr) { buffer.writeBytes($0) }
            written += buffer.writeInteger(UInt16(bigEndian: v4.address.sin_port))
            return written
        case .address(.v6(let v6)):
            var written = buffer.writeInteger(ipv6Type)
            written += withUnsafeBytes(of: v6.address.sin6_addr) { buffer.writeBytes($0) }
            written += buffer.writeInteger(UInt16(bigEndian: v6.address.sin6_port))
            return written
        case .address(.unixDomainSocket):
            preconditionFailure("unreachable: checked above")
        case .domain(let domain, let port):
            var written = buffer.writeInteger(domainType)
            written += buffer.writeInteger(UInt8(domain.utf8.count))
            written += buffer.writeString(domain)
            written += buffer.writeInteger(UInt16(port))
            return written
        }
    }
}

/// `host:port` for messages: `192.0.2.1:80`, `[2001:db8::1]:80`, `example.onion:80`.
func SOCKSAddressText(_ address: SOCKSAddress) -> String {
    switch address {
    case .address(let socketAddress):
        switch socketAddress {
        case .v4:
            return "\(socketAddress.ipAddress ?? "?"):\(socketAddress.port ?? 0)"
        case .v6:
            return "[\(socketAddress.ipAddress ?? "?")]:\(socketAddress.port ?? 0)"
        case .unixDomainSocket:
            return "unix:\(socketAddress.pathname ?? "?")"
        }
    case .domain(let domain, let port):
        return "\(escaped(domain)):\(port)"
    }
}

/// Text from a peer or a user goes into messages with anything but printable ASCII escaped, so an
/// error message cannot carry control characters into a log.
func escaped(_ text: String) -> String {
    var result = ""
    for byte in text.utf8 {
        if byte >= 0x20 && byte < 0x7F && byte != UInt8(ascii: "\\") {
            result.unicodeScalars.append(Unicode.Scalar(byte))
        } else {
            result += "\\x" + hexDigits(byte)
        }
    }
    return result
}

func hexByte(_ byte: UInt8) -> String {
    "0x" + hexDigits(byte)
}

private func hexDigits(_ byte: UInt8) -> String {
    let digits = String(byte, radix: 16, uppercase: true)
    return byte < 0x10 ? "0" + digits : digits
}

/// ` ('/')` for a printable ASCII byte, empty otherwise.
func printable(_ byte: UInt8) -> String {
    byte >= 0x21 && byte < 0x7F ? " ('\(Character(Unicode.Scalar(byte)))')" : ""
}

/// The UTF-8 text of `bytes`, or nil when they are not valid UTF-8. Decoding replaces each invalid
/// sequence with U+FFFD, so the bytes survive a round trip exactly when they were valid.
/// (`String(validating:)` would do, but needs macOS 15.)
func validatedUTF8(_ bytes: [UInt8]) -> String? {
    let text = String(decoding: bytes, as: UTF8.self)
    return text.utf8.elementsEqual(bytes) ? text : nil
}
