import TOMLKit

/// A gateway's whole configuration (docs/configuration.md), parsed and validated.
///
/// Everything the file can get wrong on its own is refused here, each with a `ConfigError` that
/// names the file and key. What needs the running gateway (whether a peer's address kind suits
/// the profile that reaches it, whether ports are free) is the gateway's to check.
public struct SottoConfig: Sendable {
    /// The path the configuration was read from, for messages.
    public var file: String
    /// `state_dir` with `~` expanded and a relative path resolved against the config file's folder.
    public var stateDir: String
    public var logLevel: String
    public var socks: SOCKSSettings?
    public var tunnel: TunnelSettings
    public var tor: TorSettings
    /// `[coap_server]`: what `sotto coap-server` serves; nil when the file has none.
    public var coapServer: CoAPServerSettings?
    public var profiles: [Profile]
    public var peers: [Peer]
    public var forwards: [Forward]
    public var services: [Service]
    /// `[[channel]]`: private identities and sealed envelopes (docs/channels.md).
    public var channels: [ChannelSettings] = []
    /// `[hopping]`: the CoAP server's port schedule.
    public var hopping: HoppingSettings?
    /// Problems that do not stop the gateway but should be fixed: secrets readable by others.
    public var warnings: [String]

    /// The levels swift-log knows, which `log_level` must name.
    public static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
    public static let defaultStateDir = "~/.local/share/sotto"
    public static let defaultLogLevel = "info"
    public static let defaultCellSize = 514
    /// The default between tor peers: exactly one tor RELAY_DATA payload (tor-spec 6.1: 509-byte
    /// relay cell body minus the 11-byte relay header), so a cell never straddles two tor cells.
    /// Measured over the private network: 514-byte cells, each split in two relay cells, put 10-25%
    /// of round trips at about 60 ms where 498-byte cells kept p90 at 20 ms (Benchmarks/RESULTS.md).
    public static let defaultTorCellSize = 498
    /// Cell sizes a tunnel accepts: big enough for a cell header and a useful payload,
    /// small enough that a padded cell stays cheap.
    public static let cellSizeRange = 128...16384

    public init(file: String, stateDir: String, logLevel: String = SottoConfig.defaultLogLevel,
                socks: SOCKSSettings? = nil, tunnel: TunnelSettings = .defaults, tor: TorSettings = .defaults, profiles: [Profile] = [],
                peers: [Peer] = [], forwards: [Forward] = [], services: [Service] = [], warnings: [String] = []) {
        self.file = file
        self.stateDir = stateDir
        self.logLevel = logLevel
        self.socks = socks
        self.tunnel = tunnel
        self.tor = tor
        self.profiles = profiles
        self.peers = peers
        self.forwards = forwards
        self.services = services
        self.warnings = warnings
    }

    /// The profile with `default = true`, or the only profile; nil when there is none.
    public var defaultProfile: Profile? {
        profiles.first(where: \.isDefault) ?? (profiles.count == 1 ? profiles[0] : nil)
    }

    public func profile(named name: String) -> Profile? {
        profiles.first { $0.name == name }
    }

    public func peer(named name: String) -> Peer? {
        peers.first { $0.name == name }
    }

    /// The peer whose `.onion` / `.b32.i2p` address is `host` (any case). A `:port` on either side
    /// is ignored: a SOCKS destination carries the virtual port, not the peer's.
    public func peer(forAddress host: String) -> Peer? {
        var wanted = host.lowercased()
        if let colon = wanted.lastIndex(of: ":"),
           wanted[wanted.index(after: colon)...].allSatisfy(\.isASCIIDigitCharacter) {
            wanted = String(wanted[..<colon])
        }
        if wanted.hasSuffix(".") { wanted.removeLast() }  // a fully qualified "x.onion."
        return peers.first { $0.address.anonymousHost == wanted }
    }

    public func service(named name: String) -> Service? {
        services.first { $0.name == name }
    }

    /// Whether anything this gateway runs (SOCKS, forwards, services) uses a profile of `anonymizer`.
    public func uses(_ anonymizer: Anonymizer) -> Bool {
        let names = Set(profiles.filter { $0.anonymizer == anonymizer }.map(\.name))
        guard !names.isEmpty else { return false }
        return socks != nil || forwards.contains { names.contains($0.profile) } || services.contains { names.contains($0.profile) }
    }

    /// Where a service's onion key lives: `onion_key_file`, or `state_dir/onion/NAME.key`.
    public func onionKeyPath(for service: Service) -> String {
        service.onionKeyFile ?? stateDir + "/onion/" + service.name + ".key"
    }

    /// Reads and parses the file at `path`; relative `*_file` paths resolve against its folder.
    /// Adds a warning when the file holds inline secrets and others may read it.
    public static func load(path: String) throws -> SottoConfig {
        let contents: FileAccess.Contents
        switch FileAccess.readFile(path: path, limit: maximumFileSize) {
        case .success(let c): contents = c
        case .failure(let failure):
            throw ConfigError(file: path, key: "", message: "cannot read the configuration: \(failure)")
        }
        guard let text = String(validatingUTF8Bytes: contents.bytes) else {
            throw ConfigError(file: path, key: "", message: "not UTF-8 text (TOML files are UTF-8)")
        }
        var parser = ConfigParser(file: path, baseDirectory: Paths.directory(of: path), home: FileAccess.homeDirectory())
        var config = try parser.parse(text)
        if !parser.inlineSecretKeys.isEmpty, contents.mode & 0o044 != 0 {
            config.warnings.append(
                "\(path): holds secrets inline (\(parser.inlineSecretKeys.joined(separator: ", "))) and is readable by "
                    + "group or others (mode \(octal(contents.mode))); run chmod 600 on it, or move the secrets to *_file files")
        }
        return config
    }

    /// Parses configuration text; `file` is only used in messages, `baseDirectory` anchors relative
    /// `*_file` paths and a relative `state_dir`.
    public static func parse(_ text: String, file: String, baseDirectory: String) throws -> SottoConfig {
        var parser = ConfigParser(file: file, baseDirectory: baseDirectory, home: FileAccess.homeDirectory())
        return try parser.parse(text)
    }

    /// A configuration is a page of text; a bigger file is a mistake (a key file, a log).
    static let maximumFileSize = 1 << 20

    static func octal(_ mode: UInt32) -> String {
        let digits = String(mode, radix: 8)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }
}

extension Character {
    fileprivate var isASCIIDigitCharacter: Bool { isASCII && isNumber }
}
