// Asynchronous events (control-spec 4.1). Clients "MUST tolerate more arguments ... and more lines
// than expected": only the first line is read, unknown keywords are ignored, unknown events kept raw.

/// A 650 event, typed where Sotto needs it.
public enum TorEvent: Sendable, Equatable {
    /// STATUS_GENERAL / STATUS_CLIENT / STATUS_SERVER (control-spec 4.1.10).
    case status(TorStatusEvent)
    /// HS_DESC (control-spec 4.1.25).
    case hsDescriptor(HSDescriptorEvent)
    /// Any other event: its keyword and the whole reply.
    case other(keyword: String, reply: TorReply)

    /// The event keyword of a 6yz reply ("STATUS_CLIENT"), or nil if the reply is not an event.
    public static func keyword(of reply: TorReply) -> String? {
        guard reply.isEvent, let first = reply.lines.first else { return nil }
        return first.text.split(separator: " ", maxSplits: 1).first.map(String.init)
    }

    public init(reply: TorReply) throws {
        guard reply.isEvent else {
            throw TorProtocolError.malformedReply(command: "event", reason: "status \(reply.status) is not an asynchronous (6yz) reply",
                                                  reply: reply.description)
        }
        let keyword = Self.keyword(of: reply) ?? ""
        switch keyword {
        case "STATUS_GENERAL", "STATUS_CLIENT", "STATUS_SERVER", "STATUS_SEVER":
            self = .status(try TorStatusEvent(line: reply.lines[0].text))
        case "HS_DESC":
            self = .hsDescriptor(try HSDescriptorEvent(line: reply.lines[0].text))
        default:
            self = .other(keyword: keyword, reply: reply)
        }
    }
}

/// `650 StatusType SP StatusSeverity SP StatusAction [SP StatusArguments]` (control-spec 4.1.10).
public struct TorStatusEvent: Sendable, Equatable {
    /// "STATUS_CLIENT", "STATUS_GENERAL" or "STATUS_SERVER".
    public var type: String
    /// "NOTICE", "WARN" or "ERR" (others tolerated).
    public var severity: String
    /// "BOOTSTRAP", "CIRCUIT_ESTABLISHED", ...
    public var action: String
    public var arguments: TorArguments

    /// Parses the text after "650 ", e.g. `STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=10 TAG=conn_done SUMMARY="..."`.
    public init(line: String) throws {
        let args = try TorArguments(parsing: line)
        let words = args.all.prefix(3)
        guard words.count == 3, words.allSatisfy({ $0.key == nil }) else {
            throw TorProtocolError.malformedReply(command: "STATUS event", reason: "needs type, severity and action",
                                                  reply: line)
        }
        let w = Array(words)
        self.type = w[0].value
        self.severity = w[1].value
        self.action = w[2].value
        self.arguments = TorArguments(Array(args.all.dropFirst(3)))
    }

    /// The bootstrap report when this is a `BOOTSTRAP` action.
    public var bootstrap: BootstrapStatus? {
        guard action == "BOOTSTRAP" else { return nil }
        return try? BootstrapStatus(severity: severity, arguments: arguments)
    }
}

/// `BOOTSTRAP PROGRESS=n TAG=.. SUMMARY=".." [WARNING=..] [REASON=..] [COUNT=..] [RECOMMENDATION=..]`
/// (control-spec 4.1.10, STATUS_CLIENT). The same shape answers `GETINFO status/bootstrap-phase`.
public struct BootstrapStatus: Sendable, Equatable {
    public var severity: String
    /// 0 to 100.
    public var progress: Int
    public var tag: String
    /// What tor will do next, for people.
    public var summary: String
    public var warning: String?
    public var reason: String?
    public var count: Int?
    /// "ignore" or "warn".
    public var recommendation: String?

    public var isComplete: Bool { progress >= 100 }

    public init(severity: String, arguments: TorArguments) throws {
        guard let progressText = arguments["PROGRESS"], let progress = Int(progressText), (0...100).contains(progress) else {
            throw TorProtocolError.malformedReply(command: "BOOTSTRAP status", reason: "PROGRESS is missing or not 0...100",
                                                  reply: arguments.all.map(\.raw).joined(separator: " "))
        }
        self.severity = severity
        self.progress = progress
        self.tag = arguments["TAG"] ?? ""
        self.summary = arguments["SUMMARY"] ?? ""
        self.warning = arguments["WARNING"]
        self.reason = arguments["REASON"]
        self.count = arguments["COUNT"].flatMap { Int($0) }
        self.recommendation = arguments["RECOMMENDATION"]
    }

    /// Parses the value of `GETINFO status/bootstrap-phase` ("NOTICE BOOTSTRAP PROGRESS=100 TAG=done ...").
    public init(bootstrapPhase text: String) throws {
        let args = try TorArguments(parsing: text)
        guard args.all.count >= 2, args.all[0].key == nil, args.all[1].key == nil, args.all[1].value == "BOOTSTRAP" else {
            throw TorProtocolError.malformedReply(command: "GETINFO status/bootstrap-phase",
                                                  reason: "expected \"<severity> BOOTSTRAP ...\"", reply: text)
        }
        try self.init(severity: args.all[0].value, arguments: TorArguments(Array(args.all.dropFirst(2))))
    }
}

/// `650 HS_DESC Action HSAddress AuthType HsDir [DescriptorID] [REASON=..] [REPLICA=..] [HSDIR_INDEX=..]`
/// (control-spec 4.1.25).
public struct HSDescriptorEvent: Sendable, Equatable {
    public enum Action: Sendable, Equatable {
        case requested, upload, received, uploaded, ignore, failed, created
        case other(String)

        init(_ s: String) {
            switch s {
            case "REQUESTED": self = .requested
            case "UPLOAD": self = .upload
            case "RECEIVED": self = .received
            case "UPLOADED": self = .uploaded
            case "IGNORE": self = .ignore
            case "FAILED": self = .failed
            case "CREATED": self = .created
            default: self = .other(s)
            }
        }
    }

    public var action: Action
    /// The onion address without ".onion", or "UNKNOWN".
    public var address: String
    public var authType: String
    /// LongName, Fingerprint or "UNKNOWN".
    public var hsDir: String
    public var descriptorID: String?
    public var reason: String?
    public var replica: Int?
    public var hsDirIndex: String?

    /// Parses the text after "650 ", starting with "HS_DESC".
    public init(line: String) throws {
        let args = try TorArguments(parsing: line)
        let all = args.all
        // Positional fields by place; `raw` because a legacy LongName may contain "=".
        guard all.count >= 5, all[0].raw == "HS_DESC" else {
            throw TorProtocolError.malformedReply(command: "HS_DESC event", reason: "needs action, address, auth type and HSDir",
                                                  reply: line)
        }
        self.action = Action(all[1].raw)
        self.address = all[2].raw
        self.authType = all[3].raw
        self.hsDir = all[4].raw
        let rest = all.dropFirst(5)
        self.descriptorID = rest.first.flatMap { $0.key == nil ? $0.value : nil }
        let keyed = TorArguments(Array(rest))
        self.reason = keyed["REASON"]
        self.replica = keyed["REPLICA"].flatMap { Int($0) }
        self.hsDirIndex = keyed["HSDIR_INDEX"]
    }
}
