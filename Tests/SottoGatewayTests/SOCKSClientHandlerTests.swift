import Logging
import NIOCore
import NIOEmbedded
import NIOSOCKS
import SottoConfig
import SottoSOCKS
import XCTest
@testable import SottoGateway

/// A SOCKS5ConnectHandler on an EmbeddedChannel, the test playing tor's SocksPort byte by byte
/// (RFC 1928 sections 3 to 6, RFC 1929 section 2; tor proposal 304 for the 0xF0-0xF7 replies).
final class SOCKSHarness {
    static let username = "sotto-private"
    static let password = "00112233445566778899aabbccddeeff"
    /// VER 5, REP 0, RSV 0, ATYP IPv4 127.0.0.1, port 9050.
    static let success: [UInt8] = [0x05, 0x00, 0x00, 0x01, 127, 0, 0, 1, 0x23, 0x5A]

    let loop = EmbeddedEventLoop()
    let channel: EmbeddedChannel
    let handler: SOCKS5ConnectHandler
    private let box = OutcomeBox()
    var outcome: Result<Void, Error>? { box.outcome }

    init(host: String = "example.org", port: Int = 443, username: String = SOCKSHarness.username,
         password: String = SOCKSHarness.password, timeout: TimeAmount = TorStreams.negotiationTimeout,
         activateBeforeAdding: Bool = false) throws {
        let negotiation = try SOCKS5ClientNegotiation(
            command: .connect, destination: .domain(host, port: port),
            authentication: .usernamePassword(UsernamePasswordRequest(username: username, password: password)))
        handler = SOCKS5ConnectHandler(negotiation: negotiation, timeout: timeout)
        channel = EmbeddedChannel(loop: loop)
        if activateBeforeAdding { try activate() }
        try channel.pipeline.syncOperations.addHandler(handler)
        handler.established.whenComplete { [box] in box.outcome = $0 }
        if !activateBeforeAdding { try activate() }
    }

    func activate() throws {
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9050)).wait()
    }

    /// Everything the handler has written to tor so far.
    func written() throws -> [UInt8] {
        loop.run()
        var out: [UInt8] = []
        while let chunk = try channel.readOutbound(as: ByteBuffer.self) { out += bytes(chunk) }
        return out
    }

    func deliver(_ raw: [UInt8]) throws {
        try channel.writeInbound(buffer(raw))
    }

    /// What reached the handlers after this one.
    func passedOn() throws -> [UInt8] {
        var out: [UInt8] = []
        while let chunk = try channel.readInbound(as: ByteBuffer.self) { out += bytes(chunk) }
        return out
    }

    /// Plays tor up to the point where the CONNECT request has been sent: method 0x02 chosen,
    /// credentials accepted.
    func negotiateUpToReply(file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(try written(), [0x05, 0x01, 0x02], "greeting", file: file, line: line)
        try deliver([0x05, 0x02])
        XCTAssertEqual(try written().first, 0x01, "the RFC 1929 request", file: file, line: line)
        try deliver([0x01, 0x00])
        XCTAssertEqual(try written().prefix(3), [0x05, 0x01, 0x00], "the CONNECT request", file: file, line: line)
        XCTAssertNil(outcome, file: file, line: line)
    }

    var error: Error? {
        if case .failure(let error) = outcome { return error }
        return nil
    }

    var torError: TorStreamError? { error as? TorStreamError }
}

private final class OutcomeBox {
    var outcome: Result<Void, Error>?
}

/// The RFC 1929 request for `username`/`password` (VER 1, ULEN, UNAME, PLEN, PASSWD).
func usernamePasswordBytes(_ username: String, _ password: String) -> [UInt8] {
    [0x01, UInt8(username.utf8.count)] + Array(username.utf8) + [UInt8(password.utf8.count)] + Array(password.utf8)
}

final class SOCKSClientHandlerTests: XCTestCase {
    func testTheGreetingOffersOnlyUsernamePasswordAndIsWrittenWhenTheConnectionBecomesActive() throws {
        let harness = try SOCKSHarness()
        // VER 5, NMETHODS 1, METHOD 0x02: tor isolates streams by these credentials (IsolateSOCKSAuth).
        XCTAssertEqual(try harness.written(), [0x05, 0x01, 0x02])
        XCTAssertNil(harness.outcome)
        XCTAssertTrue(harness.channel.isActive)
    }

    func testNothingIsWrittenBeforeTheConnectionIsActive() throws {
        let negotiation = try SOCKS5ClientNegotiation(
            command: .connect, destination: .domain("example.org", port: 443),
            authentication: .usernamePassword(UsernamePasswordRequest(username: "u", password: "p")))
        let handler = SOCKS5ConnectHandler(negotiation: negotiation, timeout: .seconds(5))
        let channel = EmbeddedChannel(handler: handler)
        XCTAssertNil(try channel.readOutbound(as: ByteBuffer.self))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9050)).wait()
        XCTAssertEqual(try channel.readOutbound(as: ByteBuffer.self).map(bytes), [0x05, 0x01, 0x02])
        XCTAssertNil(try channel.readOutbound(as: ByteBuffer.self))
    }

    func testAHandlerAddedToAnActiveConnectionWritesTheGreetingAtOnceAndOnlyOnce() throws {
        let harness = try SOCKSHarness(activateBeforeAdding: true)
        XCTAssertEqual(try harness.written(), [0x05, 0x01, 0x02])
        harness.channel.pipeline.fireChannelActive()
        XCTAssertEqual(try harness.written(), [])
    }

    func testTheSubNegotiationCarriesTheCredentialsThenTheConnectRequestFollows() throws {
        let harness = try SOCKSHarness(host: "example.org", port: 443)
        _ = try harness.written()
        try harness.deliver([0x05, 0x02])
        XCTAssertEqual(try harness.written(), usernamePasswordBytes(SOCKSHarness.username, SOCKSHarness.password))
        try harness.deliver([0x01, 0x00])
        // VER 5, CMD CONNECT, RSV, ATYP domain, LEN 11, "example.org", port 443: the name, never resolved here.
        XCTAssertEqual(try harness.written(), [0x05, 0x01, 0x00, 0x03, 11] + Array("example.org".utf8) + [0x01, 0xBB])
        XCTAssertNil(harness.outcome)
    }

    func testTheCredentialsAreTheProfilesIsolationCredentialsOfTheRuntime() throws {
        let loop = EmbeddedEventLoop()
        let privateProfile = Profile(name: "private", anonymizer: .tor)
        let otherProfile = Profile(name: "other", anonymizer: .tor)
        let config = SottoConfig(file: "t.toml", stateDir: "/nonexistent", profiles: [privateProfile, otherProfile])
        let runtime = TorRuntime(config: config, loop: loop, logger: quietLogger)
        let first = runtime.socksCredentials(for: privateProfile)
        let second = runtime.socksCredentials(for: otherProfile)
        XCTAssertEqual(first.username, "sotto-private")
        XCTAssertEqual(second.username, "sotto-other")
        // One random secret per run, so a profile's circuits are its own and unguessable by another client.
        XCTAssertEqual(first.password, second.password)
        XCTAssertEqual(first.password.count, 32)
        XCTAssertTrue(first.password.allSatisfy { $0.isHexDigit && !$0.isUppercase }, first.password)
        let another = TorRuntime(config: config, loop: loop, logger: quietLogger)
        XCTAssertNotEqual(another.socksCredentials(for: privateProfile).password, first.password)

        let harness = try SOCKSHarness(username: first.username, password: first.password)
        _ = try harness.written()
        try harness.deliver([0x05, 0x02])
        XCTAssertEqual(try harness.written(), usernamePasswordBytes("sotto-private", first.password))
    }

    func testASuccessReplyCompletesEstablishedAndPassesNothingOn() throws {
        let harness = try SOCKSHarness()
        try harness.negotiateUpToReply()
        try harness.deliver(SOCKSHarness.success)
        guard case .success = harness.outcome else { return XCTFail("not established: \(String(describing: harness.outcome))") }
        XCTAssertTrue(harness.channel.isActive)
        XCTAssertEqual(try harness.passedOn(), [])
        XCTAssertEqual(try harness.written(), [])
    }

    func testEveryServerMessageSplitIntoOneByteReadsStillNegotiates() throws {
        let harness = try SOCKSHarness()
        XCTAssertEqual(try harness.written(), [0x05, 0x01, 0x02])
        for byte in [0x05, 0x02] as [UInt8] {
            XCTAssertEqual(try harness.written(), [])
            try harness.deliver([byte])
        }
        XCTAssertEqual(try harness.written(), usernamePasswordBytes(SOCKSHarness.username, SOCKSHarness.password))
        for byte in [0x01, 0x00] as [UInt8] {
            XCTAssertEqual(try harness.written(), [])
            try harness.deliver([byte])
        }
        XCTAssertEqual(try harness.written().prefix(4), [0x05, 0x01, 0x00, 0x03])
        // A domain bound address this time: VER, REP, RSV, ATYP 3, LEN, name, port.
        let reply: [UInt8] = [0x05, 0x00, 0x00, 0x03, 9] + Array("localhost".utf8) + [0x00, 0x50]
        for byte in reply {
            XCTAssertNil(harness.outcome, "established before the whole reply arrived")
            try harness.deliver([byte])
        }
        guard case .success = harness.outcome else { return XCTFail("not established: \(String(describing: harness.outcome))") }
        XCTAssertEqual(try harness.passedOn(), [])
    }

    func testApplicationBytesInTheSameReadAsTheReplyReachTheNextHandlerOnceTheHandlerIsRemoved() throws {
        let harness = try SOCKSHarness()
        try harness.negotiateUpToReply()
        let early = Array("HTTP/1.1 200 OK\r\n".utf8)
        try harness.deliver(SOCKSHarness.success + early)
        guard case .success = harness.outcome else { return XCTFail("not established: \(String(describing: harness.outcome))") }
        // Held back until the caller has set up the stream and removed the handler.
        XCTAssertEqual(try harness.passedOn(), [])
        let later = Array("Content-Length: 0\r\n\r\n".utf8)
        try harness.deliver(later)
        XCTAssertEqual(try harness.passedOn(), [])

        try harness.channel.pipeline.syncOperations.removeHandler(harness.handler).wait()
        XCTAssertEqual(try harness.passedOn(), early + later, "in order, exactly once")
        // From now on bytes flow straight through.
        try harness.deliver([0x42])
        XCTAssertEqual(try harness.passedOn(), [0x42])
    }

    func testRemovingTheHandlerWithNothingBufferedPassesNothingOn() throws {
        let harness = try SOCKSHarness()
        try harness.negotiateUpToReply()
        try harness.deliver(SOCKSHarness.success)
        try harness.channel.pipeline.syncOperations.removeHandler(harness.handler).wait()
        XCTAssertEqual(try harness.passedOn(), [])
    }

    func testALongDomainBoundAddressFollowedByDataIsParsedAndTheDataKept() throws {
        let harness = try SOCKSHarness()
        try harness.negotiateUpToReply()
        let name = Array(String(repeating: "a", count: 255).utf8)
        let data = patterned(count: 4096)
        try harness.deliver([0x05, 0x00, 0x00, 0x03, 255] + name + [0x01, 0xBB] + data)
        guard case .success = harness.outcome else { return XCTFail("not established: \(String(describing: harness.outcome))") }
        try harness.channel.pipeline.syncOperations.removeHandler(harness.handler).wait()
        XCTAssertEqual(try harness.passedOn(), data)
    }

    // MARK: refusals

    private func refusal(_ code: UInt8, host: String = "example.org") throws -> SOCKSHarness {
        let harness = try SOCKSHarness(host: host)
        try harness.negotiateUpToReply()
        try harness.deliver([0x05, code, 0x00, 0x01, 0, 0, 0, 0, 0, 0])
        return harness
    }

    func testTorsClientAuthorizationErrorF4FailsAsHostUnreachableWithTorsMeaning() throws {
        let onion = "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd.onion"
        let harness = try refusal(0xF4, host: onion)
        let error = try XCTUnwrap(harness.torError, "\(String(describing: harness.outcome))")
        guard case .socks(.requestFailed(.connect, _, let reply)) = error else { return XCTFail("\(error)") }
        XCTAssertEqual(reply.value, 0xF4)
        XCTAssertEqual(error.socksReply, .hostUnreachable)
        XCTAssertTrue(error.description.contains("0xF4"), error.description)
        XCTAssertTrue(error.description.contains("onion service requires client authorization"), error.description)
        XCTAssertTrue(error.description.contains(onion), error.description)
        XCTAssertFalse(harness.channel.isActive, "a refused connection is closed")
    }

    func testTorsDescriptorNotFoundErrorF0FailsAsHostUnreachableWithTorsMeaning() throws {
        let harness = try refusal(0xF0)
        let error = try XCTUnwrap(harness.torError, "\(String(describing: harness.outcome))")
        XCTAssertEqual(error.socksReply, .hostUnreachable)
        XCTAssertEqual(error.socksReply.value, 0x04)
        XCTAssertTrue(error.description.contains("onion service descriptor not found"), error.description)
        XCTAssertFalse(harness.channel.isActive)
    }

    func testEveryOnionServiceReplyCodeMapsToHostUnreachable() throws {
        for code in UInt8(0xF0)...UInt8(0xF7) {
            let harness = try refusal(code)
            XCTAssertEqual(harness.torError?.socksReply, .hostUnreachable, "code \(code)")
            XCTAssertTrue(harness.torError?.description.contains("tor: onion") ?? false, "\(String(describing: harness.torError))")
        }
    }

    func testStandardReplyCodesAreHandedOnUnchanged() throws {
        let refused = try refusal(0x05)
        XCTAssertEqual(refused.torError?.socksReply, .refused)
        XCTAssertEqual(refused.torError?.socksReply.value, 0x05)
        XCTAssertTrue(refused.torError?.description.contains("connection refused") ?? false,
                      "\(String(describing: refused.torError))")
        XCTAssertFalse(refused.channel.isActive)
        for code in UInt8(1)...UInt8(8) {
            XCTAssertEqual(try refusal(code).torError?.socksReply.value, code, "code \(code)")
        }
    }

    func testACredentialRejectionFailsAsServerFailureWithoutShowingThePassword() throws {
        let harness = try SOCKSHarness()
        _ = try harness.written()
        try harness.deliver([0x05, 0x02])
        _ = try harness.written()
        try harness.deliver([0x01, 0x01])
        let error = try XCTUnwrap(harness.torError, "\(String(describing: harness.outcome))")
        guard case .socks(.authenticationRejected(let username, 0x01)) = error else { return XCTFail("\(error)") }
        XCTAssertEqual(username, SOCKSHarness.username)
        XCTAssertEqual(error.socksReply, .serverFailure)
        XCTAssertFalse(error.description.contains(SOCKSHarness.password), error.description)
        XCTAssertFalse(harness.channel.isActive)
        XCTAssertEqual(try harness.written(), [], "no CONNECT after a rejection")
    }

    // MARK: truncation, time, garbage

    func testAConnectionClosedDuringTheReplyFailsAsClosedEarly() throws {
        let harness = try SOCKSHarness()
        try harness.negotiateUpToReply()
        try harness.deliver([0x05, 0x00, 0x00])
        XCTAssertNil(harness.outcome)
        harness.channel.pipeline.fireChannelInactive()
        let error = try XCTUnwrap(harness.torError, "\(String(describing: harness.outcome))")
        guard case .socks(.closedEarly(during: .reply, unparsedBytes: 3)) = error else { return XCTFail("\(error)") }
        XCTAssertEqual(error.socksReply, .serverFailure)
        XCTAssertTrue(error.description.contains("closed the connection"), error.description)
    }

    func testAConnectionClosedRightAfterTheGreetingFailsAsClosedEarly() throws {
        let harness = try SOCKSHarness()
        _ = try harness.written()
        try harness.channel.close().wait()
        let error = try XCTUnwrap(harness.torError, "\(String(describing: harness.outcome))")
        guard case .socks(.closedEarly(during: .methodSelection, unparsedBytes: 0)) = error else { return XCTFail("\(error)") }
    }

    func testTheNegotiationTimesOutAfterItsTimeoutAndClosesTheConnection() throws {
        let harness = try SOCKSHarness(timeout: TorStreams.negotiationTimeout)
        try harness.negotiateUpToReply()
        harness.loop.advanceTime(by: TorStreams.negotiationTimeout - .milliseconds(1))
        XCTAssertNil(harness.outcome, "timed out early")
        XCTAssertTrue(harness.channel.isActive)
        harness.loop.advanceTime(by: .milliseconds(1))
        let error = try XCTUnwrap(harness.torError, "\(String(describing: harness.outcome))")
        guard case .timedOut(let seconds) = error else { return XCTFail("\(error)") }
        XCTAssertEqual(seconds, 90)
        XCTAssertEqual(error.socksReply, .ttlExpired)
        XCTAssertTrue(error.description.contains("90 s"), error.description)
        XCTAssertFalse(harness.channel.isActive, "a timed-out connection is closed")
    }

    func testTheTimeoutNoLongerFiresOnceTheStreamIsEstablished() throws {
        let harness = try SOCKSHarness(timeout: .seconds(5))
        try harness.negotiateUpToReply()
        try harness.deliver(SOCKSHarness.success)
        harness.loop.advanceTime(by: .seconds(60))
        guard case .success = harness.outcome else { return XCTFail("\(String(describing: harness.outcome))") }
        XCTAssertTrue(harness.channel.isActive)
    }

    func testAnHTTPResponseInsteadOfAMethodSelectionFailsAndCloses() throws {
        let harness = try SOCKSHarness()
        _ = try harness.written()
        try harness.deliver(Array("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".utf8))
        let error = try XCTUnwrap(harness.torError, "\(String(describing: harness.outcome))")
        guard case .socks(.unexpectedVersion(0x48, expected: 0x05, during: .methodSelection)) = error else {
            return XCTFail("\(error)")
        }
        XCTAssertTrue(error.description.contains("HTTP server"), error.description)
        XCTAssertEqual(error.socksReply, .serverFailure)
        XCTAssertFalse(harness.channel.isActive)
        XCTAssertEqual(try harness.written(), [], "nothing sent to a server that is not SOCKS5")
        // More garbage on the closed connection changes nothing.
        try? harness.deliver(Array("<html>".utf8))
        XCTAssertEqual(harness.torError?.socksReply, .serverFailure)
    }

    func testGarbageInPlaceOfTheReplyFailsAndCloses() throws {
        let harness = try SOCKSHarness()
        try harness.negotiateUpToReply()
        try harness.deliver(Array("HTTP/1.0 501 Tor is not an HTTP Proxy\r\n".utf8))
        let error = try XCTUnwrap(harness.torError, "\(String(describing: harness.outcome))")
        guard case .socks(.unexpectedVersion(0x48, expected: 0x05, during: .reply)) = error else { return XCTFail("\(error)") }
        XCTAssertFalse(harness.channel.isActive)
    }

    func testArbitraryBytesAfterTheGreetingNeverEstablishAndFailuresAlwaysClose() throws {
        // A fixed linear congruential sequence: the same 300 inputs on every run.
        var state: UInt32 = 0x5EED
        func next() -> UInt8 {
            state = state &* 1_103_515_245 &+ 12345
            return UInt8(truncatingIfNeeded: state >> 16)
        }
        for round in 0..<300 {
            let harness = try SOCKSHarness()
            _ = try harness.written()
            let count = Int(next() % 48) + 1
            var input = (0..<count).map { _ in next() }
            // Half the rounds start like a real method selection, to reach the later steps.
            if round % 2 == 0, input.count >= 2 { input[0] = 0x05; input[1] = 0x02 }
            for chunk in stride(from: 0, to: input.count, by: 7) {
                try? harness.deliver(Array(input[chunk..<min(chunk + 7, input.count)]))
            }
            switch harness.outcome {
            case .success: XCTFail("established on \(input)")
            case .failure: XCTAssertFalse(harness.channel.isActive, "left open after failing on \(input)")
            case nil: XCTAssertTrue(harness.channel.isActive)
            }
        }
    }

    func testAnErrorInThePipelineFailsTheNegotiationAndCloses() throws {
        struct Broken: Error {}
        let harness = try SOCKSHarness()
        try harness.negotiateUpToReply()
        harness.channel.pipeline.fireErrorCaught(Broken())
        XCTAssertTrue(harness.error is Broken, "\(String(describing: harness.outcome))")
        XCTAssertFalse(harness.channel.isActive)
    }

    // MARK: TorStreams

    func testOpeningAStreamWhileTorIsNotReadyFailsAtOnceWithNetworkUnreachable() throws {
        let loop = EmbeddedEventLoop()
        let profile = Profile(name: "private", anonymizer: .tor)
        let runtime = TorRuntime(config: SottoConfig(file: "t.toml", stateDir: "/nonexistent", profiles: [profile]),
                                 loop: loop, logger: quietLogger)
        XCTAssertEqual(runtime.phase, .starting)
        var readyCalled = false
        var result: Result<Channel, Error>?
        TorStreams.open(host: "example.org", port: 443, profile: profile, runtime: runtime, on: loop) { channel in
            readyCalled = true
            return channel.eventLoop.makeSucceededVoidFuture()
        }.whenComplete { result = $0 }
        // Failed before anything was connected: no loop turn needed.
        guard case .failure(let error) = result else { return XCTFail("\(String(describing: result))") }
        guard case .notReady(let state) = error as? TorStreamError else { return XCTFail("\(error)") }
        XCTAssertEqual(state, "starting")
        XCTAssertEqual((error as? TorStreamError)?.socksReply, .networkUnreachable)
        XCTAssertTrue("\(error)".contains("refusing rather than sending another way"), "\(error)")
        XCTAssertFalse(readyCalled)
    }
}

/// RelayHandler: what one side reads before the other side's handler joins its pipeline is
/// written there when it joins (the bytes tor sent right behind its SOCKS reply).
final class RelayEarlyBytesTests: XCTestCase {
    private func connected(_ channel: EmbeddedChannel, port: Int) throws {
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: port)).wait()
    }

    private func outbound(_ channel: EmbeddedChannel) throws -> [UInt8] {
        var out: [UInt8] = []
        while let chunk = try channel.readOutbound(as: ByteBuffer.self) { out += bytes(chunk) }
        return out
    }

    func testBytesReadBeforeThePartnerJoinsAreWrittenInOrderWhenItJoins() throws {
        let loop = EmbeddedEventLoop()
        let (remote, local) = RelayHandler.pair()
        let tor = EmbeddedChannel(handler: remote, loop: loop)
        let client = EmbeddedChannel(loop: loop)
        try connected(tor, port: 9050)
        try connected(client, port: 1080)

        try tor.writeInbound(buffer(Array("first ".utf8)))
        try tor.writeInbound(buffer(Array("second".utf8)))
        XCTAssertEqual(try outbound(client), [], "nothing can be written before the partner joins")

        try client.pipeline.syncOperations.addHandler(local)
        XCTAssertEqual(try outbound(client), Array("first second".utf8))
        XCTAssertEqual(try outbound(client), [], "written exactly once")

        // Afterwards both directions flow directly.
        try tor.writeInbound(buffer([1, 2, 3]))
        XCTAssertEqual(try outbound(client), [1, 2, 3])
        try client.writeInbound(buffer([4, 5]))
        XCTAssertEqual(try outbound(tor), [4, 5])
    }

    func testTheBytesBehindASOCKSReplyReachTheClientThroughTheRelay() throws {
        // The order SOCKSServer.connectThroughTor uses: the tor side's relay is added behind the
        // SOCKS client handler, the handler removed, and only then the client side's relay added.
        let harness = try SOCKSHarness()
        try harness.negotiateUpToReply()
        let early = Array("SSH-2.0-OpenSSH_9.6\r\n".utf8)
        try harness.deliver(SOCKSHarness.success + early)
        guard case .success = harness.outcome else { return XCTFail("\(String(describing: harness.outcome))") }

        let (remote, local) = RelayHandler.pair()
        let client = EmbeddedChannel(loop: harness.loop)
        try connected(client, port: 1080)
        try harness.channel.pipeline.syncOperations.addHandler(remote)
        try harness.channel.pipeline.syncOperations.removeHandler(harness.handler).wait()
        XCTAssertEqual(try harness.passedOn(), [], "the relay took the bytes")
        XCTAssertEqual(try outbound(client), [])

        try client.pipeline.syncOperations.addHandler(local)
        XCTAssertEqual(try outbound(client), early)

        try client.writeInbound(buffer(Array("SSH-2.0-client\r\n".utf8)))
        XCTAssertEqual(try harness.written(), Array("SSH-2.0-client\r\n".utf8))
    }

    func testAReadAskedForBeforeThePartnerJoinsHappensWhenItJoins() throws {
        let loop = EmbeddedEventLoop()
        let (remote, local) = RelayHandler.pair()
        let reads = ReadCounter()
        let tor = EmbeddedChannel(loop: loop)
        try tor.pipeline.syncOperations.addHandlers([reads, remote])
        let client = EmbeddedChannel(loop: loop)
        try connected(tor, port: 9050)
        try connected(client, port: 1080)
        let before = reads.count

        // The partner cannot write yet, so the read waits...
        tor.read()
        XCTAssertEqual(reads.count, before)
        // ...until it can: a writable partner joining is the moment the read may go ahead.
        try client.pipeline.syncOperations.addHandler(local)
        XCTAssertEqual(reads.count, before + 1, "the tor side never reads again: the relay stalls")
    }
}

/// Counts the read requests that pass on toward the transport.
private final class ReadCounter: ChannelOutboundHandler {
    typealias OutboundIn = NIOAny
    var count = 0

    func read(context: ChannelHandlerContext) {
        count += 1
        context.read()
    }
}
