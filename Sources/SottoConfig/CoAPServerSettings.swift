import TOMLKit

/// `[coap_server]`: what `sotto coap-server` runs (docs/coap-server.md).
///
/// ```toml
/// [coap_server]
/// listen = ["127.0.0.1:5684"]          # DTLS (coaps); default 127.0.0.1:5684
/// plain_listen = []                     # plain CoAP, no security: only when asked for
/// database = "coap-messages.sqlite"     # default: state_dir/coap-messages.sqlite
/// max_envelope_bytes = 65536
///
/// [[coap_server.psk]]
/// identity = "alice"
/// key_file = "alice.psk"                # hex:..., base64:... or text, mode 0600
/// ```
///
/// Keys stay in their files: the settings hold paths, and the server reads the keys.
public struct CoAPServerSettings: Sendable, Equatable {
    public var listen: [HostPort]
    public var plainListen: [HostPort]
    public var psk: [CoAPServerPSK]
    /// Absolute path of the SQLite message store.
    public var database: String
    public var maxEnvelopeBytes: Int
    public var maxEnvelopesPerBox: Int
    public var maxTotalBytes: Int
    public var maxBoxes: Int
    public var defaultTTLSeconds: Int
    public var maxTTLSeconds: Int
    /// Envelopes in one GET response at most.
    public var maxEnvelopesPerResponse: Int

    public static let defaultListen = HostPort(host: "127.0.0.1", port: 5684)
    public static let defaultDatabaseName = "coap-messages.sqlite"

    public init(listen: [HostPort] = [CoAPServerSettings.defaultListen], plainListen: [HostPort] = [], psk: [CoAPServerPSK] = [],
                database: String, maxEnvelopeBytes: Int = 65_536, maxEnvelopesPerBox: Int = 1_000,
                maxTotalBytes: Int = 256 << 20, maxBoxes: Int = 10_000, defaultTTLSeconds: Int = 7 * 86_400,
                maxTTLSeconds: Int = 30 * 86_400, maxEnvelopesPerResponse: Int = 64) {
        self.listen = listen
        self.plainListen = plainListen
        self.psk = psk
        self.database = database
        self.maxEnvelopeBytes = maxEnvelopeBytes
        self.maxEnvelopesPerBox = maxEnvelopesPerBox
        self.maxTotalBytes = maxTotalBytes
        self.maxBoxes = maxBoxes
        self.defaultTTLSeconds = defaultTTLSeconds
        self.maxTTLSeconds = maxTTLSeconds
        self.maxEnvelopesPerResponse = maxEnvelopesPerResponse
    }

    /// Reads only `[coap_server]` (and `state_dir`) of a configuration file, so that
    /// `sotto coap-server --config` takes a file that also describes a gateway, or nothing else.
    public static func load(path: String) throws -> CoAPServerSettings {
        let contents: FileAccess.Contents
        switch FileAccess.readFile(path: path, limit: SottoConfig.maximumFileSize) {
        case .success(let c): contents = c
        case .failure(let failure):
            throw ConfigError(file: path, key: "", message: "cannot read the configuration: \(failure)")
        }
        guard let text = String(validatingUTF8Bytes: contents.bytes) else {
            throw ConfigError(file: path, key: "", message: "not UTF-8 text (TOML files are UTF-8)")
        }
        let document: TOMLTable
        do {
            document = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            let at = error.source.begin
            throw ConfigError(file: path, key: "line \(at.line), column \(at.column)",
                              message: "not valid TOML: " + Redaction.scrubQuoted(error.description))
        }
        let parser = ConfigParser(file: path, baseDirectory: Paths.directory(of: path), home: FileAccess.homeDirectory())
        let top = TableReader(table: document, path: "", displayName: "the top level", file: path)
        let written = try top.string("state_dir") ?? SottoConfig.defaultStateDir
        guard let expanded = Paths.expandTilde(written, home: parser.home) else {
            throw top.error("state_dir", "cannot expand '\(written)'; write the full path")
        }
        let stateDir = Paths.resolve(expanded, against: parser.baseDirectory)
        guard let table = try top.subtable("coap_server") else {
            throw ConfigError(file: path, key: "coap_server", message: "no [coap_server] table: see docs/coap-server.md")
        }
        return try parser.parseCoAPServer(table, stateDir: stateDir)
    }
}

/// One `[[coap_server.psk]]`: an identity and the file holding its key.
public struct CoAPServerPSK: Sendable, Equatable {
    public var identity: String
    public var keyFile: String

    public init(identity: String, keyFile: String) {
        self.identity = identity
        self.keyFile = keyFile
    }
}

extension ConfigParser {
    /// Parses `[coap_server]`; `stateDir` (already resolved) holds the default database.
    func parseCoAPServer(_ table: TOMLTable, stateDir: String) throws -> CoAPServerSettings {
        let r = TableReader(table: table, path: "coap_server", displayName: "[coap_server]", file: file)
        try r.rejectUnknownKeys(allowed: [
            "listen", "plain_listen", "psk", "database", "max_envelope_bytes", "max_envelopes_per_box", "max_total_bytes",
            "max_boxes", "default_ttl_seconds", "max_ttl_seconds", "max_envelopes_per_response",
        ])
        let listen = try coapListen(r, "listen") ?? [CoAPServerSettings.defaultListen]
        let plainListen = try coapListen(r, "plain_listen") ?? []
        guard !listen.isEmpty || !plainListen.isEmpty else {
            throw r.error("listen", "the server needs somewhere to listen: give listen (DTLS) or plain_listen")
        }
        if let clash = Set(listen).intersection(plainListen).first {
            throw r.error("plain_listen", "\(clash) is also in listen; DTLS and plain CoAP need different ports")
        }
        var psk: [CoAPServerPSK] = []
        for (index, entry) in try r.tableArray("psk").enumerated() {
            let p = TableReader(table: entry, path: "coap_server.psk[\(index + 1)]", displayName: "[[coap_server.psk]] #\(index + 1)",
                                file: file)
            try p.rejectUnknownKeys(allowed: ["identity", "key_file"])
            let identity = try p.requiredString("identity")
            // libcoap's limit (COAP_DTLS_MAX_PSK_IDENTITY).
            guard (1...64).contains(identity.utf8.count) else {
                throw p.error("identity", "must be 1 to 64 bytes, got \(identity.utf8.count)")
            }
            if psk.contains(where: { $0.identity == identity }) {
                throw p.error("identity", "identity '\(identity)' is given twice")
            }
            psk.append(CoAPServerPSK(identity: identity, keyFile: try filePath(p, "key_file")))
        }
        if !listen.isEmpty && psk.isEmpty {
            throw r.error("psk", "a DTLS listener needs at least one [[coap_server.psk]] with identity and key_file")
        }
        let database = r.has("database") ? try filePath(r, "database")
            : Paths.resolve(CoAPServerSettings.defaultDatabaseName, against: stateDir)
        let d = CoAPServerSettings(database: database)
        let defaultTTL = try r.int("default_ttl_seconds", in: 1...(365 * 86_400), default: d.defaultTTLSeconds)
        let maxTTL = try r.int("max_ttl_seconds", in: 1...(365 * 86_400), default: max(d.maxTTLSeconds, defaultTTL))
        guard defaultTTL <= maxTTL else {
            throw r.error("default_ttl_seconds", "\(defaultTTL) is more than max_ttl_seconds (\(maxTTL))")
        }
        return CoAPServerSettings(
            listen: listen, plainListen: plainListen, psk: psk, database: database,
            maxEnvelopeBytes: try r.int("max_envelope_bytes", in: 1...(16 << 20), default: d.maxEnvelopeBytes),
            maxEnvelopesPerBox: try r.int("max_envelopes_per_box", in: 1...1_000_000, default: d.maxEnvelopesPerBox),
            maxTotalBytes: try r.int("max_total_bytes", in: 1...(1 << 40), default: d.maxTotalBytes),
            maxBoxes: try r.int("max_boxes", in: 1...1_000_000, default: d.maxBoxes),
            defaultTTLSeconds: defaultTTL, maxTTLSeconds: maxTTL,
            maxEnvelopesPerResponse: try r.int("max_envelopes_per_response", in: 1...4096, default: d.maxEnvelopesPerResponse))
    }

    /// A list of host:port strings; nil when the key is absent.
    private func coapListen(_ r: TableReader, _ key: String) throws -> [HostPort]? {
        guard let texts = try r.stringArray(key) else { return nil }
        var addresses: [HostPort] = []
        for (index, text) in texts.enumerated() {
            do {
                let address = try HostPort.parse(text)
                guard address.isIPAddress else {
                    throw r.error("\(key)[\(index + 1)]", "\(address): write an address, not a name (a name could resolve elsewhere)")
                }
                guard !addresses.contains(address) else { throw r.error("\(key)[\(index + 1)]", "\(address) is listed twice") }
                addresses.append(address)
            } catch let error as HostPort.ParseError {
                throw r.error("\(key)[\(index + 1)]", error.description)
            }
        }
        return addresses
    }
}
