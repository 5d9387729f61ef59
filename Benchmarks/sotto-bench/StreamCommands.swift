import ArgumentParser
import NIOCore
import NIOPosix
import SottoSOCKS

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// Subcommands of issue 3's benchmark (Benchmarks/tor-bench.sh).

struct MessageSizes: ParsableArguments {
    @Option(help: "Bytes of each request (1-65536; K suffix allowed).", transform: parseMessageSize)
    var requestBytes: Int

    @Option(help: "Bytes of each response (1-65536; K suffix allowed).", transform: parseMessageSize)
    var responseBytes: Int
}

struct SizedEcho: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sized-echo",
        abstract: "TCP server: reads --request-bytes, answers --response-bytes, for as long as the connection lasts.",
        discussion: """
            No framing on the wire: a stream carries exactly the bytes of the datagrams it stands \
            in for. Requests that arrive together are answered together.
            """)

    @OptionGroup var server: ServerOptions
    @OptionGroup var sizes: MessageSizes

    func run() async throws {
        try await withEventLoopGroup { group in
            let channel = try await StreamRTT.startSizedEcho(
                group: group, listen: server.listen,
                requestLength: sizes.requestBytes, responseLength: sizes.responseBytes)
            try await server.serve(channel, kind: "sized-echo")
        }
    }
}

struct StreamRTTClient: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stream-rtt",
        abstract: "Round trips (p50, p99) of request/response exchanges over ONE TCP stream to a sized-echo, straight or through SOCKS5 CONNECT.",
        discussion: """
            --warmup untimed exchanges, then --count timed ones, one at a time, each from the \
            request's write to the last byte of its response. Through --socks the target may be \
            a v3 .onion address (tor's SocksPort resolves it); otherwise it must be loopback. \
            Output: a 'RESULT name=stream_rtt ...' line and a line for people, or with --json one \
            JSON line shaped like 'sotto coap get --json' prints.
            """)

    @Option(help: "SOCKS5 server, e.g. tor's SocksPort 127.0.0.1:9050.", transform: Endpoint.init(parsing:))
    var socks: Endpoint?

    @Option(help: "RFC 1929 username (tor: a circuit isolation key).")
    var user: String?

    @Option(help: "RFC 1929 password.")
    var password: String?

    @Option(help: "Target HOST:PORT: a loopback address, or through --socks a v3 onion address.",
            transform: Endpoint.init(parsing:))
    var target: Endpoint

    @OptionGroup var sizes: MessageSizes

    @Option(help: "Timed exchanges.")
    var count = 1000

    @Option(help: "Untimed exchanges first.")
    var warmup = 50

    @Option(help: "Milliseconds an exchange may take before the run fails.")
    var timeoutMs = 10_000

    @Option(help: "Tries to open the stream (an onion service may not be reachable yet), 2 s apart.")
    var connectAttempts = 1

    @Option(help: "A name for this path in the results.")
    var label = "stream"

    @Flag(help: "Print one JSON line (count, failures, p50/p90/p99/max in ms) instead of the RESULT line.")
    var json = false

    @Option(help: "Stop with an error if the whole run takes longer than this many seconds.")
    var timeLimit = 900

    func validate() throws {
        if let socks { try socks.requireLoopback(role: "SOCKS server", allowPeerName: false) }
        try StreamTarget.check(target, throughProxy: socks != nil)
        if (user == nil) != (password == nil) { throw ValidationError("--user and --password go together") }
        guard (1...1_000_000).contains(count) else { throw ValidationError("--count must be 1-1000000") }
        guard (0...10_000).contains(warmup) else { throw ValidationError("--warmup must be 0-10000") }
        guard (1...120_000).contains(timeoutMs) else { throw ValidationError("--timeout-ms must be 1-120000") }
        guard (1...100).contains(connectAttempts) else { throw ValidationError("--connect-attempts must be 1-100") }
        guard (1...86_400).contains(timeLimit) else { throw ValidationError("--time-limit must be 1-86400 seconds") }
        guard !label.isEmpty, label.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
            throw ValidationError("--label takes letters, digits, '-' and '_'")
        }
    }

    func run() async throws {
        let seconds = timeLimit
        Task.detached {
            try await Task.sleep(nanoseconds: UInt64(seconds) * 1_000_000_000)
            benchLog("gave up after --time-limit \(seconds) s")
            terminateProcess(status: 3)
        }
        try await withEventLoopGroup { group in try await measure(on: group.next()) }
    }

    private func open(on loop: EventLoop) async throws -> (Channel, StreamRoundTripHandler) {
        let credentials = user.flatMap { user in password.map { UsernamePasswordRequest(username: user, password: $0) } }
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try await StreamRTT.connect(on: loop, socks: socks, credentials: credentials, target: target,
                                                   requestLength: sizes.requestBytes, responseLength: sizes.responseBytes)
            } catch {
                guard attempt < connectAttempts else { throw error }
                benchLog("[\(label)] opening the stream to \(target) failed (try \(attempt) of \(connectAttempts)): \(error)")
                try await Task.sleep(nanoseconds: 2_000_000_000)
            }
        }
    }

    private func measure(on loop: EventLoop) async throws {
        let (channel, handler) = try await open(on: loop)
        defer { channel.close(promise: nil) }
        let timeout = TimeAmount.milliseconds(Int64(timeoutMs))
        benchLog("[\(label)] \(warmup) warm-up + \(count) exchanges of \(sizes.requestBytes) -> \(sizes.responseBytes) bytes")
        for _ in 0..<warmup {
            _ = try await loop.flatSubmit { handler.exchange(on: loop, timeout: timeout) }.get()
        }
        var samples: [UInt64] = []
        samples.reserveCapacity(count)
        for _ in 0..<count {
            samples.append(try await loop.flatSubmit { handler.exchange(on: loop, timeout: timeout) }.get())
        }
        let s = LatencySummary(samples: samples)!
        let p90 = LatencySummary.nearestRank(samples.sorted(), percent: 90)
        if json {
            print("{\"count\":\(s.count),\"failures\":0,\"p50_ms\":\(milliseconds(s.p50)),\"p90_ms\":\(milliseconds(p90)),\"p99_ms\":\(milliseconds(s.p99)),\"max_ms\":\(milliseconds(s.maximum))}")
            fflush(stdout)
            return
        }
        ResultLine(
            name: "stream_rtt",
            fields: [("label", label), ("path", socks == nil ? "direct" : "socks"), ("target", "\(target)"),
                     ("request_bytes", "\(sizes.requestBytes)"), ("response_bytes", "\(sizes.responseBytes)"),
                     ("count", "\(s.count)"), ("p50_us", microseconds(s.p50)), ("p90_us", microseconds(p90)),
                     ("p99_us", microseconds(s.p99)), ("min_us", microseconds(s.minimum)),
                     ("mean_us", microseconds(s.mean)), ("max_us", microseconds(s.maximum))],
            human: "[\(label)] stream round trip, \(sizes.requestBytes) -> \(sizes.responseBytes) bytes: p50 \(microseconds(s.p50)) µs, p99 \(microseconds(s.p99)) µs (\(s.count) exchanges on one stream)"
        ).emit()
    }
}

/// Milliseconds with three decimals, as `sotto coap get --json` prints them.
func milliseconds(_ nanoseconds: UInt64) -> String {
    decimal(Double(nanoseconds) / 1_000_000, places: 3)
}

struct UDPRelay: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "udp-relay",
        abstract: "UDP relay that tallies datagram sizes each way, e.g. to learn the sizes of a DTLS exchange.",
        discussion: """
            Datagrams to --listen go to --to from a socket per client; answers go back. Once \
            datagrams have flowed and none came for --idle seconds (or at --lifetime), prints \
            'RESULT name=udp_sizes to_target_mode=... to_client_mode=... to_target=SIZExCOUNT,... \
            to_client=...' and exits.
            """)

    @Option(help: "Loopback HOST:PORT to listen on.", transform: Endpoint.init(parsing:))
    var listen: Endpoint

    @Option(help: "Loopback HOST:PORT to relay to.", transform: Endpoint.init(parsing:))
    var to: Endpoint

    @Option(help: "Seconds of silence, after the first datagram, that end the relay.")
    var idle = 2.0

    @Option(help: "Stop after this many seconds in any case.")
    var lifetime = 600

    func validate() throws {
        try listen.requireLoopback(role: "listen address", allowPeerName: false)
        try to.requireLoopback(role: "relay target", allowPeerName: false)
        guard idle >= 0.1, idle <= 600 else { throw ValidationError("--idle must be 0.1-600 seconds") }
        guard (1...86_400).contains(lifetime) else { throw ValidationError("--lifetime must be 1-86400 seconds") }
    }

    func run() async throws {
        try await withEventLoopGroup { group in
            let loop = group.next()
            let relay = UDPSizeRelay(target: try socketAddress(to), eventLoop: loop)
            let listenAddress = try socketAddress(listen)
            let channel = try await loop.flatSubmit { relay.start(listen: listenAddress) }.get()
            let bound = channel.localAddress.flatMap(endpoint(of:)) ?? listen
            print("sotto-bench udp-relay listening on \(bound)")
            fflush(stdout)
            let deadline = monotonicNanoseconds() + UInt64(lifetime) * 1_000_000_000
            let idleNanoseconds = UInt64(idle * 1_000_000_000)
            while monotonicNanoseconds() < deadline {
                try await Task.sleep(nanoseconds: 50_000_000)
                let last = try await loop.submit { relay.lastDatagramAt }.get()
                if let last, monotonicNanoseconds() - last >= idleNanoseconds { break }
            }
            let (up, down) = try await loop.submit { (relay.toTarget, relay.toClients) }.get()
            try await loop.flatSubmit { relay.closeAll() }.get()
            ResultLine(
                name: "udp_sizes",
                fields: [("target", "\(to)"), ("to_target_mode", up.mode.map(String.init) ?? "none"),
                         ("to_client_mode", down.mode.map(String.init) ?? "none"),
                         ("to_target_datagrams", "\(up.datagrams)"), ("to_client_datagrams", "\(down.datagrams)"),
                         ("to_target", up.summary), ("to_client", down.summary)],
                human: "udp-relay: to \(to): \(up.datagrams) datagrams (sizes \(up.summary)); back: \(down.datagrams) datagrams (sizes \(down.summary))"
            ).emit()
        }
    }
}
