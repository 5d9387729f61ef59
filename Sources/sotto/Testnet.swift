import ArgumentParser
import Dispatch
import Foundation
import TorTestnet

/// `sotto testnet`: networks for trying Sotto out without touching any public network.
struct Testnet: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run private test networks on 127.0.0.1 for trying gateways out.",
        subcommands: [TestnetTor.self])
}

struct TestnetTor: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tor",
        abstract: "A private Tor network on 127.0.0.1: 3 directory authorities, 3 relays, a client and an onion host.",
        discussion: """
            The network never touches the public Tor network: every tor lists only the private \
            authorities (explicit DirAuthority lines, no fallback directories), listens and \
            connects on 127.0.0.1 only, and the exit relay accepts only 127.0.0.0/8 and resolves \
            names through 127.0.0.1. Needs tor and tor-gencert (Debian: apt-get install tor).

            DIR holds the network: keys (made on the first 'up', reused after), torrc files, \
            logs (nodes/*/notice.log), ports.env, and gateway.torrc, which a gateway's own tor \
            includes to join the network ([tor] torrc_include).
            """,
        subcommands: [Up.self, Down.self, Env.self])

    struct Up: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start the network in DIR and wait until the client and the onion host have bootstrapped.",
            discussion: """
                Progress goes to standard error; the [tor] settings a gateway configuration needs \
                go to standard output. Ports change on every 'up': restart gateways after it. \
                On failure or interruption every tor started is stopped again.
                """)

        @Argument(help: "The network's folder (created if missing).")
        var dir: String

        @Option(help: "Seconds to wait for the network, key generation included.")
        var timeout: Double = 90

        @Option(help: "The tor binary (default: tor in PATH; tor-gencert is looked for beside it, then in PATH).")
        var torPath: String?

        func validate() throws {
            guard timeout > 0, timeout <= 3600 else { throw ValidationError("--timeout must be in 1...3600 seconds") }
        }

        func run() throws {
            let interrupts = InterruptWatch()
            let network = TorTestnet(directory: dir, torPath: torPath, timeout: timeout)
            let info: TorTestnetInfo
            do {
                info = try network.up(progress: say, shouldStop: interrupts.happened)
            } catch TorTestnetError.interrupted {
                throw ExitCode(130)
            }
            print(info.tomlSnippet(), terminator: "")
            say("stop it with: sotto testnet tor down \(info.directory)")
        }
    }

    struct Down: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop every tor of the network in DIR (SIGTERM, SIGKILL after 10 s).",
            discussion: "Tors whose pid file was lost are found by their command line. Keys and logs stay in DIR.")

        @Argument(help: "The network's folder.")
        var dir: String

        func run() throws {
            try TorTestnet(directory: dir).down(progress: say)
        }
    }

    struct Env: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print TOR_SOCKS_PORT=... and the other settings of the network in DIR, for eval in scripts.",
            discussion: "Lines: TOR_TESTNET_DIR, TOR_SOCKS_PORT, TOR_CONTROL_PORT, TOR_COOKIE, ONION_CONTROL_PORT, ONION_COOKIE, TOR_GATEWAY_TORRC.")

        @Argument(help: "The network's folder.")
        var dir: String

        func run() throws {
            let network = TorTestnet(directory: dir)
            let info = try network.info()
            if try network.runningProcesses().isEmpty { say("warning: no tor of \(info.directory) is running") }
            print(info.environmentLines(), terminator: "")
        }
    }
}

private func say(_ line: String) {
    FileHandle.standardError.write(Data("sotto testnet: \(line)\n".utf8))
}

/// SIGINT and SIGTERM during `up` stop the network instead of leaving tors behind: the signals are
/// turned into a flag that `up` polls. (Ignored here so the dispatch sources see them; tor installs
/// its own handlers for both, so the ignored disposition its children inherit does not matter.)
private final class InterruptWatch: @unchecked Sendable {
    private let lock = NSLock()
    private var interrupted = false
    private var sources: [DispatchSourceSignal] = []

    init() {
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [weak self] in self?.set() }
            source.resume()
            sources.append(source)
        }
    }

    private func set() {
        lock.lock()
        interrupted = true
        lock.unlock()
    }

    func happened() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return interrupted
    }
}
