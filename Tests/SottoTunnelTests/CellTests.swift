import XCTest
@testable import SottoTunnel

final class CellCodecTests: XCTestCase {
    private let cellSizes = [128, 514, 16384]

    /// A valid 514-byte-cell plaintext with the given header fields and payload.
    private func plaintext(
        type: UInt8 = CellType.datagram.rawValue, reserved: UInt8 = 0, flow: UInt32 = 3, message: UInt16 = 7,
        index: UInt16 = 0, count: UInt16 = 1, length: UInt16? = nil, payload: [UInt8] = [1, 2, 3], size: Int = 498
    ) -> [UInt8] {
        var bytes = [type, reserved]
        bytes += [UInt8(flow >> 24), UInt8(flow >> 16 & 0xFF), UInt8(flow >> 8 & 0xFF), UInt8(flow & 0xFF)]
        bytes += [UInt8(message >> 8), UInt8(message & 0xFF)]
        bytes += [UInt8(index >> 8), UInt8(index & 0xFF)]
        bytes += [UInt8(count >> 8), UInt8(count & 0xFF)]
        let length = length ?? UInt16(payload.count)
        bytes += [UInt8(length >> 8), UInt8(length & 0xFF)]
        bytes += payload
        bytes += [UInt8](repeating: 0, count: size - bytes.count)
        return bytes
    }

    private func assertDecodeThrows(_ bytes: [UInt8], _ expected: CellError, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try CellCodec.decode(bytes), file: file, line: line) { error in
            XCTAssertEqual(error as? CellError, expected, file: file, line: line)
        }
    }

    func testPayloadCapacityIsCellSizeMinusTagAndHeader() {
        XCTAssertEqual(CellCodec.headerSize, 14)
        XCTAssertEqual(CellCodec.payloadCapacity(cellSize: 514), 484)
        XCTAssertEqual(CellCodec.payloadCapacity(cellSize: 128), 98)
        XCTAssertEqual(CellCodec.plaintextSize(cellSize: 514), 498)
    }

    func testCellTypeValuesMatchTheProtocolTable() {
        let expected: [(CellType, UInt8)] = [
            (.cover, 0), (.ping, 1), (.pong, 2), (.open, 3), (.opened, 4), (.close, 5),
            (.datagram, 6), (.streamData, 7), (.windowUpdate, 8),
        ]
        XCTAssertEqual(CellType.allCases.count, expected.count)
        for (type, value) in expected { XCTAssertEqual(type.rawValue, value, "\(type)") }
    }

    func testEveryTypeRoundTripsWithPayloadLengthsZeroOneAndCapacity() throws {
        for cellSize in cellSizes {
            let capacity = CellCodec.payloadCapacity(cellSize: cellSize)
            for type in CellType.allCases {
                let lengths = type == .cover ? [0] : [0, 1, capacity]
                for length in lengths {
                    let payload = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
                    let cell = Cell(type: type, flow: 0xDEAD_BEEF, message: type == .datagram ? 0xFFFE : 0,
                                    payload: payload)
                    let encoded = CellCodec.encode(cell, cellSize: cellSize)
                    XCTAssertEqual(encoded.count, cellSize - 16)
                    XCTAssertEqual(try CellCodec.decode(encoded), cell, "\(type) \(length) bytes, cell \(cellSize)")
                    XCTAssertEqual(try CellCodec.decode(encoded, cellSize: cellSize), cell)
                }
            }
        }
    }

    func testFragmentedDatagramRoundTrips() throws {
        let cell = Cell(type: .datagram, flow: 9, message: 65535, fragmentIndex: 4, fragmentCount: 5, payload: [0xAA])
        XCTAssertEqual(try CellCodec.decode(CellCodec.encode(cell, cellSize: 514)), cell)
    }

    func testEncodingFollowsTheByteLayoutAndZeroPads() {
        let cell = Cell(type: .datagram, flow: 0x0102_0304, message: 0x0506, fragmentIndex: 0x0007,
                        fragmentCount: 0x0009, payload: [0xF0, 0xF1])
        let encoded = CellCodec.encode(cell, cellSize: 128)
        XCTAssertEqual(Array(encoded[0..<16]),
                       [6, 0, 1, 2, 3, 4, 5, 6, 0, 7, 0, 9, 0, 2, 0xF0, 0xF1])
        XCTAssertTrue(encoded[16...].allSatisfy { $0 == 0 })
        XCTAssertEqual(encoded, plaintext(flow: 0x0102_0304, message: 0x0506, index: 7, count: 9,
                                          payload: [0xF0, 0xF1], size: 112))
    }

    func testEncodeIntoBufferOverwritesStaleBytes() {
        let cell = Cell(type: .ping, payload: PingPayload(value: 1).encode())
        var buffer = [UInt8](repeating: 0xEE, count: 498)
        buffer.withUnsafeMutableBytes { CellCodec.encode(cell, into: $0) }
        XCTAssertEqual(buffer, CellCodec.encode(cell, cellSize: 514))
    }

    func testDecodeFromRawBufferMatchesDecodeFromArray() throws {
        let bytes = plaintext()
        let cell = try bytes.withUnsafeBytes { try CellCodec.decode($0) }
        XCTAssertEqual(cell, Cell(type: .datagram, flow: 3, message: 7, payload: [1, 2, 3]))
    }

    func testDecodeRejectsUnknownType() {
        assertDecodeThrows(plaintext(type: 9), .unknownType(9))
        assertDecodeThrows(plaintext(type: 255), .unknownType(255))
    }

    func testDecodeRejectsNonzeroReservedByte() {
        assertDecodeThrows(plaintext(reserved: 1), .reservedNotZero(1))
    }

    func testDecodeRejectsFragmentCountZero() {
        assertDecodeThrows(plaintext(index: 0, count: 0), .fragmentCountZero)
    }

    func testDecodeRejectsFragmentIndexNotBelowCount() {
        assertDecodeThrows(plaintext(index: 3, count: 3), .fragmentIndexOutOfRange(index: 3, count: 3))
        assertDecodeThrows(plaintext(index: 0xFFFF, count: 2), .fragmentIndexOutOfRange(index: 0xFFFF, count: 2))
    }

    func testDecodeRejectsFragmentedNonDatagramCells() {
        assertDecodeThrows(plaintext(type: CellType.streamData.rawValue, index: 0, count: 2),
                           .fragmentedNonDatagram(type: .streamData, index: 0, count: 2))
    }

    func testDecodeRejectsPayloadLengthBeyondCapacity() {
        assertDecodeThrows(plaintext(length: 485, payload: []), .payloadLengthBeyondCapacity(length: 485, capacity: 484))
        assertDecodeThrows(plaintext(length: 0xFFFF, payload: []), .payloadLengthBeyondCapacity(length: 65535, capacity: 484))
    }

    func testDecodeAcceptsPayloadLengthExactlyAtCapacity() throws {
        let payload = [UInt8](repeating: 0x55, count: 484)
        XCTAssertEqual(try CellCodec.decode(plaintext(payload: payload)).payload, payload)
    }

    func testDecodeRejectsCoverCellWithPayload() {
        assertDecodeThrows(plaintext(type: CellType.cover.rawValue, payload: [0]), .coverWithPayload(length: 1))
    }

    func testDecodeRejectsNonzeroPaddingAnywhere() {
        // Right after the payload, in the middle (word-sized scan), and the very last byte.
        for offset in [17, 100, 257, 497] {
            var bytes = plaintext()
            bytes[offset] = 0x01
            assertDecodeThrows(bytes, .nonzeroPadding(offset: offset))
        }
    }

    func testDecodeRejectsBytesHiddenPastTheDeclaredLength() {
        // A length that claims fewer bytes than were written leaves them in the padding.
        assertDecodeThrows(plaintext(length: 2, payload: [1, 2, 3]), .nonzeroPadding(offset: 16))
    }

    func testDecodeRejectsPlaintextsOfNoPermittedCellSize() {
        for size in [0, 1, 13, 14, 111, 16369, 20000] {
            assertDecodeThrows([UInt8](repeating: 0, count: size), .plaintextSizeOutOfRange(actual: size))
        }
    }

    func testDecodeAcceptsSmallestAndLargestPlaintext() throws {
        XCTAssertEqual(try CellCodec.decode(plaintext(size: 112)).payload, [1, 2, 3])
        XCTAssertEqual(try CellCodec.decode(plaintext(size: 16368)).payload, [1, 2, 3])
    }

    func testDecodeWithCellSizeRejectsPlaintextOfAnotherSize() {
        XCTAssertThrowsError(try CellCodec.decode(plaintext(size: 497), cellSize: 514)) { error in
            XCTAssertEqual(error as? CellError, .wrongPlaintextSize(actual: 497, expected: 498))
        }
        XCTAssertThrowsError(try CellCodec.decode(plaintext(size: 512), cellSize: 514)) { error in
            XCTAssertEqual(error as? CellError, .wrongPlaintextSize(actual: 512, expected: 498))
        }
    }

    func testErrorDescriptionsNameTheOffendingValue() {
        XCTAssertTrue(CellError.unknownType(42).description.contains("42"))
        XCTAssertTrue(CellError.nonzeroPadding(offset: 77).description.contains("77"))
        XCTAssertTrue(CellError.wrongPlaintextSize(actual: 5, expected: 498).description.contains("cell_size"))
    }
}

final class ControlPayloadTests: XCTestCase {
    private func assertThrows<T>(_ body: @autoclosure () throws -> T, _ expected: ControlPayloadError,
                                 file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            XCTAssertEqual(error as? ControlPayloadError, expected, file: file, line: line)
        }
    }

    // MARK: open

    func testOpenRequestEncodesKindPortAndWindowBigEndian() {
        let request = OpenRequest(kind: .tcp, virtualPort: 0x1F90, window: 0x0001_0000)
        XCTAssertEqual(request.encode(), [2, 0x1F, 0x90, 0, 1, 0, 0])
        XCTAssertEqual(OpenRequest(kind: .udp, virtualPort: 5684).encode(), [1, 0x16, 0x34, 0, 0, 0, 0])
    }

    func testOpenRequestRoundTrips() throws {
        for request in [OpenRequest(kind: .tcp, virtualPort: 80, window: 262_144),
                        OpenRequest(kind: .udp, virtualPort: 65535),
                        OpenRequest(kind: .tcp, virtualPort: 1, window: .max)] {
            XCTAssertEqual(try OpenRequest.decode(request.encode()), request)
        }
    }

    func testOpenRequestRejectsShortAndLongPayloads() {
        assertThrows(try OpenRequest.decode([]), .wrongLength(payload: "open", actual: 0, expected: 7))
        assertThrows(try OpenRequest.decode([2, 0, 80, 0, 1, 0]), .wrongLength(payload: "open", actual: 6, expected: 7))
        assertThrows(try OpenRequest.decode([2, 0, 80, 0, 1, 0, 0, 0]), .wrongLength(payload: "open", actual: 8, expected: 7))
    }

    func testOpenRequestRejectsUnknownKind() {
        assertThrows(try OpenRequest.decode([0, 0, 80, 0, 0, 0, 0]), .unknownFlowKind(0))
        assertThrows(try OpenRequest.decode([3, 0, 80, 0, 1, 0, 0]), .unknownFlowKind(3))
    }

    func testOpenRequestRejectsPortZeroAndWindowsThatMakeNoSense() {
        assertThrows(try OpenRequest.decode([2, 0, 0, 0, 1, 0, 0]), .zeroVirtualPort)
        assertThrows(try OpenRequest.decode([2, 0, 80, 0, 0, 0, 0]), .zeroWindow(payload: "open"))
        assertThrows(try OpenRequest.decode([1, 0, 80, 0, 0, 0, 1]), .windowOnUDPFlow(1))
    }

    // MARK: opened

    func testOpenedReplyRoundTripsAndRejectsBadPayloads() throws {
        XCTAssertEqual(OpenedReply(window: 0x0102_0304).encode(), [1, 2, 3, 4])
        XCTAssertEqual(try OpenedReply.decode([0, 4, 0, 0]), OpenedReply(window: 262_144))
        assertThrows(try OpenedReply.decode([0, 4, 0]), .wrongLength(payload: "opened", actual: 3, expected: 4))
        assertThrows(try OpenedReply.decode([0, 4, 0, 0, 0]), .wrongLength(payload: "opened", actual: 5, expected: 4))
        assertThrows(try OpenedReply.decode([0, 0, 0, 0]), .zeroWindow(payload: "opened"))
    }

    // MARK: close

    func testCloseReasonValuesMatchTheProtocolAndEachHasADescription() {
        let expected: [(CloseReason, UInt8)] = [
            (.normal, 0), (.noSuchPort, 1), (.targetRefused, 2), (.limitReached, 3),
            (.idleTimeout, 4), (.protocolError, 5), (.targetUnreachable, 6),
        ]
        XCTAssertEqual(CloseReason.allCases.count, expected.count)
        for (reason, value) in expected { XCTAssertEqual(reason.rawValue, value) }
        XCTAssertEqual(Set(CloseReason.allCases.map(\.description)).count, CloseReason.allCases.count)
    }

    func testCloseNoticeRoundTripsWithAndWithoutMessage() throws {
        for notice in [CloseNotice(reason: .normal), CloseNotice(reason: .targetRefused, message: "127.0.0.1:8080 refused"),
                       CloseNotice(reason: .protocolError, message: "überlauf ✓"),
                       CloseNotice(reason: .normal, message: "a literal \u{FFFD} is valid")] {
            XCTAssertEqual(try CloseNotice.decode(notice.encode()), notice)
        }
        XCTAssertEqual(CloseNotice(reason: .idleTimeout, message: "ab").encode(), [4, 0x61, 0x62])
    }

    func testCloseNoticeTruncatesLongMessagesToFitTheSmallestCell() throws {
        let notice = CloseNotice(reason: .limitReached, message: String(repeating: "x", count: 500))
        let encoded = notice.encode()
        XCTAssertEqual(CloseNotice.portableSize, CellCodec.payloadCapacity(cellSize: 128))
        XCTAssertEqual(encoded.count, CloseNotice.portableSize)
        XCTAssertEqual(try CloseNotice.decode(encoded).message, String(repeating: "x", count: 97))
        // And the result fits a cell.
        _ = CellCodec.encode(Cell(type: .close, flow: 1, payload: encoded), cellSize: 128)
    }

    func testCloseNoticeTruncationNeverSplitsACharacter() throws {
        // "é" is two UTF-8 bytes: with 4 bytes for the message, only one "é" fits whole.
        let notice = CloseNotice(reason: .normal, message: "ééé")
        let encoded = notice.encode(payloadCapacity: 4)
        XCTAssertEqual(encoded.count, 3)
        XCTAssertEqual(try CloseNotice.decode(encoded).message, "é")
        // "😀" is four bytes: a budget of three keeps none of it.
        XCTAssertEqual(try CloseNotice.decode(CloseNotice(reason: .normal, message: "😀").encode(payloadCapacity: 4)).message, "")
        XCTAssertEqual(try CloseNotice.decode(CloseNotice(reason: .normal, message: "😀").encode(payloadCapacity: 5)).message, "😀")
    }

    func testCloseNoticeRejectsEmptyPayloadUnknownReasonAndInvalidUTF8() {
        assertThrows(try CloseNotice.decode([]), .tooShort(payload: "close", actual: 0, minimum: 1))
        assertThrows(try CloseNotice.decode([7]), .unknownCloseReason(7))
        assertThrows(try CloseNotice.decode([0xFF, 0x61]), .unknownCloseReason(0xFF))
        assertThrows(try CloseNotice.decode([0, 0xC3]), .closeMessageNotUTF8)       // truncated sequence
        assertThrows(try CloseNotice.decode([0, 0xFF, 0xFE]), .closeMessageNotUTF8) // never valid
        assertThrows(try CloseNotice.decode([0, 0xC0, 0x80]), .closeMessageNotUTF8) // overlong NUL
    }

    // MARK: window update

    func testWindowUpdateRoundTripsAndRejectsBadPayloads() throws {
        XCTAssertEqual(WindowUpdate(increment: 0xA0B0_C0D0).encode(), [0xA0, 0xB0, 0xC0, 0xD0])
        XCTAssertEqual(try WindowUpdate.decode([0, 0, 0x80, 0]), WindowUpdate(increment: 32768))
        assertThrows(try WindowUpdate.decode([]), .wrongLength(payload: "window update", actual: 0, expected: 4))
        assertThrows(try WindowUpdate.decode([1, 2, 3, 4, 5]), .wrongLength(payload: "window update", actual: 5, expected: 4))
        assertThrows(try WindowUpdate.decode([0, 0, 0, 0]), .zeroWindowIncrement)
    }

    // MARK: ping / pong

    func testPingPayloadIsEightBytesAndRoundTrips() throws {
        let ping = PingPayload(value: 0x0102_0304_0506_0708)
        XCTAssertEqual(ping.encode(), [1, 2, 3, 4, 5, 6, 7, 8])
        XCTAssertEqual(try PingPayload.decode(ping.encode()), ping)
        XCTAssertEqual(try PingPayload.decode([UInt8](repeating: 0xFF, count: 8)).value, .max)
        assertThrows(try PingPayload.decode([1, 2, 3, 4, 5, 6, 7]), .wrongLength(payload: "ping/pong", actual: 7, expected: 8))
        assertThrows(try PingPayload.decode([UInt8](repeating: 0, count: 9)), .wrongLength(payload: "ping/pong", actual: 9, expected: 8))
    }

    // MARK: garbage

    func testDecodersNeverCrashOnRandomGarbage() {
        var random = CellTestRandom(seed: 0x5077_0C0D)
        for _ in 0..<5000 {
            let length = Int(random.next() % 24)
            let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            // Whatever decodes must re-encode to the same bytes: no information is invented or lost.
            if let value = try? OpenRequest.decode(bytes) { XCTAssertEqual(value.encode(), bytes) }
            if let value = try? OpenedReply.decode(bytes) { XCTAssertEqual(value.encode(), bytes) }
            if let value = try? WindowUpdate.decode(bytes) { XCTAssertEqual(value.encode(), bytes) }
            if let value = try? PingPayload.decode(bytes) { XCTAssertEqual(value.encode(), bytes) }
            if let value = try? CloseNotice.decode(bytes) { XCTAssertEqual(value.encode(), bytes) }
        }
    }

    func testCellDecodeOfRandomPlaintextsEitherThrowsOrReencodesIdentically() {
        var random = CellTestRandom(seed: 42)
        var decoded = 0
        for round in 0..<3000 {
            var bytes = [UInt8](repeating: 0, count: 112)
            // Mostly-valid headers so that the checks past the type byte get exercised too.
            bytes[0] = UInt8(random.next() % 10)
            bytes[1] = random.next() % 8 == 0 ? 1 : 0
            for i in 2..<12 { bytes[i] = UInt8(truncatingIfNeeded: random.next()) }
            bytes[10] = 0
            bytes[11] = UInt8(random.next() % 3)
            bytes[8] = 0
            bytes[9] = UInt8(random.next() % 3)
            bytes[13] = UInt8(random.next() % 110)
            for i in 14..<(14 + Int(bytes[13]) + (round % 7 == 0 ? 1 : 0)) where i < 112 {
                bytes[i] = UInt8(truncatingIfNeeded: random.next())
            }
            if let cell = try? CellCodec.decode(bytes) {
                decoded += 1
                XCTAssertEqual(CellCodec.encode(cell, cellSize: 128), bytes)
            }
        }
        XCTAssertGreaterThan(decoded, 100, "the generator should produce some valid cells")
    }
}

/// A small seeded generator (SplitMix64), so randomized tests replay exactly.
struct CellTestRandom: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D6_049F_49BB_133B
        return z ^ (z >> 31)
    }
}
