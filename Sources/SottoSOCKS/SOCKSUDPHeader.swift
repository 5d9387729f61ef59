import NIOCore
import NIOSOCKS

/// The header in front of every datagram relayed through a UDP ASSOCIATE (RFC 1928 section 7):
///
///     +----+------+------+----------+----------+----------+
///     |RSV | FRAG | ATYP | DST.ADDR | DST.PORT |   DATA   |
///     +----+------+------+----------+----------+----------+
///     | 2  |  1   |  1   | Variable |    2     | Variable |
///
/// From the client the address is the destination; towards the client it is the source of the reply.
public struct SOCKSUDPHeader: Hashable, Sendable {
    /// FRAG: 0 for a whole datagram. Section 7 lets a relay that does not reassemble fragments drop
    /// every datagram whose FRAG is not 0; the parser reports the value and leaves that to the caller.
    public var fragment: UInt8
    public var address: SOCKSAddress

    public init(fragment: UInt8 = 0, address: SOCKSAddress) {
        self.fragment = fragment
        self.address = address
    }

    /// RSV and FRAG, before the address field.
    static let fixedLength = 3

    /// The header's length for `address`: 10 for IPv4, 22 for IPv6, 7 + n for an n-byte domain.
    /// `address` must be encodable (see `checkEncodable(_:)`).
    public static func encodedLength(of address: SOCKSAddress) -> Int {
        fixedLength + SOCKSAddressField.encodedLength(address)
    }

    /// This header's length on the wire.
    public var encodedLength: Int {
        Self.encodedLength(of: self.address)
    }

    /// Throws `SOCKSAddressError` when `address` has no SOCKS5 encoding (a Unix socket, an empty
    /// domain or one over 255 bytes, a port outside 0...65535). Writing such a header is a
    /// programming error and stops the process, so check addresses that did not come from a parser.
    public static func checkEncodable(_ address: SOCKSAddress) throws {
        try SOCKSAddressField.checkEncodable(address)
    }
}

/// A datagram whose SOCKS UDP header (RFC 1928 section 7) cannot be read.
public enum SOCKSUDPHeaderError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The datagram ends before its header does. `needed` counts what the bytes present reveal:
    /// 10 once ATYP says IPv4, 7 + n once a domain length n is known.
    case tooShort(length: Int, needed: Int)
    /// RSV, the first two bytes, must be zero.
    case reservedNotZero(UInt16)
    case address(SOCKSAddressError)

    public var description: String {
        let prefix = "SOCKS UDP datagram header: "
        switch self {
        case .tooShort(let length, let needed):
            return prefix + "the datagram is \(length) bytes, but its header needs at least \(needed)"
        case .reservedNotZero(let reserved):
            return prefix + "the reserved field (first two bytes) is 0x\(String(reserved, radix: 16, uppercase: true)), "
                + "not 0; is the sender wrapping its datagrams in the SOCKS header?"
        case .address(let error):
            return prefix + error.description
        }
    }
}

extension ByteBuffer {
    /// Reads the header of one datagram, leaving the payload readable. On error nothing is consumed.
    /// A UDP datagram arrives whole, so a short one is an error here, not a reason to wait.
    public mutating func readSOCKSUDPHeader() throws -> SOCKSUDPHeader {
        let length = self.readableBytes
        guard let reserved = self.getInteger(at: self.readerIndex, as: UInt16.self),
            let fragment = self.getInteger(at: self.readerIndex + 2, as: UInt8.self)
        else {
            throw SOCKSUDPHeaderError.tooShort(
                length: length,
                needed: SOCKSUDPHeader.fixedLength + 1 + 1 + 1 + SOCKSAddressField.portLength
            )
        }
        guard reserved == 0 else {
            throw SOCKSUDPHeaderError.reservedNotZero(reserved)
        }
        let parse: SOCKSAddressField.Parse
        do {
            parse = try SOCKSAddressField.parse(self, at: self.readerIndex + SOCKSUDPHeader.fixedLength)
        } catch let error as SOCKSAddressError {
            throw SOCKSUDPHeaderError.address(error)
        }
        switch parse {
        case .incomplete(let minimumLength):
            throw SOCKSUDPHeaderError.tooShort(length: length, needed: SOCKSUDPHeader.fixedLength + minimumLength)
        case .complete(let address, let addressLength):
            self.moveReaderIndex(forwardBy: SOCKSUDPHeader.fixedLength + addressLength)
            return SOCKSUDPHeader(fragment: fragment, address: address)
        }
    }

    /// Writes `header`; the payload goes after it. The address must be encodable (see
    /// `SOCKSUDPHeader.checkEncodable(_:)`); every address read by `readSOCKSUDPHeader` is.
    @discardableResult
    public mutating func writeSOCKSUDPHeader(_ header: SOCKSUDPHeader) -> Int {
        var written = self.writeInteger(UInt16(0))
        written += self.writeInteger(header.fragment)
        written += SOCKSAddressField.write(header.address, to: &self)
        return written
    }
}
