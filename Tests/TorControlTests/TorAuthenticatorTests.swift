import XCTest
@testable import TorControl

final class TorAuthenticatorTests: XCTestCase {
    private let cookie = Array(repeating: UInt8(0x42), count: 32)
    private let clientNonce = (0..<32).map { UInt8($0) }
    private let serverNonce = (0..<32).map { UInt8(255 - $0) }

    private func reply(_ s: String) throws -> TorReply {
        var parser = TorReplyParser()
        parser.feed(Array(s.utf8))
        return try XCTUnwrap(try parser.nextReply())
    }

    private func protocolInfo(_ methods: String, cookieFile: String? = "/run/tor/control.authcookie") throws -> TorReply {
        let file = cookieFile.map { " COOKIEFILE=\"\($0)\"" } ?? ""
        return try reply("250-PROTOCOLINFO 1\r\n250-AUTH METHODS=\(methods)\(file)\r\n250-VERSION Tor=\"0.4.9.1\"\r\n250 OK\r\n")
    }

    private func challenge(serverHash: [UInt8]) throws -> TorReply {
        try reply("250 AUTHCHALLENGE SERVERHASH=\(Hex.encode(serverHash)) SERVERNONCE=\(Hex.encode(serverNonce))\r\n")
    }

    private func command(_ action: TorAuthenticator.Action, file: StaticString = #filePath, line: UInt = #line) -> TorCommand? {
        guard case let .send(command) = action else { XCTFail("expected a command, got \(action)", file: file, line: line); return nil }
        return command
    }

    func testSafeCookieIsPreferredAndCompletesAfterCheckingServerHash() throws {
        var auth = TorAuthenticator(controlPort: "127.0.0.1:9051", clientNonce: clientNonce)
        XCTAssertEqual(command(try auth.start())?.line, "PROTOCOLINFO 1")
        XCTAssertEqual(try auth.receive(protocolInfo("COOKIE,SAFECOOKIE,HASHEDPASSWORD")),
                       .readCookieFile(path: "/run/tor/control.authcookie"))
        XCTAssertEqual(command(try auth.provideCookie(cookie))?.line, "AUTHCHALLENGE SAFECOOKIE \(Hex.encode(clientNonce))")
        let serverHash = try SafeCookie.serverHash(cookie: cookie, clientNonce: clientNonce, serverNonce: serverNonce)
        let expected = try SafeCookie.clientHash(cookie: cookie, clientNonce: clientNonce, serverNonce: serverNonce)
        XCTAssertEqual(command(try auth.receive(challenge(serverHash: serverHash)))?.line, "AUTHENTICATE \(Hex.encode(expected))")
        guard case let .authenticated(method, info) = try auth.receive(reply("250 OK\r\n")) else { return XCTFail() }
        XCTAssertEqual(method, .safeCookie)
        XCTAssertEqual(info.torVersion, "0.4.9.1")
        XCTAssertTrue(auth.isAuthenticated)
    }

    func testWrongServerHashStopsBeforeRevealingAnything() throws {
        var auth = TorAuthenticator(cookie: cookie, clientNonce: clientNonce)
        _ = try auth.start()
        _ = try auth.receive(protocolInfo("SAFECOOKIE"))
        let otherCookieHash = try SafeCookie.serverHash(cookie: Array(repeating: 1, count: 32), clientNonce: clientNonce, serverNonce: serverNonce)
        XCTAssertThrowsError(try auth.receive(challenge(serverHash: otherCookieHash))) { error in
            guard case .serverHashMismatch = (error as? TorAuthenticationError)?.reason else { return XCTFail("\(error)") }
            XCTAssertTrue("\(error)".contains("(SAFECOOKIE)"), "\(error)")
        }
        XCTAssertFalse(auth.isAuthenticated)
        XCTAssertThrowsError(try auth.receive(reply("250 OK\r\n")), "a failed authenticator stays failed")
    }

    func testRefusalCarriesTorsTextAndMethod() throws {
        var auth = TorAuthenticator(controlPort: "127.0.0.1:9051", cookie: cookie, clientNonce: clientNonce)
        _ = try auth.start()
        _ = try auth.receive(protocolInfo("SAFECOOKIE"))
        let serverHash = try SafeCookie.serverHash(cookie: cookie, clientNonce: clientNonce, serverNonce: serverNonce)
        _ = try auth.receive(challenge(serverHash: serverHash))
        XCTAssertThrowsError(try auth.receive(reply("515 Authentication failed: Safe cookie response did not match expected value.\r\n"))) {
            XCTAssertEqual("\($0)", "tor control port 127.0.0.1:9051 refused authentication (SAFECOOKIE): "
                               + "515 Authentication failed: Safe cookie response did not match expected value.")
        }
    }

    func testCookieMethodSendsCookieInHexWhenSafeCookieIsNotOffered() throws {
        var auth = TorAuthenticator(cookie: cookie, clientNonce: clientNonce)
        _ = try auth.start()
        XCTAssertEqual(command(try auth.receive(protocolInfo("COOKIE")))?.line, "AUTHENTICATE \(Hex.encode(cookie))")
        guard case .authenticated(.cookie, _) = try auth.receive(reply("250 OK\r\n")) else { return XCTFail() }
    }

    func testUnreadableCookieFallsBackToPassword() throws {
        var auth = TorAuthenticator(password: "hunter2", clientNonce: clientNonce)
        _ = try auth.start()
        _ = try auth.receive(protocolInfo("SAFECOOKIE,HASHEDPASSWORD"))
        XCTAssertEqual(command(try auth.cookieUnavailable("permission denied"))?.line, "AUTHENTICATE \"hunter2\"")
        guard case .authenticated(.hashedPassword, _) = try auth.receive(reply("250 OK\r\n")) else { return XCTFail() }
    }

    func testUnreadableCookieWithoutAlternativeFailsNamingTheFile() throws {
        var auth = TorAuthenticator(controlPort: "127.0.0.1:9051", clientNonce: clientNonce)
        _ = try auth.start()
        _ = try auth.receive(protocolInfo("COOKIE,SAFECOOKIE", cookieFile: "/var/lib/tor/control_auth_cookie"))
        XCTAssertThrowsError(try auth.cookieUnavailable("permission denied")) {
            XCTAssertEqual("\($0)", "tor control port 127.0.0.1:9051 refused authentication (SAFECOOKIE): "
                               + "cookie file /var/lib/tor/control_auth_cookie is not readable: permission denied")
        }
    }

    func testCookieOfWrongLengthIsNeverUsed() throws {
        var auth = TorAuthenticator(clientNonce: clientNonce)
        _ = try auth.start()
        _ = try auth.receive(protocolInfo("COOKIE"))
        XCTAssertThrowsError(try auth.provideCookie(Array(repeating: 1, count: 31))) {
            XCTAssertTrue("\($0)".contains("31 bytes"), "\($0)")
        }
    }

    func testNullMethodSendsBareAuthenticate() throws {
        var auth = TorAuthenticator(clientNonce: clientNonce)
        _ = try auth.start()
        XCTAssertEqual(command(try auth.receive(protocolInfo("NULL", cookieFile: nil)))?.line, "AUTHENTICATE")
        guard case .authenticated(.null, _) = try auth.receive(reply("250 OK\r\n")) else { return XCTFail() }
    }

    func testPasswordOnlyTorWithoutPasswordExplainsWhatIsMissing() throws {
        var auth = TorAuthenticator(clientNonce: clientNonce)
        _ = try auth.start()
        XCTAssertThrowsError(try auth.receive(protocolInfo("HASHEDPASSWORD", cookieFile: nil))) {
            XCTAssertTrue("\($0)".contains("offered: HASHEDPASSWORD"), "\($0)")
            XCTAssertTrue("\($0)".contains("password"), "\($0)")
        }
    }

    func testOutOfOrderUseIsAnError() throws {
        var auth = TorAuthenticator(clientNonce: clientNonce)
        XCTAssertThrowsError(try auth.receive(reply("250 OK\r\n")))
        var fresh = TorAuthenticator(clientNonce: clientNonce)
        _ = try fresh.start()
        XCTAssertThrowsError(try fresh.provideCookie(cookie))
    }
}
