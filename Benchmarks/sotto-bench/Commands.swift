import ArgumentParser
import NIOCore
import NIOPosix
import SottoSOCKS

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// The async entry point of ArgumentParser is only chosen for a root command with this annotation.
@available(macOS 10.15, macCatalyst 13, iOS 13, tvOS 13, watchOS 6, *)
@main
struct SottoBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sotto-bench",
        abstract: "Measures UDP round trip, loss-free datagram rate and TCP throughput, straight or through a SOCKS5 proxy.",
        discussion: """
            Servers: 'udp-echo' and 'tcp-sink'. Clients: 'udp' and 'tcp', each either --direct or \
            through --socks (RFC 1928 UDP ASSOCIATE / CONNECT, RFC 1929 username/password). Every \
            result is printed twice on stdout: a line 'RESULT name=... key=value ...' for scripts \
            and a line for people. Progress goes to stderr. Only loopback addresses are accepted. \
            Benchmarks/run.sh runs the whole comparison.
            """,
        subcommands: [UDPEcho.self, TCPSink.self, UDPClient.self, TCPClient.self, FreePorts.self, WaitListen.self,
                      SizedEcho.self, StreamRTTClient.self, UDPRelay.self, ShapingWorkload.self, CellCost.self, CellPacer.self]
    )
}

/// One event loop thread for the whole command: every measurement runs on it, so the client's
/// own costs are the same for each path; it is shut down however the body ends.
func withEventLoopGroup<T>(_ body: (EventLoopGroup) async throws -> T) async throws -> T {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    do {
        let result = try await body(group)
        try await group.shutdownGracefully()
        return result
    } catch {
        try? await group.shutdownGracefully()
        throw error
    }
}

// MARK: - Shared options

struct PathOptions: ParsableArguments {
    @Option(help: "SOCKS5 server, e.g. 127.0.0.1:1080.", transform: Endpoint.init(parsing:))
    var socks: Endpoint?

    @Option(help: "RFC 1929 username (a Sotto profile name).")
    var user: String?

    @Option(help: "RFC 1929 password.")
    var password: String?

    @Flag(help: "Send straight to the target, no proxy.")
    var direct = false

    @Option(help: "Target HOST:PORT. Through --socks a single-label name (a Sotto peer such as 'exit') is sent unresolved (ATYP 3); --direct needs a loopback IP.",
            transform: Endpoint.init(parsing:))
    var target: Endpoint

    @Option(help: "A name for this path in the results, e.g. direct, shadowsocks, sotto.")
    var label = "run"

    @Option(help: "Stop with an error if the whole run takes longer than this many seconds.")
    var timeLimit = 900

    func validate() throws {
        guard direct != (socks != nil) else {
            throw ValidationError("give exactly one of --direct and --socks HOST:PORT")
        }
        if (user == nil) != (password == nil) {
            throw ValidationError("--user and --password go together")
        }
        guard (1...86_400).contains(timeLimit) else { throw ValidationError("--time-limit must be 1-86400 seconds") }
        guard !label.isEmpty, label.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
            throw ValidationError("--label takes letters, digits, '-' and '_'")
        }
        if let socks {
            try socks.requireLoopback(role: "SOCKS server", allowPeerName: false)
            try target.requireLoopback(role: "target", allowPeerName: true)
        } else {
            try target.requireLoopback(role: "target", allowPeerName: false)
        }
    }

    var credentials: UsernamePasswordRequest? {
        guard let user, let password else { return nil }
        return UsernamePasswordRequest(username: user, password: password)
    }

    var pathName: String { socks == nil ? "direct" : "socks" }

    /// Ends the process if the run overstays `--time-limit`, whatever it is waiting for.
    func startWatchdog() {
        let seconds = timeLimit
        Task.detached {
            try await Task.sleep(nanoseconds: UInt64(seconds) * 1_000_000_000)
            benchLog("gave up after --time-limit \(seconds) s")
            terminateProcess(status: 3)
        }
    }
}

struct ServerOptions: ParsableArguments {
    @Option(help: "Loopback HOST:PORT to listen on.", transform: Endpoint.init(parsing:))
    var listen: Endpoint

    @Option(help: "Stop by itself after this many seconds (it also stops on SIGTERM/SIGINT).")
    var lifetime = 3_600

    func validate() throws {
        try listen.requireLoopback(role: "listen address", allowPeerName: false)
        guard (1...86_400).contains(lifetime) else { throw ValidationError("--lifetime must be 1-86400 seconds") }
    }

    /// Announces the server on stdout (scripts wait for this line), then serves until the
    /// lifetime ends or a signal stops the process.
    func serve(_ channel: Channel, kind: String) async throws {
        let bound = channel.localAddress.flatMap(endpoint(of:)) ?? listen
        print("sotto-bench \(kind) listening on \(bound)")
        fflush(stdout)
        channel.eventLoop.scheduleTask(in: .seconds(Int64(lifetime))) { channel.close(promise: nil) }
        try await channel.closeFuture.get()
    }
}

// MARK: - Servers

struct UDPEcho: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "udp-echo",
        abstract: "UDP echo server: sends every datagram back to its sender unchanged.")

    @OptionGroup var server: ServerOptions

    func run() async throws {
        try await withEventLoopGroup { group in
            let channel = try await BenchServers.startUDPEcho(group: group, listen: server.listen)
            try await server.serve(channel, kind: "udp-echo")
        }
    }
}

struct TCPSink: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tcp-sink",
        abstract: "TCP sink: discards and counts, acknowledging each transfer.",
        discussion: """
            Framing: the client sends an 8-byte big-endian length L, then L bytes. Once all L bytes \
            have arrived the sink answers with L as 8 bytes, so the client can time the transfer \
            end to end without half-close. Several transfers may follow on one connection.
            """)

    @OptionGroup var server: ServerOptions

    func run() async throws {
        try await withEventLoopGroup { group in
            let channel = try await BenchServers.startTCPSink(group: group, listen: server.listen)
            try await server.serve(channel, kind: "tcp-sink")
        }
    }
}

// MARK: - UDP client

struct UDPClient: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "udp",
        abstract: "UDP echo round trip (p50, p99) and the highest loss-free datagram rate, or many concurrent flows.",
        discussion: """
            Round trip: --count probes one after another, each timed from its send to its echo \
            (after --warmup untimed probes). Rate: windows of --window seconds at an offered rate \
            that doubles from --start-rate until a window loses a datagram, then bisects; the result \
            is the highest rate (as achieved by the sender) of a window whose echoes all came back \
            within --drain seconds after its last send. With --flows N: N UDP associations (N \
            distinct source sockets, each with its own control connection) send one probe a second \
            each for --hold seconds; 'FLOWS_READY' on stdout says all are up and carrying traffic.
            """)

    @OptionGroup var path: PathOptions

    @Option(help: "Payload bytes per datagram (16-\(ProbePayload.maximumLength)).")
    var size = 1200

    @Option(help: "Timed round trips.")
    var count = 2000

    @Option(help: "Untimed round trips first (they also bring a tunnel up).")
    var warmup = 50

    @Option(help: "Round-trip timeout in milliseconds; a probe without an echo by then is lost.")
    var timeoutMs = 1000

    @Option(help: "Seconds per rate window.")
    var window = 2.0

    @Option(help: "Seconds to wait for late echoes after a window's last send.")
    var drain = 1.0

    @Option(help: "First offered rate, datagrams/s.")
    var startRate = 1000

    @Option(help: "Highest offered rate, datagrams/s.")
    var maxRate = 500_000

    @Option(help: "Most rate windows in one search.")
    var maxProbes = 20

    @Option(help: "Stop bisecting when the bounds are within this fraction of the best rate.")
    var resolution = 0.05

    @Flag(help: "Skip the round-trip measurement.")
    var skipRtt = false

    @Flag(help: "Skip the rate measurement.")
    var skipRate = false

    @Option(help: "Open this many concurrent flows instead of measuring round trip and rate.")
    var flows: Int?

    @Option(help: "With --flows: seconds to keep the flows sending.")
    var hold = 10

    func validate() throws {
        guard (ProbePayload.headerLength...ProbePayload.maximumLength).contains(size) else {
            throw ValidationError("--size must be \(ProbePayload.headerLength)-\(ProbePayload.maximumLength) bytes")
        }
        guard (1...1_000_000).contains(count) else { throw ValidationError("--count must be 1-1000000") }
        guard (0...10_000).contains(warmup) else { throw ValidationError("--warmup must be 0-10000") }
        guard (1...60_000).contains(timeoutMs) else { throw ValidationError("--timeout-ms must be 1-60000") }
        guard window >= 0.1, window <= 60 else { throw ValidationError("--window must be 0.1-60 seconds") }
        guard drain >= 0.01, drain <= 30 else { throw ValidationError("--drain must be 0.01-30 seconds") }
        guard startRate >= 1, maxRate >= startRate, maxRate <= 5_000_000 else {
            throw ValidationError("need 1 <= --start-rate <= --max-rate <= 5000000")
        }
        guard (1...100).contains(maxProbes) else { throw ValidationError("--max-probes must be 1-100") }
        guard resolution > 0, resolution < 1 else { throw ValidationError("--resolution must be between 0 and 1") }
        if let flows { guard (1...10_000).contains(flows) else { throw ValidationError("--flows must be 1-10000") } }
        guard (1...3_600).contains(hold) else { throw ValidationError("--hold must be 1-3600 seconds") }
    }

    var udpPath: UDPPath {
        if let socks = path.socks {
            return .socks(server: socks, credentials: path.credentials, target: path.target)
        }
        return .direct(target: path.target)
    }

    func run() async throws {
        path.startWatchdog()
        try await withEventLoopGroup { group in
            if let flows {
                return try await runFlows(group: group, count: flows)
            }
            let flow = try await UDPFlow.open(on: group.next(), path: udpPath, payloadLength: size)
            do {
                if !skipRtt { try await measureRoundTrip(flow) }
                if !skipRate { try await measureRate(flow) }
            } catch {
                await flow.close()
                throw error
            }
            await flow.close()
        }
    }

    private var commonFields: [(String, String)] {
        [("label", path.label), ("path", path.pathName), ("target", "\(path.target)"), ("size", "\(size)")]
    }

    private func measureRoundTrip(_ flow: UDPFlow) async throws {
        benchLog("[\(path.label)] udp round trip: \(warmup) warm-up + \(count) probes of \(size) bytes")
        let series = RoundTripSeries(flow: flow, run: 1, count: count, warmup: warmup,
                                     timeout: .milliseconds(Int64(timeoutMs)), warmupTimeout: .seconds(3))
        let result = try await series.start().get()
        let s = result.summary
        ResultLine(
            name: "udp_rtt",
            fields: commonFields + [("count", "\(s.count)"), ("lost", "\(result.lost)"),
                                    ("p50_us", microseconds(s.p50)), ("p99_us", microseconds(s.p99)),
                                    ("min_us", microseconds(s.minimum)), ("mean_us", microseconds(s.mean)),
                                    ("max_us", microseconds(s.maximum))],
            human: "[\(path.label)] UDP round trip, \(size)-byte datagrams: p50 \(microseconds(s.p50)) µs, p99 \(microseconds(s.p99)) µs (\(s.count) echoes, \(result.lost) lost)"
        ).emit()
    }

    private func measureRate(_ flow: UDPFlow) async throws {
        var search = ZeroLossRateSearch(start: startRate, minimum: min(100, startRate), maximum: maxRate,
                                        resolution: resolution, maximumProbes: maxProbes)
        var best: WindowResult?
        var senderLimited = false
        var run: UInt32 = 100
        let windowAmount = TimeAmount.nanoseconds(Int64(window * 1_000_000_000))
        let drainAmount = TimeAmount.nanoseconds(Int64(drain * 1_000_000_000))
        while let rate = search.nextRate {
            run += 1
            let result = try await RateWindow(flow: flow, run: run, rate: rate, window: windowAmount, drain: drainAmount)
                .start().get()
            search.record(rate: rate, lossFree: result.lossFree)
            if result.lossFree, result.achievedRate > (best?.achievedRate ?? -1) { best = result }
            benchLog("[\(path.label)] offered \(rate)/s: sent \(result.sent) at \(decimal(result.achievedRate, places: 0))/s, \(result.sent - result.received) lost")
            // A sender that fell well short of the offered rate measures itself, not the path:
            // higher offers would say nothing more.
            if result.lossFree, result.achievedRate < 0.9 * Double(rate) {
                senderLimited = true
                benchLog("[\(path.label)] the sender reached its own limit; stopping the search here")
                break
            }
            // Let queues along the path empty before the next window.
            try await Task.sleep(nanoseconds: 200_000_000)
        }
        let rate = best?.achievedRate ?? 0
        ResultLine(
            name: "udp_rate",
            fields: commonFields + [("rate", decimal(rate, places: 0)), ("offered", "\(best?.offered ?? 0)"),
                                    ("window_s", decimal(window, places: 2)), ("probes", "\(search.probes)"),
                                    ("lowest_lossy", search.lowestLossy.map(String.init) ?? "none"),
                                    ("sender_limited", senderLimited ? "yes" : "no")],
            human: "[\(path.label)] UDP loss-free rate, \(size)-byte datagrams: \(decimal(rate, places: 0)) datagrams/s (\(decimal(rate * Double(size) / 1_000_000, places: 1)) MB/s payload; \(search.probes) windows of \(decimal(window, places: 1)) s\(senderLimited ? "; the sender's own limit" : ""))"
        ).emit()
    }

    private func runFlows(group: EventLoopGroup, count: Int) async throws {
        try raiseOpenFileLimit(needed: 2 * count + 64)
        let loop = group.next()
        let udpPath = self.udpPath
        let size = self.size
        benchLog("[\(path.label)] opening \(count) UDP flows")
        var keepers: [FlowKeeper] = []
        var failures = 0
        var firstError: Error?
        // Associations are opened a few at a time, like clients arriving, not all in one burst.
        let batch = 32
        var next = 0
        while next < count {
            let range = next..<min(next + batch, count)
            next = range.upperBound
            let opened = await withTaskGroup(of: Result<UDPFlow, Error>.self) { tasks in
                for _ in range {
                    tasks.addTask {
                        do { return .success(try await UDPFlow.open(on: loop, path: udpPath, payloadLength: size)) }
                        catch { return .failure(error) }
                    }
                }
                var results: [Result<UDPFlow, Error>] = []
                for await result in tasks { results.append(result) }
                return results
            }
            for result in opened {
                switch result {
                case .success(let flow):
                    let keeper = FlowKeeper(flow: flow, run: UInt32(keepers.count))
                    // Spread the flows' sends over the second.
                    let offset = TimeAmount.milliseconds(Int64(keepers.count * 1000 / count))
                    try await loop.submit { keeper.start(after: offset) }.get()
                    keepers.append(keeper)
                case .failure(let error):
                    failures += 1
                    if firstError == nil { firstError = error }
                }
            }
        }
        if let firstError { benchLog("[\(path.label)] \(failures) flows failed to open; first error: \(firstError)") }
        guard !keepers.isEmpty else { throw BenchError("no flow could be opened") }
        // Every flow has sent once (and had time for its echo) 1.5 s after the last one opened.
        try await Task.sleep(nanoseconds: 1_500_000_000)
        print("FLOWS_READY label=\(path.label) established=\(keepers.count) failed=\(failures)")
        fflush(stdout)
        try await Task.sleep(nanoseconds: UInt64(hold) * 1_000_000_000)
        try await loop.submit { keepers.forEach { $0.stop() } }.get()
        // Echoes of the last probes are still on their way.
        try await Task.sleep(nanoseconds: 500_000_000)
        let (sent, received, strays) = try await loop.submit {
            keepers.reduce((0, 0, UInt64(0))) { ($0.0 + $1.sent, $0.1 + $1.received, $0.2 + $1.flow.handler.strays) }
        }.get()
        var controlClosed = 0
        for keeper in keepers {
            if let control = keeper.flow.control, !control.isActive { controlClosed += 1 }
            await keeper.flow.close()
        }
        ResultLine(
            name: "udp_flows",
            fields: commonFields + [("flows", "\(count)"), ("established", "\(keepers.count)"), ("failed", "\(failures)"),
                                    ("sent", "\(sent)"), ("received", "\(received)"), ("strays", "\(strays)"), ("hold_s", "\(hold)"),
                                    ("control_closed", "\(controlClosed)")],
            human: "[\(path.label)] \(keepers.count) of \(count) UDP flows held \(hold) s: \(received) of \(sent) probes echoed"
        ).emit()
    }
}

// MARK: - TCP client

struct TCPClient: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tcp",
        abstract: "TCP throughput to a tcp-sink, straight or through SOCKS5 CONNECT.",
        discussion: """
            One connection; a --warmup-bytes transfer, then --repeat transfers of --bytes each, each \
            timed from its first byte written to the sink's acknowledgement of its last. MB/s is \
            10^6 bytes per second; the result is the median transfer, the best is printed too.
            """)

    @OptionGroup var path: PathOptions

    @Option(help: "Bytes per timed transfer; K, M, G suffixes are powers of 1024.", transform: parseByteCount)
    var bytes: UInt64 = 256 << 20

    @Option(name: .customLong("repeat"), help: "Timed transfers.")
    var repetitions = 3

    @Option(help: "Untimed transfer first.", transform: parseByteCount)
    var warmupBytes: UInt64 = 8 << 20

    func validate() throws {
        guard bytes >= 1, bytes <= 1 << 40 else { throw ValidationError("--bytes must be 1 byte to 1 TiB") }
        guard warmupBytes <= 1 << 40 else { throw ValidationError("--warmup-bytes must be at most 1 TiB") }
        guard (1...100).contains(repetitions) else { throw ValidationError("--repeat must be 1-100") }
    }

    func run() async throws {
        path.startWatchdog()
        try await withEventLoopGroup { group in try await measure(on: group.next()) }
    }

    private func measure(on loop: EventLoop) async throws {
        let tcpPath: TCPPath = path.socks.map { .socks(server: $0, credentials: path.credentials, target: path.target) }
            ?? .direct(target: path.target)
        let (channel, handler) = try await TCPBench.connect(on: loop, path: tcpPath)
        defer { channel.close(promise: nil) }
        if warmupBytes > 0 {
            _ = try await loop.flatSubmit { handler.transfer(bytes: self.warmupBytes, on: loop) }.get()
        }
        var rates: [Double] = []
        for index in 0..<repetitions {
            let nanoseconds = try await loop.flatSubmit { handler.transfer(bytes: self.bytes, on: loop) }.get()
            let rate = Double(bytes) / Double(max(nanoseconds, 1)) * 1_000  // bytes/ns * 1000 = MB/s
            benchLog("[\(path.label)] transfer \(index + 1): \(bytes) bytes in \(decimal(Double(nanoseconds) / 1_000_000, places: 1)) ms, \(decimal(rate)) MB/s")
            rates.append(rate)
        }
        let sorted = rates.sorted()
        let median = sorted[sorted.count / 2]
        ResultLine(
            name: "tcp_throughput",
            fields: [("label", path.label), ("path", path.pathName), ("target", "\(path.target)"),
                     ("bytes", "\(bytes)"), ("repeat", "\(repetitions)"),
                     ("mb_per_s", decimal(median)), ("best_mb_per_s", decimal(sorted.last!))],
            human: "[\(path.label)] TCP throughput: \(decimal(median)) MB/s median of \(repetitions) transfers of \(bytes) bytes (best \(decimal(sorted.last!)) MB/s)"
        ).emit()
    }
}

/// `1048576`, `64K`, `256M`, `1G` (powers of 1024).
func parseByteCount(_ text: String) throws -> UInt64 {
    let multipliers: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
    var digits = Substring(text)
    var multiplier: UInt64 = 1
    if let last = text.last?.uppercased().first, let value = multipliers[last] {
        multiplier = value
        digits = digits.dropLast()
    }
    guard !digits.isEmpty, digits.allSatisfy(\.isASCII), let number = UInt64(digits) else {
        throw ValidationError("'\(text)' is not a byte count such as 1048576, 64K, 256M or 1G")
    }
    let (product, overflow) = number.multipliedReportingOverflow(by: multiplier)
    guard !overflow else { throw ValidationError("'\(text)' is too large") }
    return product
}

// MARK: - Helpers for run.sh

struct FreePorts: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "free-ports",
        abstract: "Prints loopback ports that are free for both TCP and UDP right now, one a line.")

    @Option(help: "How many ports.")
    var count = 1

    func validate() throws {
        guard (1...100).contains(count) else { throw ValidationError("--count must be 1-100") }
    }

    func run() async throws {
        let ports = try await withEventLoopGroup { group in try await findPorts(group: group) }
        for port in ports { print(port) }
    }

    private func findPorts(group: EventLoopGroup) async throws -> [Int] {
        // Hold every probe socket until all ports are chosen, so no port is handed out twice.
        var held: [Channel] = []
        var ports: [Int] = []
        var attempts = 0
        while ports.count < count, attempts < 100 * count {
            attempts += 1
            let tcp = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
            guard let port = tcp.localAddress?.port else { try? await tcp.close(); continue }
            held.append(tcp)
            guard let udp = try? await DatagramBootstrap(group: group).bind(host: "127.0.0.1", port: port).get() else {
                continue
            }
            held.append(udp)
            ports.append(port)
        }
        for channel in held { try? await channel.close() }
        guard ports.count == count else { throw BenchError("found only \(ports.count) of \(count) free ports") }
        return ports
    }
}

struct WaitListen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wait-listen",
        abstract: "Waits until a TCP port is listening or a UDP port is bound (read from /proc/net, no packet sent).")

    @Option(help: "TCP HOST:PORT to wait for.", transform: Endpoint.init(parsing:))
    var tcp: Endpoint?

    @Option(help: "UDP HOST:PORT to wait for.", transform: Endpoint.init(parsing:))
    var udp: Endpoint?

    @Option(help: "Seconds before giving up.")
    var timeout = 30.0

    func validate() throws {
        guard (tcp == nil) != (udp == nil) else { throw ValidationError("give one of --tcp and --udp") }
        guard timeout > 0, timeout <= 600 else { throw ValidationError("--timeout must be 0-600 seconds") }
    }

    func run() async throws {
        let endpoint = (tcp ?? udp)!
        let isTCP = tcp != nil
        let deadline = monotonicNanoseconds() + UInt64(timeout * 1_000_000_000)
        let tables = isTCP ? ["/proc/net/tcp", "/proc/net/tcp6"] : ["/proc/net/udp", "/proc/net/udp6"]
        while monotonicNanoseconds() < deadline {
            for table in tables {
                if let text = readTextFile(table),
                   ProcNetTable.hasSocket(in: text, port: endpoint.port, state: isTCP ? .tcpListen : .udpUnconnected) {
                    return
                }
            }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        throw BenchError("nothing \(isTCP ? "listens on TCP" : "is bound to UDP") port \(endpoint.port) after \(timeout) s")
    }
}

func readTextFile(_ path: String) -> String? {
    guard let file = fopen(path, "r") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65_536)
    while bytes.count < 64 << 20 {
        let read = fread(&chunk, 1, chunk.count, file)
        if read <= 0 { break }
        bytes += chunk[0..<read]
    }
    return String(decoding: bytes, as: UTF8.self)
}
