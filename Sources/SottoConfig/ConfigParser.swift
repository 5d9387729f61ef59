import TOMLKit

/// Walks the TOML document section by section (docs/configuration.md), in a fixed order, and
/// stops at the first error. Unknown keys are checked before anything else in a table, so a typo
/// of a required key reads "unknown key 'lisen'; did you mean 'listen'?" and not "missing listen".
struct ConfigParser {
    let file: String
    let baseDirectory: String
    let home: String?
    /// Key paths of secrets written inline (for the readable-config warning of `load`).
    private(set) var inlineSecretKeys: [String] = []
    private var warnings: [String] = []

    init(file: String, baseDirectory: String, home: String?) {
        self.file = file
        self.baseDirectory = baseDirectory
        self.home = home
    }

    private static let topLevelKeys = ["state_dir", "log_level", "socks", "tunnel", "tor", "coap_server", "profile", "peer", "forward", "service", "channel", "hopping"]
    /// A key file holds one line of base64; anything much bigger is the wrong file.
    private static let maximumKeyFileSize = 4096

    mutating func parse(_ text: String) throws -> SottoConfig {
        let document: TOMLTable
        do {
            document = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            let at = error.source.begin
            throw ConfigError(file: file, key: "line \(at.line), column \(at.column)",
                              message: "not valid TOML: " + Redaction.scrubQuoted(error.description))
        }
        let top = TableReader(table: document, path: "", displayName: "the top level", file: file)
        try top.rejectUnknownKeys(allowed: Self.topLevelKeys)

        let stateDir = try parseStateDir(top)
        let logLevel = try top.string("log_level") ?? SottoConfig.defaultLogLevel
        guard SottoConfig.logLevels.contains(logLevel) else {
            var message = "unknown log level '\(logLevel)'; expected one of: " + SottoConfig.logLevels.joined(separator: ", ")
            if let suggestion = Suggestion.closest(to: logLevel, among: SottoConfig.logLevels) {
                message += "; did you mean '\(suggestion)'?"
            }
            throw top.error("log_level", message)
        }
        let socks = try top.subtable("socks").map { try parseSOCKS($0) }
        let tunnel = try top.subtable("tunnel").map { try parseTunnel($0) } ?? .defaults
        let tor = try top.subtable("tor").map { try parseTor($0) } ?? .defaults
        let profiles = try parseProfiles(top.tableArray("profile"))
        var config = SottoConfig(file: file, stateDir: stateDir, logLevel: logLevel, socks: socks, tunnel: tunnel,
                                 tor: tor, profiles: profiles)
        if socks != nil, profiles.isEmpty {
            throw ConfigError(file: file, key: "socks",
                              message: "a SOCKS server needs at least one [[profile]] to give its clients")
        }
        config.coapServer = try top.subtable("coap_server").map { try parseCoAPServer($0, stateDir: stateDir) }
        config.peers = try parsePeers(top.tableArray("peer"))
        config.forwards = try parseForwards(top.tableArray("forward"), config: config)
        config.services = try parseServices(top.tableArray("service"), config: config)
        let channelSection = try parseChannelSection(top)
        config.channels = channelSection.channels
        config.hopping = channelSection.hopping
        try checkHoppingExposes(config)
        warnings += channelSection.warnings
        inlineSecretKeys += channelSection.inlineSecretKeys
        config.warnings = warnings
        return config
    }

    // MARK: top level

    private func parseStateDir(_ top: TableReader) throws -> String {
        let written = try top.string("state_dir") ?? SottoConfig.defaultStateDir
        guard !written.isEmpty else { throw top.error("state_dir", "must not be empty") }
        guard let expanded = Paths.expandTilde(written, home: home) else {
            throw top.error("state_dir", home == nil && (written == "~" || written.hasPrefix("~/"))
                ? "cannot expand '~': HOME is not set"
                : "only '~' and '~/...' are expanded; write the full path instead of '\(written)'")
        }
        return Paths.resolve(expanded, against: baseDirectory)
    }

    private func parseSOCKS(_ table: TOMLTable) throws -> SOCKSSettings {
        let r = TableReader(table: table, path: "socks", displayName: "[socks]", file: file)
        try r.rejectUnknownKeys(allowed: ["listen", "auth", "max_connections"])
        let listen = try loopbackListen(r, "listen", text: r.requiredString("listen"), what: "the SOCKS server")
        return SOCKSSettings(
            listen: listen,
            auth: try r.choice("auth", as: SOCKSAuthMode.self) ?? .optional,
            maxConnections: try r.int("max_connections", in: 1...1_000_000, default: 1024))
    }

    private func parseTunnel(_ table: TOMLTable) throws -> TunnelSettings {
        let r = TableReader(table: table, path: "tunnel", displayName: "[tunnel]", file: file)
        try r.rejectUnknownKeys(allowed: [
            "keepalive_seconds", "idle_timeout_seconds", "handshake_timeout_seconds",
            "max_reconnect_delay_seconds", "udp_flow_idle_seconds", "stream_window",
        ])
        let d = TunnelSettings.defaults
        // A day bounds every timer: longer is a typo, and the gateway turns these into nanoseconds.
        let day = 86_400.0
        return TunnelSettings(
            keepaliveSeconds: try r.seconds("keepalive_seconds", maximum: day, default: d.keepaliveSeconds),
            idleTimeoutSeconds: try r.seconds("idle_timeout_seconds", maximum: day, default: d.idleTimeoutSeconds),
            handshakeTimeoutSeconds: try r.seconds("handshake_timeout_seconds", maximum: day,
                                                   default: d.handshakeTimeoutSeconds),
            maxReconnectDelaySeconds: try r.seconds("max_reconnect_delay_seconds", maximum: day,
                                                    default: d.maxReconnectDelaySeconds),
            udpFlowIdleSeconds: try r.seconds("udp_flow_idle_seconds", maximum: day, default: d.udpFlowIdleSeconds),
            streamWindow: UInt32(try r.int("stream_window", in: 1...Int(UInt32.max), default: Int(d.streamWindow))))
    }

    // MARK: [tor]

    private mutating func parseTor(_ table: TOMLTable) throws -> TorSettings {
        let r = TableReader(table: table, path: "tor", displayName: "[tor]", file: file)
        try r.rejectUnknownKeys(allowed: [
            "control", "control_password_file", "cookie_file", "socks", "tor_path", "torrc_include",
            "restart_delay_seconds",
        ])
        var settings = TorSettings()
        if let control = try r.string("control") {
            if control.hasPrefix("unix:") {
                let path = String(control.dropFirst("unix:".count))
                guard path.hasPrefix("/") else {
                    throw r.error("control", "expected unix:/ABSOLUTE/PATH, got '\(control)'")
                }
                settings.control = .unix(path)
            } else {
                do {
                    let address = try HostPort.parse(control)
                    guard address.port != 0 else { throw r.error("control", "port 0 cannot be connected to") }
                    settings.control = .tcp(address)
                    if !address.isLoopback {
                        warnings.append("\(file): \(r.keyPath("control")): \(address) is not a loopback address: the control "
                            + "port protocol is not encrypted, so the authentication and every command cross the network in clear")
                    }
                } catch let error as HostPort.ParseError {
                    throw r.error("control", error.description + " (or write unix:/PATH for a Unix socket)")
                }
            }
        }
        let managedOnly = ["tor_path", "torrc_include"]
        let externalOnly = ["control_password_file", "cookie_file", "socks"]
        for key in (settings.control == nil ? externalOnly : managedOnly) where r.has(key) {
            throw r.error(key, settings.control == nil
                ? "applies only to an external tor (set 'control' to use one); without 'control' Sotto starts its own tor"
                : "applies only to the tor Sotto starts itself (without 'control'); this gateway uses the tor at \(settings.control!)")
        }
        if r.has("control_password_file") {
            let path = try filePath(r, "control_password_file")
            let contents: FileAccess.Contents
            switch FileAccess.readFile(path: path, limit: Self.maximumKeyFileSize) {
            case .success(let c): contents = c
            case .failure(let failure): throw r.error("control_password_file", "cannot read \(path): \(failure)")
            }
            guard let text = String(validatingUTF8Bytes: contents.bytes)?.trimmingASCIIWhitespace(), !text.isEmpty else {
                throw r.error("control_password_file", "\(path): expected the control port password as one line of text")
            }
            if contents.mode & 0o044 != 0 {
                warnings.append("\(self.file): \(r.keyPath("control_password_file")): \(path) is readable by group or "
                    + "others (mode \(SottoConfig.octal(contents.mode))); run chmod 600 on it")
            }
            settings.controlPassword = text
        }
        if r.has("cookie_file") { settings.cookieFile = try filePath(r, "cookie_file") }
        if let socks = try r.string("socks") {
            settings.socks = try loopbackListen(r, "socks", text: socks, what: "tor's SocksPort")
            guard settings.socks!.port != 0 else { throw r.error("socks", "port 0 cannot be connected to") }
        }
        if let torPath = try r.string("tor_path") {
            guard !torPath.isEmpty else { throw r.error("tor_path", "must not be empty") }
            settings.torPath = torPath.contains("/") ? try filePath(r, "tor_path") : torPath
        }
        if r.has("torrc_include") { settings.torrcInclude = try filePath(r, "torrc_include") }
        settings.restartDelaySeconds = try r.seconds("restart_delay_seconds", maximum: 3600,
                                                     default: settings.restartDelaySeconds)
        return settings
    }

    /// A path value: `~` expanded, relative to the config file's folder.
    func filePath(_ r: TableReader, _ key: String) throws -> String {
        let written = try r.requiredString(key)
        guard !written.isEmpty else { throw r.error(key, "must not be empty") }
        guard let expanded = Paths.expandTilde(written, home: home) else {
            throw r.error(key, "only '~' and '~/...' are expanded in '\(written)'")
        }
        return Paths.resolve(expanded, against: baseDirectory)
    }

    // MARK: [[profile]]

    private mutating func parseProfiles(_ tables: [TOMLTable]) throws -> [Profile] {
        var profiles: [Profile] = []
        var paths: [String] = []
        for (index, table) in tables.enumerated() {
            var r = TableReader(table: table, path: "profile[\(index + 1)]", displayName: "[[profile]] #\(index + 1)",
                                file: file)
            try r.rejectUnknownKeys(allowed: ["name", "anonymizer", "shaping", "default", "allow_direct", "password",
                                              "rate", "jitter", "min_delay_ms", "max_delay_ms"])
            let name = try r.requiredString("name")
            try checkName(name, r)
            r.path += " '\(name)'"
            if let first = profiles.firstIndex(where: { $0.name == name }) {
                throw r.error("name", "duplicate profile name '\(name)' (also \(paths[first]))")
            }
            guard let anonymizer = try r.choice("anonymizer", as: Anonymizer.self) else { throw r.missing("anonymizer") }
            let allowDirect = try r.bool("allow_direct") ?? false
            if allowDirect, anonymizer != .none {
                throw r.error("allow_direct", "applies only to anonymizer 'none'; a \(anonymizer.rawValue) profile "
                    + "never connects directly")
            }
            let isDefault = try r.bool("default") ?? false
            if isDefault, let other = profiles.firstIndex(where: \.isDefault) {
                throw r.error("default", "more than one default profile: \(paths[other]) has default = true too")
            }
            let password = try r.string("password")
            if let password {
                inlineSecretKeys.append(r.keyPath("password"))
                // RFC 1929: PLEN is one byte and at least 1.
                guard (1...255).contains(password.utf8.count) else {
                    throw r.error("password", "must be 1 to 255 bytes long (RFC 1929), got \(password.utf8.count)")
                }
            }
            let shaping = try r.choice("shaping", as: ShapingPolicy.self) ?? .off
            profiles.append(Profile(name: name, anonymizer: anonymizer, shaping: shaping,
                                    isDefault: isDefault, allowDirect: allowDirect, password: password,
                                    shapingOptions: try parseShapingOptions(r, policy: shaping)))
            paths.append(r.path)
        }
        if profiles.count > 1, !profiles.contains(where: \.isDefault) {
            throw ConfigError(file: file, key: "profile",
                              message: "\(profiles.count) profiles and none has default = true; mark exactly one as the default")
        }
        if profiles.count == 1 { profiles[0].isDefault = true }
        return profiles
    }

    /// `rate`, `jitter`, `min_delay_ms`, `max_delay_ms` (docs/shaping.md, "Parameters and
    /// defaults"): each only for the policies it applies to, so a parameter that would silently
    /// do nothing is an error instead.
    private func parseShapingOptions(_ r: TableReader, policy: ShapingPolicy) throws -> ShapingOptions {
        let applies: [String: [ShapingPolicy]] = [
            "rate": [.constant, .poisson], "jitter": [.constant],
            "min_delay_ms": [.padded], "max_delay_ms": [.padded],
        ]
        for key in ["rate", "jitter", "min_delay_ms", "max_delay_ms"] where r.has(key) {
            let policies = applies[key]!
            guard policies.contains(policy) else {
                throw r.error(key, "applies only to shaping " + policies.map { "'\($0.rawValue)'" }.joined(separator: " or ")
                    + "; this profile's shaping is '\(policy.rawValue)'")
            }
        }
        let d = ShapingOptions.defaults
        let options = ShapingOptions(
            rate: try r.number("rate", in: ShapingOptions.rateRange, unit: "cells per second") ?? d.rate,
            jitter: try r.number("jitter", in: ShapingOptions.jitterRange, unit: "(a fraction of the interval)") ?? d.jitter,
            minDelayMs: try r.number("min_delay_ms", in: ShapingOptions.delayRangeMs, unit: "ms") ?? d.minDelayMs,
            maxDelayMs: try r.number("max_delay_ms", in: ShapingOptions.delayRangeMs, unit: "ms") ?? d.maxDelayMs)
        if policy == .padded, options.minDelayMs > options.maxDelayMs {
            let key = r.has("min_delay_ms") ? "min_delay_ms" : "max_delay_ms"
            throw r.error(key, "min_delay_ms (\(options.minDelayMs)) must not be above max_delay_ms (\(options.maxDelayMs))")
        }
        return options
    }

    /// A service's `shaping_*` keys: the bounds its replies' shaping stays within.
    private func parseShapingLimits(_ r: TableReader) throws -> ShapingLimitSettings {
        let d = ShapingLimitSettings.defaults
        var policies = d.policies
        if let names = try r.stringArray("shaping_policies") {
            guard !names.isEmpty else {
                throw r.error("shaping_policies", "must name at least one policy (off, padded, constant, poisson)")
            }
            policies = []
            for (index, name) in names.enumerated() {
                guard let policy = ShapingPolicy(rawValue: name) else {
                    throw r.error("shaping_policies", "'\(name)' (item \(index + 1)) is not a shaping policy; expected off, padded, constant or poisson")
                }
                if policies.contains(policy) { throw r.error("shaping_policies", "'\(name)' is listed twice") }
                policies.append(policy)
            }
        }
        let limits = ShapingLimitSettings(
            policies: policies,
            minRate: try r.number("shaping_min_rate", in: ShapingOptions.rateRange, unit: "cells per second") ?? d.minRate,
            maxRate: try r.number("shaping_max_rate", in: ShapingOptions.rateRange, unit: "cells per second") ?? d.maxRate,
            maxJitter: try r.number("shaping_max_jitter", in: ShapingOptions.jitterRange, unit: "(a fraction of the interval)") ?? d.maxJitter,
            maxDelayMs: try r.number("shaping_max_delay_ms", in: ShapingOptions.delayRangeMs, unit: "ms") ?? d.maxDelayMs)
        if limits.minRate > limits.maxRate {
            let key = r.has("shaping_min_rate") ? "shaping_min_rate" : "shaping_max_rate"
            throw r.error(key, "shaping_min_rate (\(limits.minRate)) must not be above shaping_max_rate (\(limits.maxRate))")
        }
        return limits
    }

    // MARK: [[peer]]

    private mutating func parsePeers(_ tables: [TOMLTable]) throws -> [Peer] {
        var peers: [Peer] = []
        var paths: [String] = []
        for (index, table) in tables.enumerated() {
            var r = TableReader(table: table, path: "peer[\(index + 1)]", displayName: "[[peer]] #\(index + 1)", file: file)
            try r.rejectUnknownKeys(allowed: [
                "name", "address", "public_key", "public_key_file", "psk", "psk_file", "cell_size", "client_auth_key",
                "client_auth_key_file",
            ])
            let name = try r.requiredString("name")
            try checkName(name, r)
            r.path += " '\(name)'"
            if let first = peers.firstIndex(where: { $0.name == name }) {
                throw r.error("name", "duplicate peer name '\(name)' (also \(paths[first]))")
            }
            let address: PeerAddress
            do {
                address = try PeerAddress.parse(r.requiredString("address"))
            } catch let error as PeerAddress.ParseError {
                throw r.error("address", error.description)
            }
            if let host = address.anonymousHost, let first = peers.firstIndex(where: { $0.address.anonymousHost == host }) {
                throw r.error("address", "\(host) is already the address of \(paths[first])")
            }
            let publicKey = try key(r, inline: "public_key", file: "public_key_file", isSecret: false)
            let psk = try key(r, inline: "psk", file: "psk_file", isSecret: true)
            var defaultCellSize = SottoConfig.defaultCellSize
            if case .onion = address { defaultCellSize = SottoConfig.defaultTorCellSize }
            let cellSize = try cellSize(r, default: defaultCellSize)
            var clientAuthKey: [UInt8]?
            if r.has("client_auth_key") || r.has("client_auth_key_file") {
                guard case .onion = address else {
                    throw r.error(r.has("client_auth_key") ? "client_auth_key" : "client_auth_key_file",
                                  "client authorization applies only to a peer at a .onion address")
                }
                clientAuthKey = try key(r, inline: "client_auth_key", file: "client_auth_key_file", isSecret: true)
            }
            peers.append(Peer(name: name, address: address, publicKey: publicKey, psk: psk, cellSize: cellSize,
                              clientAuthKey: clientAuthKey))
            paths.append(r.path)
        }
        return peers
    }

    // MARK: [[forward]]

    private func parseForwards(_ tables: [TOMLTable], config: SottoConfig) throws -> [Forward] {
        var forwards: [Forward] = []
        for (index, table) in tables.enumerated() {
            let r = TableReader(table: table, path: "forward[\(index + 1)]", displayName: "[[forward]] #\(index + 1)",
                                file: file)
            try r.rejectUnknownKeys(allowed: ["listen", "to", "profile"])
            let listenText = try r.requiredString("listen")
            guard let separator = listenText.range(of: "://"),
                  let proto = TransportProtocol(rawValue: String(listenText[..<separator.lowerBound]).lowercased())
            else {
                throw r.error("listen", "expected udp://HOST:PORT or tcp://HOST:PORT, got '\(listenText)'")
            }
            let listen = try loopbackListen(r, "listen", text: String(listenText[separator.upperBound...]), what: "a forward")
            if let other = forwards.firstIndex(where: { $0.proto == proto && $0.listen == listen && listen.port != 0 }) {
                throw r.error("listen", "\(proto.rawValue)://\(listen) is already the listen address of forward[\(other + 1)]")
            }

            let to = try r.requiredString("to")
            guard let colon = to.lastIndex(of: ":"), colon != to.startIndex else {
                throw r.error("to", "expected PEER:VPORT (a [[peer]] name and the virtual port it exposes), got '\(to)'")
            }
            let peerName = String(to[..<colon])
            let virtualPort = try self.virtualPort(String(to[to.index(after: colon)...]), r, "to")
            guard let peer = config.peer(named: peerName) ?? config.peer(forAddress: peerName) else {
                var message = "no [[peer]] named '\(peerName)'"
                if config.peers.isEmpty {
                    message += " (this file defines no peers)"
                } else if let suggestion = Suggestion.closest(to: peerName, among: config.peers.map(\.name)) {
                    message += "; did you mean '\(suggestion)'?"
                } else {
                    message += "; peers: " + config.peers.map(\.name).joined(separator: ", ")
                }
                throw r.error("to", message)
            }
            let profile = try profileName(r, config: config)
            forwards.append(Forward(proto: proto, listen: listen, peer: peer.name, virtualPort: virtualPort, profile: profile))
        }
        return forwards
    }

    // MARK: [[service]]

    private mutating func parseServices(_ tables: [TOMLTable], config: SottoConfig) throws -> [Service] {
        var services: [Service] = []
        var paths: [String] = []
        for (index, table) in tables.enumerated() {
            var r = TableReader(table: table, path: "service[\(index + 1)]", displayName: "[[service]] #\(index + 1)",
                                file: file)
            try r.rejectUnknownKeys(allowed: [
                "name", "profile", "listen", "private_key", "private_key_file", "psk", "psk_file", "cell_size", "expose",
                "max_tunnels", "max_flows_per_tunnel", "onion_port", "onion_key_file", "client_auth",
                "shaping_policies", "shaping_min_rate", "shaping_max_rate", "shaping_max_jitter", "shaping_max_delay_ms",
            ])
            let name = try r.requiredString("name")
            try checkName(name, r)
            r.path += " '\(name)'"
            if let first = services.firstIndex(where: { $0.name == name }) {
                throw r.error("name", "duplicate service name '\(name)' (also \(paths[first]))")
            }
            let profile = try profileName(r, config: config)
            let anonymizer = config.profile(named: profile)?.anonymizer ?? .none
            let listen: HostPort
            if anonymizer == .none {
                do {
                    listen = try HostPort.parse(r.requiredString("listen"))
                } catch let error as HostPort.ParseError {
                    throw r.error("listen", error.description)
                }
            } else if let text = try r.string("listen") {
                // Anything but loopback would let the tunnel be reached around the anonymizer.
                listen = try loopbackListen(r, "listen", text: text, what: "a \(anonymizer.rawValue) service's tunnel listener")
            } else {
                listen = HostPort(host: "127.0.0.1", port: 0)
            }
            let torOnly = ["onion_port", "onion_key_file", "client_auth"]
            for key in torOnly where anonymizer != .tor && r.has(key) {
                throw r.error(key, "applies only to a service whose profile uses anonymizer 'tor' (profile '\(profile)' uses '\(anonymizer.rawValue)')")
            }
            let onionPort = try r.int("onion_port", in: 1...65535, default: Service.defaultOnionPort)
            let onionKeyFile = r.has("onion_key_file") ? try filePath(r, "onion_key_file") : nil
            var clientAuth: [[UInt8]] = []
            for (index, text) in (try r.stringArray("client_auth") ?? []).enumerated() {
                let key = try Self.decodeKey(text) { r.error("client_auth[\(index + 1)]", $0 + " (a client's X25519 public key)") }
                if clientAuth.contains(key) { throw r.error("client_auth[\(index + 1)]", "duplicate client key") }
                clientAuth.append(key)
            }
            let privateKey = try key(r, inline: "private_key", file: "private_key_file", isSecret: true)
            let psk = try key(r, inline: "psk", file: "psk_file", isSecret: true)
            let cellSize = try cellSize(r, default: anonymizer == .tor ? SottoConfig.defaultTorCellSize : SottoConfig.defaultCellSize)
            let exposes = try parseExposes(r)
            services.append(Service(
                name: name, profile: profile, listen: listen, privateKey: privateKey, psk: psk, cellSize: cellSize,
                exposes: exposes,
                maxTunnels: try r.int("max_tunnels", in: 1...1_000_000, default: 64),
                maxFlowsPerTunnel: try r.int("max_flows_per_tunnel", in: 1...1_000_000, default: 256),
                onionPort: onionPort, onionKeyFile: onionKeyFile, clientAuth: clientAuth,
                shapingLimits: try parseShapingLimits(r)))
            paths.append(r.path)
        }
        return services
    }

    /// `HOST:hopping` exposes need the file's `[hopping]` table (read after the services).
    private func checkHoppingExposes(_ config: SottoConfig) throws {
        guard config.hopping == nil else { return }
        for (serviceIndex, service) in config.services.enumerated() {
            guard let index = service.exposes.firstIndex(where: { if case .hopping = $0.target { true } else { false } })
            else { continue }
            throw ConfigError(
                file: file, key: "service[\(serviceIndex + 1)] '\(service.name)'.expose[\(index + 1)]",
                message: "'\(service.exposes[index].target)' follows the port hopping schedule, but this file has no "
                    + "[hopping] table; add one with the server's secret_file, range and epoch_seconds (docs/channels.md)")
        }
    }

    /// The word that stands for the port in `HOST:hopping`.
    static let hoppingPortWord = "hopping"

    /// `expose = ["udp 5684 127.0.0.1:5684", ...]`: protocol, virtual port, local target;
    /// `udp 5684 127.0.0.1:hopping` follows the `[hopping]` schedule.
    private func parseExposes(_ r: TableReader) throws -> [Expose] {
        guard let lines = try r.stringArray("expose") else {
            throw r.error("expose", "missing key 'expose': list what the service offers, e.g. "
                + "[\"udp 5684 127.0.0.1:5684\"]")
        }
        guard !lines.isEmpty else {
            throw r.error("expose", "is empty: a service must expose at least one \"udp|tcp VPORT HOST:PORT\"")
        }
        var exposes: [Expose] = []
        for (index, line) in lines.enumerated() {
            let key = "expose[\(index + 1)]"
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count == 3 else {
                throw r.error(key, "expected \"udp|tcp VPORT HOST:PORT\", as in \"udp 5684 127.0.0.1:5684\", got '\(line)'")
            }
            guard let proto = TransportProtocol(rawValue: fields[0].lowercased()) else {
                throw r.error(key, "'\(fields[0])' is not a protocol: expected udp or tcp, in '\(line)'")
            }
            let virtualPort = try self.virtualPort(String(fields[1]), r, key)
            let target = try exposeTarget(String(fields[2]), proto: proto, r, key)
            if let other = exposes.firstIndex(where: { $0.proto == proto && $0.virtualPort == virtualPort }) {
                throw r.error(key, "duplicate virtual port \(proto.rawValue) \(virtualPort) (also expose[\(other + 1)])")
            }
            exposes.append(Expose(proto: proto, virtualPort: virtualPort, target: target))
        }
        return exposes
    }

    /// `HOST:PORT`, or `HOST:hopping` for a UDP expose.
    private func exposeTarget(_ text: String, proto: TransportProtocol, _ r: TableReader, _ key: String) throws -> ExposeTarget {
        let suffix = ":" + Self.hoppingPortWord
        if text.lowercased().hasSuffix(suffix) {
            let hostText = String(text.dropLast(suffix.count))
            guard proto == .udp else {
                throw r.error(key, "target '\(text)': port hopping applies to udp exposes only (the hopping server "
                    + "speaks DTLS over UDP); give a tcp expose a fixed HOST:PORT")
            }
            if hostText.contains(":"), !hostText.hasPrefix("[") {
                throw r.error(key, "target '\(text)': an IPv6 address needs brackets, as in [::1]:hopping")
            }
            let host: HostPort
            do {
                // The host part is checked as in HOST:PORT; the port is the schedule's.
                host = try HostPort.parse(hostText + ":1")
            } catch let error as HostPort.ParseError {
                throw r.error(key, "target '\(text)': \(error.reason)")
            }
            return .hopping(host: host.host)
        }
        let target: HostPort
        do {
            target = try HostPort.parse(text)
        } catch let error as HostPort.ParseError {
            throw r.error(key, "target " + error.description + " (or HOST:hopping for a udp expose that follows [hopping])")
        }
        guard target.port != 0 else { throw r.error(key, "target port 0 cannot be connected to") }
        return .fixed(target)
    }

    // MARK: shared pieces

    /// Profile, peer and service names: letters, digits, '-' and '_'. A profile name is a SOCKS
    /// username (RFC 1929: at most 255 bytes) and a peer name a SOCKS destination host.
    private func checkName(_ name: String, _ r: TableReader) throws {
        guard !name.isEmpty else { throw r.error("name", "must not be empty") }
        guard name.utf8.count <= 255 else { throw r.error("name", "must be at most 255 bytes, got \(name.utf8.count)") }
        let allowed = name.utf8.allSatisfy { b in
            (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39)
                || b == UInt8(ascii: "-") || b == UInt8(ascii: "_")
        }
        guard allowed else { throw r.error("name", "'\(name)' may hold only letters, digits, '-' and '_'") }
    }

    private func loopbackListen(_ r: TableReader, _ key: String, text: String, what: String) throws -> HostPort {
        let listen: HostPort
        do {
            listen = try HostPort.parse(text)
        } catch let error as HostPort.ParseError {
            throw r.error(key, error.description)
        }
        guard listen.isLoopback else {
            let nameNote = listen.isIPAddress ? "" : " (write an address: a name such as localhost could resolve elsewhere)"
            throw r.error(key, "\(listen) is not a loopback address: \(what) must listen on 127.0.0.0/8 or [::1]"
                + "\(nameNote), or anyone who reaches this host could use the tunnel")
        }
        return listen
    }

    private func virtualPort(_ text: String, _ r: TableReader, _ key: String) throws -> Int {
        guard !text.isEmpty, text.utf8.count <= 5, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
              let port = Int(text), (1...65535).contains(port)
        else { throw r.error(key, "virtual port '\(text)' must be a number from 1 to 65535") }
        return port
    }

    private func cellSize(_ r: TableReader, default defaultValue: Int) throws -> Int {
        try r.int("cell_size", in: SottoConfig.cellSizeRange, default: defaultValue)
    }

    /// `profile = NAME`, or the default profile's name when absent.
    private func profileName(_ r: TableReader, config: SottoConfig) throws -> String {
        if let name = try r.string("profile") {
            guard config.profile(named: name) != nil else {
                var message = "no [[profile]] named '\(name)'"
                if config.profiles.isEmpty {
                    message += " (this file defines no profiles)"
                } else if let suggestion = Suggestion.closest(to: name, among: config.profiles.map(\.name)) {
                    message += "; did you mean '\(suggestion)'?"
                } else {
                    message += "; profiles: " + config.profiles.map(\.name).joined(separator: ", ")
                }
                throw r.error("profile", message)
            }
            return name
        }
        guard let profile = config.defaultProfile else {
            throw r.error("profile", "no profile given and this file defines no [[profile]] to default to")
        }
        return profile.name
    }

    /// A 32-byte key written inline (`inline`, base64) or in a file (`file`, base64 text).
    /// Messages give lengths, never the key; a secret's file must be private to its owner.
    private mutating func key(_ r: TableReader, inline: String, file fileKey: String, isSecret: Bool) throws -> [UInt8] {
        switch (r.has(inline), r.has(fileKey)) {
        case (true, true):
            throw r.error(inline, "give either '\(inline)' or '\(fileKey)', not both")
        case (false, false):
            throw r.error(inline, "missing key '\(inline)' (or '\(fileKey)') in \(r.displayName)")
        case (true, false):
            let text = try r.requiredString(inline)
            if isSecret { inlineSecretKeys.append(r.keyPath(inline)) }
            return try Self.decodeKey(text) { r.error(inline, $0) }
        case (false, true):
            let path = try filePath(r, fileKey)
            let contents: FileAccess.Contents
            switch FileAccess.readFile(path: path, limit: Self.maximumKeyFileSize) {
            case .success(let c): contents = c
            case .failure(let failure): throw r.error(fileKey, "cannot read \(path): \(failure)")
            }
            guard let text = String(validatingUTF8Bytes: contents.bytes) else {
                throw r.error(fileKey, "\(path): expected base64 text, got binary data")
            }
            let trimmed = text.trimmingASCIIWhitespace()
            let key = try Self.decodeKey(trimmed) { r.error(fileKey, "\(path): \($0)") }
            if isSecret, contents.mode & 0o044 != 0 {
                warnings.append("\(self.file): \(r.keyPath(fileKey)): \(path) is readable by group or others "
                    + "(mode \(SottoConfig.octal(contents.mode))); run chmod 600 on it")
            }
            return key
        }
    }

    private static func decodeKey(_ text: String, error: (String) -> ConfigError) throws -> [UInt8] {
        guard let bytes = KeyEncoding.decode(text) else {
            throw error("expected 32 bytes of base64 (44 characters, standard alphabet, '=' padded), "
                + "got \(text.count) characters that are not strict base64")
        }
        guard bytes.count == KeyEncoding.keyLength else {
            throw error("expected 32 bytes of base64, got \(bytes.count)")
        }
        return bytes
    }
}

extension String {
    fileprivate func trimmingASCIIWhitespace() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" || $0 == "\r\n" }
        guard let start = firstIndex(where: { !isSpace($0) }), let end = lastIndex(where: { !isSpace($0) }) else {
            return ""
        }
        return String(self[start...end])
    }
}

extension TableReader {
    /// A number (integer or float) within `range`, or nil when absent.
    func number(_ key: String, in range: ClosedRange<Double>, unit: String) throws -> Double? {
        guard let value = table[key] else { return nil }
        let number: Double
        if let int = value.int {
            number = Double(int)
        } else if let double = value.double {
            number = double
        } else {
            throw error(key, "expected a number, got \(Redaction.kindName(value.type))")
        }
        guard number.isFinite, range.contains(number) else {
            throw error(key, "must be from \(Self.format(range.lowerBound)) to \(Self.format(range.upperBound)) \(unit), got \(value.debugDescription)")
        }
        return number
    }

    private static func format(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
    }
}
