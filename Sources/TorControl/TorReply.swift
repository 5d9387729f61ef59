// Replies from tor to the controller, as values (control-spec 2.3 "Replies from Tor to the controller").

/// One line of a reply: `StatusCode ("-" / "+" / SP) ReplyText CRLF`, plus the data block for `+` lines.
public struct TorReplyLine: Sendable, Equatable, CustomStringConvertible {
    /// The character after the status code; it says where the line sits in its reply.
    public enum Separator: UInt8, Sendable {
        /// `250-`: more lines follow (MidReplyLine).
        case mid = 0x2D
        /// `250+`: a data block follows, ended by a line holding only `.` (DataReplyLine).
        case data = 0x2B
        /// `250 `: the last line of the reply (EndReplyLine).
        case end = 0x20
    }

    public var status: Int
    public var separator: Separator
    /// ReplyText: what follows the separator, without the CRLF.
    public var text: String
    /// For `+` lines: the data block, dot-unstuffed, its lines joined with "\n" (no trailing newline).
    public var data: String?

    public init(status: Int, separator: Separator, text: String, data: String? = nil) {
        self.status = status
        self.separator = separator
        self.text = text
        self.data = data
    }

    public var description: String {
        let head = "\(status)\(Character(Unicode.Scalar(separator.rawValue)))\(text)"
        guard let data else { return head }
        return head + "\n" + data + "\n."
    }

    /// Splits `key=value` at the first "=" (GETINFO and GETCONF lines: the value runs to the end of the
    /// line and may contain spaces, control-spec 3.3 and 3.9). Nil when the line has no "=".
    public var keyValue: (key: String, value: String)? {
        guard let eq = text.firstIndex(of: "=") else { return nil }
        return (String(text[..<eq]), String(text[text.index(after: eq)...]))
    }

    /// The line's text as space-separated arguments, with `KEY=VALUE` and `KEY="quoted"` split out
    /// (control-spec 4.1: `SP KEYWORD ["=" ( QuotedString / * NonSpDquote ) ]`).
    public func arguments() throws -> TorArguments {
        try TorArguments(parsing: text)
    }
}

/// A complete reply: every line shares one status code (control-spec 2.3).
public struct TorReply: Sendable, Equatable, CustomStringConvertible {
    public var status: Int
    public var lines: [TorReplyLine]

    public init(status: Int, lines: [TorReplyLine]) {
        self.status = status
        self.lines = lines
    }

    /// 2yz: "The command was successful" (control-spec 4).
    public var isSuccess: Bool { (200..<300).contains(status) }

    /// 6yz: an asynchronous event, not the answer to a command (control-spec 4, 4.1).
    public var isEvent: Bool { (600..<700).contains(status) }

    /// The text of every line, joined with "; ", the form people read in an error message.
    public var message: String { lines.map(\.text).joined(separator: "; ") }

    public var description: String { lines.map(\.description).joined(separator: "\n") }

    /// Returns self when the reply is a 2yz success; otherwise throws a `TorReplyError` with tor's text.
    /// - Parameter command: the command's keyword, named in the error ("GETINFO").
    @discardableResult
    public func requireSuccess(_ command: String? = nil) throws -> TorReply {
        guard isSuccess else { throw TorReplyError(reply: self, command: command) }
        return self
    }
}

/// Tor answered a command with a 4yz/5yz (or otherwise unexpected) code. Carries tor's own words.
public struct TorReplyError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The classes of failure the spec names (control-spec 4 "Replies").
    public enum Kind: Sendable, Equatable {
        case resourceExhausted        // 451
        case syntaxErrorProtocol      // 500
        case unrecognizedCommand      // 510
        case unimplementedCommand     // 511
        case syntaxErrorInArgument    // 512
        case unrecognizedArgument     // 513
        case authenticationRequired   // 514
        case badAuthentication        // 515
        case unspecifiedTorError      // 550
        case internalError            // 551
        case unrecognizedEntity       // 552
        case invalidConfigurationValue // 553
        case invalidDescriptor        // 554
        case unmanagedEntity          // 555
        case other(Int)

        init(code: Int) {
            switch code {
            case 451: self = .resourceExhausted
            case 500: self = .syntaxErrorProtocol
            case 510: self = .unrecognizedCommand
            case 511: self = .unimplementedCommand
            case 512: self = .syntaxErrorInArgument
            case 513: self = .unrecognizedArgument
            case 514: self = .authenticationRequired
            case 515: self = .badAuthentication
            case 550: self = .unspecifiedTorError
            case 551: self = .internalError
            case 552: self = .unrecognizedEntity
            case 553: self = .invalidConfigurationValue
            case 554: self = .invalidDescriptor
            case 555: self = .unmanagedEntity
            default: self = .other(code)
            }
        }
    }

    public var code: Int
    /// Tor's text, verbatim (all lines joined with "; ").
    public var message: String
    /// The command that was refused, when known.
    public var command: String?

    public var kind: Kind { Kind(code: code) }

    public init(code: Int, message: String, command: String? = nil) {
        self.code = code
        self.message = message
        self.command = command
    }

    public init(reply: TorReply, command: String? = nil) {
        self.init(code: reply.status, message: reply.message, command: command)
    }

    public var description: String {
        if let command { return "tor refused \(command): \(code) \(message)" }
        return "tor replied \(code) \(message)"
    }
}
