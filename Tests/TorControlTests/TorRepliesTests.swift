import XCTest
@testable import TorControl

final class TorRepliesTests: XCTestCase {
    private func reply(_ s: String) throws -> TorReply {
        var parser = TorReplyParser()
        parser.feed(Array(s.utf8))
        let replies = try parser.allReplies()
        try parser.finish()
        XCTAssertEqual(replies.count, 1)
        return try XCTUnwrap(replies.first)
    }

    func testProtocolInfoReadsMethodsEscapedCookiePathAndVersion() throws {
        let info = try ProtocolInfo(reply: reply(
            "250-PROTOCOLINFO 1\r\n" +
            "250-AUTH METHODS=COOKIE,SAFECOOKIE,HASHEDPASSWORD COOKIEFILE=\"/var/lib/tor dir/\\\"q\\\"/control_auth_cookie\"\r\n" +
            "250-VERSION Tor=\"0.4.9.1-alpha\" EXTRA=1\r\n" +
            "250-FUTURELINE whatever\r\n" +
            "250 OK\r\n"))
        XCTAssertEqual(info.protocolInfoVersion, 1)
        XCTAssertEqual(info.authMethods, [.cookie, .safeCookie, .hashedPassword])
        XCTAssertEqual(info.cookieFile, "/var/lib/tor dir/\"q\"/control_auth_cookie")
        XCTAssertEqual(info.torVersion, "0.4.9.1-alpha")
    }

    func testProtocolInfoWithNullMethodHasNoCookieFile() throws {
        let info = try ProtocolInfo(reply: reply("250-PROTOCOLINFO 1\r\n250-AUTH METHODS=NULL\r\n250-VERSION Tor=\"0.4.9.1\"\r\n250 OK\r\n"))
        XCTAssertEqual(info.authMethods, [.null])
        XCTAssertNil(info.cookieFile)
    }

    func testProtocolInfoWithoutAuthLineIsMalformed() throws {
        XCTAssertThrowsError(try ProtocolInfo(reply: reply("250-PROTOCOLINFO 1\r\n250 OK\r\n"))) {
            guard case .malformedReply(command: "PROTOCOLINFO", _, _) = $0 as? TorProtocolError else { return XCTFail("\($0)") }
        }
    }

    func testErrorReplyBecomesTypedErrorWithTorsText() throws {
        XCTAssertThrowsError(try GetInfoResult(reply: reply("552 Unrecognized key \"nope\"\r\n"))) { error in
            let e = error as? TorReplyError
            XCTAssertEqual(e?.code, 552)
            XCTAssertEqual(e?.kind, .unrecognizedEntity)
            XCTAssertEqual(e?.message, "Unrecognized key \"nope\"")
            XCTAssertEqual("\(error)", "tor refused GETINFO: 552 Unrecognized key \"nope\"")
        }
        XCTAssertEqual(TorReplyError(code: 515, message: "Authentication failed: Wrong length on authentication cookie.").kind,
                       .badAuthentication)
        XCTAssertEqual(TorReplyError(code: 510, message: "Unrecognized command \"FOO\"").kind, .unrecognizedCommand)
        XCTAssertEqual(TorReplyError(code: 551, message: "x").kind, .internalError)
        XCTAssertEqual(TorReplyError(code: 512, message: "x").kind, .syntaxErrorInArgument)
    }

    func testAuthChallengeReadsServerHashAndNonce() throws {
        let hash = String(repeating: "AB", count: 32)
        let nonce = String(repeating: "0f", count: 32)
        let challenge = try AuthChallenge(reply: reply("250 AUTHCHALLENGE SERVERHASH=\(hash) SERVERNONCE=\(nonce)\r\n"))
        XCTAssertEqual(challenge.serverHash, Array(repeating: 0xAB, count: 32))
        XCTAssertEqual(challenge.serverNonce, Array(repeating: 0x0F, count: 32))
    }

    func testAuthChallengeWithShortOrNonHexValuesIsMalformed() throws {
        let hash = String(repeating: "AB", count: 32)
        XCTAssertThrowsError(try AuthChallenge(reply: reply("250 AUTHCHALLENGE SERVERHASH=\(hash) SERVERNONCE=ABCD\r\n")))
        XCTAssertThrowsError(try AuthChallenge(reply: reply("250 AUTHCHALLENGE SERVERHASH=\(String(repeating: "zz", count: 32)) SERVERNONCE=\(hash)\r\n")))
        XCTAssertThrowsError(try AuthChallenge(reply: reply("250 AUTHCHALLENGE SERVERHASH=\(hash)\r\n")))
    }

    func testAddOnionReadsServiceIDPrivateKeyAndClientAuthV3() throws {
        // The shapes of control-spec 3.27's examples.
        let generated = try AddOnionResult(reply: reply(
            "250-ServiceID=sampleonion4t2pqglbny66wpovyvao3ylc23eileodtevc4b75ikpad\r\n" +
            "250-PrivateKey=ED25519-V3:[Blob Redacted]\r\n250 OK\r\n"))
        XCTAssertEqual(generated.serviceID, "sampleonion4t2pqglbny66wpovyvao3ylc23eileodtevc4b75ikpad")
        XCTAssertEqual(generated.privateKey, AddOnionResult.PrivateKey(keyType: "ED25519-V3", blob: "[Blob Redacted]"))

        let withAuth = try AddOnionResult(reply: reply(
            "250-ServiceID=n35etu3yjxrqjpntmfziom5sjwspoydchmelc4xleoy4jk2u4lziz2yd\r\n" +
            "250-ClientAuthV3=[Blob Redacted]\r\n250 OK\r\n"))
        XCTAssertNil(withAuth.privateKey)
        XCTAssertEqual(withAuth.clientAuthV3, ["[Blob Redacted]"])

        XCTAssertThrowsError(try AddOnionResult(reply: reply("250-PrivateKey=ED25519-V3:secretblob\r\n250 OK\r\n"))) { error in
            XCTAssertFalse("\(error)".contains("secretblob"), "a private key must never reach an error message")
        }
        XCTAssertThrowsError(try AddOnionResult(reply: reply("512 Tor is in anonymous hidden service mode\r\n"))) {
            XCTAssertEqual(($0 as? TorReplyError)?.code, 512)
        }
    }

    func testGetInfoReadsSingleLineAndDataValues() throws {
        let info = try GetInfoResult(reply: reply(
            "250+desc/name/moria=\r\n[Descriptor for moria]\r\nline two\r\n.\r\n" +
            "250-version=Tor 0.1.1.0-alpha-cvs\r\n250 OK\r\n"))
        XCTAssertEqual(info.entries.map(\.key), ["desc/name/moria", "version"])
        XCTAssertEqual(info["desc/name/moria"], "[Descriptor for moria]\nline two")
        XCTAssertEqual(info["version"], "Tor 0.1.1.0-alpha-cvs")
    }

    func testGetConfReadsValuesDefaultsAndRepeats() throws {
        let conf = try GetConfResult(reply: reply("250-SocksPort=9050\r\n250-SocksPort=\"127.0.0.1:9150 IsolateSOCKSAuth\"\r\n250 ORPort\r\n"))
        XCTAssertEqual(conf.values("socksport"), ["9050", "127.0.0.1:9150 IsolateSOCKSAuth"])
        XCTAssertEqual(conf.values("ORPort"), [nil])
    }

    func testStatusClientBootstrapEventParses() throws {
        let event = try TorEvent(reply: reply(
            "650 STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=75 TAG=enough_dirinfo SUMMARY=\"Loaded enough directory info to build circuits\"\r\n"))
        guard case let .status(status) = event, let boot = status.bootstrap else { return XCTFail("\(event)") }
        XCTAssertEqual(status.type, "STATUS_CLIENT")
        XCTAssertEqual(boot.severity, "NOTICE")
        XCTAssertEqual(boot.progress, 75)
        XCTAssertEqual(boot.tag, "enough_dirinfo")
        XCTAssertEqual(boot.summary, "Loaded enough directory info to build circuits")
        XCTAssertFalse(boot.isComplete)
    }

    func testBootstrapProblemCarriesWarningAndRecommendation() throws {
        let event = try TorEvent(reply: reply(
            "650 STATUS_CLIENT WARN BOOTSTRAP PROGRESS=5 TAG=conn SUMMARY=\"Connecting to a relay\" WARNING=\"Connection refused\" " +
            "REASON=CONNECTREFUSED COUNT=3 RECOMMENDATION=ignore HOST=\"AAAA\" HOSTADDR=\"127.0.0.1:5000\"\r\n"))
        guard case let .status(status) = event, let boot = status.bootstrap else { return XCTFail("\(event)") }
        XCTAssertEqual(boot.warning, "Connection refused")
        XCTAssertEqual(boot.reason, "CONNECTREFUSED")
        XCTAssertEqual(boot.count, 3)
        XCTAssertEqual(boot.recommendation, "ignore")
    }

    func testBootstrapPhaseGetInfoValueParses() throws {
        let boot = try BootstrapStatus(bootstrapPhase: "NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY=\"Done\"")
        XCTAssertTrue(boot.isComplete)
        XCTAssertThrowsError(try BootstrapStatus(bootstrapPhase: "NOTICE BOOTSTRAP PROGRESS=lots"))
    }

    func testHSDescUploadedEventParses() throws {
        let event = try TorEvent(reply: reply(
            "650 HS_DESC UPLOADED n35etu3yjxrqjpntmfziom5sjwspoydchmelc4xleoy4jk2u4lziz2yd UNKNOWN " +
            "$F2A5CDD18AA3D61F4E37F61E1AF4A1A1B9E7DB5B~relay1 SxN1lPg0RwSSFiNl3WZ0WpB4VVGgHgZjmOrA7j0x1jA " +
            "HSDIR_INDEX=\(String(repeating: "A", count: 64))\r\n"))
        guard case let .hsDescriptor(desc) = event else { return XCTFail("\(event)") }
        XCTAssertEqual(desc.action, .uploaded)
        XCTAssertEqual(desc.address, "n35etu3yjxrqjpntmfziom5sjwspoydchmelc4xleoy4jk2u4lziz2yd")
        XCTAssertEqual(desc.authType, "UNKNOWN")
        XCTAssertEqual(desc.hsDir, "$F2A5CDD18AA3D61F4E37F61E1AF4A1A1B9E7DB5B~relay1")
        XCTAssertEqual(desc.descriptorID, "SxN1lPg0RwSSFiNl3WZ0WpB4VVGgHgZjmOrA7j0x1jA")
        XCTAssertEqual(desc.hsDirIndex, String(repeating: "A", count: 64))
    }

    func testHSDescFailedEventCarriesReason() throws {
        let event = try TorEvent(reply: reply("650 HS_DESC FAILED abcdefghijklmnop NO_AUTH UNKNOWN REASON=QUERY_NO_HSDIR\r\n"))
        guard case let .hsDescriptor(desc) = event else { return XCTFail("\(event)") }
        XCTAssertEqual(desc.action, .failed)
        XCTAssertNil(desc.descriptorID)
        XCTAssertEqual(desc.reason, "QUERY_NO_HSDIR")
    }

    func testTruncatedHSDescIsMalformedAndUnknownEventsAreKept() throws {
        XCTAssertThrowsError(try TorEvent(reply: reply("650 HS_DESC UPLOADED\r\n")))
        let other = try TorEvent(reply: reply("650-CIRC 1000 EXTENDED moria1 0xBEEF\r\n650 ANONYMITY=high\r\n"))
        guard case let .other(keyword, r) = other else { return XCTFail("\(other)") }
        XCTAssertEqual(keyword, "CIRC")
        XCTAssertEqual(r.lines.count, 2)
        XCTAssertThrowsError(try TorEvent(reply: reply("250 OK\r\n")))
    }
}
