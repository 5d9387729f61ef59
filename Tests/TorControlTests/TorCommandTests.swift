import XCTest
@testable import TorControl

final class TorCommandTests: XCTestCase {
    private let serviceID = "n35etu3yjxrqjpntmfziom5sjwspoydchmelc4xleoy4jk2u4lziz2yd"

    func testSimpleCommandsEncodeWithCRLF() throws {
        XCTAssertEqual(TorCommand.protocolInfo().bytes, Array("PROTOCOLINFO 1\r\n".utf8))
        XCTAssertEqual(TorCommand.takeOwnership().line, "TAKEOWNERSHIP")
        XCTAssertEqual(TorCommand.quit().line, "QUIT")
        XCTAssertEqual(TorCommand.signal(.newnym).line, "SIGNAL NEWNYM")
    }

    func testAuthChallengeSendsClientNonceInHex() throws {
        XCTAssertEqual(try TorCommand.authChallenge(clientNonce: [0x00, 0xAB, 0xFF]).line, "AUTHCHALLENGE SAFECOOKIE 00ABFF")
        XCTAssertThrowsError(try TorCommand.authChallenge(clientNonce: []))
    }

    func testAuthenticateFormsAndRedaction() throws {
        let hex = TorCommand.authenticate(token: [0xDE, 0xAD])
        XCTAssertEqual(hex.line, "AUTHENTICATE DEAD")
        XCTAssertEqual(hex.description, "AUTHENTICATE [redacted]")
        XCTAssertEqual(try TorCommand.authenticate(password: #"pa"ss\word"#).line, #"AUTHENTICATE "pa\"ss\\word""#)
        XCTAssertEqual(TorCommand.authenticate().line, "AUTHENTICATE")
    }

    func testPasswordWithLineBreakIsRefusedWithoutQuotingThePassword() {
        for bad in ["secret\r\nSIGNAL HALT", "secret\nx", "a\u{0}b"] {
            XCTAssertThrowsError(try TorCommand.authenticate(password: bad)) { error in
                guard case let .forbiddenCharacter(_, _, _, value) = error as? TorCommandError else { return XCTFail("\(error)") }
                XCTAssertNil(value)
                XCTAssertFalse("\(error)".contains("secret"))
            }
        }
    }

    func testCRLFAndNULInjectionIsRefusedInEveryArgumentKind() {
        XCTAssertThrowsError(try TorCommand.getInfo(["version\r\nSIGNAL HALT"]))
        XCTAssertThrowsError(try TorCommand.getConf(["SocksPort\n"]))
        XCTAssertThrowsError(try TorCommand.setConf([("SocksPort", "9050\r\nSIGNAL HALT")]))
        XCTAssertThrowsError(try TorCommand.setEvents(["HS_DESC\r\n"]))
        XCTAssertThrowsError(try TorCommand.addOnion(key: .newED25519V3, ports: [OnionPort(virtualPort: 80, target: "127.0.0.1:80\r\nQUIT")]))
        XCTAssertThrowsError(try TorCommand.delOnion(serviceID: serviceID + "\r\n"))
        XCTAssertThrowsError(try TorCommand.onionClientAuthAdd(serviceID: serviceID, x25519PrivateKey: Array(repeating: 1, count: 32),
                                                               clientName: "a\u{0}b"))
        XCTAssertThrowsError(try TorCommand(keyword: "GETINFO", arguments: ["a\rb"])) { error in
            XCTAssertTrue("\(error)".contains("CR"), "\(error)")
        }
        XCTAssertThrowsError(try TorCommand(keyword: "GET INFO"))
    }

    func testGetInfoAndGetConfListKeys() throws {
        XCTAssertEqual(try TorCommand.getInfo(["version", "status/bootstrap-phase"]).line, "GETINFO version status/bootstrap-phase")
        XCTAssertEqual(try TorCommand.getConf(["SocksPort", "ControlPort"]).line, "GETCONF SocksPort ControlPort")
        XCTAssertThrowsError(try TorCommand.getInfo([]))
        XCTAssertThrowsError(try TorCommand.getInfo(["two words"]))
    }

    func testSetConfQuotesValuesAndResetsWithoutValue() throws {
        let command = try TorCommand.setConf([("SocksPort", "127.0.0.1:9050 IsolateSOCKSAuth"), ("__OwningControllerProcess", nil),
                                              ("Nickname", #"a"b"#)])
        XCTAssertEqual(command.line, #"SETCONF SocksPort="127.0.0.1:9050 IsolateSOCKSAuth" __OwningControllerProcess Nickname="a\"b""#)
        XCTAssertThrowsError(try TorCommand.setConf([("Bad=Key", "1")]))
        XCTAssertEqual(try TorCommand.resetConf([("__OwningControllerProcess", nil)]).line, "RESETCONF __OwningControllerProcess")
    }

    func testSetEventsAcceptsEmptyListAndRefusesOddNames() throws {
        XCTAssertEqual(try TorCommand.setEvents(["STATUS_CLIENT", "HS_DESC"]).line, "SETEVENTS STATUS_CLIENT HS_DESC")
        XCTAssertEqual(try TorCommand.setEvents([]).line, "SETEVENTS")
        XCTAssertThrowsError(try TorCommand.setEvents(["HS-DESC"]))
    }

    func testAddOnionWithNewKeyFlagsPortsAndClientAuth() throws {
        let command = try TorCommand.addOnion(key: .newED25519V3, flags: [.discardPK, .v3Auth], maxStreams: 10,
                                              ports: [OnionPort(virtualPort: 5684, target: "127.0.0.1:7000"), OnionPort(virtualPort: 80)],
                                              clientAuthV3: ["GM4TANZWGE3TIMJZGE2TMNBVGU3DSNZWGI3TENBWHAZDMNZRG4ZA"])
        XCTAssertEqual(command.line,
                       "ADD_ONION NEW:ED25519-V3 Flags=DiscardPK,V3Auth MaxStreams=10 Port=5684,127.0.0.1:7000 Port=80 "
                           + "ClientAuthV3=GM4TANZWGE3TIMJZGE2TMNBVGU3DSNZWGI3TENBWHAZDMNZRG4ZA")
        XCTAssertFalse(command.isSensitive)
    }

    func testAddOnionWithExistingKeyIsRedactedAndValidated() throws {
        let command = try TorCommand.addOnion(key: .ed25519V3(base64: "QUJD+/=="), ports: [OnionPort(virtualPort: 80)])
        XCTAssertEqual(command.line, "ADD_ONION ED25519-V3:QUJD+/== Port=80")
        XCTAssertEqual(command.description, "ADD_ONION [redacted]")
        XCTAssertThrowsError(try TorCommand.addOnion(key: .ed25519V3(base64: "QUJD QUJD"), ports: [OnionPort(virtualPort: 80)]))
        XCTAssertThrowsError(try TorCommand.addOnion(key: .newED25519V3, ports: []))
        XCTAssertThrowsError(try TorCommand.addOnion(key: .newED25519V3, maxStreams: 70000, ports: [OnionPort(virtualPort: 80)]))
        XCTAssertThrowsError(try TorCommand.addOnion(key: .newED25519V3, ports: [OnionPort(virtualPort: 80)], clientAuthV3: ["not base32!"]))
    }

    func testDelOnionNeedsABareV3Address() throws {
        XCTAssertEqual(try TorCommand.delOnion(serviceID: serviceID).line, "DEL_ONION \(serviceID)")
        XCTAssertThrowsError(try TorCommand.delOnion(serviceID: serviceID + ".onion")) { error in
            XCTAssertTrue("\(error)".contains(".onion"), "\(error)")
        }
        XCTAssertThrowsError(try TorCommand.delOnion(serviceID: "short"))
    }

    func testOnionClientAuthAddEncodesX25519KeyInBase64() throws {
        let key = (0..<32).map { UInt8($0) }
        let command = try TorCommand.onionClientAuthAdd(serviceID: serviceID, x25519PrivateKey: key, clientName: "alice", permanent: true)
        XCTAssertEqual(command.line, "ONION_CLIENT_AUTH_ADD \(serviceID) x25519:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8= ClientName=alice Flags=Permanent")
        XCTAssertTrue(command.isSensitive)
        XCTAssertThrowsError(try TorCommand.onionClientAuthAdd(serviceID: serviceID, x25519PrivateKey: [1, 2, 3]))
    }
}
