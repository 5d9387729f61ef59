import Foundation
import XCTest
@testable import TorControl
#if canImport(Glibc)
import Glibc
#endif

/// Drives the sans-I/O core against the system tor (Debian 0.4.9) over a plain blocking socket.
/// Tor runs with DisableNetwork 1 and no SocksPort, so it never contacts any network.
final class TorControlIntegrationTests: XCTestCase {
    private static let torPath = "/usr/sbin/tor"

    func testRealTorAuthenticatesWithSafeCookieAndAnswersCommands() throws {
        #if !canImport(Glibc)
        throw XCTSkip("POSIX sockets test written for Linux")
        #else
        guard FileManager.default.isExecutableFile(atPath: Self.torPath) else { throw XCTSkip("\(Self.torPath) not installed") }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("torcontrol-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("data"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let torrc = dir.appendingPathComponent("torrc")
        try Data().write(to: torrc)
        let portFile = dir.appendingPathComponent("control-port")

        let tor = Process()
        tor.executableURL = URL(fileURLWithPath: Self.torPath)
        tor.arguments = ["-f", torrc.path, "--ignore-missing-torrc",
                         "--DataDirectory", dir.appendingPathComponent("data").path,
                         "--ControlPort", "127.0.0.1:auto", "--ControlPortWriteToFile", portFile.path,
                         "--CookieAuthentication", "1", "--SocksPort", "0", "--DisableNetwork", "1",
                         "--__OwningControllerProcess", "\(getpid())", "--Log", "err stderr"]
        tor.standardOutput = FileHandle.nullDevice
        try tor.run()
        defer { stop(tor) }

        // ControlPortWriteToFile avoids guessing a free port: tor picks one and writes "PORT=127.0.0.1:N".
        let port = try waitForPort(portFile, tor: tor, timeout: 30)
        let socket = try ControlSocket(port: port)
        defer { socket.close() }

        var authenticator = TorAuthenticator(controlPort: "127.0.0.1:\(port)",
                                             clientNonce: (0..<32).map { _ in UInt8.random(in: 0...255) })
        var correlator = TorReplyCorrelator<String>()
        var action = try authenticator.start()
        authLoop: while true {
            switch action {
            case let .send(command):
                let reply = try socket.exchange(command, correlator: &correlator)
                action = try authenticator.receive(reply)
            case let .readCookieFile(path):
                let contents = try Data(contentsOf: URL(fileURLWithPath: path))
                action = try authenticator.provideCookie(Array(contents))
            case let .authenticated(method, info):
                XCTAssertEqual(method, .safeCookie)
                XCTAssertEqual(info.cookieFile.map { URL(fileURLWithPath: $0).lastPathComponent }, "control_auth_cookie")
                XCTAssertNotNil(info.torVersion)
                break authLoop
            }
        }

        let version = try GetInfoResult(reply: socket.exchange(try .getInfo(["version", "config-text"]), correlator: &correlator))
        XCTAssertNotNil(version["version"]?.range(of: #"^\d+\.\d+\.\d+"#, options: .regularExpression), "\(version.entries)")
        XCTAssertTrue(version["config-text"]?.contains("DisableNetwork 1") ?? false, "\(version.entries)")

        XCTAssertThrowsError(try GetInfoResult(reply: socket.exchange(try .getInfo(["no-such-key"]), correlator: &correlator))) {
            XCTAssertEqual(($0 as? TorReplyError)?.code, 552, "\($0)")
        }

        try socket.exchange(try .setEvents(["STATUS_CLIENT", "HS_DESC"]), correlator: &correlator).requireSuccess("SETEVENTS")

        let added = try AddOnionResult(reply: socket.exchange(
            try .addOnion(key: .newED25519V3, ports: [OnionPort(virtualPort: 80, target: "127.0.0.1:9")]), correlator: &correlator))
        XCTAssertEqual(added.serviceID.count, 56)
        XCTAssertEqual(added.privateKey?.keyType, "ED25519-V3")
        try socket.exchange(try .delOnion(serviceID: added.serviceID), correlator: &correlator).requireSuccess("DEL_ONION")

        // The key tor returned re-creates the same service.
        let again = try AddOnionResult(reply: socket.exchange(
            try .addOnion(key: .ed25519V3(base64: added.privateKey!.blob), flags: [.discardPK],
                          ports: [OnionPort(virtualPort: 80, target: "127.0.0.1:9")]), correlator: &correlator))
        XCTAssertEqual(again.serviceID, added.serviceID)
        XCTAssertNil(again.privateKey)

        try socket.exchange(try .onionClientAuthAdd(serviceID: added.serviceID, x25519PrivateKey: Array(repeating: 0x40, count: 32)),
                            correlator: &correlator).requireSuccess("ONION_CLIENT_AUTH_ADD")
        try socket.exchange(.signal(.newnym), correlator: &correlator).requireSuccess("SIGNAL")
        try socket.exchange(.quit(), correlator: &correlator).requireSuccess("QUIT")
        #endif
    }

    #if canImport(Glibc)
    private func waitForPort(_ file: URL, tor: Process, timeout: TimeInterval) throws -> UInt16 {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let text = try? String(contentsOf: file, encoding: .utf8),
               let line = text.split(separator: "\n").first(where: { $0.hasPrefix("PORT=") }),
               let port = line.split(separator: ":").last.flatMap({ UInt16($0.trimmingCharacters(in: .whitespaces)) }) {
                return port
            }
            guard tor.isRunning else { throw XCTSkip("tor exited early with status \(tor.terminationStatus)") }
            usleep(100_000)
        }
        XCTFail("tor did not write its control port within \(timeout) s")
        throw CancellationError()
    }

    /// SIGTERM by PID, a bounded wait, then SIGKILL.
    private func stop(_ tor: Process) {
        guard tor.isRunning else { return }
        kill(tor.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(10)
        while tor.isRunning, Date() < deadline { usleep(50_000) }
        if tor.isRunning { kill(tor.processIdentifier, SIGKILL) }
        tor.waitUntilExit()
    }
    #endif
}

#if canImport(Glibc)
/// A blocking TCP connection with a receive timeout; just enough to carry the test.
private final class ControlSocket {
    private let fd: Int32

    init(port: UInt16) throws {
        fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else { Glibc.close(fd); throw POSIXError(.init(rawValue: errno) ?? .ECONNREFUSED) }
    }

    func close() { Glibc.close(fd) }

    /// Writes `command`, then reads until its reply arrives (events are skipped).
    func exchange(_ command: TorCommand, correlator: inout TorReplyCorrelator<String>) throws -> TorReply {
        let bytes = command.bytes
        let written = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard written == bytes.count else { throw POSIXError(.EIO) }
        correlator.commandSent(command.keyword)
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else {
                XCTFail("tor closed the control connection or timed out waiting for the reply to \(command)")
                throw POSIXError(.ETIMEDOUT)
            }
            for delivery in try correlator.receive(Array(chunk[..<n])) {
                if case let .reply(reply, to: keyword) = delivery {
                    XCTAssertEqual(keyword, command.keyword)
                    return reply
                }
            }
        }
    }
}
#endif
