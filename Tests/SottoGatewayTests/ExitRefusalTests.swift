import NIOCore
import SottoConfig
import SottoTunnel
import XCTest
@testable import SottoGateway

/// An exit that cannot authenticate the first message answers nothing, counts the refusal, and
/// closes after a random 0.5 to 3 s (protocol.md, "Handshake"), so a prober learns nothing.
final class ExitRefusalTests: XCTestCase {
    let keys = StaticKeyPair.generate()
    let psk = TunnelKeys.generatePSK()
    let settings = TunnelSettings(handshakeTimeoutSeconds: 10)

    private func activeExit() throws -> SessionUnderTest {
        let exit = try SessionUnderTest(exitWith: keys.privateKey, psk: psk, settings: settings)
        try exit.activate()
        return exit
    }

    /// The bytes have been delivered at time 0 on the exit's loop.
    private func assertRefusedSilently(_ exit: SessionUnderTest, what: String,
                                       file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(try exit.takeOutbound().count, 0, "\(what): the exit answered", file: file, line: line)
        XCTAssertEqual(exit.counters.tunnelHandshakeFailures, 1, "\(what): not counted", file: file, line: line)
        exit.loop.advanceTime(by: .milliseconds(400))
        XCTAssertTrue(exit.channel.isActive, "\(what): closed before 0.5 s", file: file, line: line)
        exit.loop.advanceTime(by: .milliseconds(2_700))
        XCTAssertFalse(exit.channel.isActive, "\(what): still open after 3.1 s", file: file, line: line)
        XCTAssertEqual(try exit.takeOutbound().count, 0, "\(what): the exit answered", file: file, line: line)
        XCTAssertEqual(exit.delegate.establishedCount, 0, file: file, line: line)
        XCTAssertEqual(exit.counters.tunnelHandshakeFailures, 1, file: file, line: line)
    }

    func testGarbageGetsNoAnswerIsCountedAndIsClosedAfterARandomDelay() throws {
        let exit = try activeExit()
        try exit.deliver((0..<514).map { _ in UInt8.random(in: 0...255) })
        try assertRefusedSilently(exit, what: "garbage")
    }

    func testSeveralCellsOfGarbageInOneReadAreRefusedOnce() throws {
        let exit = try activeExit()
        try exit.deliver((0..<(514 * 3 + 7)).map { _ in UInt8.random(in: 0...255) })
        try assertRefusedSilently(exit, what: "garbage")
    }

    func testAHandshakeWithTheWrongPSKGetsNoAnswer() throws {
        let exit = try activeExit()
        var initiator = try TunnelInitiator(serverPublicKey: keys.publicKey, psk: TunnelKeys.generatePSK(), cellSize: 514)
        try exit.deliver(initiator.makeFirstMessage())
        try assertRefusedSilently(exit, what: "wrong psk")
    }

    func testAHandshakeForAnotherServerKeyGetsNoAnswer() throws {
        let exit = try activeExit()
        var initiator = try TunnelInitiator(serverPublicKey: StaticKeyPair.generate().publicKey, psk: psk, cellSize: 514)
        try exit.deliver(initiator.makeFirstMessage())
        try assertRefusedSilently(exit, what: "wrong server key")
    }

    func testAHandshakeForAnotherCellSizeGetsNoAnswer() throws {
        let exit = try activeExit()
        var initiator = try TunnelInitiator(serverPublicKey: keys.publicKey, psk: psk, cellSize: 257)
        var first = try initiator.makeFirstMessage()
        first += patterned(count: 514 - 257)
        try exit.deliver(first)
        try assertRefusedSilently(exit, what: "other cell size")
    }

    func testAValidHandshakeAfterARefusalStillGetsNoAnswer() throws {
        let exit = try activeExit()
        try exit.deliver((0..<514).map { _ in UInt8.random(in: 0...255) })
        var initiator = try TunnelInitiator(serverPublicKey: keys.publicKey, psk: psk, cellSize: 514)
        try exit.deliver(initiator.makeFirstMessage())
        try assertRefusedSilently(exit, what: "garbage then a valid handshake")
    }

    func testATruncatedFirstMessageGetsNoAnswerAndIsClosedAfterTheHandshakeTimeoutPlusARandomDelay() throws {
        let exit = try activeExit()
        var initiator = try TunnelInitiator(serverPublicKey: keys.publicKey, psk: psk, cellSize: 514)
        try exit.deliver(Array(initiator.makeFirstMessage().prefix(513)))
        exit.loop.advanceTime(by: .milliseconds(10_400))
        XCTAssertEqual(try exit.takeOutbound().count, 0)
        XCTAssertTrue(exit.channel.isActive, "closed before the handshake timeout plus 0.5 s")
        // The timeout is checked on a 0.5 s tick, then the random 0.5 to 3 s delay runs.
        exit.loop.advanceTime(by: .milliseconds(3_700))
        XCTAssertFalse(exit.channel.isActive, "still open 14.1 s after a truncated first message")
        XCTAssertEqual(try exit.takeOutbound().count, 0)
        XCTAssertEqual(exit.counters.tunnelHandshakeFailures, 1)
        XCTAssertEqual(exit.delegate.establishedCount, 0)
    }

    func testTheRandomDelayBeforeClosingVaries() throws {
        var closedAfter: Set<Int> = []
        for _ in 0..<12 {
            let exit = try activeExit()
            try exit.deliver((0..<514).map { _ in UInt8.random(in: 0...255) })
            var elapsed = 0
            while exit.channel.isActive && elapsed < 4_000 {
                exit.loop.advanceTime(by: .milliseconds(100))
                elapsed += 100
            }
            closedAfter.insert(elapsed)
        }
        XCTAssertTrue(closedAfter.allSatisfy { (500...3_000).contains($0) }, "closed after \(closedAfter.sorted()) ms")
        XCTAssertGreaterThan(closedAfter.count, 1, "every refusal closed after the same delay: \(closedAfter)")
    }
}
