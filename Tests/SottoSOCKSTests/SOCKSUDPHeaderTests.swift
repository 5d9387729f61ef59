import NIOCore
import NIOSOCKS
import SottoSOCKS
import XCTest

/// RFC 1928 section 7: the header of each datagram relayed through UDP ASSOCIATE.
final class SOCKSUDPHeaderTests: XCTestCase {
    private let payload: [UInt8] = Array("CoAP datagram".utf8)

    private func ipv4(_ host: String, _ port: Int) throws -> SOCKSAddress {
        .address(try SocketAddress(ipAddress: host, port: port))
    }

    private func expectError(
        _ bytes: [UInt8],
        _ expected: SOCKSUDPHeaderError,
        file: StaticString = #filePath,
        line: UInt = #line
    ) {
        var buffer = ByteBuffer(bytes: bytes)
        XCTAssertThrowsError(try buffer.readSOCKSUDPHeader(), file: file, line: line) { error in
            XCTAssertEqual(error as? SOCKSUDPHeaderError, expected, "\(error)", file: file, line: line)
        }
        XCTAssertEqual(buffer.readerIndex, 0, "an error consumed bytes", file: file, line: line)
    }

    // MARK: Round trips

    func testAnIPv4HeaderIsReadLeavingThePayloadReadable() throws {
        let header: [UInt8] = [0x00, 0x00, 0x00, 0x01, 192, 0, 2, 1, 0x16, 0x34]
        var buffer = ByteBuffer(bytes: header + payload)
        let parsed = try buffer.readSOCKSUDPHeader()
        XCTAssertEqual(parsed, SOCKSUDPHeader(fragment: 0, address: try ipv4("192.0.2.1", 5684)))
        XCTAssertEqual(Array(buffer.readableBytesView), payload)

        var written = ByteBuffer()
        XCTAssertEqual(written.writeSOCKSUDPHeader(parsed), 10)
        XCTAssertEqual(Array(written.readableBytesView), header)
    }

    func testAnIPv6HeaderRoundTripsInNetworkByteOrder() throws {
        let address = SOCKSAddress.address(try SocketAddress(ipAddress: "2001:db8::1:2", port: 443))
        var buffer = ByteBuffer()
        XCTAssertEqual(buffer.writeSOCKSUDPHeader(SOCKSUDPHeader(fragment: 0, address: address)), 22)
        let expected: [UInt8] =
            [0x00, 0x00, 0x00, 0x04, 0x20, 0x01, 0x0D, 0xB8] + Array(repeating: 0, count: 8)
            + [0x00, 0x01, 0x00, 0x02, 0x01, 0xBB]
        XCTAssertEqual(Array(buffer.readableBytesView), expected)
        buffer.writeBytes(payload)
        XCTAssertEqual(try buffer.readSOCKSUDPHeader(), SOCKSUDPHeader(fragment: 0, address: address))
        XCTAssertEqual(Array(buffer.readableBytesView), payload)
    }

    func testADomainHeaderRoundTrips() throws {
        let onion = "abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrstuvwx.onion"
        let header = SOCKSUDPHeader(fragment: 0, address: .domain(onion, port: 5684))
        var buffer = ByteBuffer()
        XCTAssertEqual(buffer.writeSOCKSUDPHeader(header), 7 + onion.utf8.count)
        XCTAssertEqual(Array(buffer.readableBytesView.prefix(5)), [0x00, 0x00, 0x00, 0x03, UInt8(onion.utf8.count)])
        XCTAssertEqual(Array(buffer.readableBytesView.suffix(2)), [0x16, 0x34])
        buffer.writeBytes(payload)
        XCTAssertEqual(try buffer.readSOCKSUDPHeader(), header)
        XCTAssertEqual(Array(buffer.readableBytesView), payload)
    }

    func testDomainsOf1And255BytesRoundTrip() throws {
        for length in [1, 255] {
            let domain = String(repeating: "a", count: length)
            let header = SOCKSUDPHeader(fragment: 0, address: .domain(domain, port: 1))
            var buffer = ByteBuffer()
            buffer.writeSOCKSUDPHeader(header)
            XCTAssertEqual(buffer.readableBytes, 7 + length)
            XCTAssertEqual(try buffer.readSOCKSUDPHeader(), header)
            XCTAssertEqual(buffer.readableBytes, 0)
        }
    }

    func testEveryFragmentValueIsKeptForTheCallerToJudge() throws {
        for fragment in UInt8.min...UInt8.max {
            let header = SOCKSUDPHeader(fragment: fragment, address: try ipv4("10.0.0.1", 9))
            var buffer = ByteBuffer()
            buffer.writeSOCKSUDPHeader(header)
            XCTAssertEqual(buffer.getInteger(at: 2, as: UInt8.self), fragment)
            XCTAssertEqual(try buffer.readSOCKSUDPHeader().fragment, fragment)
        }
    }

    func testAHeaderWithNoPayloadIsValid() throws {
        var buffer = ByteBuffer(bytes: [0x00, 0x00, 0x00, 0x01, 127, 0, 0, 1, 0x00, 0x35])
        XCTAssertEqual(try buffer.readSOCKSUDPHeader().address, try ipv4("127.0.0.1", 53))
        XCTAssertEqual(buffer.readableBytes, 0)
    }

    func testTheHighestPortAndPortZeroRoundTrip() throws {
        for address in [try ipv4("0.0.0.0", 0), try ipv4("255.255.255.255", 65535), .domain("x", port: 65535)] {
            var buffer = ByteBuffer()
            buffer.writeSOCKSUDPHeader(SOCKSUDPHeader(address: address))
            XCTAssertEqual(try buffer.readSOCKSUDPHeader().address, address)
        }
    }

    func testEncodedLengthMatchesWhatIsWritten() throws {
        let addresses: [SOCKSAddress] = [
            try ipv4("198.51.100.7", 80),
            .address(try SocketAddress(ipAddress: "::1", port: 80)),
            .domain("home", port: 5684),
            .domain(String(repeating: "z", count: 255), port: 1),
        ]
        XCTAssertEqual(addresses.map { SOCKSUDPHeader.encodedLength(of: $0) }, [10, 22, 11, 262])
        for address in addresses {
            var buffer = ByteBuffer()
            let header = SOCKSUDPHeader(fragment: 0, address: address)
            XCTAssertEqual(buffer.writeSOCKSUDPHeader(header), SOCKSUDPHeader.encodedLength(of: address))
            XCTAssertEqual(buffer.readableBytes, header.encodedLength)
        }
    }

    // MARK: Malformed input

    func testAnEmptyDatagramIsTooShort() {
        expectError([], .tooShort(length: 0, needed: 8))
    }

    func testEveryTruncationOfAnIPv4HeaderIsTooShort() {
        let header: [UInt8] = [0x00, 0x00, 0x00, 0x01, 192, 0, 2, 1, 0x16, 0x34]
        for length in 0..<header.count {
            // Once ATYP (byte 3) is present the header is known to need 10 bytes.
            expectError(Array(header.prefix(length)), .tooShort(length: length, needed: length >= 4 ? 10 : 8))
        }
    }

    func testEveryTruncationOfAnIPv6HeaderIsTooShort() {
        let header: [UInt8] = [0x00, 0x00, 0x00, 0x04] + Array(repeating: 0xAB, count: 16) + [0x00, 0x50]
        for length in 4..<header.count {
            expectError(Array(header.prefix(length)), .tooShort(length: length, needed: 22))
        }
    }

    func testEveryTruncationOfADomainHeaderIsTooShort() {
        let header: [UInt8] = [0x00, 0x00, 0x00, 0x03, 0x04] + Array("home".utf8) + [0x16, 0x34]
        for length in 0..<header.count {
            // Once the length byte (byte 4) is present the header is known to need 7 + 4 bytes.
            expectError(Array(header.prefix(length)), .tooShort(length: length, needed: length >= 5 ? 11 : 8))
        }
    }

    func testADomainLengthBeyondTheDatagramIsTooShort() {
        // Says 200 bytes of domain, carries 6: the rest is not "payload", the datagram is broken.
        expectError([0x00, 0x00, 0x00, 0x03, 200] + Array("abcdef".utf8), .tooShort(length: 11, needed: 207))
    }

    func testNonZeroReservedBytesAreRejected() {
        for reserved: [UInt8] in [[0x00, 0x01], [0x01, 0x00], [0xFF, 0xFF]] {
            let value = UInt16(reserved[0]) << 8 | UInt16(reserved[1])
            expectError(reserved + [0x00, 0x01, 127, 0, 0, 1, 0, 53], .reservedNotZero(value))
        }
    }

    func testUnknownAddressTypesAreRejectedWithAnActionableMessage() {
        for type: UInt8 in [0x00, 0x02, 0x05, 0x06, 0xFF] {
            expectError([0x00, 0x00, 0x00, type, 127, 0, 0, 1, 0, 53], .address(.unknownAddressType(type)))
        }
        XCTAssertEqual(
            SOCKSUDPHeaderError.address(.unknownAddressType(0x05)).description,
            "SOCKS UDP datagram header: address type 0x05 is not 1 (IPv4), 3 (domain) or 4 (IPv6)"
        )
    }

    func testAnUnknownAddressTypeIsReportedEvenWhenNothingFollowsIt() {
        expectError([0x00, 0x00, 0x00, 0x09], .address(.unknownAddressType(0x09)))
    }

    func testADomainOfLengthZeroIsRejected() {
        expectError([0x00, 0x00, 0x00, 0x03, 0x00, 0x16, 0x34], .address(.emptyDomain))
    }

    func testDomainsWithNonHostnameCharactersAreRejected() {
        let cases: [(domain: [UInt8], byte: UInt8, offset: Int)] = [
            (Array("ho me".utf8), 0x20, 2),
            (Array("a/b".utf8), UInt8(ascii: "/"), 1),
            (Array("evil\nlog".utf8), 0x0A, 4),
            ([0x00] + Array("x".utf8), 0x00, 0),
            (Array("café".utf8), 0xC3, 3),  // valid UTF-8, but not an IDNA A-label
            ([UInt8(ascii: "a"), 0xFF], 0xFF, 1),  // not UTF-8 at all
            ([UInt8(ascii: "a"), 0xC3], 0xC3, 1),  // a truncated UTF-8 sequence
        ]
        for (domain, byte, offset) in cases {
            expectError(
                [0x00, 0x00, 0x00, 0x03, UInt8(domain.count)] + domain + [0x00, 0x50],
                .address(.domainCharacterNotAllowed(byte: byte, offset: offset))
            )
        }
    }

    func testHostnameCharactersAreAccepted() throws {
        let domain = "Peer_1.b32.i2p-ABCxyz0189."
        var buffer = ByteBuffer(bytes: [0x00, 0x00, 0x00, 0x03, UInt8(domain.utf8.count)] + Array(domain.utf8) + [0, 80])
        XCTAssertEqual(try buffer.readSOCKSUDPHeader().address, .domain(domain, port: 80))
    }

    func testErrorDescriptionsSayWhatIsWrong() {
        XCTAssertEqual(
            SOCKSUDPHeaderError.tooShort(length: 7, needed: 10).description,
            "SOCKS UDP datagram header: the datagram is 7 bytes, but its header needs at least 10"
        )
        XCTAssertTrue(SOCKSUDPHeaderError.reservedNotZero(0x0100).description.contains("0x100, not 0"))
        XCTAssertEqual(
            SOCKSUDPHeaderError.address(.domainCharacterNotAllowed(byte: 0x2F, offset: 1)).description,
            "SOCKS UDP datagram header: domain name byte 0x2F ('/') at offset 1 is not a letter, digit, '-', '.' or '_'"
        )
        XCTAssertTrue(
            SOCKSUDPHeaderError.address(.domainCharacterNotAllowed(byte: 0xC3, offset: 3)).description
                .contains("not ASCII; send an internationalized name in its IDNA form (xn--...)")
        )
        XCTAssertTrue(SOCKSUDPHeaderError.address(.emptyDomain).description.contains("length 0"))
    }

    // MARK: What cannot be written

    func testAddressesWithoutASOCKSEncodingAreReportedBeforeWriting() throws {
        let cases: [(SOCKSAddress, SOCKSAddressError)] = [
            (.address(try SocketAddress(unixDomainSocketPath: "/tmp/s")), .unixDomainSocket),
            (.domain("", port: 80), .emptyDomain),
            (.domain(String(repeating: "a", count: 256), port: 80), .domainTooLong(byteCount: 256)),
            (.domain("home", port: 65536), .portOutOfRange(65536)),
            (.domain("home", port: -1), .portOutOfRange(-1)),
        ]
        for (address, expected) in cases {
            XCTAssertThrowsError(try SOCKSUDPHeader.checkEncodable(address)) { error in
                XCTAssertEqual(error as? SOCKSAddressError, expected)
            }
        }
        XCTAssertNoThrow(try SOCKSUDPHeader.checkEncodable(.domain(String(repeating: "a", count: 255), port: 65535)))
        XCTAssertNoThrow(try SOCKSUDPHeader.checkEncodable(try ipv4("127.0.0.1", 0)))
    }
}
