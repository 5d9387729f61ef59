import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// `sotto coap ...` as a user runs it, against coap-server-openssl on 127.0.0.1.
final class CoAPCommandTests: XCTestCase {
    private var server: LibcoapServer!
    private var scratch: URL!

    override func setUpWithError() throws {
        server = try LibcoapServer()
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("sotto-coap-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    }

    override func tearDown() {
        server?.stop()
        if let scratch { try? FileManager.default.removeItem(at: scratch) }
    }

    private struct Outcome {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// The sotto binary next to the test bundle.
    private func sottoExecutable() throws -> URL {
        let url = Bundle.main.bundleURL.appendingPathComponent("sotto")
        guard FileManager.default.isExecutableFile(atPath: url.path) else {
            throw XCTSkip("no sotto executable at \(url.path); build the package first")
        }
        return url
    }

    /// Runs sotto with `arguments`, killing it by PID if it takes longer than `limit` seconds.
    private func sotto(_ arguments: [String], limit: Double = 30) throws -> Outcome {
        let process = Process()
        process.executableURL = try sottoExecutable()
        process.arguments = arguments
        let out = scratch.appendingPathComponent("stdout-\(UUID().uuidString)")
        let err = scratch.appendingPathComponent("stderr-\(UUID().uuidString)")
        FileManager.default.createFile(atPath: out.path, contents: nil)
        FileManager.default.createFile(atPath: err.path, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: out)
        process.standardError = try FileHandle(forWritingTo: err)
        try process.run()
        let deadline = Date().addingTimeInterval(limit)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            XCTFail("sotto \(arguments.joined(separator: " ")) ran longer than \(limit) s")
        }
        process.waitUntilExit()
        return Outcome(status: process.terminationStatus,
                       stdout: (try? String(contentsOf: out, encoding: .utf8)) ?? "",
                       stderr: (try? String(contentsOf: err, encoding: .utf8)) ?? "")
    }

    private var dtlsRoot: String { "coaps://127.0.0.1:\(server.dtlsPort)" }
    private var pskFlags: [String] { ["--psk-identity", "sotto-test", "--psk-key", server.key] }

    func testGetPrintsThePayloadAndExitsZero() throws {
        let outcome = try sotto(["coap", "get", "\(dtlsRoot)/"] + pskFlags)
        XCTAssertEqual(outcome.status, 0, outcome.stderr)
        XCTAssertTrue(outcome.stdout.contains("libcoap"))
    }

    func testCountFiftyGivesFiftyResponsesOverOneSession() throws {
        let outcome = try sotto(["coap", "get", "\(dtlsRoot)/time", "--count", "50", "--json"] + pskFlags)
        XCTAssertEqual(outcome.status, 0, outcome.stderr)
        let object = try JSONSerialization.jsonObject(with: Data(outcome.stdout.utf8)) as? [String: Any]
        XCTAssertEqual(object?["count"] as? Int, 50)
        XCTAssertEqual(object?["failures"] as? Int, 0)
        let p50 = try XCTUnwrap(object?["p50_ms"] as? Double)
        let p99 = try XCTUnwrap(object?["p99_ms"] as? Double)
        XCTAssertLessThanOrEqual(p50, p99)
    }

    func testCountRepeatsOverASingleDTLSHandshake() throws {
        let log = scratch.appendingPathComponent("server.log")
        let logged = try LibcoapServer(key: "one-session-key", log: log)
        let outcome = try sotto(["coap", "get", "coaps://127.0.0.1:\(logged.dtlsPort)/", "--count", "50", "--json",
                                 "--psk-identity", "sotto-test", "--psk-key", logged.key])
        logged.stop()
        XCTAssertEqual(outcome.status, 0, outcome.stderr)
        let text = try String(contentsOf: log, encoding: .utf8)
        // libcoap logs each event; 0x01de is COAP_EVENT_DTLS_CONNECTED (coap_event.h).
        XCTAssertEqual(text.components(separatedBy: "***EVENT: 0x01de").count - 1, 1, "one DTLS session for 50 requests")
        XCTAssertEqual(text.components(separatedBy: "***EVENT: 0x0000").count - 1, 1, "closed with close_notify at the end")
    }

    func testStatsGoToStandardError() throws {
        let outcome = try sotto(["coap", "get", "\(dtlsRoot)/", "--count", "5", "--stats"] + pskFlags)
        XCTAssertEqual(outcome.status, 0, outcome.stderr)
        XCTAssertTrue(outcome.stderr.hasPrefix("count 5, failures 0, round trip ms: p50 "), outcome.stderr)
    }

    func testPutThenGetWithAPayloadFileLargerThanABlock() throws {
        let body = String(repeating: "0123456789abcdef", count: 200) // 3200 bytes
        let file = scratch.appendingPathComponent("body.txt")
        try Data(body.utf8).write(to: file)
        let put = try sotto(["coap", "put", "\(dtlsRoot)/cli-large", "--payload-file", file.path] + pskFlags)
        XCTAssertEqual(put.status, 0, put.stderr)
        let get = try sotto(["coap", "get", "\(dtlsRoot)/cli-large"] + pskFlags)
        XCTAssertEqual(get.status, 0, get.stderr)
        XCTAssertEqual(get.stdout, body)
    }

    func testPostAndDeleteExitZeroAndAMissingResourceExitsOne() throws {
        XCTAssertEqual(try sotto(["coap", "post", "\(dtlsRoot)/cli-item", "--payload", "x"] + pskFlags).status, 0)
        XCTAssertEqual(try sotto(["coap", "delete", "\(dtlsRoot)/cli-item"] + pskFlags).status, 0)
        let missing = try sotto(["coap", "get", "\(dtlsRoot)/cli-item"] + pskFlags)
        XCTAssertEqual(missing.status, 1)
        XCTAssertTrue(missing.stderr.contains("4.04 Not Found"), missing.stderr)
    }

    func testObservePrintsOneLinePerNotification() throws {
        let outcome = try sotto(["coap", "observe", "\(dtlsRoot)/time", "--count", "2"] + pskFlags, limit: 15)
        XCTAssertEqual(outcome.status, 0, outcome.stderr)
        XCTAssertEqual(outcome.stdout.split(separator: "\n").count, 2, outcome.stdout)
    }

    func testAWrongKeyExitsTwoWithAClearMessageThatDoesNotShowTheKey() throws {
        let outcome = try sotto(["coap", "get", "\(dtlsRoot)/", "--psk-identity", "sotto-test",
                                 "--psk-key", "wrong-key-text", "--timeout", "1"], limit: 10)
        XCTAssertEqual(outcome.status, 2)
        XCTAssertTrue(outcome.stderr.contains("DTLS handshake with 127.0.0.1:\(server.dtlsPort)"), outcome.stderr)
        XCTAssertFalse(outcome.stderr.contains("wrong-key-text"))
    }

    func testAKeyFileReadableByOthersWorksButWarns() throws {
        let file = scratch.appendingPathComponent("psk")
        try Data("\(server.key)\n".utf8).write(to: file)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: file.path)
        let loose = try sotto(["coap", "get", "\(dtlsRoot)/", "--psk-identity", "i", "--psk-key-file", file.path])
        XCTAssertEqual(loose.status, 0, loose.stderr)
        XCTAssertTrue(loose.stderr.contains("chmod 600"), loose.stderr)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: file.path)
        let tight = try sotto(["coap", "get", "\(dtlsRoot)/", "--psk-identity", "i", "--psk-key-file", file.path])
        XCTAssertEqual(tight.status, 0, tight.stderr)
        XCTAssertEqual(tight.stderr, "")
    }

    func testMisuseIsReportedWithoutTryingTheNetwork() throws {
        let badURI = try sotto(["coap", "get", "coaps://127.0.0.1:0/"] + pskFlags)
        XCTAssertEqual(badURI.status, 2)
        XCTAssertTrue(badURI.stderr.contains("bad CoAP URI"), badURI.stderr)
        let noKey = try sotto(["coap", "get", "\(dtlsRoot)/"])
        XCTAssertEqual(noKey.status, 2)
        XCTAssertTrue(noKey.stderr.contains("--psk-identity"), noKey.stderr)
        let plainWithKey = try sotto(["coap", "get", "coap://127.0.0.1:\(server.port)/"] + pskFlags)
        XCTAssertEqual(plainWithKey.status, 2)
        XCTAssertTrue(plainWithKey.stderr.contains("use coaps://"), plainWithKey.stderr)
        let both = try sotto(["coap", "post", "\(dtlsRoot)/", "--payload", "a", "--payload-file", "/dev/null"] + pskFlags)
        XCTAssertNotEqual(both.status, 0)
        XCTAssertTrue(both.stderr.contains("not both"), both.stderr)
    }
}
