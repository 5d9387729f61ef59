// The plain values a parsed configuration is made of (docs/configuration.md, key by key).

/// Which anonymizer carries a profile's traffic. A profile never falls back to another one.
public enum Anonymizer: String, Sendable, CaseIterable {
    case none, tor, i2p
}

/// How a tunnel's send side is shaped (DESIGN.md "Shaping").
public enum ShapingPolicy: String, Sendable, CaseIterable {
    case off, padded, constant, poisson
}

/// A profile's shaping parameters (docs/shaping.md, "Parameters and defaults"). Plain values:
/// the gateway turns them into `SottoShaping.ShapingParameters`; the defaults and ranges are
/// that module's, repeated here so this module does not depend on it.
public struct ShapingOptions: Sendable, Equatable {
    /// Cells per second (`constant`: exactly, `poisson`: on average).
    public var rate: Double
    /// `constant`: ± this fraction of the interval.
    public var jitter: Double
    /// `padded`: each cell waits a uniformly random delay in [minDelayMs, maxDelayMs].
    public var minDelayMs: Double
    public var maxDelayMs: Double

    public static let rateRange: ClosedRange<Double> = 0.1...10_000
    public static let jitterRange: ClosedRange<Double> = 0...0.9
    public static let delayRangeMs: ClosedRange<Double> = 0...10_000

    public init(rate: Double = 10, jitter: Double = 0.2, minDelayMs: Double = 10, maxDelayMs: Double = 50) {
        self.rate = rate
        self.jitter = jitter
        self.minDelayMs = minDelayMs
        self.maxDelayMs = maxDelayMs
    }

    public static let defaults = ShapingOptions()
}

/// A service's bounds on what clients may propose (docs/shaping.md, "Negotiation").
public struct ShapingLimitSettings: Sendable, Equatable {
    /// Policies a client may ask for; others get the fallback (`off` when allowed).
    public var policies: [ShapingPolicy]
    public var minRate: Double
    public var maxRate: Double
    public var maxJitter: Double
    public var maxDelayMs: Double

    public init(policies: [ShapingPolicy] = ShapingPolicy.allCases, minRate: Double = 1, maxRate: Double = 50,
                maxJitter: Double = 0.9, maxDelayMs: Double = 1000) {
        self.policies = policies
        self.minRate = minRate
        self.maxRate = maxRate
        self.maxJitter = maxJitter
        self.maxDelayMs = maxDelayMs
    }

    public static let defaults = ShapingLimitSettings()
}

/// `[socks] auth`: whether clients without RFC 1929 credentials are served (with the default profile).
public enum SOCKSAuthMode: String, Sendable, CaseIterable {
    case optional, required
}

public enum TransportProtocol: String, Sendable, CaseIterable {
    case udp, tcp
}

/// `[socks]`; absent means this gateway runs no SOCKS server.
public struct SOCKSSettings: Sendable, Equatable {
    /// Always a loopback address: the entry gateway must not be an open proxy.
    public var listen: HostPort
    public var auth: SOCKSAuthMode
    public var maxConnections: Int

    public init(listen: HostPort, auth: SOCKSAuthMode = .optional, maxConnections: Int = 1024) {
        self.listen = listen
        self.auth = auth
        self.maxConnections = maxConnections
    }
}

/// Where an external tor's control port is: `[tor] control`.
public enum TorControlAddress: Sendable, Equatable, CustomStringConvertible {
    case tcp(HostPort)
    /// `unix:/run/tor/control`
    case unix(String)

    public var description: String {
        switch self {
        case .tcp(let hostPort): return hostPort.description
        case .unix(let path): return "unix:\(path)"
        }
    }
}

/// `[tor]`: which tor the gateway drives. Without `control`, Sotto starts and owns a tor of its
/// own ("managed"); with it, Sotto uses a running tor and never starts one.
public struct TorSettings: Sendable, Equatable {
    /// nil: managed tor.
    public var control: TorControlAddress?
    /// HASHEDPASSWORD authentication to an external tor (read from `control_password_file`).
    public var controlPassword: String?
    /// Where to read the auth cookie when tor's PROTOCOLINFO names a path this process cannot see.
    public var cookieFile: String?
    /// An external tor's SocksPort; nil: asked from tor (`GETINFO net/listeners/socks`).
    public var socks: HostPort?
    /// Managed: the tor binary (a name is looked up in PATH).
    public var torPath: String
    /// Managed: a torrc fragment included into the generated torrc (`%include`), e.g. the
    /// private test network's `gateway.torrc`.
    public var torrcInclude: String?
    /// Seconds between attempts to reach tor again (restart a managed one, reconnect an external one).
    public var restartDelaySeconds: Double

    public init(control: TorControlAddress? = nil, controlPassword: String? = nil, cookieFile: String? = nil,
                socks: HostPort? = nil, torPath: String = "tor", torrcInclude: String? = nil,
                restartDelaySeconds: Double = 2) {
        self.control = control
        self.controlPassword = controlPassword
        self.cookieFile = cookieFile
        self.socks = socks
        self.torPath = torPath
        self.torrcInclude = torrcInclude
        self.restartDelaySeconds = restartDelaySeconds
    }

    public static let defaults = TorSettings()
}

/// `[tunnel]`: timers and limits shared by every tunnel of this gateway.
public struct TunnelSettings: Sendable, Equatable {
    public var keepaliveSeconds: Double
    public var idleTimeoutSeconds: Double
    public var handshakeTimeoutSeconds: Double
    public var maxReconnectDelaySeconds: Double
    public var udpFlowIdleSeconds: Double
    public var streamWindow: UInt32

    public init(
        keepaliveSeconds: Double = 15,
        idleTimeoutSeconds: Double = 45,
        handshakeTimeoutSeconds: Double = 10,
        maxReconnectDelaySeconds: Double = 30,
        udpFlowIdleSeconds: Double = 120,
        streamWindow: UInt32 = 262_144
    ) {
        self.keepaliveSeconds = keepaliveSeconds
        self.idleTimeoutSeconds = idleTimeoutSeconds
        self.handshakeTimeoutSeconds = handshakeTimeoutSeconds
        self.maxReconnectDelaySeconds = maxReconnectDelaySeconds
        self.udpFlowIdleSeconds = udpFlowIdleSeconds
        self.streamWindow = streamWindow
    }

    /// The values docs/configuration.md lists for an absent `[tunnel]`.
    public static let defaults = TunnelSettings()
}

/// `[[profile]]`: anonymizer, shaping and identity for the SOCKS users and forwards that use it.
public struct Profile: Sendable, Equatable {
    public var name: String
    public var anonymizer: Anonymizer
    public var shaping: ShapingPolicy
    /// The parameters of `shaping` (only those of the chosen policy matter).
    public var shapingOptions: ShapingOptions
    public var isDefault: Bool
    /// Only ever true for anonymizer `none` (the parser refuses it elsewhere).
    public var allowDirect: Bool
    /// The RFC 1929 password SOCKS clients of this profile must give; nil: any password.
    public var password: String?

    public init(name: String, anonymizer: Anonymizer, shaping: ShapingPolicy = .off, isDefault: Bool = false,
                allowDirect: Bool = false, password: String? = nil, shapingOptions: ShapingOptions = .defaults) {
        self.name = name
        self.anonymizer = anonymizer
        self.shaping = shaping
        self.shapingOptions = shapingOptions
        self.isDefault = isDefault
        self.allowDirect = allowDirect
        self.password = password
    }
}

/// Where a peer (an exit gateway) is reached.
public enum PeerAddress: Sendable, Hashable, CustomStringConvertible {
    /// Plain TCP, for anonymizer `none`.
    case hostPort(HostPort)
    /// A v3 onion address, lower case, with ".onion"; port nil when the address named none.
    case onion(String, port: Int?)
    /// A `.b32.i2p` address, lower case, with ".b32.i2p".
    case i2p(String, port: Int?)

    public var description: String {
        switch self {
        case .hostPort(let hp): return hp.description
        case .onion(let host, let port), .i2p(let host, let port):
            return port.map { "\(host):\($0)" } ?? host
        }
    }
}

/// `[[peer]]`: an exit gateway this gateway can reach.
public struct Peer: Sendable, Equatable {
    public var name: String
    public var address: PeerAddress
    /// The service's static X25519 public key (32 bytes).
    public var publicKey: [UInt8]
    /// The service's pre-shared key (32 bytes).
    public var psk: [UInt8]
    public var cellSize: Int
    /// The X25519 private key for an onion service with client authorization (ClientAuthV3).
    public var clientAuthKey: [UInt8]?

    public init(name: String, address: PeerAddress, publicKey: [UInt8], psk: [UInt8], cellSize: Int = 514,
                clientAuthKey: [UInt8]? = nil) {
        self.name = name
        self.address = address
        self.publicKey = publicKey
        self.psk = psk
        self.cellSize = cellSize
        self.clientAuthKey = clientAuthKey
    }

    /// The port the entry side connects to: the one the address names, or a service's default
    /// onion / I2P port.
    public var remotePort: Int {
        switch address {
        case .hostPort(let hostPort): return hostPort.port
        case .onion(_, let port), .i2p(_, let port): return port ?? Service.defaultOnionPort
        }
    }
}

/// `[[forward]]`: a loopback port whose traffic goes to a peer's virtual port.
public struct Forward: Sendable, Equatable {
    public var proto: TransportProtocol
    /// Always a loopback address.
    public var listen: HostPort
    /// The peer's `name` (also when `to` named the peer by its onion / I2P address).
    public var peer: String
    public var virtualPort: Int
    /// The profile's name; the default profile's when the file gave none.
    public var profile: String

    public init(proto: TransportProtocol, listen: HostPort, peer: String, virtualPort: Int, profile: String) {
        self.proto = proto
        self.listen = listen
        self.peer = peer
        self.virtualPort = virtualPort
        self.profile = profile
    }
}

/// Where an `expose` entry delivers its flows.
public enum ExposeTarget: Sendable, Hashable, CustomStringConvertible {
    /// `HOST:PORT`.
    case fixed(HostPort)
    /// `HOST:hopping` (UDP only): each flow goes to the port the file's `[hopping]` schedule gives
    /// for the epoch the flow begins in, and is retired when the server closes that port
    /// (docs/channels.md, "An exit gateway in front of a hopping server").
    case hopping(host: String)

    public var host: String {
        switch self {
        case .fixed(let hostPort): return hostPort.host
        case .hopping(let host): return host
        }
    }

    /// The fixed target; nil for a hopping one.
    public var hostPort: HostPort? {
        if case .fixed(let hostPort) = self { return hostPort }
        return nil
    }

    public var description: String {
        switch self {
        case .fixed(let hostPort): return hostPort.description
        case .hopping(let host): return (host.contains(":") ? "[\(host)]" : host) + ":hopping"
        }
    }
}

/// One `expose` entry: `"udp 5684 127.0.0.1:5684"`, or `"udp 5684 127.0.0.1:hopping"`.
public struct Expose: Sendable, Equatable {
    public var proto: TransportProtocol
    public var virtualPort: Int
    public var target: ExposeTarget

    public init(proto: TransportProtocol, virtualPort: Int, target: ExposeTarget) {
        self.proto = proto
        self.virtualPort = virtualPort
        self.target = target
    }

    public init(proto: TransportProtocol, virtualPort: Int, target: HostPort) {
        self.init(proto: proto, virtualPort: virtualPort, target: .fixed(target))
    }
}

/// `[[service]]`: the exit side.
public struct Service: Sendable, Equatable {
    public var name: String
    /// The profile's name; the default profile's when the file gave none.
    public var profile: String
    public var listen: HostPort
    /// The static X25519 private key (32 bytes).
    public var privateKey: [UInt8]
    public var psk: [UInt8]
    public var cellSize: Int
    public var exposes: [Expose]
    public var maxTunnels: Int
    public var maxFlowsPerTunnel: Int
    /// Tor: the onion service's virtual port (peers write `xxxx.onion:PORT`, or nothing for this default).
    public var onionPort: Int
    /// Tor: where the onion service's ED25519-V3 key is kept (0600), created on first start.
    public var onionKeyFile: String?
    /// Tor: X25519 public keys of the clients allowed in (ClientAuthV3); empty: no client authorization.
    public var clientAuth: [[UInt8]]
    /// What this exit applies to its replies at most (`shaping_*` keys); its default for a
    /// client that proposes nothing is its profile's shaping.
    public var shapingLimits: ShapingLimitSettings

    public static let defaultOnionPort = 443

    public init(name: String, profile: String, listen: HostPort, privateKey: [UInt8], psk: [UInt8],
                cellSize: Int = 514, exposes: [Expose], maxTunnels: Int = 64, maxFlowsPerTunnel: Int = 256,
                onionPort: Int = Service.defaultOnionPort, onionKeyFile: String? = nil, clientAuth: [[UInt8]] = [],
                shapingLimits: ShapingLimitSettings = .defaults) {
        self.shapingLimits = shapingLimits
        self.onionPort = onionPort
        self.onionKeyFile = onionKeyFile
        self.clientAuth = clientAuth
        self.name = name
        self.profile = profile
        self.listen = listen
        self.privateKey = privateKey
        self.psk = psk
        self.cellSize = cellSize
        self.exposes = exposes
        self.maxTunnels = maxTunnels
        self.maxFlowsPerTunnel = maxFlowsPerTunnel
    }

    /// The target for a flow to `virtualPort` over `proto`, or nil when the service exposes none.
    public func target(for proto: TransportProtocol, virtualPort: Int) -> ExposeTarget? {
        exposes.first { $0.proto == proto && $0.virtualPort == virtualPort }?.target
    }
}
