import NIOCore
import NIOSOCKS
import SottoSOCKS
import XCTest

/// The client side of RFC 1928 / RFC 1929 against canned server bytes.
final class SOCKS5ClientNegotiationTests: XCTestCase {
    private let alice = UsernamePasswordRequest(username: "alice", password: "hunter2")
    private let home = SOCKSAddress.domain("home", port: 5684)
    /// 05 01 00 03 04 "home" 16 34
    private let connectHomeBytes: [UInt8] = [0x05, 0x01, 0x00, 0x03, 0x04] + Array("home".utf8) + [0x16, 0x34]
    /// 05 00 00 01 127.0.0.1:40000
    private let successReply: [UInt8] = [0x05, 0x00, 0x00, 0x01, 127, 0, 0, 1, 0x9C, 0x40]

    private func negotiation(
        _ authentication: SOCKS5ClientNegotiation.Authentication = .none,
        command: SOCKSCommand = .connect
    ) throws -> SOCKS5ClientNegotiation {
        try SOCKS5ClientNegotiation(command: command, destination: home, authentication: authentication)
    }

    private func receive(_ bytes: [UInt8], into negotiation: inout SOCKS5ClientNegotiation) -> SOCKS5ClientNegotiation.Action {
        var buffer = ByteBuffer(bytes: bytes)
        return negotiation.receive(&buffer)
    }

    private func loopback(_ port: Int) throws -> SOCKSAddress {
        .address(try SocketAddress(ipAddress: "127.0.0.1", port: port))
    }

    /// A negotiation that has sent its CONNECT request and waits for the reply.
    private func awaitingReply() throws -> SOCKS5ClientNegotiation {
        var negotiation = try negotiation()
        XCTAssertEqual(receive([0x05, 0x00], into: &negotiation), .send(connectHomeBytes))
        return negotiation
    }

    // MARK: Success

    func testNoAuthenticationConnectSucceeds() throws {
        var negotiation = try negotiation()
        XCTAssertEqual(negotiation.greeting, [0x05, 0x01, 0x00])
        XCTAssertEqual(receive([0x05, 0x00], into: &negotiation), .send(connectHomeBytes))
        XCTAssertEqual(receive(successReply, into: &negotiation), .established(boundAddress: try loopback(40000)))
    }

    func testUsernamePasswordConnectSucceeds() throws {
        var negotiation = try negotiation(.usernamePassword(alice))
        XCTAssertEqual(negotiation.greeting, [0x05, 0x01, 0x02])
        let credentials: [UInt8] = [0x01, 0x05] + Array("alice".utf8) + [0x07] + Array("hunter2".utf8)
        XCTAssertEqual(receive([0x05, 0x02], into: &negotiation), .send(credentials))
        XCTAssertEqual(receive([0x01, 0x00], into: &negotiation), .send(connectHomeBytes))
        XCTAssertEqual(receive(successReply, into: &negotiation), .established(boundAddress: try loopback(40000)))
    }

    func testOfferingBothMethodsLetsTheServerSkipAuthentication() throws {
        var negotiation = try negotiation(.noneOrUsernamePassword(alice))
        XCTAssertEqual(negotiation.greeting, [0x05, 0x02, 0x02, 0x00])
        XCTAssertEqual(receive([0x05, 0x00], into: &negotiation), .send(connectHomeBytes))
    }

    func testOfferingBothMethodsGivesTheCredentialsWhenTheServerAsks() throws {
        var negotiation = try negotiation(.noneOrUsernamePassword(alice))
        guard case .send(let bytes) = receive([0x05, 0x02], into: &negotiation) else {
            return XCTFail("expected the credentials to be sent")
        }
        XCTAssertEqual(bytes.first, 0x01)
        XCTAssertEqual(receive([0x01, 0x00], into: &negotiation), .send(connectHomeBytes))
    }

    func testAnEmptyPasswordIsSentAsPLENZero() throws {
        var negotiation = try negotiation(.usernamePassword(UsernamePasswordRequest(username: "private", password: "")))
        XCTAssertEqual(receive([0x05, 0x02], into: &negotiation), .send([0x01, 0x07] + Array("private".utf8) + [0x00]))
    }

    func testUDPAssociateSendsCommand3AndReturnsTheRelayAddress() throws {
        let unspecified = SOCKSAddress.address(try SocketAddress(ipAddress: "0.0.0.0", port: 0))
        var negotiation = try SOCKS5ClientNegotiation(
            command: .udpAssociate,
            destination: unspecified,
            authentication: .none
        )
        XCTAssertEqual(receive([0x05, 0x00], into: &negotiation), .send([0x05, 0x03, 0x00, 0x01, 0, 0, 0, 0, 0, 0]))
        let relay: [UInt8] = [0x05, 0x00, 0x00, 0x04] + Array(repeating: 0, count: 15) + [1, 0x04, 0x38]
        XCTAssertEqual(
            receive(relay, into: &negotiation),
            .established(boundAddress: .address(try SocketAddress(ipAddress: "::1", port: 1080)))
        )
    }

    func testAnIPv6DestinationIsEncodedIn16Bytes() throws {
        let destination = SOCKSAddress.address(try SocketAddress(ipAddress: "2001:db8::7", port: 80))
        var negotiation = try SOCKS5ClientNegotiation(command: .connect, destination: destination, authentication: .none)
        let expected: [UInt8] = [0x05, 0x01, 0x00, 0x04, 0x20, 0x01, 0x0D, 0xB8] + Array(repeating: 0, count: 11) + [7, 0, 80]
        XCTAssertEqual(receive([0x05, 0x00], into: &negotiation), .send(expected))
    }

    func testADomainBoundAddressIsAccepted() throws {
        var negotiation = try awaitingReply()
        let reply: [UInt8] = [0x05, 0x00, 0x00, 0x03, 0x05] + Array("relay".utf8) + [0x04, 0x38]
        XCTAssertEqual(receive(reply, into: &negotiation), .established(boundAddress: .domain("relay", port: 1080)))
    }

    func testServerBytesArrivingOneAtATimeAreWaitedForAndNotConsumedEarly() throws {
        var negotiation = try negotiation(.usernamePassword(alice))
        var cumulation = ByteBuffer()
        var actions: [SOCKS5ClientNegotiation.Action] = []
        for byte in [0x05, 0x02] + [0x01, 0x00] + successReply {
            cumulation.writeInteger(byte)
            let readerIndexBefore = cumulation.readerIndex
            let action = negotiation.receive(&cumulation)
            if action == .waitForMoreData {
                XCTAssertEqual(cumulation.readerIndex, readerIndexBefore, "waiting consumed bytes")
            } else {
                actions.append(action)
            }
        }
        XCTAssertEqual(actions.count, 3)
        XCTAssertEqual(actions.last, .established(boundAddress: try loopback(40000)))
        XCTAssertEqual(cumulation.readableBytes, 0)
    }

    func testApplicationDataAfterAConnectReplyStaysInTheBuffer() throws {
        var negotiation = try awaitingReply()
        let banner = Array("220 smtp ready\r\n".utf8)
        var buffer = ByteBuffer(bytes: successReply + banner)
        XCTAssertEqual(negotiation.receive(&buffer), .established(boundAddress: try loopback(40000)))
        XCTAssertEqual(Array(buffer.readableBytesView), banner)
    }

    func testEstablishedIsReturnedAgainOnLaterCalls() throws {
        var negotiation = try awaitingReply()
        XCTAssertEqual(receive(successReply, into: &negotiation), .established(boundAddress: try loopback(40000)))
        var data = ByteBuffer(bytes: [1, 2, 3])
        XCTAssertEqual(negotiation.receive(&data), .established(boundAddress: try loopback(40000)))
        XCTAssertEqual(data.readableBytes, 3, "application data was consumed after the negotiation")
    }

    // MARK: Refusals

    func testARejectedPasswordFailsNamingTheUsernameButNotThePassword() throws {
        var negotiation = try negotiation(.usernamePassword(alice))
        _ = receive([0x05, 0x02], into: &negotiation)
        let action = receive([0x01, 0x01], into: &negotiation)
        XCTAssertEqual(action, .failed(.authenticationRejected(username: "alice", status: 0x01)))
        guard case .failed(let error) = action else { return }
        XCTAssertTrue(error.description.contains("'alice'"), error.description)
        XCTAssertFalse(error.description.contains("hunter2"), error.description)
    }

    func testEveryReplyCodeOtherThanSuccessFailsWithItsMeaning() throws {
        let meanings: [UInt8: String] = [
            0x01: "general SOCKS server failure",
            0x02: "connection not allowed by ruleset",
            0x03: "network unreachable",
            0x04: "host unreachable",
            0x05: "connection refused",
            0x06: "TTL expired",
            0x07: "command not supported",
            0x08: "address type not supported",
            0x09: "unassigned",
            0x7F: "unassigned",
            0xF0: "onion service descriptor not found",
            0xF1: "descriptor is invalid",
            0xF2: "introduction failed",
            0xF3: "rendezvous failed",
            0xF4: "requires client authorization",
            0xF5: "rejected the client authorization",
            0xF6: "onion address is invalid",
            0xF7: "introduction timed out",
            0xFF: "unassigned",
        ]
        for (code, meaning) in meanings {
            var negotiation = try awaitingReply()
            let action = receive([0x05, code, 0x00, 0x01, 0, 0, 0, 0, 0, 0], into: &negotiation)
            let expected = SOCKS5ClientError.requestFailed(.connect, destination: home, reply: SOCKSServerReply(value: code))
            XCTAssertEqual(action, .failed(expected))
            XCTAssertTrue(expected.description.contains(meaning), expected.description)
            XCTAssertTrue(expected.description.contains("CONNECT home:5684"), expected.description)
            let hex = String(code, radix: 16, uppercase: true)
            XCTAssertTrue(expected.description.contains("reply 0x" + (code < 0x10 ? "0" : "") + hex), expected.description)
        }
    }

    func testAFailureReplyIsReportedWithoutWaitingForItsAddress() throws {
        var negotiation = try awaitingReply()
        XCTAssertEqual(
            receive([0x05, 0x05], into: &negotiation),
            .failed(.requestFailed(.connect, destination: home, reply: .refused))
        )
    }

    func testAUDPAssociateFailureNamesTheCommand() throws {
        XCTAssertTrue(
            SOCKS5ClientError.requestFailed(.udpAssociate, destination: home, reply: .commandUnsupported)
                .description.contains("refused UDP ASSOCIATE home:5684: reply 0x07, command not supported")
        )
    }

    func testNoAcceptableMethodFails() throws {
        var negotiation = try negotiation(.none)
        let action = receive([0x05, 0xFF], into: &negotiation)
        XCTAssertEqual(action, .failed(.noAcceptableMethod(offered: [.noneRequired])))
        XCTAssertTrue(
            SOCKS5ClientError.noAcceptableMethod(offered: [.noneRequired]).description
                .contains("accepts none of the offered authentication methods (0x00 no authentication)")
        )
    }

    func testAMethodThatWasNotOfferedFails() throws {
        for (authentication, method) in [
            (SOCKS5ClientNegotiation.Authentication.none, AuthenticationMethod.usernamePassword),
            (.usernamePassword(alice), .noneRequired),
            (.noneOrUsernamePassword(alice), .gssapi),
            (.none, AuthenticationMethod(value: 0x80)),
        ] {
            var negotiation = try negotiation(authentication)
            guard case .failed(.methodNotOffered(let chosen, _)) = receive([0x05, method.value], into: &negotiation) else {
                XCTFail("method \(method.value) was accepted for \(authentication)")
                continue
            }
            XCTAssertEqual(chosen, method)
        }
    }

    // MARK: Garbage and truncation

    func testAnHTTPAnswerIsRecognisedAsNotSOCKS5() throws {
        var negotiation = try negotiation()
        let action = receive(Array("HTTP/1.1 400 Bad Request\r\n".utf8), into: &negotiation)
        XCTAssertEqual(action, .failed(.unexpectedVersion(0x48, expected: 0x05, during: .methodSelection)))
        guard case .failed(let error) = action else { return }
        XCTAssertTrue(error.description.contains("HTTP server"), error.description)
    }

    func testASOCKS4AnswerIsRecognised() throws {
        var negotiation = try negotiation()
        let action = receive([0x00, 0x5B, 0, 0, 0, 0, 0, 0], into: &negotiation)
        XCTAssertEqual(action, .failed(.unexpectedVersion(0x00, expected: 0x05, during: .methodSelection)))
        guard case .failed(let error) = action else { return }
        XCTAssertTrue(error.description.contains("SOCKS4"), error.description)
    }

    func testAnAuthenticationStatusWithVersion5Fails() throws {
        var negotiation = try negotiation(.usernamePassword(alice))
        _ = receive([0x05, 0x02], into: &negotiation)
        XCTAssertEqual(
            receive([0x05, 0x00], into: &negotiation),
            .failed(.unexpectedVersion(0x05, expected: 0x01, during: .authentication))
        )
    }

    func testAReplyWithAWrongVersionFails() throws {
        var negotiation = try awaitingReply()
        XCTAssertEqual(
            receive([0x04, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0], into: &negotiation),
            .failed(.unexpectedVersion(0x04, expected: 0x05, during: .reply))
        )
    }

    func testAReplyWithANonZeroReservedByteFails() throws {
        var negotiation = try awaitingReply()
        XCTAssertEqual(
            receive([0x05, 0x00, 0x01, 0x01, 0, 0, 0, 0, 0, 0], into: &negotiation),
            .failed(.reservedNotZero(0x01))
        )
    }

    func testAReplyWithAMalformedBoundAddressFails() throws {
        let cases: [([UInt8], SOCKSAddressError)] = [
            ([0x05, 0x00, 0x00, 0x07], .unknownAddressType(0x07)),
            ([0x05, 0x00, 0x00, 0x03, 0x00, 0x00, 0x50], .emptyDomain),
            ([0x05, 0x00, 0x00, 0x03, 0x02, UInt8(ascii: "a"), 0x0D, 0x00, 0x50], .domainCharacterNotAllowed(byte: 0x0D, offset: 1)),
        ]
        for (bytes, expected) in cases {
            var negotiation = try awaitingReply()
            XCTAssertEqual(receive(bytes, into: &negotiation), .failed(.malformedBoundAddress(expected)))
        }
        XCTAssertTrue(
            SOCKS5ClientError.malformedBoundAddress(.unknownAddressType(7)).description
                .contains("bound address: address type 0x07 is not 1 (IPv4), 3 (domain) or 4 (IPv6)")
        )
    }

    func testBytesBeforeTheClientsNextMessageFail() throws {
        var negotiation = try negotiation()
        XCTAssertEqual(
            receive([0x05, 0x00, 0x05, 0x00, 0x00], into: &negotiation),
            .failed(.unexpectedBytes(count: 3, after: .methodSelection))
        )

        var authenticating = try self.negotiation(.usernamePassword(alice))
        _ = receive([0x05, 0x02], into: &authenticating)
        XCTAssertEqual(
            receive([0x01, 0x00, 0xAA], into: &authenticating),
            .failed(.unexpectedBytes(count: 1, after: .authentication))
        )
    }

    func testEveryTruncatedReplyWaitsAndThenFailsWhenTheServerCloses() throws {
        for length in 0..<successReply.count {
            var negotiation = try awaitingReply()
            var buffer = ByteBuffer(bytes: successReply.prefix(length))
            XCTAssertEqual(negotiation.receive(&buffer), .waitForMoreData, "reply cut at \(length)")
            XCTAssertEqual(buffer.readerIndex, 0)
            let action = negotiation.receiveEndOfInput(unparsedBytes: buffer.readableBytes)
            XCTAssertEqual(action, .failed(.closedEarly(during: .reply, unparsedBytes: length)))
        }
        XCTAssertEqual(
            SOCKS5ClientError.closedEarly(during: .reply, unparsedBytes: 4).description,
            "SOCKS5 server: closed the connection while the client waited for the reply to the request after 4 bytes of it"
        )
    }

    func testTheServerClosingBeforeAnyAnswerFails() throws {
        var negotiation = try negotiation()
        XCTAssertEqual(negotiation.receiveEndOfInput(), .failed(.closedEarly(during: .methodSelection, unparsedBytes: 0)))
        var authenticating = try self.negotiation(.usernamePassword(alice))
        _ = receive([0x05, 0x02], into: &authenticating)
        XCTAssertEqual(
            authenticating.receiveEndOfInput(unparsedBytes: 1),
            .failed(.closedEarly(during: .authentication, unparsedBytes: 1))
        )
    }

    func testAFailureIsFinal() throws {
        var negotiation = try negotiation()
        let failure = receive([0x05, 0xFF], into: &negotiation)
        XCTAssertEqual(receive([0x05, 0x00], into: &negotiation), failure)
        XCTAssertEqual(negotiation.receiveEndOfInput(), failure)
    }

    /// Each of 5,000 transcripts is the valid one with one byte replaced at random. The negotiation
    /// never traps, always ends, and establishes only when the change left every checked byte intact
    /// (it hit the bound address or port, or replaced a byte with itself).
    func testServerTranscriptsWithOneByteChangedFailOrEstablishAsTheyShould() throws {
        var random = SeededGenerator(seed: 1928)
        let transcript: [[UInt8]] = [[0x05, 0x02], [0x01, 0x00], successReply]
        for _ in 0..<5_000 {
            var messages = transcript
            let message = Int.random(in: 0..<messages.count, using: &random)
            let index = Int.random(in: 0..<messages[message].count, using: &random)
            let original = messages[message][index]
            messages[message][index] = UInt8.random(in: 0...255, using: &random)
            let changedOnlyTheAddress = message == 2 && index >= 4 && messages[2][3] == 0x01

            var negotiation = try negotiation(.noneOrUsernamePassword(alice))
            var last = SOCKS5ClientNegotiation.Action.waitForMoreData
            for bytes in messages {
                last = receive(bytes, into: &negotiation)
                if case .failed = last { break }
            }
            if case .waitForMoreData = last {
                last = negotiation.receiveEndOfInput()
            }
            switch last {
            case .established:
                XCTAssertTrue(
                    changedOnlyTheAddress || messages[message][index] == original,
                    "established after changing byte \(index) of message \(message): \(messages)"
                )
            case .failed(let error):
                XCTAssertFalse(changedOnlyTheAddress, "failed after changing only the address: \(error)")
                XCTAssertNotEqual(messages[message][index], original)
            case .send, .waitForMoreData:
                XCTFail("the negotiation did not end: \(last) for \(messages)")
            }
        }
    }

    // MARK: What cannot be sent

    func testCredentialsAndDestinationsThatCannotBeEncodedAreRefusedUpFront() throws {
        let tooLong = String(repeating: "x", count: 256)
        let credentialCases: [(SOCKS5ClientNegotiation.Authentication, UsernamePasswordError)] = [
            (.usernamePassword(.init(username: "", password: "p")), .emptyUsername),
            (.usernamePassword(.init(username: tooLong, password: "p")), .usernameTooLong(byteCount: 256)),
            (.noneOrUsernamePassword(.init(username: "u", password: tooLong)), .passwordTooLong(byteCount: 256)),
        ]
        for (authentication, expected) in credentialCases {
            XCTAssertThrowsError(try negotiation(authentication)) { error in
                XCTAssertEqual(error as? UsernamePasswordError, expected)
            }
        }
        let destinationCases: [(SOCKSAddress, SOCKSAddressError)] = [
            (.domain(tooLong, port: 80), .domainTooLong(byteCount: 256)),
            (.domain("home", port: 70_000), .portOutOfRange(70_000)),
            (.address(try SocketAddress(unixDomainSocketPath: "/tmp/s")), .unixDomainSocket),
        ]
        for (destination, expected) in destinationCases {
            XCTAssertThrowsError(
                try SOCKS5ClientNegotiation(command: .connect, destination: destination, authentication: .none)
            ) { error in
                XCTAssertEqual(error as? SOCKSAddressError, expected)
            }
        }
    }

    func testNoErrorDescriptionContainsThePassword() throws {
        let secret = "s3cr3t-pa55"
        let credentials = UsernamePasswordRequest(username: "bob", password: secret)
        var outcomes: [SOCKS5ClientNegotiation.Action] = []
        for serverBytes: [[UInt8]] in [[[0x05, 0x02], [0x01, 0x01]], [[0x05, 0x02], [0x01, 0x00], [0x05, 0x02]], [[0x05, 0xFF]]] {
            var negotiation = try SOCKS5ClientNegotiation(command: .connect, destination: home, authentication: .usernamePassword(credentials))
            for bytes in serverBytes {
                outcomes.append(receive(bytes, into: &negotiation))
            }
            outcomes.append(negotiation.receiveEndOfInput())
        }
        let descriptions = outcomes.compactMap { action -> String? in
            if case .failed(let error) = action { return error.description }
            return nil
        }
        XCTAssertEqual(descriptions.count, 6)
        for description in descriptions {
            XCTAssertFalse(description.contains(secret), description)
        }
    }
}
