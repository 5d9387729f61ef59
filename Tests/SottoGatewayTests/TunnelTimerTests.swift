import NIOCore
import SottoConfig
import SottoTunnel
import XCTest
@testable import SottoGateway

/// Keep-alive, idle and handshake timeouts, on the EmbeddedEventLoop's clock (protocol.md,
/// "Keep-alive"; configuration.md, "[tunnel]").
final class TunnelTimerTests: XCTestCase {
    let keys = StaticKeyPair.generate()
    let psk = TunnelKeys.generatePSK()
    let settings = TunnelSettings(keepaliveSeconds: 15, idleTimeoutSeconds: 45, handshakeTimeoutSeconds: 10)

    private func establishedEntry() throws -> (SessionUnderTest, RawPeer) {
        let entry = try SessionUnderTest(entryTo: keys.publicKey, psk: psk, settings: settings)
        try entry.activate()
        let peer = try RawPeer.acceptHandshake(from: entry, privateKey: keys.privateKey, psk: psk)
        return (entry, peer)
    }

    private func establishedExit() throws -> (SessionUnderTest, RawPeer) {
        let exit = try SessionUnderTest(exitWith: keys.privateKey, psk: psk, settings: settings)
        try exit.activate()
        let peer = try RawPeer.initiateHandshake(with: exit, publicKey: keys.publicKey, psk: psk)
        return (exit, peer)
    }

    private func assertSendsOnePingAfterKeepalive(_ session: SessionUnderTest, _ peer: inout RawPeer,
                                                  file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(try session.takeOutbound().count, 0, file: file, line: line)
        session.loop.advanceTime(by: .milliseconds(14_900))
        XCTAssertEqual(try session.takeOutbound().count, 0, "a ping before keepalive_seconds", file: file, line: line)
        session.loop.advanceTime(by: .milliseconds(1_100))
        let cells = try peer.open(session.takeOutbound())
        XCTAssertEqual(cells.map(\.type), [.ping], "no single ping after 16 s of silence", file: file, line: line)
        XCTAssertEqual(cells.first?.payload.count, PingPayload.encodedSize, file: file, line: line)
        XCTAssertTrue(session.channel.isActive, file: file, line: line)
    }

    func testAnEntryWithNothingToSendPingsAfterKeepaliveSeconds() throws {
        var (entry, peer) = try establishedEntry()
        try assertSendsOnePingAfterKeepalive(entry, &peer)
    }

    func testAnExitWithNothingToSendPingsAfterKeepaliveSeconds() throws {
        var (exit, peer) = try establishedExit()
        try assertSendsOnePingAfterKeepalive(exit, &peer)
    }

    func testSendingACellPostponesTheKeepalive() throws {
        var (entry, peer) = try establishedEntry()
        entry.loop.advanceTime(by: .seconds(10))
        _ = entry.session.openFlow(kind: .udp, virtualPort: 53, endpoint: RecordingEndpoint())
        XCTAssertEqual(try peer.open(entry.takeOutbound()).map(\.type), [.open])
        entry.loop.advanceTime(by: .seconds(6))  // 16 s after the handshake, 6 s after the open
        XCTAssertEqual(try entry.takeOutbound().count, 0, "pinged although a cell left 6 s ago")
        entry.loop.advanceTime(by: .seconds(10))
        XCTAssertEqual(try peer.open(entry.takeOutbound()).map(\.type), [.ping])
    }

    func testATunnelThatReceivesNothingForIdleTimeoutSecondsCloses() throws {
        let (entry, _) = try establishedEntry()
        entry.loop.advanceTime(by: .milliseconds(44_900))
        XCTAssertTrue(entry.channel.isActive, "closed before idle_timeout_seconds")
        entry.loop.advanceTime(by: .milliseconds(1_100))
        XCTAssertFalse(entry.channel.isActive, "still open after 46 s without a received byte")
        guard case .idleTimeout = entry.delegate.endedWithError else {
            return XCTFail("the tunnel ended with \(String(describing: entry.delegate.endings))")
        }
    }

    func testAReceivedCellRestartsTheIdleTimeout() throws {
        var (exit, peer) = try establishedExit()
        exit.loop.advanceTime(by: .seconds(30))
        try exit.deliver(peer.seal(Cell(type: .cover)))
        exit.loop.advanceTime(by: .seconds(44))  // 74 s in, 44 s after the cover cell
        XCTAssertTrue(exit.channel.isActive, "closed although a cell arrived 44 s ago")
        exit.loop.advanceTime(by: .seconds(2))
        XCTAssertFalse(exit.channel.isActive)
    }

    func testAnEntryWhoseHandshakeGetsNoAnswerClosesAfterTheHandshakeTimeout() throws {
        let entry = try SessionUnderTest(entryTo: keys.publicKey, psk: psk, settings: settings)
        try entry.activate()
        XCTAssertEqual(try entry.takeOutbound().count, 1, "the first message was not sent")
        entry.loop.advanceTime(by: .milliseconds(9_900))
        XCTAssertTrue(entry.channel.isActive, "closed before handshake_timeout_seconds")
        entry.loop.advanceTime(by: .milliseconds(1_100))
        XCTAssertFalse(entry.channel.isActive, "still waiting 11 s after the first message")
        XCTAssertEqual(entry.delegate.establishedCount, 0)
        guard case .handshakeTimeout = entry.delegate.endedWithError else {
            return XCTFail("the tunnel ended with \(String(describing: entry.delegate.endings))")
        }
    }

    func testAnEntryThatGetsAnUnauthenticReplyClosesAtOnceAndCountsIt() throws {
        let entry = try SessionUnderTest(entryTo: keys.publicKey, psk: psk, settings: settings)
        try entry.activate()
        _ = try entry.takeOutbound()
        try entry.deliver((0..<514).map { _ in UInt8.random(in: 0...255) })
        XCTAssertFalse(entry.channel.isActive)
        XCTAssertEqual(entry.counters.tunnelHandshakeFailures, 1)
        XCTAssertEqual(entry.delegate.establishedCount, 0)
    }
}
