import XCTest
@testable import SottoTunnel

final class StreamCreditTests: XCTestCase {
    // MARK: Send side

    func testInitialCreditIsThePeersWindow() {
        let credit = StreamCredit(initialSendWindow: 1_000, receiveWindow: 4_000)
        XCTAssertEqual(credit.sendable, 1_000)
        XCTAssertEqual(credit.peerCredit, 4_000)
    }

    func testSendingUsesCreditUntilNoneIsLeft() {
        var credit = StreamCredit(initialSendWindow: 1_000, receiveWindow: 4_000)
        credit.consumeSend(484)
        XCTAssertEqual(credit.sendable, 516)
        credit.consumeSend(516)
        XCTAssertEqual(credit.sendable, 0, "with no credit left the gateway stops reading its socket")
    }

    func testGrantRestoresCreditUpToTheWindow() throws {
        var credit = StreamCredit(initialSendWindow: 1_000, receiveWindow: 4_000)
        credit.consumeSend(1_000)
        try credit.grant(600)
        XCTAssertEqual(credit.sendable, 600)
        try credit.grant(400)
        XCTAssertEqual(credit.sendable, 1_000)
    }

    func testGrantBeyondWhatWasSentThrows() throws {
        var credit = StreamCredit(initialSendWindow: 1_000, receiveWindow: 4_000)
        credit.consumeSend(300)
        XCTAssertThrowsError(try credit.grant(301)) { error in
            XCTAssertEqual(error as? StreamCreditError, .grantBeyondWindow(increment: 301, credit: 700, window: 1_000))
        }
        XCTAssertEqual(credit.sendable, 700, "a rejected grant changes nothing")
        try credit.grant(300)
        XCTAssertEqual(credit.sendable, 1_000)
    }

    func testGrantOfTheLargestIncrementOnAFullWindowThrowsWithoutOverflow() {
        var credit = StreamCredit(initialSendWindow: .max, receiveWindow: 1)
        XCTAssertThrowsError(try credit.grant(.max))
        XCTAssertThrowsError(try credit.grant(1))
        XCTAssertEqual(credit.sendable, Int(UInt32.max))
    }

    // MARK: Receive side

    func testPeerMaySendExactlyTheCreditGranted() throws {
        var credit = StreamCredit(initialSendWindow: 1, receiveWindow: 1_000)
        try credit.received(999)
        try credit.received(1)
        XCTAssertEqual(credit.peerCredit, 0)
        XCTAssertEqual(credit.undelivered, 1_000)
    }

    func testPeerSendingBeyondItsCreditThrows() throws {
        var credit = StreamCredit(initialSendWindow: 1, receiveWindow: 1_000)
        try credit.received(900)
        XCTAssertThrowsError(try credit.received(101)) { error in
            XCTAssertEqual(error as? StreamCreditError, .overrun(received: 101, credit: 100))
            XCTAssertTrue("\(error)".contains("101"))
        }
        XCTAssertEqual(credit.peerCredit, 100)
    }

    func testDeliveredAnnouncesOnceHalfTheWindowWasDelivered() throws {
        var credit = StreamCredit(initialSendWindow: 1, receiveWindow: 1_000)
        try credit.received(1_000)
        XCTAssertNil(credit.delivered(300))
        XCTAssertNil(credit.delivered(199))
        XCTAssertEqual(credit.delivered(1), 500)
        XCTAssertEqual(credit.peerCredit, 500)
        XCTAssertEqual(credit.unannounced, 0)
        XCTAssertNil(credit.delivered(499))
        XCTAssertEqual(credit.delivered(1), 500)
        XCTAssertEqual(credit.peerCredit, 1_000)
    }

    func testAnnouncementCarriesEverythingDeliveredSinceTheLastOne() throws {
        var credit = StreamCredit(initialSendWindow: 1, receiveWindow: 1_000)
        try credit.received(1_000)
        XCTAssertNil(credit.delivered(100))
        XCTAssertEqual(credit.delivered(800), 900)
        XCTAssertEqual(credit.peerCredit, 900)
    }

    func testOddAndTinyWindowsStillAnnounce() throws {
        var odd = StreamCredit(initialSendWindow: 1, receiveWindow: 5)
        try odd.received(5)
        XCTAssertNil(odd.delivered(2))
        XCTAssertEqual(odd.delivered(1), 3)
        var tiny = StreamCredit(initialSendWindow: 1, receiveWindow: 1)
        try tiny.received(1)
        XCTAssertEqual(tiny.delivered(1), 1)
        try tiny.received(1)
    }

    func testBytesAnnouncedMayBeSentAgainButNoMore() throws {
        var credit = StreamCredit(initialSendWindow: 1, receiveWindow: 100)
        try credit.received(100)
        XCTAssertEqual(credit.delivered(100), 100)
        try credit.received(100)
        XCTAssertThrowsError(try credit.received(1))
    }

    // MARK: Both ends together

    func testTwoEndsExchangingEverythingNeverDeadlockOrOverrun() throws {
        // A sender with a window of 7,000 pushes 1 MB in cells of up to 484 bytes, the receiver
        // delivers in uneven chunks; every window update goes straight back.
        var sender = StreamCredit(initialSendWindow: 7_000, receiveWindow: 1)
        var receiver = StreamCredit(initialSendWindow: 1, receiveWindow: 7_000)
        var random = CellTestRandom(seed: 99)
        var remaining = 1_000_000
        var buffered = 0
        var rounds = 0
        while remaining > 0 || buffered > 0 {
            rounds += 1
            XCTAssertLessThan(rounds, 1_000_000, "no progress")
            let chunk = min(remaining, sender.sendable, 484)
            if chunk > 0 {
                sender.consumeSend(chunk)
                try receiver.received(chunk)
                remaining -= chunk
                buffered += chunk
            }
            XCTAssertLessThanOrEqual(buffered, 7_000, "memory bounded by the window")
            if buffered > 0 && (chunk == 0 || random.next() % 3 == 0) {
                let written = min(buffered, Int(random.next() % 2_000) + 1)
                buffered -= written
                if let increment = receiver.delivered(written) { try sender.grant(increment) }
            }
        }
        XCTAssertEqual(sender.sendable + receiver.unannounced, 7_000)
    }
}
