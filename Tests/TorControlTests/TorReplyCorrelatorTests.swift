import XCTest
@testable import TorControl

final class TorReplyCorrelatorTests: XCTestCase {
    private enum Routed: Equatable {
        case reply(String, Int)
        case event(String)
    }

    private func routed(_ deliveries: [TorReplyCorrelator<String>.Delivery]) -> [Routed] {
        deliveries.map {
            switch $0 {
            case let .reply(reply, command): return .reply(command, reply.status)
            case let .event(event): return .event(TorEvent.keyword(of: event) ?? "?")
            }
        }
    }

    func testRepliesAnswerCommandsInOrderWithEventsInBetween() throws {
        // control-spec 4.1's example: an event between a command and its reply.
        var correlator = TorReplyCorrelator<String>()
        correlator.commandSent("SETEVENTS")
        correlator.commandSent("GETCONF")
        let stream = "250 OK\r\n650 CIRC 1000 EXTENDED moria1,moria2\r\n250-SOCKSPORT=9050\r\n250 ORPORT=0\r\n"
        var got: [Routed] = []
        for b in stream.utf8 { got += routed(try correlator.receive([b])) }
        XCTAssertEqual(got, [.reply("SETEVENTS", 250), .event("CIRC"), .reply("GETCONF", 250)])
        XCTAssertEqual(correlator.pendingCount, 0)
    }

    func testEventsArriveWithoutAnyPendingCommand() throws {
        var correlator = TorReplyCorrelator<String>()
        let got = routed(try correlator.receive(Array("650 HS_DESC UPLOADED a NO_AUTH b\r\n650-STATUS_CLIENT NOTICE X\r\n650 OK\r\n".utf8)))
        XCTAssertEqual(got, [.event("HS_DESC"), .event("STATUS_CLIENT")])
    }

    func testErrorRepliesStillAnswerTheirCommand() throws {
        var correlator = TorReplyCorrelator<String>()
        correlator.commandSent("GETINFO")
        correlator.commandSent("QUIT")
        let got = routed(try correlator.receive(Array("552 Unrecognized key \"x\"\r\n250 closing connection\r\n".utf8)))
        XCTAssertEqual(got, [.reply("GETINFO", 552), .reply("QUIT", 250)])
    }

    func testUnsolicitedReplyIsAProtocolError() {
        var correlator = TorReplyCorrelator<String>()
        XCTAssertThrowsError(try correlator.receive(Array("250 OK\r\n".utf8))) {
            guard case .unsolicitedReply = $0 as? TorProtocolError else { return XCTFail("\($0)") }
        }
    }

    func testClosedConnectionReturnsUnansweredCommandsAndTruncation() throws {
        var correlator = TorReplyCorrelator<String>()
        correlator.commandSent("GETINFO")
        correlator.commandSent("SIGNAL")
        _ = try correlator.receive(Array("250-version=Tor 0.4.9.1\r\n".utf8))
        let (unanswered, error) = correlator.connectionClosed()
        XCTAssertEqual(unanswered, ["GETINFO", "SIGNAL"])
        guard case .truncatedReply = error else { return XCTFail("\(String(describing: error))") }
    }

    func testManyCommandsStayInOrder() throws {
        var correlator = TorReplyCorrelator<String>()
        var got: [Routed] = []
        for i in 0..<500 {
            correlator.commandSent("c\(i)")
            if i % 3 == 0 { got += routed(try correlator.receive(Array("650 BW 1 2\r\n".utf8))) }
            if i % 2 == 1 { got += routed(try correlator.receive(Array("250 OK\r\n250 OK\r\n".utf8))) }
        }
        let replies = got.compactMap { if case let .reply(c, _) = $0 { return c } else { return nil } }
        XCTAssertEqual(replies, (0..<500).map { "c\($0)" })
    }
}
