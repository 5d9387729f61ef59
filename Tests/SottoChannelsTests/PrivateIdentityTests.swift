import XCTest
@testable import SottoChannels

final class PrivateIdentityTests: XCTestCase {
    private let t0 = TestChannels.t0

    /// Bytes two identities have in common at the same position, beyond the mode letter.
    private func sharedPositions(_ a: [UInt8], _ b: [UInt8]) -> Int {
        zip(a.dropFirst(), b.dropFirst()).filter { $0 == $1 }.count
    }

    func testPerChannelIdentitiesOfDifferentChannelsOrEpochsAreUnrelated() {
        let friends = TestChannels.channel("friends")
        let work = TestChannels.channel("work")
        let now = PrivateIdentity.credential(for: friends, at: t0)
        let otherChannel = PrivateIdentity.credential(for: work, at: t0)
        let nextEpoch = PrivateIdentity.credential(for: friends, at: t0 + 3600)
        XCTAssertNotEqual(now.identity, otherChannel.identity)
        XCTAssertNotEqual(now.identity, nextEpoch.identity)
        XCTAssertNotEqual(now.key, otherChannel.key)
        XCTAssertNotEqual(now.key, nextEpoch.key)
        // Unrelated: about 1 in 16 hex digits agree by chance (40 digits: ~2.5), never most of them.
        XCTAssertLessThan(sharedPositions(now.identity, otherChannel.identity), 12)
        XCTAssertLessThan(sharedPositions(now.identity, nextEpoch.identity), 12)
        // The same channel within one epoch keeps its identity: sessions of an epoch share it.
        XCTAssertEqual(PrivateIdentity.credential(for: friends, at: t0 + 3599).identity, now.identity)
    }

    func testGlobalIdentityIsTheSameForEveryChannelAndEpochOfASecret() {
        let a = PrivateIdentity.credential(for: TestChannels.channel("friends", mode: .global), at: t0)
        let b = PrivateIdentity.credential(for: TestChannels.channel("work", mode: .global), at: t0 + 86_400 * 30)
        XCTAssertEqual(a.identity, b.identity)
        XCTAssertEqual(a.key, b.key)
        let other = PrivateIdentity.credential(for: TestChannels.channel("friends", secret: TestChannels.secretB, mode: .global), at: t0)
        XCTAssertNotEqual(a.identity, other.identity)
    }

    func testThrowawayIdentitiesDifferForEverySessionOfOneEpoch() {
        let channel = TestChannels.channel(mode: .throwaway)
        let identities = Set((0..<50).map { _ in PrivateIdentity.credential(for: channel, at: t0).identity })
        XCTAssertEqual(identities.count, 50)
        let first = PrivateIdentity.credential(for: channel, at: t0)
        let second = PrivateIdentity.credential(for: channel, at: t0)
        XCTAssertNotEqual(first.key, second.key)
        XCTAssertLessThan(sharedPositions(first.identity, second.identity), 16)
    }

    func testIdentitiesArePrintableAndWithinLibcoapsLimit() {
        for mode in IdentityMode.allCases {
            let credential = PrivateIdentity.credential(for: TestChannels.channel(mode: mode), at: t0)
            XCTAssertLessThanOrEqual(credential.identity.count, 64, "\(mode)")
            XCTAssertTrue(credential.identity.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x7A).contains($0) },
                          credential.identityText)
            XCTAssertEqual(credential.key.count, 32)
        }
    }

    func testDerivationIsDeterministicForAGivenNonce() {
        let channel = TestChannels.channel(mode: .throwaway)
        var g1 = SeededGenerator(seed: 7)
        var g2 = SeededGenerator(seed: 7)
        XCTAssertEqual(PrivateIdentity.credential(for: channel, at: t0, using: &g1),
                       PrivateIdentity.credential(for: channel, at: t0, using: &g2))
    }

    func testCredentialDescriptionNeverShowsTheKey() {
        let credential = PrivateIdentity.credential(for: TestChannels.channel(), at: t0)
        let keyHex = credential.key.map { String(format: "%02x", $0) }.joined()
        XCTAssertFalse(credential.description.contains(keyHex.prefix(8)))
        XCTAssertFalse(String(describing: TestChannels.channel()).contains("a1a1"))
        var dumped = ""
        dump(TestChannels.channel(), to: &dumped)
        XCTAssertFalse(dumped.contains("161"), dumped)  // 0xA1 as a decimal byte
    }
}

final class ChannelIdentityResolverTests: XCTestCase {
    private let t0 = TestChannels.t0

    private func resolver(_ modes: [IdentityMode] = [.perChannel]) -> ChannelIdentityResolver {
        var channels: [Channel] = []
        for mode in modes {
            channels.append(TestChannels.channel("friends-\(mode.rawValue)", mode: mode))
            channels.append(TestChannels.channel("work-\(mode.rawValue)", secret: TestChannels.secretB, mode: mode))
        }
        return ChannelIdentityResolver(channels: channels)
    }

    func testResolverAcceptsTheCurrentAndAdjacentEpochsOfEveryMode() {
        let resolver = resolver(IdentityMode.allCases)
        for channel in resolver.channels {
            for offset in [-3600.0, 0, 3600] {
                let credential = PrivateIdentity.credential(for: channel, at: t0 + offset)
                let resolved = resolver.resolve(identity: credential.identity, at: t0)
                XCTAssertEqual(resolved, credential, "\(channel.name) at offset \(offset)")
            }
        }
    }

    func testResolverRefusesIdentitiesTwoEpochsAwayEitherWay() {
        let resolver = resolver([.perChannel, .throwaway])
        for channel in resolver.channels {
            for offset in [-7200.0, 7200, -86_400] {
                let credential = PrivateIdentity.credential(for: channel, at: t0 + offset)
                XCTAssertNil(resolver.resolve(identity: credential.identity, at: t0), "\(channel.name) \(offset)")
            }
        }
    }

    func testResolverRefusesChannelsItDoesNotKnow() {
        let resolver = ChannelIdentityResolver(channels: [TestChannels.channel("friends")])
        let sameSecretOtherName = TestChannels.channel("strangers")
        let otherSecretSameName = TestChannels.channel("friends", secret: TestChannels.secretB)
        XCTAssertNil(resolver.resolve(identity: PrivateIdentity.credential(for: sameSecretOtherName, at: t0).identity, at: t0))
        XCTAssertNil(resolver.resolve(identity: PrivateIdentity.credential(for: otherSecretSameName, at: t0).identity, at: t0))
        let throwaway = TestChannels.channel("friends", mode: .throwaway)
        XCTAssertNil(resolver.resolve(identity: PrivateIdentity.credential(for: throwaway, at: t0).identity, at: t0),
                     "a channel configured per-channel does not take throwaway identities")
    }

    func testResolverRefusesEveryTamperedCharacter() {
        let resolver = resolver(IdentityMode.allCases)
        for channel in resolver.channels {
            let identity = PrivateIdentity.credential(for: channel, at: t0).identity
            XCTAssertNotNil(resolver.resolve(identity: identity, at: t0))
            for index in identity.indices {
                var tampered = identity
                // Another valid hex digit (or mode letter), so only the MAC can notice.
                tampered[index] = tampered[index] == UInt8(ascii: "0") ? UInt8(ascii: "1") : UInt8(ascii: "0")
                if index == 0 { tampered[0] = identity[0] == UInt8(ascii: "c") ? UInt8(ascii: "g") : UInt8(ascii: "c") }
                XCTAssertNil(resolver.resolve(identity: tampered, at: t0), "\(channel.name) index \(index)")
            }
        }
    }

    func testResolverRefusesMalformedTruncatedAndOversizedIdentities() {
        let resolver = resolver(IdentityMode.allCases)
        let valid = PrivateIdentity.credential(for: resolver.channels[0], at: t0).identity
        let cases: [[UInt8]] = [
            [], Array("c".utf8), Array(valid.dropLast()), Array(valid.dropLast(2)), valid + Array("00".utf8),
            Array(valid.map { $0 >= 0x61 && $0 <= 0x66 ? $0 - 0x20 : $0 }),  // upper-case hex
            [UInt8](repeating: UInt8(ascii: "c"), count: 41), [UInt8](repeating: 0xFF, count: 64),
            [UInt8](repeating: UInt8(ascii: "t"), count: 4096), Array("x".utf8) + valid.dropFirst(),
        ]
        for identity in cases where identity != valid {
            XCTAssertNil(resolver.resolve(identity: identity, at: t0), String(decoding: identity, as: UTF8.self))
        }
    }

    func testKeyLookupClosureFollowsTheGivenClock() {
        let channel = TestChannels.channel()
        let resolver = ChannelIdentityResolver(channels: [channel])
        let credential = PrivateIdentity.credential(for: channel, at: t0)
        let t0 = self.t0
        XCTAssertEqual(resolver.keyLookup(now: { t0 })(credential.identity), credential.key)
        XCTAssertNil(resolver.keyLookup(now: { t0 + 3 * 3600 })(credential.identity))
    }

    /// Measures the bound on work: 1000 channels, every identity resolved against all of them.
    func testResolvingAgainstAThousandChannelsTakesBoundedTime() {
        let channels = (0..<1000).map { TestChannels.channel("c\($0)", mode: $0 % 2 == 0 ? .perChannel : .throwaway) }
        let resolver = ChannelIdentityResolver(channels: channels)
        let perChannel = PrivateIdentity.credential(for: channels[998], at: t0)
        let throwaway = PrivateIdentity.credential(for: channels[999], at: t0)
        let clock = ContinuousClock()
        let start = clock.now
        for _ in 0..<10 {
            XCTAssertEqual(resolver.resolve(identity: perChannel.identity, at: t0)?.channel, "c998")
            XCTAssertEqual(resolver.resolve(identity: throwaway.identity, at: t0)?.channel, "c999")
        }
        let each = (clock.now - start) / 20
        print("resolve against 500 channels of the identity's mode (1500 HMACs): \(each)")
        XCTAssertLessThan(each, .milliseconds(200))
    }
}
