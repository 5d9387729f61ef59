import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SottoCoAP

/// The chat workload's message schedule (issue 5): Poisson arrivals at `rate` messages per
/// second with sizes uniform in `sizes`, drawn from a seeded generator so that every shaping
/// setting of one measurement sees the same messages at the same offsets. Pure.
struct ChatSchedule: Sequence {
    struct Message: Equatable {
        var offsetSeconds: Double
        var bytes: Int
    }

    let rate: Double
    let sizes: ClosedRange<Int>
    let duration: Double
    let seed: UInt64

    init(rate: Double, sizes: ClosedRange<Int>, duration: Double, seed: UInt64) throws {
        guard rate > 0, rate <= 1000 else { throw BenchError("the chat rate must be 0-1000 messages/s, got \(rate)") }
        guard sizes.lowerBound >= 1, sizes.upperBound <= 65_000 else {
            throw BenchError("chat message sizes must lie in 1-65000 bytes, got \(sizes)")
        }
        guard duration >= 0, duration <= 86_400 else { throw BenchError("the chat duration must be 0-86400 s, got \(duration)") }
        self.rate = rate
        self.sizes = sizes
        self.duration = duration
        self.seed = seed
    }

    func makeIterator() -> AnyIterator<Message> {
        var generator = SplitMix64(seed: seed)
        var offset = 0.0
        // Bounded: at most rate × duration × 10 + 1,000 messages, whatever the draws.
        var remaining = Int(rate * duration * 10) + 1_000
        return AnyIterator {
            guard remaining > 0 else { return nil }
            remaining -= 1
            // Inverse transform of a uniform in (0, 1]: an exponential gap with mean 1/rate.
            let u = Double(generator.next() >> 11 + 1) / Double(1 << 53)
            offset += -log(u) / rate
            guard offset < duration else { return nil }
            let bytes = Int.random(in: sizes, using: &generator)
            return Message(offsetSeconds: offset, bytes: bytes)
        }
    }
}

/// A small seeded generator (SplitMix64), so a schedule is the same on every run and machine.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Wall-clock seconds since 1970, the clock of tcpdump's timestamps.
func unixSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

struct ShapingWorkload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shaping-workload",
        abstract: "Idle, chat and bulk phases through a gateway pair, for the shaping measurement (Benchmarks/shaping/measure.sh).",
        discussion: """
            Unless --idle and --chat are both 0, opens one DTLS-PSK CoAP session to --coap (the entry gateway's UDP forward to a CoAP \
            server behind the exit) and sends one warm-up POST; then stays silent for --idle \
            seconds; then POSTs chat messages to /mb/BOX with Poisson arrivals (--rate, sizes \
            --min-bytes to --max-bytes, seeded) for --chat seconds, each a confirmable request \
            whose round trip is recorded; then writes TCP data as fast as the tunnel takes it to \
            --bulk-to (the entry's TCP forward) for --bulk seconds, counted by a sink that this \
            command runs at --sink (what the exit's forward leads to). Writes the phases' \
            Unix-time boundaries, application bytes and round trips as JSON to --out.
            """)

    @Option(help: "The CoAP server (DTLS) through the entry's UDP forward, 127.0.0.1:PORT.", transform: Endpoint.init(parsing:))
    var coap: Endpoint

    @Option(help: "PSK identity.")
    var identity: String

    @Option(help: "File with the PSK key (as `sotto coap` reads it).")
    var pskFile: String

    @Option(help: "Mailbox the chat messages go to.")
    var box = "chat"

    @Option(help: "Entry's TCP forward for the bulk phase, 127.0.0.1:PORT.", transform: Endpoint.init(parsing:))
    var bulkTo: Endpoint?

    @Option(help: "Where this command's TCP sink listens (the exit's expose target), 127.0.0.1:PORT.", transform: Endpoint.init(parsing:))
    var sink: Endpoint?

    @Option(help: "Seconds of the idle phase.") var idle = 60.0
    @Option(help: "Seconds of the chat phase.") var chat = 60.0
    @Option(help: "Seconds of the bulk phase (0: none).") var bulk = 15.0
    @Option(help: "Chat messages per second (Poisson).") var rate = 2.0
    @Option(help: "Smallest chat message, bytes.") var minBytes = 50
    @Option(help: "Largest chat message, bytes.") var maxBytes = 1000
    @Option(help: "Seed of the chat schedule and payloads.") var seed: UInt64 = 1
    @Option(help: "Seconds a chat request may take before it counts as lost.") var requestTimeout = 10.0
    @Option(help: "Where the JSON goes.") var out: String

    func validate() throws {
        for (name, value) in [("--idle", idle), ("--chat", chat), ("--bulk", bulk)] {
            guard value >= 0, value <= 3_600 else { throw ValidationError("\(name) must be 0-3600 seconds") }
        }
        guard minBytes >= 1, minBytes <= maxBytes else { throw ValidationError("--min-bytes must be 1 to --max-bytes") }
        guard requestTimeout > 0, requestTimeout <= 120 else { throw ValidationError("--request-timeout must be 0-120 s") }
        guard bulk == 0 || (bulkTo != nil && sink != nil) else { throw ValidationError("a bulk phase needs --bulk-to and --sink") }
    }

    func run() async throws {
        let schedule = try ChatSchedule(rate: rate, sizes: minBytes...maxBytes, duration: chat, seed: seed)
        let keyText = try String(contentsOfFile: pskFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let security = try CoAPSecurity.psk(identity: Array(identity.utf8), key: try CoAPSecurity.parseKey(keyText))
        let path = "/mb/\(box)"
        var phases: [[String: Any]] = []

        let sinkServer = try sink.map { try CountingSink(endpoint: $0) }
        defer { sinkServer?.stop() }

        guard case .ipv4 = coap.host, coap.host.isLoopback else { throw BenchError("--coap must be 127.x.x.x:PORT") }
        var summary = ""
        if idle > 0 || chat > 0 {
            let client = try await CoAPClient(host: "\(coap.host)", port: coap.port, security: security,
                                              timeout: .seconds(Int64(requestTimeout)))
            let warmUp = try await client.request(.post, path: path, payload: Array("warm-up".utf8))
            guard warmUp.code.isSuccess else { throw BenchError("the warm-up POST to \(path) got \(warmUp.code)") }
            printErr("shaping-workload: session up; idle for \(idle) s")

            let idleStart = unixSeconds()
            try await Task.sleep(nanoseconds: UInt64(idle * 1e9))
            phases.append(["name": "idle", "start": idleStart, "end": unixSeconds()])

            printErr("shaping-workload: chat for \(chat) s at \(rate) messages/s")
            let chatStart = unixSeconds()
            let startNs = monotonicNanoseconds()
            let results = await withTaskGroup(of: Double?.self) { group -> [Double?] in
                var generator = SplitMix64(seed: seed ^ 0x5EED)
                for message in schedule {
                    let due = startNs + UInt64(message.offsetSeconds * 1e9)
                    let now = monotonicNanoseconds()
                    if due > now { try? await Task.sleep(nanoseconds: due - now) }
                    let payload = (0..<message.bytes).map { _ in UInt8.random(in: 0...255, using: &generator) }
                    group.addTask {
                        let sent = monotonicNanoseconds()
                        guard let response = try? await client.request(.post, path: path, payload: payload),
                              response.code.isSuccess else { return nil }
                        return Double(monotonicNanoseconds() - sent) / 1e6
                    }
                }
                var all: [Double?] = []
                for await rtt in group { all.append(rtt) }
                return all
            }
            let chatBytes = schedule.reduce(0) { $0 + $1.bytes }
            let rtts = results.compactMap { $0 }
            phases.append(["name": "chat", "start": chatStart, "end": unixSeconds(), "app_bytes": chatBytes,
                           "messages": results.count, "lost": results.count - rtts.count, "rtt_ms": rtts])
            await client.close()
            summary = " messages=\(results.count) lost=\(results.count - rtts.count) chat_bytes=\(chatBytes)"
        }

        if bulk > 0, let bulkTo, let sinkServer {
            printErr("shaping-workload: bulk for \(bulk) s")
            let bulkStart = unixSeconds()
            let before = sinkServer.received
            let written = try BulkWriter.write(to: bulkTo, seconds: bulk)
            let bulkEnd = unixSeconds()
            let delivered = sinkServer.received - before
            phases.append(["name": "bulk", "start": bulkStart, "end": bulkEnd, "app_bytes": delivered,
                           "written_bytes": written])
        }

        let json = try JSONSerialization.data(withJSONObject: ["phases": phases], options: [.prettyPrinted, .sortedKeys])
        try json.write(to: URL(fileURLWithPath: out))
        print("RESULT name=shaping-workload\(summary) phases=\(phases.count)")
    }
}

private func printErr(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// A TCP server on loopback that reads and discards, counting bytes. One thread, blocking I/O.
final class CountingSink: @unchecked Sendable {
    private let listener: Int32
    private let count = NIOLockedValueBox(0)
    private let stopped = NIOLockedValueBox(false)
    private var thread: Thread?

    var received: Int { count.withLockedValue { $0 } }

    init(endpoint: Endpoint) throws {
        listener = try BlockingSocket.listen(endpoint)
        let thread = Thread { [self] in self.serve() }
        self.thread = thread
        thread.start()
    }

    private func serve() {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        // Bounded by the stop flag: accept and read wake up every 200 ms (SO_RCVTIMEO).
        while !stopped.withLockedValue({ $0 }) {
            let fd = accept(listener, nil, nil)
            guard fd >= 0 else { continue }
            BlockingSocket.setTimeout(fd, option: SO_RCVTIMEO, seconds: 0.2)
            while !stopped.withLockedValue({ $0 }) {
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n > 0 { count.withLockedValue { $0 += n } } else if n == 0 || (errno != EAGAIN && errno != EINTR) { break }
            }
            close(fd)
        }
    }

    func stop() {
        stopped.withLockedValue { $0 = true }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }
}

/// Writes to a TCP endpoint as fast as it takes data, for a bounded time.
enum BulkWriter {
    static func write(to endpoint: Endpoint, seconds: Double) throws -> Int {
        let fd = try BlockingSocket.connect(endpoint)
        defer { close(fd) }
        BlockingSocket.setTimeout(fd, option: SO_SNDTIMEO, seconds: 0.2)
        let chunk = [UInt8](repeating: 0x42, count: 16_384)
        let deadline = monotonicNanoseconds() + UInt64(seconds * 1e9)
        var written = 0
        while monotonicNanoseconds() < deadline {
            let n = chunk.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 { written += n } else if errno != EAGAIN && errno != EINTR {
                throw BenchError("bulk write to \(endpoint) failed: \(String(cString: strerror(errno)))")
            }
        }
        return written
    }
}

enum BlockingSocket {
    static func address(_ endpoint: Endpoint) throws -> sockaddr_in {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(endpoint.port.bigEndian)
        guard case .ipv4 = endpoint.host, endpoint.host.isLoopback,
              inet_pton(AF_INET, "\(endpoint.host)", &addr.sin_addr) == 1 else {
            throw BenchError("\(endpoint.host) is not a loopback IPv4 address")
        }
        return addr
    }

    static func listen(_ endpoint: Endpoint) throws -> Int32 {
        var addr = try address(endpoint)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchError("socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, Glibc.listen(fd, 16) == 0 else {
            close(fd)
            throw BenchError("cannot listen on \(endpoint): \(String(cString: strerror(errno)))")
        }
        setTimeout(fd, option: SO_RCVTIMEO, seconds: 0.2)
        return fd
    }

    static func connect(_ endpoint: Endpoint) throws -> Int32 {
        var addr = try address(endpoint)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchError("socket: \(String(cString: strerror(errno)))") }
        let connected = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            throw BenchError("cannot connect to \(endpoint): \(String(cString: strerror(errno)))")
        }
        return fd
    }

    static func setTimeout(_ fd: Int32, option: Int32, seconds: Double) {
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1e6))
        setsockopt(fd, SOL_SOCKET, option, &tv, socklen_t(MemoryLayout<timeval>.size))
    }
}
