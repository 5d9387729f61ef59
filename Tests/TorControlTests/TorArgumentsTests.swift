import XCTest
@testable import TorControl

final class TorArgumentsTests: XCTestCase {
    func testKeywordValuePairsAndPositionalWordsAreSeparated() throws {
        let args = try TorArguments(parsing: "STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=10 TAG=conn_done SUMMARY=\"Connected to a relay\"")
        XCTAssertEqual(args.positional, ["STATUS_CLIENT", "NOTICE", "BOOTSTRAP"])
        XCTAssertEqual(args["PROGRESS"], "10")
        XCTAssertEqual(args["TAG"], "conn_done")
        XCTAssertEqual(args["SUMMARY"], "Connected to a relay")
        XCTAssertNil(args["MISSING"])
    }

    func testQuotedStringDecodesBackslashQuoteAndBackslash() throws {
        XCTAssertEqual(try QuotedString.decode(#""a \"b\" c\\d""#), #"a "b" c\d"#)
    }

    func testQuotedStringDecodesCEscapesAsTheSpecAdvises() throws {
        // control-spec 2.1.1: \n \t \r and \0..\377 are C escapes; any other escaped char is itself.
        XCTAssertEqual(try QuotedString.decode(#""1\n2\t3\r4""#), "1\n2\t3\r4")
        XCTAssertEqual(try QuotedString.decode(#""caf\303\251""#), "café")
        XCTAssertEqual(try QuotedString.decode(#""\101\1022""#), "AB2")   // at most three octal digits
        XCTAssertEqual(try QuotedString.decode(#""\0x""#), "\u{0}x")
        XCTAssertEqual(try QuotedString.decode(#""\q\ ""#), "q ")
    }

    func testPathWithEscapesInCookieFileDecodes() throws {
        let args = try TorArguments(parsing: #"AUTH METHODS=COOKIE,SAFECOOKIE COOKIEFILE="/home/a b/\"x\"/c\\d""#)
        XCTAssertEqual(args["COOKIEFILE"], #"/home/a b/"x"/c\d"#)
    }

    func testUnterminatedQuotedStringThrows() {
        XCTAssertThrowsError(try TorArguments(parsing: #"SUMMARY="no end"#)) {
            guard case .unterminatedQuotedString = $0 as? TorProtocolError else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try TorArguments(parsing: #"X="ends in backslash\"#)) {
            guard case .unterminatedQuotedString = $0 as? TorProtocolError else { return XCTFail("\($0)") }
        }
    }

    func testOctalEscapeAboveByteRangeThrows() {
        XCTAssertThrowsError(try QuotedString.decode(#""\400""#)) {
            guard case let .invalidEscape(sequence, _) = $0 as? TorProtocolError else { return XCTFail("\($0)") }
            XCTAssertEqual(sequence, #"\400"#)
            XCTAssertTrue("\($0)".contains("400"))
        }
    }

    func testTextGluedToClosingQuoteThrows() {
        XCTAssertThrowsError(try TorArguments(parsing: #"A="x"y B=1"#)) {
            guard case .textAfterQuotedString = $0 as? TorProtocolError else { return XCTFail("\($0)") }
        }
    }

    func testPositionalTokenWithUnusualKeyKeepsRawForm() throws {
        let args = try TorArguments(parsing: "HS_DESC UPLOADED abc NO_AUTH $AAAA=nick")
        XCTAssertEqual(args.all.last?.raw, "$AAAA=nick")
        XCTAssertNil(args.all.last?.key)
    }

    func testEncodeEscapesQuotesAndBackslashesAndRoundTrips() throws {
        let text = #"p"a\ss w"#
        let encoded = QuotedString.encode(text)
        XCTAssertEqual(encoded, #""p\"a\\ss w""#)
        XCTAssertEqual(try QuotedString.decode(encoded), text)
    }
}
