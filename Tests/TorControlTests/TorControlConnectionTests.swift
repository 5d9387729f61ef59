import Foundation
import NIOCore
import XCTest
@testable import TorControl
#if canImport(Glibc)
import Glibc
#endif

/// The NIO control connection and the managed tor, against the system tor with `DisableNetwork 1`
/// (it never contacts any network). Every wait is bounded; every tor is stopped by PID.
final class TorControlConnectionTests: XCTestCase {
    private var stateDirectories: [String] = []
    private var started: [ManagedTor] = []

    override func tearDown() async throws {
        for tor in started { await tor.shutdown() }
        started = []
        for dir in stateDirectories { try? FileManager.default.removeItem(atPath: dir) }
        stateDirectories = []
    }

    private func makeStateDirectory() -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("torio-\(UUID().uuidString.prefix(8))").path
        stateDirectories.append(dir)
        return dir
    }

    private func startTor(extra: [String] = [], onBootstrap: @escaping @Sendable (BootstrapStatus) -> Void = { _ in })
        async throws -> ManagedTor {
        guard (try? ManagedTor.resolveTorPath(nil)) != nil else { throw XCTSkip("tor is not installed") }
        let configuration = ManagedTor.Configuration(
            stateDirectory: makeStateDirectory(),
            extraTorrcLines: ["DisableNetwork 1", "Log notice stdout"] + extra,
            startTimeout: .seconds(30), stopTimeout: .seconds(10))
        let tor = try await ManagedTor.start(configuration, onBootstrap: onBootstrap)
        started.append(tor)
        return tor
    }

    /// Collects events until `done` says so or `seconds` pass.
    private func collect(_ events: AsyncStream<TorEvent>, seconds: Double,
                         until done: @escaping @Sendable ([TorEvent]) -> Bool) async -> [TorEvent] {
        await withTaskGroup(of: [TorEvent]?.self) { group in
            group.addTask {
                var seen: [TorEvent] = []
                for await event in events {
                    seen.append(event)
                    if done(seen) { break }
                }
                return seen
            }
            group.addTask {
                try? await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first ?? []
        }
    }

    // MARK: - Connection

    func testConnectionAuthenticatesWithSafeCookieReadFromTheFileTorNames() async throws {
        let tor = try await startTor()
        let connection = try await TorControlConnection.connect(to: tor.controlEndpoint, options: .init(timeout: .seconds(10)))
        defer { Task { await connection.close() } }
        XCTAssertEqual(connection.authMethod, .safeCookie)
        XCTAssertEqual(connection.protocolInfo.cookieFile.map { URL(fileURLWithPath: $0).lastPathComponent }, "control_auth_cookie")
        let info = try await connection.getInfo(["version"])
        XCTAssertNotNil(info["version"]?.range(of: #"^\d+\.\d+\.\d+"#, options: .regularExpression), "\(info.entries)")
        XCTAssertEqual(tor.connection.authMethod, .safeCookie)
    }

    func testConnectionWorksOverAUnixSocket() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("torsock-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        stateDirectories.append(dir)
        let socket = dir + "/control.sock"
        _ = try await startTor(extra: ["ControlSocket \(socket)"])
        let connection = try await TorControlConnection.connect(to: .unix(path: socket), options: .init(timeout: .seconds(10)))
        defer { Task { await connection.close() } }
        XCTAssertEqual(connection.authMethod, .safeCookie)
        let info = try await connection.getInfo(["version"])
        XCTAssertNotNil(info["version"])
    }

    func testEventsArriveWhileCommandsAreInFlightAndRepliesStayInOrder() async throws {
        let tor = try await startTor()
        let connection = try await TorControlConnection.connect(to: tor.controlEndpoint, options: .init(timeout: .seconds(10)))
        defer { Task { await connection.close() } }
        try await connection.send(.setEvents(["STATUS_CLIENT", "CONF_CHANGED", "SIGNAL"]))

        // Fire several commands at once: SETCONF and SIGNAL each raise an event (control-spec 4.1.18,
        // 4.1.22) while the other commands still wait for their replies.
        async let conf = connection.send(.setConf([(key: "MaxCircuitDirtiness", value: "1234")]))
        async let signal = connection.send(.signal(.newnym))
        async let read = connection.getInfo(["config/names"])
        async let dirty = connection.send(.getConf(["MaxCircuitDirtiness"]))
        let (confReply, signalReply, names, dirtyReply) = try await (conf, signal, read, dirty)
        XCTAssertTrue(confReply.isSuccess && signalReply.isSuccess)
        XCTAssertNotNil(names["config/names"])
        let dirtiness = try GetConfResult(reply: dirtyReply).values("MaxCircuitDirtiness").first ?? nil
        // `async let` sends in no fixed order: GETCONF sees the new value or tor's default (600 s).
        XCTAssertTrue(["1234", "600"].contains(dirtiness ?? ""), "GETCONF answered \(String(describing: dirtiness))")

        let events = await collect(connection.events, seconds: 10) { seen in
            seen.contains { if case .other("CONF_CHANGED", _) = $0 { return true } else { return false } }
                && seen.contains { if case .other("SIGNAL", _) = $0 { return true } else { return false } }
        }
        let keywords = events.map { event -> String in
            if case let .other(keyword, _) = event { return keyword }
            return "\(event)"
        }
        XCTAssertTrue(keywords.contains("CONF_CHANGED"), "events: \(keywords)")
        XCTAssertTrue(keywords.contains("SIGNAL"), "events: \(keywords)")
        if let changed = events.first(where: { if case .other("CONF_CHANGED", _) = $0 { return true } else { return false } }),
           case let .other(_, reply) = changed {
            XCTAssertTrue(reply.description.contains("MaxCircuitDirtiness=1234"), reply.description)
        }
    }

    func testAddOnionReturnsAServiceIDAndDelOnionRemovesIt() async throws {
        let tor = try await startTor()
        let connection = tor.connection
        let added = try AddOnionResult(reply: await connection.send(
            .addOnion(key: .newED25519V3, flags: [.detach], ports: [OnionPort(virtualPort: 80, target: "127.0.0.1:9")])))
        XCTAssertEqual(added.serviceID.count, 56)
        var detached = try await connection.getInfo(["onions/detached"])
        XCTAssertTrue(detached["onions/detached"]?.contains(added.serviceID) ?? false, "\(detached.entries)")

        try await connection.send(.delOnion(serviceID: added.serviceID))
        detached = try await connection.getInfo(["onions/detached"])
        XCTAssertFalse(detached["onions/detached"]?.contains(added.serviceID) ?? false, "\(detached.entries)")
        do {
            try await connection.send(.delOnion(serviceID: added.serviceID))
            XCTFail("deleting a removed service succeeded")
        } catch let error as TorReplyError {
            XCTAssertEqual(error.code, 552, "\(error)")
            XCTAssertEqual(error.command, "DEL_ONION")
        }
    }

    func testTorPublishesAnIdentityWeMadeUnderTheAddressWeComputed() async throws {
        let tor = try await startTor()
        let identity = OnionIdentity.generate()
        let clientKey = Base32Text.encode([UInt8](repeating: 5, count: 32))
        let added = try AddOnionResult(reply: await tor.connection.send(
            .addOnion(key: identity.addOnionKey, flags: [.detach, .v3Auth],
                      ports: [OnionPort(virtualPort: 443, target: "127.0.0.1:9")], clientAuthV3: [clientKey])))
        XCTAssertEqual(added.serviceID, identity.serviceID)
        XCTAssertNil(added.privateKey, "tor echoed a key it was given")
        // The same key again while the first is published: tor refuses the collision.
        do {
            try await tor.connection.send(.addOnion(key: identity.addOnionKey, flags: [.detach],
                                                    ports: [OnionPort(virtualPort: 443, target: "127.0.0.1:9")]))
            XCTFail("a second ADD_ONION with the same key succeeded")
        } catch let error as TorReplyError {
            XCTAssertTrue(error.message.lowercased().contains("collision"), "\(error)")
        }
        try await tor.connection.send(.delOnion(serviceID: identity.serviceID))
    }

    func testRefusedCommandThrowsTypedErrorWithTorsTextAndTheConnectionGoesOn() async throws {
        let tor = try await startTor()
        do {
            _ = try await tor.connection.getInfo(["no-such-key"])
            XCTFail("GETINFO of an unknown key succeeded")
        } catch let error as TorReplyError {
            XCTAssertEqual(error.code, 552)
            XCTAssertEqual(error.kind, .unrecognizedEntity)
            XCTAssertTrue(error.message.contains("no-such-key"), error.message)
            XCTAssertTrue("\(error)".hasPrefix("tor refused GETINFO: 552 "), "\(error)")
        }
        let raw = try await tor.connection.send(.getInfo(["no-such-key"]), requireSuccess: false)
        XCTAssertEqual(raw.status, 552)
        let info = try await tor.connection.getInfo(["version"])
        XCTAssertNotNil(info["version"])
    }

    func testCommandsAfterCloseFailWithATypedConnectionError() async throws {
        let tor = try await startTor()
        let connection = try await TorControlConnection.connect(to: tor.controlEndpoint, options: .init(timeout: .seconds(10)))
        await connection.close()
        XCTAssertFalse(connection.isActive)
        do {
            try await connection.send(.getInfo(["version"]))
            XCTFail("a command on a closed connection succeeded")
        } catch let error as TorControlError {
            XCTAssertEqual(error.command, "GETINFO", "\(error)")
        }
        // The events stream finishes with the connection, so a reader is never left hanging.
        let events = await collect(connection.events, seconds: 5) { _ in false }
        XCTAssertTrue(events.isEmpty)
    }

    func testConnectingWhereNothingListensFailsWithConnectFailed() async throws {
        // Bind a port and close it again, so nothing listens there.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length); return getsockname(fd, $0, &length) }
        }
        let port = Int(UInt16(bigEndian: address.sin_port))
        Glibc.close(fd)
        do {
            _ = try await TorControlConnection.connect(to: .tcp(host: "127.0.0.1", port: port), options: .init(timeout: .seconds(5)))
            XCTFail("connected to a closed port")
        } catch let error as TorControlError {
            guard case .connectFailed = error.reason else { return XCTFail("\(error)") }
            XCTAssertTrue("\(error)".contains("127.0.0.1:\(port)"), "\(error)")
        }
    }

    // MARK: - Managed tor

    func testManagedTorWritesAPrivateTorrcReportsBootstrapAndLeavesNoProcess() async throws {
        let reports = ReportBox()
        let tor = try await startTor(onBootstrap: { reports.append($0) })
        let mode = try FileManager.default.attributesOfItem(atPath: tor.torrcPath)[.posixPermissions] as? Int
        XCTAssertEqual(mode, 0o600)
        let torrc = try String(contentsOfFile: tor.torrcPath, encoding: .utf8)
        XCTAssertTrue(torrc.contains("__OwningControllerProcess \(getpid())"), torrc)
        XCTAssertTrue(torrc.contains("SocksPort auto IsolateSOCKSAuth ExtendedErrors"), torrc)
        XCTAssertTrue(torrc.hasSuffix("DisableNetwork 1\nLog notice stdout\n"), torrc)

        // GETINFO status/bootstrap-phase is reported at once (no network: still at the start).
        XCTAssertFalse(reports.values.isEmpty)
        XCTAssertFalse(reports.values.first?.isComplete ?? true)
        // TAKEOWNERSHIP replaced the PID watch: __OwningControllerProcess is back to its default.
        let owner = try GetConfResult(reply: await tor.connection.send(.getConf(["__OwningControllerProcess"])))
        XCTAssertEqual(owner.values("__OwningControllerProcess").compactMap { $0 }, [], "\(owner.entries)")

        let pid = tor.pid
        XCTAssertEqual(kill(pid, 0), 0, "tor \(pid) is not running")
        XCTAssertTrue(tor.isRunning)
        // tor exits on SIGTERM; ending by SIGKILL means SIGTERM was lost, e.g. blocked in the
        // signal mask tor inherited from an async thread.
        await tor.shutdown()
        XCTAssertFalse(tor.wasKilled, "tor did not exit on SIGTERM and had to be killed")
        started.removeAll()
        XCTAssertFalse(tor.isRunning)
        XCTAssertEqual(kill(pid, 0), -1, "tor \(pid) still exists after shutdown")
        XCTAssertEqual(errno, ESRCH)
        XCTAssertFalse(tor.connection.isActive)
    }

    func testManagedTorThatExitsReportsTorsOwnWords() async throws {
        do {
            _ = try await startTor(extra: ["NoSuchOptionForSotto 1"])
            XCTFail("tor started with an unknown option")
        } catch let error as ManagedTorError {
            guard case let .exited(_, log) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(log.contains("NoSuchOptionForSotto"), "log: \(log)")
        }
    }

    // MARK: - Pure helpers

    func testControlPortFileParsesTCPAndUnixLines() {
        XCTAssertEqual(ManagedTor.parseControlPortFile("PORT=127.0.0.1:40123\n"), .tcp(host: "127.0.0.1", port: 40123))
        XCTAssertEqual(ManagedTor.parseControlPortFile("PORT=[::1]:9051\n"), .tcp(host: "::1", port: 9051))
        XCTAssertEqual(ManagedTor.parseControlPortFile("UNIX_PORT=/run/tor/control\n"), .unix(path: "/run/tor/control"))
        XCTAssertNil(ManagedTor.parseControlPortFile(""))
        XCTAssertNil(ManagedTor.parseControlPortFile("PORT=127.0.0.1:"))
        XCTAssertNil(ManagedTor.parseControlPortFile("PORT=127.0.0.1:notaport"))
    }

    func testSocksListenerIsTheFirstQuotedAddress() {
        XCTAssertEqual(ManagedTor.firstListener(#""127.0.0.1:9050" "[::1]:9050""#), "127.0.0.1:9050")
        XCTAssertNil(ManagedTor.firstListener(""))
        XCTAssertNil(ManagedTor.firstListener(#""unterminated"#))
    }

    func testTorrcRefusesExtraLinesWithLineBreaksAndQuotesPaths() throws {
        var configuration = ManagedTor.Configuration(stateDirectory: "/tmp/with \"space\"")
        let text = try ManagedTor.torrcText(configuration, ownerPID: 42)
        XCTAssertTrue(text.contains(#"DataDirectory "/tmp/with \"space\"/tor-data""#), text)
        XCTAssertTrue(text.contains("__OwningControllerProcess 42"), text)
        configuration.extraTorrcLines = ["DisableNetwork 1\nControlPort 9051"]
        XCTAssertThrowsError(try ManagedTor.torrcText(configuration, ownerPID: 42)) {
            XCTAssertEqual($0 as? ManagedTorError, .invalidTorrcLine("DisableNetwork 1\nControlPort 9051"))
        }
    }
}

private final class ReportBox: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [BootstrapStatus] = []
    func append(_ status: BootstrapStatus) { lock.lock(); stored.append(status); lock.unlock() }
    var values: [BootstrapStatus] { lock.lock(); defer { lock.unlock() }; return stored }
}
