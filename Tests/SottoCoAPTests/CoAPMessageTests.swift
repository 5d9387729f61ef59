import XCTest
@testable import SottoCoAP

final class CoAPMessageTests: XCTestCase {
    func testCodesPrintAsClassDotTwoDigitDetail() {
        XCTAssertEqual(CoAPCode.content.description, "2.05")
        XCTAssertEqual(CoAPCode(rawValue: 0x84).description, "4.04")
        XCTAssertEqual(CoAPCode(rawValue: 0xA0).description, "5.00")
        XCTAssertEqual(CoAPCode(rawValue: 0x5F).description, "2.31")
        XCTAssertEqual(CoAPCode(rawValue: 0).description, "0.00")
    }

    func testCodeTextRoundTripsForEveryValidCode() {
        for raw in 0...255 {
            let code = CoAPCode(rawValue: UInt8(raw))
            XCTAssertEqual(CoAPCode(code.description), code, "\(code)")
        }
    }

    func testMalformedCodeTextIsRefused() {
        for text in ["", "2", "2.5", "205", "2.055", "2,05", "8.00", "2.32", "a.05", "2.0x", " 2.05", "2..5"] {
            XCTAssertNil(CoAPCode(text), text)
        }
    }

    func testClassAndDetailAreSplitAsRFC7252Section3Says() {
        let code = CoAPCode(rawValue: 0b100_01101)
        XCTAssertEqual(code.codeClass, 4)
        XCTAssertEqual(code.detail, 13)
        XCTAssertEqual(code.summary, "4.13 Request Entity Too Large")
        XCTAssertNil(CoAPCode(codeClass: 8, detail: 0))
        XCTAssertNil(CoAPCode(codeClass: 2, detail: 32))
    }

    func testOnlyClassTwoIsSuccess() {
        XCTAssertTrue(CoAPCode.created.isSuccess)
        XCTAssertFalse(CoAPCode.notFound.isSuccess)
        XCTAssertFalse(CoAPCode(rawValue: 0xA0).isSuccess)
    }

    func testUnregisteredCodesHaveNoName() {
        XCTAssertEqual(CoAPCode(codeClass: 2, detail: 9)!.summary, "2.09")
    }

    func testMethodsCarryTheirRequestCodes() {
        XCTAssertEqual(CoAPMethod.allCases.map(\.code.description), ["0.01", "0.02", "0.03", "0.04"])
        XCTAssertEqual(CoAPMethod.delete.description, "DELETE")
    }

    func testUintOptionsUseTheShortestBigEndianForm() {
        XCTAssertEqual(CoAPOption.encodeUInt(0), [])
        XCTAssertEqual(CoAPOption.encodeUInt(60), [60])
        XCTAssertEqual(CoAPOption.encodeUInt(0x1234), [0x12, 0x34])
        XCTAssertEqual(CoAPOption.encodeUInt(0xFFFF_FFFF), [0xFF, 0xFF, 0xFF, 0xFF])
        XCTAssertEqual(CoAPOption(number: 6, value: []).uintValue, 0)
        XCTAssertEqual(CoAPOption(number: 6, value: [0, 0, 1]).uintValue, 1)
        XCTAssertNil(CoAPOption(number: 6, value: [1, 2, 3, 4, 5]).uintValue)
    }

    func testResponseFindsContentFormatAndObserve() {
        let response = CoAPResponse(code: .content, payload: [], options: [
            CoAPOption(number: CoAPOption.observe, value: [7]),
            CoAPOption(number: CoAPOption.contentFormat, value: [50]),
        ])
        XCTAssertEqual(response.observeSequence, 7)
        XCTAssertEqual(response.contentFormat, 50)
        XCTAssertNil(CoAPResponse(code: .content, payload: [], options: []).observeSequence)
    }
}
