/// The mailbox protocol of `sotto coap-server` (docs/coap-server.md), without I/O: a request's
/// method, path, query and payload in, a response's code, options and payload out. The server
/// glue (CoAPServerCore) hands requests here from libcoap's handlers.

/// Why a box name was refused.
public enum MailboxNameProblem: Sendable, Equatable, CustomStringConvertible {
    case empty
    case tooLong(bytes: Int, limit: Int)
    /// A byte outside A-Z a-z 0-9 '-' '_' '.', at this position (from 1).
    case badCharacter(position: Int)
    case leadingDot

    public var description: String {
        switch self {
        case .empty: return "the box name is empty"
        case .tooLong(let bytes, let limit): return "the box name is \(bytes) bytes; at most \(limit)"
        case .badCharacter(let position):
            return "the box name has a character other than A-Z a-z 0-9 - _ . at position \(position)"
        case .leadingDot: return "the box name must not start with '.'"
        }
    }
}

public enum MailboxName {
    public static let maximumLength = 64

    /// Box names are 1 to 64 bytes of A-Z a-z 0-9 '-' '_' '.', not starting with '.': safe in a
    /// URI path segment without percent-encoding (RFC 3986 section 2.3), in logs and in file names,
    /// and wide enough for base64url or hex names derived from keys.
    public static func problem(_ bytes: [UInt8]) -> MailboxNameProblem? {
        guard !bytes.isEmpty else { return .empty }
        guard bytes.count <= maximumLength else { return .tooLong(bytes: bytes.count, limit: maximumLength) }
        for (index, byte) in bytes.enumerated() {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."):
                continue
            default:
                return .badCharacter(position: index + 1)
            }
        }
        if bytes[0] == UInt8(ascii: ".") { return .leadingDot }
        return nil
    }
}

/// The body of `GET /mb/{box}`: each envelope as an 8-byte id, a 4-byte length (both unsigned,
/// big-endian) and the envelope's bytes, one after the other; an empty body is an empty box.
public enum EnvelopeFraming {
    public static let headerLength = 12

    public struct Problem: Error, Sendable, Equatable, CustomStringConvertible {
        /// Byte offset of the frame that could not be read.
        public let offset: Int
        public let reason: String
        public var description: String { "bad envelope list at byte \(offset): \(reason)" }
    }

    public static func encode(_ envelopes: [(id: Int64, envelope: [UInt8])]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(envelopes.reduce(0) { $0 + headerLength + $1.envelope.count })
        for (id, envelope) in envelopes {
            let unsignedID = UInt64(bitPattern: id)
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: unsignedID >> UInt64(shift))) }
            let length = UInt32(envelope.count)
            for shift in stride(from: 24, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: length >> UInt32(shift))) }
            out.append(contentsOf: envelope)
        }
        return out
    }

    /// Reads a whole body; a truncated header or envelope, or an id above Int64.max, is an error.
    public static func decode(_ body: [UInt8]) throws -> [(id: Int64, envelope: [UInt8])] {
        var found: [(id: Int64, envelope: [UInt8])] = []
        var offset = 0
        while offset < body.count {
            guard body.count - offset >= headerLength else {
                throw Problem(offset: offset, reason: "\(body.count - offset) bytes left, a frame header takes \(headerLength)")
            }
            var id: UInt64 = 0
            for byte in body[offset..<offset + 8] { id = id << 8 | UInt64(byte) }
            var length: UInt32 = 0
            for byte in body[offset + 8..<offset + 12] { length = length << 8 | UInt32(byte) }
            guard id <= UInt64(Int64.max) else { throw Problem(offset: offset, reason: "id \(id) is out of range") }
            let start = offset + headerLength
            guard Int(length) <= body.count - start else {
                throw Problem(offset: offset, reason: "envelope of \(length) bytes, but only \(body.count - start) follow")
            }
            found.append((Int64(id), Array(body[start..<start + Int(length)])))
            offset = start + Int(length)
        }
        return found
    }
}

/// A request as the mailbox core sees it.
struct MailboxRequest {
    /// The request code's raw value (1 GET, 2 POST, 3 PUT, 4 DELETE, ...).
    var method: UInt8
    var path: [[UInt8]]
    var query: [[UInt8]]
    var payload: [UInt8]
}

/// What to answer, and what the server must do besides.
struct MailboxReply: Equatable {
    var code: CoAPCode
    var payload: [UInt8] = []
    /// Content-Format (RFC 7252 section 12.3) of a success body: 42 application/octet-stream.
    var contentFormat: UInt16?
    /// Location-Path segments of a 2.01 (RFC 7252 section 5.8.2).
    var locationPath: [String] = []
    /// Max-Age seconds (RFC 7252 section 5.10.5): with 4.29 and 5.03, when to try again.
    var maxAge: UInt32?
    /// Size1 (RFC 7959 section 4): with 4.13, the largest envelope taken.
    var size1: UInt32?
    /// The box named by a valid request: the server makes it a resource (so it can be observed).
    var box: String?
    /// True when envelopes were added to `box`: its observers get a notification.
    var boxChanged = false

    static func error(_ code: CoAPCode, _ diagnostic: String) -> MailboxReply {
        // RFC 7252 section 5.5.2: a diagnostic payload is UTF-8 text for a person.
        MailboxReply(code: code, payload: Array(diagnostic.utf8))
    }
}

extension CoAPCode {
    static let badRequest = CoAPCode(codeClass: 4, detail: 0)!
    static let methodNotAllowed = CoAPCode(codeClass: 4, detail: 5)!
    static let requestEntityTooLarge = CoAPCode(codeClass: 4, detail: 13)!
    static let tooManyRequests = CoAPCode(codeClass: 4, detail: 29)!
    static let internalServerError = CoAPCode(codeClass: 5, detail: 0)!
    static let serviceUnavailable = CoAPCode(codeClass: 5, detail: 3)!
}

/// Routes and answers mailbox requests over a `MessageStore`.
final class MailboxService {
    let store: MessageStore
    /// Envelopes in one GET response at most (the `limit` query may ask for fewer).
    let maximumEnvelopesPerResponse: Int
    /// Framed bytes in one GET response; one envelope always fits, whatever its size.
    let maximumResponseBytes: Int
    /// Ids in one DELETE at most.
    static let maximumIDsPerDelete = 256
    /// Max-Age sent with "box full" and "store full": a receiver has to drain first.
    static let retryAfterSeconds: UInt32 = 60
    /// Told about store faults (their details stay out of responses).
    var onStoreFault: ((Error) -> Void)?

    init(store: MessageStore, maximumEnvelopesPerResponse: Int = 64, maximumResponseBytes: Int = 1 << 20) {
        self.store = store
        self.maximumEnvelopesPerResponse = maximumEnvelopesPerResponse
        self.maximumResponseBytes = maximumResponseBytes
    }

    /// `now` is Unix seconds.
    func handle(_ request: MailboxRequest, now: Int64) -> MailboxReply {
        guard request.path.count == 2, request.path[0] == Array("mb".utf8) else {
            return .error(.notFound, "no such resource; mailboxes are /mb/{box} (see /.well-known/core)")
        }
        if let problem = MailboxName.problem(request.path[1]) {
            return .error(.badRequest, "bad box name: \(problem)")
        }
        let box = String(decoding: request.path[1], as: UTF8.self)
        let query: [(String, String)]
        do {
            query = try parseQuery(request.query)
        } catch let bad as BadQuery {
            return bad.reply
        } catch {
            return .error(.badRequest, "bad query")
        }
        switch request.method {
        case CoAPMethod.get.rawValue: return get(box: box, query: query, now: now)
        case CoAPMethod.post.rawValue: return post(box: box, query: query, payload: request.payload, now: now)
        case CoAPMethod.delete.rawValue: return delete(box: box, query: query, payload: request.payload)
        default:
            return .error(.methodNotAllowed, "a box takes GET, POST and DELETE")
        }
    }

    // MARK: - Methods

    private func get(box: String, query: [(String, String)], now: Int64) -> MailboxReply {
        var after: Int64 = 0
        var limit = maximumEnvelopesPerResponse
        for (name, value) in query {
            switch name {
            case "after":
                guard let number = Int64(value), number >= 0 else { return .error(.badRequest, "after=\(value) is not an envelope id") }
                after = number
            case "limit":
                guard let number = Int(value), (1...maximumEnvelopesPerResponse).contains(number) else {
                    return .error(.badRequest, "limit=\(value) must be from 1 to \(maximumEnvelopesPerResponse)")
                }
                limit = number
            default:
                return .error(.badRequest, "GET takes the query parameters after and limit, not '\(name)'")
            }
        }
        do {
            guard try store.register(box: box, now: now) else {
                return .error(.serviceUnavailable, MessageStoreRefusal.tooManyBoxes(limit: store.limits.maximumBoxes).description)
            }
            let found = try store.list(box: box, after: after, limit: limit, now: now)
            var chosen: [(id: Int64, envelope: [UInt8])] = []
            var bytes = 0
            for stored in found {
                let size = EnvelopeFraming.headerLength + stored.envelope.count
                if !chosen.isEmpty && bytes + size > maximumResponseBytes { break }
                chosen.append((stored.id, stored.envelope))
                bytes += size
            }
            var reply = MailboxReply(code: .content, payload: EnvelopeFraming.encode(chosen), contentFormat: 42)
            reply.box = box
            return reply
        } catch {
            return storeFault(error)
        }
    }

    private func post(box: String, query: [(String, String)], payload: [UInt8], now: Int64) -> MailboxReply {
        var timeToLive: Int64?
        for (name, value) in query {
            guard name == "ttl" else { return .error(.badRequest, "POST takes the query parameter ttl, not '\(name)'") }
            guard let seconds = Int64(value) else { return .error(.badRequest, "ttl=\(value) is not a number of seconds") }
            timeToLive = seconds
        }
        do {
            let id = try store.put(box: box, envelope: payload, timeToLive: timeToLive, now: now)
            var reply = MailboxReply(code: .created)
            reply.locationPath = ["mb", box, String(id)]
            reply.box = box
            reply.boxChanged = true
            return reply
        } catch MessageStoreError.refused(let refusal) {
            var reply: MailboxReply
            switch refusal {
            case .emptyEnvelope, .badTimeToLive:
                reply = .error(.badRequest, refusal.description)
            case .envelopeTooLarge(_, let limit):
                reply = .error(.requestEntityTooLarge, refusal.description)
                reply.size1 = UInt32(clamping: limit)
            case .boxFull:
                // RFC 8516: 4.29 with Max-Age, the time after which to try again.
                reply = .error(.tooManyRequests, refusal.description)
                reply.maxAge = Self.retryAfterSeconds
            case .storeFull, .tooManyBoxes:
                reply = .error(.serviceUnavailable, refusal.description)
                reply.maxAge = Self.retryAfterSeconds
            }
            return reply
        } catch {
            return storeFault(error)
        }
    }

    /// Ids come as `id=N` query items (a comma-separated list allowed), or as the payload:
    /// 8-byte big-endian ids one after the other.
    private func delete(box: String, query: [(String, String)], payload: [UInt8]) -> MailboxReply {
        var ids: [Int64] = []
        for (name, value) in query {
            guard name == "id" else { return .error(.badRequest, "DELETE takes the query parameter id, not '\(name)'") }
            for part in value.split(separator: ",", omittingEmptySubsequences: false) {
                guard let id = Int64(part), id > 0 else { return .error(.badRequest, "id=\(part) is not an envelope id") }
                ids.append(id)
            }
        }
        if !payload.isEmpty {
            guard payload.count % 8 == 0 else {
                return .error(.badRequest, "a DELETE payload is 8-byte ids; \(payload.count) bytes is not a multiple of 8")
            }
            for start in stride(from: 0, to: payload.count, by: 8) {
                let id = payload[start..<start + 8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                guard id > 0, id <= UInt64(Int64.max) else { return .error(.badRequest, "payload id \(id) is not an envelope id") }
                ids.append(Int64(id))
            }
        }
        guard !ids.isEmpty else { return .error(.badRequest, "name the envelopes to delete: ?id=N (or 8-byte ids as the payload)") }
        guard ids.count <= Self.maximumIDsPerDelete else {
            return .error(.badRequest, "\(ids.count) ids; at most \(Self.maximumIDsPerDelete) per DELETE")
        }
        do {
            try store.delete(box: box, ids: ids)
            // 2.02 also when nothing matched: an acknowledgement may be repeated (RFC 7252
            // section 5.8.4, DELETE is idempotent).
            return MailboxReply(code: .deleted)
        } catch {
            return storeFault(error)
        }
    }

    // MARK: - Helpers

    /// Query items as name=value pairs (RFC 7252 section 6.5: one Uri-Query option each).
    private struct BadQuery: Error {
        let reply: MailboxReply
    }

    private func parseQuery(_ items: [[UInt8]]) throws -> [(String, String)] {
        var parsed: [(String, String)] = []
        for item in items {
            guard let text = String(validating: item, as: UTF8.self) else {
                throw BadQuery(reply: .error(.badRequest, "a query item is not UTF-8 text"))
            }
            guard let equals = text.firstIndex(of: "=") else {
                throw BadQuery(reply: .error(.badRequest, "query item '\(text.prefix(32))' is not name=value"))
            }
            parsed.append((String(text[..<equals]), String(text[text.index(after: equals)...])))
        }
        return parsed
    }

    private func storeFault(_ error: Error) -> MailboxReply {
        // The details go to the server's log, not to the client.
        onStoreFault?(error)
        return .error(.internalServerError, "the message store failed; see the server's log")
    }
}
