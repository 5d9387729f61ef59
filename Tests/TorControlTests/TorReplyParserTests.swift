import NIOCore
import XCTest
@testable import TorControl

final class TorReplyParserTests: XCTestCase {
    private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    private func parseAll(_ s: String, limits: TorReplyParser.Limits = .init()) throws -> [TorReply] {
        var parser = TorReplyParser(limits: limits)
        parser.feed(bytes(s))
        let replies = try parser.allReplies()
        try parser.finish()
        return replies
    }

    private func assertThrows(_ s: String, limits: TorReplyParser.Limits = .init(), finish: Bool = false,
                              file: StaticString = #filePath, line: UInt = #line,
                              _ check: (TorProtocolError) -> Bool) {
        var parser = TorReplyParser(limits: limits)
        parser.feed(bytes(s))
        do {
            _ = try parser.allReplies()
            if finish { try parser.finish() }
            XCTFail("expected an error for \(s.debugDescription)", file: file, line: line)
        } catch let error as TorProtocolError {
            XCTAssertTrue(check(error), "unexpected error \(error)", file: file, line: line)
            XCTAssertFalse(error.description.isEmpty, file: file, line: line)
        } catch {
            XCTFail("unexpected error type \(error)", file: file, line: line)
        }
    }

    // A GETINFO exchange in the exact shape of control-spec 3.9's example, plus an event.
    private let sample =
        "250+desc/name/moria=\r\n[Descriptor for moria]\r\n..leading dot\r\n.\r\n" +
        "250-version=Tor 0.1.1.0-alpha-cvs\r\n250 OK\r\n" +
        "650 STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=5 TAG=conn SUMMARY=\"Connecting to a relay\"\r\n" +
        "250 OK\r\n"

    func testSingleLineReplyParsesStatusAndText() throws {
        let replies = try parseAll("250 OK\r\n")
        XCTAssertEqual(replies, [TorReply(status: 250, lines: [TorReplyLine(status: 250, separator: .end, text: "OK")])])
        XCTAssertTrue(replies[0].isSuccess)
        XCTAssertFalse(replies[0].isEvent)
    }

    func testMultiLineReplyKeepsLinesInOrderUntilEndLine() throws {
        let replies = try parseAll("250-SOCKSPORT=9050\r\n250-A=b c\r\n250 ORPORT=0\r\n")
        XCTAssertEqual(replies.count, 1)
        XCTAssertEqual(replies[0].lines.map(\.text), ["SOCKSPORT=9050", "A=b c", "ORPORT=0"])
        XCTAssertEqual(replies[0].lines.map(\.separator), [.mid, .mid, .end])
    }

    func testDataReplyIsDotUnstuffedAndJoinedWithNewlines() throws {
        let replies = try parseAll(sample)
        XCTAssertEqual(replies.count, 3)
        let first = replies[0].lines[0]
        XCTAssertEqual(first.separator, .data)
        XCTAssertEqual(first.text, "desc/name/moria=")
        XCTAssertEqual(first.data, "[Descriptor for moria]\n.leading dot")
        XCTAssertEqual(replies[0].lines[1].text, "version=Tor 0.1.1.0-alpha-cvs")
    }

    func testEmptyDataBlockAndBlankDataLinesArePreserved() throws {
        let replies = try parseAll("250+a=\r\n.\r\n250+b=\r\n\r\nx\r\n\r\n.\r\n250 OK\r\n")
        XCTAssertEqual(replies[0].lines[0].data, "")
        XCTAssertEqual(replies[0].lines[1].data, "\nx\n")
    }

    func testDataBlockMayContainLoneCRAndLFBytes() throws {
        // CmdData's LineItem allows CR not followed by LF, and NonCR includes LF (control-spec 2.4).
        let replies = try parseAll("250+k=\r\na\rb\nc\r\n.\r\n250 OK\r\n")
        XCTAssertEqual(replies[0].lines[0].data, "a\rb\nc")
    }

    func testEventsAreMarkedAsEventsAndMultiLineEventsAreOneReply() throws {
        let replies = try parseAll("650-CIRC 1000 EXTENDED moria1,moria2 0xBEEF\r\n650-EXTRAMAGIC=99\r\n650 ANONYMITY=high\r\n")
        XCTAssertEqual(replies.count, 1)
        XCTAssertTrue(replies[0].isEvent)
        XCTAssertEqual(replies[0].lines.count, 3)
    }

    func testEveryByteBoundarySplitGivesTheSameReplies() throws {
        let whole = try parseAll(sample)
        let data = bytes(sample)
        for cut in 0...data.count {
            var parser = TorReplyParser()
            var got: [TorReply] = []
            parser.feed(Array(data[..<cut]))
            got += try parser.allReplies()
            parser.feed(Array(data[cut...]))
            got += try parser.allReplies()
            XCTAssertEqual(got, whole, "split at \(cut)")
            XCTAssertNoThrow(try parser.finish())
        }
        // And one byte at a time.
        var parser = TorReplyParser()
        var got: [TorReply] = []
        for b in data {
            parser.feed([b])
            got += try parser.allReplies()
        }
        XCTAssertEqual(got, whole)
    }

    func testByteBufferFeedMatchesArrayFeed() throws {
        var parser = TorReplyParser()
        parser.feed(ByteBuffer(string: sample))
        XCTAssertEqual(try parser.allReplies(), try parseAll(sample))
    }

    func testIncompleteReplyYieldsNothingYet() throws {
        var parser = TorReplyParser()
        parser.feed(bytes("250-a=1\r\n250 O"))
        XCTAssertNil(try parser.nextReply())
        XCTAssertFalse(parser.isAtReplyBoundary)
        parser.feed(bytes("K\r\n"))
        XCTAssertEqual(try parser.nextReply()?.lines.count, 2)
        XCTAssertTrue(parser.isAtReplyBoundary)
    }

    // MARK: - Malformed input

    func testNonDigitStatusCodeThrows() {
        assertThrows("25x OK\r\n") { if case .invalidStatusCode = $0 { return true }; return false }
        assertThrows("OK\r\n") { if case .invalidStatusCode = $0 { return true }; return false }
    }

    func testMissingSeparatorAfterCodeThrows() {
        assertThrows("250OK\r\n") { if case .missingSeparator = $0 { return true }; return false }
        assertThrows("250\r\n") { if case .missingSeparator = $0 { return true }; return false }
    }

    func testMixedCodesInOneReplyThrow() {
        assertThrows("250-a=1\r\n251 OK\r\n") {
            if case let .mixedStatusCodes(expected, found, _) = $0 { return expected == 250 && found == 251 }; return false
        }
        // An event inside a command reply is "disallowed" (control-spec 4.1).
        assertThrows("250-SOCKSPORT=9050\r\n650 CIRC 1000 EXTENDED\r\n250 ORPORT=0\r\n") {
            if case .mixedStatusCodes = $0 { return true }; return false
        }
        assertThrows("250-a\r\n552+b=\r\nx\r\n.\r\n") { if case .mixedStatusCodes = $0 { return true }; return false }
    }

    func testBareLineFeedInReplyLineThrows() {
        assertThrows("250 OK\n") { if case .bareLineFeed = $0 { return true }; return false }
    }

    func testOversizeLineThrowsBeforeItsEndArrives() {
        let limits = TorReplyParser.Limits(maxLineLength: 100)
        assertThrows("250 " + String(repeating: "x", count: 200), limits: limits) {
            $0 == .lineTooLong(limit: 100)
        }
        assertThrows("250 " + String(repeating: "x", count: 97) + "\r\n", limits: limits) { $0 == .lineTooLong(limit: 100) }
        XCTAssertNoThrow(try parseAll("250 " + String(repeating: "x", count: 96) + "\r\n", limits: limits))
    }

    func testTooManyLinesThrows() {
        let limits = TorReplyParser.Limits(maxLinesPerReply: 3)
        assertThrows(String(repeating: "250-a\r\n", count: 3) + "250 OK\r\n", limits: limits) { $0 == .tooManyLines(limit: 3) }
        XCTAssertNoThrow(try parseAll(String(repeating: "250-a\r\n", count: 2) + "250 OK\r\n", limits: limits))
    }

    func testOversizeDataBlockThrows() {
        let limits = TorReplyParser.Limits(maxDataBlockSize: 10)
        assertThrows("250+k=\r\n0123456789\r\nA\r\n.\r\n250 OK\r\n", limits: limits) { $0 == .dataBlockTooLarge(limit: 10) }
        XCTAssertNoThrow(try parseAll("250+k=\r\n01234\r\n5678\r\n.\r\n250 OK\r\n", limits: limits))
    }

    func testStreamEndingInsideDataBlockThrowsOnFinish() {
        assertThrows("250+k=\r\nline\r\n", finish: true) { if case .unterminatedDataBlock = $0 { return true }; return false }
    }

    func testStreamEndingInsideReplyThrowsOnFinish() {
        assertThrows("250-a=1\r\n", finish: true) { if case .truncatedReply = $0 { return true }; return false }
        assertThrows("250 O", finish: true) { if case .truncatedReply = $0 { return true }; return false }
    }

    func testParserStaysFailedAfterAnError() {
        var parser = TorReplyParser()
        parser.feed(bytes("2x0 OK\r\n250 OK\r\n"))
        XCTAssertThrowsError(try parser.nextReply())
        XCTAssertThrowsError(try parser.nextReply()) { XCTAssertEqual($0 as? TorProtocolError, .invalidStatusCode(line: "2x0 OK")) }
    }

    func testSeededFuzzNeverCrashesAndOnlyThrowsProtocolErrors() {
        var rng = SplitMix64(seed: 0x5077_0C0D)
        let corpus = bytes(sample) + bytes("250-PROTOCOLINFO 1\r\n250-AUTH METHODS=NULL\r\n250 OK\r\n")
        let alphabet: [UInt8] = Array("0123456789+- .=\"\\\r\nOKab".utf8) + [0, 0xFF]
        let limits = TorReplyParser.Limits(maxLineLength: 256, maxLinesPerReply: 16, maxDataBlockSize: 512)
        var parsedSome = 0
        for _ in 0..<3000 {
            var input = corpus
            for _ in 0..<Int(rng.next() % 6) {
                let i = Int(rng.next() % UInt64(input.count))
                switch rng.next() % 3 {
                case 0: input[i] = alphabet[Int(rng.next() % UInt64(alphabet.count))]
                case 1: input.remove(at: i)
                default: input.insert(alphabet[Int(rng.next() % UInt64(alphabet.count))], at: i)
                }
            }
            if rng.next() % 5 == 0 { input = (0..<Int(rng.next() % 300)).map { _ in UInt8(truncatingIfNeeded: rng.next()) } }
            var parser = TorReplyParser(limits: limits)
            var offset = 0
            do {
                while offset < input.count {
                    let n = 1 + Int(rng.next() % 17)
                    parser.feed(Array(input[offset..<min(input.count, offset + n)]))
                    offset += n
                    while let reply = try parser.nextReply() {
                        parsedSome += 1
                        XCTAssertFalse(reply.lines.isEmpty)
                        XCTAssertTrue(reply.lines.allSatisfy { $0.status == reply.status })
                        XCTAssertEqual(reply.lines.last?.separator, .end)
                        _ = try? reply.lines.map { try $0.arguments() }
                        _ = try? TorEvent(reply: reply)
                        _ = try? ProtocolInfo(reply: reply)
                        _ = try? GetInfoResult(reply: reply)
                    }
                }
                try parser.finish()
            } catch is TorProtocolError {
                // expected for most mutations
            } catch {
                XCTFail("unexpected error type \(error)")
            }
        }
        XCTAssertGreaterThan(parsedSome, 100, "the fuzz loop should also exercise successful parses")
    }
}

/// A small deterministic generator (SplitMix64) so fuzz failures reproduce.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
