import TOMLKit

/// How a channel's members name themselves in DTLS handshakes (docs/channels.md).
public enum ChannelIdentityMode: String, Sendable, CaseIterable, Equatable {
    case global
    case perChannel = "per-channel"
    case throwaway
}

/// A `[[channel]]`: a group that shares a secret, for private identities and sealed envelopes.
///
/// The description never shows the secret.
public struct ChannelSettings: Sendable, Equatable, CustomStringConvertible, CustomReflectable {
    public var name: String
    /// 32 bytes from `secret` (base64) or `secret_file`.
    public var secret: [UInt8]
    public var identity: ChannelIdentityMode
    public var epochSeconds: Int
    /// The mailbox server, `coaps://HOST[:PORT]` (often a gateway's local forward); nil when the
    /// file only serves a `sotto coap-server`.
    public var server: String?
    /// The name sealed inside this member's envelopes; `sotto msg send --from` overrides it.
    public var sender: String?
    /// How old an envelope may be and still open.
    public var maxMessageAgeSeconds: Int

    public static let defaultEpochSeconds = 3600
    public static let defaultMaxMessageAgeSeconds = 7 * 86_400

    public init(name: String, secret: [UInt8], identity: ChannelIdentityMode = .perChannel,
                epochSeconds: Int = ChannelSettings.defaultEpochSeconds, server: String? = nil, sender: String? = nil,
                maxMessageAgeSeconds: Int = ChannelSettings.defaultMaxMessageAgeSeconds) {
        self.name = name
        self.secret = secret
        self.identity = identity
        self.epochSeconds = epochSeconds
        self.server = server
        self.sender = sender
        self.maxMessageAgeSeconds = maxMessageAgeSeconds
    }

    public var description: String {
        "channel '\(name)' (\(identity.rawValue) identities, \(epochSeconds) s epochs\(server.map { ", server \($0)" } ?? ""))"
    }

    public var customMirror: Mirror { Mirror(self, children: ["channel": description]) }
}

/// `[hopping]`: the CoAP server's DTLS port follows a schedule derived from a shared secret.
public struct HoppingSettings: Sendable, Equatable, CustomStringConvertible, CustomReflectable {
    /// 32 bytes from `secret_file`.
    public var secret: [UInt8]
    public var portRange: ClosedRange<Int>
    public var epochSeconds: Int

    public static let defaultEpochSeconds = 60

    public init(secret: [UInt8], portRange: ClosedRange<Int>, epochSeconds: Int = HoppingSettings.defaultEpochSeconds) {
        self.secret = secret
        self.portRange = portRange
        self.epochSeconds = epochSeconds
    }

    public var description: String {
        "port hopping over \(portRange.lowerBound)-\(portRange.upperBound), \(epochSeconds) s epochs"
    }

    public var customMirror: Mirror { Mirror(self, children: ["hopping": description]) }
}

/// What `parseChannelSection` found, with what the parser must add to its own lists.
struct ChannelSection {
    var channels: [ChannelSettings] = []
    var hopping: HoppingSettings?
    var warnings: [String] = []
    /// Key paths of secrets written inline.
    var inlineSecretKeys: [String] = []
}

extension ConfigParser {
    /// A year: longer epochs and ages are typos.
    static let maximumChannelSeconds = 366 * 86_400
    static let maximumChannels = 4096
    private static let channelKeyFileLimit = 4096

    /// `[[channel]]` and `[hopping]` of the top-level table.
    func parseChannelSection(_ top: TableReader) throws -> ChannelSection {
        var section = ChannelSection()
        let tables = try top.tableArray("channel")
        guard tables.count <= Self.maximumChannels else {
            throw top.error("channel", "\(tables.count) channels; at most \(Self.maximumChannels)")
        }
        var paths: [String] = []
        for (index, table) in tables.enumerated() {
            var r = TableReader(table: table, path: "channel[\(index + 1)]", displayName: "[[channel]] #\(index + 1)",
                                file: file)
            try r.rejectUnknownKeys(allowed: [
                "name", "secret", "secret_file", "identity", "epoch_seconds", "server", "sender", "max_message_age_seconds",
            ])
            let name = try r.requiredString("name")
            try checkChannelName(name, r)
            r.path += " '\(name)'"
            if let first = section.channels.firstIndex(where: { $0.name == name }) {
                throw r.error("name", "duplicate channel name '\(name)' (also \(paths[first]))")
            }
            let secret = try channelSecret(r, inline: "secret", file: "secret_file", section: &section)
            let identity = try r.choice("identity", as: ChannelIdentityMode.self) ?? .perChannel
            let epochSeconds = try r.int("epoch_seconds", in: 1...Self.maximumChannelSeconds,
                                         default: ChannelSettings.defaultEpochSeconds)
            let maxAge = try r.int("max_message_age_seconds", in: 1...Self.maximumChannelSeconds,
                                   default: ChannelSettings.defaultMaxMessageAgeSeconds)
            var server: String?
            if let text = try r.string("server") {
                guard text.hasPrefix("coaps://") || text.hasPrefix("coap://"), text.utf8.count <= 1024,
                      !text.contains(where: { $0 == " " || $0 == "\t" || $0 == "\n" })
                else {
                    throw r.error("server", "expected coaps://HOST[:PORT] (the mailbox server or a local forward to it), "
                        + "got '\(text.prefix(64))'")
                }
                server = text
            }
            var sender: String?
            if let text = try r.string("sender") {
                guard (1...255).contains(text.utf8.count) else {
                    throw r.error("sender", "must be 1 to 255 bytes, got \(text.utf8.count)")
                }
                sender = text
            }
            section.channels.append(ChannelSettings(name: name, secret: secret, identity: identity, epochSeconds: epochSeconds,
                                                    server: server, sender: sender, maxMessageAgeSeconds: maxAge))
            paths.append(r.path)
        }
        if let table = try top.subtable("hopping") {
            section.hopping = try parseHopping(table, section: &section)
        }
        return section
    }

    private func parseHopping(_ table: TOMLTable, section: inout ChannelSection) throws -> HoppingSettings {
        let r = TableReader(table: table, path: "hopping", displayName: "[hopping]", file: file)
        try r.rejectUnknownKeys(allowed: ["secret_file", "range", "epoch_seconds"])
        // A file only: the schedule's secret is shared by the server and every client, and a
        // file is easier to hand out (and keep 0600) than a line to paste.
        guard r.has("secret_file") else { throw r.missing("secret_file") }
        let secret = try channelSecret(r, inline: nil, file: "secret_file", section: &section)
        let text = try r.requiredString("range")
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, let lower = Self.portNumber(parts[0]), let upper = Self.portNumber(parts[1]) else {
            throw r.error("range", "expected FIRST-LAST with ports from 1 to 65535, as in \"20000-20999\", got '\(text)'")
        }
        guard lower <= upper else { throw r.error("range", "the first port \(lower) is above the last \(upper)") }
        let epochSeconds = try r.int("epoch_seconds", in: 1...Self.maximumChannelSeconds,
                                     default: HoppingSettings.defaultEpochSeconds)
        return HoppingSettings(secret: secret, portRange: lower...upper, epochSeconds: epochSeconds)
    }

    private static func portNumber(_ text: Substring) -> Int? {
        guard !text.isEmpty, text.utf8.count <= 5, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
              let port = Int(text), (1...65535).contains(port)
        else { return nil }
        return port
    }

    private func checkChannelName(_ name: String, _ r: TableReader) throws {
        guard !name.isEmpty else { throw r.error("name", "must not be empty") }
        // The channel name goes into key derivations and file names (the replay record).
        guard name.utf8.count <= 64 else { throw r.error("name", "must be at most 64 bytes, got \(name.utf8.count)") }
        let allowed = name.utf8.allSatisfy { b in
            (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39)
                || b == UInt8(ascii: "-") || b == UInt8(ascii: "_")
        }
        guard allowed else { throw r.error("name", "'\(name)' may hold only letters, digits, '-' and '_'") }
    }

    /// A 32-byte secret written inline (base64) or in a file (base64 text, one line). Messages
    /// give lengths, never the secret; a file others may read gets a warning.
    private func channelSecret(_ r: TableReader, inline: String?, file fileKey: String,
                               section: inout ChannelSection) throws -> [UInt8] {
        let hasInline = inline.map(r.has) ?? false
        switch (hasInline, r.has(fileKey)) {
        case (true, true):
            throw r.error(inline!, "give either '\(inline!)' or '\(fileKey)', not both")
        case (false, false):
            throw r.error(inline ?? fileKey, "missing key '\(inline ?? fileKey)'\(inline == nil ? "" : " (or '\(fileKey)')") "
                + "in \(r.displayName); `sotto keygen --channel` makes one")
        case (true, false):
            let text = try r.requiredString(inline!)
            section.inlineSecretKeys.append(r.keyPath(inline!))
            guard let bytes = KeyEncoding.decode32(text) else {
                throw r.error(inline!, Self.secretProblem(text))
            }
            return bytes
        case (false, true):
            let written = try r.requiredString(fileKey)
            guard !written.isEmpty else { throw r.error(fileKey, "must not be empty") }
            guard let expanded = Paths.expandTilde(written, home: home) else {
                throw r.error(fileKey, "only '~' and '~/...' are expanded in '\(written)'")
            }
            let path = Paths.resolve(expanded, against: baseDirectory)
            let contents: FileAccess.Contents
            switch FileAccess.readFile(path: path, limit: Self.channelKeyFileLimit) {
            case .success(let c): contents = c
            case .failure(let failure): throw r.error(fileKey, "cannot read \(path): \(failure)")
            }
            guard let text = String(validatingUTF8Bytes: contents.bytes) else {
                throw r.error(fileKey, "\(path): expected base64 text, got binary data")
            }
            let trimmed = String(text.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
            guard let bytes = KeyEncoding.decode32(trimmed) else {
                throw r.error(fileKey, "\(path): " + Self.secretProblem(trimmed))
            }
            if contents.mode & 0o044 != 0 {
                section.warnings.append("\(self.file): \(r.keyPath(fileKey)): \(path) is readable by group or others "
                    + "(mode \(SottoConfig.octal(contents.mode))); run chmod 600 on it")
            }
            return bytes
        }
    }

    private static func secretProblem(_ text: String) -> String {
        if let bytes = KeyEncoding.decode(text) {
            return "expected a 32-byte secret in base64, got \(bytes.count) bytes"
        }
        return "expected a 32-byte secret in base64 (44 characters, standard alphabet, '=' padded), "
            + "got \(text.count) characters that are not strict base64"
    }
}
