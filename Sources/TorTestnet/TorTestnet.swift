import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A private Tor network on 127.0.0.1 for tests and demonstrations: three directory authorities
/// (keys from tor-gencert), three relays (one of them an exit that accepts only 127.0.0.0/8), a
/// client and an onion host, all with `TestingTorNetwork 1`.
///
/// It never contacts the public Tor network: every torrc lists the private authorities in explicit
/// DirAuthority lines (tor then uses neither its built-in authorities nor fallbacks), binds
/// 127.0.0.1 and binds outgoing connections to it, and the exit resolves names through a
/// resolv.conf that points at 127.0.0.1.
///
/// Layout of the folder: `nodes/<name>/{torrc,tor.pid,notice.log,keys/…}`, `ports.env` (the
/// current run), `gateway.torrc` (for a gateway's own tor), `passphrase` (0600, the authorities'
/// identity keys), empty GeoIP files. Keys are made once and reused; ports change on every `up`.
public struct TorTestnet: Sendable {
    public let directory: String
    public let torPath: String?
    /// Seconds `up` may take in all, key generation included.
    public let timeout: Double
    public var schedule = VotingSchedule()

    public init(directory: String, torPath: String? = nil, timeout: Double = 90) {
        self.directory = directory
        self.torPath = torPath
        self.timeout = timeout
    }

    /// The folder as an absolute, checked path; symbolic links resolved when it exists, so the
    /// paths in tor's command lines are the same whichever way the folder is named.
    func resolvedPaths() throws -> TestnetPaths {
        let normalized = try TestnetDirectory.normalize(directory, currentDirectory: FileManager.default.currentDirectoryPath)
        guard let real = realpath(normalized, nil) else { return TestnetPaths(directory: normalized) }
        defer { free(real) }
        return TestnetPaths(directory: try TestnetDirectory.normalize(String(cString: real), currentDirectory: "/"))
    }

    // MARK: - up

    /// Makes the keys (first time only), writes the configuration, starts the eight tors and waits
    /// until the client and the onion host have bootstrapped. On any failure every tor started is
    /// stopped before the error is thrown.
    /// - Parameters:
    ///   - progress: one line per step, for a person watching.
    ///   - shouldStop: polled while waiting; true stops the network and throws `.interrupted`.
    public func up(progress: (String) -> Void, shouldStop: () -> Bool = { false }) throws -> TorTestnetInfo {
        let started = ContinuousClock.now
        func elapsed(since instant: ContinuousClock.Instant = started) -> String {
            let d = ContinuousClock.now - instant
            return String(format: "%.1f", Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18)
        }
        let deadline = started + .milliseconds(Int(timeout * 1000))
        let normalized = try TestnetDirectory.normalize(directory, currentDirectory: FileManager.default.currentDirectoryPath)
        let tor = try TestnetIO.findTool("tor", configured: torPath)
        try makeDirectories(upTo: normalized)
        let paths = try resolvedPaths()
        let running = TestnetIO.runningTors(paths)
        guard running.isEmpty else { throw TorTestnetError.alreadyRunning(directory: paths.directory, pids: running.map(\.pid)) }

        if TestnetIO.exists(paths.generatedMarker) {
            progress("reusing the keys in \(paths.directory)")
        } else {
            let gencert = try TestnetIO.findTool("tor-gencert", besides: tor)
            progress("generating keys in \(paths.directory)")
            try generate(paths, tor: tor, gencert: gencert, deadline: deadline, shouldStop: shouldStop)
        }
        try resetState(paths)
        let offset = schedule.startOffset(now: Int(Date().timeIntervalSince1970))
        let network = try configure(paths, votingOffset: offset)
        progress("configuration written in \(elapsed()) s; starting \(TestnetLayout.authorities.count) authorities")

        let torsStarted = ContinuousClock.now
        do {
            try startGroup(TestnetLayout.authorities, paths, tor: tor)
            progress("starting relays (\(elapsed()) s)")
            try startGroup(TestnetLayout.relays, paths, tor: tor)
            // The client and the onion host start once every authority serves the first consensus: a
            // tor that asks earlier gets 404s and backs off exponentially (5-7 s lost, measured).
            while true {
                let waiting = TestnetLayout.authorities.filter { (TestnetIO.fileSize(paths.cachedConsensus($0.name)) ?? 0) == 0 }
                if waiting.isEmpty { break }
                if shouldStop() { throw TorTestnetError.interrupted }
                try checkAlive(TestnetLayout.authorities + TestnetLayout.relays, paths)
                guard ContinuousClock.now < deadline else {
                    throw TorTestnetError.noConsensus(waitingFor: waiting.map(\.name), seconds: timeout, directory: paths.directory)
                }
                usleep(200_000)
            }
            progress("first consensus published (\(elapsed()) s); starting the client and the onion host")
            try startGroup([TestnetLayout.client, TestnetLayout.onionHost], paths, tor: tor)

            var last = ""
            while true {
                let client = bootstrap(TestnetLayout.client, paths)
                let onion = bootstrap(TestnetLayout.onionHost, paths)
                let state = "client \(client), onion host \(onion)"
                if state != last {
                    progress("\(elapsed()) s: \(state)")
                    last = state
                }
                if client.isDone, onion.isDone { break }
                if shouldStop() { throw TorTestnetError.interrupted }
                try checkAlive(TestnetLayout.nodes, paths)
                guard ContinuousClock.now < deadline else {
                    throw TorTestnetError.bootstrapTimeout(seconds: timeout, state: state, directory: paths.directory)
                }
                usleep(250_000)
            }
        } catch {
            switch error {
            case TorTestnetError.interrupted: progress("interrupted: stopping")
            case TorTestnetError.startFailed: break
            default: showLogTails(paths, progress: progress)
            }
            try? TestnetIO.stopAll(paths, progress: progress)
            throw error
        }
        progress("network up in \(paths.directory) (bootstrapped in \(elapsed(since: torsStarted)) s; up took \(elapsed()) s)")
        return network
    }

    /// `mkdir -p` with mode 0700 for the folders that do not exist yet.
    private func makeDirectories(upTo path: String) throws {
        var current = ""
        for part in path.split(separator: "/") {
            current += "/" + part
            if !TestnetIO.exists(current) { try TestnetIO.makeDirectory(current) }
        }
    }

    /// The node folders, the empty and fixed files, the passphrase, then every key (tor-gencert for
    /// the authorities' v3 keys, `tor --list-fingerprint` for each relay's identity), in parallel:
    /// key generation is CPU-bound (RSA).
    private func generate(_ paths: TestnetPaths, tor: String, gencert: String, deadline: ContinuousClock.Instant,
                          shouldStop: () -> Bool) throws {
        try TestnetIO.makeDirectory(paths.nodes)
        for node in TestnetLayout.nodes {
            try TestnetIO.makeDirectory(paths.node(node.name))
            try TestnetIO.makeDirectory(paths.keys(node.name))
        }
        try TestnetIO.writeFile(paths.emptyTorrc, "", mode: 0o644)
        try TestnetIO.writeFile(paths.geoIP, "", mode: 0o644)
        try TestnetIO.writeFile(paths.geoIPv6, "", mode: 0o644)
        // Exits resolve names here, never through the host's resolver (which may be public).
        try TestnetIO.writeFile(paths.resolvConf, "nameserver 127.0.0.1\n", mode: 0o644)
        if (TestnetIO.fileSize(paths.passphrase) ?? 0) == 0 {
            var generator = SystemRandomNumberGenerator()
            let secret = (0..<24).map { _ in String(format: "%02x", UInt8.random(in: .min ... .max, using: &generator)) }.joined()
            try TestnetIO.writeFile(paths.passphrase, secret, mode: 0o600)
        }

        var jobs: [(child: TestnetIO.Child, command: String, node: String, output: String)] = []
        var reaped = 0
        defer { for job in jobs.dropFirst(reaped) { job.child.forceStop() } }
        for node in TestnetLayout.authorities where (TestnetIO.fileSize(paths.authorityCertificate(node.name)) ?? 0) == 0 {
            let keys = paths.keys(node.name)
            let output = paths.node(node.name) + "/gencert.out"
            // --passphrase-fd 0: non-interactive; the identity key stays encrypted on disk.
            let child = try TestnetIO.spawn(gencert, [
                "--create-identity-key", "-m", "12",
                "-i", keys + "/authority_identity_key", "-s", keys + "/authority_signing_key",
                "-c", paths.authorityCertificate(node.name), "--passphrase-fd", "0",
            ], inputPath: paths.passphrase, outputPath: output)
            jobs.append((child, "tor-gencert", node.name, output))
        }
        for node in TestnetLayout.nodes where node.isRelay && (TestnetIO.fileSize(paths.fingerprint(node.name)) ?? 0) == 0 {
            let output = paths.node(node.name) + "/fingerprint.out"
            // The identity key comes into being with --list-fingerprint. The placeholder DirAuthority
            // keeps this run from even knowing the public authorities.
            let child = try TestnetIO.spawn(tor, [
                "--list-fingerprint", "-f", paths.emptyTorrc, "--defaults-torrc", paths.emptyTorrc,
                "--DataDirectory", paths.node(node.name), "--ORPort", "127.0.0.1:1", "--Nickname", node.name,
                "--DirAuthority", "placeholder orport=1 127.0.0.1:1 FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
                "--Log", "err stderr",
            ], outputPath: output)
            jobs.append((child, "tor --list-fingerprint", node.name, output))
        }
        for job in jobs {
            var outcome = job.child.wait(until: ContinuousClock.now)
            while !outcome.exited, ContinuousClock.now < deadline {
                if shouldStop() { throw TorTestnetError.interrupted }
                outcome = job.child.wait(until: min(deadline, ContinuousClock.now + .milliseconds(200)))
            }
            guard outcome.exited else {
                throw TorTestnetError.keyGenerationFailed(command: job.command, node: job.node,
                                                          output: "still running after \(Int(timeout)) s")
            }
            reaped += 1
            guard outcome.status == 0 else {
                throw TorTestnetError.keyGenerationFailed(command: job.command, node: job.node,
                                                          output: Self.tail(of: job.output, lines: 5))
            }
        }
        _ = try identities(paths)
        try TestnetIO.writeFile(paths.generatedMarker, "", mode: 0o644)
    }

    /// Every relay's fingerprint and every authority's v3ident, read from the key files.
    private func identities(_ paths: TestnetPaths) throws -> (fingerprints: [String: String], v3idents: [String: String]) {
        var fingerprints: [String: String] = [:]
        var v3idents: [String: String] = [:]
        for node in TestnetLayout.nodes where node.isRelay {
            let path = paths.fingerprint(node.name)
            do {
                let parsed = try TestnetFiles.parseFingerprintFile(try TestnetIO.readSmallFile(path))
                guard parsed.nickname == node.name else {
                    throw TestnetParseError(line: 1, "names relay '\(parsed.nickname)', expected '\(node.name)'")
                }
                fingerprints[node.name] = parsed.fingerprint
                if node.kind == .authority {
                    let certificate = paths.authorityCertificate(node.name)
                    do {
                        v3idents[node.name] = try TestnetFiles.parseAuthorityCertificate(try TestnetIO.readSmallFile(certificate))
                    } catch let error as TestnetParseError {
                        throw TorTestnetError.malformedFile(path: certificate, error: error)
                    }
                }
            } catch let error as TestnetParseError {
                throw TorTestnetError.malformedFile(path: path, error: error)
            }
        }
        return (fingerprints, v3idents)
    }

    /// Everything in the node folders but the keys goes: a cached consensus or descriptor from an
    /// earlier run names old ports, and an authority that votes on those makes the first consensus
    /// useless. Logs are kept once, as `*.prev`.
    private func resetState(_ paths: TestnetPaths) throws {
        let fm = FileManager.default
        let keep: Set<String> = ["keys", "fingerprint", "fingerprint-ed25519", "torrc"]
        for node in TestnetLayout.nodes {
            let folder = paths.node(node.name)
            for entry in (try? fm.contentsOfDirectory(atPath: folder)) ?? [] where !keep.contains(entry) && !entry.hasSuffix(".prev") {
                let path = folder + "/" + entry
                if entry.hasSuffix(".log") {
                    rename(path, path + ".prev")
                } else {
                    do { try fm.removeItem(atPath: path) } catch {
                        throw TorTestnetError.file(path: path, reason: "cannot remove: \(error.localizedDescription)")
                    }
                }
            }
        }
    }

    /// Fresh ports, every torrc, `gateway.torrc` and `ports.env`.
    private func configure(_ paths: TestnetPaths, votingOffset: Int) throws -> TorTestnetInfo {
        let (fingerprints, v3idents) = try identities(paths)
        let network: TorTestnetInfo
        do {
            network = try TorTestnetInfo(directory: paths.directory, ports: try TestnetIO.freePorts(TestnetLayout.portCount),
                                         fingerprints: fingerprints, v3idents: v3idents)
        } catch let error as TestnetParseError {
            throw TorTestnetError.noFreePorts(reason: error.description)
        }
        for node in TestnetLayout.nodes {
            let text = TestnetTorrc.text(for: node, network: network, schedule: schedule, votingOffset: votingOffset)
            try TestnetIO.writeFile(paths.torrc(node.name), text, mode: 0o600)
        }
        try TestnetIO.writeFile(paths.gatewayTorrc, TestnetTorrc.gateway(network: network), mode: 0o644)
        try TestnetIO.writeFile(paths.portsFile, network.portsFileText(), mode: 0o644)
        return network
    }

    /// Starts `nodes` in parallel. With RunAsDaemon the parent exits once the daemon has parsed its
    /// torrc and opened its ports, so a non-zero exit is a real start failure.
    private func startGroup(_ nodes: [TestnetNode], _ paths: TestnetPaths, tor: String) throws {
        var started: [(TestnetNode, TestnetIO.Child)] = []
        for node in nodes {
            // MALLOC_ARENA_MAX=1: about 180 MB instead of 300 MB for the eight tors (measured).
            // No --Log here: a Log on the command line replaces the torrc's Log lines.
            let child = try TestnetIO.spawn(tor, ["-f", paths.torrc(node.name), "--defaults-torrc", paths.emptyTorrc],
                                               environment: ["MALLOC_ARENA_MAX": "1"], outputPath: paths.startOutput(node.name))
            started.append((node, child))
        }
        let deadline = ContinuousClock.now + .seconds(30)
        var failures: [TorTestnetError] = []
        for (node, child) in started {
            let outcome = child.wait(until: deadline)
            if !outcome.exited {
                child.forceStop()
                failures.append(.startFailed(node: node.name, output: "tor did not detach within 30 s"))
            } else if outcome.status != 0 {
                failures.append(.startFailed(node: node.name, output: Self.tail(of: paths.startOutput(node.name), lines: 8)))
            }
        }
        if let first = failures.first { throw first }
    }

    private func checkAlive(_ nodes: [TestnetNode], _ paths: TestnetPaths) throws {
        let alive = Set(TestnetIO.runningTors(paths).map(\.node))
        let gone = nodes.filter { !alive.contains($0) }
        guard gone.isEmpty else {
            throw TorTestnetError.exitedDuringBootstrap(nodes: gone.map(\.name), directory: paths.directory)
        }
    }

    private func bootstrap(_ node: TestnetNode, _ paths: TestnetPaths) -> BootstrapProgress {
        guard let log = TestnetIO.readText(paths.noticeLog(node.name), limit: 256 * 1024, tail: true) else { return .notStarted }
        return BootstrapProgress.latest(inLog: log) ?? .notStarted
    }

    private func showLogTails(_ paths: TestnetPaths, progress: (String) -> Void) {
        for node in TestnetLayout.nodes {
            progress("----- \(node.name)/notice.log (tail) -----")
            for line in Self.tail(of: paths.noticeLog(node.name), lines: 15).split(separator: "\n") { progress("    " + line) }
        }
    }

    static func tail(of path: String, lines: Int) -> String {
        guard let text = TestnetIO.readText(path, limit: 16 * 1024, tail: true) else { return "" }
        return text.split(whereSeparator: \.isNewline).suffix(lines).joined(separator: "\n")
    }

    // MARK: - down, info

    /// Stops every tor of the folder: SIGTERM by PID, SIGKILL after 10 s. Tors whose pid file is
    /// gone are found by their command line. Succeeds when none is running.
    public func down(progress: (String) -> Void) throws {
        try TestnetIO.stopAll(try resolvedPaths(), progress: progress)
    }

    /// The current run, from `DIR/ports.env`.
    public func info() throws -> TorTestnetInfo {
        let paths = try resolvedPaths()
        guard TestnetIO.exists(paths.portsFile) else { throw TorTestnetError.notConfigured(directory: paths.directory) }
        do {
            let network = try TorTestnetInfo(portsFile: try TestnetIO.readSmallFile(paths.portsFile))
            guard network.directory == paths.directory else {
                throw TestnetParseError("TOR_TESTNET_DIR names \(network.directory), but the file is in \(paths.directory)")
            }
            return network
        } catch let error as TestnetParseError {
            throw TorTestnetError.malformedFile(path: paths.portsFile, error: error)
        }
    }

    /// The tors of this network that are running now.
    public func runningProcesses() throws -> [TestnetProcess] {
        TestnetIO.runningTors(try resolvedPaths())
    }
}
