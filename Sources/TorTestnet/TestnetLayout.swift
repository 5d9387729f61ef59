/// The shape of the private network: which nodes exist, what each one is, and where its files live
/// under the network's folder. Names are the nicknames tor reports and the folder names under
/// `nodes/`, so logs, fingerprints and folders line up.
public enum TestnetNodeKind: String, Sendable, Codable, CaseIterable {
    case authority, relay, exit, client, onionHost
}

public struct TestnetNode: Sendable, Hashable, Codable {
    public let name: String
    public let kind: TestnetNodeKind

    public init(name: String, kind: TestnetNodeKind) {
        self.name = name
        self.kind = kind
    }

    /// Nodes that have a relay identity (an ORPort and a `fingerprint` file).
    public var isRelay: Bool { kind == .authority || kind == .relay || kind == .exit }
}

public enum TestnetLayout {
    public static let authorities = ["auth0", "auth1", "auth2"].map { TestnetNode(name: $0, kind: .authority) }
    public static let relays = [TestnetNode(name: "relay0", kind: .relay), TestnetNode(name: "relay1", kind: .relay),
                                TestnetNode(name: "exit0", kind: .exit)]
    public static let client = TestnetNode(name: "client", kind: .client)
    public static let onionHost = TestnetNode(name: "onionhost", kind: .onionHost)
    /// Every node, in start order: authorities, relays, then the client and the onion host.
    public static let nodes = authorities + relays + [client, onionHost]
    public static var exit: TestnetNode { relays.first { $0.kind == .exit }! }

    public static func node(named name: String) -> TestnetNode? { nodes.first { $0.name == name } }

    /// How many TCP ports one run needs: ORPort + DirPort per authority, ORPort per relay, the
    /// client's SocksPort and ControlPort, the onion host's ControlPort.
    public static let portCount = authorities.count * 2 + relays.count + 3
}

/// The paths of a network folder. The folder is absolute and checked by `TestnetDirectory`, so these
/// strings can go into torrc lines, shell lines and TOML strings unquoted.
public struct TestnetPaths: Sendable, Equatable {
    public let directory: String

    public init(directory: String) { self.directory = directory }

    public var nodes: String { directory + "/nodes" }
    public func node(_ name: String) -> String { nodes + "/" + name }
    public func torrc(_ name: String) -> String { node(name) + "/torrc" }
    public func pidFile(_ name: String) -> String { node(name) + "/tor.pid" }
    public func noticeLog(_ name: String) -> String { node(name) + "/notice.log" }
    public func startOutput(_ name: String) -> String { node(name) + "/start.out" }
    public func keys(_ name: String) -> String { node(name) + "/keys" }
    public func fingerprint(_ name: String) -> String { node(name) + "/fingerprint" }
    public func authorityCertificate(_ name: String) -> String { keys(name) + "/authority_certificate" }
    public func cachedConsensus(_ name: String) -> String { node(name) + "/cached-consensus" }
    public func cookie(_ name: String) -> String { node(name) + "/control_auth_cookie" }

    /// tor-gencert's passphrase for the authorities' identity keys (0600, never logged).
    public var passphrase: String { directory + "/passphrase" }
    /// `--defaults-torrc` target, so a system torrc-defaults cannot add ports or logs.
    public var emptyTorrc: String { directory + "/empty-torrc" }
    public var geoIP: String { directory + "/geoip-empty" }
    public var geoIPv6: String { directory + "/geoip6-empty" }
    public var resolvConf: String { directory + "/resolv.conf" }
    public var portsFile: String { directory + "/ports.env" }
    public var gatewayTorrc: String { directory + "/gateway.torrc" }
    /// Present once every key exists: later runs reuse them.
    public var generatedMarker: String { directory + "/generated" }
}

/// Checks and normalises the folder a user names.
public enum TestnetDirectory {
    /// The folder's path goes unquoted into torrc lines (where `#` starts a comment and whitespace
    /// separates values), into `KEY=VALUE` lines meant for `eval`, and into TOML strings; so it
    /// may only hold characters that mean nothing to any of them.
    static let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._+,:@%=-")
    /// sockaddr_un and PATH_MAX leave room for the node files below the folder.
    static let maximumLength = 3000

    /// `path` made absolute against `currentDirectory`, with `.`/`..`/`//` and a trailing `/` removed.
    /// - Throws: `TorTestnetError.invalidDirectory` when the result holds a character outside
    ///   `[A-Za-z0-9/._+,:@%=-]`, is `/`, or is too long.
    public static func normalize(_ path: String, currentDirectory: String) throws -> String {
        guard !path.isEmpty else { throw TorTestnetError.invalidDirectory(path: path, reason: "the path is empty") }
        let joined = path.hasPrefix("/") ? path : currentDirectory + "/" + path
        var parts: [Substring] = []
        for part in joined.split(separator: "/", omittingEmptySubsequences: true) {
            switch part {
            case ".": continue
            case "..": _ = parts.popLast()
            default: parts.append(part)
            }
        }
        let result = "/" + parts.joined(separator: "/")
        if let bad = result.first(where: { !allowed.contains($0) }) {
            let named = bad.isWhitespace ? "whitespace"
                : bad.isASCII && !(bad.asciiValue! < 0x20 || bad.asciiValue! == 0x7F) ? "'\(bad)'"
                : bad.unicodeScalars.map { "U+" + String($0.value, radix: 16, uppercase: true) }.joined(separator: " ")
            throw TorTestnetError.invalidDirectory(
                path: path, reason: "it contains \(named); the path is written unquoted into torrc, shell and TOML lines, "
                    + "so only letters, digits and / . _ + , : @ % = - are allowed")
        }
        guard parts.count > 0 else {
            throw TorTestnetError.invalidDirectory(path: path, reason: "the network needs a folder of its own, not /")
        }
        guard result.utf8.count <= maximumLength else {
            throw TorTestnetError.invalidDirectory(path: path, reason: "longer than \(maximumLength) bytes")
        }
        return result
    }
}
