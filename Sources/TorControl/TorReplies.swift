// Typed readings of the replies Sotto relies on. Each follows the reply grammar of its command and,
// per control-spec 1.1, ignores lines and arguments it does not know.

/// Authentication methods in PROTOCOLINFO's AUTH line (control-spec 3.21).
public enum TorAuthMethod: Sendable, Hashable, CustomStringConvertible {
    case null
    case hashedPassword
    case cookie
    case safeCookie
    /// A method this client does not know (tolerated, never chosen).
    case other(String)

    public init(_ name: String) {
        switch name {
        case "NULL": self = .null
        case "HASHEDPASSWORD": self = .hashedPassword
        case "COOKIE": self = .cookie
        case "SAFECOOKIE": self = .safeCookie
        default: self = .other(name)
        }
    }

    public var description: String {
        switch self {
        case .null: return "NULL"
        case .hashedPassword: return "HASHEDPASSWORD"
        case .cookie: return "COOKIE"
        case .safeCookie: return "SAFECOOKIE"
        case let .other(name): return name
        }
    }
}

/// The PROTOCOLINFO reply (control-spec 3.21):
///
///     250-PROTOCOLINFO 1
///     250-AUTH METHODS=COOKIE,SAFECOOKIE COOKIEFILE="/var/lib/tor/control_auth_cookie"
///     250-VERSION Tor="0.4.9.1"
///     250 OK
public struct ProtocolInfo: Sendable, Equatable {
    public var protocolInfoVersion: Int
    public var authMethods: [TorAuthMethod]
    /// AuthCookieFile values, escapes decoded; the spec allows several, all holding the same cookie.
    public var cookieFiles: [String]
    public var torVersion: String?

    public var cookieFile: String? { cookieFiles.first }

    public init(protocolInfoVersion: Int = 1, authMethods: [TorAuthMethod], cookieFiles: [String] = [], torVersion: String? = nil) {
        self.protocolInfoVersion = protocolInfoVersion
        self.authMethods = authMethods
        self.cookieFiles = cookieFiles
        self.torVersion = torVersion
    }

    public init(reply: TorReply) throws {
        try reply.requireSuccess("PROTOCOLINFO")
        func malformed(_ reason: String) -> TorProtocolError {
            .malformedReply(command: "PROTOCOLINFO", reason: reason, reply: reply.description)
        }
        var version: Int?
        var methods: [TorAuthMethod]?
        var files: [String] = []
        var torVersion: String?
        for line in reply.lines {
            let args = try line.arguments()
            guard let keyword = args.all.first, keyword.key == nil else { continue }
            switch keyword.value {
            case "PROTOCOLINFO":
                version = args.positional.dropFirst().first.flatMap { Int($0) }
            case "AUTH":
                guard let list = args["METHODS"] else { throw malformed("AUTH line has no METHODS=") }
                methods = list.split(separator: ",").map { TorAuthMethod(String($0)) }
                files = args.all.filter { $0.key == "COOKIEFILE" }.map(\.value)
            case "VERSION":
                torVersion = args["Tor"]
            default:
                continue  // OtherLine: "controllers MUST ignore InfoLines with keywords they do not recognize"
            }
        }
        guard let version else { throw malformed("no \"PROTOCOLINFO <version>\" line") }
        guard let methods else { throw malformed("no AUTH line") }
        self.init(protocolInfoVersion: version, authMethods: methods, cookieFiles: files, torVersion: torVersion)
    }
}

/// The AUTHCHALLENGE reply (control-spec 3.24):
/// `250 AUTHCHALLENGE SERVERHASH=<64 hex> SERVERNONCE=<64 hex>`.
public struct AuthChallenge: Sendable, Equatable {
    public var serverHash: [UInt8]
    public var serverNonce: [UInt8]

    public init(serverHash: [UInt8], serverNonce: [UInt8]) {
        self.serverHash = serverHash
        self.serverNonce = serverNonce
    }

    public init(reply: TorReply) throws {
        try reply.requireSuccess("AUTHCHALLENGE")
        func malformed(_ reason: String) -> TorProtocolError {
            .malformedReply(command: "AUTHCHALLENGE", reason: reason, reply: reply.description)
        }
        guard let line = reply.lines.first(where: { $0.text.hasPrefix("AUTHCHALLENGE ") }) else {
            throw malformed("no AUTHCHALLENGE line")
        }
        let args = try line.arguments()
        guard let hashHex = args["SERVERHASH"] else { throw malformed("no SERVERHASH=") }
        guard let nonceHex = args["SERVERNONCE"] else { throw malformed("no SERVERNONCE=") }
        // ServerHash = 64*64HEXDIG; ServerNonce = 64*64HEXDIG ("ServerNonce MUST be 32 bytes long").
        guard hashHex.utf8.count == 64, let hash = Hex.decode(hashHex) else { throw malformed("SERVERHASH is not 64 hex digits") }
        guard nonceHex.utf8.count == 64, let nonce = Hex.decode(nonceHex) else { throw malformed("SERVERNONCE is not 64 hex digits") }
        self.init(serverHash: hash, serverNonce: nonce)
    }
}

/// The ADD_ONION reply (control-spec 3.27):
///
///     250-ServiceID=<56 base32>
///     250-PrivateKey=ED25519-V3:<base64>        (only for NEW keys without DiscardPK)
///     250-ClientAuthV3=<base32>                 (zero or more)
///     250 OK
public struct AddOnionResult: Sendable, Equatable {
    public struct PrivateKey: Sendable, Equatable {
        /// "ED25519-V3" (or "RSA1024" from an old v2 service).
        public var keyType: String
        /// The base64 blob; pass back as `OnionServiceKey.ed25519V3(base64:)`.
        public var blob: String
    }

    /// The onion address without ".onion".
    public var serviceID: String
    public var privateKey: PrivateKey?
    /// v3 client authorization keys echoed by tor.
    public var clientAuthV3: [String]
    /// v2 `ClientAuth=name:blob` lines (old tors only).
    public var clientAuth: [String]

    public init(reply: TorReply) throws {
        try reply.requireSuccess("ADD_ONION")
        var serviceID: String?
        var privateKey: PrivateKey?
        var v3: [String] = []
        var v2: [String] = []
        for line in reply.lines {
            guard let (key, value) = line.keyValue else { continue }
            switch key {
            case "ServiceID": serviceID = value
            case "PrivateKey":
                guard let colon = value.firstIndex(of: ":") else {
                    throw TorProtocolError.malformedReply(command: "ADD_ONION", reason: "PrivateKey has no \"KeyType:\"",
                                                          reply: "PrivateKey=[redacted]")
                }
                privateKey = PrivateKey(keyType: String(value[..<colon]), blob: String(value[value.index(after: colon)...]))
            case "ClientAuthV3": v3.append(value)
            case "ClientAuth": v2.append(value)
            default: continue
            }
        }
        guard let serviceID, !serviceID.isEmpty else {
            // The reply may hold a private key: never quote it in the error.
            throw TorProtocolError.malformedReply(command: "ADD_ONION", reason: "no ServiceID= line",
                                                  reply: reply.lines.map { $0.keyValue?.key ?? $0.text }.joined(separator: "; "))
        }
        self.serviceID = serviceID
        self.privateKey = privateKey
        self.clientAuthV3 = v3
        self.clientAuth = v2
    }
}

/// The GETINFO reply (control-spec 3.9): one `key=value` line per key, or `key=` with a data block,
/// then `250 OK`.
public struct GetInfoResult: Sendable, Equatable {
    public var entries: [(key: String, value: String)]

    public subscript(key: String) -> String? {
        entries.first { $0.key == key }?.value
    }

    public init(reply: TorReply) throws {
        try reply.requireSuccess("GETINFO")
        var entries: [(key: String, value: String)] = []
        for line in reply.lines {
            if line.separator == .end, line.text == "OK" { continue }
            guard let (key, value) = line.keyValue else {
                throw TorProtocolError.malformedReply(command: "GETINFO", reason: "line \"\(excerpt(line.text))\" is not key=value",
                                                      reply: reply.description)
            }
            entries.append((key, line.separator == .data ? (line.data ?? "") : value))
        }
        self.entries = entries
    }

    public static func == (lhs: GetInfoResult, rhs: GetInfoResult) -> Bool {
        lhs.entries.map(\.key) == rhs.entries.map(\.key) && lhs.entries.map(\.value) == rhs.entries.map(\.value)
    }
}

/// The GETCONF reply (control-spec 3.3): `250 keyword=value` per value, or `250 keyword` for a
/// default that differs from an empty string. Options with several values repeat their keyword.
public struct GetConfResult: Sendable, Equatable {
    public var entries: [(key: String, value: String?)]

    /// Every value of `key`, in order (keywords compare case-insensitively, as tor's options do).
    public func values(_ key: String) -> [String?] {
        entries.filter { $0.key.lowercased() == key.lowercased() }.map(\.value)
    }

    public init(reply: TorReply) throws {
        try reply.requireSuccess("GETCONF")
        entries = try reply.lines.map { line in
            guard let (key, value) = line.keyValue else { return (line.text, nil) }
            // "Value may be a raw value or a quoted string."
            if value.hasPrefix("\"") { return (key, try QuotedString.decode(value)) }
            return (key, value)
        }
    }

    public static func == (lhs: GetConfResult, rhs: GetConfResult) -> Bool {
        lhs.entries.map(\.key) == rhs.entries.map(\.key) && lhs.entries.map(\.value) == rhs.entries.map(\.value)
    }
}
