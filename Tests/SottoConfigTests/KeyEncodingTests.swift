import XCTest
@testable import SottoConfig

final class KeyEncodingTests: XCTestCase {
    func testEncodeThenDecodeGivesTheSameBytesForEveryLength() {
        for length in 0...40 {
            let bytes = (0..<length).map { UInt8(($0 * 37 + 11) & 0xFF) }
            XCTAssertEqual(KeyEncoding.decode(KeyEncoding.encode(bytes)), bytes, "length \(length)")
        }
    }

    func testEncodingMatchesRFC4648TestVectors() {
        // RFC 4648 section 10.
        let vectors = ["": "", "f": "Zg==", "fo": "Zm8=", "foo": "Zm9v", "foob": "Zm9vYg==", "fooba": "Zm9vYmE=",
                       "foobar": "Zm9vYmFy"]
        for (plain, encoded) in vectors {
            XCTAssertEqual(KeyEncoding.encode(Array(plain.utf8)), encoded)
            XCTAssertEqual(KeyEncoding.decode(encoded), Array(plain.utf8))
        }
        XCTAssertEqual(KeyEncoding.encode([0xFB, 0xFF]), "+/8=")
    }

    func testDecode32AcceptsExactly32Bytes() {
        let key = [UInt8](repeating: 0xA5, count: 32)
        XCTAssertEqual(KeyEncoding.decode32(KeyEncoding.encode(key)), key)
        XCTAssertNil(KeyEncoding.decode32(KeyEncoding.encode(Array(key.prefix(31)))))
        XCTAssertNil(KeyEncoding.decode32(KeyEncoding.encode(key + [0])))
        XCTAssertNil(KeyEncoding.decode32(""))
    }

    func testDecodingIsStrict() {
        let valid = KeyEncoding.encode([UInt8](repeating: 7, count: 32))
        XCTAssertNotNil(KeyEncoding.decode32(valid))
        XCTAssertNil(KeyEncoding.decode32(String(valid.dropLast())), "padding is required")
        XCTAssertNil(KeyEncoding.decode32(" " + valid), "no whitespace")
        XCTAssertNil(KeyEncoding.decode32(valid + "\n"), "no trailing newline")
        XCTAssertNil(KeyEncoding.decode32(valid.replacingOccurrences(of: "B", with: "-")), "URL-safe alphabet is not standard")
        XCTAssertNil(KeyEncoding.decode("Zg=a"), "nothing after padding")
        XCTAssertNil(KeyEncoding.decode("Z==="), "at most two padding characters")
        XCTAssertNil(KeyEncoding.decode("Zg==Zg=="), "padding only at the end")
        XCTAssertNil(KeyEncoding.decode("Zh=="), "non-zero unused bits are not canonical")
        XCTAssertNil(KeyEncoding.decode("Zm9=" ), "non-zero unused bits are not canonical")
        XCTAssertNil(KeyEncoding.decode("Zm9vY"), "truncated quad")
        XCTAssertNil(KeyEncoding.decode("Zm9vYé=="), "non-ASCII")
    }

    func testDecodingAnOversizedInputStillWorksAndIsNotA32ByteKey() {
        let big = [UInt8](repeating: 1, count: 100_000)
        XCTAssertEqual(KeyEncoding.decode(KeyEncoding.encode(big))?.count, 100_000)
        XCTAssertNil(KeyEncoding.decode32(KeyEncoding.encode(big)))
    }

    func testBase32DecodesOnionAddressBytes() {
        XCTAssertEqual(Base32.decode("mzxw6ytboi"), Array("foobar".utf8))  // RFC 4648 section 10, lower case
        XCTAssertEqual(Base32.decode("MZXW6YTBOI"), Array("foobar".utf8))
        XCTAssertNil(Base32.decode("mzxw6ytbo1"), "1 is not in the alphabet")
        XCTAssertNil(Base32.decode("mzxw6ytboi======"), "no padding in addresses")
    }
}
