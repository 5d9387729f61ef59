#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Logging
import NIOCore
import NIOPosix
import SottoConfig
import TorControl

/// The gateway's tor, managed (started and owned by Sotto) or external (`[tor] control`), and
/// supervised: when tor goes away the gateway keeps running, every tor profile fails closed, and a
/// new tor is started (managed) or the control port is tried again (external) until it is back.
/// Then onion services are published again and entry tunnels re-established by themselves.
///
/// What the rest of the gateway reads (`phase`, `socksAddress`) is confined to the gateway's event
/// loop; the supervisor runs as a task and hops onto the loop for every change.
final class TorRuntime: @unchecked Sendable {
    enum Phase: String {
        /// Starting tor or connecting to its control port.
        case starting
        /// Connected; tor has not finished bootstrapping.
        case bootstrapping
        /// Bootstrapped: streams may go through the SocksPort.
        case ready
        /// tor is gone; waiting to try again.
        case down
        case stopped
    }

    /// An exit service to publish as an onion service: its tunnel listener's bound port.
    struct OnionService {
        let service: Service
        let keyPath: String
        let localPort: Int
    }

    let settings: TorSettings
    private let config: SottoConfig
    private let loop: EventLoop
    private let logger: Logger
    /// SOCKS credentials per profile: tor isolates streams with different credentials on different
    /// circuits (IsolateSOCKSAuth), so profiles never share one. Random per run.
    private let isolationSecret: String

    // Loop-confined state.
    private(set) var phase = Phase.starting
    private(set) var progress = 0
    private(set) var summary = "starting"
    private(set) var lastError: String?
    private(set) var socksAddress: SocketAddress?
    private(set) var restarts = 0
    private var lastNewnym: NIODeadline?
    private(set) var published: [String: String] = [:]
    /// Bootstrap at 100% and client authorization and onion services set up: only both make `ready`.
    private var bootstrapComplete = false
    private var setupDone = false
    private var onionServices: [OnionService] = []
    /// Called on the loop each time tor becomes ready (entry tunnels reconnect at once).
    var onReady: [() -> Void] = []

    // Supervisor state (touched only by the supervisor task and `stop`).
    private var supervisor: Task<Void, Never>?
    private let control = ControlHolder()
    private let display: BootstrapDisplay

    init(config: SottoConfig, loop: EventLoop, logger: Logger) {
        self.settings = config.tor
        self.config = config
        self.loop = loop
        var logger = logger
        logger[metadataKey: "tor"] = "\(config.tor.control.map { "external \($0)" } ?? "managed")"
        self.logger = logger
        var rng = SystemRandomNumberGenerator()
        self.isolationSecret = (0..<16).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &rng)) }.joined()
        self.display = BootstrapDisplay(logger: logger, useProgressBar: config.tor.control == nil && isatty(STDERR_FILENO) == 1)
    }

    var mode: String { settings.control.map { "external \($0)" } ?? "managed" }

    /// `user:password` for a profile's streams (RFC 1929 through tor's SocksPort).
    func socksCredentials(for profile: Profile) -> (username: String, password: String) {
        ("sotto-\(profile.name)", isolationSecret)
    }

    /// `SIGNAL NEWNYM` (control-spec 3.7), which also makes tor forget the onion-service
    /// descriptors, introduction-point failures and ephemeral client authorization keys it holds: after an exit's tor restarted, the
    /// next attempt fetches the new descriptor instead of retrying dead introduction points. At
    /// most once per 10 s (tor rate-limits NEWNYM the same way); new circuits for every profile
    /// are the price, and they keep their separate credentials.
    func forgetOnionState() {
        let now = NIODeadline.now()
        if let last = lastNewnym, now - last < .seconds(10) { return }
        lastNewnym = now
        guard let connection = control.connection else { return }
        let logger = self.logger
        Task {
            do {
                try await connection.send(.signal(.newnym))
                // NEWNYM also drops the client authorization keys added for this run: add them again.
                try await self.authorizeClients(connection)
                logger.info("asked tor for fresh circuits and onion descriptors (SIGNAL NEWNYM) after a failed onion connection")
            } catch {
                logger.debug("SIGNAL NEWNYM failed: \(error)")
            }
        }
    }

    /// What `sotto status` and refusals say about tor right now.
    var stateDescription: String {
        switch phase {
        case .ready: return "ready"
        case .bootstrapping: return "bootstrapping \(progress)% (\(summary))"
        case .starting: return "starting"
        case .down: return "down" + (lastError.map { ": \($0)" } ?? "")
        case .stopped: return "stopped"
        }
    }

    /// Registers an exit service's listener to publish; call on the loop before `start`.
    func addOnionService(_ service: Service, localPort: Int) {
        onionServices.append(OnionService(service: service, keyPath: config.onionKeyPath(for: service), localPort: localPort))
    }

    func start() {
        let services = onionServices
        supervisor = Task { [self] in await supervise(services: services) }
    }

    /// Removes the onion services (DEL_ONION), then stops a managed tor or closes the connection
    /// to an external one.
    func stop() async {
        supervisor?.cancel()
        if let connection = control.connection {
            let published = (try? await loop.submit({ self.published }).get()) ?? [:]
            for (name, address) in published.sorted(by: { $0.key < $1.key }) {
                let id = String(address.dropLast(".onion".count))
                do {
                    try await connection.send(.delOnion(serviceID: id))
                    logger.info("onion service '\(name)' removed (DEL_ONION \(address))")
                } catch {
                    logger.warning("could not remove onion service '\(name)' (\(address)): \(error)")
                }
            }
        }
        if let managed = control.managed { await managed.shutdown() } else { await control.connection?.close() }
        await supervisor?.value
        try? await loop.submit { self.phase = .stopped; self.published = [:] }.get()
    }

    // MARK: Supervisor

    private func supervise(services: [OnionService]) async {
        var lastReason: String?
        while !Task.isCancelled {
            await update {
                $0.phase = .starting
                $0.progress = 0
                $0.summary = "starting"
                $0.bootstrapComplete = false
                $0.setupDone = false
            }
            let reason: String
            do {
                try await runOnce(services: services)
                reason = settings.control == nil ? "tor exited" : "the control connection to tor closed"
            } catch {
                reason = "\(error)"
            }
            if Task.isCancelled { break }
            let wasConnected = control.connection != nil
            control.clear()
            await update {
                $0.phase = .down
                $0.lastError = reason
                $0.socksAddress = nil
                $0.published = [:]
                if wasConnected { $0.restarts += 1 }
            }
            // Once per outage (and when the reason changes), not on every retry.
            if wasConnected || reason != lastReason {
                logger.error("tor is not available: \(reason); every tor profile refuses traffic until it is back (retrying every \(settings.restartDelaySeconds) s)")
            } else {
                logger.debug("tor still not available: \(reason)")
            }
            lastReason = wasConnected ? nil : reason
            try? await Task.sleep(nanoseconds: UInt64(settings.restartDelaySeconds * 1e9))
        }
    }

    /// One life of tor: start or connect, set up, follow events until the connection ends.
    private func runOnce(services: [OnionService]) async throws {
        let connection: TorControlConnection
        let events: AsyncStream<TorEvent>
        var socks: String?
        let onBootstrap: @Sendable (BootstrapStatus) -> Void = { [weak self] status in self?.bootstrapped(status) }
        if let address = settings.control {
            var options = TorControlConnection.Options(password: settings.controlPassword, timeout: .seconds(30))
            if let cookieFile = settings.cookieFile {
                guard let cookie = FileManager.default.contents(atPath: cookieFile) else {
                    throw GatewayError.invalid("cannot read tor's cookie file \(cookieFile)")
                }
                options.cookie = Array(cookie)
            }
            let endpoint: TorControlEndpoint
            switch address {
            case .tcp(let hostPort): endpoint = .tcp(host: hostPort.host, port: hostPort.port)
            case .unix(let path): endpoint = .unix(path: path)
            }
            connection = try await TorControlConnection.connect(to: endpoint, options: options)
            control.set(connection: connection, managed: nil)
            events = connection.events
            logger.notice("connected to tor's control port \(address) (auth \(connection.authMethod), tor \(connection.protocolInfo.torVersion ?? "?"))")
            try await connection.send(.setEvents(["STATUS_CLIENT", "HS_DESC"]))
            if let configured = settings.socks {
                socks = configured.description
            } else {
                let info = try await connection.getInfo(["net/listeners/socks"])
                socks = info["net/listeners/socks"].flatMap(Self.firstQuoted)
            }
            let phase = try await connection.getInfo(["status/bootstrap-phase"])
            if let text = phase["status/bootstrap-phase"], let status = try? BootstrapStatus(bootstrapPhase: text) {
                bootstrapped(status)
            }
        } else {
            var lines: [String] = []
            if let include = settings.torrcInclude { lines.append("%include \(include)") }
            let configuration = ManagedTor.Configuration(
                stateDirectory: config.stateDir + "/tor", torPath: settings.torPath == "tor" ? nil : settings.torPath,
                extraTorrcLines: lines)
            let managed = try await ManagedTor.start(configuration, onBootstrap: onBootstrap)
            control.set(connection: managed.connection, managed: managed)
            connection = managed.connection
            events = managed.events
            socks = managed.socksAddress
            logger.notice("started tor (pid \(managed.pid), torrc \(managed.torrcPath))")
            try await connection.send(.setEvents(["STATUS_CLIENT", "HS_DESC"]))
        }
        guard let socks, let socksAddress = Self.socketAddress(socks) else {
            throw GatewayError.invalid("tor has no SocksPort Sotto can use (got \(socks ?? "none")); set [tor] socks")
        }
        await update { $0.socksAddress = socksAddress }
        try await authorizeClients(connection)
        for service in services { try await publish(service, on: connection) }
        await update {
            $0.setupDone = true
            $0.evaluate()
        }

        // A managed tor's bootstrap reports reach `bootstrapped` through ManagedTor's callback already.
        let followBootstrap = settings.control != nil
        var announced: Set<String> = []
        for await event in events {
            switch event {
            case .status(let status):
                if followBootstrap, let bootstrap = status.bootstrap { bootstrapped(bootstrap) }
            case .hsDescriptor(let descriptor):
                // One line per service and tor life: tor uploads to every HSDir, and again later.
                guard case .uploaded = descriptor.action, !announced.contains(descriptor.address) else { break }
                let address = descriptor.address + ".onion"
                if let name = try? await loop.submit({ self.published.first { $0.value == address }?.key }).get() {
                    announced.insert(descriptor.address)
                    logger.notice("onion service '\(name)' is reachable: descriptor uploaded (first to \(descriptor.hsDir))")
                }
            case .other:
                break
            }
        }
    }

    /// ONION_CLIENT_AUTH_ADD for every peer with a client authorization key (tor forgets them
    /// when it restarts, so this runs on every connection).
    private func authorizeClients(_ connection: TorControlConnection) async throws {
        for peer in config.peers {
            guard let key = peer.clientAuthKey, case .onion(let host, _) = peer.address else { continue }
            let id = String(host.dropLast(".onion".count))
            try await connection.send(.onionClientAuthAdd(serviceID: id, x25519PrivateKey: key, clientName: "sotto-\(peer.name)"))
            logger.info("client authorization added for peer '\(peer.name)'")
        }
    }

    static let maxStreamsPerCircuit = 16

    /// ADD_ONION with the service's persisted key (created on first use), mapping the onion port
    /// to the tunnel listener. Detach keeps it independent of this control connection; `stop`
    /// removes it. A service left over from a run that could not clean up is replaced.
    private func publish(_ onion: OnionService, on connection: TorControlConnection) async throws {
        let identity = try OnionKeyFile.loadOrCreate(path: onion.keyPath, logger: logger)
        let service = onion.service
        let clientKeys = service.clientAuth.map { Base32Text.encode($0) }
        let command = try TorCommand.addOnion(
            key: identity.addOnionKey, flags: clientKeys.isEmpty ? [.detach] : [.detach, .v3Auth],
            // Per rendezvous circuit, i.e. per client: an entry gateway keeps one tunnel per
            // (profile, peer), so a few streams are plenty; the service-wide bound is max_tunnels.
            maxStreams: min(service.maxTunnels, Self.maxStreamsPerCircuit),
            ports: [OnionPort(virtualPort: UInt16(service.onionPort), target: "127.0.0.1:\(onion.localPort)")],
            clientAuthV3: clientKeys)
        let result: AddOnionResult
        do {
            result = try AddOnionResult(reply: await connection.send(command))
        } catch let error as TorReplyError where error.message.lowercased().contains("collision") {
            try await connection.send(.delOnion(serviceID: identity.serviceID))
            result = try AddOnionResult(reply: await connection.send(command))
        }
        guard result.serviceID == identity.serviceID else {
            throw GatewayError.invalid("tor published onion service '\(service.name)' as \(result.serviceID).onion, not \(identity.address)")
        }
        await update { $0.published[service.name] = identity.address }
        let authNote = clientKeys.isEmpty ? "" : " (client authorization: \(clientKeys.count) key(s))"
        logger.notice("onion service '\(service.name)' published at \(identity.address):\(service.onionPort)\(authNote)")
    }

    // MARK: Loop-confined updates

    private func update(_ change: @escaping (TorRuntime) -> Void) async {
        try? await loop.submit { change(self) }.get()
    }

    private func bootstrapped(_ status: BootstrapStatus) {
        display.show(status)
        loop.execute {
            guard self.phase != .stopped, self.phase != .down else { return }
            self.progress = status.progress
            self.summary = status.summary
            if status.isComplete { self.bootstrapComplete = true }
            self.evaluate()
        }
    }

    /// Ready once bootstrapped and set up; a tor that reports less than 100% after that (it lost
    /// its network) stays ready: its SocksPort answers for itself.
    private func evaluate() {
        guard phase != .stopped, phase != .down, phase != .ready else { return }
        if bootstrapComplete && setupDone {
            phase = .ready
            lastError = nil
            logger.notice("tor is ready: SocksPort \(socksAddress.map { "\($0)" } ?? "?")")
            for handler in onReady { handler() }
        } else {
            phase = .bootstrapping
        }
    }

    // MARK: Pieces

    /// `"127.0.0.1:9050"` or `"unix:/path"` as a socket address.
    static func socketAddress(_ text: String) -> SocketAddress? {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            return path.isEmpty ? nil : try? SocketAddress(unixDomainSocketPath: path)
        }
        guard let hostPort = try? HostPort.parse(text) else { return nil }
        return try? SocketAddress(ipAddress: hostPort.host, port: hostPort.port)
    }

    /// The first of a space-separated list of QuotedStrings (`GETINFO net/listeners/socks`,
    /// control-spec 2.1.1: a path may hold spaces and escapes).
    static func firstQuoted(_ value: String) -> String? {
        if value.hasPrefix("\"") {
            return try? QuotedString.decode(Array(value.utf8), from: 0, context: value).0
        }
        return value.split(separator: " ").first.map(String.init)
    }
}

/// The live control connection, for `stop` (called from another task than the supervisor).
private final class ControlHolder: @unchecked Sendable {
    private let lock = NSLock()
    private var _connection: TorControlConnection?
    private var _managed: ManagedTor?

    var connection: TorControlConnection? { lock.withLock { _connection } }
    var managed: ManagedTor? { lock.withLock { _managed } }

    func set(connection: TorControlConnection, managed: ManagedTor?) {
        lock.withLock {
            _connection = connection
            _managed = managed
        }
    }

    func clear() {
        let managed = lock.withLock { () -> ManagedTor? in
            defer { _connection = nil; _managed = nil }
            return _managed
        }
        // A managed tor that lost its control connection has exited (TAKEOWNERSHIP); reap it.
        if let managed { Task { await managed.shutdown() } }
    }
}

/// Bootstrap progress: a bar on a terminal, log lines otherwise (one per new percentage).
private final class BootstrapDisplay: @unchecked Sendable {
    private let lock = NSLock()
    private let logger: Logger
    private let useProgressBar: Bool
    private var last = -1

    init(logger: Logger, useProgressBar: Bool) {
        self.logger = logger
        self.useProgressBar = useProgressBar
    }

    func show(_ status: BootstrapStatus) {
        let changed = lock.withLock { () -> Bool in
            defer { last = status.progress }
            return status.progress != last
        }
        guard changed else { return }
        if useProgressBar {
            let width = 30
            let filled = width * min(100, max(0, status.progress)) / 100
            let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
            let line = "\rtor bootstrap [\(bar)] \(status.progress)% \(status.summary)\u{1B}[K" + (status.isComplete ? "\n" : "")
            FileHandle.standardError.write(Data(line.utf8))
        } else {
            logger.notice("tor bootstrap \(status.progress)%: \(status.summary)")
        }
        if let warning = status.warning {
            let advice = status.recommendation.map { " (\($0))" } ?? ""
            logger.warning("tor bootstrap problem: \(warning)\(advice)")
        }
    }
}

/// A service's onion key file: one line, the base64 Ed25519 seed, mode 0600 in a 0700 folder.
public enum OnionKeyFile {
    /// Makes a new onion identity at `path` (never replacing a file) and returns its address.
    public static func createNew(at path: String) throws -> String {
        let identity = OnionIdentity.generate()
        try create(identity, at: path)
        return identity.address
    }

    static func loadOrCreate(path: String, logger: Logger) throws -> OnionIdentity {
        let fm = FileManager.default
        if let data = fm.contents(atPath: path) {
            let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard let seed = Data(base64Encoded: text), seed.count == OnionIdentity.seedLength else {
                throw GatewayError.invalid("\(path): not an onion key (expected one line of base64, a 32-byte seed, as `sotto keygen --onion` writes)")
            }
            if let mode = (try? fm.attributesOfItem(atPath: path))?[.posixPermissions] as? Int, mode & 0o077 != 0 {
                logger.warning("\(path) holds an onion service key and is readable by others (mode \(String(mode, radix: 8))); run chmod 600 on it")
            }
            return try OnionIdentity(seed: Array(seed))
        }
        let identity = OnionIdentity.generate()
        try create(identity, at: path)
        logger.notice("created onion service key \(path): \(identity.address)")
        return identity
    }

    /// Writes a new key file, never replacing an existing one (O_EXCL).
    static func create(_ identity: OnionIdentity, at path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw GatewayError.invalid("cannot create \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        let bytes = Array((Data(identity.seed).base64EncodedString() + "\n").utf8)
        guard bytes.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == bytes.count else {
            throw GatewayError.invalid("cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }
}
