import XCTest
@testable import sotto_bench

final class SOCKS5Tests: XCTestCase {
    private let echo = Endpoint(host: .ipv4([127, 0, 0, 1]), port: 7)

    // MARK: Addresses (RFC 1928 section 5)

    func testDomainTargetIsSentUnresolvedAsAddressType3() throws {
        let bytes = try SOCKS5.encodeAddress(Endpoint(host: .domain("exit"), port: 9))
        XCTAssertEqual(bytes, [0x03, 4] + Array("exit".utf8) + [0x00, 0x09])
    }

    func testIPv4AndIPv6AddressesUseTheirAddressTypes() throws {
        XCTAssertEqual(try SOCKS5.encodeAddress(Endpoint(host: .ipv4([127, 0, 0, 1]), port: 0x1234)),
                       [0x01, 127, 0, 0, 1, 0x12, 0x34])
        let v6 = Endpoint(host: .ipv6([UInt8](repeating: 0, count: 15) + [1]), port: 80)
        XCTAssertEqual(try SOCKS5.encodeAddress(v6), [0x04] + [UInt8](repeating: 0, count: 15) + [1, 0, 80])
    }

    func testADomainLongerThan255BytesIsRefused() {
        let name = String(repeating: "a", count: 256)
        XCTAssertThrowsError(try SOCKS5.encodeAddress(Endpoint(host: .domain(name), port: 1))) {
            XCTAssertEqual($0 as? SOCKS5Error, .domainLength(256))
        }
    }

    func testDecodingAnAddressAsksForMoreBytesUntilItIsComplete() throws {
        let full: [UInt8] = [0x03, 4] + Array("exit".utf8) + [0x00, 0x09]
        for cut in 0..<full.count {
            XCTAssertNil(try SOCKS5.decodeAddress(Array(full.prefix(cut)), at: 0), "cut at \(cut)")
        }
        let (endpoint, end) = try XCTUnwrap(try SOCKS5.decodeAddress(full, at: 0))
        XCTAssertEqual(endpoint, Endpoint(host: .domain("exit"), port: 9))
        XCTAssertEqual(end, full.count)
    }

    func testDecodingRejectsUnknownAddressTypesAndEmptyDomains() {
        XCTAssertThrowsError(try SOCKS5.decodeAddress([0x02, 1, 2, 3, 4, 0, 0], at: 0)) {
            XCTAssertEqual($0 as? SOCKS5Error, .unknownAddressType(2))
        }
        XCTAssertThrowsError(try SOCKS5.decodeAddress([0x03, 0, 0, 0], at: 0)) {
            XCTAssertEqual($0 as? SOCKS5Error, .domainLength(0))
        }
    }

    func testDecodingRejectsADomainThatIsNotUTF8() {
        XCTAssertThrowsError(try SOCKS5.decodeAddress([0x03, 2, 0xFF, 0xFE, 0, 1], at: 0)) {
            XCTAssertEqual($0 as? SOCKS5Error, .domainNotUTF8)
        }
    }

    // MARK: UDP header (RFC 1928 section 7)

    func testUDPHeaderRoundTripsThroughTheParser() throws {
        let target = Endpoint(host: .domain("exit"), port: 7)
        let datagram = try SOCKS5.udpHeader(to: target) + [0xAA, 0xBB]
        let (source, offset) = try SOCKS5.parseUDPDatagram(datagram)
        XCTAssertEqual(source, target)
        XCTAssertEqual(Array(datagram[offset...]), [0xAA, 0xBB])
    }

    func testRelayedDatagramWithAnEmptyPayloadParses() throws {
        let datagram = try SOCKS5.udpHeader(to: echo)
        XCTAssertEqual(try SOCKS5.parseUDPDatagram(datagram).payloadOffset, datagram.count)
    }

    func testTruncatedRelayedDatagramsAreRejected() throws {
        let datagram = try SOCKS5.udpHeader(to: Endpoint(host: .ipv6([UInt8](repeating: 0, count: 15) + [1]), port: 7))
        for cut in 0..<datagram.count {
            XCTAssertThrowsError(try SOCKS5.parseUDPDatagram(Array(datagram.prefix(cut))), "cut at \(cut)") {
                XCTAssertEqual($0 as? SOCKS5Error, .truncatedDatagram(cut))
            }
        }
    }

    func testFragmentsAndNonZeroReservedBytesAreRejected() throws {
        var datagram = try SOCKS5.udpHeader(to: echo) + [1]
        datagram[2] = 1
        XCTAssertThrowsError(try SOCKS5.parseUDPDatagram(datagram)) { XCTAssertEqual($0 as? SOCKS5Error, .fragmented(1)) }
        datagram[2] = 0
        datagram[1] = 9
        XCTAssertThrowsError(try SOCKS5.parseUDPDatagram(datagram)) { XCTAssertEqual($0 as? SOCKS5Error, .reservedNotZero) }
    }

    // MARK: Handshake

    func testNoAuthenticationHandshakeForUDPAssociate() throws {
        let source = Endpoint(host: .ipv4([127, 0, 0, 1]), port: 40000)
        var machine = SOCKS5ClientHandshake(credentials: nil, command: .udpAssociate, destination: source)
        XCTAssertEqual(machine.start(), [5, 1, 0])
        XCTAssertEqual(try machine.receive([5, 0]),
                       .send([5, 3, 0, 1, 127, 0, 0, 1, 0x9C, 0x40]))
        let reply: [UInt8] = [5, 0, 0, 1, 127, 0, 0, 1, 0x04, 0x38]
        XCTAssertEqual(try machine.receive(reply),
                       .established(bound: Endpoint(host: .ipv4([127, 0, 0, 1]), port: 1080), leftover: []))
    }

    func testUsernamePasswordHandshakeFollowsRFC1929() throws {
        let credentials = SOCKS5.Credentials(username: "bench", password: "pw")
        var machine = SOCKS5ClientHandshake(credentials: credentials, command: .connect,
                                            destination: Endpoint(host: .domain("exit"), port: 9))
        XCTAssertEqual(machine.start(), [5, 2, 0, 2])
        XCTAssertEqual(try machine.receive([5, 2]), .send([1, 5] + Array("bench".utf8) + [2] + Array("pw".utf8)))
        XCTAssertEqual(try machine.receive([1, 0]), .send([5, 1, 0, 3, 4] + Array("exit".utf8) + [0, 9]))
    }

    func testRepliesSplitIntoSingleBytesStillComplete() throws {
        var machine = SOCKS5ClientHandshake(credentials: nil, command: .connect, destination: echo)
        _ = machine.start()
        XCTAssertEqual(try machine.receive([5]), .needMore)
        XCTAssertEqual(try machine.receive([0]), .send([5, 1, 0, 1, 127, 0, 0, 1, 0, 7]))
        let reply: [UInt8] = [5, 0, 0, 3, 3] + Array("abc".utf8) + [0, 80]
        for byte in reply.dropLast() {
            XCTAssertEqual(try machine.receive([byte]), .needMore)
        }
        XCTAssertEqual(try machine.receive([80]),
                       .established(bound: Endpoint(host: .domain("abc"), port: 80), leftover: []))
    }

    func testBytesAfterTheReplyAreHandedOnAsApplicationData() throws {
        var machine = SOCKS5ClientHandshake(credentials: nil, command: .connect, destination: echo)
        _ = machine.start()
        _ = try machine.receive([5, 0])
        XCTAssertEqual(try machine.receive([5, 0, 0, 1, 127, 0, 0, 1, 0, 9, 0xDE, 0xAD]),
                       .established(bound: Endpoint(host: .ipv4([127, 0, 0, 1]), port: 9), leftover: [0xDE, 0xAD]))
    }

    func testARefusedRequestNamesTheRFC1928Reason() throws {
        var machine = SOCKS5ClientHandshake(credentials: nil, command: .connect, destination: Endpoint(host: .domain("exit"), port: 9))
        _ = machine.start()
        _ = try machine.receive([5, 0])
        XCTAssertThrowsError(try machine.receive([5, 2, 0, 1, 0, 0, 0, 0, 0, 0])) { error in
            XCTAssertEqual(error as? SOCKS5Error,
                           .requestRefused(command: .connect, destination: Endpoint(host: .domain("exit"), port: 9), code: 2))
            XCTAssertTrue("\(error)".contains("connection not allowed by ruleset"), "\(error)")
        }
    }

    func testAServerThatIsNotSOCKS5IsReportedAsSuch() {
        var machine = SOCKS5ClientHandshake(credentials: nil, command: .connect, destination: echo)
        _ = machine.start()
        XCTAssertThrowsError(try machine.receive(Array("HTTP/1.1 400".utf8))) {
            XCTAssertEqual($0 as? SOCKS5Error, .wrongVersion(UInt8(ascii: "H")))
        }
    }

    func testAMethodTheClientDidNotOfferIsRefused() {
        var machine = SOCKS5ClientHandshake(credentials: nil, command: .connect, destination: echo)
        _ = machine.start()
        XCTAssertThrowsError(try machine.receive([5, 2])) { XCTAssertEqual($0 as? SOCKS5Error, .unofferedMethod(2)) }

        var other = SOCKS5ClientHandshake(credentials: nil, command: .connect, destination: echo)
        _ = other.start()
        XCTAssertThrowsError(try other.receive([5, 0xFF])) { XCTAssertEqual($0 as? SOCKS5Error, .noAcceptableMethod) }
    }

    func testRejectedCredentialsAreReported() throws {
        var machine = SOCKS5ClientHandshake(credentials: .init(username: "u", password: "p"), command: .connect, destination: echo)
        _ = machine.start()
        _ = try machine.receive([5, 2])
        XCTAssertThrowsError(try machine.receive([1, 1])) {
            XCTAssertEqual($0 as? SOCKS5Error, .authenticationRejected(status: 1))
        }
    }

    func testCredentialsOutsideOneTo255BytesAreRefusedBeforeSending() {
        XCTAssertThrowsError(try SOCKS5.authenticationRequest(.init(username: "", password: "p"))) {
            XCTAssertEqual($0 as? SOCKS5Error, .credentialLength(field: "username", length: 0))
        }
        XCTAssertThrowsError(try SOCKS5.authenticationRequest(.init(username: "u", password: String(repeating: "p", count: 256)))) {
            XCTAssertEqual($0 as? SOCKS5Error, .credentialLength(field: "password", length: 256))
        }
    }
}
