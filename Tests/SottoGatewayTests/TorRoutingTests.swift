import NIOSOCKS
import SottoConfig
import XCTest
@testable import SottoGateway

/// Where a tor profile sends a destination (DESIGN.md: a profile never falls back to another
/// anonymizer or to a direct connection; names are resolved by tor, never by the gateway).
final class TorRoutingTests: XCTestCase {
    static let onion = "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd.onion"
    static let portedOnion = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion"
    static let strangerOnion = "duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion"
    static let garlic = "ukeu3k5oycgaauneqgtnvselmt4yemvoilkln7jpvamvfx7dnkdq.b32.i2p"

    let hidden = Peer(name: "hidden", address: .onion(TorRoutingTests.onion, port: nil),
                      publicKey: [UInt8](repeating: 3, count: 32), psk: [UInt8](repeating: 4, count: 32))
    let ported = Peer(name: "ported", address: .onion(TorRoutingTests.portedOnion, port: 7000),
                      publicKey: [UInt8](repeating: 5, count: 32), psk: [UInt8](repeating: 6, count: 32))
    let home = Peer(name: "home", address: .hostPort(HostPort(host: "192.0.2.10", port: 7000)),
                    publicKey: [UInt8](repeating: 1, count: 32), psk: [UInt8](repeating: 2, count: 32))
    let garlicPeer = Peer(name: "garlic", address: .i2p(TorRoutingTests.garlic, port: nil),
                          publicKey: [UInt8](repeating: 7, count: 32), psk: [UInt8](repeating: 8, count: 32))

    let tor = Profile(name: "private", anonymizer: .tor)
    let open = Profile(name: "open", anonymizer: .none, allowDirect: true)
    let plain = Profile(name: "plain", anonymizer: .none)

    var router: Router {
        Router(config: SottoConfig(file: "test.toml", stateDir: "/tmp", profiles: [tor, open, plain],
                                   peers: [hidden, ported, home, garlicPeer]))
    }

    private func refusal(_ route: Route, file: StaticString = #filePath, line: UInt = #line) -> RouteRefusal? {
        guard case .refused(let refusal) = route else {
            XCTFail("expected a refusal, got \(route)", file: file, line: line)
            return nil
        }
        return refusal
    }

    func testATorProfileRoutesAPeerNamedByItsNameThroughTheTunnelWithTheVirtualPortAsGiven() {
        XCTAssertEqual(router.route(host: "hidden", port: 5684, profile: tor), .peer(name: "hidden", virtualPort: 5684))
        XCTAssertEqual(router.route(host: "ported", port: 80, profile: tor), .peer(name: "ported", virtualPort: 80))
    }

    func testATorProfileRoutesAPeerNamedByItsOnionAddressWhetherOrNotTheConfiguredAddressHasAPort() {
        XCTAssertEqual(router.route(host: Self.onion, port: 80, profile: tor), .peer(name: "hidden", virtualPort: 80))
        XCTAssertEqual(router.route(host: Self.onion.uppercased() + ".", port: 80, profile: tor),
                       .peer(name: "hidden", virtualPort: 80))
        // The peer's own port (7000) is where its tunnel listens; the SOCKS port is the virtual port.
        XCTAssertEqual(router.route(host: Self.portedOnion, port: 5684, profile: tor), .peer(name: "ported", virtualPort: 5684))
        XCTAssertEqual(router.route(host: Self.portedOnion.uppercased(), port: 1, profile: tor),
                       .peer(name: "ported", virtualPort: 1))
    }

    func testATorProfileReachesAHostPortPeerThroughTor() {
        XCTAssertEqual(router.route(host: "home", port: 443, profile: tor), .peer(name: "home", virtualPort: 443))
        XCTAssertNil(router.reachability(of: home, profile: tor))
        XCTAssertNil(router.reachability(of: hidden, profile: tor))
        XCTAssertNil(router.reachability(of: ported, profile: tor))
    }

    func testATorProfileSendsANonPeerHostToTorWithTheNameUnresolvedAndUnchanged() {
        XCTAssertEqual(router.route(host: "example.org", port: 443, profile: tor), .anonymized(host: "example.org", port: 443))
        // Case and a trailing dot are tor's to interpret; the gateway passes the name on as given.
        XCTAssertEqual(router.route(host: "WWW.Example.ORG.", port: 80, profile: tor),
                       .anonymized(host: "WWW.Example.ORG.", port: 80))
        XCTAssertEqual(router.route(host: "198.51.100.4", port: 53, profile: tor), .anonymized(host: "198.51.100.4", port: 53))
        XCTAssertEqual(router.route(host: "2001:db8::1", port: 22, profile: tor), .anonymized(host: "2001:db8::1", port: 22))
        // An onion service that is no peer is an ordinary tor stream.
        XCTAssertEqual(router.route(host: Self.strangerOnion, port: 443, profile: tor),
                       .anonymized(host: Self.strangerOnion, port: 443))
    }

    func testATorProfileRefusesI2PNamesAsNotAllowed() {
        for host in ["forum.i2p", Self.garlic.replacingOccurrences(of: "ukeu", with: "aaaa"), "FORUM.I2P.", "i2p", "I2P."] {
            guard let refusal = refusal(router.route(host: host, port: 80, profile: tor)) else { continue }
            XCTAssertEqual(refusal, .notAllowed(refusal.description), host)
            XCTAssertEqual(refusal.socksReply, .notAllowed, host)
            XCTAssertEqual(refusal.socksReply.value, 0x02, host)
            XCTAssertTrue(refusal.description.contains(host), refusal.description)
            XCTAssertTrue(refusal.description.contains("tor"), refusal.description)
        }
    }

    func testATorProfileRefusesAnI2PPeerByNameAndByAddressAsNotAllowed() {
        for host in ["garlic", Self.garlic, Self.garlic.uppercased()] {
            guard let refusal = refusal(router.route(host: host, port: 80, profile: tor)) else { continue }
            XCTAssertEqual(refusal.socksReply, .notAllowed, host)
            XCTAssertTrue(refusal.description.contains("garlic"), refusal.description)
            XCTAssertTrue(refusal.description.contains("I2P"), refusal.description)
        }
        XCTAssertEqual(router.reachability(of: garlicPeer, profile: tor)?.socksReply, .notAllowed)
    }

    func testANoneProfileNeverRoutesAnOnionNameEvenWithDirectConnectionsAllowed() {
        for profile in [open, plain] {
            for host in [Self.strangerOnion, Self.strangerOnion.uppercased() + ".", "facebook.onion", "onion", "forum.i2p"] {
                guard let refusal = refusal(router.route(host: host, port: 443, profile: profile)) else { continue }
                XCTAssertEqual(refusal.socksReply, .notAllowed, "\(profile.name) \(host)")
                XCTAssertTrue(refusal.description.contains(host), refusal.description)
            }
        }
    }

    func testANoneProfileRefusesOnionPeersRatherThanReachThemWithoutTor() {
        for profile in [open, plain] {
            for host in ["hidden", Self.onion, "ported", Self.portedOnion] {
                guard let refusal = refusal(router.route(host: host, port: 80, profile: profile)) else { continue }
                XCTAssertEqual(refusal.socksReply, .notAllowed, "\(profile.name) \(host)")
                XCTAssertTrue(refusal.description.contains("anonymizer none"), refusal.description)
            }
        }
    }

    func testOnlyTheTorProfileSendsNonPeersToTor() {
        // The same destination: tor → anonymized, none with allow_direct → direct, none without → refused.
        XCTAssertEqual(router.route(host: "example.org", port: 443, profile: tor), .anonymized(host: "example.org", port: 443))
        XCTAssertEqual(router.route(host: "example.org", port: 443, profile: open), .direct(host: "example.org", port: 443))
        XCTAssertEqual(refusal(router.route(host: "example.org", port: 443, profile: plain))?.socksReply, .notAllowed)
    }
}
