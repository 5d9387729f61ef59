import XCTest
@testable import SottoCoAP

final class PSKParsingTests: XCTestCase {
    private func problem(_ body: () throws -> Any, file: StaticString = #filePath, line: UInt = #line) -> PSKProblem? {
        do {
            _ = try body()
            XCTFail("accepted", file: file, line: line)
        } catch CoAPError.badPSK(let problem) {
            return problem
        } catch {
            XCTFail("unexpected \(error)", file: file, line: line)
        }
        return nil
    }

    func testBareTextIsTheKeyBytesAsCoapClientTakesThem() throws {
        XCTAssertEqual(try CoAPSecurity.parseKey("secretkey"), Array("secretkey".utf8))
        XCTAssertEqual(try CoAPSecurity.parseKey("text:hex:00"), Array("hex:00".utf8))
    }

    func testHexPrefixDecodesEitherCase() throws {
        XCTAssertEqual(try CoAPSecurity.parseKey("hex:00ff7A"), [0x00, 0xFF, 0x7A])
    }

    func testBase64PrefixDecodesStrictly() throws {
        XCTAssertEqual(try CoAPSecurity.parseKey("base64:AAEC"), [0, 1, 2])
        XCTAssertEqual(problem { try CoAPSecurity.parseKey("base64:AAE") }, .badBase64)
        XCTAssertEqual(problem { try CoAPSecurity.parseKey("base64:AA E") }, .badBase64)
    }

    func testMalformedHexIsRefusedWithThePositionNotTheKey() throws {
        XCTAssertEqual(problem { try CoAPSecurity.parseKey("hex:0g") }, .badHex(offset: 1))
        XCTAssertEqual(problem { try CoAPSecurity.parseKey("hex:abc") }, .oddHexLength)
        let error = CoAPError.badPSK(.badHex(offset: 1))
        XCTAssertFalse(error.description.contains("0g"))
    }

    func testEmptyKeysAreRefusedInEveryForm() {
        for text in ["", "hex:", "base64:", "text:"] {
            XCTAssertEqual(problem { try CoAPSecurity.parseKey(text) }, .emptyKey, text)
        }
    }

    func testKeysLongerThanLibcoapTakesAreRefused() throws {
        XCTAssertEqual(try CoAPSecurity.parseKey(String(repeating: "k", count: 64)).count, 64)
        XCTAssertEqual(problem { try CoAPSecurity.parseKey(String(repeating: "k", count: 65)) }, .keyTooLong(bytes: 65, limit: 64))
        XCTAssertEqual(problem { try CoAPSecurity.parseKey("hex:" + String(repeating: "ab", count: 65)) }, .keyTooLong(bytes: 65, limit: 64))
    }

    func testIdentityMustBeOneTo64Bytes() throws {
        XCTAssertEqual(problem { try CoAPSecurity.psk(identity: [], key: [1]) }, .emptyIdentity)
        XCTAssertEqual(problem { try CoAPSecurity.psk(identity: Array(repeating: 0x61, count: 65), key: [1]) },
                       .identityTooLong(bytes: 65, limit: 64))
        XCTAssertEqual(problem { try CoAPSecurity.psk(identity: [0x61], key: []) }, .emptyKey)
        XCTAssertEqual(try CoAPSecurity.psk(identity: [0x61], key: [1]), .dtlsPSK(identity: [0x61], key: [1]))
    }

    func testKeyFilesLoseOneTrailingLineEnd() throws {
        XCTAssertEqual(try CoAPSecurity.parseKeyFile(Array("secret\n".utf8)), Array("secret".utf8))
        XCTAssertEqual(try CoAPSecurity.parseKeyFile(Array("hex:0102\r\n".utf8)), [1, 2])
        XCTAssertEqual(try CoAPSecurity.parseKeyFile(Array("secret\n\n".utf8)), Array("secret\n".utf8))
    }

    func testBinaryKeyFilesAreRefused() {
        XCTAssertEqual(problem { try CoAPSecurity.parseKeyFile([0xFF, 0xFE, 0x00]) }, .keyFileNotText)
        XCTAssertEqual(problem { try CoAPSecurity.parseKeyFile([0x0A]) }, .emptyKey)
    }

    func testDescriptionsNeverShowTheKey() {
        let security = CoAPSecurity.dtlsPSK(identity: Array("alice".utf8), key: Array("topsecret".utf8))
        XCTAssertEqual(security.description, "DTLS-PSK (identity 'alice', 9-byte key)")
        XCTAssertFalse(String(reflecting: security).contains("topsecret"))
        var dumped = ""
        dump(security, to: &dumped)
        XCTAssertFalse(dumped.contains("116"), dumped) // 't' = 116: no byte list either
        XCTAssertFalse(dumped.contains("topsecret"))
    }
}
