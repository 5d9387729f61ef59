import Foundation
import TorControl
import XCTest
@testable import TorTestnet
#if canImport(Glibc)
import Glibc
#endif

/// Against the real tor and tor-gencert (skipped when either is missing): the configuration tor
/// accepts, and a whole up / use / down cycle.
final class TorTestnetIntegrationTests: XCTestCase {
    func requireTools() throws -> String {
        do {
            let tor = try TestnetIO.findTool("tor")
            _ = try TestnetIO.findTool("tor-gencert", besides: tor)
            return tor
        } catch {
            throw XCTSkip("\(error)")
        }
    }

    func temporaryDirectory() throws -> String {
        var template = Array("/tmp/sotto-testnet-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw XCTSkip("mkdtemp failed") }
        return String(cString: made)
    }

    func testTorAcceptsEveryGeneratedTorrcAndTheGatewayInclude() throws {
        let tor = try requireTools()
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let network = try sampleNetwork(directory: directory)
        let paths = network.paths
        try TestnetIO.makeDirectory(paths.nodes)
        for file in [paths.emptyTorrc, paths.geoIP, paths.geoIPv6] { try TestnetIO.writeFile(file, "", mode: 0o644) }
        try TestnetIO.writeFile(paths.resolvConf, "nameserver 127.0.0.1\n", mode: 0o644)
        try TestnetIO.writeFile(paths.gatewayTorrc, TestnetTorrc.gateway(network: network), mode: 0o644)

        var checks: [(String, String)] = []
        for node in TestnetLayout.nodes {
            try TestnetIO.makeDirectory(paths.node(node.name))
            try TestnetIO.writeFile(paths.torrc(node.name),
                                    TestnetTorrc.text(for: node, network: network, schedule: VotingSchedule(), votingOffset: 3), mode: 0o600)
            checks.append((node.name, paths.torrc(node.name)))
        }
        // What a gateway's own tor looks like: its settings, then the fragment.
        try TestnetIO.makeDirectory(directory + "/gateway")
        let gateway = directory + "/gateway/torrc"
        try TestnetIO.writeFile(gateway, """
            DataDirectory \(directory)/gateway
            SocksPort auto
            ControlPort auto
            %include \(paths.gatewayTorrc)

            """, mode: 0o600)
        checks.append(("gateway", gateway))

        for (name, torrc) in checks {
            let output = directory + "/verify-\(name).out"
            let child = try TestnetIO.spawn(tor, ["--verify-config", "-f", torrc, "--defaults-torrc", paths.emptyTorrc],
                                            outputPath: output)
            let outcome = child.wait(until: .now + .seconds(30))
            if !outcome.exited { child.forceStop() }
            XCTAssertEqual(outcome.status, 0, "\(name): \(TorTestnet.tail(of: output, lines: 10))")
        }
        // A torrc tor refuses must fail this check (so the check above can fail).
        try TestnetIO.writeFile(gateway, "NoSuchOption 1\n", mode: 0o600)
        let child = try TestnetIO.spawn(tor, ["--verify-config", "-f", gateway, "--defaults-torrc", paths.emptyTorrc],
                                        outputPath: directory + "/verify-bad.out")
        XCTAssertNotEqual(child.wait(until: .now + .seconds(30)).status, 0)
    }

    func testNetworkCarriesAStreamToLoopbackServesAGatewayTorAndStopsCompletely() async throws {
        _ = try requireTools()
        let directory = try temporaryDirectory()
        let network = TorTestnet(directory: directory, timeout: 120)
        var log: [String] = []
        let record: (String) -> Void = { log.append($0) }
        defer {
            try? network.down(progress: { _ in })
            try? FileManager.default.removeItem(atPath: directory)
        }

        // up, fresh keys
        var started = ContinuousClock.now
        let info: TorTestnetInfo
        do {
            info = try network.up(progress: record)
        } catch {
            XCTFail("up failed: \(error)\n" + log.joined(separator: "\n"))
            return
        }
        let upFresh = ContinuousClock.now - started
        XCTAssertEqual(try network.info(), info, "ports.env does not read back as what up returned")
        XCTAssertEqual(try String(contentsOfFile: info.gatewayTorrcPath, encoding: .utf8), TestnetTorrc.gateway(network: info))

        let tors = try network.runningProcesses()
        XCTAssertEqual(Set(tors.map(\.node)), Set(TestnetLayout.nodes), "\(tors)")
        XCTAssertEqual(tors.count, TestnetLayout.nodes.count)
        var rssKiB = 0
        for tor in tors {
            let status = try String(contentsOfFile: "/proc/\(tor.pid)/status", encoding: .utf8)
            // No signal blocked (else `down` needs SIGKILL), and tor handles SIGTERM itself.
            XCTAssertEqual(statusField(status, "SigBlk"), 0, "\(tor)")
            XCTAssertNotEqual((statusField(status, "SigCgt") ?? 0) & (1 << (UInt64(SIGTERM) - 1)), 0, "\(tor)")
            let rss = statusField(status, "VmRSS", radix: 10)
            XCTAssertNotNil(rss, "no VmRSS for \(tor)")
            rssKiB += Int(rss ?? 0)
        }

        XCTAssertThrowsError(try network.up(progress: { _ in })) { error in
            guard case TorTestnetError.alreadyRunning = error else { return XCTFail("\(error)") }
        }

        // A stream through the client, the relays and the exit to a server on 127.0.0.1.
        let echo = try EchoServer()
        let token = Array("sotto-\(UInt64.random(in: 0 ... .max))".utf8)
        let reply = try socks5RoundTrip(socksPort: info.clientSocksPort, to: echo.port, sending: token)
        XCTAssertEqual(reply, token)
        echo.stop()

        // A gateway's own tor joins the network through gateway.torrc.
        let gatewayState = directory + "/gateway-tor"
        let managed = try await ManagedTor.start(.init(stateDirectory: gatewayState,
                                                       extraTorrcLines: ["%include \(info.gatewayTorrcPath)"]))
        var phase = ""
        let bootstrapDeadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < bootstrapDeadline {
            phase = try await managed.connection.getInfo(["status/bootstrap-phase"])["status/bootstrap-phase"] ?? ""
            if phase.contains("PROGRESS=100") { break }
            try await Task.sleep(nanoseconds: 250_000_000)
        }
        await managed.shutdown()
        XCTAssertTrue(phase.contains("PROGRESS=100"), "the gateway's tor did not bootstrap: \(phase)")

        // down finds a tor whose pid file is gone.
        unlink(info.paths.pidFile("exit0"))
        started = ContinuousClock.now
        try network.down(progress: record)
        let down = ContinuousClock.now - started
        XCTAssertEqual(try network.runningProcesses(), [])
        XCTAssertEqual(processesNaming(directory), [], "a process still names \(directory)")

        // up again with the keys kept, then down.
        started = ContinuousClock.now
        let again = try network.up(progress: record)
        let upKept = ContinuousClock.now - started
        XCTAssertNotEqual(again.clientSocksPort, 0)
        XCTAssertEqual(again.relays.map(\.fingerprint), info.relays.map(\.fingerprint), "keys were not reused")
        XCTAssertTrue(log.contains("reusing the keys in \(info.directory)"))
        try network.down(progress: record)
        XCTAssertEqual(processesNaming(directory), [])

        func seconds(_ d: Duration) -> String { String(format: "%.1f s", Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18) }
        print("""
            private Tor network measurements: up with fresh keys \(seconds(upFresh)), up with kept keys \(seconds(upKept)), \
            down \(seconds(down)), memory of the \(tors.count) tors \(rssKiB / 1024) MiB (sum of VmRSS)
            """)
    }

    /// A `Key:\tvalue` line of /proc/PID/status (hex masks by default).
    func statusField(_ status: String, _ key: String, radix: Int = 16) -> UInt64? {
        for line in status.split(separator: "\n") where line.hasPrefix(key + ":") {
            guard let value = line.dropFirst(key.count + 1).split(whereSeparator: \.isWhitespace).first else { return nil }
            return UInt64(value, radix: radix)
        }
        return nil
    }

    /// Every process whose command line mentions `directory` at all: a wider net than the module's
    /// own matching, so a tor it would miss still shows here.
    func processesNaming(_ directory: String) -> [Int32] {
        var found: [Int32] = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry), pid != getpid(),
                  let bytes = TestnetIO.readBytes("/proc/\(pid)/cmdline", limit: 16 * 1024) else { continue }
            if String(decoding: bytes, as: UTF8.self).contains(directory) { found.append(pid) }
        }
        return found
    }
}

// MARK: - Blocking socket helpers (loopback only, every call bounded by SO_RCVTIMEO / SO_SNDTIMEO)

private func loopbackAddress(port: Int) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    return address
}

private func makeSocket(timeoutSeconds: Int) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
    var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    return fd
}

private struct SocketError: Error, CustomStringConvertible {
    let description: String
}

private func sendAll(_ fd: Int32, _ bytes: [UInt8]) throws {
    var offset = 0
    while offset < bytes.count {
        let n = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard n > 0 else { throw SocketError(description: "send: \(String(cString: strerror(errno)))") }
        offset += n
    }
}

private func receiveExactly(_ fd: Int32, _ count: Int) throws -> [UInt8] {
    var result: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: count)
    while result.count < count {
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, count - result.count, 0) }
        guard n > 0 else { throw SocketError(description: n == 0 ? "connection closed after \(result.count) bytes" : "recv: \(String(cString: strerror(errno)))") }
        result += buffer[0..<n]
    }
    return result
}

/// RFC 1928: no-auth greeting, CONNECT 127.0.0.1:port, then `payload` out and the same number of
/// bytes back.
private func socks5RoundTrip(socksPort: Int, to port: Int, sending payload: [UInt8]) throws -> [UInt8] {
    let fd = try makeSocket(timeoutSeconds: 30)
    defer { close(fd) }
    var address = loopbackAddress(port: socksPort)
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { throw SocketError(description: "connect to SocksPort \(socksPort): \(String(cString: strerror(errno)))") }
    try sendAll(fd, [0x05, 0x01, 0x00])
    let choice = try receiveExactly(fd, 2)
    guard choice == [0x05, 0x00] else { throw SocketError(description: "SocksPort chose method \(choice)") }
    try sendAll(fd, [0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, UInt8(port >> 8), UInt8(port & 0xFF)])
    let reply = try receiveExactly(fd, 10)
    guard reply[0] == 0x05, reply[1] == 0x00 else { throw SocketError(description: "CONNECT answered \(reply)") }
    try sendAll(fd, payload)
    return try receiveExactly(fd, payload.count)
}

/// Accepts one connection on 127.0.0.1 and echoes what it reads until the peer closes.
private final class EchoServer: @unchecked Sendable {
    let fd: Int32
    let port: Int
    private let thread: Thread

    init() throws {
        let fd = try makeSocket(timeoutSeconds: 60)
        self.fd = fd
        var address = loopbackAddress(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && listen(fd, 4) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard ok else {
            close(fd)
            throw SocketError(description: "echo server: \(String(cString: strerror(errno)))")
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        let listener = fd
        thread = Thread {
            let client = accept(listener, nil, nil)  // bounded by SO_RCVTIMEO
            guard client >= 0 else { return }
            defer { close(client) }
            var timeout = timeval(tv_sec: 30, tv_usec: 0)
            setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var buffer = [UInt8](repeating: 0, count: 4096)
            for _ in 0..<1000 {
                let n = buffer.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
                guard n > 0 else { return }
                try? sendAll(client, Array(buffer[0..<n]))
            }
        }
        thread.start()
    }

    func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }
}
