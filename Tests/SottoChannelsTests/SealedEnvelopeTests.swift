import XCTest
@testable import SottoChannels

final class SealedEnvelopeTests: XCTestCase {
    private let t0 = TestChannels.t0
    private let channel = TestChannels.channel("friends")
    private let message = Array("meet at the usual place".utf8)

    private func assertRefused(_ envelope: [UInt8], channel: Channel? = nil, at time: Double? = nil,
                               _ expected: EnvelopeError, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try SealedEnvelope.open(envelope, channel: channel ?? self.channel, at: time ?? t0),
                             file: file, line: line) { error in
            XCTAssertEqual(error as? EnvelopeError, expected, file: file, line: line)
        }
    }

    func testSealedMessageOpensWithSenderIdAndBody() throws {
        let envelope = try SealedEnvelope.seal(message, sender: "alice", channel: channel, at: t0)
        let opened = try SealedEnvelope.open(envelope, channel: channel, at: t0 + 10)
        XCTAssertEqual(opened.sender, "alice")
        XCTAssertEqual(opened.body, message)
        XCTAssertEqual(opened.messageID.count, 16)
        XCTAssertEqual(opened.epoch, channel.schedule.epoch(at: t0))
        XCTAssertEqual(envelope.count, SealedEnvelope.minimumLength - 1 + 5 + message.count)
    }

    func testEnvelopeHidesSenderAndMessageFromWhoeverStoresIt() throws {
        let envelope = try SealedEnvelope.seal(message, sender: "alice-the-sender", channel: channel, at: t0)
        let text = String(decoding: envelope, as: UTF8.self)
        XCTAssertFalse(text.contains("alice"))
        XCTAssertFalse(text.contains("usual"))
        // Two envelopes of one sender and channel share only the version and epoch.
        let again = try SealedEnvelope.seal(message, sender: "alice-the-sender", channel: channel, at: t0)
        XCTAssertEqual(Array(envelope.prefix(9)), Array(again.prefix(9)))
        XCTAssertLessThan(zip(envelope.dropFirst(9), again.dropFirst(9)).filter { $0 == $1 }.count, 16)
    }

    func testEmptyAndLargestMessagesRoundTrip() throws {
        let empty = try SealedEnvelope.seal([], sender: "a", channel: channel, at: t0)
        XCTAssertEqual(empty.count, SealedEnvelope.minimumLength)
        XCTAssertEqual(try SealedEnvelope.open(empty, channel: channel, at: t0).body, [])
        let large = [UInt8](repeating: 0x42, count: SealedEnvelope.maximumMessageLength)
        let sender = String(repeating: "s", count: SealedEnvelope.maximumSenderLength)
        let envelope = try SealedEnvelope.seal(large, sender: sender, channel: channel, at: t0)
        XCTAssertEqual(envelope.count, SealedEnvelope.maximumLength)
        XCTAssertEqual(try SealedEnvelope.open(envelope, channel: channel, at: t0).body.count, large.count)
    }

    func testSealRefusesAnOversizedMessageAndABadSender() {
        XCTAssertThrowsError(try SealedEnvelope.seal([UInt8](repeating: 0, count: SealedEnvelope.maximumMessageLength + 1),
                                                     sender: "a", channel: channel, at: t0)) {
            XCTAssertEqual($0 as? EnvelopeError, .messageTooLarge(bytes: SealedEnvelope.maximumMessageLength + 1,
                                                                  limit: SealedEnvelope.maximumMessageLength))
        }
        XCTAssertThrowsError(try SealedEnvelope.seal(message, sender: "", channel: channel, at: t0))
        XCTAssertThrowsError(try SealedEnvelope.seal(message, sender: String(repeating: "é", count: 128), channel: channel, at: t0))
    }

    func testTamperingWithEachFieldIsRefused() throws {
        let envelope = try SealedEnvelope.seal(message, sender: "alice", channel: channel, at: t0)
        func flipped(_ index: Int) -> [UInt8] {
            var copy = envelope
            copy[index] ^= 0x01
            return copy
        }
        // version
        assertRefused(flipped(0), .unsupportedVersion(0))
        // epoch, within the window: the key and the additional data change
        assertRefused(flipped(8), .tampered)
        // nonce (bytes 9..<21) and channel tag (21..<29): the tag no longer matches
        for index in [9, 15, 20, 21, 28] { assertRefused(flipped(index), .otherChannel("friends")) }
        // ciphertext, first and last byte, and the Poly1305 tag
        for index in [29, 29 + 5 + message.count - 1, envelope.count - 16, envelope.count - 1] {
            assertRefused(flipped(index), .tampered)
        }
        // every byte, to be sure none is left unchecked
        for index in envelope.indices {
            XCTAssertThrowsError(try SealedEnvelope.open(flipped(index), channel: channel, at: t0), "byte \(index)")
        }
    }

    func testTruncatedAndOversizedEnvelopesAreRefusedBeforeAnyCrypto() throws {
        let envelope = try SealedEnvelope.seal(message, sender: "alice", channel: channel, at: t0)
        assertRefused([], .truncated(bytes: 0, minimum: SealedEnvelope.minimumLength))
        assertRefused(Array(envelope.prefix(SealedEnvelope.minimumLength - 1)),
                      .truncated(bytes: SealedEnvelope.minimumLength - 1, minimum: SealedEnvelope.minimumLength))
        // Cut at the end (the tag) or appended bytes: authentication fails.
        assertRefused(Array(envelope.dropLast()), .tampered)
        assertRefused(envelope + [0], .tampered)
        let huge = envelope + [UInt8](repeating: 0, count: SealedEnvelope.maximumLength)
        assertRefused(huge, .oversized(bytes: huge.count, limit: SealedEnvelope.maximumLength))
    }

    func testEnvelopeOfAnotherChannelIsReportedAsSuch() throws {
        let envelope = try SealedEnvelope.seal(message, sender: "alice", channel: channel, at: t0)
        assertRefused(envelope, channel: TestChannels.channel("work"), .otherChannel("work"))
        assertRefused(envelope, channel: TestChannels.channel("friends", secret: TestChannels.secretB), .otherChannel("friends"))
    }

    func testEnvelopeOutsideTheAcceptanceWindowIsAWrongEpoch() throws {
        let short = TestChannels.channel("friends", epochSeconds: 600, maxAgeSeconds: 1800)
        let envelope = try SealedEnvelope.seal(message, sender: "alice", channel: short, at: t0)
        let epoch = short.schedule.epoch(at: t0)
        // Three epochs back (30 minutes) and one ahead are accepted.
        XCTAssertNoThrow(try SealedEnvelope.open(envelope, channel: short, at: t0 + 1800))
        XCTAssertNoThrow(try SealedEnvelope.open(envelope, channel: short, at: t0 - 600))
        assertRefused(envelope, channel: short, at: t0 + 2400, .wrongEpoch(envelope: epoch, earliest: epoch + 1, latest: epoch + 5))
        assertRefused(envelope, channel: short, at: t0 - 1200, .wrongEpoch(envelope: epoch, earliest: epoch - 5, latest: epoch - 1))
        // An epoch rewritten far away is refused as such, before the MAC is tried.
        var rewritten = envelope
        rewritten[1] = 0x7F
        XCTAssertThrowsError(try SealedEnvelope.open(rewritten, channel: short, at: t0)) { error in
            guard case .wrongEpoch = error as? EnvelopeError else { return XCTFail("\(error)") }
        }
    }

    func testReplayedEnvelopeIsRefusedAndCounted() throws {
        var guardian = ReplayGuard()
        let envelope = try SealedEnvelope.seal(message, sender: "alice", channel: channel, at: t0)
        let opened = try SealedEnvelope.open(envelope, channel: channel, at: t0, replayGuard: &guardian)
        XCTAssertThrowsError(try SealedEnvelope.open(envelope, channel: channel, at: t0 + 5, replayGuard: &guardian)) {
            XCTAssertEqual($0 as? EnvelopeError, .replayed(messageID: opened.messageIDText))
        }
        XCTAssertEqual(guardian.replaysRefused, 1)
        // A second message from the same sender is no replay.
        let second = try SealedEnvelope.seal(message, sender: "alice", channel: channel, at: t0)
        XCTAssertNoThrow(try SealedEnvelope.open(second, channel: channel, at: t0, replayGuard: &guardian))
        XCTAssertEqual(guardian.count(for: channel), 2)
    }

    func testTamperedEnvelopeDoesNotConsumeItsMessageId() throws {
        var guardian = ReplayGuard()
        let envelope = try SealedEnvelope.seal(message, sender: "alice", channel: channel, at: t0)
        var tampered = envelope
        tampered[tampered.count - 1] ^= 0x80
        XCTAssertThrowsError(try SealedEnvelope.open(tampered, channel: channel, at: t0, replayGuard: &guardian))
        XCTAssertEqual(guardian.count(for: channel), 0)
        XCTAssertNoThrow(try SealedEnvelope.open(envelope, channel: channel, at: t0, replayGuard: &guardian))
    }
}

final class ReplayGuardTests: XCTestCase {
    private let t0 = TestChannels.t0

    private func message(_ n: Int, epoch: UInt64) -> OpenedMessage {
        OpenedMessage(sender: "a", messageID: [UInt8](repeating: UInt8(n & 0xFF), count: 15) + [UInt8(n >> 8)],
                      epoch: epoch, body: [])
    }

    func testGuardKeepsAtMostItsLimitPerChannelAndCountsEvictions() throws {
        let channel = TestChannels.channel()
        let epoch = channel.schedule.epoch(at: t0)
        var guardian = ReplayGuard(limitPerChannel: 3)
        for n in 0..<5 { try guardian.admit(channel: channel, message: message(n, epoch: epoch), at: t0) }
        XCTAssertEqual(guardian.count(for: channel), 3)
        XCTAssertEqual(guardian.evicted, 2)
        // The oldest were forgotten (the documented cost of the bound); the newest are refused.
        XCTAssertNoThrow(try guardian.admit(channel: channel, message: message(0, epoch: epoch), at: t0))
        XCTAssertThrowsError(try guardian.admit(channel: channel, message: message(4, epoch: epoch), at: t0))
    }

    func testGuardKeepsChannelsApart() throws {
        let a = TestChannels.channel("a")
        let b = TestChannels.channel("b")
        var guardian = ReplayGuard()
        let m = message(1, epoch: a.schedule.epoch(at: t0))
        try guardian.admit(channel: a, message: m, at: t0)
        XCTAssertNoThrow(try guardian.admit(channel: b, message: m, at: t0))
        XCTAssertThrowsError(try guardian.admit(channel: a, message: m, at: t0))
    }

    func testIdsOutsideTheWindowAreForgottenBeforeAnyEviction() throws {
        let channel = TestChannels.channel(epochSeconds: 600, maxAgeSeconds: 600)
        let epoch = channel.schedule.epoch(at: t0)
        var guardian = ReplayGuard(limitPerChannel: 2)
        try guardian.admit(channel: channel, message: message(1, epoch: epoch), at: t0)
        try guardian.admit(channel: channel, message: message(2, epoch: epoch), at: t0)
        try guardian.admit(channel: channel, message: message(3, epoch: epoch + 2), at: t0 + 1200)
        XCTAssertEqual(guardian.evicted, 0)
        XCTAssertEqual(guardian.count(for: channel), 1)
    }

    func testSerializedGuardReadsBackAndStillRefusesReplays() throws {
        let a = TestChannels.channel("a")
        let b = TestChannels.channel("b")
        var guardian = ReplayGuard(limitPerChannel: 10)
        let epoch = a.schedule.epoch(at: t0)
        for n in 0..<4 { try guardian.admit(channel: n % 2 == 0 ? a : b, message: message(n, epoch: epoch), at: t0) }
        let bytes = guardian.serialized()
        var restored = try ReplayGuard(serialized: bytes)
        XCTAssertEqual(restored.serialized(), bytes)
        XCTAssertEqual(restored.limitPerChannel, 10)
        XCTAssertThrowsError(try restored.admit(channel: a, message: message(2, epoch: epoch), at: t0))
        XCTAssertNoThrow(try restored.admit(channel: a, message: message(1, epoch: epoch), at: t0))
        XCTAssertEqual(try ReplayGuard(serialized: ReplayGuard().serialized()).count(for: a), 0)
    }

    func testMalformedTruncatedAndOversizedGuardFilesAreRefused() throws {
        let a = TestChannels.channel("a")
        var guardian = ReplayGuard(limitPerChannel: 4)
        try guardian.admit(channel: a, message: message(1, epoch: a.schedule.epoch(at: t0)), at: t0)
        let bytes = guardian.serialized()
        for cut in 0..<bytes.count {
            XCTAssertThrowsError(try ReplayGuard(serialized: Array(bytes.prefix(cut))), "cut at \(cut)")
        }
        XCTAssertThrowsError(try ReplayGuard(serialized: bytes + [0])) {
            XCTAssertEqual($0 as? ReplayGuard.FormatError, .trailingBytes(1))
        }
        var badMagic = bytes
        badMagic[0] = UInt8(ascii: "X")
        XCTAssertThrowsError(try ReplayGuard(serialized: badMagic)) { XCTAssertEqual($0 as? ReplayGuard.FormatError, .badMagic) }
        var zeroLimit = bytes
        zeroLimit[4...7] = [0, 0, 0, 0]
        XCTAssertThrowsError(try ReplayGuard(serialized: zeroLimit)) { XCTAssertEqual($0 as? ReplayGuard.FormatError, .badLimit(0)) }
        // More ids than the limit, and a count that claims far more than the bytes hold.
        var overfull = bytes
        overfull[4...7] = [0, 0, 0, 0]
        overfull[7] = 1
        overfull[26...29] = [0, 0, 0, 2]
        XCTAssertThrowsError(try ReplayGuard(serialized: overfull)) {
            XCTAssertEqual($0 as? ReplayGuard.FormatError, .tooManyEntries(2, limit: 1))
        }
        var claimsMillions = bytes
        claimsMillions[4...7] = [0, 0x10, 0, 0]
        claimsMillions[26...29] = [0, 0x0F, 0xFF, 0xFF]
        XCTAssertThrowsError(try ReplayGuard(serialized: claimsMillions)) {
            XCTAssertEqual($0 as? ReplayGuard.FormatError, .truncated(at: claimsMillions.count))
        }
        var manyChannels = bytes
        manyChannels[8...9] = [0xFF, 0xFF]
        XCTAssertThrowsError(try ReplayGuard(serialized: manyChannels)) {
            XCTAssertEqual($0 as? ReplayGuard.FormatError, .tooManyChannels(65535))
        }
        let twice = Array(bytes.prefix(8)) + [0, 2] + Array(bytes.dropFirst(10)) + Array(bytes.dropFirst(10))
        XCTAssertThrowsError(try ReplayGuard(serialized: twice)) {
            XCTAssertEqual($0 as? ReplayGuard.FormatError, .duplicateChannel)
        }
    }
}
