import Foundation

/// Where a server listens: a numeric address (or a name that resolves to one) and a UDP port;
/// port 0 takes a free port (see `CoAPServer.endpoints` for the one given).
public struct CoAPListenAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    public var description: String { CoAPURI.endpoint(host: host, port: port) }
}

/// One socket the server listens on.
public struct CoAPServerEndpoint: Sendable, Hashable, CustomStringConvertible {
    /// With the port actually bound.
    public var address: CoAPListenAddress
    /// DTLS (coaps) or plain UDP (coap).
    public var secure: Bool

    public var description: String { "\(secure ? "coaps" : "coap")://\(address)" }
}

/// What `sotto coap-server` runs: where it listens, whom it lets in, where it keeps messages.
///
/// The description shows identities' count and never a key.
public struct CoAPServerConfiguration: Sendable, CustomStringConvertible {
    /// DTLS-PSK endpoints (coaps).
    public var dtlsListen: [CoAPListenAddress]
    /// Plain CoAP endpoints (coap, no security): only when asked for.
    public var plainListen: [CoAPListenAddress]
    /// PSK identity → key, both as bytes.
    public var pskKeys: [[UInt8]: [UInt8]]
    /// Asked for the key of an identity not in `pskKeys` (derived per-channel identities);
    /// nil refuses it. Runs on libcoap's thread during the handshake: it must be quick and must
    /// not wait for other work.
    public var identityResolver: (@Sendable ([UInt8]) -> [UInt8]?)?
    /// The SQLite file of the message store (created when missing).
    public var databasePath: String
    public var limits: MessageStoreLimits
    /// Envelopes in one GET response at most.
    public var maximumEnvelopesPerResponse: Int
    /// How often expired envelopes are removed.
    public var expiryIntervalSeconds: Double

    public init(dtlsListen: [CoAPListenAddress], plainListen: [CoAPListenAddress] = [], pskKeys: [[UInt8]: [UInt8]],
                identityResolver: (@Sendable ([UInt8]) -> [UInt8]?)? = nil, databasePath: String,
                limits: MessageStoreLimits = MessageStoreLimits(), maximumEnvelopesPerResponse: Int = 64,
                expiryIntervalSeconds: Double = 30) {
        self.dtlsListen = dtlsListen
        self.plainListen = plainListen
        self.pskKeys = pskKeys
        self.identityResolver = identityResolver
        self.databasePath = databasePath
        self.limits = limits
        self.maximumEnvelopesPerResponse = maximumEnvelopesPerResponse
        self.expiryIntervalSeconds = expiryIntervalSeconds
    }

    public var description: String {
        "coaps \(dtlsListen.map(\.description).joined(separator: ", ")); coap \(plainListen.isEmpty ? "off" : plainListen.map(\.description).joined(separator: ", ")); \(pskKeys.count) PSK identit\(pskKeys.count == 1 ? "y" : "ies")\(identityResolver == nil ? "" : " and an identity resolver"); store \(databasePath)"
    }
}

/// Why a server did not start or could not listen.
public enum CoAPServerError: Error, Sendable, Equatable, CustomStringConvertible {
    case noListenAddress
    /// DTLS endpoints but no identity could ever be accepted.
    case noPSK
    /// An identity or key of the configuration is unusable (never shows the key).
    case badPSK(identityIndex: Int, PSKProblem)
    case badLimit(String)
    /// libcoap runs one server per process (one context on one thread): see docs/coap-server.md.
    case alreadyRunning
    case cannotListen(CoAPServerEndpoint, reason: String)
    case store(MessageStoreError)
    case stopped

    public var description: String {
        switch self {
        case .noListenAddress: return "the CoAP server has no address to listen on"
        case .noPSK: return "a DTLS listener needs at least one PSK identity and key (or an identity resolver)"
        case .badPSK(let index, let problem): return "PSK identity #\(index + 1): \(problem)"
        case .badLimit(let text): return text
        case .alreadyRunning: return "a CoAP server is already running in this process"
        case .cannotListen(let endpoint, let reason): return "cannot listen on \(endpoint): \(reason)"
        case .store(let error): return error.description
        case .stopped: return "the CoAP server has stopped"
        }
    }
}

/// Something worth a log line. Holds no key and no identity bytes.
public enum CoAPServerEvent: Sendable, Equatable, CustomStringConvertible {
    case listening(CoAPServerEndpoint)
    case stoppedListening(CoAPServerEndpoint)
    /// A handshake named an identity nobody knows (only its length is told).
    case unknownIdentity(length: Int)
    /// A DTLS session ended in an error: often a wrong key for a known identity.
    case dtlsError(peer: String)
    case storeFault(String)
    case expired(envelopes: Int)

    public var description: String {
        switch self {
        case .listening(let endpoint): return "listening on \(endpoint)"
        case .stoppedListening(let endpoint): return "stopped listening on \(endpoint)"
        case .unknownIdentity(let length): return "refused a DTLS handshake with an unknown PSK identity (\(length) bytes)"
        case .dtlsError(let peer): return "DTLS handshake with \(peer) failed (an unknown identity is logged just before; a wrong key makes no error here: the server drops the record silently, RFC 6347 4.1.2.7)"
        case .storeFault(let text): return "message store fault: \(text)"
        case .expired(let count): return "removed \(count) expired envelope(s)"
        }
    }
}

/// Counters of a running server.
public struct CoAPServerStatistics: Sendable, Equatable {
    public var requests = 0
    /// Responses by class: 2 (success), 4 (client error), 5 (server error).
    public var responsesByClass: [UInt8: Int] = [:]
    public var unknownIdentities = 0
    public var dtlsErrors = 0
    /// Boxes that are CoAP resources now (observable).
    public var boxResources = 0
    public var store = MessageStoreCounts()
}

/// The DTLS-PSK CoAP server of the message store (docs/coap-server.md), on libcoap.
///
/// It shares the process's one libcoap thread and context with `CoAPClient`s (CoAPEngine): the
/// context holds the server's endpoints and resources next to the clients' sessions, so no two
/// threads ever enter libcoap, and libcoap's global state (coap_startup, logging, OpenSSL) is set
/// up once. As a consequence there is one server per process.
public final class CoAPServer: Sendable {
    public let configuration: CoAPServerConfiguration
    public let store: MessageStore

    private let engine: CoAPEngine
    private let core: CoAPServerCore
    private let lifecycle = ServerLifecycle()

    /// Opens the store, installs the resources and listens on every configured address.
    public init(configuration: CoAPServerConfiguration,
                events: @escaping @Sendable (CoAPServerEvent) -> Void = { _ in }) async throws {
        try Self.validate(configuration)
        self.configuration = configuration
        let store: MessageStore
        do {
            store = try MessageStore(path: configuration.databasePath, limits: configuration.limits)
        } catch let error as MessageStoreError {
            throw CoAPServerError.store(error)
        }
        self.store = store
        let engine: CoAPEngine
        do {
            engine = try CoAPEngine.acquire()
        } catch {
            store.close()
            throw error
        }
        self.engine = engine
        let core = CoAPServerCore(configuration: configuration, store: store, events: events)
        self.core = core
        do {
            try await Self.onEngine(engine) { loop in try core.install(loop: loop) }
            for address in configuration.dtlsListen { _ = try await addEndpoint(address, secure: true) }
            for address in configuration.plainListen { _ = try await addEndpoint(address, secure: false) }
        } catch {
            await stop()
            throw error
        }
    }

    deinit {
        if lifecycle.markStopped() {
            let core = self.core
            engine.submit { loop in core.uninstall(loop: loop) }
            engine.release()
            store.close()
        }
    }

    /// The sockets it listens on now, with the ports bound.
    public var endpoints: [CoAPServerEndpoint] { lifecycle.endpoints }

    /// Listens on one more address (port hopping adds the next epoch's port this way).
    @discardableResult
    public func addEndpoint(_ address: CoAPListenAddress, secure: Bool = true) async throws -> CoAPServerEndpoint {
        guard !lifecycle.isStopped else { throw CoAPServerError.stopped }
        let resolved: ResolvedAddress
        do {
            resolved = try ResolvedAddress.resolve(host: address.host, port: address.port)
        } catch {
            throw CoAPServerError.cannotListen(CoAPServerEndpoint(address: address, secure: secure), reason: "\(error)")
        }
        let core = self.core
        let endpoint = try await Self.onEngine(engine) { loop in
            try core.listen(loop: loop, address: address, resolved: resolved, secure: secure)
        }
        lifecycle.add(endpoint)
        return endpoint
    }

    /// Stops listening on `endpoint`; sessions that came through it end.
    public func removeEndpoint(_ endpoint: CoAPServerEndpoint) async {
        let core = self.core
        _ = try? await Self.onEngine(engine) { loop in core.unlisten(endpoint) }
        lifecycle.remove(endpoint)
    }

    /// Live counters; after `stop()`, the last ones.
    public func statistics() async -> CoAPServerStatistics {
        let core = self.core
        var statistics: CoAPServerStatistics
        if let last = lifecycle.lastStatistics {
            statistics = last
        } else {
            statistics = (try? await Self.onEngine(engine) { _ in core.statistics }) ?? CoAPServerStatistics()
        }
        statistics.store = store.currentCounts()
        return statistics
    }

    /// Returns once `stop()` was called; cancelling the calling task stops the server.
    public func run() async {
        await withTaskCancellationHandler {
            await lifecycle.waitUntilStopped()
        } onCancel: {
            Task { await self.stop() }
        }
    }

    /// Stops listening, frees the resources and closes the store. Idempotent.
    public func stop() async {
        guard lifecycle.markStopped() else { return }
        let core = self.core
        let lifecycle = self.lifecycle
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let accepted = engine.submit { loop in
                core.uninstall(loop: loop)
                lifecycle.lastStatistics = core.statistics
                continuation.resume()
            }
            if !accepted { continuation.resume() }
        }
        engine.release()
        store.close()
        lifecycle.finishStopping()
    }

    // MARK: - Helpers

    private static func validate(_ configuration: CoAPServerConfiguration) throws {
        guard !configuration.dtlsListen.isEmpty || !configuration.plainListen.isEmpty else {
            throw CoAPServerError.noListenAddress
        }
        if !configuration.dtlsListen.isEmpty && configuration.pskKeys.isEmpty && configuration.identityResolver == nil {
            throw CoAPServerError.noPSK
        }
        for (index, (identity, key)) in configuration.pskKeys.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }).enumerated() {
            do {
                _ = try CoAPSecurity.psk(identity: identity, key: key)
            } catch CoAPError.badPSK(let problem) {
                throw CoAPServerError.badPSK(identityIndex: index, problem)
            }
        }
        let limits = configuration.limits
        guard limits.maximumEnvelopeBytes >= 1, limits.maximumEnvelopesPerBox >= 1, limits.maximumTotalBytes >= 1,
              limits.maximumBoxes >= 1, limits.defaultTimeToLive >= 1, limits.maximumTimeToLive >= limits.defaultTimeToLive else {
            throw CoAPServerError.badLimit("message store limits must be at least 1, and the default time to live at most the maximum")
        }
        guard configuration.maximumEnvelopesPerResponse >= 1 else {
            throw CoAPServerError.badLimit("at least one envelope must fit in a response")
        }
        guard configuration.expiryIntervalSeconds > 0, configuration.expiryIntervalSeconds <= 86_400 else {
            throw CoAPServerError.badLimit("the expiry interval must be more than 0 and at most 86400 seconds")
        }
    }

    /// Runs `body` on libcoap's thread and hands back its result.
    private static func onEngine<T: Sendable>(_ engine: CoAPEngine, _ body: @escaping (CoAPLoop) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, Error>) in
            let accepted = engine.submit { loop in
                continuation.resume(with: Result { try body(loop) })
            }
            if !accepted { continuation.resume(throwing: CoAPServerError.stopped) }
        }
    }
}

/// The server's state that other threads read: stopped or not, its endpoints, who waits in run().
private final class ServerLifecycle: @unchecked Sendable {
    private let lock = NSLock()
    private var stopped = false
    private var finished = false
    private var current: [CoAPServerEndpoint] = []
    private var waiters: [CheckedContinuation<Void, Never>] = []
    private var finalStatistics: CoAPServerStatistics?

    /// The counters as they were when the server stopped.
    var lastStatistics: CoAPServerStatistics? {
        get {
            lock.lock()
            defer { lock.unlock() }
            return finalStatistics
        }
        set {
            lock.lock()
            finalStatistics = newValue
            lock.unlock()
        }
    }

    var isStopped: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stopped
    }

    var endpoints: [CoAPServerEndpoint] {
        lock.lock()
        defer { lock.unlock() }
        return current
    }

    func add(_ endpoint: CoAPServerEndpoint) {
        lock.lock()
        current.append(endpoint)
        lock.unlock()
    }

    func remove(_ endpoint: CoAPServerEndpoint) {
        lock.lock()
        current.removeAll { $0 == endpoint }
        lock.unlock()
    }

    /// True for the caller that stopped it.
    func markStopped() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if stopped { return false }
        stopped = true
        return true
    }

    func finishStopping() {
        lock.lock()
        finished = true
        current.removeAll()
        let waiting = waiters
        waiters.removeAll()
        lock.unlock()
        for waiter in waiting { waiter.resume() }
    }

    func waitUntilStopped() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            lock.lock()
            if finished {
                lock.unlock()
                continuation.resume()
            } else {
                waiters.append(continuation)
                lock.unlock()
            }
        }
    }
}
