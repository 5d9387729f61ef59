import Foundation

// Commands from the controller to tor (control-spec 2.2, 3).
//
//     Command      = Keyword OptArguments CRLF
//     OptArguments = [ SP *(SP / VCHAR) ]
//
// Every builder validates what it puts on the line: a CR, LF or NUL inside an argument would end the
// command early and let the rest run as a second command, so they are refused, never escaped.

/// A command line ready to write: `bytes` ends in CRLF.
public struct TorCommand: Sendable, Equatable, CustomStringConvertible {
    /// The command keyword ("GETINFO").
    public let keyword: String
    /// The encoded arguments, each already quoted where needed.
    public let arguments: [String]
    /// True for commands that carry a secret (AUTHENTICATE): `description` hides the arguments.
    public let isSensitive: Bool

    /// Builds a command from already-encoded arguments, refusing control characters anywhere.
    public init(keyword: String, arguments: [String] = [], isSensitive: Bool = false) throws {
        // Keyword = 1*ALPHA in the grammar; tor's own keywords also use "_" (ADD_ONION).
        guard !keyword.isEmpty, keyword.utf8.allSatisfy({ Self.isAlpha($0) || $0 == UInt8(ascii: "_") }) else {
            throw TorCommandError.invalidKeyword(keyword)
        }
        for argument in arguments {
            try Self.refuseControlCharacters(argument, command: keyword, field: "argument",
                                             shown: isSensitive ? nil : argument)
        }
        self.keyword = keyword
        self.arguments = arguments
        self.isSensitive = isSensitive
    }

    /// The line without CRLF.
    public var line: String { ([keyword] + arguments).joined(separator: " ") }

    /// The bytes to write: the line and CRLF.
    public var bytes: [UInt8] { Array(line.utf8) + [ASCII.cr, ASCII.lf] }

    /// The line for logs; secrets replaced by "[redacted]".
    public var description: String { isSensitive && !arguments.isEmpty ? "\(keyword) [redacted]" : line }

    // MARK: - Builders

    /// `PROTOCOLINFO 1` (control-spec 3.21); allowed once, before authenticating.
    public static func protocolInfo() -> TorCommand {
        try! TorCommand(keyword: "PROTOCOLINFO", arguments: ["1"])
    }

    /// `AUTHCHALLENGE SAFECOOKIE <client nonce in hex>` (control-spec 3.24).
    public static func authChallenge(clientNonce: [UInt8]) throws -> TorCommand {
        guard !clientNonce.isEmpty else {
            throw TorCommandError.invalidValue(command: "AUTHCHALLENGE", field: "client nonce", reason: "is empty")
        }
        return try TorCommand(keyword: "AUTHCHALLENGE", arguments: ["SAFECOOKIE", Hex.encode(clientNonce)])
    }

    /// `AUTHENTICATE <hex>`: a cookie's contents (COOKIE) or the SAFECOOKIE client hash (control-spec 3.5).
    public static func authenticate(token: [UInt8]) -> TorCommand {
        try! TorCommand(keyword: "AUTHENTICATE", arguments: [Hex.encode(token)], isSensitive: true)
    }

    /// `AUTHENTICATE "<password>"` for HASHEDPASSWORD (control-spec 3.5, QuotedString).
    public static func authenticate(password: String) throws -> TorCommand {
        // Tor reads "\r" inside a QuotedString as "r", so line breaks cannot be sent at all.
        try refuseControlCharacters(password, command: "AUTHENTICATE", field: "password", shown: nil)
        return try TorCommand(keyword: "AUTHENTICATE", arguments: [QuotedString.encode(password)], isSensitive: true)
    }

    /// Bare `AUTHENTICATE`, for the NULL method: still required "to prevent some cross-protocol
    /// attacks" (control-spec 3.5).
    public static func authenticate() -> TorCommand {
        try! TorCommand(keyword: "AUTHENTICATE", isSensitive: true)
    }

    /// `GETINFO key...` (control-spec 3.9).
    public static func getInfo(_ keys: [String]) throws -> TorCommand {
        try requireNonEmpty(keys, command: "GETINFO", field: "keys")
        for key in keys { try requireToken(key, command: "GETINFO", field: "key") }
        return try TorCommand(keyword: "GETINFO", arguments: keys)
    }

    /// `GETCONF key...` (control-spec 3.3).
    public static func getConf(_ keys: [String]) throws -> TorCommand {
        try requireNonEmpty(keys, command: "GETCONF", field: "keys")
        for key in keys { try requireConfigKey(key, command: "GETCONF") }
        return try TorCommand(keyword: "GETCONF", arguments: keys)
    }

    /// `SETCONF key="value"...` (control-spec 3.1); a nil value resets the option to 0/NULL.
    /// Values are always sent as QuotedStrings, so spaces and quotes in them are safe.
    public static func setConf(_ settings: [(key: String, value: String?)]) throws -> TorCommand {
        try configCommand("SETCONF", settings)
    }

    /// `RESETCONF key[="value"]...` (control-spec 3.2): back to the default (e.g. `__OwningControllerProcess`).
    public static func resetConf(_ settings: [(key: String, value: String?)]) throws -> TorCommand {
        try configCommand("RESETCONF", settings)
    }

    /// `SETEVENTS code...` (control-spec 3.4); an empty list turns all events off.
    public static func setEvents(_ events: [String]) throws -> TorCommand {
        for event in events {
            // EventCode = 1*(ALPHA / "_")
            guard !event.isEmpty, event.utf8.allSatisfy({ isAlpha($0) || $0 == UInt8(ascii: "_") }) else {
                throw TorCommandError.invalidValue(command: "SETEVENTS", field: "event \"\(excerpt(event))\"",
                                                   reason: "must be letters and \"_\" only")
            }
        }
        return try TorCommand(keyword: "SETEVENTS", arguments: events)
    }

    /// `ADD_ONION` (control-spec 3.27) for a v3 onion service.
    public static func addOnion(key: OnionServiceKey, flags: [AddOnionFlag] = [], maxStreams: Int? = nil,
                                ports: [OnionPort], clientAuthV3: [String] = []) throws -> TorCommand {
        var arguments = [key.argument]
        if case let .ed25519V3(blob) = key {
            guard !blob.isEmpty, blob.utf8.allSatisfy(Base64Alphabet.contains) else {
                throw TorCommandError.invalidValue(command: "ADD_ONION", field: "ED25519-V3 key",
                                                   reason: "must be base64 without whitespace")
            }
        }
        if !flags.isEmpty {
            arguments.append("Flags=" + flags.map(\.rawValue).joined(separator: ","))
        }
        if let maxStreams {
            guard (0...65535).contains(maxStreams) else {
                throw TorCommandError.invalidValue(command: "ADD_ONION", field: "MaxStreams",
                                                   reason: "\(maxStreams) is outside 0...65535")
            }
            arguments.append("MaxStreams=\(maxStreams)")
        }
        try requireNonEmpty(ports, command: "ADD_ONION", field: "Port")
        for port in ports {
            guard port.virtualPort > 0 else {
                throw TorCommandError.invalidValue(command: "ADD_ONION", field: "Port", reason: "virtual port 0 is not a port")
            }
            if let target = port.target {
                try requireToken(target, command: "ADD_ONION", field: "Port target")
                arguments.append("Port=\(port.virtualPort),\(target)")
            } else {
                arguments.append("Port=\(port.virtualPort)")
            }
        }
        for clientKey in clientAuthV3 {
            // V3Key: base32 x25519 public key (control-spec 3.27, rend-spec-v3 G.1.2).
            guard !clientKey.isEmpty, clientKey.utf8.allSatisfy(Base32Alphabet.contains) else {
                throw TorCommandError.invalidValue(command: "ADD_ONION", field: "ClientAuthV3 key \"\(excerpt(clientKey))\"",
                                                   reason: "must be base32 (A-Z, 2-7)")
            }
            arguments.append("ClientAuthV3=\(clientKey)")
        }
        return try TorCommand(keyword: "ADD_ONION", arguments: arguments, isSensitive: key.isSecret)
    }

    /// `DEL_ONION <ServiceID>` (control-spec 3.28): the address without ".onion".
    public static func delOnion(serviceID: String) throws -> TorCommand {
        try requireServiceID(serviceID, command: "DEL_ONION")
        return try TorCommand(keyword: "DEL_ONION", arguments: [serviceID])
    }

    /// `ONION_CLIENT_AUTH_ADD <address> x25519:<base64 private key> [ClientName=..] [Flags=Permanent]`
    /// (control-spec 3.30).
    public static func onionClientAuthAdd(serviceID: String, x25519PrivateKey: [UInt8], clientName: String? = nil,
                                          permanent: Bool = false) throws -> TorCommand {
        try requireServiceID(serviceID, command: "ONION_CLIENT_AUTH_ADD")
        guard x25519PrivateKey.count == 32 else {
            throw TorCommandError.invalidValue(command: "ONION_CLIENT_AUTH_ADD", field: "x25519 private key",
                                               reason: "has \(x25519PrivateKey.count) bytes, needs 32")
        }
        var arguments = [serviceID, "x25519:" + Data(x25519PrivateKey).base64EncodedString()]
        if let clientName {
            try requireToken(clientName, command: "ONION_CLIENT_AUTH_ADD", field: "ClientName")
            arguments.append("ClientName=\(clientName)")
        }
        if permanent { arguments.append("Flags=Permanent") }
        return try TorCommand(keyword: "ONION_CLIENT_AUTH_ADD", arguments: arguments, isSensitive: true)
    }

    /// `SIGNAL <name>` (control-spec 3.7).
    public static func signal(_ signal: TorSignal) -> TorCommand {
        try! TorCommand(keyword: "SIGNAL", arguments: [signal.rawValue])
    }

    /// `TAKEOWNERSHIP` (control-spec 3.23): tor exits when this connection closes.
    public static func takeOwnership() -> TorCommand { try! TorCommand(keyword: "TAKEOWNERSHIP") }

    /// `QUIT` (control-spec 3.18).
    public static func quit() -> TorCommand { try! TorCommand(keyword: "QUIT") }

    // MARK: - Validation

    private static func configCommand(_ keyword: String, _ settings: [(key: String, value: String?)]) throws -> TorCommand {
        try requireNonEmpty(settings, command: keyword, field: "settings")
        var arguments: [String] = []
        for (key, value) in settings {
            try requireConfigKey(key, command: keyword)
            if let value {
                try refuseControlCharacters(value, command: keyword, field: "value of \(key)", shown: value)
                arguments.append(key + "=" + QuotedString.encode(value))
            } else {
                arguments.append(key)
            }
        }
        return try TorCommand(keyword: keyword, arguments: arguments)
    }

    static func isAlpha(_ b: UInt8) -> Bool { (0x41...0x5A).contains(b) || (0x61...0x7A).contains(b) }

    /// Refuses C0 controls (CR, LF, NUL among them) and DEL. `shown` is what the error may quote;
    /// nil for secrets.
    static func refuseControlCharacters(_ value: String, command: String, field: String, shown: String?) throws {
        if let bad = value.utf8.first(where: { $0 < 0x20 || $0 == 0x7F }) {
            throw TorCommandError.forbiddenCharacter(command: command, field: field, byte: bad,
                                                     value: shown.map { excerpt($0) })
        }
    }

    /// An unquoted argument: visible ASCII only, no spaces or quotes (VCHAR, control-spec 2.2).
    static func requireToken(_ value: String, command: String, field: String) throws {
        try refuseControlCharacters(value, command: command, field: field, shown: value)
        guard !value.isEmpty else {
            throw TorCommandError.invalidValue(command: command, field: field, reason: "is empty")
        }
        guard value.utf8.allSatisfy({ (0x21...0x7E).contains($0) && $0 != ASCII.quote }) else {
            throw TorCommandError.invalidValue(command: command, field: "\(field) \"\(excerpt(value))\"",
                                               reason: "must be visible ASCII without spaces or quotes")
        }
    }

    static func requireConfigKey(_ key: String, command: String) throws {
        try requireToken(key, command: command, field: "option")
        guard !key.contains("=") else {
            throw TorCommandError.invalidValue(command: command, field: "option \"\(excerpt(key))\"", reason: "must not contain \"=\"")
        }
    }

    /// A v3 onion address without ".onion": 56 base32 characters (control-spec 3.30 HSAddress).
    static func requireServiceID(_ id: String, command: String) throws {
        try requireToken(id, command: command, field: "service id")
        guard id.utf8.count == 56, id.utf8.allSatisfy(Base32Alphabet.contains) else {
            let hint = id.hasSuffix(".onion") ? " (drop the \".onion\" suffix)" : ""
            throw TorCommandError.invalidValue(command: command, field: "service id \"\(excerpt(id))\"",
                                               reason: "must be a v3 onion address of 56 base32 characters\(hint)")
        }
    }

    static func requireNonEmpty<C: Collection>(_ values: C, command: String, field: String) throws {
        guard !values.isEmpty else {
            throw TorCommandError.invalidValue(command: command, field: field, reason: "at least one is required")
        }
    }
}

/// The key part of ADD_ONION: `KeyType ":" KeyBlob` (control-spec 3.27).
public enum OnionServiceKey: Sendable, Equatable {
    /// `NEW:ED25519-V3`: tor generates the key (and returns it unless `DiscardPK`).
    case newED25519V3
    /// `ED25519-V3:<base64>`: a key tor returned earlier (64-byte expanded secret key in base64).
    case ed25519V3(base64: String)

    var argument: String {
        switch self {
        case .newED25519V3: return "NEW:ED25519-V3"
        case let .ed25519V3(blob): return "ED25519-V3:" + blob
        }
    }

    var isSecret: Bool { if case .ed25519V3 = self { return true } else { return false } }
}

/// ADD_ONION flags (control-spec 3.27).
public enum AddOnionFlag: String, Sendable, CaseIterable {
    case discardPK = "DiscardPK"
    case detach = "Detach"
    case v3Auth = "V3Auth"
    case nonAnonymous = "NonAnonymous"
    case maxStreamsCloseCircuit = "MaxStreamsCloseCircuit"
}

/// `Port=VirtPort[,Target]` of ADD_ONION; target as in HiddenServicePort ("127.0.0.1:7000", "unix:/path").
public struct OnionPort: Sendable, Equatable {
    public var virtualPort: UInt16
    public var target: String?

    public init(virtualPort: UInt16, target: String? = nil) {
        self.virtualPort = virtualPort
        self.target = target
    }
}

/// SIGNAL names (control-spec 3.7).
public enum TorSignal: String, Sendable, CaseIterable {
    case reload = "RELOAD"
    case shutdown = "SHUTDOWN"
    case dump = "DUMP"
    case debug = "DEBUG"
    case halt = "HALT"
    case newnym = "NEWNYM"
    case clearDNSCache = "CLEARDNSCACHE"
    case heartbeat = "HEARTBEAT"
    case active = "ACTIVE"
    case dormant = "DORMANT"
}

/// A command could not be encoded safely.
public enum TorCommandError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidKeyword(String)
    /// A control character (CR, LF, NUL, ...) would break the command line. `value` is nil for secrets.
    case forbiddenCharacter(command: String, field: String, byte: UInt8, value: String?)
    case invalidValue(command: String, field: String, reason: String)

    public var description: String {
        switch self {
        case let .invalidKeyword(keyword):
            return "\"\(excerpt(keyword))\" is not a tor control command keyword (letters and \"_\" only)"
        case let .forbiddenCharacter(command, field, byte, value):
            let name: String
            switch byte {
            case ASCII.cr: name = "CR"
            case ASCII.lf: name = "LF"
            case 0: name = "NUL"
            default: name = "control character 0x" + String(byte, radix: 16).leftPadded(2)
            }
            let shown = value.map { " \"\($0)\"" } ?? ""
            return "cannot send \(command): \(field)\(shown) contains \(name), which the tor control protocol cannot carry"
        case let .invalidValue(command, field, reason):
            return "cannot send \(command): \(field) \(reason)"
        }
    }
}

enum Hex {
    static func encode(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func decode(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count / 2)
        var i = 0
        while i < chars.count {
            guard let hi = nibble(chars[i]), let lo = nibble(chars[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x41...0x46: return c - 0x41 + 10
        case 0x61...0x66: return c - 0x61 + 10
        default: return nil
        }
    }
}

enum Base64Alphabet {
    static func contains(_ c: UInt8) -> Bool {
        (0x41...0x5A).contains(c) || (0x61...0x7A).contains(c) || (0x30...0x39).contains(c)
            || c == UInt8(ascii: "+") || c == UInt8(ascii: "/") || c == UInt8(ascii: "=")
    }
}

enum Base32Alphabet {
    /// RFC 4648 base32, either case (tor prints onion addresses in lower case).
    static func contains(_ c: UInt8) -> Bool {
        (0x41...0x5A).contains(c) || (0x61...0x7A).contains(c) || (0x32...0x37).contains(c)
    }
}
