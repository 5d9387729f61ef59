import Crypto
import Foundation
import XCTest
@testable import TorControl

final class OnionIdentityTests: XCTestCase {
    private func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    func testSHA3_256MatchesFIPS202Examples() {
        XCTAssertEqual(hex(SHA3_256.hash([])), "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a")
        XCTAssertEqual(hex(SHA3_256.hash(Array("abc".utf8))),
                       "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532")
        // 200 bytes of 0xA3: more than one 136-byte block (NIST's "1600-bit" example).
        XCTAssertEqual(hex(SHA3_256.hash([UInt8](repeating: 0xA3, count: 200))),
                       "79f38adec5c20307a98ef76e8324afbfd46cfd81b22e3973c65fa1bd9de31787")
    }

    func testSHA3_256PadsAMessageOfExactlyOneRateBlock() {
        // 136 bytes: the padding needs a whole extra block; 135 bytes: the 0x06 and 0x80 share one byte.
        XCTAssertNotEqual(SHA3_256.hash([UInt8](repeating: 0, count: 136)), SHA3_256.hash([UInt8](repeating: 0, count: 135)))
        XCTAssertEqual(SHA3_256.hash([UInt8](repeating: 7, count: 136)).count, 32)
    }

    func testServiceIDOfPublishedOnionAddressesRoundTrips() throws {
        // Real v3 addresses: the checksum and version computed from their public key must give them back.
        for address in ["duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad",
                        "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid"] {
            let decoded = try XCTUnwrap(base32Decode(address))
            XCTAssertEqual(decoded.count, 35)
            XCTAssertEqual(OnionIdentity.serviceID(publicKey: Array(decoded[0..<32])), address)
        }
    }

    func testBase32EncodesRFC4648Examples() {
        XCTAssertEqual(Base32Text.encode(Array("".utf8)), "")
        XCTAssertEqual(Base32Text.encode(Array("f".utf8)), "MY")
        XCTAssertEqual(Base32Text.encode(Array("fooba".utf8)), "MZXW6YTB")
        XCTAssertEqual(Base32Text.encode(Array("foobar".utf8)), "MZXW6YTBOI")
    }

    func testIdentityDerivesAStableAddressFromItsSeed() throws {
        let seed = [UInt8](repeating: 0x42, count: 32)
        let a = try OnionIdentity(seed: seed)
        let b = try OnionIdentity(seed: seed)
        XCTAssertEqual(a.address, b.address)
        XCTAssertEqual(a.serviceID.count, 56)
        XCTAssertTrue(a.address.hasSuffix(".onion"))
        XCTAssertNotEqual(OnionIdentity.generate().address, OnionIdentity.generate().address)
    }

    func testExpandedKeyIsTheClampedSHA512OfTheSeed() throws {
        let identity = try OnionIdentity(seed: [UInt8](repeating: 9, count: 32))
        let expanded = try XCTUnwrap(Data(base64Encoded: identity.expandedSecretKeyBase64))
        XCTAssertEqual(expanded.count, 64)
        XCTAssertEqual(expanded[0] & 7, 0)
        XCTAssertEqual(expanded[31] & 0xC0, 0x40)
        let digest = Array(SHA512.hash(data: identity.seed))
        XCTAssertEqual(Array(expanded[32..<64]), Array(digest[32..<64]))
    }

    func testRejectsASeedOfTheWrongLength() {
        XCTAssertThrowsError(try OnionIdentity(seed: [1, 2, 3])) { error in
            XCTAssertEqual(error as? OnionIdentityError, .badSeedLength(3))
        }
    }

    private func base32Decode(_ text: String) -> [UInt8]? {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567".utf8)
        var buffer: UInt32 = 0
        var bits = 0
        var out: [UInt8] = []
        for c in text.utf8 {
            guard let v = alphabet.firstIndex(of: c) else { return nil }
            buffer = (buffer << 5) | UInt32(v)
            bits += 5
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits)))
            }
        }
        return out
    }
}
