// The tunnel handshake and cell ciphers of docs/protocol.md ("Handshake", "Cells").

import XCTest
@testable import SottoTunnel

final class TunnelHandshakeTests: XCTestCase {
    private let server = StaticKeyPair.generate()
    private let psk = TunnelKeys.generatePSK()
    private let cellSize = TunnelConstants.defaultCellSize

    // MARK: Round trip

    func testHandshakeRoundTripCarries200CellsEachWay() throws {
        var client = try TunnelInitiator(serverPublicKey: server.publicKey, psk: psk, cellSize: cellSize, options: [1, 2, 3])
        var exit = try TunnelResponder(staticPrivateKey: server.privateKey, psk: psk, cellSize: cellSize)

        let first = try client.makeFirstMessage()
        XCTAssertEqual(first.count, cellSize)
        XCTAssertEqual(try exit.readFirstMessage(first), [1, 2, 3])
        let (response, serverSide) = try exit.makeResponse(options: [9])
        XCTAssertEqual(response.count, cellSize)
        let clientSide = try client.readResponse(response)

        XCTAssertEqual(clientSide.peerOptions, [9])
        XCTAssertEqual(serverSide.peerOptions, [1, 2, 3])
        XCTAssertEqual(clientSide.handshakeHash, serverSide.handshakeHash)
        XCTAssertEqual(clientSide.handshakeHash.count, 32)

        var (clientSealer, clientOpener) = (clientSide.sealer, clientSide.opener)
        var (serverSealer, serverOpener) = (serverSide.sealer, serverSide.opener)
        for index in 0..<200 {
            let up = Self.plaintext(index, size: clientSealer.plaintextSize)
            let upCell = try clientSealer.seal(up)
            XCTAssertEqual(upCell.count, cellSize)
            XCTAssertNotEqual(Array(upCell.prefix(up.count)), up, "cell \(index) went out in clear")
            XCTAssertEqual(try serverOpener.open(upCell), up)

            let down = Self.plaintext(1000 + index, size: serverSealer.plaintextSize)
            let downCell = try serverSealer.seal(down)
            XCTAssertEqual(downCell.count, cellSize)
            XCTAssertEqual(try clientOpener.open(downCell), down)
        }
        XCTAssertEqual(clientSealer.counter, 200)
        XCTAssertEqual(serverOpener.counter, 200)
    }

    func testBothDirectionsUseDifferentKeys() throws {
        var (client, exit) = try establish()
        let plaintext = [UInt8](repeating: 0, count: client.sealer.plaintextSize)
        // Same counter and plaintext in both directions must not give the same cell.
        XCTAssertNotEqual(try client.sealer.seal(plaintext), try exit.sealer.seal(plaintext))
        // A client cell reflected back to the client does not open.
        let reflected = try client.sealer.seal(plaintext)
        XCTAssertThrowsError(try client.opener.open(reflected))
    }

    func testCellsAreTheNoiseTransportEncryptionWithTheNoiseNonce() throws {
        let key = [UInt8](repeating: 0x33, count: 32)
        var sealer = try CellSealer(key: key, cellSize: 128)
        var cipher = try NoiseCipherState(key: key)
        for index in 0..<5 {
            let plaintext = Self.plaintext(index, size: 112)
            XCTAssertEqual(try sealer.seal(plaintext), try cipher.encrypt(plaintext: plaintext))
        }
    }

    func testGatewaysWithDifferentCellSizesCannotHandshake() throws {
        var client = try TunnelInitiator(serverPublicKey: server.publicKey, psk: psk, cellSize: 600)
        var exit = try TunnelResponder(staticPrivateKey: server.privateKey, psk: psk, cellSize: cellSize)
        XCTAssertThrowsError(try exit.readFirstMessage(client.makeFirstMessage())) { error in
            XCTAssertEqual(error as? TunnelCryptoError, .wrongMessageLength(expected: cellSize, actual: 600))
        }
    }

    func testHandshakeWorksAtTheSmallestAndLargestCellSizes() throws {
        for size in [TunnelConstants.cellSizeRange.lowerBound, TunnelConstants.cellSizeRange.upperBound] {
            let maxOptions = [UInt8](repeating: 0xab, count: TunnelConstants.maxOptionsLength(cellSize: size))
            var (client, exit) = try establish(cellSize: size, clientOptions: maxOptions)
            XCTAssertEqual(exit.peerOptions, maxOptions)
            let plaintext = Self.plaintext(size, size: size - 16)
            XCTAssertEqual(try exit.opener.open(client.sealer.seal(plaintext)), plaintext)
        }
    }

    // MARK: Responder refuses bad first messages

    func testResponderRejectsFirstMessageWithWrongPSK() throws {
        var client = try TunnelInitiator(serverPublicKey: server.publicKey, psk: TunnelKeys.generatePSK(), cellSize: cellSize)
        var exit = try TunnelResponder(staticPrivateKey: server.privateKey, psk: psk, cellSize: cellSize)
        XCTAssertThrowsError(try exit.readFirstMessage(client.makeFirstMessage())) { error in
            XCTAssertEqual(error as? TunnelCryptoError, .handshakeAuthenticationFailed)
        }
    }

    func testResponderRejectsFirstMessageForAnotherServerKey() throws {
        let other = StaticKeyPair.generate()
        var client = try TunnelInitiator(serverPublicKey: other.publicKey, psk: psk, cellSize: cellSize)
        var exit = try TunnelResponder(staticPrivateKey: server.privateKey, psk: psk, cellSize: cellSize)
        XCTAssertThrowsError(try exit.readFirstMessage(client.makeFirstMessage())) { error in
            XCTAssertEqual(error as? TunnelCryptoError, .handshakeAuthenticationFailed)
        }
    }

    func testResponderRejectsTruncatedAndOversizedFirstMessages() throws {
        var client = try TunnelInitiator(serverPublicKey: server.publicKey, psk: psk, cellSize: cellSize)
        let first = try client.makeFirstMessage()
        for candidate in [[], Array(first.prefix(1)), Array(first.prefix(48)), Array(first.dropLast()),
                          first + [0], first + first] {
            var exit = try TunnelResponder(staticPrivateKey: server.privateKey, psk: psk, cellSize: cellSize)
            XCTAssertThrowsError(try exit.readFirstMessage(candidate)) { error in
                XCTAssertEqual(error as? TunnelCryptoError, .wrongMessageLength(expected: self.cellSize, actual: candidate.count))
            }
        }
    }

    func testResponderRejectsRandomGarbage() throws {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<50 {
            let garbage = (0..<cellSize).map { _ in UInt8.random(in: 0...255, using: &generator) }
            var exit = try TunnelResponder(staticPrivateKey: server.privateKey, psk: psk, cellSize: cellSize)
            XCTAssertThrowsError(try exit.readFirstMessage(garbage)) { error in
                XCTAssertEqual(error as? TunnelCryptoError, .handshakeAuthenticationFailed)
            }
        }
    }

    func testResponderRejectsAFirstMessageWithAnyBitFlipped() throws {
        var client = try TunnelInitiator(serverPublicKey: server.publicKey, psk: psk, cellSize: cellSize)
        let first = try client.makeFirstMessage()
        for byte in stride(from: 0, to: cellSize, by: 7) {
            var tampered = first
            tampered[byte] ^= UInt8(1 << (byte % 8))
            var exit = try TunnelResponder(staticPrivateKey: server.privateKey, psk: psk, cellSize: cellSize)
            XCTAssertThrowsError(try exit.readFirstMessage(tampered), "byte \(byte)") { error in
                XCTAssertEqual(error as? TunnelCryptoError, .handshakeAuthenticationFailed)
            }
        }
    }

    func testAResponderThatRejectedAMessageStaysSpent() throws {
        var client = try TunnelInitiator(serverPublicKey: server.publicKey, psk: psk, cellSize: cellSize)
        let first = try client.makeFirstMessage()
        var exit = try TunnelResponder(staticPrivateKey: server.privateKey, psk: psk, cellSize: cellSize)
        var tampered = first
        tampered[100] ^= 1
        XCTAssertThrowsError(try exit.readFirstMessage(tampered))
        XCTAssertThrowsError(try exit.readFirstMessage(first)) { error in
            guard case .handshakeOutOfOrder = error as? TunnelCryptoError else { return XCTFail("got \(error)") }
        }
        XCTAssertThrowsError(try exit.makeResponse())
    }

    // MARK: Payload checks (authenticated messages with bad contents)

    func testResponderRejectsAnotherProtocolVersion() throws {
        var payload = HandshakePayload.encode(cellSize: cellSize, options: [])
        payload[0] = 2
        XCTAssertThrowsError(try exitReading(payload: payload)) { error in
            XCTAssertEqual(error as? TunnelCryptoError, .unsupportedVersion(2))
        }
    }

    func testResponderRejectsAPayloadAnnouncingAnotherCellSize() throws {
        var payload = HandshakePayload.encode(cellSize: cellSize, options: [])
        payload[2] = 0x02
        payload[3] = 0x58  // 600
        XCTAssertThrowsError(try exitReading(payload: payload)) { error in
            XCTAssertEqual(error as? TunnelCryptoError, .cellSizeMismatch(expected: self.cellSize, announced: 600))
        }
    }

    func testResponderRejectsAnOptionsLengthBeyondThePayload() throws {
        var payload = HandshakePayload.encode(cellSize: cellSize, options: [])
        let tooLong = TunnelConstants.maxOptionsLength(cellSize: cellSize) + 1
        payload[4] = UInt8(tooLong >> 8)
        payload[5] = UInt8(tooLong & 0xff)
        XCTAssertThrowsError(try exitReading(payload: payload)) { error in
            guard case .malformedHandshakePayload = error as? TunnelCryptoError else { return XCTFail("got \(error)") }
        }
    }

    func testPayloadLayoutMatchesTheProtocolDocument() {
        let payload = HandshakePayload.encode(cellSize: 514, options: [0xaa, 0xbb])
        XCTAssertEqual(payload.count, 514 - 48)
        XCTAssertEqual(Array(payload.prefix(8)), [1, 0, 0x02, 0x02, 0x00, 0x02, 0xaa, 0xbb])
        XCTAssertTrue(payload.dropFirst(8).allSatisfy { $0 == 0 })
        XCTAssertEqual(TunnelConstants.prologue(cellSize: 514), Array("sotto tunnel v1".utf8) + [0x02, 0x02])
    }

    // MARK: Initiator refuses bad responses

    func testInitiatorRejectsATamperedResponse() throws {
        for byte in [0, 31, 32, 100, cellSize - 17, cellSize - 1] {
            var client = try TunnelInitiator(serverPublicKey: server.publicKey, psk: psk, cellSize: cellSize)
            var exit = try TunnelResponder(staticPrivateKey: server.privateKey, psk: psk, cellSize: cellSize)
            _ = try exit.readFirstMessage(client.makeFirstMessage())
            var (response, _) = try exit.makeResponse()
            response[byte] ^= 0x01
            XCTAssertThrowsError(try client.readResponse(response), "byte \(byte)") { error in
                XCTAssertEqual(error as? TunnelCryptoError, .handshakeAuthenticationFailed)
            }
        }
    }

    func testInitiatorRejectsATruncatedResponseAndAResponseFromAnotherHandshake() throws {
        var client = try TunnelInitiator(serverPublicKey: server.publicKey, psk: psk, cellSize: cellSize)
        var exit = try TunnelResponder(staticPrivateKey: server.privateKey, psk: psk, cellSize: cellSize)
        _ = try exit.readFirstMessage(client.makeFirstMessage())
        let (response, _) = try exit.makeResponse()
        XCTAssertThrowsError(try client.readResponse(Array(response.dropLast()))) { error in
            XCTAssertEqual(error as? TunnelCryptoError, .wrongMessageLength(expected: self.cellSize, actual: self.cellSize - 1))
        }

        // A valid response to a different client's first message (e.g. replayed) does not authenticate.
        var other = try TunnelInitiator(serverPublicKey: server.publicKey, psk: psk, cellSize: cellSize)
        _ = try other.makeFirstMessage()
        XCTAssertThrowsError(try other.readResponse(response)) { error in
            XCTAssertEqual(error as? TunnelCryptoError, .handshakeAuthenticationFailed)
        }
    }

    func testHandshakeStepsOutOfOrderAreRejected() throws {
        var client = try TunnelInitiator(serverPublicKey: server.publicKey, psk: psk, cellSize: cellSize)
        XCTAssertThrowsError(try client.readResponse([UInt8](repeating: 0, count: cellSize))) { error in
            guard case .handshakeOutOfOrder = error as? TunnelCryptoError else { return XCTFail("got \(error)") }
        }
        _ = try client.makeFirstMessage()
        XCTAssertThrowsError(try client.makeFirstMessage())

        var exit = try TunnelResponder(staticPrivateKey: server.privateKey, psk: psk, cellSize: cellSize)
        XCTAssertThrowsError(try exit.makeResponse()) { error in
            guard case .handshakeOutOfOrder = error as? TunnelCryptoError else { return XCTFail("got \(error)") }
        }
    }

    // MARK: Parameters

    func testBadParametersAreRejectedWithTheirReason() {
        XCTAssertThrowsError(try TunnelInitiator(serverPublicKey: [1, 2], psk: psk, cellSize: cellSize)) { error in
            XCTAssertEqual(error as? TunnelCryptoError, .badKeyLength(what: "server public key", expected: 32, actual: 2))
        }
        XCTAssertThrowsError(try TunnelInitiator(serverPublicKey: server.publicKey, psk: [0], cellSize: cellSize)) { error in
            XCTAssertEqual(error as? TunnelCryptoError, .badKeyLength(what: "PSK", expected: 32, actual: 1))
        }
        for size in [0, 127, 16385] {
            XCTAssertThrowsError(try TunnelInitiator(serverPublicKey: server.publicKey, psk: psk, cellSize: size)) { error in
                XCTAssertEqual(error as? TunnelCryptoError, .cellSizeOutOfRange(size))
            }
            XCTAssertThrowsError(try TunnelResponder(staticPrivateKey: server.privateKey, psk: psk, cellSize: size))
            XCTAssertThrowsError(try CellSealer(key: psk, cellSize: size))
        }
        let tooMany = [UInt8](repeating: 1, count: TunnelConstants.maxOptionsLength(cellSize: cellSize) + 1)
        XCTAssertThrowsError(try TunnelInitiator(serverPublicKey: server.publicKey, psk: psk, cellSize: cellSize, options: tooMany)) { error in
            XCTAssertEqual(error as? TunnelCryptoError, .optionsTooLong(length: tooMany.count, maximum: tooMany.count - 1))
        }
        XCTAssertThrowsError(try TunnelResponder(staticPrivateKey: [UInt8](repeating: 1, count: 33), psk: psk, cellSize: cellSize))
        XCTAssertThrowsError(try CellOpener(key: [UInt8](repeating: 1, count: 16), cellSize: cellSize))
        XCTAssertThrowsError(try CellSealer(key: psk, cellSize: cellSize, rekeyAfter: 0)) { error in
            XCTAssertEqual(error as? TunnelCryptoError, .invalidRekeyInterval)
        }
    }

    func testStaticKeyPairDerivesThePublicKeyAndNeverPrintsThePrivateKey() throws {
        let pair = StaticKeyPair.generate()
        let restored = try StaticKeyPair(privateKey: pair.privateKey)
        XCTAssertEqual(restored.publicKey, pair.publicKey)
        XCTAssertEqual(pair.privateKey.count, 32)
        XCTAssertEqual(pair.publicKey.count, 32)
        XCTAssertNotEqual(StaticKeyPair.generate().privateKey, pair.privateKey)
        let privateHex = NoiseTestHex.encode(pair.privateKey)
        XCTAssertFalse("\(pair)".contains(privateHex))
        XCTAssertFalse(String(reflecting: pair).contains(privateHex))
        XCTAssertTrue("\(pair)".contains(NoiseTestHex.encode(pair.publicKey)))
        XCTAssertThrowsError(try StaticKeyPair(privateKey: [UInt8](repeating: 0, count: 31))) { error in
            XCTAssertEqual(error as? TunnelCryptoError, .badKeyLength(what: "static private key", expected: 32, actual: 31))
        }
    }

    func testGeneratedPSKsAreFresh32ByteValues() {
        let first = TunnelKeys.generatePSK(), second = TunnelKeys.generatePSK()
        XCTAssertEqual(first.count, 32)
        XCTAssertNotEqual(first, second)
    }

    func testErrorDescriptionsNameTheLikelyCause() {
        XCTAssertTrue(TunnelCryptoError.handshakeAuthenticationFailed.description.contains("PSK"))
        XCTAssertTrue(TunnelCryptoError.wrongMessageLength(expected: 514, actual: 600).description.contains("cell_size"))
        XCTAssertTrue(TunnelCryptoError.cellSizeOutOfRange(5).description.contains("128...16384"))
    }

    // MARK: Cells

    func testSealerRejectsPlaintextOfTheWrongSize() throws {
        var (client, _) = try establish()
        for size in [0, cellSize - 17, cellSize - 15, cellSize] {
            XCTAssertThrowsError(try client.sealer.seal([UInt8](repeating: 0, count: size))) { error in
                XCTAssertEqual(error as? TunnelCryptoError, .wrongCellLength(expected: self.cellSize - 16, actual: size))
            }
        }
        XCTAssertEqual(client.sealer.counter, 0, "a refused plaintext must not consume a nonce")
    }

    func testReplayedCellIsRejectedAndPoisonsTheOpener() throws {
        var (client, exit) = try establish()
        let cells = try (0..<3).map { try client.sealer.seal(Self.plaintext($0, size: client.sealer.plaintextSize)) }
        XCTAssertNoThrow(try exit.opener.open(cells[0]))
        XCTAssertThrowsError(try exit.opener.open(cells[0])) { error in
            XCTAssertEqual(error as? TunnelCryptoError, .cellAuthenticationFailed)
        }
        XCTAssertTrue(exit.opener.isPoisoned)
        // The genuine next cell is refused too: the stream can no longer be trusted.
        XCTAssertThrowsError(try exit.opener.open(cells[1])) { error in
            XCTAssertEqual(error as? TunnelCryptoError, .cellAuthenticationFailed)
        }
    }

    func testReorderedCellIsRejectedAndPoisonsTheOpener() throws {
        var (client, exit) = try establish()
        let cells = try (0..<3).map { try client.sealer.seal(Self.plaintext($0, size: client.sealer.plaintextSize)) }
        XCTAssertThrowsError(try exit.opener.open(cells[1]))
        XCTAssertThrowsError(try exit.opener.open(cells[0]))
        XCTAssertThrowsError(try exit.opener.open(cells[2]))
        XCTAssertTrue(exit.opener.isPoisoned)
    }

    func testForgedCellIsRejectedAndPoisonsTheOpener() throws {
        for byte in [0, 1, cellSize / 2, cellSize - 16, cellSize - 1] {
            var (client, exit) = try establish()
            let plaintext = Self.plaintext(1, size: client.sealer.plaintextSize)
            var cell = try client.sealer.seal(plaintext)
            let genuineNext = try client.sealer.seal(plaintext)
            cell[byte] ^= 0x80
            var output = [UInt8]()
            XCTAssertThrowsError(try exit.opener.open(cell, appendingTo: &output), "byte \(byte)") { error in
                XCTAssertEqual(error as? TunnelCryptoError, .cellAuthenticationFailed)
            }
            XCTAssertEqual(output, [], "a forged cell must not leak plaintext")
            XCTAssertThrowsError(try exit.opener.open(genuineNext))
        }
        // Random bytes and a truncated cell are refused as well.
        var (_, exit) = try establish()
        XCTAssertThrowsError(try exit.opener.open((0..<cellSize).map { _ in UInt8.random(in: 0...255) }))
        XCTAssertTrue(exit.opener.isPoisoned)
        var (client2, exit2) = try establish()
        let cell = try client2.sealer.seal(Self.plaintext(0, size: client2.sealer.plaintextSize))
        XCTAssertThrowsError(try exit2.opener.open(Array(cell.dropLast()))) { error in
            XCTAssertEqual(error as? TunnelCryptoError, .wrongCellLength(expected: self.cellSize, actual: self.cellSize - 1))
        }
        XCTAssertThrowsError(try exit2.opener.open(cell))
    }

    func testBothEndsRekeyAtTheSameCount() throws {
        let key = TunnelKeys.generatePSK()
        var sealer = try CellSealer(key: key, cellSize: cellSize, rekeyAfter: 3)
        var opener = try CellOpener(key: key, cellSize: cellSize, rekeyAfter: 3)
        var neverRekeying = try CellOpener(key: key, cellSize: cellSize, rekeyAfter: .max)
        var plainSealer = try CellSealer(key: key, cellSize: cellSize, rekeyAfter: .max)
        for index in 0..<20 {
            let plaintext = Self.plaintext(index, size: sealer.plaintextSize)
            let cell = try sealer.seal(plaintext)
            XCTAssertEqual(try opener.open(cell), plaintext, "cell \(index)")

            // Cells 0...2 are under the first key; from cell 3 on, the key has been rekeyed.
            let sameAsWithoutRekey = try cell == plainSealer.seal(plaintext)
            XCTAssertEqual(sameAsWithoutRekey, index < 3, "cell \(index)")
            if index < 3 {
                XCTAssertEqual(try neverRekeying.open(cell), plaintext, "cell \(index)")
            } else if index == 3 {
                XCTAssertThrowsError(try neverRekeying.open(cell), "an opener that does not rekey must fail at cell 3")
            }
        }
        XCTAssertEqual(sealer.counter, 20)
        XCTAssertEqual(opener.counter, 20)
    }

    func testRekeyedCellsMatchNoiseRekey() throws {
        let key = [UInt8](repeating: 0x77, count: 32)
        var sealer = try CellSealer(key: key, cellSize: 128, rekeyAfter: 2)
        var cipher = try NoiseCipherState(key: key)
        for index in 0..<7 {
            let plaintext = Self.plaintext(index, size: 112)
            XCTAssertEqual(try sealer.seal(plaintext), try cipher.encrypt(plaintext: plaintext), "cell \(index)")
            if (index + 1) % 2 == 0 { cipher.rekey() }
        }
    }

    func testCellCounterRefusesTheReservedNonce() throws {
        let key = [UInt8](repeating: 1, count: 32)
        var sealer = try CellSealer(key: key, cellSize: 128, counter: UInt64.max - 1, rekeyAfter: .max)
        var opener = try CellOpener(key: key, cellSize: 128, counter: UInt64.max - 1, rekeyAfter: .max)
        let plaintext = [UInt8](repeating: 0, count: 112)
        XCTAssertEqual(try opener.open(sealer.seal(plaintext)), plaintext)
        XCTAssertThrowsError(try sealer.seal(plaintext)) { error in
            XCTAssertEqual(error as? TunnelCryptoError, .cellCounterExhausted)
        }
    }

    func testAppendingVariantsWriteSeveralCellsIntoOneBuffer() throws {
        var (client, exit) = try establish()
        var wire = [UInt8]()
        let plaintexts = (0..<4).map { Self.plaintext($0, size: client.sealer.plaintextSize) }
        for plaintext in plaintexts { try client.sealer.seal(plaintext, appendingTo: &wire) }
        XCTAssertEqual(wire.count, 4 * cellSize)
        var received = [UInt8]()
        for index in 0..<4 {
            try exit.opener.open(Array(wire[index * cellSize..<(index + 1) * cellSize]), appendingTo: &received)
        }
        XCTAssertEqual(received, plaintexts.flatMap { $0 })
    }

    func testDescriptionsDoNotRevealKeys() throws {
        let (client, _) = try establish()
        let text = "\(client.sealer) \(client.opener) \(try NoiseCipherState(key: psk))"
        XCTAssertFalse(text.contains(NoiseTestHex.encode(psk)))
        XCTAssertTrue(text.contains("counter: 0"))
    }

    // MARK: Helpers

    private func establish(cellSize: Int? = nil, clientOptions: [UInt8] = []) throws -> (client: TunnelEstablished, exit: TunnelEstablished) {
        let size = cellSize ?? self.cellSize
        var client = try TunnelInitiator(serverPublicKey: server.publicKey, psk: psk, cellSize: size, options: clientOptions)
        var exit = try TunnelResponder(staticPrivateKey: server.privateKey, psk: psk, cellSize: size)
        _ = try exit.readFirstMessage(client.makeFirstMessage())
        let (response, exitSide) = try exit.makeResponse()
        return (try client.readResponse(response), exitSide)
    }

    /// Builds a correctly encrypted first message around an arbitrary payload, as a peer with the
    /// right keys but a different implementation would, and feeds it to a responder.
    private func exitReading(payload: [UInt8]) throws -> [UInt8] {
        var noise = try NoiseHandshakeState(
            pattern: .NKpsk0, initiator: true, prologue: TunnelConstants.prologue(cellSize: cellSize),
            remoteStatic: server.publicKey, psks: [psk])
        let message = try noise.writeMessage(payload: payload)
        XCTAssertEqual(message.count, cellSize)
        var exit = try TunnelResponder(staticPrivateKey: server.privateKey, psk: psk, cellSize: cellSize)
        return try exit.readFirstMessage(message)
    }

    private static func plaintext(_ seed: Int, size: Int) -> [UInt8] {
        (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed &* 7 &+ 1) }
    }
}
