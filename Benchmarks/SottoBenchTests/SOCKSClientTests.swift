import NIOCore
import NIOPosix
import NIOSOCKS
import SottoSOCKS
import XCTest
@testable import sotto_bench

/// The bench's use of SottoSOCKS: how its endpoints become SOCKS5 addresses, how probe datagrams
/// are framed and recognised, and how the connector hands a negotiated connection to the
/// measurement. The SOCKS5 encodings themselves are tested in SottoSOCKSTests.
final class SOCKSClientTests: XCTestCase {
    private let loopbackV6: [UInt8] = [UInt8](repeating: 0, count: 15) + [1]

    // MARK: Endpoints as SOCKS5 addresses

    func testAPeerNameTargetIsSentUnresolved() throws {
        XCTAssertEqual(try Endpoint(host: .domain("exit"), port: 9).socksAddress(), .domain("exit", port: 9))
    }

    func testIPLiteralTargetsAreSentAsAddresses() throws {
        let v4 = try Endpoint(host: .ipv4([127, 0, 0, 1]), port: 0x1234).socksAddress()
        XCTAssertEqual(v4, .address(try SocketAddress(ipAddress: "127.0.0.1", port: 0x1234)))
        let v6 = try Endpoint(host: .ipv6(loopbackV6), port: 80).socksAddress()
        XCTAssertEqual(v6, .address(try SocketAddress(ipAddress: "::1", port: 80)))
    }

    func testBoundAddressesBecomeEndpoints() throws {
        XCTAssertEqual(Endpoint(.address(try SocketAddress(ipAddress: "127.0.0.1", port: 1080))),
                       Endpoint(host: .ipv4([127, 0, 0, 1]), port: 1080))
        XCTAssertEqual(Endpoint(.address(try SocketAddress(ipAddress: "::1", port: 7))),
                       Endpoint(host: .ipv6(loopbackV6), port: 7))
        XCTAssertEqual(Endpoint(.domain("relay", port: 5)), Endpoint(host: .domain("relay"), port: 5))
        XCTAssertNil(Endpoint(.address(try SocketAddress(unixDomainSocketPath: "/tmp/x"))))
    }

    // MARK: Probe datagrams (RFC 1928 section 7)

    private func relayedHandler(target: Endpoint, payloadLength: Int) throws -> UDPProbeHandler {
        UDPProbeHandler(socksHeader: SOCKSUDPHeader(address: try target.socksAddress()), payloadLength: payloadLength)
    }

    func testARelayedProbeStartsWithTheTargetsHeader() throws {
        let target = Endpoint(host: .domain("exit"), port: 7)
        let handler = try relayedHandler(target: target, payloadLength: 100)
        var datagram = handler.datagram(run: 5, sequence: 9)
        XCTAssertEqual(Array(datagram.readableBytesView.prefix(3 + 2 + 4 + 2)),
                       [0, 0, 0, 0x03, 4] + Array("exit".utf8) + [0, 7])
        let header = try datagram.readSOCKSUDPHeader()
        XCTAssertEqual(header, SOCKSUDPHeader(fragment: 0, address: .domain("exit", port: 7)))
        XCTAssertEqual(datagram.readableBytes, 100)
        XCTAssertEqual(datagram.withUnsafeReadableBytes { ProbePayload.parse($0) }, ProbePayload(run: 5, sequence: 9))
    }

    func testEachProbeGetsItsOwnRunAndSequence() throws {
        let handler = try relayedHandler(target: Endpoint(host: .ipv4([127, 0, 0, 1]), port: 7), payloadLength: 64)
        let first = handler.datagram(run: 1, sequence: 1)
        let second = handler.datagram(run: 2, sequence: 300)
        XCTAssertEqual(UDPProbeHandler.probe(in: first, expectsHeader: true, payloadLength: 64), ProbePayload(run: 1, sequence: 1))
        XCTAssertEqual(UDPProbeHandler.probe(in: second, expectsHeader: true, payloadLength: 64), ProbePayload(run: 2, sequence: 300))
        XCTAssertEqual(first.readableBytes, second.readableBytes)
    }

    func testRelayedFragmentsAreNoProbes() throws {
        let handler = try relayedHandler(target: Endpoint(host: .ipv4([127, 0, 0, 1]), port: 7), payloadLength: 64)
        var datagram = handler.datagram(run: 1, sequence: 1)
        XCTAssertNotNil(UDPProbeHandler.probe(in: datagram, expectsHeader: true, payloadLength: 64))
        datagram.setInteger(UInt8(1), at: datagram.readerIndex + 2)
        XCTAssertNil(UDPProbeHandler.probe(in: datagram, expectsHeader: true, payloadLength: 64))
    }

    func testMalformedOrTruncatedRelayedDatagramsAreNoProbes() throws {
        let handler = try relayedHandler(target: Endpoint(host: .ipv6(loopbackV6), port: 7), payloadLength: 32)
        let datagram = handler.datagram(run: 1, sequence: 1)
        for cut in 0..<datagram.readableBytes {
            XCTAssertNil(UDPProbeHandler.probe(in: datagram.getSlice(at: datagram.readerIndex, length: cut)!,
                                               expectsHeader: true, payloadLength: 32), "cut at \(cut)")
        }
        var reserved = datagram
        reserved.setInteger(UInt8(9), at: reserved.readerIndex + 1)
        XCTAssertNil(UDPProbeHandler.probe(in: reserved, expectsHeader: true, payloadLength: 32))
        var addressType = datagram
        addressType.setInteger(UInt8(2), at: addressType.readerIndex + 3)
        XCTAssertNil(UDPProbeHandler.probe(in: addressType, expectsHeader: true, payloadLength: 32))
    }

    func testARelayedProbeOfAnotherSizeIsNoProbe() throws {
        let handler = try relayedHandler(target: Endpoint(host: .ipv4([127, 0, 0, 1]), port: 7), payloadLength: 64)
        var longer = handler.datagram(run: 1, sequence: 1)
        longer.writeInteger(UInt8(0))
        XCTAssertNil(UDPProbeHandler.probe(in: longer, expectsHeader: true, payloadLength: 64))
        let shorter = handler.datagram(run: 1, sequence: 1)
        XCTAssertNil(UDPProbeHandler.probe(in: shorter.getSlice(at: shorter.readerIndex, length: shorter.readableBytes - 1)!,
                                           expectsHeader: true, payloadLength: 64))
    }

    func testDirectProbesCarryNoHeader() {
        let handler = UDPProbeHandler(socksHeader: nil, payloadLength: 40)
        let datagram = handler.datagram(run: 3, sequence: 4)
        XCTAssertEqual(datagram.readableBytes, 40)
        XCTAssertEqual(Array(datagram.readableBytesView.prefix(4)), ProbePayload.magic)
        XCTAssertEqual(UDPProbeHandler.probe(in: datagram, expectsHeader: false, payloadLength: 40), ProbePayload(run: 3, sequence: 4))
    }

    // MARK: The connector against a scripted SOCKS5 server on loopback

    private var group: MultiThreadedEventLoopGroup!
    private var server: Channel?

    override func setUp() async throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    }

    override func tearDown() async throws {
        try? await server?.close()
        try await group.shutdownGracefully()
    }

    /// Starts a server that expects `script`'s messages in order and answers each; it closes the
    /// connection on any other byte, or after the last answer when `closeAtEnd`.
    private func startServer(_ script: [(expect: [UInt8], answer: [UInt8])], closeAtEnd: Bool = false) async throws -> Endpoint {
        let channel = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ScriptedSOCKSServer(script: script, closeAtEnd: closeAtEnd))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        server = channel
        return try XCTUnwrap(channel.localAddress.flatMap(endpoint(of:)))
    }

    func testCredentialsAreGivenWhenTheServerChoosesUsernamePassword() async throws {
        let reply: [UInt8] = [5, 0, 0, 1, 127, 0, 0, 1, 0x04, 0x38]
        let socks = try await startServer([
            (expect: [5, 2, 2, 0], answer: [5, 2]),
            (expect: [1, 5] + Array("bench".utf8) + [2] + Array("pw".utf8), answer: [1, 0]),
            // The bytes after the reply are the first application data.
            (expect: [5, 1, 0, 3, 4] + Array("exit".utf8) + [0, 9], answer: reply + [0xDE, 0xAD]),
        ])
        let loop = group.next()
        let collector = Collector(expecting: 2, promise: loop.makePromise())
        let (channel, bound) = try await SOCKSConnector.connect(
            group: loop, server: socks, credentials: UsernamePasswordRequest(username: "bench", password: "pw"),
            command: .connect, destination: Endpoint(host: .domain("exit"), port: 9), next: collector)
        let data = try await XCTUnwrap(collector.promise).futureResult.get()
        try await channel.close()
        XCTAssertEqual(bound, Endpoint(host: .ipv4([127, 0, 0, 1]), port: 1080))
        XCTAssertEqual(data, [0xDE, 0xAD])
    }

    func testUDPAssociateWithoutCredentialsOffersNoAuthenticationOnly() async throws {
        let socks = try await startServer([
            (expect: [5, 1, 0], answer: [5, 0]),
            (expect: [5, 3, 0, 1, 127, 0, 0, 1, 0x9C, 0x40], answer: [5, 0, 0, 1, 0, 0, 0, 0, 0x30, 0x39]),
        ])
        let (channel, bound) = try await SOCKSConnector.connect(
            group: group.next(), server: socks, credentials: nil, command: .udpAssociate,
            destination: Endpoint(host: .ipv4([127, 0, 0, 1]), port: 40000), next: ControlConnectionHandler())
        try await channel.close()
        XCTAssertEqual(bound, Endpoint(host: .ipv4([0, 0, 0, 0]), port: 12345))
        XCTAssertTrue(bound.host.isUnspecified)
    }

    func testARefusedRequestFailsWithTheReplysMeaning() async throws {
        let socks = try await startServer([
            (expect: [5, 1, 0], answer: [5, 0]),
            (expect: [5, 1, 0, 3, 4] + Array("exit".utf8) + [0, 9], answer: [5, 2, 0, 1, 0, 0, 0, 0, 0, 0]),
        ])
        do {
            _ = try await SOCKSConnector.connect(
                group: group.next(), server: socks, credentials: nil, command: .connect,
                destination: Endpoint(host: .domain("exit"), port: 9), next: Collector(expecting: 1, promise: nil))
            XCTFail("a refused CONNECT succeeded")
        } catch let error as SOCKS5ClientError {
            guard case .requestFailed(.connect, destination: .domain("exit", port: 9), let reply) = error else {
                return XCTFail("\(error)")
            }
            XCTAssertEqual(reply.value, 2)
            XCTAssertTrue("\(error)".contains("connection not allowed by ruleset"), "\(error)")
        }
    }

    func testAServerThatClosesDuringTheHandshakeFailsTheConnect() async throws {
        let socks = try await startServer([(expect: [5, 1, 0], answer: [5])], closeAtEnd: true)
        do {
            _ = try await SOCKSConnector.connect(
                group: group.next(), server: socks, credentials: nil, command: .connect,
                destination: Endpoint(host: .ipv4([127, 0, 0, 1]), port: 9), next: Collector(expecting: 1, promise: nil))
            XCTFail("a connect succeeded though the server closed during the handshake")
        } catch let error as SOCKS5ClientError {
            XCTAssertEqual(error, .closedEarly(during: .methodSelection, unparsedBytes: 1))
        }
    }
}

/// Answers each expected message of a script; closes on anything unexpected.
private final class ScriptedSOCKSServer: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var script: [(expect: [UInt8], answer: [UInt8])]
    private let closeAtEnd: Bool
    private var received: [UInt8] = []

    init(script: [(expect: [UInt8], answer: [UInt8])], closeAtEnd: Bool) {
        self.script = script
        self.closeAtEnd = closeAtEnd
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received += unwrapInboundIn(data).readableBytesView
        while let step = script.first, received.count >= step.expect.count {
            guard Array(received.prefix(step.expect.count)) == step.expect else {
                context.close(promise: nil)
                return
            }
            received.removeFirst(step.expect.count)
            script.removeFirst()
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: step.answer)), promise: nil)
            if script.isEmpty, closeAtEnd { context.close(promise: nil) }
        }
        if script.isEmpty, !received.isEmpty { context.close(promise: nil) }
    }
}

/// Stands in for the measurement handler: collects what arrives after the handshake.
private final class Collector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer

    let promise: EventLoopPromise<[UInt8]>?
    private var pending: EventLoopPromise<[UInt8]>?
    private let expecting: Int
    private var bytes: [UInt8] = []

    init(expecting: Int, promise: EventLoopPromise<[UInt8]>?) {
        self.expecting = expecting
        self.promise = promise
        self.pending = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        bytes += unwrapInboundIn(data).readableBytesView
        if bytes.count >= expecting {
            pending?.succeed(bytes)
            pending = nil
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        pending?.fail(BenchError("closed after \(bytes.count) bytes"))
        pending = nil
        context.fireChannelInactive()
    }
}
