import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import SottoChannels
import SottoCoAP
import SottoConfig

/// `sotto coap-server`: the DTLS-PSK CoAP server with the SQLite message store
/// (docs/coap-server.md). Settings come from `[coap_server]` of `--config`, flags, or both
/// (flags win: a --listen replaces the file's listen list, a --psk-identity adds an identity).
struct CoapServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coap-server",
        abstract: "Run the DTLS-PSK CoAP server of mailboxes (POST/GET/DELETE/observe /mb/{box}) until SIGINT or SIGTERM.",
        discussion: """
            Plain CoAP (no security) is off unless --plain-listen or plain_listen asks for it. \
            Messages are kept in an SQLite file (--database, or [coap_server] database, or \
            state_dir/coap-messages.sqlite) and survive a restart. Logs go to standard error \
            and never show keys.
            """)

    @Option(name: .shortAndLong, help: "A TOML file with a [coap_server] table.")
    var config: String?

    @Option(help: "A DTLS (coaps) address to listen on, HOST:PORT (repeatable; port 0 takes a free one). Default 127.0.0.1:5684.")
    var listen: [String] = []

    @Option(help: "A plain CoAP address (no security) to listen on, HOST:PORT (repeatable). Off unless given.")
    var plainListen: [String] = []

    @Option(help: "A PSK identity clients may use (with --psk-key-file).")
    var pskIdentity: String?

    @Option(help: "The file holding that identity's key: hex:..., base64:... or text (mode 0600).")
    var pskKeyFile: String?

    @Option(help: "The SQLite message store file (created when missing).")
    var database: String?

    @Option(help: "Largest envelope accepted, in bytes.")
    var maxEnvelopeBytes: Int?

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    func validate() throws {
        if (pskIdentity == nil) != (pskKeyFile == nil) {
            throw ValidationError("give --psk-identity and --psk-key-file together")
        }
        if config == nil && pskIdentity == nil && !listen.isEmpty {
            throw ValidationError("a DTLS listener needs --psk-identity and --psk-key-file (or a --config with [[coap_server.psk]])")
        }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown log level '\(logLevel)'") }
        if let maxEnvelopeBytes, !(1...(16 << 20)).contains(maxEnvelopeBytes) {
            throw ValidationError("--max-envelope-bytes must be from 1 to \(16 << 20)")
        }
    }

    func run() async throws {
        let configuration: CoAPServerConfiguration
        let hopping: Hopping?
        do {
            (configuration, hopping) = try resolveConfiguration()
        } catch let error as CommandFailure {
            FileHandle.standardError.write(Data("sotto coap-server: \(error.message)\n".utf8))
            throw ExitCode(error.status)
        } catch {
            FileHandle.standardError.write(Data("sotto coap-server: \(error)\n".utf8))
            throw ExitCode(2)
        }
        let level = Logger.Level(rawValue: logLevel)!
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "sotto.coap-server")
        let server: CoAPServer
        do {
            server = try await CoAPServer(configuration: configuration) { event in Self.log(event, logger) }
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode(1)
        }
        logger.info("serving \(configuration)")
        let opened = await server.statistics().store
        logger.info("message store: \(opened.envelopes) envelope(s) waiting in \(opened.boxes) box(es)")
        if opened.recovered > 0 || opened.discardedLogBytes > 0 {
            // The last run ended without moving its pending log into the tables (killed, or a crash).
            logger.notice("message store: moved \(opened.recovered) envelope(s) that the last run left in the pending log into the tables; dropped \(opened.discardedLogBytes) byte(s) at the log's end that formed no whole record")
        }
        let group = ServiceGroup(
            services: [ServerService(server: server, hopping: hopping, logger: logger)], gracefulShutdownSignals: [.sigterm, .sigint],
            cancellationSignals: [], logger: Logger(label: "sotto.lifecycle", factory: { _ in SwiftLogNoOpLogHandler() }))
        try await group.run()
        let statistics = await server.statistics()
        let store = statistics.store
        logger.info("stopped after \(statistics.requests) request(s); \(store.envelopes) envelope(s) waiting in \(store.boxes) box(es); \(store.stored) stored, \(store.deleted) deleted, \(store.expired) expired, \(store.refused) refused; \(store.flushes) flush(es) of the pending log; box reads from memory \(store.cacheHits), from the tables \(store.cacheMisses)")
    }

    /// The configuration the file and flags describe, keys read from their files; with a
    /// `[hopping]` section, the DTLS ports follow its schedule instead of `listen`'s ports.
    func resolveConfiguration() throws -> (CoAPServerConfiguration, Hopping?) {
        var settings: CoAPServerSettings
        var identityResolver: (@Sendable ([UInt8]) -> [UInt8]?)?
        var hopping: Hopping?
        if let config {
            let full = try SottoConfig.load(path: config)
            for warning in full.warnings { FileHandle.standardError.write(Data("warning: \(warning)\n".utf8)) }
            settings = full.coapServer ?? CoAPServerSettings(database: full.stateDir + "/coap-messages.sqlite")
            // Per-channel identities are recognized by derivation, not from a table (docs/channels.md).
            let channels = try full.channels.map {
                try Channel(name: $0.name, secret: $0.secret, identityMode: IdentityMode(rawValue: $0.identity.rawValue)!,
                            epochSeconds: $0.epochSeconds, maxAgeSeconds: $0.maxMessageAgeSeconds)
            }
            if !channels.isEmpty {
                identityResolver = ChannelIdentityResolver(channels: channels).keyLookup(now: { Date().timeIntervalSince1970 })
            }
            if let hop = full.hopping {
                let host = settings.listen.first?.host ?? "127.0.0.1"
                hopping = Hopping(schedule: try PortHopSchedule(secret: hop.secret, range: hop.portRange,
                                                                 epochSeconds: hop.epochSeconds), host: host)
            }
        } else {
            settings = CoAPServerSettings(database: database ?? Self.defaultDatabase())
        }
        if !listen.isEmpty { settings.listen = try listen.map(Self.address) }
        if !plainListen.isEmpty {
            settings.plainListen = try plainListen.map(Self.address)
            if listen.isEmpty && config == nil && pskIdentity == nil { settings.listen = [] }
        }
        if let database { settings.database = database }
        if let maxEnvelopeBytes { settings.maxEnvelopeBytes = maxEnvelopeBytes }
        if let pskIdentity, let pskKeyFile {
            settings.psk.append(CoAPServerPSK(identity: pskIdentity, keyFile: pskKeyFile))
        }
        var keys: [[UInt8]: [UInt8]] = [:]
        for entry in settings.psk {
            let key: [UInt8]
            do {
                key = try CoAPSecurity.parseKeyFile(try Coap.Connection.readKeyFile(entry.keyFile))
            } catch let error as CoAPError {
                throw CommandFailure(status: 2, "PSK key file \(entry.keyFile) of identity '\(entry.identity)': \(error)")
            }
            keys[Array(entry.identity.utf8)] = key
        }
        var limits = MessageStoreLimits()
        limits.maximumEnvelopeBytes = settings.maxEnvelopeBytes
        limits.maximumEnvelopesPerBox = settings.maxEnvelopesPerBox
        limits.maximumTotalBytes = settings.maxTotalBytes
        limits.maximumBoxes = settings.maxBoxes
        limits.defaultTimeToLive = Int64(settings.defaultTTLSeconds)
        limits.maximumTimeToLive = Int64(settings.maxTTLSeconds)
        let folder = (settings.database as NSString).deletingLastPathComponent
        if !folder.isEmpty {
            try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true,
                                                     attributes: [.posixPermissions: 0o700])
        }
        var dtlsListen = settings.listen.map { CoAPListenAddress(host: $0.host, port: UInt16($0.port)) }
        if let hopping {
            dtlsListen = hopping.schedule.listeningPorts(at: Date().timeIntervalSince1970).map {
                CoAPListenAddress(host: hopping.host, port: $0)
            }
        }
        let configuration = CoAPServerConfiguration(
            dtlsListen: dtlsListen,
            plainListen: settings.plainListen.map { CoAPListenAddress(host: $0.host, port: UInt16($0.port)) },
            pskKeys: keys, identityResolver: identityResolver, databasePath: settings.database, limits: limits,
            maximumEnvelopesPerResponse: settings.maxEnvelopesPerResponse)
        return (configuration, hopping)
    }

    static func address(_ text: String) throws -> HostPort {
        do {
            return try HostPort.parse(text)
        } catch let error as HostPort.ParseError {
            throw CommandFailure(status: 2, error.description)
        }
    }

    static func defaultDatabase() -> String {
        let home = ProcessInfo.processInfo.environment["HOME"] ?? "."
        return "\(home)/.local/share/sotto/\(CoAPServerSettings.defaultDatabaseName)"
    }

    static func log(_ event: CoAPServerEvent, _ logger: Logger) {
        switch event {
        case .listening, .stoppedListening, .expired: logger.info("\(event)")
        case .unknownIdentity, .dtlsError: logger.notice("\(event)")
        case .storeFault: logger.error("\(event)")
        }
    }
}

/// A `[hopping]` schedule and the address its ports are opened on.
struct Hopping: Sendable {
    let schedule: PortHopSchedule
    let host: String
}

/// The server as a service-lifecycle service: SIGINT/SIGTERM end `run()` through `stop()`. With
/// hopping, a driver opens the next epoch's port and closes the one that left the window at each
/// boundary (the server listens on the current and the adjacent epochs' ports).
private struct ServerService: ServiceLifecycle.Service {
    let server: CoAPServer
    let hopping: Hopping?
    let logger: Logger

    func run() async throws {
        let driver = hopping.map { hopping in Task { await Self.follow(hopping, server: server, logger: logger) } }
        await withGracefulShutdownHandler {
            await server.run()
        } onGracefulShutdown: {
            Task { await server.stop() }
        }
        driver?.cancel()
    }

    private static func follow(_ hopping: Hopping, server: CoAPServer, logger: Logger) async {
        while !Task.isCancelled {
            let now = Date().timeIntervalSince1970
            let wait = max(0.001, hopping.schedule.nextChange(after: now) - now)
            try? await Task.sleep(nanoseconds: UInt64(wait * 1e9) + 1_000_000)
            if Task.isCancelled { return }
            let listening = Set(server.endpoints.filter(\.secure).map(\.address.port))
            let step = hopping.schedule.changes(from: listening, at: Date().timeIntervalSince1970)
            for port in step.open {
                do {
                    _ = try await server.addEndpoint(CoAPListenAddress(host: hopping.host, port: port))
                } catch {
                    logger.error("port hopping: cannot listen on \(hopping.host):\(port): \(error)")
                }
            }
            for port in step.close {
                if let endpoint = server.endpoints.first(where: { $0.secure && $0.address.port == port }) {
                    await server.removeEndpoint(endpoint)
                }
            }
        }
    }
}
