import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import SottoTunnel

/// The floor under Benchmarks/shaped-tunnels.sh: the same packet pattern as N shaped tunnels
/// (one fixed-size write per connection every 1/rate s ± jitter, in both directions, on N
/// loopback TCP connections, one NIO event loop, one 1 ms timer for all connections) with no
/// Sotto code at all: no cells, no encryption, no shaping logic. What the exit's CPU is above
/// this process's CPU is what Sotto adds; this process's CPU is what the kernel and NIO cost.
struct CellPacer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cell-pacer",
        abstract: "Paced fixed-size writes on N loopback TCP connections: the kernel/NIO floor of N shaped tunnels.",
        discussion: """
            Run one with --listen (the 'exit' side: accepts connections and paces writes on each) \
            and one with --connect --connections N (the other side, pacing the same way). Both \
            read and discard what arrives. Lines 'PACER_READY' (all connections up) and, at the \
            end, 'RESULT name=cell-pacer ...' go to stdout.
            """)

    @Option(help: "Loopback HOST:PORT to listen on (the measured side).", transform: Endpoint.init(parsing:))
    var listen: Endpoint?

    @Option(help: "Loopback HOST:PORT to connect to.", transform: Endpoint.init(parsing:))
    var connect: Endpoint?

    @Option(help: "Connections to open with --connect (1-20000).")
    var connections = 1_000

    @Option(help: "Writes per second per connection.")
    var rate = 10.0

    @Option(help: "Each gap is 1/rate times a uniform factor in 1 ± jitter (0 to 0.9).")
    var jitter = 0.2

    @Option(help: "Bytes per write (the cell size).")
    var bytes = 514

    @Option(help: "Stop after this many seconds.")
    var lifetime = 600

    @Flag(help: "Seal each write and open each cell read with the tunnel's cell cipher (both sides must agree).")
    var seal = false

    func validate() throws {
        guard (listen == nil) != (connect == nil) else { throw ValidationError("give exactly one of --listen and --connect") }
        try listen?.requireLoopback(role: "listen address", allowPeerName: false)
        try connect?.requireLoopback(role: "connect address", allowPeerName: false)
        guard (1...20_000).contains(connections) else { throw ValidationError("--connections must be 1-20000") }
        guard rate > 0 && rate <= 1_000 else { throw ValidationError("--rate must be above 0 and at most 1000") }
        guard (0...0.9).contains(jitter) else { throw ValidationError("--jitter must be from 0 to 0.9") }
        guard (1...65_536).contains(bytes) else { throw ValidationError("--bytes must be 1-65536") }
        guard !seal || TunnelConstants.cellSizeRange.contains(bytes) else {
            let range = TunnelConstants.cellSizeRange
            throw ValidationError("with --seal, --bytes is a cell size: \(range.lowerBound)-\(range.upperBound)")
        }
        guard (1...86_400).contains(lifetime) else { throw ValidationError("--lifetime must be 1-86400 seconds") }
    }

    func run() async throws {
        try await withEventLoopGroup { group in
            let loop = group.next()
            let pacer = Pacer(loop: loop, rate: rate, jitter: jitter, bytes: bytes)
            // Each side seals with its own direction's key and opens with the other's.
            let cipher = seal ? CellCipherKeys(listening: listen != nil) : nil
            let cellSize = bytes
            let initializer: @Sendable (Channel) -> EventLoopFuture<Void> = { channel in
                channel.eventLoop.makeCompletedFuture {
                    let crypto = try cipher.map { try CellCrypto(keys: $0, cellSize: cellSize) }
                    try channel.pipeline.syncOperations.addHandler(PacedConnection(pacer: pacer, crypto: crypto))
                }
            }
            let done = loop.makePromise(of: Void.self)
            loop.scheduleTask(in: .seconds(Int64(lifetime))) { done.succeed(()) }
            if let listen {
                let server = try await ServerBootstrap(group: group)
                    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                    .serverChannelOption(.backlog, value: 4_096)
                    .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                    .childChannelInitializer(initializer)
                    .bind(to: try socketAddress(listen)).get()
                let bound = server.localAddress.flatMap(endpoint(of:)) ?? listen
                print("sotto-bench cell-pacer listening on \(bound)")
                fflush(stdout)
                try await done.futureResult.get()
                try? await server.close()
            } else if let connect {
                let bootstrap = ClientBootstrap(group: group)
                    .channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .channelInitializer(initializer)
                let address = try socketAddress(connect)
                var channels: [Channel] = []
                for index in 0..<connections {
                    channels.append(try await bootstrap.connect(to: address).get())
                    if index % 100 == 99 { try await Task.sleep(for: .milliseconds(20)) }   // a steady start
                }
                print("PACER_READY \(channels.count) connections")
                fflush(stdout)
                try await done.futureResult.get()
                for channel in channels { try? await channel.close() }
            }
            let totals = try await loop.submit { pacer.totals }.get()
            print("RESULT name=cell-pacer connections=\(totals.connections) writes=\(totals.writes) bytes_read=\(totals.bytesRead) "
                  + "cells_opened=\(totals.cellsOpened) open_failures=\(totals.openFailures)")
        }
    }
}

/// Every connection's next write time in a 1,024-slot wheel of 1 ms slots, turned by one timer.
/// The turns keep to the clock: each is armed at an absolute deadline (start + n ms), and a late
/// wake-up serves every slot that came due meanwhile, so the connections write at `rate` however
/// long a turn takes (a repeated task's fixed delay would add each turn's own time to the period).
/// Loop-confined.
final class Pacer: @unchecked Sendable {
    let loop: EventLoop
    let rate: Double
    let jitter: Double
    let payload: ByteBuffer
    private var wheel: [[PacedConnection]] = Array(repeating: [], count: 1_024)
    private var tick: Int64 = 0
    private var start: NIODeadline?
    private var sealScratch: [UInt8] = []
    /// Seeded, not the kernel's CSPRNG: one `getrandom` call per write would be part of the
    /// floor, and the exit draws its jitter from a pooled buffer instead.
    private var random = SplitMix64(seed: UInt64(truncatingIfNeeded: ProcessInfo.processInfo.processIdentifier))
    private(set) var totals = (connections: 0, writes: 0, bytesRead: 0, cellsOpened: 0, openFailures: 0)

    init(loop: EventLoop, rate: Double, jitter: Double, bytes: Int) {
        self.loop = loop
        self.rate = rate
        self.jitter = jitter
        self.payload = ByteBuffer(repeating: 0x5A, count: bytes)
    }

    /// The next gap in 1 ms slots (at least 1).
    private func gap() -> Int64 {
        let factor = 1 + Double.random(in: -jitter...jitter, using: &random)
        return max(1, Int64((1_000 / rate * factor).rounded()))
    }

    func add(_ connection: PacedConnection) {
        totals.connections += 1
        place(connection, after: gap())
        if start == nil {
            start = loop.now
            arm()
        }
    }

    func read(_ bytes: Int, cellsOpened: Int = 0, failed: Bool = false) {
        totals.bytesRead += bytes
        totals.cellsOpened += cellsOpened
        if failed { totals.openFailures += 1 }
    }

    private func place(_ connection: PacedConnection, after slots: Int64) {
        // Gaps beyond the wheel wait a whole turn more (not at the rates used here: 1,000 ms at 1/s).
        wheel[Int((tick + min(slots, 1_023)) & 1_023)].append(connection)
    }

    private func arm() {
        guard let start else { return }
        loop.scheduleTask(deadline: start + .milliseconds(tick + 1)) { [weak self] in self?.turn() }
    }

    /// Serves every 1 ms slot due by now (at most 1,000 in one wake-up), then arms the next.
    private func turn() {
        guard let start else { return }
        let due = (loop.now - start).nanoseconds / 1_000_000
        var served = 0
        while tick < due && served < 1_000 {
            tick += 1
            served += 1
            serve(slot: Int(tick & 1_023))
        }
        arm()
    }

    /// One slot: every connection due writes once and is placed again.
    private func serve(slot: Int) {
        let due = wheel[slot]
        wheel[slot].removeAll(keepingCapacity: true)
        for connection in due where connection.write(payload, scratch: &sealScratch) {
            totals.writes += 1
            place(connection, after: gap())
        }
    }
}

/// The two directions' keys of `--seal` (fixed: a benchmark, not a tunnel).
struct CellCipherKeys: Sendable {
    let send: [UInt8]
    let receive: [UInt8]

    init(listening: Bool) {
        let toListener = [UInt8](repeating: 0x11, count: 32), fromListener = [UInt8](repeating: 0x22, count: 32)
        send = listening ? fromListener : toListener
        receive = listening ? toListener : fromListener
    }
}

/// One connection's cell cipher for `--seal`: a sealer for its writes, an opener for its reads.
struct CellCrypto {
    var sealer: CellSealer
    var opener: CellOpener
    let plaintext: [UInt8]
    var inbound = ByteBuffer()
    var opened: [UInt8] = []

    init(keys: CellCipherKeys, cellSize: Int) throws {
        sealer = try CellSealer(key: keys.send, cellSize: cellSize)
        opener = try CellOpener(key: keys.receive, cellSize: cellSize)
        plaintext = [UInt8](repeating: 0, count: cellSize - TunnelConstants.tagSize)
    }

    /// Opens every whole cell of `buffer` (a partial one waits for the next read), taking
    /// whole cells straight from the read as a tunnel does. Nil once a cell fails to open: the
    /// opener is poisoned, as in a tunnel.
    mutating func open(_ buffer: inout ByteBuffer) -> Int? {
        let size = opener.cellSize
        if inbound.readableBytes > 0 {
            inbound.writeBuffer(&buffer)
            swap(&inbound, &buffer)
            inbound.clear()
        }
        var count = 0
        while let cell = buffer.readBytes(length: size) {
            opened.removeAll(keepingCapacity: true)
            do { try opener.open(cell, appendingTo: &opened) } catch { return nil }
            count += 1
        }
        if buffer.readableBytes > 0 { inbound.writeBuffer(&buffer) }
        return count
    }
}

final class PacedConnection: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let pacer: Pacer
    private var crypto: CellCrypto?
    private var context: ChannelHandlerContext?

    init(pacer: Pacer, crypto: CellCrypto? = nil) {
        self.pacer = pacer
        self.crypto = crypto
    }

    func channelActive(context: ChannelHandlerContext) {
        self.context = context
        pacer.add(self)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.context = nil
        context.fireChannelInactive()
    }

    /// False once the connection is closed (it then leaves the wheel). With `--seal` the write
    /// is a freshly sealed cell instead of `payload`.
    func write(_ payload: ByteBuffer, scratch: inout [UInt8]) -> Bool {
        guard let context else { return false }
        guard crypto != nil else {
            context.writeAndFlush(wrapOutboundOut(payload), promise: nil)
            return true
        }
        scratch.removeAll(keepingCapacity: true)
        do {
            try crypto!.sealer.seal(crypto!.plaintext, appendingTo: &scratch)
        } catch {
            context.close(promise: nil)
            return false
        }
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: scratch)), promise: nil)
        return true
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        let bytes = buffer.readableBytes
        guard crypto != nil else {
            pacer.read(bytes)
            return
        }
        if let cells = crypto!.open(&buffer) {
            pacer.read(bytes, cellsOpened: cells)
        } else {
            pacer.read(bytes, failed: true)
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
