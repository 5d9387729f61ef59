import Foundation
import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A tor process Sotto starts and owns (DESIGN.md "Managed tor"): where no control port is
/// configured, run the system `tor` with a torrc written into the state directory, take ownership of
/// it over the control port, and report bootstrap progress.
///
/// Ownership is belt and braces: `__OwningControllerProcess` makes tor exit if this process dies
/// before the control connection is up; `TAKEOWNERSHIP` then ties tor's life to the control
/// connection instead, and `RESETCONF __OwningControllerProcess` drops the PID watch (control-spec
/// 3.23), so tor also exits if this process is killed without running `shutdown()`.
public final class ManagedTor: Sendable {
    public struct Configuration: Sendable {
        /// Where the torrc, the control-port file, the cookie and tor's DataDirectory go.
        public var stateDirectory: String
        /// The tor binary; nil searches PATH, then /usr/sbin/tor.
        public var torPath: String?
        /// Extra torrc lines, appended after ours (e.g. `DisableNetwork 1`, or a test network's
        /// `TestingTorNetwork 1` and `DirAuthority` lines). Later lines win for single-value options.
        public var extraTorrcLines: [String]
        /// Bound on tor writing its control-port file and on connecting and authenticating.
        public var startTimeout: TimeAmount
        /// Bound on tor exiting after SIGTERM, before SIGKILL.
        public var stopTimeout: TimeAmount
        /// Open a SocksPort (`auto IsolateSOCKSAuth ExtendedErrors`).
        public var socksPort: Bool

        public init(stateDirectory: String, torPath: String? = nil, extraTorrcLines: [String] = [],
                    startTimeout: TimeAmount = .seconds(60), stopTimeout: TimeAmount = .seconds(10), socksPort: Bool = true) {
            self.stateDirectory = stateDirectory
            self.torPath = torPath
            self.extraTorrcLines = extraTorrcLines
            self.startTimeout = startTimeout
            self.stopTimeout = stopTimeout
            self.socksPort = socksPort
        }

        var torrcPath: String { stateDirectory + "/torrc" }
        var controlPortFile: String { stateDirectory + "/control-port" }
        var cookieFile: String { stateDirectory + "/control_auth_cookie" }
        var dataDirectory: String { stateDirectory + "/tor-data" }
        var logFile: String { stateDirectory + "/tor.log" }
    }

    /// The running tor's process id.
    public let pid: Int32
    /// The authenticated control connection that owns tor. Its `events` stream is consumed by
    /// ManagedTor; read `events` here instead.
    public let connection: TorControlConnection
    /// The control port tor chose.
    public let controlEndpoint: TorControlEndpoint
    /// `host:port` of tor's SocksPort, nil when none is listening (no SocksPort, or DisableNetwork 1).
    public let socksAddress: String?
    /// The torrc written (mode 0600).
    public let torrcPath: String
    /// Every event from `connection`, forwarded (bootstrap reports included).
    public let events: AsyncStream<TorEvent>

    private let process: Process
    private let stopTimeout: TimeAmount
    private let forwarder: Task<Void, Never>

    private init(pid: Int32, process: Process, connection: TorControlConnection, controlEndpoint: TorControlEndpoint,
                 socksAddress: String?, torrcPath: String, events: AsyncStream<TorEvent>, stopTimeout: TimeAmount,
                 forwarder: Task<Void, Never>) {
        self.pid = pid
        self.process = process
        self.connection = connection
        self.controlEndpoint = controlEndpoint
        self.socksAddress = socksAddress
        self.torrcPath = torrcPath
        self.events = events
        self.stopTimeout = stopTimeout
        self.forwarder = forwarder
    }

    /// Starts tor, connects, authenticates with the cookie, takes ownership and subscribes to
    /// STATUS_CLIENT. `onBootstrap` is called with the current phase at once and on every BOOTSTRAP
    /// report after that (from any task).
    /// - Throws: `ManagedTorError`, or `TorControlError` / `TorAuthenticationError` / `TorReplyError`
    ///   from the control connection. tor is stopped before any error is thrown.
    public static func start(_ configuration: Configuration, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                             onBootstrap: @escaping @Sendable (BootstrapStatus) -> Void = { _ in }) async throws -> ManagedTor {
        let torPath = try resolveTorPath(configuration.torPath)
        let torrc = try writeTorrc(configuration)

        let process = Process()
        process.executableURL = URL(fileURLWithPath: torPath)
        // --defaults-torrc on an empty path so a system torrc-defaults cannot add ports or logs.
        process.arguments = ["-f", torrc, "--defaults-torrc", "/dev/null"]
        process.standardInput = FileHandle.nullDevice
        let log = FileManager.default.createFile(atPath: configuration.logFile, contents: nil,
                                                 attributes: [.posixPermissions: 0o600])
            ? FileHandle(forWritingAtPath: configuration.logFile) : nil
        process.standardOutput = log ?? FileHandle.nullDevice
        process.standardError = log ?? FileHandle.nullDevice
        do { try runWithSignalsUnblocked(process) } catch {
            throw ManagedTorError.launchFailed(path: torPath, reason: "\(error)")
        }
        try? log?.close()
        let pid = process.processIdentifier

        do {
            let deadline = NIODeadline.now() + configuration.startTimeout
            let port = try await waitForControlPort(configuration, process: process, deadline: deadline)
            let remaining = max(deadline - .now(), .seconds(1))
            let connection = try await TorControlConnection.connect(
                to: port, options: .init(timeout: remaining), group: group)
            do {
                try await connection.send(.takeOwnership())
                try await connection.send(.resetConf([(key: "__OwningControllerProcess", value: nil)]))
                try await connection.send(.setEvents(["STATUS_CLIENT"]))

                let (events, continuation) = AsyncStream<TorEvent>.makeStream(bufferingPolicy: .bufferingNewest(4096))
                let forwarder = Task {
                    for await event in connection.events {
                        if case let .status(status) = event, let bootstrap = status.bootstrap { onBootstrap(bootstrap) }
                        continuation.yield(event)
                    }
                    continuation.finish()
                }
                let info = try await connection.getInfo(["status/bootstrap-phase", "net/listeners/socks"])
                if let phase = info["status/bootstrap-phase"], let status = try? BootstrapStatus(bootstrapPhase: phase) {
                    onBootstrap(status)
                }
                let socks = info["net/listeners/socks"].flatMap(firstListener)
                return ManagedTor(pid: pid, process: process, connection: connection, controlEndpoint: port,
                                  socksAddress: socks, torrcPath: torrc, events: events,
                                  stopTimeout: configuration.stopTimeout, forwarder: forwarder)
            } catch {
                await connection.close()
                throw error
            }
        } catch {
            await stop(process, timeout: configuration.stopTimeout)
            if let error = error as? ManagedTorError { throw error }
            // Tor's own words, if it died: more useful than "connection refused".
            if !process.isRunning, process.terminationStatus != 0 {
                throw ManagedTorError.exited(status: process.terminationStatus, log: logTail(configuration.logFile))
            }
            throw error
        }
    }

    /// Stops tor: SIGTERM by PID, up to `stopTimeout`, then SIGKILL; then closes the connection.
    public func shutdown() async {
        await Self.stop(process, timeout: stopTimeout)
        await connection.close()
        forwarder.cancel()
    }

    /// Whether tor, once exited, was killed by SIGKILL (it ignored or never got SIGTERM).
    var wasKilled: Bool {
        !process.isRunning && process.terminationReason == .uncaughtSignal && process.terminationStatus == SIGKILL
    }

    /// True while the tor process has not exited.
    public var isRunning: Bool { process.isRunning }

    // MARK: - Pieces

    static func resolveTorPath(_ configured: String?) throws -> String {
        let fm = FileManager.default
        if let configured {
            guard fm.isExecutableFile(atPath: configured) else { throw ManagedTorError.torNotFound(searched: [configured]) }
            return configured
        }
        var searched: [String] = []
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") where !dir.isEmpty {
            let candidate = "\(dir)/tor"
            searched.append(candidate)
            if fm.isExecutableFile(atPath: candidate) { return candidate }
        }
        searched.append("/usr/sbin/tor")
        if fm.isExecutableFile(atPath: "/usr/sbin/tor") { return "/usr/sbin/tor" }
        throw ManagedTorError.torNotFound(searched: searched)
    }

    /// The torrc text (tor-manual "THE CONFIGURATION FILE FORMAT": paths quoted, since they may hold spaces).
    static func torrcText(_ configuration: Configuration, ownerPID: Int32) throws -> String {
        for line in configuration.extraTorrcLines where line.contains(where: { $0 == "\n" || $0 == "\r" || $0 == "\0" }) {
            throw ManagedTorError.invalidTorrcLine(line)
        }
        var lines = [
            "# Written by Sotto on each start; edits are overwritten.",
            "DataDirectory \(quoted(configuration.dataDirectory))",
            "ControlPort auto",
            "ControlPortWriteToFile \(quoted(configuration.controlPortFile))",
            "CookieAuthentication 1",
            "CookieAuthFile \(quoted(configuration.cookieFile))",
            "__OwningControllerProcess \(ownerPID)",
        ]
        lines.append(configuration.socksPort ? "SocksPort auto IsolateSOCKSAuth ExtendedErrors" : "SocksPort 0")
        lines += configuration.extraTorrcLines
        return lines.joined(separator: "\n") + "\n"
    }

    static func quoted(_ path: String) -> String {
        "\"" + path.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    /// Writes the torrc with mode 0600 (it names the cookie file and may hold test-network secrets'
    /// paths), creating the state directory 0700 if needed; removes a stale control-port file so we
    /// never connect to an old port.
    static func writeTorrc(_ configuration: Configuration) throws -> String {
        let fm = FileManager.default
        let dir = configuration.stateDirectory
        for path in [dir, configuration.controlPortFile, configuration.torrcPath] where path.contains(where: { $0 == "\n" || $0 == "\r" }) {
            throw ManagedTorError.stateDirectory(path: path, reason: "contains a line break")
        }
        do {
            try fm.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            if fm.fileExists(atPath: configuration.controlPortFile) { try fm.removeItem(atPath: configuration.controlPortFile) }
        } catch {
            throw ManagedTorError.stateDirectory(path: dir, reason: TorControlConnection.describeFileError(error))
        }
        let text = try torrcText(configuration, ownerPID: getpid())
        let path = configuration.torrcPath
        unlink(path)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ManagedTorError.stateDirectory(path: path, reason: String(cString: strerror(errno))) }
        defer { _ = close(fd) }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count else {
            throw ManagedTorError.stateDirectory(path: path, reason: String(cString: strerror(errno)))
        }
        return path
    }

    /// Polls for `PORT=127.0.0.1:N` in the ControlPortWriteToFile file, bounded by `deadline`.
    static func waitForControlPort(_ configuration: Configuration, process: Process, deadline: NIODeadline) async throws -> TorControlEndpoint {
        while true {
            if let text = try? String(contentsOfFile: configuration.controlPortFile, encoding: .utf8),
               let endpoint = parseControlPortFile(text) {
                return endpoint
            }
            guard process.isRunning else {
                throw ManagedTorError.exited(status: process.terminationStatus, log: logTail(configuration.logFile))
            }
            guard NIODeadline.now() < deadline else {
                throw ManagedTorError.controlPortTimeout(file: configuration.controlPortFile, log: logTail(configuration.logFile))
            }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
    }

    /// `PORT=127.0.0.1:9051` or `UNIX_PORT=/path` lines (tor writes one per control listener).
    static func parseControlPortFile(_ text: String) -> TorControlEndpoint? {
        for line in text.split(whereSeparator: \.isNewline) {
            if line.hasPrefix("PORT="), let colon = line.lastIndex(of: ":"), let port = Int(line[line.index(after: colon)...]) {
                var host = String(line[line.index(line.startIndex, offsetBy: 5)..<colon])
                if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
                return .tcp(host: host, port: port)
            }
            if line.hasPrefix("UNIX_PORT=") { return .unix(path: String(line.dropFirst(10))) }
        }
        return nil
    }

    /// The first address of `GETINFO net/listeners/socks`: a space-separated list of QuotedStrings.
    static func firstListener(_ value: String) -> String? {
        guard let args = try? TorArguments(parsing: value) else { return nil }
        return args.positional.first { !$0.isEmpty }
    }

    /// A child inherits its parent thread's signal mask across exec, and the threads Swift
    /// concurrency and NIO run on block most signals: tor started from one would never see SIGTERM
    /// (measured: SIGTERM, SIGINT and SIGHUP blocked in the child, so it only died by SIGKILL).
    /// Spawn with an empty mask, then restore ours; no suspension point in between.
    static func runWithSignalsUnblocked(_ process: Process) throws {
        var empty = sigset_t()
        var saved = sigset_t()
        sigemptyset(&empty)
        pthread_sigmask(SIG_SETMASK, &empty, &saved)
        defer { pthread_sigmask(SIG_SETMASK, &saved, nil) }
        try process.run()
    }

    static func stop(_ process: Process, timeout: TimeAmount) async {
        guard process.isRunning else { return }
        let pid = process.processIdentifier
        kill(pid, SIGTERM)
        let deadline = NIODeadline.now() + timeout
        while process.isRunning, NIODeadline.now() < deadline { try? await Task.sleep(nanoseconds: 20_000_000) }
        if process.isRunning {
            kill(pid, SIGKILL)
            let killDeadline = NIODeadline.now() + .seconds(5)
            while process.isRunning, NIODeadline.now() < killDeadline { try? await Task.sleep(nanoseconds: 20_000_000) }
        }
    }

    static func logTail(_ path: String) -> String {
        guard let data = FileManager.default.contents(atPath: path) else { return "" }
        let lines = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).suffix(5)
        return lines.joined(separator: "\n")
    }
}

/// Starting or stopping the managed tor failed; the description says what to fix.
public enum ManagedTorError: Error, Sendable, Equatable, CustomStringConvertible {
    case torNotFound(searched: [String])
    case launchFailed(path: String, reason: String)
    case stateDirectory(path: String, reason: String)
    case invalidTorrcLine(String)
    /// tor exited before it was ready; `log` is the end of its output.
    case exited(status: Int32, log: String)
    case controlPortTimeout(file: String, log: String)

    public var description: String {
        switch self {
        case let .torNotFound(searched):
            return "tor is not installed (looked for \(searched.joined(separator: ", "))); install it or set the tor path"
        case let .launchFailed(path, reason):
            return "cannot start \(path): \(reason)"
        case let .stateDirectory(path, reason):
            return "cannot prepare tor's files at \(path): \(reason)"
        case let .invalidTorrcLine(line):
            return "extra torrc line \"\(line.debugDescription)\" contains a line break or NUL"
        case let .exited(status, log):
            return "tor exited with status \(status) before its control port was ready" + (log.isEmpty ? "" : ": \(log)")
        case let .controlPortTimeout(file, log):
            return "tor did not write its control port to \(file) in time" + (log.isEmpty ? "" : "; tor's log ends: \(log)")
        }
    }
}
