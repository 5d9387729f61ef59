import Crypto
import Foundation
import XCTest
@testable import TorControl

final class SafeCookieTests: XCTestCase {
    private let cookie = (1...32).map { UInt8($0) }
    private let clientNonce = (0xA0..<0xC0).map { UInt8($0) }
    private let serverNonce = (0x40..<0x60).map { UInt8($0) }

    /// HMAC-SHA256 built from the RFC 2104 definition on top of plain SHA-256, independent of
    /// Crypto's HMAC type that the module uses.
    private func rfc2104HMAC(key: String, message: [UInt8]) -> [UInt8] {
        var k = Array(key.utf8)
        if k.count > 64 { k = Array(SHA256.hash(data: k)) }
        k += Array(repeating: 0, count: 64 - k.count)
        let inner = Array(SHA256.hash(data: k.map { $0 ^ 0x36 } + message))
        return Array(SHA256.hash(data: k.map { $0 ^ 0x5C } + inner))
    }

    private func hex(_ b: [UInt8]) -> String { b.map { String(format: "%02x", $0) }.joined() }

    func testHashesMatchTheSpecDefinitionComputedIndependently() throws {
        let message = cookie + clientNonce + serverNonce
        XCTAssertEqual(try SafeCookie.serverHash(cookie: cookie, clientNonce: clientNonce, serverNonce: serverNonce),
                       rfc2104HMAC(key: "Tor safe cookie authentication server-to-controller hash", message: message))
        XCTAssertEqual(try SafeCookie.clientHash(cookie: cookie, clientNonce: clientNonce, serverNonce: serverNonce),
                       rfc2104HMAC(key: "Tor safe cookie authentication controller-to-server hash", message: message))
    }

    func testHashesMatchFixedVector() throws {
        // Derived once with Python's hmac module and with `openssl dgst -sha256 -hmac KEY` over
        // cookie(01..20) | clientNonce(a0..bf) | serverNonce(40..5f); both gave these values.
        XCTAssertEqual(hex(try SafeCookie.serverHash(cookie: cookie, clientNonce: clientNonce, serverNonce: serverNonce)),
                       "9920b4a5486996d24ceea5856727760e8f65e03325206f01c27dc558df7ab17b")
        XCTAssertEqual(hex(try SafeCookie.clientHash(cookie: cookie, clientNonce: clientNonce, serverNonce: serverNonce)),
                       "fdb6dd95680f1e06abd496df7ce9fdcbe092976f9d41b722753a237cb7cbd58f")
    }

    func testServerHashVerificationAcceptsOnlyTheRightHash() throws {
        let good = try SafeCookie.serverHash(cookie: cookie, clientNonce: clientNonce, serverNonce: serverNonce)
        XCTAssertTrue(try SafeCookie.isValidServerHash(good, cookie: cookie, clientNonce: clientNonce, serverNonce: serverNonce))
        var flipped = good
        flipped[31] ^= 1
        XCTAssertFalse(try SafeCookie.isValidServerHash(flipped, cookie: cookie, clientNonce: clientNonce, serverNonce: serverNonce))
        // The client hash is not a valid server hash: the two directions use different keys.
        let client = try SafeCookie.clientHash(cookie: cookie, clientNonce: clientNonce, serverNonce: serverNonce)
        XCTAssertFalse(try SafeCookie.isValidServerHash(client, cookie: cookie, clientNonce: clientNonce, serverNonce: serverNonce))
        XCTAssertFalse(try SafeCookie.isValidServerHash(Array(good.prefix(16)), cookie: cookie, clientNonce: clientNonce, serverNonce: serverNonce))
    }

    func testCookieMustBe32Bytes() {
        XCTAssertThrowsError(try SafeCookie.clientHash(cookie: Array(cookie.prefix(31)), clientNonce: clientNonce, serverNonce: serverNonce)) {
            XCTAssertEqual($0 as? SafeCookie.Error, .cookieWrongLength(31))
        }
        XCTAssertThrowsError(try SafeCookie.serverHash(cookie: cookie + [0], clientNonce: clientNonce, serverNonce: serverNonce))
        XCTAssertThrowsError(try SafeCookie.serverHash(cookie: cookie, clientNonce: clientNonce, serverNonce: [1, 2]))
        XCTAssertThrowsError(try SafeCookie.serverHash(cookie: cookie, clientNonce: [], serverNonce: serverNonce))
    }
}
