import Foundation
import XCTest
@testable import SottoConfig

/// `[tor]`, the tor keys of `[[peer]]` and `[[service]]` (docs/configuration.md), with the exact
/// key path of every refusal and no secret in any message.
final class TorConfigTests: XCTestCase {
    /// A client authorization private key (X25519, ClientAuthV3): a secret like the PSK.
    static let clientAuthKeyBytes = [UInt8]((0..<32).map { UInt8((Int($0) * 13 + 101) & 0xFF) })
    static let clientAuthKey = KeyEncoding.encode(clientAuthKeyBytes)
    /// Two clients' X25519 public keys for `client_auth` (not secret).
    static let clientA = KeyEncoding.encode([UInt8]((0..<32).map { UInt8(($0 * 3 + 1) & 0xFF) }))
    static let clientB = KeyEncoding.encode([UInt8]((0..<32).map { UInt8(($0 * 5 + 2) & 0xFF) }))

    /// A tor service without `listen` (optional for tor services) plus `extra`.
    static func torService(name: String = "coap", profile: String? = nil, extra: String = "") -> String {
        """
        [[service]]
        name = "\(name)"
        \(profile.map { "profile = \"\($0)\"" } ?? "")
        private_key = "\(Fixture.privateKey)"
        psk = "\(Fixture.psk)"
        expose = ["udp 5684 127.0.0.1:5684"]
        \(extra)

        """
    }

    private func assertNoSecrets(_ text: String, file: StaticString = #filePath, line: UInt = #line) {
        for secret in Fixture.secrets + [Self.clientAuthKey, String(Self.clientAuthKey.prefix(20))] {
            XCTAssertFalse(text.contains(secret), "secret in: \(text)", file: file, line: line)
        }
    }

    // MARK: [tor]

    func testWithoutATorSectionSottoManagesItsOwnTorWithTheDocumentedDefaults() throws {
        let config = try parse(Fixture.profile())
        XCTAssertEqual(config.tor, TorSettings.defaults)
        XCTAssertNil(config.tor.control)
        XCTAssertNil(config.tor.controlPassword)
        XCTAssertNil(config.tor.cookieFile)
        XCTAssertNil(config.tor.socks)
        XCTAssertEqual(config.tor.torPath, "tor")
        XCTAssertNil(config.tor.torrcInclude)
        XCTAssertEqual(config.tor.restartDelaySeconds, 2)
        // An empty [tor] is the same as none.
        XCTAssertEqual(try parse("[tor]\n").tor, TorSettings.defaults)
    }

    func testControlAcceptsHostPortAndIPv6AndAbsoluteUnixSocketPaths() throws {
        let tcp = try parse("[tor]\ncontrol = \"127.0.0.1:9051\"\n").tor.control
        XCTAssertEqual(tcp, .tcp(HostPort(host: "127.0.0.1", port: 9051)))
        XCTAssertEqual(tcp?.description, "127.0.0.1:9051")

        let v6 = try parse("[tor]\ncontrol = \"[::1]:9151\"\n").tor.control
        XCTAssertEqual(v6, .tcp(HostPort(host: "::1", port: 9151)))
        XCTAssertEqual(v6?.description, "[::1]:9151")

        let unix = try parse("[tor]\ncontrol = \"unix:/run/tor/control\"\n").tor.control
        XCTAssertEqual(unix, .unix("/run/tor/control"))
        XCTAssertEqual(unix?.description, "unix:/run/tor/control")
    }

    func testAUnixControlPathMustBeAbsolute() {
        assertConfigError("[tor]\ncontrol = \"unix:run/tor/control\"\n", key: "tor.control",
                          "expected unix:/ABSOLUTE/PATH, got 'unix:run/tor/control'")
        assertConfigError("[tor]\ncontrol = \"unix:\"\n", key: "tor.control", "expected unix:/ABSOLUTE/PATH, got 'unix:'")
    }

    func testAMalformedControlAddressIsExplainedAndMentionsTheUnixForm() {
        assertConfigError("[tor]\ncontrol = \"127.0.0.1\"\n", key: "tor.control",
                          "'127.0.0.1' is not host:port: missing ':PORT' (or write unix:/PATH for a Unix socket)")
        assertConfigError("[tor]\ncontrol = \"\"\n", key: "tor.control", "(or write unix:/PATH for a Unix socket)")
        assertConfigError("[tor]\ncontrol = \"127.0.0.1:90510\"\n", key: "tor.control",
                          "the port must be a number from 0 to 65535")
        assertConfigError("[tor]\ncontrol = \"127.0.0.1:0\"\n", key: "tor.control", "port 0 cannot be connected to")
        assertConfigError("[tor]\ncontrol = 9051\n", key: "tor.control", "expected a string, got an integer")
        // Oversized: a host name past 253 bytes.
        assertConfigError("[tor]\ncontrol = \"\(String(repeating: "a", count: 300)):9051\"\n", key: "tor.control",
                          "at most 253")
    }

    func testUnknownTorKeysAreRefusedWithASuggestion() {
        assertConfigError("[tor]\nrestart_delay = 3\n", key: "tor.restart_delay",
                          "unknown key 'restart_delay' in [tor]; did you mean 'restart_delay_seconds'?")
        assertConfigError("[tor]\ntor_pth = \"/usr/bin/tor\"\n", key: "tor.tor_pth", "did you mean 'tor_path'?")
        assertConfigError("[tor]\nsocks_port = 9050\n", key: "tor.socks_port", "unknown key 'socks_port' in [tor]")
        assertConfigError("tor = \"127.0.0.1:9051\"\n", key: "tor", "expected a table ([tor]), got a string")
    }

    func testExternalOnlyKeysAreRefusedWithoutControl() {
        for (key, value) in [("control_password_file", "\"pw\""), ("cookie_file", "\"cookie\""), ("socks", "\"127.0.0.1:9050\"")] {
            assertConfigError("[tor]\n\(key) = \(value)\n", key: "tor.\(key)",
                              "applies only to an external tor (set 'control' to use one); without 'control' Sotto starts its own tor")
        }
    }

    func testManagedOnlyKeysAreRefusedWithControlAndNameTheTorInUse() {
        assertConfigError("[tor]\ncontrol = \"unix:/run/tor/control\"\ntor_path = \"/usr/bin/tor\"\n", key: "tor.tor_path",
                          "applies only to the tor Sotto starts itself (without 'control'); this gateway uses the tor at unix:/run/tor/control")
        assertConfigError("[tor]\ncontrol = \"127.0.0.1:9051\"\ntorrc_include = \"gateway.torrc\"\n", key: "tor.torrc_include",
                          "this gateway uses the tor at 127.0.0.1:9051")
    }

    func testManagedTorKeysResolvePathsAgainstTheConfigFolderAndKeepABareBinaryName() throws {
        let relative = try parse("[tor]\ntor_path = \"bin/tor\"\ntorrc_include = \"testnet/gateway.torrc\"\n",
                                 baseDirectory: "/etc/sotto").tor
        XCTAssertEqual(relative.torPath, "/etc/sotto/bin/tor")
        XCTAssertEqual(relative.torrcInclude, "/etc/sotto/testnet/gateway.torrc")
        XCTAssertNil(relative.control)

        let absolute = try parse("[tor]\ntor_path = \"/usr/sbin/tor\"\ntorrc_include = \"/srv/t.torrc\"\n",
                                 baseDirectory: "/etc/sotto").tor
        XCTAssertEqual(absolute.torPath, "/usr/sbin/tor")
        XCTAssertEqual(absolute.torrcInclude, "/srv/t.torrc")

        // A name without '/' is looked up in PATH when tor starts, so it is not made a path here.
        XCTAssertEqual(try parse("[tor]\ntor_path = \"tor-0.4.8\"\n", baseDirectory: "/etc/sotto").tor.torPath, "tor-0.4.8")

        if let home = ProcessInfo.processInfo.environment["HOME"], !home.isEmpty {
            let tilde = try parse("[tor]\ntor_path = \"~/bin/tor\"\n", baseDirectory: "/etc/sotto").tor
            XCTAssertEqual(tilde.torPath, (home.hasSuffix("/") ? String(home.dropLast()) : home) + "/bin/tor")
        }
    }

    func testEmptyOrUnexpandablePathsAreRefused() {
        assertConfigError("[tor]\ntor_path = \"\"\n", key: "tor.tor_path", "must not be empty")
        assertConfigError("[tor]\ntorrc_include = \"\"\n", key: "tor.torrc_include", "must not be empty")
        assertConfigError("[tor]\ncontrol = \"127.0.0.1:9051\"\ncookie_file = \"\"\n", key: "tor.cookie_file", "must not be empty")
        assertConfigError("[tor]\ntorrc_include = \"~tor/gateway.torrc\"\n", key: "tor.torrc_include",
                          "only '~' and '~/...' are expanded in '~tor/gateway.torrc'")
        assertConfigError("[tor]\ntorrc_include = 3\n", key: "tor.torrc_include", "expected a string, got an integer")
    }

    func testExternalTorKeysAreReadWithControl() throws {
        let tor = try parse("""
        [tor]
        control = "127.0.0.1:9051"
        cookie_file = "tor/control_auth_cookie"
        socks = "[::1]:9150"
        restart_delay_seconds = 0.5
        """, baseDirectory: "/etc/sotto").tor
        XCTAssertEqual(tor.control, .tcp(HostPort(host: "127.0.0.1", port: 9051)))
        XCTAssertEqual(tor.cookieFile, "/etc/sotto/tor/control_auth_cookie")
        XCTAssertEqual(tor.socks, HostPort(host: "::1", port: 9150))
        XCTAssertEqual(tor.restartDelaySeconds, 0.5)
        XCTAssertNil(tor.controlPassword)
        // The managed defaults stay as they are (and unused).
        XCTAssertEqual(tor.torPath, "tor")
        XCTAssertNil(tor.torrcInclude)
    }

    func testTorsSocksPortMustBeALoopbackAddressWithAPort() {
        for socks in ["0.0.0.0:9050", "192.0.2.1:9050", "localhost:9050", "[::]:9050"] {
            assertConfigError("[tor]\ncontrol = \"127.0.0.1:9051\"\nsocks = \"\(socks)\"\n", key: "tor.socks",
                              "is not a loopback address: tor's SocksPort must listen on 127.0.0.0/8 or [::1]")
        }
        assertConfigError("[tor]\ncontrol = \"127.0.0.1:9051\"\nsocks = \"127.0.0.1:0\"\n", key: "tor.socks",
                          "port 0 cannot be connected to")
        assertConfigError("[tor]\ncontrol = \"127.0.0.1:9051\"\nsocks = \"127.0.0.1\"\n", key: "tor.socks", "missing ':PORT'")
        assertConfigError("[tor]\ncontrol = \"127.0.0.1:9051\"\nsocks = 9050\n", key: "tor.socks",
                          "expected a string, got an integer")
    }

    func testRestartDelayIsPositiveAndAtMostAnHour() throws {
        XCTAssertEqual(try parse("[tor]\nrestart_delay_seconds = 5\n").tor.restartDelaySeconds, 5)
        XCTAssertEqual(try parse("[tor]\nrestart_delay_seconds = 3600\n").tor.restartDelaySeconds, 3600)
        for bad in ["0", "-1", "3601", "inf", "nan"] {
            assertConfigError("[tor]\nrestart_delay_seconds = \(bad)\n", key: "tor.restart_delay_seconds",
                              "must be more than 0 and at most 3600 seconds")
        }
        assertConfigError("[tor]\nrestart_delay_seconds = \"2\"\n", key: "tor.restart_delay_seconds",
                          "expected a number of seconds, got a string")
    }

    // MARK: control_password_file

    private func passwordConfig(_ file: String) -> String {
        "[tor]\ncontrol = \"127.0.0.1:9051\"\ncontrol_password_file = \"\(file)\"\n"
    }

    func testTheControlPasswordIsReadFromItsFileAndTrimmed() throws {
        let dir = try TemporaryDirectory()
        try dir.write("tor/control.pw", "  \t" + Fixture.password + " \r\n\n", mode: 0o600)
        let config = try parse(passwordConfig("tor/control.pw"), baseDirectory: dir.path)
        XCTAssertEqual(config.tor.controlPassword, Fixture.password)
        XCTAssertEqual(config.warnings, [])

        // Spaces inside the password are part of it.
        try dir.write("spaced.pw", "two words\n", mode: 0o600)
        XCTAssertEqual(try parse(passwordConfig(dir.path + "/spaced.pw")).tor.controlPassword, "two words")
    }

    func testAControlPasswordFileReadableByGroupYieldsAWarningWithoutThePassword() throws {
        let dir = try TemporaryDirectory()
        let path = try dir.write("control.pw", Fixture.password + "\n", mode: 0o640)
        let config = try parse(passwordConfig("control.pw"), baseDirectory: dir.path)
        XCTAssertEqual(config.tor.controlPassword, Fixture.password)
        XCTAssertEqual(config.warnings.count, 1)
        let warning = try XCTUnwrap(config.warnings.first)
        XCTAssertTrue(warning.contains("gateway.toml: tor.control_password_file: \(path) is readable by group or others (mode 0640)"),
                      warning)
        XCTAssertTrue(warning.contains("chmod 600"), warning)
        assertNoSecrets(warning)

        try dir.write("world.pw", Fixture.password, mode: 0o604)
        let world = try parse(passwordConfig("world.pw"), baseDirectory: dir.path)
        XCTAssertEqual(world.warnings.count, 1)
        XCTAssertTrue(world.warnings[0].contains("mode 0604"), world.warnings[0])
    }

    func testAMissingControlPasswordFileIsAnErrorNamingItsPath() throws {
        let dir = try TemporaryDirectory()
        assertConfigError(passwordConfig("nope.pw"), key: "tor.control_password_file",
                          "cannot read \(dir.path)/nope.pw: No such file or directory", baseDirectory: dir.path)
        try FileManager.default.createDirectory(atPath: dir.path + "/dir.pw", withIntermediateDirectories: true)
        assertConfigError(passwordConfig("dir.pw"), key: "tor.control_password_file",
                          "cannot read \(dir.path)/dir.pw: not a regular file", baseDirectory: dir.path)
    }

    func testAnEmptyBinaryOrOversizedControlPasswordFileIsRefusedWithoutShowingItsContents() throws {
        let dir = try TemporaryDirectory()
        try dir.write("empty.pw", " \n\t\r\n")
        assertConfigError(passwordConfig("empty.pw"), key: "tor.control_password_file",
                          "\(dir.path)/empty.pw: expected the control port password as one line of text", baseDirectory: dir.path)

        // The password followed by a byte that is not UTF-8: refused, and the readable part not echoed.
        XCTAssertTrue(FileManager.default.createFile(atPath: dir.path + "/binary.pw",
                                                     contents: Data(Fixture.password.utf8) + Data([0xFF, 0xFE, 0x0A])))
        assertConfigError(passwordConfig("binary.pw"), key: "tor.control_password_file",
                          "expected the control port password as one line of text", baseDirectory: dir.path)

        try dir.write("big.pw", String(repeating: Fixture.password, count: 300))
        assertConfigError(passwordConfig("big.pw"), key: "tor.control_password_file", "larger than 4096 bytes",
                          baseDirectory: dir.path)
    }

    func testALaterErrorInAConfigWithAControlPasswordDoesNotShowThePassword() throws {
        let dir = try TemporaryDirectory()
        try dir.write("control.pw", Fixture.password)
        assertConfigError(passwordConfig("control.pw") + "restart_delay_seconds = 0\n", key: "tor.restart_delay_seconds",
                          "must be more than 0", baseDirectory: dir.path)
    }

    // MARK: [[peer]] client authorization

    func testAnOnionPeerTakesAClientAuthorizationKeyInlineOrFromAFile() throws {
        let inline = try parse(Fixture.peer(extra: "client_auth_key = \"\(Self.clientAuthKey)\""))
        XCTAssertEqual(inline.peers.first?.clientAuthKey, Self.clientAuthKeyBytes)

        let dir = try TemporaryDirectory()
        try dir.write("keys/home.auth", Self.clientAuthKey + "\n", mode: 0o600)
        let fromFile = try parse(Fixture.peer(extra: "client_auth_key_file = \"keys/home.auth\""), baseDirectory: dir.path)
        XCTAssertEqual(fromFile.peers.first?.clientAuthKey, Self.clientAuthKeyBytes)
        XCTAssertEqual(fromFile.warnings, [])

        XCTAssertNil(try parse(Fixture.peer()).peers.first?.clientAuthKey)
    }

    func testAClientAuthorizationKeyFileReadableByOthersYieldsAWarning() throws {
        let dir = try TemporaryDirectory()
        let path = try dir.write("home.auth", Self.clientAuthKey, mode: 0o644)
        let config = try parse(Fixture.peer(extra: "client_auth_key_file = \"home.auth\""), baseDirectory: dir.path)
        XCTAssertEqual(config.warnings.count, 1)
        let warning = try XCTUnwrap(config.warnings.first)
        XCTAssertTrue(warning.contains("peer[1] 'home'.client_auth_key_file: \(path) is readable by group or others (mode 0644)"),
                      warning)
        assertNoSecrets(warning)
    }

    func testAnInlineClientAuthorizationKeyCountsAsAnInlineSecret() throws {
        let dir = try TemporaryDirectory()
        let path = try dir.write("entry.toml", Fixture.peer(extra: "client_auth_key = \"\(Self.clientAuthKey)\"")
            .replacingOccurrences(of: "psk = \"\(Fixture.psk)\"", with: "psk_file = \"home.psk\""), mode: 0o644)
        try dir.write("home.psk", Fixture.psk, mode: 0o600)
        let config = try SottoConfig.load(path: path)
        XCTAssertEqual(config.warnings.count, 1)
        XCTAssertTrue(config.warnings[0].hasPrefix("\(path): holds secrets inline (peer[1] 'home'.client_auth_key)"),
                      config.warnings[0])
        assertNoSecrets(config.warnings[0])
    }

    func testClientAuthorizationIsRefusedForAPeerThatIsNoOnionService() {
        assertConfigError(Fixture.peer(address: "192.0.2.10:7000", extra: "client_auth_key = \"\(Self.clientAuthKey)\""),
                          key: "peer[1] 'home'.client_auth_key",
                          "client authorization applies only to a peer at a .onion address")
        assertConfigError(Fixture.peer(address: Fixture.i2pHost, extra: "client_auth_key_file = \"home.auth\""),
                          key: "peer[1] 'home'.client_auth_key_file",
                          "client authorization applies only to a peer at a .onion address")
    }

    func testAClientAuthorizationKeyInlineAndInAFileIsRefused() {
        assertConfigError(Fixture.peer(extra: "client_auth_key = \"\(Self.clientAuthKey)\"\nclient_auth_key_file = \"a\""),
                          key: "peer[1] 'home'.client_auth_key",
                          "give either 'client_auth_key' or 'client_auth_key_file', not both")
    }

    func testAMalformedClientAuthorizationKeyIsRefusedWithoutShowingIt() throws {
        let short = KeyEncoding.encode(Array(Self.clientAuthKeyBytes.prefix(31)))
        let error = assertConfigError(Fixture.peer(extra: "client_auth_key = \"\(short)\""), key: "peer[1] 'home'.client_auth_key",
                                      "expected 32 bytes of base64, got 31")
        XCTAssertFalse(error?.description.contains(short) ?? true)

        let mangled = String(Self.clientAuthKey.dropLast(2)) + "!="
        let bad = assertConfigError(Fixture.peer(extra: "client_auth_key = \"\(mangled)\""), key: "peer[1] 'home'.client_auth_key",
                                    "not strict base64")
        XCTAssertFalse(bad?.description.contains(mangled) ?? true)
        assertNoSecrets(bad?.description ?? "")

        let long = KeyEncoding.encode(Self.clientAuthKeyBytes + Self.clientAuthKeyBytes)
        let oversized = assertConfigError(Fixture.peer(extra: "client_auth_key = \"\(long)\""), key: "peer[1] 'home'.client_auth_key",
                                          "expected 32 bytes of base64, got 64")
        assertNoSecrets(oversized?.description ?? "")

        let dir = try TemporaryDirectory()
        try dir.write("bad.auth", short)
        let fileError = assertConfigError(Fixture.peer(extra: "client_auth_key_file = \"bad.auth\""),
                                          key: "peer[1] 'home'.client_auth_key_file",
                                          "\(dir.path)/bad.auth: expected 32 bytes of base64, got 31", baseDirectory: dir.path)
        XCTAssertFalse(fileError?.description.contains(short) ?? true)
        assertConfigError(Fixture.peer(extra: "client_auth_key_file = \"gone.auth\""), key: "peer[1] 'home'.client_auth_key_file",
                          "cannot read \(dir.path)/gone.auth: No such file or directory", baseDirectory: dir.path)
    }

    func testAPeersRemotePortIsTheAddressPortOrTheDefaultOnionPort() throws {
        let otherOnion = Fixture.base32(Fixture.publicKeyBytes.reversed() + [0x12, 0x34, 0x03]) + ".onion"
        let config = try parse(Fixture.peer(name: "bare") + Fixture.peer(name: "ported", address: otherOnion + ":7000")
            + Fixture.peer(name: "plain", address: "192.0.2.10:7100") + Fixture.peer(name: "garlic", address: Fixture.i2pHost))
        XCTAssertEqual(config.peer(named: "bare")?.remotePort, Service.defaultOnionPort)
        XCTAssertEqual(Service.defaultOnionPort, 443)
        XCTAssertEqual(config.peer(named: "ported")?.remotePort, 7000)
        XCTAssertEqual(config.peer(named: "plain")?.remotePort, 7100)
        XCTAssertEqual(config.peer(named: "garlic")?.remotePort, Service.defaultOnionPort)
    }

    // MARK: [[service]] tor keys

    func testATorServiceWithoutListenListensOnAnEphemeralLoopbackPort() throws {
        let config = try parse(Fixture.profile() + Self.torService())
        let service = try XCTUnwrap(config.services.first)
        XCTAssertEqual(service.listen, HostPort(host: "127.0.0.1", port: 0))
        XCTAssertEqual(service.onionPort, 443)
        XCTAssertNil(service.onionKeyFile)
        XCTAssertEqual(service.clientAuth, [])
    }

    func testATorServiceListenMustBeLoopback() throws {
        let config = try parse(Fixture.profile() + Self.torService(extra: "listen = \"[::1]:7000\""))
        XCTAssertEqual(config.services.first?.listen, HostPort(host: "::1", port: 7000))
        for listen in ["0.0.0.0:7000", "192.0.2.1:7000", "localhost:7000"] {
            assertConfigError(Fixture.profile() + Self.torService(extra: "listen = \"\(listen)\""), key: "service[1] 'coap'.listen",
                              "is not a loopback address: a tor service's tunnel listener must listen on 127.0.0.0/8 or [::1]")
        }
    }

    func testAServiceOfAnAnonymizerNoneProfileStillNeedsListenAndMayUseAnyAddress() throws {
        assertConfigError(Fixture.profile(anonymizer: "none") + Self.torService(), key: "service[1] 'coap'.listen",
                          "missing key 'listen' in [[service]] #1")
        let config = try parse(Fixture.profile(anonymizer: "none") + Self.torService(extra: "listen = \"0.0.0.0:7000\""))
        XCTAssertEqual(config.services.first?.listen, HostPort(host: "0.0.0.0", port: 7000))
    }

    func testOnionPortKeyFileAndClientAuthAreRead() throws {
        let config = try parse(Fixture.profile() + Self.torService(extra: """
        onion_port = 7000
        onion_key_file = "onion/coap.key"
        client_auth = ["\(Self.clientA)", "\(Self.clientB)"]
        """), baseDirectory: "/etc/sotto")
        let service = try XCTUnwrap(config.services.first)
        XCTAssertEqual(service.onionPort, 7000)
        XCTAssertEqual(service.onionKeyFile, "/etc/sotto/onion/coap.key")
        XCTAssertEqual(service.clientAuth, [KeyEncoding.decode(Self.clientA)!, KeyEncoding.decode(Self.clientB)!])
        XCTAssertEqual(try parse(Fixture.profile() + Self.torService(extra: "client_auth = []")).services.first?.clientAuth, [])
    }

    func testOnionPortMustBeAPortNumber() {
        for bad in ["0", "65536", "-443"] {
            assertConfigError(Fixture.profile() + Self.torService(extra: "onion_port = \(bad)"), key: "service[1] 'coap'.onion_port",
                              "must be from 1 to 65535, got \(bad)")
        }
        assertConfigError(Fixture.profile() + Self.torService(extra: "onion_port = \"443\""), key: "service[1] 'coap'.onion_port",
                          "expected an integer, got a string")
    }

    func testOnionKeyFileMustNotBeEmpty() {
        assertConfigError(Fixture.profile() + Self.torService(extra: "onion_key_file = \"\""), key: "service[1] 'coap'.onion_key_file",
                          "must not be empty")
    }

    func testEachBadClientAuthEntryIsNamedByItsPosition() {
        assertConfigError(Fixture.profile() + Self.torService(extra: "client_auth = [\"\(Self.clientA)\", \"no!pe\"]"),
                          key: "service[1] 'coap'.client_auth[2]",
                          "got 5 characters that are not strict base64 (a client's X25519 public key)")
        let short = KeyEncoding.encode([UInt8](repeating: 7, count: 16))
        assertConfigError(Fixture.profile() + Self.torService(extra: "client_auth = [\"\(short)\"]"),
                          key: "service[1] 'coap'.client_auth[1]", "expected 32 bytes of base64, got 16 (a client's X25519 public key)")
        assertConfigError(Fixture.profile() + Self.torService(extra: "client_auth = [\"\(Self.clientA)\", \"\(Self.clientB)\", \"\(Self.clientA)\"]"),
                          key: "service[1] 'coap'.client_auth[3]", "duplicate client key")
        assertConfigError(Fixture.profile() + Self.torService(extra: "client_auth = [\"\(Self.clientA)\", 5]"),
                          key: "service[1] 'coap'.client_auth[2]", "expected a string, got an integer")
        assertConfigError(Fixture.profile() + Self.torService(extra: "client_auth = \"\(Self.clientA)\""),
                          key: "service[1] 'coap'.client_auth", "expected an array of strings, got a string")
    }

    func testTorServiceKeysAreRefusedForAServiceWhoseProfileDoesNotUseTor() {
        let cases = [("onion_port", "443"), ("onion_key_file", "\"k\""), ("client_auth", "[\"\(Self.clientA)\"]")]
        for (key, value) in cases {
            assertConfigError(Fixture.profile(anonymizer: "none") + Fixture.service(extra: "\(key) = \(value)"),
                              key: "service[1] 'coap'.\(key)",
                              "applies only to a service whose profile uses anonymizer 'tor' (profile 'p' uses 'none')")
            assertConfigError(Fixture.profile(name: "g", anonymizer: "i2p") + Fixture.service(extra: "\(key) = \(value)"),
                              key: "service[1] 'coap'.\(key)", "(profile 'g' uses 'i2p')")
        }
        // The profile named by the service decides, not the default one.
        let twoProfiles = Fixture.profile(name: "t", extra: "default = true") + Fixture.profile(name: "lan", anonymizer: "none")
        assertConfigError(twoProfiles + Fixture.service(extra: "profile = \"lan\"\nonion_port = 80"),
                          key: "service[1] 'coap'.onion_port", "(profile 'lan' uses 'none')")
    }

    // MARK: what the gateway asks of a configuration

    func testUsesTorIsTrueOnlyWhenSomethingRunsWithATorProfile() throws {
        // A tor profile that nothing uses does not start tor.
        let unused = try parse(Fixture.profile(name: "t", extra: "default = true") + Fixture.profile(name: "lan", anonymizer: "none")
            + Fixture.peer(address: "192.0.2.1:7000") + "[[forward]]\nlisten = \"udp://127.0.0.1:5684\"\nto = \"home:1\"\nprofile = \"lan\"\n")
        XCTAssertFalse(unused.uses(.tor))
        XCTAssertTrue(unused.uses(.none))
        XCTAssertFalse(unused.uses(.i2p))

        let forward = try parse(Fixture.profile() + Fixture.peer() + "[[forward]]\nlisten = \"udp://127.0.0.1:5684\"\nto = \"home:1\"\n")
        XCTAssertTrue(forward.uses(.tor))
        XCTAssertFalse(forward.uses(.none))

        let service = try parse(Fixture.profile() + Self.torService())
        XCTAssertTrue(service.uses(.tor))

        // A SOCKS server may serve any profile to its clients.
        let socks = try parse("[socks]\nlisten = \"127.0.0.1:1080\"\n" + Fixture.profile())
        XCTAssertTrue(socks.uses(.tor))
        let socksNone = try parse("[socks]\nlisten = \"127.0.0.1:1080\"\n" + Fixture.profile(anonymizer: "none"))
        XCTAssertFalse(socksNone.uses(.tor))
    }

    func testTheOnionKeyPathIsTheConfiguredFileOrOneUnderTheStateDirectory() throws {
        let config = try parse("state_dir = \"/var/lib/sotto\"\n" + Fixture.profile() + Self.torService()
            + Self.torService(name: "web", extra: "onion_key_file = \"/srv/web.key\""))
        XCTAssertEqual(config.onionKeyPath(for: config.services[0]), "/var/lib/sotto/onion/coap.key")
        XCTAssertEqual(config.onionKeyPath(for: config.services[1]), "/srv/web.key")
    }
}
