import NIOCore
import NIOPosix
import XCTest
@testable import sotto_bench

final class FixedLengthMessagesTests: XCTestCase {
    func testAMessageSplitAcrossReadsCompletesOnItsLastByte() {
        var messages = FixedLengthMessages(length: 37)
        XCTAssertEqual(messages.consume(20), 0)
        XCTAssertEqual(messages.consume(16), 0)
        XCTAssertEqual(messages.consume(1), 1)
        XCTAssertEqual(messages.partial, 0)
        XCTAssertEqual(messages.completed, 1)
    }

    func testMessagesGluedTogetherInOneReadAreAllCounted() {
        var messages = FixedLengthMessages(length: 10)
        XCTAssertEqual(messages.consume(35), 3)
        XCTAssertEqual(messages.partial, 5)
        XCTAssertEqual(messages.consume(5), 1)
        XCTAssertEqual(messages.completed, 4)
    }

    func testAnEmptyReadCompletesNothing() {
        var messages = FixedLengthMessages(length: 1)
        XCTAssertEqual(messages.consume(0), 0)
        XCTAssertEqual(messages.completed, 0)
    }
}

final class StreamTargetTests: XCTestCase {
    // A v3 address of the form tor prints: 56 base32 characters ending in the version's 'd'.
    let onion = String(repeating: "a", count: 55) + "d.onion"

    func testAV3OnionAddressIsAcceptedOnlyThroughTheProxy() throws {
        let target = try Endpoint(parsing: "\(onion):443")
        XCTAssertNoThrow(try StreamTarget.check(target, throughProxy: true))
        XCTAssertThrowsError(try StreamTarget.check(target, throughProxy: false))
        XCTAssertTrue(StreamTarget.isV3OnionName(onion.uppercased()))
    }

    func testLoopbackAddressesAreAcceptedEitherWay() throws {
        XCTAssertNoThrow(try StreamTarget.check(Endpoint(parsing: "127.0.0.1:7"), throughProxy: false))
        XCTAssertNoThrow(try StreamTarget.check(Endpoint(parsing: "127.0.0.1:7"), throughProxy: true))
    }

    func testPublicHostsAndMalformedOnionNamesAreRefused() throws {
        let refused = [
            "example.com:80", "8.8.8.8:53", "exit:7",
            String(repeating: "a", count: 55) + "d.onion.example.com:80",   // a public name ending otherwise
            String(repeating: "a", count: 54) + "d.onion:80",               // truncated
            String(repeating: "a", count: 56) + "d.onion:80",               // one character too many
            String(repeating: "a", count: 56) + ".onion:80",                // version character not 'd'
            String(repeating: "a", count: 54) + "1d.onion:80",              // '1' is not base32
            String(repeating: "a", count: 16) + ".onion:80",                // a v2-length address
            ".onion:80",
        ]
        for text in refused {
            let target = try Endpoint(parsing: text)
            XCTAssertThrowsError(try StreamTarget.check(target, throughProxy: true), text)
        }
    }
}

final class MessageSizeTests: XCTestCase {
    func testSizesInBytesAndKibibytesAreParsed() throws {
        XCTAssertEqual(try parseMessageSize("1"), 1)
        XCTAssertEqual(try parseMessageSize("93"), 93)
        XCTAssertEqual(try parseMessageSize("64K"), 65_536)
    }

    func testZeroOversizedAndMalformedSizesAreRefused() {
        for text in ["0", "65537", "1M", "", "-1", "12 ", "0x10", "K", "99999999999999999999"] {
            XCTAssertThrowsError(try parseMessageSize(text), text)
        }
    }
}

final class DatagramSizeTallyTests: XCTestCase {
    func testTheModeIsTheMostFrequentSizeAndTheSummaryListsEveryOne() {
        var tally = DatagramSizeTally()
        XCTAssertNil(tally.mode)
        XCTAssertEqual(tally.summary, "none")
        for size in [150, 73, 73, 73, 90, 73] { tally.record(size) }
        XCTAssertEqual(tally.mode, 73)
        XCTAssertEqual(tally.datagrams, 6)
        XCTAssertEqual(tally.bytes, 150 + 73 * 4 + 90)
        XCTAssertEqual(tally.summary, "73x4,90x1,150x1")
    }

    func testATieGoesToTheSmallerSize() {
        var tally = DatagramSizeTally()
        for size in [200, 100, 200, 100] { tally.record(size) }
        XCTAssertEqual(tally.mode, 100)
    }
}

/// The stream round trip and the size relay against real sockets on loopback.
final class StreamLoopbackTests: XCTestCase {
    private var group: MultiThreadedEventLoopGroup!
    private var channels: [Channel] = []
    private let loopback = Endpoint(host: .ipv4([127, 0, 0, 1]), port: 0)

    override func setUp() async throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    }

    override func tearDown() async throws {
        for channel in channels { try? await channel.close() }
        try await group.shutdownGracefully()
    }

    func testExchangesWithTheSizedEchoAreTimedOneAtATime() async throws {
        let server = try await StreamRTT.startSizedEcho(group: group, listen: loopback, requestLength: 93, responseLength: 158)
        channels.append(server)
        let target = try XCTUnwrap(server.localAddress.flatMap(endpoint(of:)))
        let loop = group.next()
        let (channel, handler) = try await StreamRTT.connect(on: loop, socks: nil, credentials: nil, target: target,
                                                             requestLength: 93, responseLength: 158)
        channels.append(channel)
        for _ in 0..<20 {
            let nanoseconds = try await loop.flatSubmit { handler.exchange(on: loop, timeout: .seconds(2)) }.get()
            XCTAssertGreaterThan(nanoseconds, 0)
            XCTAssertLessThan(nanoseconds, 2_000_000_000)
        }
    }

    func testAServerThatAnswersMoreThanTheResponseSizeFailsTheExchange() async throws {
        // The echo answers 200 bytes where the client expects 100: not a sized echo with these sizes.
        let server = try await StreamRTT.startSizedEcho(group: group, listen: loopback, requestLength: 50, responseLength: 200)
        channels.append(server)
        let target = try XCTUnwrap(server.localAddress.flatMap(endpoint(of:)))
        let loop = group.next()
        let (channel, handler) = try await StreamRTT.connect(on: loop, socks: nil, credentials: nil, target: target,
                                                             requestLength: 50, responseLength: 100)
        channels.append(channel)
        do {
            _ = try await loop.flatSubmit { handler.exchange(on: loop, timeout: .seconds(2)) }.get()
            // The first 100 bytes may complete it; the surplus then fails the stream.
            _ = try await loop.flatSubmit { handler.exchange(on: loop, timeout: .seconds(2)) }.get()
            XCTFail("a surplus response went unnoticed")
        } catch {
            XCTAssertTrue("\(error)".contains("sized-echo"), "\(error)")
        }
    }

    func testAnExchangeWithoutAnAnswerTimesOut() async throws {
        // The echo waits for 1,000 request bytes and so never answers 10.
        let server = try await StreamRTT.startSizedEcho(group: group, listen: loopback, requestLength: 1000, responseLength: 10)
        channels.append(server)
        let target = try XCTUnwrap(server.localAddress.flatMap(endpoint(of:)))
        let loop = group.next()
        let (channel, handler) = try await StreamRTT.connect(on: loop, socks: nil, credentials: nil, target: target,
                                                             requestLength: 10, responseLength: 10)
        channels.append(channel)
        do {
            _ = try await loop.flatSubmit { handler.exchange(on: loop, timeout: .milliseconds(200)) }.get()
            XCTFail("an exchange without an answer succeeded")
        } catch {
            XCTAssertTrue("\(error)".contains("within 200 ms"), "\(error)")
        }
    }

    func testTheRelayCarriesDatagramsBothWaysAndTalliesTheirSizes() async throws {
        let echo = try await BenchServers.startUDPEcho(group: group, listen: loopback)
        channels.append(echo)
        let loop = group.next()
        let relay = UDPSizeRelay(target: try XCTUnwrap(echo.localAddress), eventLoop: loop)
        let listenAddress = try socketAddress(loopback)
        let relayChannel = try await loop.flatSubmit { relay.start(listen: listenAddress) }.get()
        let relayAddress = try XCTUnwrap(relayChannel.localAddress)

        let flow = try await UDPFlow.open(on: loop, path: .direct(target: try XCTUnwrap(endpoint(of: relayAddress))),
                                          payloadLength: 77)
        let result = try await RoundTripSeries(flow: flow, run: 1, count: 10, warmup: 0,
                                               timeout: .seconds(1), warmupTimeout: .seconds(1)).start().get()
        await flow.close()
        XCTAssertEqual(result.summary.count, 10)
        let (up, down) = try await loop.submit { (relay.toTarget, relay.toClients) }.get()
        XCTAssertEqual(up.mode, 77)
        XCTAssertEqual(down.mode, 77)
        XCTAssertEqual(up.datagrams, 10)
        XCTAssertEqual(down.datagrams, 10)
        try await loop.flatSubmit { relay.closeAll() }.get()
    }
}
