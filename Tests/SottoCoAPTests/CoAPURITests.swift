import XCTest
@testable import SottoCoAP

final class CoAPURITests: XCTestCase {
    private func problem(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> CoAPURIProblem? {
        do {
            let uri = try CoAPURI(parsing: text)
            XCTFail("'\(text)' parsed as \(uri)", file: file, line: line)
            return nil
        } catch CoAPError.badURI(let uri, let problem) {
            XCTAssertEqual(uri, text, file: file, line: line)
            return problem
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
            return nil
        }
    }

    func testCoapsURIGivesHostPortPathAndQuery() throws {
        let uri = try CoAPURI(parsing: "coaps://gateway.example:6000/mb/alice?since=3&limit=10")
        XCTAssertEqual(uri.scheme, .coaps)
        XCTAssertEqual(uri.host, "gateway.example")
        XCTAssertEqual(uri.port, 6000)
        XCTAssertEqual(uri.pathSegments, ["mb", "alice"])
        XCTAssertEqual(uri.query, ["since=3", "limit=10"])
        XCTAssertFalse(uri.hostIsIPLiteral)
        XCTAssertEqual(uri.endpoint, "gateway.example:6000")
    }

    func testDefaultPortsFollowTheScheme() throws {
        XCTAssertEqual(try CoAPURI(parsing: "coap://127.0.0.1/").port, 5683)
        XCTAssertEqual(try CoAPURI(parsing: "coaps://127.0.0.1/").port, 5684)
        // RFC 3986 section 3.2.3: an empty port means the default.
        XCTAssertEqual(try CoAPURI(parsing: "coaps://127.0.0.1:/x").port, 5684)
    }

    func testSchemeIsCaseInsensitive() throws {
        XCTAssertEqual(try CoAPURI(parsing: "COAPS://127.0.0.1/").scheme, .coaps)
    }

    func testEmptyPathAndSingleSlashGiveNoUriPath() throws {
        XCTAssertEqual(try CoAPURI(parsing: "coap://127.0.0.1").pathSegments, [])
        XCTAssertEqual(try CoAPURI(parsing: "coap://127.0.0.1/").pathSegments, [])
        XCTAssertEqual(try CoAPURI(parsing: "coap://127.0.0.1?x").query, ["x"])
    }

    func testTrailingSlashAndEmptySegmentsAreKept() throws {
        // RFC 7252 section 6.4 step 8: every segment becomes an option, empty ones too.
        XCTAssertEqual(try CoAPURI(parsing: "coap://h/a/").pathSegments, ["a", ""])
        XCTAssertEqual(try CoAPURI(parsing: "coap://h/a//b").pathSegments, ["a", "", "b"])
    }

    func testPercentEncodingIsDecodedInPathAndQuery() throws {
        let uri = try CoAPURI(parsing: "coap://h/a%2Fb/%C3%A9t%c3%a9?q=%26x")
        XCTAssertEqual(uri.pathSegments, ["a/b", "été"])
        XCTAssertEqual(uri.query, ["q=&x"])
    }

    func testIPv6LiteralInBrackets() throws {
        let uri = try CoAPURI(parsing: "coaps://[::1]:5700/time")
        XCTAssertEqual(uri.host, "::1")
        XCTAssertEqual(uri.port, 5700)
        XCTAssertTrue(uri.hostIsIPLiteral)
        XCTAssertEqual(uri.endpoint, "[::1]:5700")
        XCTAssertEqual(uri.description, "coaps://[::1]:5700/time")
    }

    func testIPv4LiteralIsNoName() throws {
        XCTAssertTrue(try CoAPURI(parsing: "coap://127.0.0.1/").hostIsIPLiteral)
    }

    func testDescriptionEncodesAgainAndOmitsTheDefaultPort() throws {
        let uri = try CoAPURI(parsing: "coap://h:5683/a%20b/c?x=1&y=a%26b")
        XCTAssertEqual(uri.description, "coap://h/a%20b/c?x=1&y=a%26b")
        XCTAssertEqual(try CoAPURI(parsing: uri.description), uri)
        XCTAssertEqual(uri.path, "/a%20b/c")
    }

    func testPathSegmentsFromARequestPath() throws {
        XCTAssertEqual(try CoAPURI.pathSegments(fromPath: "/"), [])
        XCTAssertEqual(try CoAPURI.pathSegments(fromPath: ""), [])
        XCTAssertEqual(try CoAPURI.pathSegments(fromPath: "/mb/alice"), ["mb", "alice"])
        XCTAssertEqual(try CoAPURI.pathSegments(fromPath: "mb/a%20b"), ["mb", "a b"])
        XCTAssertThrowsError(try CoAPURI.pathSegments(fromPath: "/a?b"))
        XCTAssertThrowsError(try CoAPURI.pathSegments(fromPath: "/a%2"))
    }

    // MARK: - Malformed input

    func testEmptyInputIsRefused() {
        XCTAssertEqual(problem(""), .empty)
    }

    func testMissingOrOtherSchemesAreRefused() {
        XCTAssertEqual(problem("127.0.0.1/time"), .missingScheme)
        XCTAssertEqual(problem("://127.0.0.1/"), .missingScheme)
        XCTAssertEqual(problem("coap:/127.0.0.1/"), .missingScheme)
        XCTAssertEqual(problem("http://127.0.0.1/"), .unsupportedScheme("http"))
        XCTAssertEqual(problem("coap+tcp://127.0.0.1/"), .unsupportedScheme("coap+tcp"))
    }

    func testMissingHostIsRefused() {
        XCTAssertEqual(problem("coap:///time"), .missingHost)
        XCTAssertEqual(problem("coap://:5683/"), .missingHost)
        XCTAssertEqual(problem("coap://"), .missingHost)
    }

    func testUserInfoAndFragmentsAreRefused() {
        XCTAssertEqual(problem("coap://user@h/"), .userInfoNotAllowed)
        XCTAssertEqual(problem("coap://h/time#now"), .fragmentNotAllowed)
    }

    func testBadPortsAreRefused() {
        XCTAssertEqual(problem("coap://h:0/"), .badPort("0"))
        XCTAssertEqual(problem("coap://h:65536/"), .badPort("65536"))
        XCTAssertEqual(problem("coap://h:12a/"), .badPort("12a"))
        XCTAssertEqual(problem("coap://h:-1/"), .badPort("-1"))
        XCTAssertEqual(problem("coap://h:0000001/"), .badPort("0000001"))
    }

    func testUnbracketedIPv6IsRefusedWithAHint() {
        let found = problem("coap://::1/")
        XCTAssertEqual(found, .badHost("::1"))
        XCTAssertTrue(found?.description.contains("brackets") ?? false)
    }

    func testBadIPv6LiteralsAreRefused() {
        XCTAssertEqual(problem("coap://[::g]/"), .badIPLiteral("::g"))
        XCTAssertEqual(problem("coap://[::1/"), .badIPLiteral("::1"))
        XCTAssertEqual(problem("coap://[]/"), .badIPLiteral(""))
        XCTAssertEqual(problem("coap://[::1]x/"), .badHost("[::1]x"))
        XCTAssertEqual(problem("coap://[fe80::1%25eth0]/"), .badIPLiteral("fe80::1%25eth0"))
    }

    func testHostsWithOtherCharactersAreRefused() {
        XCTAssertEqual(problem("coap://a!b/"), .badHost("a!b"))
        XCTAssertEqual(problem("coap://a%41b/"), .badHost("a%41b"))
    }

    func testCharactersOutsideURIsAreRefusedWithTheirPosition() {
        XCTAssertEqual(problem("coap://h/a b"), .badCharacter(offset: 10))
        XCTAssertEqual(problem("coap://h/\u{7}"), .badCharacter(offset: 9))
        XCTAssertEqual(problem("coap://h/é"), .badCharacter(offset: 9))
    }

    func testTruncatedPercentEncodingIsRefused() {
        XCTAssertEqual(problem("coap://h/a%"), .badPercentEncoding("a%"))
        XCTAssertEqual(problem("coap://h/a%4"), .badPercentEncoding("a%4"))
        XCTAssertEqual(problem("coap://h/a%zz"), .badPercentEncoding("a%zz"))
        XCTAssertEqual(problem("coap://h/?q=%"), .badPercentEncoding("q=%"))
    }

    func testPercentEncodingThatIsNotUTF8IsRefused() {
        XCTAssertEqual(problem("coap://h/%FF"), .notUTF8("%FF"))
    }

    func testOversizedInputIsRefusedBeforeParsing() {
        let text = "coap://h/" + String(repeating: "a", count: CoAPURI.maximumLength)
        XCTAssertEqual(problem(text), .tooLong(limit: CoAPURI.maximumLength))
    }

    func testOptionsLongerThan255BytesAreRefused() throws {
        let segment = String(repeating: "a", count: 256)
        XCTAssertEqual(problem("coap://h/\(segment)"), .optionTooLong(segment, limit: 255))
        XCTAssertEqual(try CoAPURI(parsing: "coap://h/\(segment.dropLast())").pathSegments.first?.utf8.count, 255)
        let host = String(repeating: "h", count: 256)
        XCTAssertEqual(problem("coap://\(host)/"), .badHost(host))
    }

    func testErrorMessagesNameTheURIAndTheProblem() {
        let error = CoAPError.badURI("coap://h:0/", .badPort("0"))
        XCTAssertEqual(error.description, "bad CoAP URI 'coap://h:0/': port '0' is not a number from 1 to 65535")
    }
}
