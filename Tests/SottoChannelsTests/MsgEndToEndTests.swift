import Foundation
import SottoChannels
import SottoCoAP
import XCTest

/// `sotto msg send|recv` as a user runs them, against an in-process `CoAPServer` on 127.0.0.1
/// whose identity callback is a `ChannelIdentityResolver`: derived identities are recognised
/// without a table, envelopes go through the real mailbox, and bad ones are reported one by one.
///
/// Needs the test target to depend on "SottoCoAP" and "sotto" (for the binary next to the bundle).
final class MsgEndToEndTests: XCTestCase {
    private var scratch: URL!
    private var server: CoAPServer?
    private let secret = (0..<32).map { UInt8($0 * 3 & 0xFF) }
    private let strangerSecret = [UInt8](repeating: 0x77, count: 32)

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("sotto-msg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    }

    override func tearDown() async throws {
        await server?.stop()
        server = nil
        if let scratch { try? FileManager.default.removeItem(at: scratch) }
    }

    private func channel(_ mode: IdentityMode, secret: [UInt8]? = nil) throws -> Channel {
        try Channel(name: "friends", secret: secret ?? self.secret, identityMode: mode, epochSeconds: 3600)
    }

    /// Starts the server with the resolver for `channels`; returns its port.
    private func startServer(_ channels: [Channel]) async throws -> UInt16 {
        let resolver = ChannelIdentityResolver(channels: channels)
        let configuration = CoAPServerConfiguration(
            dtlsListen: [CoAPListenAddress(host: "127.0.0.1", port: 0)], pskKeys: [:],
            identityResolver: resolver.keyLookup(now: { Date().timeIntervalSince1970 }),
            databasePath: scratch.appendingPathComponent("messages.sqlite").path)
        let server = try await CoAPServer(configuration: configuration)
        self.server = server
        return try XCTUnwrap(server.endpoints.first?.address.port)
    }

    private func writeConfig(port: UInt16, mode: IdentityMode) throws -> String {
        let path = scratch.appendingPathComponent("client-\(mode.rawValue).toml").path
        let text = """
        state_dir = "\(scratch.appendingPathComponent("state").path)"

        [[channel]]
        name = "friends"
        secret = "\(Data(secret).base64EncodedString())"
        identity = "\(mode.rawValue)"
        server = "coaps://127.0.0.1:\(port)"
        sender = "alice"
        """
        FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600])
        return path
    }

    private struct Outcome {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    private func sotto(_ arguments: [String], limit: Double = 30) throws -> Outcome {
        let executable = Bundle.main.bundleURL.appendingPathComponent("sotto")
        guard FileManager.default.isExecutableFile(atPath: executable.path) else {
            throw XCTSkip("no sotto executable at \(executable.path); build the package first")
        }
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        let out = scratch.appendingPathComponent("out-\(UUID().uuidString)")
        let err = scratch.appendingPathComponent("err-\(UUID().uuidString)")
        FileManager.default.createFile(atPath: out.path, contents: nil)
        FileManager.default.createFile(atPath: err.path, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: out)
        process.standardError = try FileHandle(forWritingTo: err)
        try process.run()
        let deadline = Date().addingTimeInterval(limit)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            XCTFail("sotto \(arguments.joined(separator: " ")) took more than \(limit) s; killed")
        }
        return Outcome(status: process.terminationStatus,
                       stdout: (try? String(contentsOf: out, encoding: .utf8)) ?? "",
                       stderr: (try? String(contentsOf: err, encoding: .utf8)) ?? "")
    }

    /// POSTs raw bytes to a box with `channel`'s credential, as a client of the mailbox would.
    private func post(_ envelope: [UInt8], box: String, port: UInt16, channel: Channel,
                      timeout: Duration = .seconds(5)) async throws -> CoAPResponse {
        let credential = PrivateIdentity.credential(for: channel, at: Date().timeIntervalSince1970)
        let client = try await CoAPClient(host: "127.0.0.1", port: port,
                                          security: try CoAPSecurity.psk(identity: credential.identity, key: credential.key),
                                          timeout: timeout)
        do {
            let response = try await client.request(.post, path: "/mb/\(box)", payload: envelope)
            await client.close()
            return response
        } catch {
            await client.close()
            throw error
        }
    }

    func testMessageSentWithEachIdentityModeIsReceivedWithItsSender() async throws {
        let channels = try IdentityMode.allCases.map { try channel($0) }
        let port = try await startServer(channels)
        for mode in IdentityMode.allCases {
            let config = try writeConfig(port: port, mode: mode)
            let sent = try sotto(["msg", "send", "--config", config, "--channel", "friends", "--to", "inbox-\(mode.rawValue)",
                                  "--text", "hello over \(mode.rawValue)"])
            XCTAssertEqual(sent.status, 0, sent.stderr)
            XCTAssertTrue(sent.stderr.contains("stored as /mb/inbox-\(mode.rawValue)/"), sent.stderr)
            let received = try sotto(["msg", "recv", "--config", config, "--channel", "friends", "--box", "inbox-\(mode.rawValue)",
                                      "--delete"])
            XCTAssertEqual(received.status, 0, received.stderr)
            XCTAssertEqual(received.stdout, "alice: hello over \(mode.rawValue)\n")
            XCTAssertTrue(received.stderr.contains("1 message(s) opened, 0 rejected, 1 deleted"), received.stderr)
            // Deleted: the box is empty now.
            let again = try sotto(["msg", "recv", "--config", config, "--channel", "friends", "--box", "inbox-\(mode.rawValue)"])
            XCTAssertEqual(again.status, 0, again.stderr)
            XCTAssertEqual(again.stdout, "")
        }
    }

    func testRecvReportsTamperedReplayedAndForeignEnvelopesEachOnItsOwnLine() async throws {
        let friends = try channel(.perChannel)
        let port = try await startServer([friends])
        let config = try writeConfig(port: port, mode: .perChannel)
        let now = Date().timeIntervalSince1970
        let good = try SealedEnvelope.seal(Array("the real one".utf8), sender: "bob", channel: friends, at: now)
        var tampered = good
        tampered[tampered.count - 20] ^= 0x01
        let stranger = try Channel(name: "friends", secret: strangerSecret, identityMode: .perChannel, epochSeconds: 3600)
        let foreign = try SealedEnvelope.seal(Array("not for you".utf8), sender: "eve", channel: stranger, at: now)
        for envelope in [good, tampered, foreign, good] {
            let response = try await post(envelope, box: "mixed", port: port, channel: friends)
            XCTAssertEqual(response.code, .created)
        }
        let received = try sotto(["msg", "recv", "--config", config, "--channel", "friends", "--box", "mixed", "--delete"])
        XCTAssertEqual(received.status, 1, received.stderr)
        XCTAssertEqual(received.stdout, "bob: the real one\n")
        XCTAssertTrue(received.stderr.contains("envelope 2 in box mixed rejected: tampered"), received.stderr)
        XCTAssertTrue(received.stderr.contains("envelope 3 in box mixed rejected: not sealed for channel 'friends'"), received.stderr)
        XCTAssertTrue(received.stderr.contains("envelope 4 in box mixed rejected: replayed"), received.stderr)
        XCTAssertTrue(received.stderr.contains("1 message(s) opened, 3 rejected, 2 deleted"), received.stderr)
        XCTAssertFalse(received.stderr.contains("eve"), "a foreign envelope's sender stays sealed")

        // The replay record survives the run: the same envelope posted again is still a replay.
        _ = try await post(good, box: "mixed2", port: port, channel: friends)
        let later = try sotto(["msg", "recv", "--config", config, "--channel", "friends", "--box", "mixed2"])
        XCTAssertEqual(later.status, 1)
        XCTAssertTrue(later.stderr.contains("rejected: replayed"), later.stderr)
        let record = scratch.appendingPathComponent("state/channels/friends.seen").path
        let mode = try FileManager.default.attributesOfItem(atPath: record)[.posixPermissions] as? Int
        XCTAssertEqual(mode, 0o600)
    }

    func testServerRefusesIdentitiesOfUnknownChannelsAndTheClientSaysSo() async throws {
        let port = try await startServer([try channel(.perChannel)])
        let strangerConfig = scratch.appendingPathComponent("stranger.toml").path
        let text = """
        [[channel]]
        name = "friends"
        secret = "\(Data(strangerSecret).base64EncodedString())"
        server = "coaps://127.0.0.1:\(port)"
        sender = "eve"
        """
        FileManager.default.createFile(atPath: strangerConfig, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600])
        let started = Date()
        let refused = try sotto(["msg", "send", "--config", strangerConfig, "--channel", "friends", "--to", "inbox",
                                 "--text", "let me in", "--timeout", "2"])
        XCTAssertEqual(refused.status, 2, refused.stderr)
        XCTAssertTrue(refused.stderr.hasPrefix("sotto msg: "), refused.stderr)
        XCTAssertTrue(refused.stderr.contains("DTLS") || refused.stderr.contains("handshake"), refused.stderr)
        XCTAssertLessThan(Date().timeIntervalSince(started), 15)
    }

    /// Port hopping with 2-second epochs: the server opens and closes ports as the schedule says,
    /// and a client that sends continuously (a new DTLS session per request, on the port of the
    /// moment) across three boundaries loses no request.
    func testClientFollowingTheHopScheduleLosesNoRequestAcrossBoundaries() async throws {
        let friends = try channel(.perChannel)
        let first = 42000 + Int(getpid() % 400) * 20
        let hop = try PortHopSchedule(secret: [UInt8](repeating: 0x3C, count: 32), range: first...(first + 19), epochSeconds: 2)
        let resolver = ChannelIdentityResolver(channels: [friends])
        let start = Date().timeIntervalSince1970
        let configuration = CoAPServerConfiguration(
            dtlsListen: hop.listeningPorts(at: start).map { CoAPListenAddress(host: "127.0.0.1", port: $0) }, pskKeys: [:],
            identityResolver: resolver.keyLookup(now: { Date().timeIntervalSince1970 }),
            databasePath: scratch.appendingPathComponent("messages.sqlite").path)
        let server = try await CoAPServer(configuration: configuration)
        self.server = server

        // The server side of hopping: at each boundary, open the next epoch's port, close the old one.
        let driver = Task {
            var changes = 0
            while !Task.isCancelled {
                let now = Date().timeIntervalSince1970
                try? await Task.sleep(for: .milliseconds(Int((hop.nextChange(after: now) - now) * 1000) + 1))
                if Task.isCancelled { break }
                let listening = Set(server.endpoints.filter(\.secure).map(\.address.port))
                let step = hop.changes(from: listening, at: Date().timeIntervalSince1970)
                for port in step.open { _ = try? await server.addEndpoint(CoAPListenAddress(host: "127.0.0.1", port: port)) }
                for port in step.close {
                    if let endpoint = server.endpoints.first(where: { $0.secure && $0.address.port == port }) {
                        await server.removeEndpoint(endpoint)
                    }
                }
                changes += 1
            }
            return changes
        }

        var sent = 0
        var failures: [String] = []
        var portsUsed = Set<UInt16>()
        let end = start + 7
        while Date().timeIntervalSince1970 < end && sent < 500 {
            let now = Date().timeIntervalSince1970
            let port = hop.clientPort(at: now)
            portsUsed.insert(port)
            let envelope = try SealedEnvelope.seal(Array("tick \(sent)".utf8), sender: "alice", channel: friends, at: now)
            do {
                let response = try await post(envelope, box: "hops", port: port, channel: friends, timeout: .seconds(2))
                if response.code != .created { failures.append("request \(sent) on \(port): \(response.code)") }
            } catch {
                failures.append("request \(sent) on \(port): \(error)")
            }
            sent += 1
            try await Task.sleep(for: .milliseconds(50))
        }
        driver.cancel()
        let boundaries = await driver.value
        XCTAssertEqual(failures, [])
        XCTAssertGreaterThanOrEqual(boundaries, 3)
        XCTAssertGreaterThanOrEqual(portsUsed.count, 2, "the client followed the schedule to other ports")
        XCTAssertGreaterThan(sent, 20)
        print("hopping: \(sent) requests over \(portsUsed.count) ports and \(boundaries) boundaries, \(failures.count) lost")
    }
}
