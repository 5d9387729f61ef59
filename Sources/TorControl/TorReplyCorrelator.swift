import NIOCore

/// Pairs tor's replies with the commands that asked for them, and sets events apart.
///
/// "Servers respond to messages in the order messages are received" (control-spec 1), and events
/// "will not be interleaved with other Reply elements, but they can appear between a command and its
/// corresponding reply" (control-spec 4.1). So a FIFO of what was sent is enough: each non-6yz reply
/// answers the oldest pending command; each 6yz reply is an event.
///
/// `Pending` is whatever the transport keeps per command (a promise, the command itself, ...).
public struct TorReplyCorrelator<Pending> {
    public enum Delivery {
        /// The reply to `pending`, the oldest command still waiting.
        case reply(TorReply, to: Pending)
        /// An asynchronous event.
        case event(TorReply)
    }

    private var parser: TorReplyParser
    private var pending: [Pending] = []
    private var head = 0

    public init(limits: TorReplyParser.Limits = .init()) {
        self.parser = TorReplyParser(limits: limits)
    }

    /// Commands written and not answered yet.
    public var pendingCount: Int { pending.count - head }

    /// Call after writing a command.
    public mutating func commandSent(_ command: Pending) {
        pending.append(command)
    }

    /// Feeds bytes from the connection; returns replies and events in arrival order.
    /// Throws `TorProtocolError` on a malformed stream or a reply nobody asked for.
    public mutating func receive(_ bytes: [UInt8]) throws -> [Delivery] {
        parser.feed(bytes)
        return try drain()
    }

    public mutating func receive(_ buffer: ByteBuffer) throws -> [Delivery] {
        parser.feed(buffer)
        return try drain()
    }

    /// Routes one already-parsed reply.
    public mutating func route(_ reply: TorReply) throws -> Delivery {
        if reply.isEvent { return .event(reply) }
        guard head < pending.count else { throw TorProtocolError.unsolicitedReply(reply: reply.description) }
        let command = pending[head]
        head += 1
        if head > 64, head * 2 > pending.count {
            pending.removeFirst(head)
            head = 0
        }
        return .reply(reply, to: command)
    }

    /// The connection closed: checks it closed between replies, and returns the commands that will
    /// never be answered (fail them).
    public mutating func connectionClosed() -> (unanswered: [Pending], error: TorProtocolError?) {
        var error: TorProtocolError?
        do { try parser.finish() } catch let e as TorProtocolError { error = e } catch {}
        let unanswered = Array(pending[head...])
        pending = []
        head = 0
        return (unanswered, error)
    }

    private mutating func drain() throws -> [Delivery] {
        var out: [Delivery] = []
        while let reply = try parser.nextReply() {
            out.append(try route(reply))
        }
        return out
    }
}

extension TorReplyCorrelator: Sendable where Pending: Sendable {}
