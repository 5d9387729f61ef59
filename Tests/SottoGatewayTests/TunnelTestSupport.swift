import Logging
import NIOCore
import NIOEmbedded
import SottoConfig
import SottoTunnel
import XCTest
@testable import SottoGateway

// Test doubles and harnesses for TunnelSession: a session in an EmbeddedChannel, driven either
// by a second session (wired back to back) or by the test itself holding the other end of the
// Noise handshake, so it can read and forge cells (protocol.md, "Handshake" and "Cells").

let quietLogger = Logger(label: "sotto.tests", factory: { _ in SwiftLogNoOpLogHandler() })

func bytes(_ buffer: ByteBuffer) -> [UInt8] { Array(buffer.readableBytesView) }

func buffer(_ bytes: [UInt8]) -> ByteBuffer {
    var buffer = ByteBufferAllocator().buffer(capacity: bytes.count)
    buffer.writeBytes(bytes)
    return buffer
}

/// A payload whose every byte depends on its offset, so a lost, duplicated or reordered
/// chunk shows up as a mismatch.
func patterned(count: Int, seed: Int = 0) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: ($0 &* 31) ^ ($0 >> 8) ^ seed) }
}

/// The local end of a flow, recording what the tunnel hands it.
final class RecordingEndpoint: TunnelFlowEndpoint {
    var datagrams: [[UInt8]] = []
    var stream: [UInt8] = []
    var openedCount = 0
    var closes: [(reason: CloseReason, message: String)] = []
    var creditNotices = 0
    var flushes = 0
    var onStream: ((ByteBuffer) -> Void)?
    var onOpened: (() -> Void)?
    var onCredit: (() -> Void)?

    func tunnelDeliver(datagram: ByteBuffer) { datagrams.append(bytes(datagram)) }
    func tunnelDeliver(stream buffer: ByteBuffer) {
        stream.append(contentsOf: buffer.readableBytesView)
        onStream?(buffer)
    }
    func tunnelFlush() { flushes += 1 }
    func tunnelOpened() {
        openedCount += 1
        onOpened?()
    }
    func tunnelClosed(reason: CloseReason, message: String) { closes.append((reason, message)) }
    func tunnelCreditAvailable() {
        creditNotices += 1
        onCredit?()
    }
}

/// Records the session's calls; at the exit it accepts every flow request with a fresh
/// RecordingEndpoint unless `acceptsFlows` is off.
final class RecordingDelegate: TunnelSessionDelegate {
    var establishedCount = 0
    var endings: [Error?] = []
    var requests: [(id: UInt32, request: OpenRequest)] = []
    var acceptsFlows = true
    var accepted: [UInt32: RecordingEndpoint] = [:]
    /// Called for every accepted flow, after acceptFlow.
    var onAccept: ((TunnelSession, UInt32, RecordingEndpoint) -> Void)?

    func tunnelEstablished(_ session: TunnelSession) { establishedCount += 1 }
    func tunnelEnded(_ session: TunnelSession, error: Error?) { endings.append(error) }
    func tunnel(_ session: TunnelSession, requestsFlow id: UInt32, _ request: OpenRequest) {
        requests.append((id, request))
        guard acceptsFlows else { return }
        let endpoint = RecordingEndpoint()
        accepted[id] = endpoint
        session.acceptFlow(id, request: request, endpoint: endpoint)
        onAccept?(session, id, endpoint)
    }

    var endedWithError: TunnelSessionError? { endings.last.flatMap { $0 as? TunnelSessionError } }
}

/// One TunnelSession in an EmbeddedChannel.
final class SessionUnderTest {
    let loop: EmbeddedEventLoop
    let session: TunnelSession
    let channel: EmbeddedChannel
    let delegate = RecordingDelegate()
    let counters = GatewayCounters()
    let cellSize: Int
    /// The size of every buffer the session wrote to its transport, in order.
    private(set) var writeSizes: [Int] = []

    /// An entry session (initiator) pinned to `serverPublicKey`.
    init(entryTo serverPublicKey: [UInt8], psk: [UInt8], cellSize: Int = 514, settings: TunnelSettings = .defaults,
         loop: EmbeddedEventLoop = EmbeddedEventLoop()) throws {
        self.loop = loop
        self.cellSize = cellSize
        let initiator = try TunnelInitiator(serverPublicKey: serverPublicKey, psk: psk, cellSize: cellSize)
        session = TunnelSession(initiator: initiator, name: "test->exit", cellSize: cellSize, settings: settings,
                                counters: counters, logger: quietLogger)
        session.delegate = delegate
        channel = EmbeddedChannel(handler: session, loop: loop)
    }

    /// An exit session (responder) holding `privateKey`.
    init(exitWith privateKey: [UInt8], psk: [UInt8], cellSize: Int = 514, settings: TunnelSettings = .defaults,
         maxFlows: Int = 256, loop: EmbeddedEventLoop = EmbeddedEventLoop()) throws {
        self.loop = loop
        self.cellSize = cellSize
        let responder = try TunnelResponder(staticPrivateKey: privateKey, psk: psk, cellSize: cellSize)
        session = TunnelSession(responder: responder, name: "test-service", cellSize: cellSize, settings: settings,
                                maxFlows: maxFlows, counters: counters, logger: quietLogger)
        session.delegate = delegate
        channel = EmbeddedChannel(handler: session, loop: loop)
    }

    /// Makes the transport active, as a connected or accepted TCP socket would be.
    func activate() throws {
        try channel.connect(to: SocketAddress(ipAddress: "192.0.2.7", port: 40_000)).wait()
    }

    /// Runs what is due on the loop and takes everything the session flushed to its transport.
    func takeOutbound() throws -> [ByteBuffer] {
        loop.run()
        var out: [ByteBuffer] = []
        while var chunk = try channel.readOutbound(as: ByteBuffer.self) {
            writeSizes.append(chunk.readableBytes)
            // The session writes many cells in one buffer; tests look at them one by one.
            while chunk.readableBytes >= cellSize, let cell = chunk.readSlice(length: cellSize) {
                out.append(cell)
            }
            if chunk.readableBytes > 0 { out.append(chunk) }
        }
        return out
    }

    /// Hands bytes to the session as its transport would (ignored once the transport closed).
    func deliver(_ chunk: ByteBuffer) throws {
        guard channel.isActive else { return }
        try channel.writeInbound(chunk)
    }

    func deliver(_ raw: [UInt8]) throws { try deliver(buffer(raw)) }
}

/// The far end of a tunnel, played by the test with SottoTunnel's handshake and ciphers.
struct RawPeer {
    var sealer: CellSealer
    var opener: CellOpener
    let cellSize: Int

    init(_ established: TunnelEstablished, cellSize: Int) {
        sealer = established.sealer
        opener = established.opener
        self.cellSize = cellSize
    }

    mutating func seal(_ cell: Cell) throws -> [UInt8] {
        try sealer.seal(CellCodec.encode(cell, cellSize: cellSize))
    }

    mutating func open(_ wire: ByteBuffer) throws -> Cell {
        XCTAssertEqual(wire.readableBytes, cellSize, "a write on the tunnel is not exactly one cell")
        return try CellCodec.decode(opener.open(bytes(wire)), cellSize: cellSize)
    }

    mutating func open(_ wires: [ByteBuffer]) throws -> [Cell] {
        try wires.map { try open($0) }
    }

    /// Plays the exit against an entry session that is already active, and completes the handshake.
    static func acceptHandshake(from entry: SessionUnderTest, privateKey: [UInt8], psk: [UInt8]) throws -> RawPeer {
        let first = try entry.takeOutbound()
        XCTAssertEqual(first.map(\.readableBytes), [entry.cellSize], "the entry's first message is one cell")
        var responder = try TunnelResponder(staticPrivateKey: privateKey, psk: psk, cellSize: entry.cellSize)
        _ = try responder.readFirstMessage(first.flatMap(bytes))
        let (reply, established) = try responder.makeResponse()
        try entry.deliver(reply)
        XCTAssertTrue(entry.session.isEstablished)
        return RawPeer(established, cellSize: entry.cellSize)
    }

    /// Plays the entry against an exit session that is already active, and completes the handshake.
    static func initiateHandshake(with exit: SessionUnderTest, publicKey: [UInt8], psk: [UInt8]) throws -> RawPeer {
        var initiator = try TunnelInitiator(serverPublicKey: publicKey, psk: psk, cellSize: exit.cellSize)
        try exit.deliver(initiator.makeFirstMessage())
        let reply = try exit.takeOutbound()
        XCTAssertEqual(reply.map(\.readableBytes), [exit.cellSize], "the exit's reply is one cell")
        let established = try initiator.readResponse(reply.flatMap(bytes))
        XCTAssertTrue(exit.session.isEstablished)
        return RawPeer(established, cellSize: exit.cellSize)
    }
}

/// An entry and an exit session on one EmbeddedEventLoop, their transports wired back to back.
final class TunnelPair {
    let loop = EmbeddedEventLoop()
    let keys = StaticKeyPair.generate()
    let psk = TunnelKeys.generatePSK()
    let entry: SessionUnderTest
    let exit: SessionUnderTest
    /// Sees (and may replace) every chunk on its way from the entry to the exit.
    var entryToExit: ((ByteBuffer) -> [ByteBuffer])?
    /// Sees (and may replace) every chunk on its way from the exit to the entry.
    var exitToEntry: ((ByteBuffer) -> [ByteBuffer])?

    init(cellSize: Int = 514, entrySettings: TunnelSettings = .defaults, exitSettings: TunnelSettings = .defaults,
         maxFlows: Int = 256) throws {
        exit = try SessionUnderTest(exitWith: keys.privateKey, psk: psk, cellSize: cellSize, settings: exitSettings,
                                    maxFlows: maxFlows, loop: loop)
        entry = try SessionUnderTest(entryTo: keys.publicKey, psk: psk, cellSize: cellSize, settings: entrySettings,
                                     loop: loop)
    }

    /// Activates both transports and runs the handshake.
    func connect(file: StaticString = #filePath, line: UInt = #line) throws {
        try exit.activate()
        try entry.activate()
        try pump()
        XCTAssertTrue(entry.session.isEstablished, "entry not established", file: file, line: line)
        XCTAssertTrue(exit.session.isEstablished, "exit not established", file: file, line: line)
    }

    /// Moves bytes both ways until neither side has anything more to say. Bounded, so a
    /// ping-pong that never settles fails instead of hanging.
    func pump(maxRounds: Int = 100_000, file: StaticString = #filePath, line: UInt = #line) throws {
        for _ in 0..<maxRounds {
            var moved = false
            for chunk in try entry.takeOutbound() {
                moved = true
                for forwarded in entryToExit?(chunk) ?? [chunk] { try exit.deliver(forwarded) }
            }
            for chunk in try exit.takeOutbound() {
                moved = true
                for forwarded in exitToEntry?(chunk) ?? [chunk] { try entry.deliver(forwarded) }
            }
            if !moved { return }
        }
        XCTFail("the two sessions kept talking for \(maxRounds) rounds", file: file, line: line)
    }

    /// Every write of both sessions, handshake included, is a whole number of cells.
    func assertOnlyWholeCellsWritten(file: StaticString = #filePath, line: UInt = #line) {
        for (side, sizes) in [("entry", entry.writeSizes), ("exit", exit.writeSizes)] {
            XCTAssertFalse(sizes.isEmpty, "\(side) wrote nothing", file: file, line: line)
            let odd = sizes.filter { $0 == 0 || $0 % entry.cellSize != 0 }
            XCTAssertEqual(odd, [], "\(side) wrote chunks that are not whole \(entry.cellSize)-byte cells",
                           file: file, line: line)
        }
    }
}
