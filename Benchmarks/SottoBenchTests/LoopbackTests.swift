import Foundation
import NIOCore
import NIOPosix
import XCTest
@testable import sotto_bench

/// The measurements against real sockets on loopback: the tool's own servers, and
/// shadowsocks-libev's ss-local as the SOCKS5 peer when it is installed.
final class LoopbackTests: XCTestCase {
    private var group: MultiThreadedEventLoopGroup!
    private var servers: [Channel] = []
    private var processes: [Process] = []

    override func setUp() async throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    }

    override func tearDown() async throws {
        // SIGKILL: a child of the test runner inherits its blocked-signal mask, SIGTERM included.
        for process in processes where process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        for channel in servers { try? await channel.close() }
        try await group.shutdownGracefully()
    }

    private func startEcho() async throws -> Endpoint {
        let channel = try await BenchServers.startUDPEcho(group: group, listen: Endpoint(host: .ipv4([127, 0, 0, 1]), port: 0))
        servers.append(channel)
        return try XCTUnwrap(channel.localAddress.flatMap(endpoint(of:)))
    }

    private func startSink() async throws -> Endpoint {
        let channel = try await BenchServers.startTCPSink(group: group, listen: Endpoint(host: .ipv4([127, 0, 0, 1]), port: 0))
        servers.append(channel)
        return try XCTUnwrap(channel.localAddress.flatMap(endpoint(of:)))
    }

    func testDirectRoundTripsAreMeasuredAgainstTheEchoServer() async throws {
        let echo = try await startEcho()
        let flow = try await UDPFlow.open(on: group.next(), path: .direct(target: echo), payloadLength: 1200)
        let result = try await RoundTripSeries(flow: flow, run: 1, count: 50, warmup: 5,
                                               timeout: .seconds(1), warmupTimeout: .seconds(1)).start().get()
        await flow.close()
        XCTAssertEqual(result.summary.count, 50)
        XCTAssertEqual(result.lost, 0)
        XCTAssertGreaterThan(result.summary.p50, 0)
        XCTAssertLessThanOrEqual(result.summary.p50, result.summary.p99)
    }

    func testProbeSocketsDoNotAllowPortSharing() async throws {
        // With SO_REUSEADDR, Linux may give two UDP sockets the same ephemeral port, and only
        // one of them then receives: 1,000 flows lost about 1.5% of their echoes that way.
        let echo = try await startEcho()
        let flow = try await UDPFlow.open(on: group.next(), path: .direct(target: echo), payloadLength: 64)
        let reuse = try await flow.channel.getOption(.socketOption(.so_reuseaddr)).get()
        await flow.close()
        XCTAssertEqual(reuse, 0)
    }

    func testARateWindowCountsEveryEcho() async throws {
        let echo = try await startEcho()
        let flow = try await UDPFlow.open(on: group.next(), path: .direct(target: echo), payloadLength: 200)
        let result = try await RateWindow(flow: flow, run: 7, rate: 2000, window: .milliseconds(250), drain: .seconds(1))
            .start().get()
        await flow.close()
        XCTAssertEqual(result.sent, 500)
        XCTAssertEqual(result.received, 500)
        XCTAssertTrue(result.lossFree)
        XCTAssertGreaterThan(result.achievedRate, 1500)
    }

    func testARateWindowWithoutAnEchoServerLosesEverything() async throws {
        // A bound socket that never answers.
        let silent = try await DatagramBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        servers.append(silent)
        let target = try XCTUnwrap(silent.localAddress.flatMap(endpoint(of:)))
        let flow = try await UDPFlow.open(on: group.next(), path: .direct(target: target), payloadLength: 100)
        let result = try await RateWindow(flow: flow, run: 1, rate: 1000, window: .milliseconds(100), drain: .milliseconds(50))
            .start().get()
        await flow.close()
        XCTAssertEqual(result.sent, 100)
        XCTAssertEqual(result.received, 0)
        XCTAssertFalse(result.lossFree)
    }

    func testATCPTransferIsAcknowledgedByTheSink() async throws {
        let sink = try await startSink()
        let loop = group.next()
        let (channel, handler) = try await TCPBench.connect(on: loop, path: .direct(target: sink))
        let nanoseconds = try await loop.flatSubmit { handler.transfer(bytes: 3 << 20, on: loop) }.get()
        let again = try await loop.flatSubmit { handler.transfer(bytes: 1, on: loop) }.get()
        try await channel.close()
        XCTAssertGreaterThan(nanoseconds, 0)
        XCTAssertGreaterThan(again, 0)
    }

    // MARK: Through a real SOCKS5 server

    private func startShadowsocks() async throws -> Endpoint {
        let ssLocal = "/usr/bin/ss-local", ssServer = "/usr/bin/ss-server"
        guard FileManager.default.isExecutableFile(atPath: ssLocal),
              FileManager.default.isExecutableFile(atPath: ssServer) else {
            throw XCTSkip("shadowsocks-libev is not installed (apt-get install shadowsocks-libev)")
        }
        let serverPort = try await freePort(), localPort = try await freePort()
        let common = ["-k", "sotto-bench-test", "-m", "chacha20-ietf-poly1305", "-u"]
        processes.append(try launch(ssServer, ["-s", "127.0.0.1", "-p", "\(serverPort)"] + common))
        processes.append(try launch(ssLocal, ["-s", "127.0.0.1", "-p", "\(serverPort)", "-b", "127.0.0.1",
                                              "-l", "\(localPort)"] + common))
        try waitForListener(port: localPort)
        try waitForListener(port: serverPort)
        return Endpoint(host: .ipv4([127, 0, 0, 1]), port: localPort)
    }

    func testUDPAssociateThroughShadowsocksCarriesTheProbes() async throws {
        let socks = try await startShadowsocks()
        let echo = try await startEcho()
        let flow = try await UDPFlow.open(on: group.next(), path: .socks(server: socks, credentials: nil, target: echo),
                                          payloadLength: 1200)
        let result = try await RoundTripSeries(flow: flow, run: 1, count: 30, warmup: 3,
                                               timeout: .seconds(1), warmupTimeout: .seconds(3)).start().get()
        await flow.close()
        XCTAssertEqual(result.summary.count + result.lost, 30)
        XCTAssertGreaterThanOrEqual(result.summary.count, 25)
    }

    func testConnectThroughShadowsocksReachesTheSink() async throws {
        let socks = try await startShadowsocks()
        let sink = try await startSink()
        let loop = group.next()
        let (channel, handler) = try await TCPBench.connect(
            on: loop, path: .socks(server: socks, credentials: nil, target: sink))
        let nanoseconds = try await loop.flatSubmit { handler.transfer(bytes: 1 << 20, on: loop) }.get()
        try await channel.close()
        XCTAssertGreaterThan(nanoseconds, 0)
    }

    func testAConnectToAClosedPortThroughTheProxyFailsInsteadOfHanging() async throws {
        let socks = try await startShadowsocks()
        let closed = Endpoint(host: .ipv4([127, 0, 0, 1]), port: try await freePort())
        let loop = group.next()
        do {
            let (channel, handler) = try await TCPBench.connect(
                on: loop, path: .socks(server: socks, credentials: nil, target: closed))
            // shadowsocks answers CONNECT before it reaches the target, so the failure shows
            // as the connection closing during the transfer.
            _ = try await loop.flatSubmit { handler.transfer(bytes: 1024, on: loop) }.get()
            try? await channel.close()
            XCTFail("a transfer to a closed port succeeded")
        } catch {
            XCTAssertFalse("\(error)".isEmpty)
        }
    }

    // MARK: Helpers

    private func launch(_ path: String, _ arguments: [String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    private func freePort() async throws -> UInt16 {
        let channel = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let port = channel.localAddress?.port
        try await channel.close()
        return UInt16(try XCTUnwrap(port))
    }

    private func waitForListener(port: UInt16) throws {
        for _ in 0..<100 {
            if let table = readTextFile("/proc/net/tcp"), ProcNetTable.hasSocket(in: table, port: port, state: .tcpListen) {
                return
            }
            usleep(50_000)
        }
        XCTFail("nothing listens on port \(port) after 5 s")
    }
}
