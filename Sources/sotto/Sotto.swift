import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import SottoConfig
import SottoGateway
import SottoTunnel

@main
struct Sotto: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sotto",
        abstract: "Carry UDP (CoAP over DTLS) and TCP between an entry and an exit gateway over fixed-size encrypted cells.",
        discussion: """
            An entry gateway offers a SOCKS5 server and local port forwards; an exit gateway \
            publishes a service and delivers each flow to the local target it exposes. \
            Both are described by one TOML file: see docs/configuration.md.
            """,
        subcommands: [Run.self, Keygen.self, Status.self, CheckConfig.self, Testnet.self, Coap.self, CoapServer.self, Msg.self])
}

/// An error the tool reports as one line, without the usage text (it is no usage mistake).
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ error: Any) { self.description = "\(error)" }
}

/// Loads a configuration, printing its warnings; errors name the file and the key.
func loadConfig(_ path: String) throws -> SottoConfig {
    let config = try SottoConfig.load(path: path)
    for warning in config.warnings {
        FileHandle.standardError.write(Data("warning: \(warning)\n".utf8))
    }
    return config
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the gateway the configuration describes, until SIGINT or SIGTERM.",
        discussion: "Logs go to standard error. Secrets are never logged. `sotto status --config FILE` shows the running gateway's counters.")

    @Option(name: .shortAndLong, help: "The TOML configuration file.")
    var config: String

    @Option(help: "Override the configuration's log_level (trace, debug, info, notice, warning, error, critical).")
    var logLevel: String?

    func run() async throws {
        let config: SottoConfig
        do {
            config = try loadConfig(self.config)
            try Gateway.validate(config)
        } catch {
            throw CLIError(error)
        }
        let levelName = logLevel ?? config.logLevel
        guard let level = Logger.Level(rawValue: levelName) else {
            throw ValidationError("unknown log level '\(levelName)'")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "sotto")
        let gateway = Gateway(config: config, logger: logger)
        let group = ServiceGroup(
            services: [gateway], gracefulShutdownSignals: [.sigterm, .sigint],
            cancellationSignals: [], logger: Logger(label: "sotto.lifecycle", factory: { _ in SwiftLogNoOpLogHandler() }))
        try await group.run()
    }
}

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a static X25519 key pair and a PSK for a service.",
        discussion: """
            Without --out, prints TOML lines to paste: the private key and the PSK go in the \
            exit's [[service]], the public key and the PSK in the entry's [[peer]]. \
            With --out DIR, writes NAME.key and NAME.psk (mode 0600) and NAME.pub, for the \
            private_key_file / psk_file / public_key_file keys.

            --onion (with --out) also makes the service's onion identity: NAME.onion_key (0600, \
            the exit's onion_key_file) and NAME.onion, the address the entry's [[peer]] uses, \
            known before tor ever runs. --client-auth (with --out) makes a tor client \
            authorization pair: NAME.auth_key (0600, the entry's client_auth_key_file) and \
            NAME.auth_pub (a line for the exit's client_auth list).
            """)

    @Option(help: "Write key files into this folder instead of printing.")
    var out: String?

    @Option(help: "Base name of the files written with --out.")
    var name = "service"

    @Flag(help: "Also make an onion service identity (needs --out).")
    var onion = false

    @Flag(help: "Also make a tor client authorization key pair (needs --out).")
    var clientAuth = false

    @Flag(help: "Also make a channel secret (NAME.channel, 0600) for a [[channel]] or [hopping] secret_file.")
    var channel = false

    func validate() throws {
        if (onion || clientAuth) && out == nil {
            throw ValidationError("--onion and --client-auth write key files: give --out DIR")
        }
    }

    func run() throws {
        let pair = StaticKeyPair.generate()
        let psk = TunnelKeys.generatePSK()
        let priv = KeyEncoding.encode(pair.privateKey)
        let pub = KeyEncoding.encode(pair.publicKey)
        let pskText = KeyEncoding.encode(psk)
        guard let out = out else {
            print("# exit gateway, [[service]]:")
            print("private_key = \"\(priv)\"")
            print("# entry gateway, [[peer]]:")
            print("public_key = \"\(pub)\"")
            print("# both:")
            print("psk = \"\(pskText)\"")
            if channel {
                print("# [[channel]]:")
                print("secret = \"\(KeyEncoding.encode(TunnelKeys.generatePSK()))\"")
            }
            return
        }
        let fm = FileManager.default
        try fm.createDirectory(atPath: out, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        func write(_ file: String, _ text: String, mode: Int) throws {
            let path = (out as NSString).appendingPathComponent(file)
            guard !fm.fileExists(atPath: path) else {
                throw CLIError("\(path) exists already; not overwriting a key")
            }
            guard fm.createFile(atPath: path, contents: Data((text + "\n").utf8), attributes: [.posixPermissions: mode]) else {
                throw CLIError("cannot write \(path)")
            }
            print(path)
        }
        try write("\(name).key", priv, mode: 0o600)
        try write("\(name).psk", pskText, mode: 0o600)
        try write("\(name).pub", pub, mode: 0o644)
        if onion {
            let keyPath = (out as NSString).appendingPathComponent("\(name).onion_key")
            let address: String
            do { address = try OnionKeyFile.createNew(at: keyPath) } catch { throw CLIError(error) }
            print(keyPath)
            try write("\(name).onion", address, mode: 0o644)
        }
        if channel {
            try write("\(name).channel", KeyEncoding.encode(TunnelKeys.generatePSK()), mode: 0o600)
        }
        if clientAuth {
            let auth = StaticKeyPair.generate()
            try write("\(name).auth_key", KeyEncoding.encode(auth.privateKey), mode: 0o600)
            try write("\(name).auth_pub", KeyEncoding.encode(auth.publicKey), mode: 0o644)
        }
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a running gateway's tunnels, flows and counters (JSON).",
        discussion: "Asks the gateway through the status socket in its state_dir.")

    @Option(name: .shortAndLong, help: "The configuration the gateway was started with.")
    var config: String

    func run() async throws {
        let config: SottoConfig
        do { config = try loadConfig(self.config) } catch { throw CLIError(error) }
        do {
            print(try await GatewayStatus.fetch(config: config), terminator: "")
        } catch {
            FileHandle.standardError.write(Data("sotto status: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}

struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Parse and validate a configuration without starting anything.")

    @Option(name: .shortAndLong, help: "The TOML configuration file.")
    var config: String

    func run() throws {
        do {
            let config = try loadConfig(self.config)
            try Gateway.validate(config)
            print("\(self.config): ok: \(config.profiles.count) profile(s), \(config.peers.count) peer(s), \(config.forwards.count) forward(s), \(config.services.count) service(s)")
        } catch {
            throw CLIError(error)
        }
    }
}
