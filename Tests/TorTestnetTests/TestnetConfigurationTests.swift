import XCTest
@testable import TorTestnet

/// A network laid out on made-up ports and keys: the pure configuration, no tor.
func sampleNetwork(directory: String = "/tmp/net1") throws -> TorTestnetInfo {
    var fingerprints: [String: String] = [:]
    var v3idents: [String: String] = [:]
    for (index, node) in TestnetLayout.nodes.enumerated() where node.isRelay {
        fingerprints[node.name] = String(repeating: String(index, radix: 16, uppercase: true), count: 40)
        if node.kind == .authority { v3idents[node.name] = String(repeating: "A", count: 39) + String(index) }
    }
    return try TorTestnetInfo(directory: directory, ports: Array(40001...40012), fingerprints: fingerprints, v3idents: v3idents)
}

final class TestnetDirectoryTests: XCTestCase {
    func testRelativePathsBecomeAbsoluteAndNormalised() throws {
        XCTAssertEqual(try TestnetDirectory.normalize("net", currentDirectory: "/home/u"), "/home/u/net")
        XCTAssertEqual(try TestnetDirectory.normalize("./a/../net/", currentDirectory: "/home/u"), "/home/u/net")
        XCTAssertEqual(try TestnetDirectory.normalize("/tmp//x/./y/", currentDirectory: "/ignored"), "/tmp/x/y")
        XCTAssertEqual(try TestnetDirectory.normalize("../../../x", currentDirectory: "/a"), "/x")
    }

    func testCharactersThatTorrcShellOrTomlWouldReadAreRefused() {
        for bad in ["/tmp/a b", "/tmp/a#b", "/tmp/a\"b", "/tmp/a'b", "/tmp/a\\b", "/tmp/a$b", "/tmp/a\nb", "/tmp/~x",
                    "/tmp/a;b", "/tmp/a`b", "/tmp/é", "/tmp/a\tb", "/tmp/a\0b"] {
            XCTAssertThrowsError(try TestnetDirectory.normalize(bad, currentDirectory: "/"), "accepted \(bad.debugDescription)") { error in
                guard case TorTestnetError.invalidDirectory = error else { return XCTFail("\(error)") }
            }
        }
    }

    func testRootEmptyAndOverlongPathsAreRefused() {
        XCTAssertThrowsError(try TestnetDirectory.normalize("/", currentDirectory: "/"))
        XCTAssertThrowsError(try TestnetDirectory.normalize("..", currentDirectory: "/a"))
        XCTAssertThrowsError(try TestnetDirectory.normalize("", currentDirectory: "/a"))
        XCTAssertThrowsError(try TestnetDirectory.normalize("/" + String(repeating: "a", count: 4000), currentDirectory: "/"))
    }
}

final class VotingScheduleTests: XCTestCase {
    func testFirstVoteComesTheChosenDelayAfterStart() {
        let schedule = VotingSchedule()
        // 2025-11-22 00:00:00 UTC is 1763769600; the offset counts from midnight UTC.
        let midnight = 1_763_769_600
        XCTAssertEqual(schedule.startOffset(now: midnight), 8)
        XCTAssertEqual(schedule.startOffset(now: midnight + 2), 0)
        XCTAssertEqual(schedule.startOffset(now: midnight + 5), 3)
        for now in midnight..<(midnight + 100) {
            let offset = schedule.startOffset(now: now)
            XCTAssertTrue((0..<schedule.interval).contains(offset))
            // The next consensus period starts at midnight + offset + k * interval; its vote is
            // voteDelay + distDelay earlier, and that must be firstVoteAfter seconds from now.
            var periodStart = midnight + offset
            while periodStart <= now { periodStart += schedule.interval }
            let vote = periodStart - schedule.voteDelay - schedule.distDelay
            XCTAssertEqual(vote - now, schedule.firstVoteAfter, "now = midnight + \(now - midnight)")
        }
    }

    func testOtherSchedulesKeepTheSameRule() {
        let schedule = VotingSchedule(interval: 20, voteDelay: 3, distDelay: 3, firstVoteAfter: 6)
        XCTAssertEqual(schedule.startOffset(now: 0), 12)
        XCTAssertEqual(schedule.startOffset(now: 86_400 + 9), 1)
        XCTAssertEqual(schedule.startOffset(now: -1), 11)
    }
}

final class TorTestnetInfoTests: XCTestCase {
    func testPortsAreAssignedInLayoutOrder() throws {
        let network = try sampleNetwork()
        XCTAssertEqual(network.authorities.map(\.name), ["auth0", "auth1", "auth2"])
        XCTAssertEqual(network.authorities.map(\.orPort), [40001, 40003, 40005])
        XCTAssertEqual(network.authorities.map(\.dirPort), [40002, 40004, 40006])
        XCTAssertEqual(network.relays.filter { $0.kind != .authority }.map(\.orPort), [40007, 40008, 40009])
        XCTAssertEqual(network.exit.name, "exit0")
        XCTAssertEqual([network.clientSocksPort, network.clientControlPort, network.onionHostControlPort], [40010, 40011, 40012])
        XCTAssertEqual(network.clientCookieFile, "/tmp/net1/nodes/client/control_auth_cookie")
        XCTAssertEqual(network.onionHostCookieFile, "/tmp/net1/nodes/onionhost/control_auth_cookie")
        XCTAssertEqual(network.gatewayTorrcPath, "/tmp/net1/gateway.torrc")
    }

    func testWrongPortCountsDuplicatesAndMissingKeysAreRefused() throws {
        let good = try sampleNetwork()
        var fingerprints = Dictionary(uniqueKeysWithValues: good.relays.map { ($0.name, $0.fingerprint) })
        let v3idents = Dictionary(uniqueKeysWithValues: good.authorities.map { ($0.name, $0.v3ident!) })
        XCTAssertThrowsError(try TorTestnetInfo(directory: "/tmp/n", ports: Array(40001...40011), fingerprints: fingerprints, v3idents: v3idents))
        XCTAssertThrowsError(try TorTestnetInfo(directory: "/tmp/n", ports: Array(40001...40011) + [40001], fingerprints: fingerprints, v3idents: v3idents))
        XCTAssertThrowsError(try TorTestnetInfo(directory: "/tmp/n", ports: [0] + Array(40002...40012), fingerprints: fingerprints, v3idents: v3idents))
        XCTAssertThrowsError(try TorTestnetInfo(directory: "/tmp/n", ports: Array(40001...40012), fingerprints: fingerprints, v3idents: [:]))
        fingerprints["exit0"] = "nothex"
        XCTAssertThrowsError(try TorTestnetInfo(directory: "/tmp/n", ports: Array(40001...40012), fingerprints: fingerprints, v3idents: v3idents))
    }

    func testEnvironmentLinesAreTheScriptsKeysPlusTheGatewayTorrc() throws {
        XCTAssertEqual(try sampleNetwork().environmentLines(), """
            TOR_TESTNET_DIR=/tmp/net1
            TOR_SOCKS_PORT=40010
            TOR_CONTROL_PORT=40011
            TOR_COOKIE=/tmp/net1/nodes/client/control_auth_cookie
            ONION_CONTROL_PORT=40012
            ONION_COOKIE=/tmp/net1/nodes/onionhost/control_auth_cookie
            TOR_GATEWAY_TORRC=/tmp/net1/gateway.torrc

            """)
    }

    func testTomlSnippetIncludesTheGatewayTorrcAndCommentsTheExternalTorAlternative() throws {
        let lines = try sampleNetwork().tomlSnippet().split(separator: "\n").map(String.init)
        let active = lines.filter { !$0.hasPrefix("#") && !$0.isEmpty }
        XCTAssertEqual(active, ["[tor]", "torrc_include = \"/tmp/net1/gateway.torrc\""])
        XCTAssertTrue(lines.contains("# control = \"127.0.0.1:40011\""))
        XCTAssertTrue(lines.contains("# cookie_file = \"/tmp/net1/nodes/client/control_auth_cookie\""))
        XCTAssertTrue(lines.contains("# control = \"127.0.0.1:40012\""))
    }

    // MARK: ports.env

    func testPortsFileReadsBackWhatWasWritten() throws {
        let network = try sampleNetwork()
        XCTAssertEqual(try TorTestnetInfo(portsFile: network.portsFileText()), network)
    }

    func testPortsFileToleratesCommentsBlankLinesUnknownKeysAndCRLF() throws {
        let network = try sampleNetwork()
        let text = "# comment\n\nSOMETHING_NEW=1\n" + network.portsFileText().replacingOccurrences(of: "\n", with: "\r\n")
        XCTAssertEqual(try TorTestnetInfo(portsFile: text), network)
    }

    func testPortsFileRejectsMalformedContent() throws {
        let good = try sampleNetwork().portsFileText()
        func replacing(_ old: String, _ new: String) -> String {
            XCTAssertTrue(good.contains(old), old)
            return good.replacingOccurrences(of: old, with: new)
        }
        let cases: [(String, String)] = [
            ("", "TOR_TESTNET_DIR is missing"),
            (replacing("TOR_SOCKS_PORT=40010\n", ""), "TOR_SOCKS_PORT is missing"),
            (good + "TOR_SOCKS_PORT=40010\n", "appears twice"),
            (replacing("TOR_SOCKS_PORT=40010", "TOR_SOCKS_PORT=0"), "no TCP port"),
            (replacing("TOR_SOCKS_PORT=40010", "TOR_SOCKS_PORT=70000"), "no TCP port"),
            (replacing("TOR_SOCKS_PORT=40010", "TOR_SOCKS_PORT=4001x"), "no TCP port"),
            (replacing("TOR_SOCKS_PORT=40010", "TOR_SOCKS_PORT="), "no TCP port"),
            (replacing("TOR_SOCKS_PORT=40010", "TOR_SOCKS_PORT=40011"), "same port"),
            (replacing("TOR_SOCKS_PORT=40010", "TOR_SOCKS_PORT 40010"), "expected KEY=VALUE"),
            (replacing("TOR_SOCKS_PORT=40010", "tor_socks_port=40010"), "is no KEY"),
            (replacing("TOR_TESTNET_DIR=/tmp/net1", "TOR_TESTNET_DIR=net1"), "not an absolute"),
            (replacing("TOR_TESTNET_DIR=/tmp/net1", "TOR_TESTNET_DIR=/tmp/a b"), "TOR_TESTNET_DIR"),
            (replacing("TOR_TESTNET_AUTH1_V3IDENT=", "TOR_TESTNET_AUTH1_V3IDENT=Z"), "hex digits"),
            (String(good[..<good.prefix(good.count / 2).lastIndex(of: "\n")!]), "is missing"),  // truncated at a line end
            (String(good.prefix(good.count / 2)), "line "),  // truncated within a line
            (good + String(repeating: "#", count: TestnetFiles.maximumFileSize), "more than"),
        ]
        for (text, expected) in cases {
            XCTAssertThrowsError(try TorTestnetInfo(portsFile: text), expected) { error in
                XCTAssertTrue("\(error)".contains(expected), "expected '\(expected)' in: \(error)")
            }
        }
    }
}

final class TestnetTorrcTests: XCTestCase {
    func torrcs() throws -> [String: String] {
        let network = try sampleNetwork()
        var result: [String: String] = [:]
        for node in TestnetLayout.nodes {
            result[node.name] = TestnetTorrc.text(for: node, network: network, schedule: VotingSchedule(), votingOffset: 7)
        }
        return result
    }

    func lines(_ text: String, _ keyword: String) -> [String] {
        text.split(separator: "\n").map(String.init).filter { $0.hasPrefix(keyword + " ") }
    }

    func testEveryTorrcTrustsExactlyThePrivateAuthorities() throws {
        let network = try sampleNetwork()
        let expected = network.authorities.map(\.dirAuthorityLine!)
        XCTAssertEqual(expected[0], "DirAuthority auth0 orport=40001 no-v2 v3ident=\(network.authorities[0].v3ident!) 127.0.0.1:40002 \(network.authorities[0].fingerprint)")
        for (name, text) in try torrcs() + [("gateway", TestnetTorrc.gateway(network: network))] {
            XCTAssertEqual(lines(text, "DirAuthority"), expected, name)
            XCTAssertTrue(text.contains("\nTestingTorNetwork 1\n"), name)
            XCTAssertTrue(text.contains("\nUseDefaultFallbackDirs 0\n"), name)
            XCTAssertTrue(text.contains("\nOutboundBindAddress 127.0.0.1\n"), name)
            XCTAssertTrue(lines(text, "AlternateDirAuthority").isEmpty && lines(text, "FallbackDir").isEmpty, name)
        }
    }

    func testEveryListenerIsOnLoopbackOrOff() throws {
        for (name, text) in try torrcs() {
            for keyword in ["ORPort", "DirPort", "SocksPort", "ControlPort"] {
                for line in lines(text, keyword) {
                    let value = line.dropFirst(keyword.count + 1)
                    XCTAssertTrue(value == "0" || value.hasPrefix("127.0.0.1:"), "\(name): \(line)")
                }
            }
        }
    }

    func testNodeKindsGetTheirRoles() throws {
        let all = try torrcs()
        for name in ["auth0", "auth1", "auth2"] {
            let text = all[name]!
            XCTAssertTrue(text.contains("\nV3AuthoritativeDirectory 1\n"))
            XCTAssertTrue(text.contains("\nTestingV3AuthVotingStartOffset 7\n"))
            XCTAssertTrue(text.contains("\nV3AuthVotingInterval 10\n"))
            XCTAssertEqual(lines(text, "ExitPolicy"), ["ExitPolicy reject *:*"])
        }
        for name in ["relay0", "relay1"] {
            XCTAssertTrue(all[name]!.contains("\nDirCache 0\n"), name)
            XCTAssertFalse(all[name]!.contains("AuthoritativeDirectory"), name)
            XCTAssertEqual(lines(all[name]!, "ExitPolicy"), ["ExitPolicy reject *:*"])
        }
        let exit = all["exit0"]!
        // Order matters: the first matching rule wins.
        XCTAssertEqual(lines(exit, "ExitPolicy"), ["ExitPolicy accept 127.0.0.0/8:*", "ExitPolicy reject *:*"])
        XCTAssertTrue(exit.contains("\nServerDNSResolvConfFile /tmp/net1/resolv.conf\n"))
        XCTAssertTrue(exit.contains("\nRefuseUnknownExits 0\n"))
        XCTAssertTrue(exit.contains("\nExitRelay 1\n"))

        let client = all["client"]!
        XCTAssertEqual(lines(client, "SocksPort"), ["SocksPort 127.0.0.1:40010 ExtendedErrors"])
        XCTAssertEqual(lines(client, "ControlPort"), ["ControlPort 127.0.0.1:40011"])
        XCTAssertTrue(client.contains("\nCookieAuthFile /tmp/net1/nodes/client/control_auth_cookie\n"))
        XCTAssertTrue(lines(client, "ORPort").isEmpty)
        let onion = all["onionhost"]!
        XCTAssertEqual(lines(onion, "SocksPort"), ["SocksPort 0"])
        XCTAssertEqual(lines(onion, "ControlPort"), ["ControlPort 127.0.0.1:40012"])
        for text in [client, onion] {
            for option in ["UseMicrodescriptors 0", "UseEntryGuards 0", "VanguardsLiteEnabled 0"] {
                XCTAssertTrue(text.contains("\n\(option)\n"), option)
            }
        }
    }

    func testHsDirAndExitVotesNameTheRightRelays() throws {
        let network = try sampleNetwork()
        let text = try torrcs()["auth0"]!
        XCTAssertEqual(lines(text, "TestingDirAuthVoteHSDir"),
                       ["TestingDirAuthVoteHSDir " + network.authorities.map(\.fingerprint).joined(separator: ",")])
        XCTAssertEqual(lines(text, "TestingDirAuthVoteExit"), ["TestingDirAuthVoteExit \(network.exit.fingerprint)"])
    }

    func testEachNodeHasItsOwnFolderPidFileAndLog() throws {
        for (name, text) in try torrcs() {
            XCTAssertEqual(lines(text, "DataDirectory"), ["DataDirectory /tmp/net1/nodes/\(name)"])
            XCTAssertEqual(lines(text, "PidFile"), ["PidFile /tmp/net1/nodes/\(name)/tor.pid"])
            XCTAssertEqual(lines(text, "Log"), ["Log notice file /tmp/net1/nodes/\(name)/notice.log"])
            XCTAssertEqual(lines(text, "Nickname"), ["Nickname \(name)"])
        }
    }

    func testGatewayTorrcLeavesTheGatewaysOwnSettingsAlone() throws {
        let text = TestnetTorrc.gateway(network: try sampleNetwork())
        for keyword in ["DataDirectory", "ControlPort", "SocksPort", "Log", "PidFile", "ORPort", "DirPort", "Nickname", "RunAsDaemon",
                        "CookieAuthentication", "CookieAuthFile"] {
            XCTAssertTrue(lines(text, keyword).isEmpty, "gateway.torrc sets \(keyword)")
        }
        for option in ["UseMicrodescriptors 0", "UseEntryGuards 0", "VanguardsLiteEnabled 0", "GeoIPFile /tmp/net1/geoip-empty",
                       "GeoIPv6File /tmp/net1/geoip6-empty"] {
            XCTAssertTrue(text.contains("\n\(option)\n"), option)
        }
    }
}

private func + (lhs: [String: String], rhs: [(String, String)]) -> [(String, String)] {
    lhs.map { ($0.key, $0.value) } + rhs
}
