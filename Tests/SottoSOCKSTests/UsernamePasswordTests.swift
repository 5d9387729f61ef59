import NIOCore
import SottoSOCKS
import XCTest

/// RFC 1929 section 2, as a server reads what NIOSOCKS passes on in `ClientMessage.authenticationData`.
final class UsernamePasswordTests: XCTestCase {
    /// 01 | 05 "alice" | 06 "secret"
    private let aliceBytes: [UInt8] = [0x01, 0x05] + Array("alice".utf8) + [0x06] + Array("secret".utf8)

    func testACompleteRequestIsReadAndConsumed() throws {
        var buffer = ByteBuffer(bytes: aliceBytes)
        let request = try buffer.readUsernamePasswordRequest()
        XCTAssertEqual(request, UsernamePasswordRequest(username: "alice", password: "secret"))
        XCTAssertEqual(buffer.readableBytes, 0)
    }

    func testEveryIncompletePrefixReturnsNilAndConsumesNothing() throws {
        for length in 0..<aliceBytes.count {
            var buffer = ByteBuffer(bytes: aliceBytes.prefix(length))
            XCTAssertNil(try buffer.readUsernamePasswordRequest(), "prefix of \(length) bytes")
            XCTAssertEqual(buffer.readerIndex, 0, "prefix of \(length) bytes")
            XCTAssertEqual(buffer.readableBytes, length)
        }
    }

    func testARequestArrivingOneByteAtATimeIsReadOnceTheLastByteArrives() throws {
        var cumulation = ByteBuffer()
        var result: UsernamePasswordRequest?
        for (index, byte) in aliceBytes.enumerated() {
            XCTAssertNil(result, "a request was returned before byte \(index) arrived")
            cumulation.writeInteger(byte)
            result = try cumulation.readUsernamePasswordRequest()
        }
        XCTAssertEqual(result, UsernamePasswordRequest(username: "alice", password: "secret"))
        XCTAssertEqual(cumulation.readableBytes, 0)
    }

    func testUsernameAndPasswordOf255BytesAreRead() throws {
        let username = String(repeating: "u", count: 255)
        let password = String(repeating: "p", count: 255)
        var buffer = ByteBuffer(bytes: [0x01, 0xFF] + Array(username.utf8) + [0xFF] + Array(password.utf8))
        XCTAssertEqual(
            try buffer.readUsernamePasswordRequest(),
            UsernamePasswordRequest(username: username, password: password)
        )
        XCTAssertEqual(buffer.readableBytes, 0)
    }

    func testA255ByteUsernameThatIsCutShortWaitsForMore() throws {
        var buffer = ByteBuffer(bytes: [0x01, 0xFF] + Array(repeating: UInt8(ascii: "u"), count: 254))
        XCTAssertNil(try buffer.readUsernamePasswordRequest())
        XCTAssertEqual(buffer.readerIndex, 0)
    }

    func testAnEmptyPasswordIsAccepted() throws {
        var buffer = ByteBuffer(bytes: [0x01, 0x07] + Array("private".utf8) + [0x00])
        XCTAssertEqual(
            try buffer.readUsernamePasswordRequest(),
            UsernamePasswordRequest(username: "private", password: "")
        )
    }

    func testVersion5InsteadOf1IsRejectedWithoutConsuming() {
        // A client that skipped the sub-negotiation and sent its CONNECT request.
        var buffer = ByteBuffer(bytes: [0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, 0x00, 0x50])
        XCTAssertThrowsError(try buffer.readUsernamePasswordRequest()) { error in
            XCTAssertEqual(error as? UsernamePasswordError, .unsupportedVersion(0x05))
            XCTAssertTrue("\(error)".contains("version is 0x05, not 0x01"), "\(error)")
        }
        XCTAssertEqual(buffer.readerIndex, 0)
    }

    func testAnyVersionOtherThan1IsRejectedFromTheFirstByte() {
        for version in UInt8.min...UInt8.max where version != 0x01 {
            var buffer = ByteBuffer(bytes: [version])
            XCTAssertThrowsError(try buffer.readUsernamePasswordRequest()) { error in
                XCTAssertEqual(error as? UsernamePasswordError, .unsupportedVersion(version))
            }
        }
    }

    func testAnEmptyUsernameIsRejectedAsSoonAsItsLengthArrives() {
        var buffer = ByteBuffer(bytes: [0x01, 0x00])
        XCTAssertThrowsError(try buffer.readUsernamePasswordRequest()) { error in
            XCTAssertEqual(error as? UsernamePasswordError, .emptyUsername)
        }
        XCTAssertEqual(buffer.readerIndex, 0)
    }

    func testAnyUTF8IsAcceptedInBothFields() throws {
        let request = UsernamePasswordRequest(username: "jürgen-日本", password: "пароль 🔑\u{0}")
        var buffer = ByteBuffer()
        try buffer.writeUsernamePasswordRequest(request)
        XCTAssertEqual(try buffer.readUsernamePasswordRequest(), request)
    }

    func testAUsernameThatIsNotUTF8IsRejected() {
        // 0xC3 starts a two-byte sequence that 0x28 does not continue.
        var buffer = ByteBuffer(bytes: [0x01, 0x02, 0xC3, 0x28, 0x01, UInt8(ascii: "p")])
        XCTAssertThrowsError(try buffer.readUsernamePasswordRequest()) { error in
            XCTAssertEqual(error as? UsernamePasswordError, .usernameNotUTF8)
        }
        XCTAssertEqual(buffer.readerIndex, 0)
    }

    func testAPasswordThatIsNotUTF8IsRejected() {
        for badPassword: [UInt8] in [[0xFF], [0xED, 0xA0, 0x80], [0xC0, 0xAF], [0xE2, 0x82]] {
            // Lone 0xFF, an encoded surrogate, an overlong '/', a truncated sequence.
            var buffer = ByteBuffer(bytes: [0x01, 0x01, UInt8(ascii: "u"), UInt8(badPassword.count)] + badPassword)
            XCTAssertThrowsError(try buffer.readUsernamePasswordRequest(), "\(badPassword)") { error in
                XCTAssertEqual(error as? UsernamePasswordError, .passwordNotUTF8)
            }
        }
    }

    func testBytesAfterTheRequestAreLeftUnread() throws {
        let trailing: [UInt8] = [0x05, 0x01, 0x00, 0x03, 0x04] + Array("home".utf8) + [0x16, 0x2E]
        var buffer = ByteBuffer(bytes: aliceBytes + trailing)
        XCTAssertEqual(try buffer.readUsernamePasswordRequest()?.username, "alice")
        XCTAssertEqual(Array(buffer.readableBytesView), trailing)
    }

    func testPrintingARequestNeverShowsThePassword() {
        let request = UsernamePasswordRequest(username: "alice", password: "hunter2")
        for text in ["\(request)", String(describing: request), String(reflecting: request)] {
            XCTAssertFalse(text.contains("hunter2"), text)
            XCTAssertTrue(text.contains("alice"), text)
        }
    }

    func testTheReplyIs0100OnSuccessAnd0101OnFailure() {
        XCTAssertEqual(UsernamePasswordReply.bytes(success: true), [0x01, 0x00])
        XCTAssertEqual(UsernamePasswordReply.bytes(success: false), [0x01, 0x01])
    }

    func testWritingProducesTheRFC1929Layout() throws {
        var buffer = ByteBuffer()
        let written = try buffer.writeUsernamePasswordRequest(UsernamePasswordRequest(username: "alice", password: "secret"))
        XCTAssertEqual(Array(buffer.readableBytesView), aliceBytes)
        XCTAssertEqual(written, aliceBytes.count)
    }

    func testWritingRefusesWhatCannotBeEncodedAndWritesNothing() {
        let cases: [(UsernamePasswordRequest, UsernamePasswordError)] = [
            (.init(username: "", password: "x"), .emptyUsername),
            (.init(username: String(repeating: "u", count: 256), password: ""), .usernameTooLong(byteCount: 256)),
            // 128 two-byte characters: 128 characters but 256 bytes.
            (.init(username: "u", password: String(repeating: "é", count: 128)), .passwordTooLong(byteCount: 256)),
        ]
        for (request, expected) in cases {
            var buffer = ByteBuffer()
            XCTAssertThrowsError(try buffer.writeUsernamePasswordRequest(request)) { error in
                XCTAssertEqual(error as? UsernamePasswordError, expected)
            }
            XCTAssertEqual(buffer.readableBytes, 0)
        }
    }

    func testWriteThenReadRoundTripsAtTheLengthLimits() throws {
        for (usernameLength, passwordLength) in [(1, 0), (1, 255), (255, 0), (255, 255), (17, 33)] {
            let request = UsernamePasswordRequest(
                username: String(repeating: "a", count: usernameLength),
                password: String(repeating: "b", count: passwordLength)
            )
            var buffer = ByteBuffer()
            XCTAssertEqual(try buffer.writeUsernamePasswordRequest(request), 3 + usernameLength + passwordLength)
            XCTAssertEqual(try buffer.readUsernamePasswordRequest(), request)
            XCTAssertEqual(buffer.readableBytes, 0)
        }
    }
}
