import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif
@testable import SottoCoAP

/// `sotto coap-server` as a user runs it, against libcoap's clients (OpenSSL and GnuTLS builds)
/// and `sotto coap`. libcoap's coap-client exits 0 even when it fails, so these tests look at
/// what it printed.
final class CoAPServerInteropTests: XCTestCase {
    private var folder: URL!
    private var keyFile: URL!
    private var database: URL!
    private var server: SottoServerProcess?

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("sotto-coapserver-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        keyFile = folder.appendingPathComponent("key.psk")
        FileManager.default.createFile(atPath: keyFile.path, contents: Data(SottoServerProcess.key.utf8),
                                       attributes: [.posixPermissions: 0o600])
        database = folder.appendingPathComponent("messages.sqlite")
    }

    override func tearDown() {
        server?.stop()
        if let folder { try? FileManager.default.removeItem(at: folder) }
    }

    private func start(plain: Bool = false, extra: [String] = []) throws -> SottoServerProcess {
        let started = try SottoServerProcess(folder: folder, keyFile: keyFile, database: database, plain: plain, extra: extra)
        server = started
        return started
    }

    private func dtls(_ path: String, _ server: SottoServerProcess) -> String { "coaps://127.0.0.1:\(server.dtlsPort)\(path)" }

    /// coap-client with the test PSK; -B bounds its wait.
    private func coapClient(_ tool: String, _ arguments: [String], key: String = SottoServerProcess.key,
                            identity: String = SottoServerProcess.identity, wait: Int = 5) throws -> ToolOutcome {
        try runTool(try installedTool(tool), ["-u", identity, "-k", key, "-B", String(wait)] + arguments, limit: Double(wait + 15),
                    folder: folder)
    }

    private func sotto(_ arguments: [String]) throws -> ToolOutcome {
        try runTool(try sottoExecutable(), arguments, folder: folder)
    }

    private var sottoPSK: [String] { ["--psk-identity", SottoServerProcess.identity, "--psk-key", SottoServerProcess.key] }

    // MARK: - libcoap clients

    func testLibcoapClientsPostGetAndDeleteOverDTLS() throws {
        let server = try start()
        for tool in ["coap-client-openssl", "coap-client-gnutls"] {
            let box = "/mb/\(tool)"
            let post = try coapClient(tool, ["-m", "post", "-e", "hello from \(tool)", "-v", "6", dtls(box, server)])
            XCTAssertTrue(post.text.contains("2.01"), "\(tool): \(post.text)\(post.stderr)")
            XCTAssertTrue(post.text.contains("Location-Path:"), post.text)
            let get = try coapClient(tool, ["-m", "get", "-o", folder.appendingPathComponent("\(tool).bin").path, dtls(box, server)])
            XCTAssertEqual(get.status, 0)
            let body = try Data(contentsOf: folder.appendingPathComponent("\(tool).bin"))
            let envelopes = try EnvelopeFraming.decode(Array(body))
            XCTAssertEqual(envelopes.map { String(decoding: $0.envelope, as: UTF8.self) }, ["hello from \(tool)"])
            let delete = try coapClient(tool, ["-m", "delete", "-v", "6", dtls("\(box)?id=\(envelopes[0].id)", server)])
            XCTAssertTrue(delete.text.contains("2.02"), delete.text)
            let after = try coapClient(tool, ["-m", "get", "-v", "6", dtls(box, server)])
            XCTAssertTrue(after.text.contains("c:2.05"), after.text)
            XCTAssertFalse(after.text.contains("hello from"), after.text)
        }
    }

    func testBlockwiseEnvelopesTravelBothWays() throws {
        let server = try start()
        let payload = (0..<3000).map { _ in UInt8.random(in: 0x41...0x5A) }
        let file = folder.appendingPathComponent("big.txt")
        try Data(payload).write(to: file)
        for tool in ["coap-client-openssl", "coap-client-gnutls"] {
            let box = "/mb/big-\(tool)"
            let post = try coapClient(tool, ["-m", "post", "-b", "512", "-f", file.path, "-v", "6", dtls(box, server)])
            XCTAssertTrue(post.text.contains("Block1"), "the upload went block-wise: \(post.text.prefix(2000))")
            XCTAssertTrue(post.text.contains("2.01"), String(post.text.suffix(2000)))
            let output = folder.appendingPathComponent("big-\(tool).bin")
            let get = try coapClient(tool, ["-m", "get", "-b", "512", "-o", output.path, "-v", "6", dtls(box, server)])
            XCTAssertTrue(get.text.contains("Block2"), "the download went block-wise")
            let envelopes = try EnvelopeFraming.decode(Array(try Data(contentsOf: output)))
            XCTAssertEqual(envelopes.count, 1)
            XCTAssertEqual(envelopes.first?.envelope, payload)
        }
    }

    func testObserveGetsANotificationForEachPost() throws {
        let server = try start()
        XCTAssertEqual(try sotto(["coap", "post", dtls("/mb/watched", server), "--payload", "first"] + sottoPSK).status, 0)
        // coap-client observes for 6 s (-s) in the background while two POSTs arrive.
        let observer = Process()
        observer.executableURL = URL(fileURLWithPath: try installedTool("coap-client-openssl"))
        observer.arguments = ["-u", SottoServerProcess.identity, "-k", SottoServerProcess.key, "-s", "6", "-v", "6",
                              dtls("/mb/watched", server)]
        let log = folder.appendingPathComponent("observe.log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        observer.standardOutput = try FileHandle(forWritingTo: log)
        observer.standardError = observer.standardOutput
        try observer.run()
        defer {
            if observer.isRunning { kill(observer.processIdentifier, SIGKILL) }
            observer.waitUntilExit()
        }
        usleep(1_500_000)
        XCTAssertEqual(try sotto(["coap", "post", dtls("/mb/watched", server), "--payload", "second"] + sottoPSK).status, 0)
        usleep(300_000)
        XCTAssertEqual(try sotto(["coap", "post", dtls("/mb/watched", server), "--payload", "third"] + sottoPSK).status, 0)
        for _ in 0..<1000 where observer.isRunning { usleep(20_000) }
        let text = String(decoding: (try? Data(contentsOf: log)) ?? Data(), as: UTF8.self)
        let notifications = text.components(separatedBy: "\n").filter { $0.contains("c:2.05") && $0.contains("Observe:") }
        XCTAssertEqual(notifications.count, 3, "the first response and two notifications: \(text)")
        XCTAssertTrue(text.contains("third"), text)
    }

    func testAWrongKeyOrAnUnknownIdentityIsRefused() throws {
        let server = try start()
        XCTAssertEqual(try sotto(["coap", "post", dtls("/mb/secret", server), "--payload", "private"] + sottoPSK).status, 0)
        let wrongKey = try coapClient("coap-client-openssl", ["-m", "get", "-v", "5", dtls("/mb/secret", server)], key: "wrong-key", wait: 3)
        XCTAssertFalse(wrongKey.text.contains("private"), wrongKey.text)
        XCTAssertTrue((wrongKey.text + wrongKey.stderr).lowercased().contains("cannot send") ||
                      (wrongKey.text + wrongKey.stderr).contains("timeout"), wrongKey.text + wrongKey.stderr)
        let unknown = try coapClient("coap-client-gnutls", ["-m", "get", "-v", "5", dtls("/mb/secret", server)], identity: "stranger", wait: 3)
        XCTAssertFalse(unknown.text.contains("private"), unknown.text)
        let sottoClient = try sotto(["coap", "get", dtls("/mb/secret", server), "--psk-identity", "stranger", "--psk-key",
                                     SottoServerProcess.key, "--timeout", "3"])
        XCTAssertEqual(sottoClient.status, 2)
        XCTAssertTrue(sottoClient.stderr.contains("DTLS handshake"), sottoClient.stderr)
        XCTAssertTrue(server.logText.contains("unknown PSK identity"), server.logText)
        XCTAssertFalse(server.logText.contains(SottoServerProcess.key), "the log never shows a key")
        XCTAssertFalse(server.logText.contains("stranger"), "the log does not show identities")
        XCTAssertTrue(server.isRunning)
    }

    func testStoredEnvelopesSurviveARestart() throws {
        var server = try start()
        XCTAssertEqual(try sotto(["coap", "post", dtls("/mb/durable", server), "--payload", "kept"] + sottoPSK).status, 0)
        XCTAssertEqual(server.stop(), 0, "SIGTERM is a clean stop: \(server.logText)")
        XCTAssertTrue(server.logText.contains("stopped after"), server.logText)
        server = try start()
        let get = try sotto(["coap", "get", dtls("/mb/durable", server)] + sottoPSK)
        XCTAssertEqual(get.status, 0, get.stderr)
        XCTAssertEqual(try EnvelopeFraming.decode(Array(get.stdout)).map { String(decoding: $0.envelope, as: UTF8.self) }, ["kept"])
    }

    func testMalformedRequestsGetTheirCodesAndTheServerKeepsServing() throws {
        let server = try start(plain: true, extra: ["--max-envelope-bytes", "100"])
        let plainPort = try XCTUnwrap(server.plainPort)
        // Garbage datagrams: not CoAP at all, a truncated header, a bad version, a token length of 9.
        for datagram: [UInt8] in [[0xFF, 0x00, 0x13], [0x40], [0x80, 0x01, 0x00, 0x01], [0x49, 0x01, 0x00, 0x01, 1, 2],
                                  Array(repeating: 0xAA, count: 1200)] {
            try sendUDP(datagram, port: plainPort)
        }
        let plain = "coap://127.0.0.1:\(plainPort)"
        let client = try installedTool("coap-client-openssl")
        let badName = try runTool(client, ["-B", "3", "-m", "get", "-v", "6", "\(plain)/mb/bad%20name"], folder: folder)
        XCTAssertTrue(badName.text.contains("4.00"), badName.text)
        XCTAssertTrue(badName.text.contains("bad box name"), badName.text)
        let unknown = try runTool(client, ["-B", "3", "-m", "get", "-v", "6", "\(plain)/elsewhere"], folder: folder)
        XCTAssertTrue(unknown.text.contains("4.04"), unknown.text)
        let wrongMethod = try runTool(client, ["-B", "3", "-m", "put", "-e", "x", "-v", "6", "\(plain)/mb/alice"], folder: folder)
        XCTAssertTrue(wrongMethod.text.contains("4.05"), wrongMethod.text)
        let oversized = try sotto(["coap", "post", dtls("/mb/alice", server), "--payload", String(repeating: "x", count: 101)] + sottoPSK)
        XCTAssertEqual(oversized.status, 1)
        XCTAssertTrue(oversized.stderr.contains("4.13"), oversized.stderr)
        let wellKnownPost = try runTool(client, ["-B", "3", "-m", "post", "-e", "x", "-v", "6", "\(plain)/.well-known/core"], folder: folder)
        XCTAssertTrue(wellKnownPost.text.contains("4.05"), wellKnownPost.text)
        // Still serving, both ports.
        XCTAssertTrue(server.isRunning)
        XCTAssertEqual(try sotto(["coap", "post", dtls("/mb/alice", server), "--payload", "fine"] + sottoPSK).status, 0)
        let get = try runTool(client, ["-B", "3", "-m", "get", "\(plain)/mb/alice"], folder: folder)
        XCTAssertTrue(get.text.contains("fine"), get.text)
    }

    func testWellKnownCoreListsTheMailboxesButNoBoxNames() throws {
        let server = try start()
        XCTAssertEqual(try sotto(["coap", "post", dtls("/mb/private-name", server), "--payload", "x"] + sottoPSK).status, 0)
        let outcome = try sotto(["coap", "get", dtls("/.well-known/core", server)] + sottoPSK)
        XCTAssertEqual(outcome.status, 0, outcome.stderr)
        XCTAssertTrue(outcome.text.contains("</mb>;rt=\"sotto.mailbox\""), outcome.text)
        XCTAssertFalse(outcome.text.contains("private-name"), outcome.text)
    }

    // MARK: - sotto coap against sotto coap-server

    func testSottoCoapPostsGetsObservesAndDeletes() throws {
        let server = try start()
        let post = try sotto(["coap", "post", dtls("/mb/bob", server), "--payload", "one", "-v"] + sottoPSK)
        XCTAssertEqual(post.status, 0, post.stderr)
        XCTAssertTrue(post.stderr.contains("2.01 Created"), post.stderr)
        let many = try sotto(["coap", "post", dtls("/mb/bob", server), "--payload", "more", "--count", "20", "--json"] + sottoPSK)
        XCTAssertEqual(many.status, 0, many.stderr)
        XCTAssertTrue(many.text.contains("\"failures\":0"), many.text)
        let get = try sotto(["coap", "get", dtls("/mb/bob?limit=50", server)] + sottoPSK)
        let envelopes = try EnvelopeFraming.decode(Array(get.stdout))
        XCTAssertEqual(envelopes.count, 21)
        let ids = envelopes.map { String($0.id) }.joined(separator: ",")
        XCTAssertEqual(try sotto(["coap", "delete", dtls("/mb/bob?id=\(ids)", server)] + sottoPSK).status, 0)
        XCTAssertEqual(try sotto(["coap", "get", dtls("/mb/bob", server)] + sottoPSK).stdout, Data())
        let badName = try sotto(["coap", "get", dtls("/mb/.dot", server)] + sottoPSK)
        XCTAssertEqual(badName.status, 1)
        XCTAssertTrue(badName.stderr.contains("4.00 Bad Request: bad box name"), badName.stderr)
    }

    // MARK: - Helpers

    private func sendUDP(_ bytes: [UInt8], port: UInt16) throws {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw XCTSkip("no UDP socket") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let sent = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, bytes, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        XCTAssertEqual(sent, bytes.count)
    }
}
