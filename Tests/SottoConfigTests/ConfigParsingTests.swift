import XCTest
@testable import SottoConfig

final class ConfigParsingTests: XCTestCase {
    func testEntryGatewayExampleParsesToTheExpectedValues() throws {
        let config = try parse(Fixture.entry)
        XCTAssertEqual(config.file, "gateway.toml")
        XCTAssertEqual(config.stateDir, "/var/lib/sotto-entry")
        XCTAssertEqual(config.logLevel, "debug")
        XCTAssertEqual(config.socks, SOCKSSettings(listen: HostPort(host: "127.0.0.1", port: 1080), auth: .required,
                                                   maxConnections: 200))
        XCTAssertEqual(config.tunnel, TunnelSettings(keepaliveSeconds: 5, idleTimeoutSeconds: 20.5))
        XCTAssertEqual(config.profiles, [
            Profile(name: "private", anonymizer: .tor, shaping: .constant, isDefault: true, password: Fixture.password),
            Profile(name: "lan", anonymizer: .none, shaping: .off, isDefault: false, allowDirect: true),
        ])
        XCTAssertEqual(config.defaultProfile?.name, "private")
        XCTAssertEqual(config.peers, [
            Peer(name: "home", address: .onion(Fixture.onionHost, port: 7000), publicKey: Fixture.publicKeyBytes,
                 psk: Fixture.pskBytes, cellSize: 1024),
        ])
        XCTAssertEqual(config.forwards, [
            Forward(proto: .udp, listen: HostPort(host: "127.0.0.1", port: 5684), peer: "home", virtualPort: 5684,
                    profile: "private"),
            Forward(proto: .tcp, listen: HostPort(host: "::1", port: 8080), peer: "home", virtualPort: 80, profile: "lan"),
        ])
        XCTAssertEqual(config.services, [])
        XCTAssertEqual(config.warnings, [])
    }

    func testExitGatewayExampleParsesToTheExpectedValues() throws {
        let config = try parse(Fixture.exit)
        XCTAssertNil(config.socks)
        XCTAssertEqual(config.peers, [])
        XCTAssertEqual(config.forwards, [])
        XCTAssertEqual(config.profiles, [Profile(name: "private", anonymizer: .tor, shaping: .poisson, isDefault: true)])
        XCTAssertEqual(config.services, [
            Service(name: "coap", profile: "private", listen: HostPort(host: "127.0.0.1", port: 7000),
                    privateKey: Fixture.privateKeyBytes, psk: Fixture.pskBytes, cellSize: 1024,
                    exposes: [
                        Expose(proto: .udp, virtualPort: 5684, target: HostPort(host: "127.0.0.1", port: 5684)),
                        Expose(proto: .tcp, virtualPort: 80, target: HostPort(host: "127.0.0.1", port: 8080)),
                        Expose(proto: .udp, virtualPort: 80, target: HostPort(host: "::1", port: 9000)),
                    ],
                    maxTunnels: 8, maxFlowsPerTunnel: 16),
        ])
        XCTAssertEqual(config.service(named: "coap")?.target(for: .tcp, virtualPort: 80), .fixed(HostPort(host: "127.0.0.1", port: 8080)))
        XCTAssertNil(config.service(named: "coap")?.target(for: .tcp, virtualPort: 5684))
    }

    func testEmptyFileGivesEveryTopLevelDefault() throws {
        let config = try SottoConfig.parse("", file: "empty.toml", baseDirectory: "/etc/sotto")
        let home = try XCTUnwrap(FileAccess.homeDirectory())
        XCTAssertEqual(config.stateDir, (home.hasSuffix("/") ? String(home.dropLast()) : home) + "/.local/share/sotto")
        XCTAssertEqual(config.logLevel, "info")
        XCTAssertNil(config.socks)
        XCTAssertEqual(config.tunnel, .defaults)
        XCTAssertTrue(config.profiles.isEmpty && config.peers.isEmpty && config.forwards.isEmpty && config.services.isEmpty)
        XCTAssertNil(config.defaultProfile)
    }

    func testTunnelDefaultsAreTheDocumentedValues() throws {
        let d = TunnelSettings.defaults
        XCTAssertEqual(d.keepaliveSeconds, 15)
        XCTAssertEqual(d.idleTimeoutSeconds, 45)
        XCTAssertEqual(d.handshakeTimeoutSeconds, 10)
        XCTAssertEqual(d.maxReconnectDelaySeconds, 30)
        XCTAssertEqual(d.udpFlowIdleSeconds, 120)
        XCTAssertEqual(d.streamWindow, 262_144)
        // An empty [tunnel] table is the same as none.
        XCTAssertEqual(try parse("[tunnel]\n").tunnel, d)
    }

    func testEveryTunnelKeyIsRead() throws {
        let config = try parse("""
        [tunnel]
        keepalive_seconds = 1.5
        idle_timeout_seconds = 2
        handshake_timeout_seconds = 3
        max_reconnect_delay_seconds = 5
        udp_flow_idle_seconds = 6
        stream_window = 7
        """)
        XCTAssertEqual(config.tunnel, TunnelSettings(keepaliveSeconds: 1.5, idleTimeoutSeconds: 2, handshakeTimeoutSeconds: 3,
                                                     maxReconnectDelaySeconds: 5, udpFlowIdleSeconds: 6,
                                                     streamWindow: 7))
    }

    func testSOCKSDefaultsAreOptionalAuthAnd1024Connections() throws {
        let config = try parse("[socks]\nlisten = \"[::1]:1080\"\n" + Fixture.profile())
        XCTAssertEqual(config.socks, SOCKSSettings(listen: HostPort(host: "::1", port: 1080), auth: .optional, maxConnections: 1024))
    }

    func testProfileDefaultsAreShapingOffNoDirectNoPassword() throws {
        let profile = try XCTUnwrap(parse(Fixture.profile(name: "solo", anonymizer: "i2p")).profiles.first)
        XCTAssertEqual(profile, Profile(name: "solo", anonymizer: .i2p, shaping: .off, isDefault: true, allowDirect: false,
                                        password: nil))
    }

    func testTheOnlyProfileIsTheDefaultEvenWithoutDefaultTrue() throws {
        let config = try parse(Fixture.profile(name: "only"))
        XCTAssertEqual(config.defaultProfile?.name, "only")
        XCTAssertEqual(config.profiles.first?.isDefault, true)
    }

    func testPeerCellSizeDefaultsTo514AndTo498ForAnOnionPeer() throws {
        // Fixture.peer() is an onion peer: 498 fills exactly one tor relay cell.
        XCTAssertEqual(try parse(Fixture.peer()).peers.first?.cellSize, 498)
        let plain = "[[peer]]\nname = \"lan\"\naddress = \"127.0.0.1:7000\"\npublic_key = \"\(Fixture.publicKey)\"\npsk = \"\(Fixture.psk)\"\n"
        XCTAssertEqual(try parse(plain).peers.first?.cellSize, 514)
        XCTAssertEqual(try parse(Fixture.peer(extra: "cell_size = 600")).peers.first?.cellSize, 600)
    }

    func testServiceCellSizeDefaultsTo498UnderATorProfileAnd514Otherwise() throws {
        XCTAssertEqual(try parse(Fixture.profile() + Fixture.service()).services.first?.cellSize, 498)
        let none = Fixture.profile(anonymizer: "none") + Fixture.service()
        XCTAssertEqual(try parse(none).services.first?.cellSize, 514)
    }

    func testForwardProfileDefaultsToTheDefaultProfile() throws {
        let config = try parse(Fixture.profile(name: "a") + Fixture.profile(name: "b", extra: "default = true")
            + Fixture.peer() + "[[forward]]\nlisten = \"udp://127.0.0.1:5684\"\nto = \"home:5684\"\n")
        XCTAssertEqual(config.forwards.first?.profile, "b")
    }

    func testServiceDefaultsAreProfileCellSizeAndLimits() throws {
        let service = try XCTUnwrap(parse(Fixture.profile(name: "exit", anonymizer: "none") + Fixture.service()).services.first)
        XCTAssertEqual(service.profile, "exit")
        XCTAssertEqual(service.cellSize, 514)
        XCTAssertEqual(service.maxTunnels, 64)
        XCTAssertEqual(service.maxFlowsPerTunnel, 256)
    }

    func testStateDirTildeIsExpandedAndRelativePathsFollowTheConfigFolder() throws {
        let home = try XCTUnwrap(FileAccess.homeDirectory())
        let base = home.hasSuffix("/") ? String(home.dropLast()) : home
        XCTAssertEqual(try parse(#"state_dir = "~/sotto""#).stateDir, base + "/sotto")
        XCTAssertEqual(try parse(#"state_dir = "~""#).stateDir, home)
        XCTAssertEqual(try parse(#"state_dir = "state""#, baseDirectory: "/etc/sotto").stateDir, "/etc/sotto/state")
        XCTAssertEqual(try parse(#"state_dir = "/srv/sotto""#, baseDirectory: "/etc/sotto").stateDir, "/srv/sotto")
    }

    func testEveryLogLevelIsAccepted() throws {
        for level in ["trace", "debug", "info", "notice", "warning", "error", "critical"] {
            XCTAssertEqual(try parse("log_level = \"\(level)\"").logLevel, level)
        }
    }

    func testPeerLookupByNameAndByAddressIgnoresCaseAndPort() throws {
        let config = try parse(Fixture.peer(name: "home") + Fixture.peer(name: "i2p", address: Fixture.i2pHost)
            + Fixture.peer(name: "lan", address: "192.0.2.1:7000"))
        XCTAssertEqual(config.peer(named: "home")?.name, "home")
        XCTAssertNil(config.peer(named: "HOME"))
        XCTAssertEqual(config.peer(forAddress: Fixture.onionHost)?.name, "home")
        XCTAssertEqual(config.peer(forAddress: Fixture.onionHost.uppercased() + ":5684")?.name, "home")
        XCTAssertEqual(config.peer(forAddress: Fixture.i2pHost.uppercased())?.name, "i2p")
        XCTAssertEqual(config.peer(forAddress: Fixture.i2pHost + ":80")?.name, "i2p")
        // Only anonymous addresses name a peer; a host:port peer is reached by its name.
        XCTAssertNil(config.peer(forAddress: "192.0.2.1"))
        XCTAssertNil(config.peer(forAddress: "example.onion"))
    }

    func testForwardToAPeerAddressIsStoredAsThePeerName() throws {
        let config = try parse(Fixture.profile() + Fixture.peer(name: "home")
            + "[[forward]]\nlisten = \"tcp://127.0.0.2:80\"\nto = \"\(Fixture.onionHost.uppercased()):80\"\n")
        XCTAssertEqual(config.forwards.first?.peer, "home")
        XCTAssertEqual(config.forwards.first?.virtualPort, 80)
    }

    func testLoopbackAcceptsAll127AddressesAndEverySpellingOfIPv6Loopback() throws {
        for listen in ["127.0.0.1:1", "127.255.255.254:1", "[::1]:1", "[0:0:0:0:0:0:0:1]:1", "127.0.0.1:0"] {
            XCTAssertEqual(try parse("[socks]\nlisten = \"\(listen)\"\n" + Fixture.profile()).socks?.listen.isLoopback, true,
                           listen)
        }
    }

    func testProfileAndPeerNamesMayUseLettersDigitsDashAndUnderscore() throws {
        let config = try parse(Fixture.profile(name: "Tor_2-b") + Fixture.peer(name: "exit_1-A"))
        XCTAssertEqual(config.profiles.first?.name, "Tor_2-b")
        XCTAssertEqual(config.peers.first?.name, "exit_1-A")
    }
}
