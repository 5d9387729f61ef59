import Foundation
import XCTest
@testable import SottoConfig

/// Keys, addresses and configurations shared by the tests. Every secret here is a recognisable
/// string so the tests can check that no error message or warning ever contains one.
enum Fixture {
    static let publicKeyBytes = [UInt8](0..<32)
    static let pskBytes = [UInt8]((0..<32).map { UInt8(200 - $0) })
    static let privateKeyBytes = [UInt8]((0..<32).map { UInt8(($0 * 7 + 3) & 0xFF) })
    static let publicKey = KeyEncoding.encode(publicKeyBytes)
    static let psk = KeyEncoding.encode(pskBytes)
    static let privateKey = KeyEncoding.encode(privateKeyBytes)
    static let password = "hunter2-correct-horse"

    /// Every secret value and some of its pieces (a partial leak is a leak).
    static var secrets: [String] {
        [psk, privateKey, password, String(psk.prefix(20)), String(privateKey.prefix(20)), String(psk.dropFirst(20)),
         String(privateKey.dropFirst(20))]
    }

    /// A syntactically valid v3 onion address: base32(32-byte key | 2-byte checksum | version 3).
    static let onionHost = base32(publicKeyBytes + [0xAB, 0xCD, 0x03]) + ".onion"
    static let i2pHost = base32([UInt8](repeating: 0x5A, count: 32)) + ".b32.i2p"

    static func base32(_ bytes: [UInt8]) -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567")
        var out = ""
        var buffer: UInt32 = 0
        var bits = 0
        for byte in bytes {
            buffer = buffer << 8 | UInt32(byte)
            bits += 8
            while bits >= 5 {
                bits -= 5
                out.append(alphabet[Int((buffer >> UInt32(bits)) & 31)])
            }
            buffer &= (1 << UInt32(bits)) - 1
        }
        if bits > 0 { out.append(alphabet[Int((buffer << UInt32(5 - bits)) & 31)]) }
        return out
    }

    /// The entry gateway of the two-gateway example: SOCKS, two profiles, a peer, two forwards.
    static var entry: String {
        """
        state_dir = "/var/lib/sotto-entry"
        log_level = "debug"

        [socks]
        listen = "127.0.0.1:1080"
        auth = "required"
        max_connections = 200

        [tunnel]
        keepalive_seconds = 5
        idle_timeout_seconds = 20.5

        [[profile]]
        name = "private"
        anonymizer = "tor"
        shaping = "constant"
        default = true
        password = "\(password)"

        [[profile]]
        name = "lan"
        anonymizer = "none"
        allow_direct = true

        [[peer]]
        name = "home"
        address = "\(onionHost.uppercased()):7000"
        public_key = "\(publicKey)"
        psk = "\(psk)"
        cell_size = 1024

        [[forward]]
        listen = "udp://127.0.0.1:5684"
        to = "home:5684"

        [[forward]]
        listen = "tcp://[::1]:8080"
        to = "home:80"
        profile = "lan"
        """
    }

    /// The exit gateway of the two-gateway example: one service, secrets inline.
    static var exit: String {
        """
        [[profile]]
        name = "private"
        anonymizer = "tor"
        shaping = "poisson"

        [[service]]
        name = "coap"
        listen = "127.0.0.1:7000"
        private_key = "\(privateKey)"
        psk = "\(psk)"
        cell_size = 1024
        expose = ["udp 5684 127.0.0.1:5684", "tcp 80  127.0.0.1:8080", "udp 80 [::1]:9000"]
        max_tunnels = 8
        max_flows_per_tunnel = 16
        """
    }

    /// A minimal valid peer table for tests that change one key.
    static func peer(name: String = "home", address: String? = nil, extra: String = "") -> String {
        """
        [[peer]]
        name = "\(name)"
        address = "\(address ?? onionHost)"
        public_key = "\(publicKey)"
        psk = "\(psk)"
        \(extra)

        """
    }

    static func profile(name: String = "p", anonymizer: String = "tor", extra: String = "") -> String {
        """
        [[profile]]
        name = "\(name)"
        anonymizer = "\(anonymizer)"
        \(extra)

        """
    }

    static func service(name: String = "coap", expose: String = #"["udp 5684 127.0.0.1:5684"]"#, extra: String = "") -> String {
        """
        [[service]]
        name = "\(name)"
        listen = "127.0.0.1:7000"
        private_key = "\(privateKey)"
        psk = "\(psk)"
        expose = \(expose)
        \(extra)

        """
    }
}

/// A temporary folder removed when the test ends.
final class TemporaryDirectory {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "sotto-config-tests-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    @discardableResult
    func write(_ name: String, _ text: String, mode: Int = 0o600) throws -> String {
        let file = path + "/" + name
        let folder = (file as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try text.write(toFile: file, atomically: false, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: file)
        return file
    }
}

extension XCTestCase {
    func parse(_ toml: String, baseDirectory: String = "/nonexistent") throws -> SottoConfig {
        try SottoConfig.parse(toml, file: "gateway.toml", baseDirectory: baseDirectory)
    }

    /// Asserts that `toml` is refused with exactly `key` and a message containing `message`,
    /// and that no secret appears in what the user would see. Returns the error for more checks.
    @discardableResult
    func assertConfigError(_ toml: String, key: String, _ message: String, baseDirectory: String = "/nonexistent",
                           file: StaticString = #filePath, line: UInt = #line) -> ConfigError? {
        do {
            let config = try parse(toml, baseDirectory: baseDirectory)
            XCTFail("expected an error at \(key), parsed \(config.profiles.count) profiles, \(config.peers.count) peers",
                    file: file, line: line)
            return nil
        } catch let error as ConfigError {
            XCTAssertEqual(error.file, "gateway.toml", file: file, line: line)
            XCTAssertEqual(error.key, key, "message: \(error.message)", file: file, line: line)
            XCTAssertTrue(error.message.contains(message), "'\(error.message)' lacks '\(message)'", file: file, line: line)
            let prefix = key.isEmpty ? "gateway.toml: " : "gateway.toml: \(key): "
            XCTAssertTrue(error.description.hasPrefix(prefix), error.description, file: file, line: line)
            for secret in Fixture.secrets {
                XCTAssertFalse(error.description.contains(secret), "secret in: \(error.description)", file: file, line: line)
            }
            return error
        } catch {
            XCTFail("expected a ConfigError, got \(error)", file: file, line: line)
            return nil
        }
    }
}
