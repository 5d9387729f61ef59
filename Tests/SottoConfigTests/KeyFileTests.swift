import XCTest
@testable import SottoConfig

final class KeyFileTests: XCTestCase {
    func testKeyFilesResolveAgainstTheConfigFolder() throws {
        let dir = try TemporaryDirectory()
        try dir.write("keys/home.pub", Fixture.publicKey + "\n", mode: 0o644)
        try dir.write("keys/home.psk", "  " + Fixture.psk + "\r\n", mode: 0o600)
        let configPath = try dir.write("gateway.toml", """
        [[peer]]
        name = "home"
        address = "\(Fixture.onionHost)"
        public_key_file = "keys/home.pub"
        psk_file = "keys/home.psk"
        """)
        let config = try SottoConfig.load(path: configPath)
        XCTAssertEqual(config.file, configPath)
        XCTAssertEqual(config.peers.first?.publicKey, Fixture.publicKeyBytes)
        XCTAssertEqual(config.peers.first?.psk, Fixture.pskBytes)
        // A public key may be readable by anyone; the PSK file is 0600: nothing to warn about.
        XCTAssertEqual(config.warnings, [])
    }

    func testParseResolvesKeyFilesAgainstTheGivenBaseDirectoryAndAcceptsAbsolutePaths() throws {
        let dir = try TemporaryDirectory()
        try dir.write("exit.key", Fixture.privateKey)
        let psk = try dir.write("other/exit.psk", Fixture.psk)
        let config = try parse("""
        [[profile]]
        name = "p"
        anonymizer = "none"
        [[service]]
        name = "coap"
        listen = "0.0.0.0:7000"
        private_key_file = "exit.key"
        psk_file = "\(psk)"
        expose = ["udp 5684 127.0.0.1:5684"]
        """, baseDirectory: dir.path)
        XCTAssertEqual(config.services.first?.privateKey, Fixture.privateKeyBytes)
        XCTAssertEqual(config.services.first?.psk, Fixture.pskBytes)
    }

    func testAKeyFileReadableByOthersYieldsAWarningThatNamesItButNotItsContents() throws {
        let dir = try TemporaryDirectory()
        let psk = try dir.write("home.psk", Fixture.psk, mode: 0o644)
        let config = try parse(Fixture.peer().replacingOccurrences(of: "psk = \"\(Fixture.psk)\"", with: "psk_file = \"home.psk\""),
                               baseDirectory: dir.path)
        XCTAssertEqual(config.peers.first?.psk, Fixture.pskBytes)
        XCTAssertEqual(config.warnings.count, 1)
        let warning = try XCTUnwrap(config.warnings.first)
        XCTAssertTrue(warning.contains("gateway.toml: peer[1] 'home'.psk_file: \(psk) is readable by group or others (mode 0644)"),
                      warning)
        for secret in Fixture.secrets { XCTAssertFalse(warning.contains(secret)) }
    }

    func testAPrivateKeyFileReadableByGroupYieldsAWarning() throws {
        let dir = try TemporaryDirectory()
        try dir.write("exit.key", Fixture.privateKey, mode: 0o640)
        let toml = Fixture.profile() + Fixture.service().replacingOccurrences(
            of: "private_key = \"\(Fixture.privateKey)\"", with: "private_key_file = \"exit.key\"")
        let config = try parse(toml, baseDirectory: dir.path)
        XCTAssertEqual(config.warnings.count, 1)
        XCTAssertTrue(config.warnings[0].contains("service[1] 'coap'.private_key_file"), config.warnings[0])
        XCTAssertTrue(config.warnings[0].contains("mode 0640"), config.warnings[0])
    }

    func testAMissingKeyFileIsAnErrorWithThePathAndTheSystemsReason() throws {
        let dir = try TemporaryDirectory()
        let toml = Fixture.peer().replacingOccurrences(of: "psk = \"\(Fixture.psk)\"", with: "psk_file = \"nope.psk\"")
        assertConfigError(toml, key: "peer[1] 'home'.psk_file",
                          "cannot read \(dir.path)/nope.psk: No such file or directory", baseDirectory: dir.path)
    }

    func testAnUnreadableKeyFileIsAnErrorWithThePathAndTheSystemsReason() throws {
        let dir = try TemporaryDirectory()
        // A directory opens but is no key; as root, mode 000 would not stop the read.
        try FileManager.default.createDirectory(atPath: dir.path + "/dir.psk", withIntermediateDirectories: true)
        let toml = Fixture.peer().replacingOccurrences(of: "psk = \"\(Fixture.psk)\"", with: "psk_file = \"dir.psk\"")
        assertConfigError(toml, key: "peer[1] 'home'.psk_file", "cannot read \(dir.path)/dir.psk: not a regular file",
                          baseDirectory: dir.path)
        if getuid() != 0 {
            try dir.write("locked.psk", Fixture.psk, mode: 0o000)
            let locked = Fixture.peer().replacingOccurrences(of: "psk = \"\(Fixture.psk)\"", with: "psk_file = \"locked.psk\"")
            assertConfigError(locked, key: "peer[1] 'home'.psk_file",
                              "cannot read \(dir.path)/locked.psk: Permission denied", baseDirectory: dir.path)
        }
    }

    func testAKeyFileWithTheWrongLengthSaysHowManyBytesWithoutShowingThem() throws {
        let dir = try TemporaryDirectory()
        try dir.write("short.psk", KeyEncoding.encode(Array(Fixture.pskBytes.prefix(31))))
        let toml = Fixture.peer().replacingOccurrences(of: "psk = \"\(Fixture.psk)\"", with: "psk_file = \"short.psk\"")
        let error = assertConfigError(toml, key: "peer[1] 'home'.psk_file", "expected 32 bytes of base64, got 31",
                                      baseDirectory: dir.path)
        XCTAssertFalse(error?.description.contains(KeyEncoding.encode(Array(Fixture.pskBytes.prefix(31)))) ?? true)
    }

    func testAnOversizedOrBinaryKeyFileIsRefused() throws {
        let dir = try TemporaryDirectory()
        try dir.write("big.psk", String(repeating: Fixture.psk + "\n", count: 200))
        let big = Fixture.peer().replacingOccurrences(of: "psk = \"\(Fixture.psk)\"", with: "psk_file = \"big.psk\"")
        assertConfigError(big, key: "peer[1] 'home'.psk_file", "larger than 4096 bytes", baseDirectory: dir.path)

        XCTAssertTrue(FileManager.default.createFile(atPath: dir.path + "/bin.psk", contents: Data([0xFF, 0xFE, 0x00, 0x80])))
        let binary = Fixture.peer().replacingOccurrences(of: "psk = \"\(Fixture.psk)\"", with: "psk_file = \"bin.psk\"")
        assertConfigError(binary, key: "peer[1] 'home'.psk_file", "expected base64 text, got binary data",
                          baseDirectory: dir.path)
    }

    func testAnInlineSecretInAConfigReadableByOthersYieldsAWarning() throws {
        let dir = try TemporaryDirectory()
        let path = try dir.write("exit.toml", Fixture.exit, mode: 0o644)
        let config = try SottoConfig.load(path: path)
        XCTAssertEqual(config.warnings.count, 1)
        let warning = config.warnings[0]
        XCTAssertTrue(warning.hasPrefix("\(path): holds secrets inline (service[1] 'coap'.private_key, service[1] 'coap'.psk)"),
                      warning)
        XCTAssertTrue(warning.contains("mode 0644"), warning)
        for secret in Fixture.secrets { XCTAssertFalse(warning.contains(secret)) }

        let privatePath = try dir.write("private.toml", Fixture.exit, mode: 0o600)
        XCTAssertEqual(try SottoConfig.load(path: privatePath).warnings, [])
    }

    func testAProfilePasswordCountsAsAnInlineSecret() throws {
        let dir = try TemporaryDirectory()
        let path = try dir.write("entry.toml", Fixture.profile(extra: "password = \"\(Fixture.password)\""), mode: 0o604)
        let warnings = try SottoConfig.load(path: path).warnings
        XCTAssertEqual(warnings.count, 1)
        XCTAssertTrue(warnings.first?.contains("profile[1] 'p'.password") ?? false, "\(warnings)")
    }

    func testLoadingAMissingConfigNamesTheFileAndTheReason() {
        XCTAssertThrowsError(try SottoConfig.load(path: "/nonexistent/sotto.toml")) { error in
            XCTAssertEqual("\(error)", "/nonexistent/sotto.toml: cannot read the configuration: No such file or directory")
        }
    }

    func testLoadingAConfigThatIsNotUTF8IsRefused() throws {
        let dir = try TemporaryDirectory()
        XCTAssertTrue(FileManager.default.createFile(atPath: dir.path + "/bad.toml", contents: Data([0x61, 0x3D, 0x22, 0xFF, 0x22])))
        XCTAssertThrowsError(try SottoConfig.load(path: dir.path + "/bad.toml")) { error in
            XCTAssertEqual((error as? ConfigError)?.message, "not UTF-8 text (TOML files are UTF-8)")
        }
    }

    func testLoadingAnOversizedConfigIsRefused() throws {
        let dir = try TemporaryDirectory()
        let path = try dir.write("huge.toml", String(repeating: "# padding padding padding padding\n", count: 40_000))
        XCTAssertThrowsError(try SottoConfig.load(path: path)) { error in
            XCTAssertEqual((error as? ConfigError)?.message, "cannot read the configuration: larger than 1048576 bytes")
        }
    }
}
