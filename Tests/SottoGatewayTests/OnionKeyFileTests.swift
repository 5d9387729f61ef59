import Foundation
import Logging
import NIOCore
import TorControl
import XCTest
@testable import SottoGateway

/// A service's onion key file (DESIGN.md: secrets are written 0600 and never logged): one line
/// of base64, the 32-byte Ed25519 seed, in a 0700 folder, never replaced once it exists.
final class OnionKeyFileTests: XCTestCase {
    private var folder = ""

    override func setUpWithError() throws {
        folder = NSTemporaryDirectory() + "sotto-onion-tests-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: folder)
    }

    private func mode(_ path: String) throws -> Int {
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        return try XCTUnwrap(attributes[.posixPermissions] as? Int)
    }

    private func contents(_ path: String) -> Data? {
        FileManager.default.contents(atPath: path)
    }

    private func write(_ text: String, to path: String, mode: Int = 0o600) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
    }

    func testANewKeyFileIsMode0600InANew0700FolderAndHoldsOneLineOfBase64Seed() throws {
        let path = folder + "/state/onion/coap.key"
        let address = try OnionKeyFile.createNew(at: path)
        XCTAssertEqual(try mode(path), 0o600)
        XCTAssertEqual(try mode(folder + "/state/onion"), 0o700)

        let text = try XCTUnwrap(contents(path).map { String(decoding: $0, as: UTF8.self) })
        XCTAssertTrue(text.hasSuffix("\n"), "one line")
        XCTAssertEqual(text.filter { $0 == "\n" }.count, 1, "one line")
        let seed = try XCTUnwrap(Data(base64Encoded: String(text.dropLast())), "not base64: \(text)")
        XCTAssertEqual(seed.count, 32)
        // The address is the one the seed stands for (rend-spec-v3 6).
        XCTAssertEqual(try OnionIdentity(seed: Array(seed)).address, address)
        XCTAssertTrue(address.hasSuffix(".onion"))
        XCTAssertEqual(address.count, 56 + ".onion".count)
    }

    func testLoadOrCreateMakesAKeyOnceAndGivesTheSameAddressOnEveryLoad() throws {
        let log = CapturedLog()
        let path = folder + "/onion/web.key"
        let created = try OnionKeyFile.loadOrCreate(path: path, logger: log.logger)
        XCTAssertEqual(try mode(path), 0o600)
        let bytes = try XCTUnwrap(contents(path))

        let reloaded = try OnionKeyFile.loadOrCreate(path: path, logger: log.logger)
        XCTAssertEqual(reloaded.address, created.address)
        XCTAssertEqual(reloaded.seed, created.seed)
        XCTAssertEqual(contents(path), bytes, "loading changed the file")

        // A key made by `createNew` (sotto keygen --onion) loads as the same address.
        let other = folder + "/onion/other.key"
        let address = try OnionKeyFile.createNew(at: other)
        XCTAssertEqual(try OnionKeyFile.loadOrCreate(path: other, logger: log.logger).address, address)
        XCTAssertNotEqual(address, created.address, "two new keys are two identities")

        // The creation is logged with the address, never with the key.
        XCTAssertTrue(log.messages.contains { $0.contains(path) && $0.contains(created.address) }, "\(log.messages)")
        log.assertNoSecret(of: created)
    }

    func testAnExistingFileIsNeverReplaced() throws {
        let path = folder + "/coap.key"
        let first = try OnionKeyFile.createNew(at: path)
        let bytes = try XCTUnwrap(contents(path))
        XCTAssertThrowsError(try OnionKeyFile.createNew(at: path)) { error in
            XCTAssertTrue("\(error)".contains(path), "\(error)")
            XCTAssertTrue("\(error)".contains("File exists"), "\(error)")
        }
        XCTAssertEqual(contents(path), bytes)
        XCTAssertEqual(try OnionKeyFile.loadOrCreate(path: path, logger: quietLogger).address, first)

        // Something else at the path (a folder) is not replaced either.
        let folderPath = folder + "/dir.key"
        try FileManager.default.createDirectory(atPath: folderPath, withIntermediateDirectories: true)
        XCTAssertThrowsError(try OnionKeyFile.loadOrCreate(path: folderPath, logger: quietLogger)) { error in
            XCTAssertTrue("\(error)".contains(folderPath), "\(error)")
        }
        var isDirectory: ObjCBool = false
        XCTAssertTrue(FileManager.default.fileExists(atPath: folderPath, isDirectory: &isDirectory) && isDirectory.boolValue)
    }

    func testAGarbageKeyFileIsAClearErrorNamingThePathAndIsLeftAlone() throws {
        let path = folder + "/garbage.key"
        let cases = [
            "not a key\n",
            "",
            "\n\n",
            Data([UInt8](repeating: 7, count: 31)).base64EncodedString() + "\n",  // truncated: 31 bytes
            Data([UInt8](repeating: 7, count: 64)).base64EncodedString() + "\n",  // oversized: 64 bytes
            String(Data([UInt8](repeating: 7, count: 32)).base64EncodedString().dropLast(4)) + "\n",  // cut off
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIB==\n-----END PRIVATE KEY-----\n",
        ]
        for text in cases {
            try? FileManager.default.removeItem(atPath: path)
            try write(text, to: path)
            XCTAssertThrowsError(try OnionKeyFile.loadOrCreate(path: path, logger: quietLogger), "accepted \(text.debugDescription)") { error in
                let message = "\(error)"
                XCTAssertTrue(message.hasPrefix(path + ": "), message)
                XCTAssertTrue(message.contains("not an onion key"), message)
                XCTAssertTrue(message.contains("32-byte seed"), message)
            }
            XCTAssertEqual(contents(path), Data(text.utf8), "a bad key file was replaced: \(text.debugDescription)")
        }
    }

    func testAWorldReadableKeyFileLoadsWithAWarningThatDoesNotShowTheKey() throws {
        let path = folder + "/open.key"
        let address = try OnionKeyFile.createNew(at: path)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: path)
        let log = CapturedLog()
        let identity = try OnionKeyFile.loadOrCreate(path: path, logger: log.logger)
        XCTAssertEqual(identity.address, address)
        XCTAssertEqual(try mode(path), 0o644, "loading does not change the mode behind the user's back")
        let warnings = log.entries.filter { $0.level == .warning }.map(\.message)
        XCTAssertEqual(warnings.count, 1, "\(log.entries)")
        XCTAssertTrue(warnings.first?.contains(path) ?? false, "\(warnings)")
        XCTAssertTrue(warnings.first?.contains("644") ?? false, "\(warnings)")
        log.assertNoSecret(of: identity)

        // A private file loads without a warning.
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
        let quiet = CapturedLog()
        _ = try OnionKeyFile.loadOrCreate(path: path, logger: quiet.logger)
        XCTAssertEqual(quiet.entries.filter { $0.level >= .warning }.count, 0, "\(quiet.entries)")
    }

    func testSurroundingWhitespaceInAKeyFileIsAccepted() throws {
        let identity = OnionIdentity.generate()
        let path = folder + "/spaced.key"
        try write("  " + Data(identity.seed).base64EncodedString() + " \r\n\n", to: path)
        XCTAssertEqual(try OnionKeyFile.loadOrCreate(path: path, logger: quietLogger).address, identity.address)
    }
}

/// `TorRuntime`'s small parsers for what tor reports about its SocksPort.
final class TorRuntimePiecesTests: XCTestCase {
    func testASocksAddressIsAnIPAddressWithAPortOrAUnixSocketPath() throws {
        let v4 = try XCTUnwrap(TorRuntime.socketAddress("127.0.0.1:9050"))
        XCTAssertEqual(v4.ipAddress, "127.0.0.1")
        XCTAssertEqual(v4.port, 9050)
        let v6 = try XCTUnwrap(TorRuntime.socketAddress("[::1]:9150"))
        XCTAssertEqual(v6.ipAddress, "::1")
        XCTAssertEqual(v6.port, 9150)
        let unix = try XCTUnwrap(TorRuntime.socketAddress("unix:/run/tor/socks"))
        XCTAssertEqual(unix.protocol, .unix)
        XCTAssertEqual(unix.pathname, "/run/tor/socks")
    }

    func testASocksAddressIsNeverResolvedAndMalformedOnesAreNil() {
        // A name would need DNS; tor reports addresses, so a name means something is wrong.
        XCTAssertNil(TorRuntime.socketAddress("localhost:9050"))
        for text in ["", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", ":9050", "::1:9050", "[::1]",
                     "unix:/" + String(repeating: "a", count: 200), String(repeating: "9", count: 10_000)] {
            XCTAssertNil(TorRuntime.socketAddress(text), String(text.prefix(40)))
        }
    }

    func testAUnixListenerWithoutAPathIsNoAddress() {
        // "unix:" names no socket; connecting to "" would fail later with a less helpful error
        // than "tor has no SocksPort Sotto can use".
        XCTAssertNil(TorRuntime.socketAddress("unix:"))
    }

    func testTheFirstOfTorsQuotedListenersIsTaken() {
        XCTAssertEqual(TorRuntime.firstQuoted("\"127.0.0.1:9050\""), "127.0.0.1:9050")
        XCTAssertEqual(TorRuntime.firstQuoted("\"127.0.0.1:9050\" \"[::1]:9050\""), "127.0.0.1:9050")
        XCTAssertEqual(TorRuntime.firstQuoted("\"unix:/run/tor/socks\" \"127.0.0.1:9050\""), "unix:/run/tor/socks")
        XCTAssertNil(TorRuntime.firstQuoted(""))
        XCTAssertNil(TorRuntime.firstQuoted("   "))
    }

    func testAQuotedListenerPathWithASpaceOrAnEscapeIsTakenWhole() {
        // control-spec 2.1.1: a QuotedString may hold spaces and backslash escapes; tor quotes a
        // Unix socket path that has them (e.g. under "/Application Support/").
        XCTAssertEqual(TorRuntime.firstQuoted("\"unix:/var/lib/my tor/socks\" \"127.0.0.1:9050\""),
                       "unix:/var/lib/my tor/socks")
        XCTAssertEqual(TorRuntime.firstQuoted("\"unix:/var/lib/a\\\"b/socks\""), "unix:/var/lib/a\"b/socks")
    }
}

/// Log lines a test can read: level and message.
final class CapturedLog: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [(level: Logger.Level, message: String)] = []

    var entries: [(level: Logger.Level, message: String)] { lock.withLock { stored } }
    var messages: [String] { entries.map(\.message) }

    var logger: Logger {
        Logger(label: "sotto.tests.captured", factory: { _ in CapturingLogHandler(log: self) })
    }

    func append(_ level: Logger.Level, _ message: String) {
        lock.withLock { stored.append((level, message)) }
    }

    /// No line holds the seed or the expanded secret key, whole or in part.
    func assertNoSecret(of identity: OnionIdentity, file: StaticString = #filePath, line: UInt = #line) {
        let seed = Data(identity.seed).base64EncodedString()
        let expanded = identity.expandedSecretKeyBase64
        for message in messages {
            for secret in [seed, String(seed.prefix(20)), String(seed.dropFirst(20)), expanded, String(expanded.prefix(20))] {
                XCTAssertFalse(message.contains(secret), "secret in log: \(message)", file: file, line: line)
            }
        }
    }
}

private struct CapturingLogHandler: LogHandler {
    let log: CapturedLog
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        log.append(event.level, event.message.description)
    }
}
