import TOMLKit
import XCTest
@testable import SottoConfig

/// `[[channel]]` and `[hopping]`, parsed by `ConfigParser.parseChannelSection`.
final class ChannelSettingsTests: XCTestCase {
    private let secret = Fixture.psk
    private let secretBytes = Fixture.pskBytes

    private func section(_ toml: String, baseDirectory: String = "/nonexistent") throws -> ChannelSection {
        let parser = ConfigParser(file: "gateway.toml", baseDirectory: baseDirectory, home: "/home/u")
        let document = try TOMLTable(string: toml)
        return try parser.parseChannelSection(TableReader(table: document, path: "", displayName: "the top level",
                                                          file: "gateway.toml"))
    }

    /// Refused with `key` and a message containing `message`; no secret in what the user sees.
    private func assertRefused(_ toml: String, key: String, _ message: String, baseDirectory: String = "/nonexistent",
                               file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try section(toml, baseDirectory: baseDirectory), file: file, line: line) { error in
            guard let error = error as? ConfigError else { return XCTFail("\(error)", file: file, line: line) }
            XCTAssertEqual(error.key, key, error.message, file: file, line: line)
            XCTAssertTrue(error.message.contains(message), "'\(error.message)' lacks '\(message)'", file: file, line: line)
            for secret in Fixture.secrets {
                XCTAssertFalse(error.description.contains(secret), "secret in \(error.description)", file: file, line: line)
            }
        }
    }

    func testChannelWithEveryKeyParses() throws {
        let parsed = try section("""
        [[channel]]
        name = "friends"
        secret = "\(secret)"
        identity = "throwaway"
        epoch_seconds = 600
        server = "coaps://127.0.0.1:5684"
        sender = "alice"
        max_message_age_seconds = 86400
        """)
        XCTAssertEqual(parsed.channels, [ChannelSettings(name: "friends", secret: secretBytes, identity: .throwaway,
                                                         epochSeconds: 600, server: "coaps://127.0.0.1:5684", sender: "alice",
                                                         maxMessageAgeSeconds: 86400)])
        XCTAssertEqual(parsed.inlineSecretKeys, ["channel[1] 'friends'.secret"])
        XCTAssertNil(parsed.hopping)
    }

    func testChannelDefaultsArePerChannelIdentitiesAndHourLongEpochs() throws {
        let parsed = try section("[[channel]]\nname = \"c\"\nsecret = \"\(secret)\"\n")
        let channel = try XCTUnwrap(parsed.channels.first)
        XCTAssertEqual(channel.identity, .perChannel)
        XCTAssertEqual(channel.epochSeconds, 3600)
        XCTAssertEqual(channel.maxMessageAgeSeconds, 7 * 86_400)
        XCTAssertNil(channel.server)
        XCTAssertFalse(String(describing: channel).contains(secret.prefix(10)))
        var dumped = ""
        dump(channel, to: &dumped)
        XCTAssertFalse(dumped.contains("200"), dumped)  // the secret's first byte, as dump would print it
    }

    func testSecretFileIsReadRelativeToTheConfigAndWarnedAboutWhenOthersCanReadIt() throws {
        let dir = try TemporaryDirectory()
        try dir.write("keys/friends.secret", secret + "\n", mode: 0o600)
        try dir.write("keys/open.secret", secret, mode: 0o644)
        let parsed = try section("""
        [[channel]]
        name = "friends"
        secret_file = "keys/friends.secret"
        [[channel]]
        name = "open"
        secret_file = "keys/open.secret"
        """, baseDirectory: dir.path)
        XCTAssertEqual(parsed.channels.map(\.secret), [secretBytes, secretBytes])
        XCTAssertEqual(parsed.inlineSecretKeys, [])
        XCTAssertEqual(parsed.warnings.count, 1)
        let warning = try XCTUnwrap(parsed.warnings.first)
        XCTAssertTrue(warning.contains("channel[2] 'open'.secret_file"), warning)
        XCTAssertTrue(warning.contains("mode 0644"), warning)
        XCTAssertFalse(warning.contains(secret.prefix(20)))
    }

    func testHoppingParsesRangeAndEpoch() throws {
        let dir = try TemporaryDirectory()
        try dir.write("hop.secret", secret)
        let parsed = try section("""
        [hopping]
        secret_file = "hop.secret"
        range = "20000-20999"
        epoch_seconds = 5
        """, baseDirectory: dir.path)
        XCTAssertEqual(parsed.hopping, HoppingSettings(secret: secretBytes, portRange: 20000...20999, epochSeconds: 5))
        let single = try section("[hopping]\nsecret_file = \"hop.secret\"\nrange = \"30000-30000\"\n", baseDirectory: dir.path)
        XCTAssertEqual(single.hopping?.portRange, 30000...30000)
        XCTAssertEqual(single.hopping?.epochSeconds, 60)
    }

    /// Needs ConfigParser.parse to call parseChannelSection and "channel", "hopping" in topLevelKeys.
    func testChannelsAndHoppingAppearInTheLoadedConfigurationWithItsWarnings() throws {
        let dir = try TemporaryDirectory()
        try dir.write("hop.secret", secret, mode: 0o640)
        let path = try dir.write("client.toml", """
        [[channel]]
        name = "friends"
        secret = "\(secret)"
        server = "coaps://127.0.0.1:5684"

        [hopping]
        secret_file = "hop.secret"
        range = "20000-20999"
        """, mode: 0o644)
        let config = try SottoConfig.load(path: path)
        XCTAssertEqual(config.channels.map(\.name), ["friends"])
        XCTAssertEqual(config.hopping?.portRange, 20000...20999)
        XCTAssertEqual(config.warnings.count, 2, "\(config.warnings)")
        XCTAssertTrue(config.warnings.contains { $0.contains("hopping.secret_file") && $0.contains("mode 0640") })
        XCTAssertTrue(config.warnings.contains { $0.contains("channel[1] 'friends'.secret") && $0.contains("holds secrets inline") })
        for warning in config.warnings { XCTAssertFalse(warning.contains(secret.prefix(20))) }
    }

    func testMalformedChannelsAreRefusedWithTheKeyAndWithoutTheSecret() {
        let base = "[[channel]]\nname = \"c\"\nsecret = \"\(secret)\"\n"
        assertRefused("[[channel]]\nsecret = \"\(secret)\"\n", key: "channel[1].name", "missing key 'name'")
        assertRefused("[[channel]]\nname = \"c\"\n", key: "channel[1] 'c'.secret", "keygen --channel")
        assertRefused("[[channel]]\nname = \"bad name\"\nsecret = \"\(secret)\"\n", key: "channel[1].name", "letters, digits")
        assertRefused("[[channel]]\nname = \"\(String(repeating: "n", count: 65))\"\nsecret = \"\(secret)\"\n",
                      key: "channel[1].name", "at most 64 bytes")
        assertRefused(base + base, key: "channel[2] 'c'.name", "duplicate channel name 'c'")
        assertRefused(base + "secret_file = \"x\"\n", key: "channel[1] 'c'.secret", "not both")
        assertRefused(base + "identitiy = \"global\"\n", key: "channel[1].identitiy", "did you mean 'identity'?")
        assertRefused(base + "identity = \"perchannel\"\n", key: "channel[1] 'c'.identity", "did you mean 'per-channel'?")
        assertRefused(base + "epoch_seconds = 0\n", key: "channel[1] 'c'.epoch_seconds", "must be from 1")
        assertRefused(base + "epoch_seconds = \"60\"\n", key: "channel[1] 'c'.epoch_seconds", "expected an integer")
        assertRefused(base + "server = \"https://example.org\"\n", key: "channel[1] 'c'.server", "expected coaps://")
        assertRefused(base + "sender = \"\"\n", key: "channel[1] 'c'.sender", "1 to 255 bytes")
        assertRefused(base + "max_message_age_seconds = 99999999999\n", key: "channel[1] 'c'.max_message_age_seconds", "must be from 1")
        assertRefused("channel = 3\n", key: "channel", "expected an array of tables")
    }

    func testTruncatedAndOversizedSecretsAreRefusedByLength() throws {
        let short = KeyEncoding.encode([UInt8](repeating: 7, count: 16))
        let long = KeyEncoding.encode([UInt8](repeating: 7, count: 64))
        assertRefused("[[channel]]\nname = \"c\"\nsecret = \"\(short)\"\n", key: "channel[1] 'c'.secret", "got 16 bytes")
        assertRefused("[[channel]]\nname = \"c\"\nsecret = \"\(long)\"\n", key: "channel[1] 'c'.secret", "got 64 bytes")
        assertRefused("[[channel]]\nname = \"c\"\nsecret = \"\(secret.dropLast(2))\"\n", key: "channel[1] 'c'.secret",
                      "not strict base64")
        let dir = try TemporaryDirectory()
        try dir.write("big.secret", String(repeating: "A", count: 5000))
        assertRefused("[[channel]]\nname = \"c\"\nsecret_file = \"big.secret\"\n", key: "channel[1] 'c'.secret_file",
                      "larger than 4096 bytes", baseDirectory: dir.path)
        assertRefused("[[channel]]\nname = \"c\"\nsecret_file = \"missing.secret\"\n", key: "channel[1] 'c'.secret_file",
                      "cannot read", baseDirectory: dir.path)
    }

    func testMalformedHoppingIsRefused() throws {
        let dir = try TemporaryDirectory()
        try dir.write("hop.secret", secret)
        let file = "secret_file = \"hop.secret\"\n"
        func refused(_ body: String, key: String, _ message: String) {
            assertRefused("[hopping]\n" + body, key: key, message, baseDirectory: dir.path)
        }
        refused("range = \"20000-20999\"\n", key: "hopping.secret_file", "missing key 'secret_file'")
        refused(file, key: "hopping.range", "missing key 'range'")
        refused(file + "range = \"20000\"\n", key: "hopping.range", "expected FIRST-LAST")
        refused(file + "range = \"20000-70000\"\n", key: "hopping.range", "expected FIRST-LAST")
        refused(file + "range = \"0-10\"\n", key: "hopping.range", "expected FIRST-LAST")
        refused(file + "range = \"-20000-20999\"\n", key: "hopping.range", "expected FIRST-LAST")
        refused(file + "range = \"20999-20000\"\n", key: "hopping.range", "is above the last")
        refused(file + "range = \"\(String(repeating: "9", count: 100))-1\"\n", key: "hopping.range", "expected FIRST-LAST")
        refused(file + "range = \"20000-20999\"\nepoch_seconds = -1\n", key: "hopping.epoch_seconds", "must be from 1")
        refused(file + "range = \"20000-20999\"\nsecret = \"\(secret)\"\n", key: "hopping.secret", "unknown key 'secret'")
        assertRefused("hopping = 1\n", key: "hopping", "expected a table")
    }
}
