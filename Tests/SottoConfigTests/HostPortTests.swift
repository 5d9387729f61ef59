import XCTest
@testable import SottoConfig

final class HostPortTests: XCTestCase {
    func testParsesIPv4IPv6AndNames() throws {
        XCTAssertEqual(try HostPort.parse("127.0.0.1:80"), HostPort(host: "127.0.0.1", port: 80))
        XCTAssertEqual(try HostPort.parse("[::1]:80"), HostPort(host: "::1", port: 80))
        XCTAssertEqual(try HostPort.parse("[fe80::1]:65535"), HostPort(host: "fe80::1", port: 65535))
        XCTAssertEqual(try HostPort.parse("name:0"), HostPort(host: "name", port: 0))
        XCTAssertEqual(try HostPort.parse("my-host.example_1.org:443"), HostPort(host: "my-host.example_1.org", port: 443))
    }

    func testDescriptionBracketsIPv6AndRoundTrips() throws {
        for text in ["127.0.0.1:80", "[::1]:80", "name:8080", "[2001:db8::5]:1"] {
            XCTAssertEqual(try HostPort.parse(text).description, text)
        }
    }

    func testMalformedInputIsRefusedWithAReason() {
        let cases: [(String, String)] = [
            ("", "missing ':PORT'"),
            ("127.0.0.1", "missing ':PORT'"),
            (":80", "the host is empty"),
            ("host:", "the port is empty"),
            ("host:65536", "from 0 to 65535"),
            ("host:-1", "from 0 to 65535"),
            ("host:+80", "from 0 to 65535"),
            ("host:8 0", "from 0 to 65535"),
            ("host:99999999999999999999", "from 0 to 65535"),
            ("::1:80", "an IPv6 address needs brackets"),
            ("[::1:80", "'[' without a closing ']'"),
            ("[::1]80", "expected ':PORT' after ']'"),
            ("[::1]", "expected ':PORT' after ']'"),
            ("[nothex]:80", "is not an IPv6 address"),
            ("[127.0.0.1]:80", "is not an IPv6 address"),
            ("[fe80::1%eth0]:80", "is not an IPv6 address"),  // zone ids are not supported
            ("ho st:80", "may hold only letters"),
            ("hôst:80", "may hold only letters"),
            ("udp://127.0.0.1:80", "IPv6 address needs brackets"),
            (String(repeating: "a", count: 254) + ":80", "at most 253"),
        ]
        for (input, reason) in cases {
            XCTAssertThrowsError(try HostPort.parse(input), input) { error in
                let error = error as? HostPort.ParseError
                XCTAssertEqual(error?.input, input)
                XCTAssertTrue(error?.reason.contains(reason) ?? false, "\(input): \(String(describing: error))")
            }
        }
    }

    func testLoopbackIs127Slash8AndColonColon1Only() throws {
        for host in ["127.0.0.1", "127.1.2.3", "127.255.255.255", "::1", "0:0:0:0:0:0:0:1", "0000::0001"] {
            XCTAssertTrue(HostPort(host: host, port: 1).isLoopback, host)
        }
        for host in ["0.0.0.0", "::", "128.0.0.1", "126.255.255.255", "10.0.0.1", "::2", "::ffff:127.0.0.1", "localhost",
                     "127.0.0.1.example", "127.1", "0177.0.0.1", "fe80::1"] {
            XCTAssertFalse(HostPort(host: host, port: 1).isLoopback, host)
        }
    }

    func testIsIPAddressTellsLiteralsFromNames() {
        XCTAssertTrue(HostPort(host: "192.0.2.1", port: 1).isIPAddress)
        XCTAssertTrue(HostPort(host: "2001:db8::1", port: 1).isIPAddress)
        XCTAssertFalse(HostPort(host: "example.org", port: 1).isIPAddress)
    }
}
