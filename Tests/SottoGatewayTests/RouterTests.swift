import NIOSOCKS
import SottoConfig
import XCTest
@testable import SottoGateway

/// Where a SOCKS destination goes, decided without DNS (configuration.md, "[[peer]]" and
/// "allow_direct"; DESIGN.md: a profile never falls back to a direct connection).
final class RouterTests: XCTestCase {
    static let onion = "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd.onion"
    static let garlic = "ukeu3k5oycgaauneqgtnvselmt4yemvoilkln7jpvamvfx7dnkdq.b32.i2p"

    let home = Peer(name: "home", address: .hostPort(HostPort(host: "192.0.2.10", port: 7000)),
                    publicKey: [UInt8](repeating: 1, count: 32), psk: [UInt8](repeating: 2, count: 32))
    let hidden = Peer(name: "hidden", address: .onion(RouterTests.onion, port: nil),
                      publicKey: [UInt8](repeating: 3, count: 32), psk: [UInt8](repeating: 4, count: 32))
    let garlicPeer = Peer(name: "garlic", address: .i2p(RouterTests.garlic, port: nil),
                          publicKey: [UInt8](repeating: 5, count: 32), psk: [UInt8](repeating: 6, count: 32))

    let plain = Profile(name: "plain", anonymizer: .none)
    let open = Profile(name: "open", anonymizer: .none, allowDirect: true)
    let tor = Profile(name: "private", anonymizer: .tor)
    let i2p = Profile(name: "garlic-route", anonymizer: .i2p)

    var router: Router {
        Router(config: SottoConfig(file: "test.toml", stateDir: "/tmp", profiles: [plain, open, tor, i2p],
                                   peers: [home, hidden, garlicPeer]))
    }

    func testAPeerNamedByItsNameRoutesToThatPeerWithTheVirtualPortAsGiven() {
        XCTAssertEqual(router.route(host: "home", port: 5684, profile: plain), .peer(name: "home", virtualPort: 5684))
        XCTAssertEqual(router.route(host: "home", port: 80, profile: open), .peer(name: "home", virtualPort: 80))
    }

    func testAPeerIsFoundByItsOnionAddressInAnyCaseAndWithATrailingDot() {
        XCTAssertEqual(router.peer(forHost: Self.onion)?.name, "hidden")
        XCTAssertEqual(router.peer(forHost: Self.onion.uppercased())?.name, "hidden")
        XCTAssertEqual(router.peer(forHost: Self.onion + ".")?.name, "hidden")
    }

    func testAPeerIsFoundByItsI2PAddress() {
        XCTAssertEqual(router.peer(forHost: Self.garlic)?.name, "garlic")
        XCTAssertEqual(router.peer(forHost: Self.garlic.uppercased())?.name, "garlic")
    }

    func testAnOnionAddressThatDiffersByOneCharacterIsNoPeer() {
        var other = Array(Self.onion)
        other[0] = other[0] == "a" ? "b" : "a"
        XCTAssertNil(router.peer(forHost: String(other)))
    }

    func testANonPeerIsRefusedAsNotAllowedByRulesetWhenDirectConnectionsAreOff() {
        let route = router.route(host: "example.org", port: 443, profile: plain)
        guard case .refused(let refusal) = route else {
            return XCTFail("a non-peer under a profile without allow_direct was not refused: \(route)")
        }
        XCTAssertEqual(refusal.socksReply, .notAllowed)
        XCTAssertEqual(refusal.socksReply.value, 0x02)
        XCTAssertTrue(refusal.description.contains("example.org:443"), refusal.description)
        XCTAssertTrue(refusal.description.contains("plain"), refusal.description)
        XCTAssertTrue(refusal.description.contains("direct"), refusal.description)
    }

    func testANonPeerIsRoutedDirectUnchangedWhenTheNoneProfileAllowsDirectConnections() {
        XCTAssertEqual(router.route(host: "example.org", port: 443, profile: open), .direct(host: "example.org", port: 443))
        XCTAssertEqual(router.route(host: "198.51.100.4", port: 53, profile: open), .direct(host: "198.51.100.4", port: 53))
    }

    func testAnI2PProfileRefusesANonPeerAsNetworkUnreachableInsteadOfFallingBack() {
        let route = router.route(host: "example.org", port: 443, profile: i2p)
        guard case .refused(let refusal) = route else {
            return XCTFail("profile \(i2p.name) let a non-peer through: \(route)")
        }
        XCTAssertEqual(refusal.socksReply.value, 0x03)
        XCTAssertTrue(refusal.description.contains("i2p"), refusal.description)
    }

    func testATorProfileSendsANonPeerThroughTorUnresolved() {
        XCTAssertEqual(router.route(host: "example.org", port: 443, profile: tor), .anonymized(host: "example.org", port: 443))
    }

    func testAnI2PProfileRefusesEveryPeerRatherThanReachItAnotherWay() {
        for host in ["home", "hidden", Self.onion, "garlic", Self.garlic] {
            let route = router.route(host: host, port: 80, profile: i2p)
            guard case .refused(let refusal) = route else {
                return XCTFail("profile \(i2p.name) routed \(host) as \(route) in a build that cannot drive i2p")
            }
            XCTAssertEqual(refusal.socksReply, .networkUnreachable, "\(i2p.name) \(host)")
        }
    }

    func testAnOnionOrI2PPeerIsUnreachableUnderANoneProfileEvenWithDirectConnectionsAllowed() {
        for profile in [plain, open] {
            for peer in [hidden, garlicPeer] {
                let refusal = router.reachability(of: peer, profile: profile)
                XCTAssertEqual(refusal?.socksReply, .notAllowed, "\(peer.name) under \(profile.name)")
                XCTAssertTrue(refusal?.description.contains(peer.name) ?? false)
            }
            for host in ["hidden", Self.onion, "garlic", Self.garlic] {
                let route = router.route(host: host, port: 80, profile: profile)
                guard case .refused(.notAllowed) = route else {
                    return XCTFail("\(host) under profile \(profile.name) was routed as \(route)")
                }
            }
        }
    }

    func testAHostPortPeerIsReachableUnderANoneProfile() {
        XCTAssertNil(router.reachability(of: home, profile: plain))
        XCTAssertNil(router.reachability(of: home, profile: open))
    }

    /// RFC 7686: .onion names must never reach DNS; a `.b32.i2p` name cannot resolve either. A
    /// profile that allows direct connections must still not hand such a name to the resolver.
    func testAnOnionOrI2PNameThatIsNoPeerIsNeverConnectedDirectly() {
        for host in ["duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion",
                     "DUCKDUCKGOGG42XJOC72X3SJASOWOARFBGCMVFIMAFTT6TWAGSWZCZAD.ONION",
                     "duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion.",
                     "aaaabbbbccccddddeeeeffffgggghhhhiiiijjjjkkkkllllmmmm.b32.i2p"] {
            let route = router.route(host: host, port: 443, profile: open)
            if case .direct = route {
                XCTFail("\(host) would be resolved and connected directly: \(route)")
            }
        }
    }
}
