import XCTest
@testable import SottoChannels

final class InboxTests: XCTestCase {
    private let t0 = TestChannels.t0

    func testEachEnvelopeOfABoxGetsItsOwnVerdictAndOnlyOpenedOrReplayedAreAcknowledged() throws {
        let friends = TestChannels.channel("friends")
        let work = TestChannels.channel("work")
        let good = try SealedEnvelope.seal(Array("hello".utf8), sender: "alice", channel: friends, at: t0)
        var tampered = try SealedEnvelope.seal(Array("evil".utf8), sender: "mallory", channel: friends, at: t0)
        tampered[tampered.count - 3] ^= 0x10
        let other = try SealedEnvelope.seal(Array("not yours".utf8), sender: "bob", channel: work, at: t0)
        let old = try SealedEnvelope.seal(Array("stale".utf8), sender: "carol", channel: friends, at: t0 - 30 * 86_400)
        var replayGuard = ReplayGuard()
        let entries = Inbox.open([(1, good), (2, tampered), (3, other), (4, good), (5, old), (6, [1, 2, 3])],
                                 channel: friends, at: t0, replayGuard: &replayGuard)
        XCTAssertEqual(entries.map(\.id), [1, 2, 3, 4, 5, 6])
        guard case .success(let message) = entries[0].result else { return XCTFail("\(entries[0])") }
        XCTAssertEqual(message.sender, "alice")
        XCTAssertEqual(message.body, Array("hello".utf8))
        XCTAssertEqual(entries[1].result, .failure(.tampered))
        XCTAssertEqual(entries[2].result, .failure(.otherChannel("friends")))
        XCTAssertEqual(entries[3].result, .failure(.replayed(messageID: message.messageIDText)))
        guard case .failure(.wrongEpoch) = entries[4].result else { return XCTFail("\(entries[4])") }
        guard case .failure(.truncated) = entries[5].result else { return XCTFail("\(entries[5])") }
        XCTAssertEqual(entries.filter(\.isAcknowledgeable).map(\.id), [1, 4])
    }

    func testDeletePayloadsAreBigEndianIdsInChunks() {
        XCTAssertEqual(Inbox.deletePayloads([]), [])
        XCTAssertEqual(Inbox.deletePayloads([1, 0x0102_0304_0506_0708]),
                       [[0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8]])
        let chunks = Inbox.deletePayloads(Array(1...600), maximumIDsPerDelete: 256)
        XCTAssertEqual(chunks.map(\.count), [256 * 8, 256 * 8, 88 * 8])
        XCTAssertEqual(Array(chunks[2].suffix(8)), [0, 0, 0, 0, 0, 0, 0x02, 0x58])
    }

    func testDisplayTextShowsTextAndRefusesBinaryAndTerminalControls() {
        XCTAssertEqual(Inbox.displayText(Array("line one\n\tline two é".utf8)), "line one\n\tline two é")
        XCTAssertNil(Inbox.displayText([0xFF, 0xFE]))
        XCTAssertNil(Inbox.displayText(Array("clear \u{1B}[2J screen".utf8)))
        XCTAssertNil(Inbox.displayText([0x41, 0x00, 0x42]))
        XCTAssertEqual(Inbox.displayText([]), "")
    }
}
