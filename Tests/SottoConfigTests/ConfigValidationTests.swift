import XCTest
@testable import SottoConfig

/// Each way a configuration can be wrong, with the key and message the user sees.
final class ConfigValidationTests: XCTestCase {
    // MARK: TOML itself

    func testMalformedTOMLReportsTheLineAndColumnFromTheParser() throws {
        let error = assertConfigError("log_level = \"info\"\n[socks]\nlisten = 127.0.0.1:1080\n", key: "line 3, column 12",
                                      "not valid TOML: Error while parsing")
        XCTAssertNotNil(error)
    }

    func testTruncatedTOMLIsASyntaxError() {
        assertConfigError("[[peer]]\nname = \"ho", key: "line 2, column 11", "not valid TOML")
        assertConfigError("[soc", key: "line 1, column 5", "not valid TOML")
    }

    func testASyntaxErrorNextToASecretDoesNotPrintIt() {
        // toml++ quotes parts of the document in its messages; neither shape may carry the secret out.
        assertConfigError("psk = \"\(Fixture.psk)\" \"\(Fixture.privateKey)\"\n", key: "line 1, column 54", "not valid TOML")
        assertConfigError("a = 1\n\(Fixture.psk)\n", key: "line 2, column 35", "not valid TOML")
        assertConfigError("psk = \(Fixture.privateKey)\n", key: "line 1, column 7", "not valid TOML")
        assertConfigError("psk = \"\(Fixture.psk)\n", key: "line 1, column 52", "not valid TOML")
    }

    func testAKeyThatLooksLikeAPastedSecretIsNotEchoed() {
        let key = String(Fixture.psk.filter { $0.isLetter || $0.isNumber })
        assertConfigError("\(key) = 1\n", key: "", "looks like base64 key material (not shown)")
            .map { XCTAssertFalse($0.description.contains(key)) }
    }

    func testTheSecretFilterRedactsOnlyKeyLikeQuotes() {
        XCTAssertEqual(Redaction.scrubQuoted("saw 'x'"), "saw 'x'")
        XCTAssertEqual(Redaction.scrubQuoted("cannot redefine existing table 'max_flows_per_tunnel'"),
                       "cannot redefine existing table 'max_flows_per_tunnel'")
        XCTAssertEqual(Redaction.scrubQuoted("saw '\(Fixture.psk)' here"), "saw '(redacted)' here")
    }

    // MARK: unknown keys and wrong types

    func testUnknownKeysAreErrorsWithASuggestion() {
        assertConfigError("[socks]\nlisen = \"127.0.0.1:1080\"\n", key: "socks.lisen",
                          "unknown key 'lisen' in [socks]; did you mean 'listen'?")
        assertConfigError("loglevel = \"info\"", key: "loglevel", "unknown key 'loglevel' in the top level; did you mean 'log_level'?")
        assertConfigError("[tunnel]\nkeepalive = 3\n", key: "tunnel.keepalive", "unknown key 'keepalive' in [tunnel]")
        assertConfigError(Fixture.peer(extra: "pubkey = \"x\""), key: "peer[1].pubkey", "unknown key 'pubkey' in [[peer]] #1")
        assertConfigError(Fixture.profile(extra: "defualt = true"), key: "profile[1].defualt",
                          "unknown key 'defualt' in [[profile]] #1; did you mean 'default'?")
        assertConfigError(Fixture.profile() + Fixture.service(extra: "max_tunnel = 3"), key: "service[1].max_tunnel",
                          "did you mean 'max_tunnels'?")
        assertConfigError("[[forward]]\nlisten = \"udp://127.0.0.1:1\"\nvia = \"x\"\n", key: "forward[1].via",
                          "unknown key 'via' in [[forward]] #1; expected one of: listen, to, profile")
        assertConfigError("[tor]\ncontrl = \"127.0.0.1:9051\"\n", key: "tor.contrl", "unknown key 'contrl' in [tor]; did you mean 'control'?")
        assertConfigError("[socks.extra]\n", key: "socks.extra", "unknown key 'extra' in [socks]")
    }

    func testWrongTypesNameTheExpectedAndTheActualType() {
        assertConfigError("log_level = 3", key: "log_level", "expected a string, got an integer")
        assertConfigError("socks = \"127.0.0.1:1080\"", key: "socks", "expected a table ([socks]), got a string")
        assertConfigError("[[socks]]\nlisten = \"127.0.0.1:1\"\n", key: "socks", "expected a table ([socks]), got an array")
        assertConfigError("[peer]\nname = \"x\"\n", key: "peer", "expected an array of tables ([[peer]]), got a table")
        assertConfigError("peer = [1]", key: "peer[1]", "expected a table ([[peer]]), got an integer")
        assertConfigError("[tunnel]\nkeepalive_seconds = \"15\"\n", key: "tunnel.keepalive_seconds",
                          "expected a number of seconds, got a string")
        assertConfigError("[tunnel]\nstream_window = 1.5\n", key: "tunnel.stream_window",
                          "expected an integer, got a floating-point number")
        assertConfigError(Fixture.profile(extra: "default = \"yes\""), key: "profile[1] 'p'.default",
                          "expected true or false, got a string")
        assertConfigError(Fixture.peer(extra: "cell_size = 2024-01-01"), key: "peer[1] 'home'.cell_size",
                          "expected an integer, got a date")
        assertConfigError(Fixture.profile() + Fixture.service(expose: #""udp 5684 127.0.0.1:5684""#),
                          key: "service[1] 'coap'.expose", "expected an array of strings, got a string")
        assertConfigError(Fixture.profile() + Fixture.service(expose: #"["udp 1 127.0.0.1:1", 5]"#),
                          key: "service[1] 'coap'.expose[2]", "expected a string, got an integer")
    }

    func testAWronglyTypedSecretDoesNotShowItsValue() {
        let toml = Fixture.peer().replacingOccurrences(of: "psk = \"\(Fixture.psk)\"", with: "psk = [\"\(Fixture.psk)\"]")
        assertConfigError(toml, key: "peer[1] 'home'.psk", "expected a string, got an array")
    }

    // MARK: missing keys

    func testMissingRequiredKeysAreNamed() {
        assertConfigError("[socks]\nauth = \"optional\"\n", key: "socks.listen", "missing key 'listen' in [socks]")
        assertConfigError("[[profile]]\nanonymizer = \"tor\"\n", key: "profile[1].name", "missing key 'name' in [[profile]] #1")
        assertConfigError("[[profile]]\nname = \"p\"\n", key: "profile[1] 'p'.anonymizer",
                          "missing key 'anonymizer' in [[profile]] #1")
        assertConfigError("[[peer]]\nname = \"home\"\n", key: "peer[1] 'home'.address", "missing key 'address'")
        assertConfigError("[[peer]]\nname = \"home\"\naddress = \"\(Fixture.onionHost)\"\npsk = \"\(Fixture.psk)\"\n",
                          key: "peer[1] 'home'.public_key", "missing key 'public_key' (or 'public_key_file') in [[peer]] #1")
        assertConfigError("[[peer]]\nname = \"home\"\naddress = \"\(Fixture.onionHost)\"\npublic_key = \"\(Fixture.publicKey)\"\n",
                          key: "peer[1] 'home'.psk", "missing key 'psk' (or 'psk_file')")
        assertConfigError(Fixture.profile() + Fixture.peer() + "[[forward]]\nto = \"home:1\"\n", key: "forward[1].listen",
                          "missing key 'listen'")
        assertConfigError(Fixture.profile() + Fixture.peer() + "[[forward]]\nlisten = \"udp://127.0.0.1:1\"\n",
                          key: "forward[1].to", "missing key 'to'")
        assertConfigError(Fixture.profile(anonymizer: "none") + "[[service]]\nname = \"coap\"\n", key: "service[1] 'coap'.listen",
                          "missing key 'listen'")
        assertConfigError(Fixture.profile() + "[[service]]\nname = \"coap\"\nlisten = \"127.0.0.1:1\"\npsk = \"\(Fixture.psk)\"\n",
                          key: "service[1] 'coap'.private_key", "missing key 'private_key' (or 'private_key_file')")
        let noExpose = Fixture.profile() + Fixture.service().replacingOccurrences(of: "expose = [\"udp 5684 127.0.0.1:5684\"]",
                                                                                   with: "")
        assertConfigError(noExpose, key: "service[1] 'coap'.expose", "missing key 'expose'")
    }

    // MARK: values

    func testAnUnknownLogLevelListsTheLevels() {
        assertConfigError("log_level = \"verbose\"", key: "log_level",
                          "unknown log level 'verbose'; expected one of: trace, debug, info, notice, warning, error, critical")
        assertConfigError("log_level = \"warn\"", key: "log_level", "did you mean 'warning'?")
    }

    func testUnknownEnumValuesListTheChoices() {
        assertConfigError(Fixture.profile(anonymizer: "tro"), key: "profile[1] 'p'.anonymizer",
                          "unknown value 'tro'; expected one of: none, tor, i2p; did you mean 'tor'?")
        assertConfigError(Fixture.profile(extra: "shaping = \"steady\""), key: "profile[1] 'p'.shaping",
                          "expected one of: off, padded, constant, poisson")
        assertConfigError("[socks]\nlisten = \"127.0.0.1:1\"\nauth = \"none\"\n", key: "socks.auth",
                          "expected one of: optional, required")
    }

    func testSOCKSAndForwardListenAddressesMustBeLoopback() {
        for listen in ["0.0.0.0:1080", "[::]:1080", "192.168.1.2:1080", "localhost:1080", "[::ffff:127.0.0.1]:1080",
                       "128.0.0.1:1080"] {
            assertConfigError("[socks]\nlisten = \"\(listen)\"\n", key: "socks.listen",
                              "is not a loopback address: the SOCKS server must listen on 127.0.0.0/8 or [::1]")
        }
        assertConfigError(Fixture.profile() + Fixture.peer() + "[[forward]]\nlisten = \"udp://0.0.0.0:5684\"\nto = \"home:1\"\n",
                          key: "forward[1].listen", "0.0.0.0:5684 is not a loopback address: a forward must listen on")
    }

    func testMalformedListenAddressesAreExplained() {
        assertConfigError("[socks]\nlisten = \"127.0.0.1\"\n", key: "socks.listen", "'127.0.0.1' is not host:port: missing ':PORT'")
        assertConfigError("[socks]\nlisten = \"127.0.0.1:70000\"\n", key: "socks.listen",
                          "the port must be a number from 0 to 65535")
        assertConfigError("[socks]\nlisten = \"::1:1080\"\n", key: "socks.listen", "an IPv6 address needs brackets")
        assertConfigError(Fixture.profile() + Fixture.peer() + "[[forward]]\nlisten = \"127.0.0.1:5684\"\nto = \"home:1\"\n",
                          key: "forward[1].listen", "expected udp://HOST:PORT or tcp://HOST:PORT, got '127.0.0.1:5684'")
        assertConfigError(Fixture.profile() + Fixture.peer() + "[[forward]]\nlisten = \"sctp://127.0.0.1:1\"\nto = \"home:1\"\n",
                          key: "forward[1].listen", "expected udp://HOST:PORT or tcp://HOST:PORT")
        assertConfigError(Fixture.profile() + Fixture.service(extra: "").replacingOccurrences(of: "127.0.0.1:7000", with: "7000"),
                          key: "service[1] 'coap'.listen", "is not host:port")
    }

    func testTwoForwardsOnTheSameAddressAndProtocolAreRefused() {
        let forwards = """
        [[forward]]
        listen = "udp://127.0.0.1:5684"
        to = "home:1"
        [[forward]]
        listen = "tcp://127.0.0.1:5684"
        to = "home:2"
        [[forward]]
        listen = "udp://127.0.0.1:5684"
        to = "home:3"
        """
        assertConfigError(Fixture.profile() + Fixture.peer() + forwards, key: "forward[3].listen",
                          "udp://127.0.0.1:5684 is already the listen address of forward[1]")
    }

    func testTunnelValuesOutOfRangeAreRefused() {
        assertConfigError("[tunnel]\nkeepalive_seconds = 0\n", key: "tunnel.keepalive_seconds",
                          "must be more than 0 and at most 86400 seconds")
        assertConfigError("[tunnel]\nidle_timeout_seconds = -1.5\n", key: "tunnel.idle_timeout_seconds", "must be more than 0")
        assertConfigError("[tunnel]\nudp_flow_idle_seconds = inf\n", key: "tunnel.udp_flow_idle_seconds", "must be more than 0")
        assertConfigError("[tunnel]\nhandshake_timeout_seconds = nan\n", key: "tunnel.handshake_timeout_seconds",
                          "must be more than 0")
        assertConfigError("[tunnel]\nmax_reconnect_delay_seconds = 1e9\n", key: "tunnel.max_reconnect_delay_seconds",
                          "at most 86400 seconds")
        assertConfigError("[tunnel]\nstream_window = 4294967296\n", key: "tunnel.stream_window",
                          "must be from 1 to 4294967295, got 4294967296")
        assertConfigError("[socks]\nlisten = \"127.0.0.1:1\"\nmax_connections = 0\n", key: "socks.max_connections",
                          "must be from 1 to 1000000, got 0")
        assertConfigError(Fixture.profile() + Fixture.service(extra: "max_tunnels = 0"), key: "service[1] 'coap'.max_tunnels",
                          "must be from 1 to")
        assertConfigError(Fixture.profile() + Fixture.service(extra: "max_flows_per_tunnel = -3"),
                          key: "service[1] 'coap'.max_flows_per_tunnel", "must be from 1 to")
    }

    func testCellSizeMustBeFrom128To16384() throws {
        assertConfigError(Fixture.peer(extra: "cell_size = 127"), key: "peer[1] 'home'.cell_size",
                          "must be from 128 to 16384, got 127")
        assertConfigError(Fixture.profile() + Fixture.service(extra: "cell_size = 16385"), key: "service[1] 'coap'.cell_size",
                          "must be from 128 to 16384, got 16385")
        XCTAssertEqual(try parse(Fixture.peer(extra: "cell_size = 128")).peers.first?.cellSize, 128)
        XCTAssertEqual(try parse(Fixture.peer(extra: "cell_size = 16384")).peers.first?.cellSize, 16384)
    }

    // MARK: profiles

    func testDuplicateProfileNamesAreRefused() {
        assertConfigError(Fixture.profile(name: "a", extra: "default = true") + Fixture.profile(name: "a"),
                          key: "profile[2] 'a'.name", "duplicate profile name 'a' (also profile[1] 'a')")
    }

    func testMoreThanOneDefaultProfileIsRefused() {
        assertConfigError(Fixture.profile(name: "a", extra: "default = true") + Fixture.profile(name: "b")
            + Fixture.profile(name: "c", extra: "default = true"),
                          key: "profile[3] 'c'.default", "more than one default profile: profile[1] 'a' has default = true too")
    }

    func testSeveralProfilesWithoutADefaultAreRefused() {
        assertConfigError(Fixture.profile(name: "a") + Fixture.profile(name: "b"), key: "profile",
                          "2 profiles and none has default = true; mark exactly one as the default")
    }

    func testProfileNamesAreRestrictedToLettersDigitsDashAndUnderscore() {
        assertConfigError(Fixture.profile(name: "my profile"), key: "profile[1].name",
                          "'my profile' may hold only letters, digits, '-' and '_'")
        assertConfigError(Fixture.profile(name: ""), key: "profile[1].name", "must not be empty")
        assertConfigError(Fixture.profile(name: String(repeating: "x", count: 256)), key: "profile[1].name",
                          "must be at most 255 bytes, got 256")
        assertConfigError(Fixture.peer(name: "home.lan"), key: "peer[1].name", "may hold only letters, digits")
    }

    func testAllowDirectIsOnlyForAnonymizerNone() {
        assertConfigError(Fixture.profile(anonymizer: "tor", extra: "allow_direct = true"), key: "profile[1] 'p'.allow_direct",
                          "applies only to anonymizer 'none'")
    }

    func testAPasswordMustFitRFC1929() {
        assertConfigError(Fixture.profile(extra: "password = \"\""), key: "profile[1] 'p'.password",
                          "must be 1 to 255 bytes long (RFC 1929), got 0")
        assertConfigError(Fixture.profile(extra: "password = \"\(String(repeating: "p", count: 256))\""),
                          key: "profile[1] 'p'.password", "got 256")
    }

    func testASOCKSServerWithoutProfilesIsRefused() {
        assertConfigError("[socks]\nlisten = \"127.0.0.1:1080\"\n", key: "socks", "needs at least one [[profile]]")
    }

    // MARK: peers

    func testDuplicatePeerNamesAreRefused() {
        assertConfigError(Fixture.peer(name: "home") + Fixture.peer(name: "home", address: Fixture.i2pHost),
                          key: "peer[2] 'home'.name", "duplicate peer name 'home' (also peer[1] 'home')")
    }

    func testTwoPeersWithTheSameAnonymousAddressAreRefused() {
        assertConfigError(Fixture.peer(name: "a") + Fixture.peer(name: "b", address: Fixture.onionHost.uppercased()),
                          key: "peer[2] 'b'.address", "\(Fixture.onionHost) is already the address of peer[1] 'a'")
    }

    func testMalformedPeerAddressesAreExplained() {
        assertConfigError(Fixture.peer(address: "abc.onion"), key: "peer[1] 'home'.address",
                          "'abc.onion' is not a peer address: a v3 onion address has 56 base32 characters before '.onion', got 3")
        assertConfigError(Fixture.peer(address: "example.i2p"), key: "peer[1] 'home'.address", "only .b32.i2p addresses")
        assertConfigError(Fixture.peer(address: "192.0.2.1"), key: "peer[1] 'home'.address", "missing ':PORT'")
        assertConfigError(Fixture.peer(address: Fixture.onionHost + ":0"), key: "peer[1] 'home'.address",
                          "the port must be a number from 1 to 65535")
    }

    func testKeysMustBe32BytesOfBase64AndTheMessageSaysHowManyItGot() {
        let short = KeyEncoding.encode(Array(Fixture.pskBytes.prefix(31)))
        let long = KeyEncoding.encode(Fixture.pskBytes + [1])
        let shortError = assertConfigError(Fixture.peer().replacingOccurrences(of: Fixture.psk, with: short),
                                           key: "peer[1] 'home'.psk", "expected 32 bytes of base64, got 31")
        XCTAssertFalse(shortError?.description.contains(short) ?? true)
        assertConfigError(Fixture.peer().replacingOccurrences(of: Fixture.psk, with: long), key: "peer[1] 'home'.psk",
                          "expected 32 bytes of base64, got 33")
        assertConfigError(Fixture.peer().replacingOccurrences(of: Fixture.publicKey, with: ""), key: "peer[1] 'home'.public_key",
                          "expected 32 bytes of base64, got 0")
        let notBase64 = String(Fixture.privateKey.dropLast(2)) + "!="
        let error = assertConfigError(Fixture.profile() + Fixture.service().replacingOccurrences(of: Fixture.privateKey,
                                                                                                 with: notBase64),
                                      key: "service[1] 'coap'.private_key",
                                      "expected 32 bytes of base64 (44 characters, standard alphabet, '=' padded), "
                                          + "got 44 characters that are not strict base64")
        XCTAssertFalse(error?.description.contains(notBase64) ?? true)
    }

    func testGivingBothAnInlineKeyAndAKeyFileIsRefused() {
        assertConfigError(Fixture.peer(extra: "psk_file = \"home.psk\""), key: "peer[1] 'home'.psk",
                          "give either 'psk' or 'psk_file', not both")
        assertConfigError(Fixture.profile() + Fixture.service(extra: "private_key_file = \"k\""),
                          key: "service[1] 'coap'.private_key", "give either 'private_key' or 'private_key_file', not both")
        assertConfigError(Fixture.peer(extra: "public_key_file = \"k\""), key: "peer[1] 'home'.public_key",
                          "give either 'public_key' or 'public_key_file', not both")
    }

    // MARK: forwards

    func testAForwardToAnUnknownPeerIsRefused() {
        let forward = "[[forward]]\nlisten = \"udp://127.0.0.1:5684\"\nto = \"hom:5684\"\n"
        assertConfigError(Fixture.profile() + Fixture.peer() + forward, key: "forward[1].to",
                          "no [[peer]] named 'hom'; did you mean 'home'?")
        assertConfigError(Fixture.profile() + forward, key: "forward[1].to", "no [[peer]] named 'hom' (this file defines no peers)")
    }

    func testAForwardTargetNeedsAValidVirtualPort() {
        for to in ["home:0", "home:65536", "home:", "home:x80", "home:+80", "home:123456"] {
            assertConfigError(Fixture.profile() + Fixture.peer() + "[[forward]]\nlisten = \"udp://127.0.0.1:1\"\nto = \"\(to)\"\n",
                              key: "forward[1].to", "must be a number from 1 to 65535")
        }
        assertConfigError(Fixture.profile() + Fixture.peer() + "[[forward]]\nlisten = \"udp://127.0.0.1:1\"\nto = \"home\"\n",
                          key: "forward[1].to", "expected PEER:VPORT")
        assertConfigError(Fixture.profile() + Fixture.peer() + "[[forward]]\nlisten = \"udp://127.0.0.1:1\"\nto = \":80\"\n",
                          key: "forward[1].to", "expected PEER:VPORT")
    }

    func testAForwardOrServiceWithAnUnknownProfileIsRefused() {
        assertConfigError(Fixture.profile(name: "private") + Fixture.peer()
            + "[[forward]]\nlisten = \"udp://127.0.0.1:1\"\nto = \"home:1\"\nprofile = \"privte\"\n",
                          key: "forward[1].profile", "no [[profile]] named 'privte'; did you mean 'private'?")
        assertConfigError(Fixture.profile(name: "private") + Fixture.service(extra: "profile = \"other\""),
                          key: "service[1] 'coap'.profile", "no [[profile]] named 'other'; profiles: private")
        assertConfigError(Fixture.service(), key: "service[1] 'coap'.profile",
                          "no profile given and this file defines no [[profile]] to default to")
    }

    // MARK: services

    func testDuplicateServiceNamesAreRefused() {
        assertConfigError(Fixture.profile() + Fixture.service(name: "coap") + Fixture.service(name: "coap"),
                          key: "service[2] 'coap'.name", "duplicate service name 'coap' (also service[1] 'coap')")
    }

    func testMalformedExposeStringsAreExplained() {
        func expose(_ line: String) -> String { Fixture.profile() + Fixture.service(expose: "[\"\(line)\"]") }
        assertConfigError(expose("udp 5684"), key: "service[1] 'coap'.expose[1]",
                          "expected \"udp|tcp VPORT HOST:PORT\", as in \"udp 5684 127.0.0.1:5684\", got 'udp 5684'")
        assertConfigError(expose("udp 5684 -> 127.0.0.1:5684"), key: "service[1] 'coap'.expose[1]", "expected \"udp|tcp VPORT")
        assertConfigError(expose("sctp 5684 127.0.0.1:5684"), key: "service[1] 'coap'.expose[1]",
                          "'sctp' is not a protocol: expected udp or tcp")
        assertConfigError(expose("udp 0 127.0.0.1:5684"), key: "service[1] 'coap'.expose[1]",
                          "virtual port '0' must be a number from 1 to 65535")
        assertConfigError(expose("udp 5684 127.0.0.1"), key: "service[1] 'coap'.expose[1]",
                          "target '127.0.0.1' is not host:port: missing ':PORT'")
        assertConfigError(expose("udp 5684 127.0.0.1:0"), key: "service[1] 'coap'.expose[1]", "target port 0")
        assertConfigError(expose(""), key: "service[1] 'coap'.expose[1]", "expected \"udp|tcp VPORT HOST:PORT\"")
        assertConfigError(Fixture.profile() + Fixture.service(expose: "[]"), key: "service[1] 'coap'.expose",
                          "is empty: a service must expose at least one")
    }

    func testDuplicateVirtualPortsForTheSameProtocolAreRefused() throws {
        assertConfigError(Fixture.profile() + Fixture.service(expose: #"["udp 5684 127.0.0.1:1", "tcp 5684 127.0.0.1:2", "udp 5684 127.0.0.1:3"]"#),
                          key: "service[1] 'coap'.expose[3]", "duplicate virtual port udp 5684 (also expose[1])")
        // The same port over the other protocol is a different flow.
        XCTAssertEqual(try parse(Fixture.profile() + Fixture.service(expose: #"["udp 53 127.0.0.1:53", "tcp 53 127.0.0.1:53"]"#))
            .services.first?.exposes.count, 2)
    }

    // MARK: secrets

    func testNoErrorFromAConfigWithSecretsEverShowsThem() throws {
        // Break each key of the example in turn; every message must stay free of secrets.
        let breakages: [(String, String)] = [
            ("psk = \"\(Fixture.psk)\"", "psk = \"\(Fixture.psk)x\""),
            ("psk = \"\(Fixture.psk)\"", "psk = \"\(Fixture.psk.dropLast(4))\""),
            ("psk = \"\(Fixture.psk)\"", "psk = \"\(Fixture.psk) \""),
            ("psk = \"\(Fixture.psk)\"", "psk = \"\(Fixture.psk)\"\npsk_file = \"x\""),
            ("psk = \"\(Fixture.psk)\"", "psk = \"\(Fixture.psk)\"\npsk = \"\(Fixture.psk)\""),
            ("psk = \"\(Fixture.psk)\"", "psk = \(Fixture.psk)"),
            ("psk = \"\(Fixture.psk)\"", "psk = '''\(Fixture.psk)"),
            ("psk = \"\(Fixture.psk)\"", "psk = { value = \"\(Fixture.psk)\" }"),
            ("psk = \"\(Fixture.psk)\"", "\"\(Fixture.psk)\" = 1"),
            ("password = \"\(Fixture.password)\"", "password = \"\(Fixture.password)\" x"),
            ("password = \"\(Fixture.password)\"", "password = \"\(Fixture.password)\"\npassword = \"\(Fixture.password)\""),
            ("password = \"\(Fixture.password)\"", "pasword = \"\(Fixture.password)\""),
            ("password = \"\(Fixture.password)\"", "password = [\"\(Fixture.password)\"]"),
        ]
        for (original, broken) in breakages {
            for document in [Fixture.entry, Fixture.exit + "\n" + Fixture.profile(name: "x", extra: "password = \"\(Fixture.password)\"")] {
                guard document.contains(original) else { continue }
                let text = document.replacingOccurrences(of: original, with: broken)
                XCTAssertThrowsError(try parse(text), broken) { error in
                    for secret in Fixture.secrets {
                        XCTAssertFalse("\(error)".contains(secret), "\(error)")
                    }
                }
            }
        }
    }
}
