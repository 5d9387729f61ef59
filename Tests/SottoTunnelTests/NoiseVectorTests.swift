// Checks the Noise implementation against the published cacophony test vectors
// (Fixtures/noise-25519-chachapoly-sha256.json), and checks that tampering and wrong PSKs fail.

import Crypto
import Foundation
import XCTest
@testable import SottoTunnel

/// Hex helpers shared by the SottoTunnel crypto tests.
enum NoiseTestHex {
    static func decode(_ text: String) -> [UInt8] {
        precondition(text.count % 2 == 0, "odd-length hex")
        var bytes = [UInt8]()
        var index = text.startIndex
        while index < text.endIndex {
            let next = text.index(index, offsetBy: 2)
            bytes.append(UInt8(text[index..<next], radix: 16)!)
            index = next
        }
        return bytes
    }

    static func encode(_ bytes: [UInt8]) -> String {
        bytes.map { String(format: "%02x", $0) }.joined()
    }
}

struct NoiseVector: Decodable {
    struct Message: Decodable {
        let payload: String
        let ciphertext: String
    }

    let protocolName: String
    let initPrologue: String
    let initEphemeral: String
    let initStatic: String?
    let initRemoteStatic: String?
    let initPsks: [String]?
    let respPrologue: String
    let respEphemeral: String
    let respStatic: String?
    let respPsks: [String]?
    let handshakeHash: String
    let messages: [Message]

    enum CodingKeys: String, CodingKey {
        case protocolName = "protocol_name"
        case initPrologue = "init_prologue", initEphemeral = "init_ephemeral", initStatic = "init_static"
        case initRemoteStatic = "init_remote_static", initPsks = "init_psks"
        case respPrologue = "resp_prologue", respEphemeral = "resp_ephemeral", respStatic = "resp_static"
        case respPsks = "resp_psks"
        case handshakeHash = "handshake_hash", messages
    }

    static func loadAll() throws -> [NoiseVector] {
        struct File: Decodable { let vectors: [NoiseVector] }
        let url = try XCTUnwrap(
            Bundle.module.url(forResource: "noise-25519-chachapoly-sha256", withExtension: "json", subdirectory: "Fixtures"),
            "test vectors missing from the test bundle")
        return try JSONDecoder().decode(File.self, from: Data(contentsOf: url)).vectors
    }

    func pattern() throws -> NoisePattern { try NoisePattern(protocolName: protocolName) }

    func initiator(psks overridePSKs: [[UInt8]]? = nil) throws -> NoiseHandshakeState {
        try NoiseHandshakeState(
            pattern: pattern(), initiator: true,
            prologue: NoiseTestHex.decode(initPrologue),
            localStatic: initStatic.map(NoiseTestHex.decode),
            remoteStatic: initRemoteStatic.map(NoiseTestHex.decode),
            psks: overridePSKs ?? (initPsks ?? []).map(NoiseTestHex.decode),
            localEphemeral: NoiseTestHex.decode(initEphemeral))
    }

    func responder(psks overridePSKs: [[UInt8]]? = nil) throws -> NoiseHandshakeState {
        try NoiseHandshakeState(
            pattern: pattern(), initiator: false,
            prologue: NoiseTestHex.decode(respPrologue),
            localStatic: respStatic.map(NoiseTestHex.decode),
            psks: overridePSKs ?? (respPsks ?? []).map(NoiseTestHex.decode),
            localEphemeral: NoiseTestHex.decode(respEphemeral))
    }
}

final class NoiseVectorTests: XCTestCase {
    func testVectorFileCoversEveryPatternTheTunnelCodeNeeds() throws {
        let names = Set(try NoiseVector.loadAll().map(\.protocolName))
        for pattern in [NoisePattern.NN, .NK, .XX, .IK, .NNpsk0, .NKpsk0, .NKpsk2, .XXpsk3, .IKpsk2] {
            XCTAssertTrue(names.contains(pattern.protocolName), "no vector for \(pattern.protocolName)")
        }
    }

    func testEveryVectorHandshakeAndTransportMessagesMatch() throws {
        let vectors = try NoiseVector.loadAll()
        XCTAssertEqual(vectors.count, 9)
        for vector in vectors {
            var initiator = try vector.initiator()
            var responder = try vector.responder()
            let handshakeLength = try vector.pattern().messages.count
            XCTAssertGreaterThan(vector.messages.count, handshakeLength, vector.protocolName)

            for (index, message) in vector.messages.prefix(handshakeLength).enumerated() {
                let context = "\(vector.protocolName) handshake message \(index)"
                let payload = NoiseTestHex.decode(message.payload)
                let ciphertext: [UInt8]
                let received: [UInt8]
                if index % 2 == 0 {
                    ciphertext = try initiator.writeMessage(payload: payload)
                    received = try responder.readMessage(ciphertext)
                } else {
                    ciphertext = try responder.writeMessage(payload: payload)
                    received = try initiator.readMessage(ciphertext)
                }
                XCTAssertEqual(NoiseTestHex.encode(ciphertext), message.ciphertext, context)
                XCTAssertEqual(received, payload, context)
            }

            XCTAssertTrue(initiator.isComplete, vector.protocolName)
            XCTAssertTrue(responder.isComplete, vector.protocolName)
            XCTAssertEqual(NoiseTestHex.encode(initiator.handshakeHash), vector.handshakeHash, vector.protocolName)
            XCTAssertEqual(NoiseTestHex.encode(responder.handshakeHash), vector.handshakeHash, vector.protocolName)
            if let initStatic = vector.initStatic {
                let expected = try StaticKeyPair(privateKey: NoiseTestHex.decode(initStatic)).publicKey
                XCTAssertEqual(responder.remoteStaticPublicKey, expected, "\(vector.protocolName): responder learned the initiator's static key")
            }

            // Transport messages keep alternating by index: even from the initiator, odd from the responder.
            var (initiatorSend, initiatorReceive) = initiator.split()
            var (responderReceive, responderSend) = responder.split()
            for (index, message) in vector.messages.enumerated().dropFirst(handshakeLength) {
                let context = "\(vector.protocolName) transport message \(index)"
                let payload = NoiseTestHex.decode(message.payload)
                let ciphertext: [UInt8]
                let received: [UInt8]
                if index % 2 == 0 {
                    ciphertext = try initiatorSend.encrypt(plaintext: payload)
                    received = try responderReceive.decrypt(ciphertext: ciphertext)
                } else {
                    ciphertext = try responderSend.encrypt(plaintext: payload)
                    received = try initiatorReceive.decrypt(ciphertext: ciphertext)
                }
                XCTAssertEqual(NoiseTestHex.encode(ciphertext), message.ciphertext, context)
                XCTAssertEqual(received, payload, context)
            }
        }
    }

    /// A message whose payload is still in clear (e.g. `-> e` of NN or XX) cannot be checked by its
    /// reader; the change then shows up in the handshake hash and the peer's next read fails.
    func testAFlippedBitInAnyHandshakeMessageFailsTheHandshakeAtTheNextAuthenticatedRead() throws {
        for vector in try NoiseVector.loadAll() {
            let handshakeLength = try vector.pattern().messages.count
            for tampered in 0..<handshakeLength {
                let message = vector.messages[tampered]
                let length = NoiseTestHex.decode(message.ciphertext).count
                let payload = NoiseTestHex.decode(message.payload)
                let payloadInClear = NoiseTestHex.decode(message.ciphertext).suffix(payload.count).elementsEqual(payload)
                for byte in 0..<length {
                    let failedAt = try runHandshake(vector, flippingBit: byte % 8, ofByte: byte, inMessage: tampered)
                    let context = "\(vector.protocolName) message \(tampered) byte \(byte)"
                    if payloadInClear && tampered + 1 < handshakeLength {
                        XCTAssertEqual(failedAt, tampered + 1, context)
                    } else {
                        XCTAssertEqual(failedAt, tampered, context)
                    }
                }
            }
        }
    }

    func testAWrongPSKFailsTheReadOfTheMessageCarryingThePSKToken() throws {
        let wrongPSK = [UInt8](repeating: 0x42, count: 32)
        var checked = 0
        for vector in try NoiseVector.loadAll() where vector.respPsks != nil {
            let pattern = try vector.pattern()
            let pskMessage = try XCTUnwrap(pattern.messages.firstIndex { $0.contains(.psk) })
            var initiator = try vector.initiator()
            var responder = try vector.responder(psks: [wrongPSK])
            var failedAt: Int?
            for index in 0..<pattern.messages.count {
                let payload = NoiseTestHex.decode(vector.messages[index].payload)
                do {
                    if index % 2 == 0 {
                        _ = try responder.readMessage(initiator.writeMessage(payload: payload))
                    } else {
                        _ = try initiator.readMessage(responder.writeMessage(payload: payload))
                    }
                } catch {
                    XCTAssertEqual(error as? NoiseError, .decryptFailed, vector.protocolName)
                    failedAt = index
                    break
                }
            }
            XCTAssertEqual(failedAt, pskMessage, vector.protocolName)
            checked += 1
        }
        XCTAssertEqual(checked, 5)
    }

    func testAFailedHandshakeRefusesFurtherMessages() throws {
        let vector = try XCTUnwrap(try NoiseVector.loadAll().first { $0.protocolName.contains("NKpsk0") })
        var initiator = try vector.initiator()
        var responder = try vector.responder()
        var message = try initiator.writeMessage(payload: [])
        message[40] ^= 1
        XCTAssertThrowsError(try responder.readMessage(message))
        // The untampered message must not be accepted either: the failed state is final.
        message[40] ^= 1
        XCTAssertThrowsError(try responder.readMessage(message)) { error in
            guard case .handshakeOutOfOrder = error as? NoiseError else { return XCTFail("got \(error)") }
        }
        XCTAssertFalse(responder.isComplete)
    }

    func testMessagesOutOfTurnAreRejected() throws {
        let vector = try XCTUnwrap(try NoiseVector.loadAll().first { $0.protocolName.contains("_NN_") })
        var initiator = try vector.initiator()
        var responder = try vector.responder()
        XCTAssertThrowsError(try responder.writeMessage(payload: [])) { error in
            guard case .handshakeOutOfOrder = error as? NoiseError else { return XCTFail("got \(error)") }
        }
        XCTAssertThrowsError(try initiator.readMessage([UInt8](repeating: 0, count: 48)))
    }

    func testTruncatedHandshakeMessageIsAWrongLengthError() throws {
        let vector = try XCTUnwrap(try NoiseVector.loadAll().first { $0.protocolName.contains("_IK_") })
        var initiator = try vector.initiator()
        var responder = try vector.responder()
        let message = try initiator.writeMessage(payload: [])
        // IK message 1: e (32) + encrypted s (48) + payload tag (16).
        XCTAssertEqual(message.count, 96)
        XCTAssertThrowsError(try responder.readMessage(Array(message.prefix(95)))) { error in
            XCTAssertEqual(error as? NoiseError, .wrongMessageLength(expectedAtLeast: 96, actual: 95))
        }
    }

    func testOversizedHandshakeMessageIsRejected() throws {
        var responder = try NoiseHandshakeState(pattern: .NN, initiator: false)
        XCTAssertThrowsError(try responder.readMessage([UInt8](repeating: 7, count: 65536))) { error in
            XCTAssertEqual(error as? NoiseError, .messageTooLong(length: 65536))
        }
        var initiator = try NoiseHandshakeState(pattern: .NN, initiator: true)
        XCTAssertThrowsError(try initiator.writeMessage(payload: [UInt8](repeating: 0, count: 65535 - 31)))
    }

    func testALowOrderEphemeralKeyIsRejected() throws {
        let server = StaticKeyPair.generate()
        let psk = [UInt8](repeating: 9, count: 32)
        var responder = try NoiseHandshakeState(pattern: .NKpsk0, initiator: false, localStatic: server.privateKey, psks: [psk])
        // The all-zero point has order 1: DH with it yields all zeros.
        let message = [UInt8](repeating: 0, count: 48)
        XCTAssertThrowsError(try responder.readMessage(message)) { error in
            XCTAssertEqual(error as? NoiseError, .invalidPublicKey)
        }
    }

    func testMissingKeysAreReportedAtInitialization() {
        XCTAssertThrowsError(try NoiseHandshakeState(pattern: .NK, initiator: true)) { error in
            guard case .missingKey = error as? NoiseError else { return XCTFail("got \(error)") }
        }
        XCTAssertThrowsError(try NoiseHandshakeState(pattern: .XX, initiator: false)) { error in
            guard case .missingKey = error as? NoiseError else { return XCTFail("got \(error)") }
        }
        XCTAssertThrowsError(try NoiseHandshakeState(pattern: .NNpsk0, initiator: true)) { error in
            guard case .missingKey = error as? NoiseError else { return XCTFail("got \(error)") }
        }
        XCTAssertThrowsError(try NoiseHandshakeState(pattern: .NNpsk0, initiator: true, psks: [[1, 2, 3]])) { error in
            XCTAssertEqual(error as? NoiseError, .badKeyLength(what: "PSK", expected: 32, actual: 3))
        }
        XCTAssertThrowsError(try NoiseHandshakeState(pattern: .NK, initiator: true, remoteStatic: [UInt8](repeating: 1, count: 31)))
    }

    func testPatternNamesParseWithPSKModifiers() throws {
        XCTAssertEqual(try NoisePattern(name: "NKpsk0").messages, [[.psk, .e, .es], [.e, .ee]])
        XCTAssertEqual(try NoisePattern(name: "XXpsk3").messages, [[.e], [.e, .ee, .s, .es], [.s, .se, .psk]])
        XCTAssertEqual(try NoisePattern(name: "NNpsk0+psk2").messages, [[.psk, .e], [.e, .ee, .psk]])
        XCTAssertEqual(try NoisePattern(name: "IKpsk2").responderPreMessage, [.s])
        XCTAssertEqual(try NoisePattern(protocolName: "Noise_IKpsk2_25519_ChaChaPoly_SHA256"), .IKpsk2)
        for bad in ["", "KK", "NNpsk", "NNpsk3", "NNpsk-0", "NN+psk0", "NNpsk0+", "NNx"] {
            XCTAssertThrowsError(try NoisePattern(name: bad), "accepted \"\(bad)\"")
        }
        XCTAssertThrowsError(try NoisePattern(protocolName: "Noise_NN_448_ChaChaPoly_SHA256"))
    }

    func testCipherStateRekeyIsEncryptionOfZerosUnderTheMaximumNonce() throws {
        let key = [UInt8](repeating: 0x5a, count: 32)
        var cipher = try NoiseCipherState(key: key)
        _ = try cipher.encrypt(plaintext: [1, 2, 3])
        cipher.rekey()
        XCTAssertEqual(cipher.nonce, 1, "rekey must not reset the nonce")

        // Independent computation straight from swift-crypto: REKEY(k) = ENCRYPT(k, 2^64-1, [], zeros)[0..<32].
        let maxNonce = try ChaChaPolyTestNonce.make(UInt64.max)
        let sealed = try ChaChaPoly.seal([UInt8](repeating: 0, count: 32), using: SymmetricKey(data: key), nonce: maxNonce)
        var expected = try NoiseCipherState(key: Array(sealed.ciphertext.prefix(32)))
        expected.setNonce(1)
        XCTAssertEqual(try cipher.encrypt(plaintext: [9, 9]), try expected.encrypt(plaintext: [9, 9]))
    }

    func testCipherStateRefusesTheReservedNonceAndKeepsTheNonceOnFailure() throws {
        var cipher = try NoiseCipherState(key: [UInt8](repeating: 1, count: 32))
        cipher.setNonce(UInt64.max - 1)
        XCTAssertNoThrow(try cipher.encrypt(plaintext: []))
        XCTAssertThrowsError(try cipher.encrypt(plaintext: [])) { error in
            XCTAssertEqual(error as? NoiseError, .nonceExhausted)
        }
        var receiver = try NoiseCipherState(key: [UInt8](repeating: 1, count: 32))
        XCTAssertThrowsError(try receiver.decrypt(ciphertext: [UInt8](repeating: 0, count: 20)))
        XCTAssertThrowsError(try receiver.decrypt(ciphertext: [1, 2, 3]))
        XCTAssertEqual(receiver.nonce, 0)
    }

    // MARK: Helpers

    /// Runs the vector's handshake, flipping one bit of message `tampered` in transit. Returns the index
    /// of the message whose read threw, or nil if the handshake completed.
    private func runHandshake(_ vector: NoiseVector, flippingBit bit: Int, ofByte byte: Int, inMessage tampered: Int) throws -> Int? {
        var initiator = try vector.initiator()
        var responder = try vector.responder()
        for index in 0..<(try vector.pattern().messages.count) {
            let payload = NoiseTestHex.decode(vector.messages[index].payload)
            var message = index % 2 == 0 ? try initiator.writeMessage(payload: payload) : try responder.writeMessage(payload: payload)
            if index == tampered { message[byte] ^= UInt8(1 << bit) }
            do {
                if index % 2 == 0 { _ = try responder.readMessage(message) } else { _ = try initiator.readMessage(message) }
            } catch {
                return index
            }
        }
        return nil
    }

    /// NoiseAEAD against swift-crypto's own ChaChaPoly with the Noise nonce, and its open from a
    /// contiguous array, an array slice and a collection without contiguous storage alike.
    func testNoiseAEADMatchesChaChaPolyAndOpensAnyCollection() throws {
        let keyBytes = (0..<32).map { UInt8($0 * 7 & 0xFF) }
        let key = CipherKey(keyBytes)
        let plaintext = (0..<300).map { UInt8($0 & 0xFF) }
        let ad: [UInt8] = [1, 2, 3]
        let counter: UInt64 = 0x0102_0304_0506
        var prefix: [UInt8] = [0xEE]
        NoiseAEAD.seal(key: key, counter: counter, ad: ad, plaintext: plaintext, appendingTo: &prefix)
        let sealed = Array(prefix.dropFirst())
        XCTAssertEqual(prefix.first, 0xEE, "appends, keeps what was there")
        let reference = try ChaChaPoly.seal(plaintext, using: SymmetricKey(data: keyBytes),
                                            nonce: ChaChaPolyTestNonce.make(counter), authenticating: ad)
        XCTAssertEqual(sealed, Array(reference.ciphertext) + Array(reference.tag))

        for input in [AnyCollection(sealed), AnyCollection(sealed[...]), AnyCollection(sealed.lazy.map { $0 })] {
            var output: [UInt8] = [9]
            XCTAssertTrue(NoiseAEAD.open(key: key, counter: counter, ad: ad, ciphertext: input, appendingTo: &output))
            XCTAssertEqual(output, [9] + plaintext)
        }
        var viaArray: [UInt8] = []
        XCTAssertTrue(NoiseAEAD.open(key: key, counter: counter, ad: ad, ciphertext: sealed, appendingTo: &viaArray))
        XCTAssertEqual(viaArray, plaintext)

        // A flipped bit, another counter or other AD: false, and the output is left as it was.
        var tampered = sealed
        tampered[40] ^= 0x80
        for (ciphertext, n, data) in [(tampered, counter, ad), (sealed, counter + 1, ad), (sealed, counter, [1, 2])] {
            var output: [UInt8] = [9]
            XCTAssertFalse(NoiseAEAD.open(key: key, counter: n, ad: data, ciphertext: ciphertext, appendingTo: &output))
            XCTAssertEqual(output, [9])
        }
        var short: [UInt8] = []
        XCTAssertFalse(NoiseAEAD.open(key: key, counter: counter, ad: ad, ciphertext: sealed.prefix(15), appendingTo: &short))
    }
}

enum ChaChaPolyTestNonce {
    static func make(_ counter: UInt64) throws -> ChaChaPoly.Nonce {
        try ChaChaPoly.Nonce(data: [0, 0, 0, 0] + withUnsafeBytes(of: counter.littleEndian) { Array($0) })
    }
}
