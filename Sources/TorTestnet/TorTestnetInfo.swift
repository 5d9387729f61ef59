/// One relay of the network as a run configured it: its ports and identity.
public struct TestnetRelay: Sendable, Codable, Equatable {
    public let name: String
    public let kind: TestnetNodeKind
    public let orPort: Int
    /// Authorities only.
    public let dirPort: Int?
    /// RSA identity fingerprint, 40 upper-case hex digits (the node's `fingerprint` file).
    public let fingerprint: String
    /// Authorities only: the authority certificate's identity fingerprint (dir-spec 3.1).
    public let v3ident: String?

    public init(name: String, kind: TestnetNodeKind, orPort: Int, dirPort: Int?, fingerprint: String, v3ident: String?) {
        self.name = name
        self.kind = kind
        self.orPort = orPort
        self.dirPort = dirPort
        self.fingerprint = fingerprint
        self.v3ident = v3ident
    }

    /// The torrc line that makes a tor trust this authority, and only the authorities so named
    /// (tor-manual DirAuthority: naming any replaces the built-in public ones). nil for relays.
    public var dirAuthorityLine: String? {
        guard kind == .authority, let dirPort, let v3ident else { return nil }
        return "DirAuthority \(name) orport=\(orPort) no-v2 v3ident=\(v3ident) 127.0.0.1:\(dirPort) \(fingerprint)"
    }
}

/// What a running network offers its users: the client's SocksPort and ControlPort, the onion
/// host's ControlPort, cookie files, the authorities, and the torrc fragment for a gateway's own
/// tor. Written by `up` into `DIR/ports.env` and read back by `TorTestnet.info()`.
public struct TorTestnetInfo: Sendable, Codable, Equatable {
    public let directory: String
    public let clientSocksPort: Int
    public let clientControlPort: Int
    public let onionHostControlPort: Int
    /// Every relay in layout order: the three authorities, two middle relays, the exit.
    public let relays: [TestnetRelay]

    public var clientCookieFile: String { paths.cookie(TestnetLayout.client.name) }
    public var onionHostCookieFile: String { paths.cookie(TestnetLayout.onionHost.name) }
    public var gatewayTorrcPath: String { paths.gatewayTorrc }
    public var authorities: [TestnetRelay] { relays.filter { $0.kind == .authority } }
    public var exit: TestnetRelay { relays.first { $0.kind == .exit }! }
    public var paths: TestnetPaths { TestnetPaths(directory: directory) }

    private enum CodingKeys: String, CodingKey {
        case directory, clientSocksPort, clientControlPort, onionHostControlPort, relays
    }

    /// Lays the network out on `ports` (`TestnetLayout.portCount` distinct TCP ports), in layout
    /// order: ORPort and DirPort of each authority, ORPort of each relay, then the client's
    /// SocksPort and ControlPort and the onion host's ControlPort.
    /// - Parameters:
    ///   - fingerprints: node name → RSA identity fingerprint, for every relay node.
    ///   - v3idents: authority name → certificate identity fingerprint.
    public init(directory: String, ports: [Int], fingerprints: [String: String], v3idents: [String: String]) throws {
        guard ports.count == TestnetLayout.portCount else {
            throw TestnetParseError("\(ports.count) ports given, the network needs \(TestnetLayout.portCount)")
        }
        var next = ports.makeIterator()
        var relays: [TestnetRelay] = []
        for node in TestnetLayout.nodes where node.isRelay {
            let orPort = next.next()!
            let dirPort = node.kind == .authority ? next.next()! : nil
            guard let fingerprint = fingerprints[node.name], TestnetFiles.isFingerprint(fingerprint) else {
                throw TestnetParseError("no valid fingerprint for \(node.name)")
            }
            var v3ident: String?
            if node.kind == .authority {
                guard let ident = v3idents[node.name], TestnetFiles.isFingerprint(ident) else {
                    throw TestnetParseError("no valid v3ident for \(node.name)")
                }
                v3ident = ident
            }
            relays.append(TestnetRelay(name: node.name, kind: node.kind, orPort: orPort, dirPort: dirPort,
                                       fingerprint: fingerprint, v3ident: v3ident))
        }
        try self.init(directory: directory, clientSocksPort: next.next()!, clientControlPort: next.next()!,
                      onionHostControlPort: next.next()!, relays: relays)
    }

    init(directory: String, clientSocksPort: Int, clientControlPort: Int, onionHostControlPort: Int, relays: [TestnetRelay]) throws {
        self.directory = directory
        self.clientSocksPort = clientSocksPort
        self.clientControlPort = clientControlPort
        self.onionHostControlPort = onionHostControlPort
        self.relays = relays
        let all = [clientSocksPort, clientControlPort, onionHostControlPort] + relays.flatMap { [$0.orPort] + ($0.dirPort.map { [$0] } ?? []) }
        if let bad = all.first(where: { !(1...65535).contains($0) }) { throw TestnetParseError("port \(bad) is not in 1...65535") }
        guard Set(all).count == all.count else { throw TestnetParseError("two nodes were given the same port") }
    }

    // MARK: - What users get

    /// `KEY=VALUE` lines for `eval` in shell scripts (the keys the old scripts/tor-testnet.sh
    /// printed, plus TOR_GATEWAY_TORRC). Values need no quoting: see `TestnetDirectory`.
    public func environmentLines() -> String {
        [
            "TOR_TESTNET_DIR=\(directory)",
            "TOR_SOCKS_PORT=\(clientSocksPort)",
            "TOR_CONTROL_PORT=\(clientControlPort)",
            "TOR_COOKIE=\(clientCookieFile)",
            "ONION_CONTROL_PORT=\(onionHostControlPort)",
            "ONION_COOKIE=\(onionHostCookieFile)",
            "TOR_GATEWAY_TORRC=\(gatewayTorrcPath)",
        ].joined(separator: "\n") + "\n"
    }

    /// The `[tor]` table a gateway configuration needs to use this network (docs/configuration.md).
    public func tomlSnippet() -> String {
        """
        # The private Tor network in \(directory) (`sotto testnet tor up`).
        # A gateway whose tor Sotto starts itself joins it through this torrc fragment
        # (restart the gateway after every 'up': the network's ports change):
        [tor]
        torrc_include = "\(gatewayTorrcPath)"
        # Or, instead of torrc_include, use one of the network's own tors as an external tor.
        # Entry gateway, the client tor:
        # control = "127.0.0.1:\(clientControlPort)"
        # cookie_file = "\(clientCookieFile)"
        # socks = "127.0.0.1:\(clientSocksPort)"
        # Exit gateway, the onion host tor:
        # control = "127.0.0.1:\(onionHostControlPort)"
        # cookie_file = "\(onionHostCookieFile)"

        """
    }

    // MARK: - ports.env

    static func nodeKey(_ name: String, _ field: String) -> String { "TOR_TESTNET_\(name.uppercased())_\(field)" }

    /// The whole of `DIR/ports.env`: the environment lines, then every relay's ports and identity.
    public func portsFileText() -> String {
        var lines = ["# Written by `sotto testnet tor up` on every start: the ports of the current run."]
        lines.append(environmentLines().trimmingTrailingNewlines())
        for relay in relays {
            lines.append("\(Self.nodeKey(relay.name, "ORPORT"))=\(relay.orPort)")
            if let dirPort = relay.dirPort { lines.append("\(Self.nodeKey(relay.name, "DIRPORT"))=\(dirPort)") }
            lines.append("\(Self.nodeKey(relay.name, "FINGERPRINT"))=\(relay.fingerprint)")
            if let v3ident = relay.v3ident { lines.append("\(Self.nodeKey(relay.name, "V3IDENT"))=\(v3ident)") }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Reads `portsFileText()` back: `KEY=VALUE` lines, `#` comments and blank lines. Unknown keys are
    /// ignored; a repeated key, a line without `=`, a missing key or a bad value is an error.
    public init(portsFile text: String) throws {
        try TestnetFiles.checkSize(text)
        var values: [String: (value: String, line: Int)] = [:]
        for (index, raw) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let line = raw.trimmingCharacters(in: " \t")
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let equals = line.firstIndex(of: "=") else {
                throw TestnetParseError(line: index + 1, "expected KEY=VALUE, found '\(line.prefix(60))'")
            }
            let key = String(line[..<equals])
            guard !key.isEmpty, key.utf8.allSatisfy({ ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5F }) else {
                throw TestnetParseError(line: index + 1, "'\(key.prefix(60))' is no KEY (A-Z, 0-9, _)")
            }
            guard values[key] == nil else { throw TestnetParseError(line: index + 1, "\(key) appears twice") }
            values[key] = (String(line[line.index(after: equals)...]), index + 1)
        }
        func string(_ key: String) throws -> (String, Int) {
            guard let entry = values[key] else { throw TestnetParseError("\(key) is missing") }
            return entry
        }
        func port(_ key: String) throws -> Int {
            let (value, line) = try string(key)
            guard (1...5).contains(value.utf8.count), value.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                  let port = Int(value), (1...65535).contains(port) else {
                throw TestnetParseError(line: line, "\(key)=\(value.prefix(60)) is no TCP port (1-65535)")
            }
            return port
        }
        func fingerprint(_ key: String) throws -> String {
            let (value, line) = try string(key)
            guard TestnetFiles.isFingerprint(value) else {
                throw TestnetParseError(line: line, "\(key) is not 40 upper-case hex digits")
            }
            return value
        }
        let (written, dirLine) = try string("TOR_TESTNET_DIR")
        let directory: String
        do {
            directory = try TestnetDirectory.normalize(written, currentDirectory: "/")
        } catch {
            throw TestnetParseError(line: dirLine, "TOR_TESTNET_DIR: \(error)")
        }
        guard directory == written else {
            throw TestnetParseError(line: dirLine, "TOR_TESTNET_DIR=\(written.prefix(80)) is not an absolute, normalised path")
        }
        var relays: [TestnetRelay] = []
        for node in TestnetLayout.nodes where node.isRelay {
            let authority = node.kind == .authority
            relays.append(TestnetRelay(
                name: node.name, kind: node.kind, orPort: try port(Self.nodeKey(node.name, "ORPORT")),
                dirPort: authority ? try port(Self.nodeKey(node.name, "DIRPORT")) : nil,
                fingerprint: try fingerprint(Self.nodeKey(node.name, "FINGERPRINT")),
                v3ident: authority ? try fingerprint(Self.nodeKey(node.name, "V3IDENT")) : nil))
        }
        try self.init(directory: directory, clientSocksPort: try port("TOR_SOCKS_PORT"),
                      clientControlPort: try port("TOR_CONTROL_PORT"), onionHostControlPort: try port("ONION_CONTROL_PORT"),
                      relays: relays)
    }
}

extension Substring {
    func trimmingCharacters(in set: String) -> Substring {
        var s = self
        while let first = s.first, set.contains(first) { s = s.dropFirst() }
        while let last = s.last, set.contains(last) { s = s.dropLast() }
        return s
    }
}
