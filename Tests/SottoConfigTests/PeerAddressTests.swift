import XCTest
@testable import SottoConfig

final class PeerAddressTests: XCTestCase {
    func testOnionAddressesAreLowerCasedWithAnOptionalPort() throws {
        XCTAssertEqual(try PeerAddress.parse(Fixture.onionHost), .onion(Fixture.onionHost, port: nil))
        XCTAssertEqual(try PeerAddress.parse(Fixture.onionHost.uppercased() + ":7000"), .onion(Fixture.onionHost, port: 7000))
        XCTAssertEqual(try PeerAddress.parse(Fixture.onionHost + ":7000").description, Fixture.onionHost + ":7000")
    }

    func testI2PAddressesAreLowerCasedWithAnOptionalPort() throws {
        XCTAssertEqual(try PeerAddress.parse(Fixture.i2pHost.uppercased()), .i2p(Fixture.i2pHost, port: nil))
        XCTAssertEqual(try PeerAddress.parse(Fixture.i2pHost + ":1"), .i2p(Fixture.i2pHost, port: 1))
    }

    func testHostPortAddressesNeedAPortOtherThanZero() throws {
        XCTAssertEqual(try PeerAddress.parse("192.0.2.1:7000"), .hostPort(HostPort(host: "192.0.2.1", port: 7000)))
        XCTAssertEqual(try PeerAddress.parse("[2001:db8::1]:7000"), .hostPort(HostPort(host: "2001:db8::1", port: 7000)))
        XCTAssertEqual(try PeerAddress.parse("exit.example.org:7000"), .hostPort(HostPort(host: "exit.example.org", port: 7000)))
        XCTAssertThrowsError(try PeerAddress.parse("192.0.2.1:0"))
        XCTAssertThrowsError(try PeerAddress.parse("192.0.2.1"))
    }

    func testOnlyVersion3OnionAddressesAreAccepted() {
        let label = String(Fixture.onionHost.dropLast(".onion".count))
        let cases: [(String, String)] = [
            ("expyuzz4wqqyqhjn.onion", "got 16 (v2 onion addresses no longer work)"),
            (String(label.dropLast()) + ".onion", "got 55"),
            (label + "a.onion", "got 57"),
            (String(label.dropLast()) + "1.onion", "is not base32"),
            (String(repeating: "a", count: 56) + ".onion", "not a version 3 onion address"),
            ("www." + Fixture.onionHost, "a subdomain of an onion address is not supported"),
            (".onion", "got 0"),
            (Fixture.onionHost + ":", "the port must be a number from 1 to 65535"),
            (Fixture.onionHost + ":65536", "the port must be a number from 1 to 65535"),
            (Fixture.onionHost + ":x", "the port must be a number from 1 to 65535"),
        ]
        for (input, reason) in cases {
            XCTAssertThrowsError(try PeerAddress.parse(input), input) { error in
                XCTAssertTrue("\(error)".contains(reason), "\(input): \(error)")
            }
        }
    }

    func testMalformedI2PAddressesAreRefused() {
        let label = String(Fixture.i2pHost.dropLast(".b32.i2p".count))
        let cases: [(String, String)] = [
            ("stats.i2p", "only .b32.i2p addresses are supported"),
            (String(label.dropLast()) + ".b32.i2p", "got 51"),
            (label + label + ".b32.i2p", "got 104"),
            (String(label.dropLast()) + "0.b32.i2p", "is not base32"),
        ]
        for (input, reason) in cases {
            XCTAssertThrowsError(try PeerAddress.parse(input), input) { error in
                XCTAssertTrue("\(error)".contains(reason), "\(input): \(error)")
            }
        }
    }

    func testAnOversizedAddressIsRefused() {
        XCTAssertThrowsError(try PeerAddress.parse(String(repeating: "a", count: 10_000) + ".onion"))
        XCTAssertThrowsError(try PeerAddress.parse(String(repeating: "a", count: 10_000) + ":80"))
    }
}
