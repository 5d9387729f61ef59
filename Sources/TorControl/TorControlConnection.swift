import Foundation
import NIOCore
import NIOPosix

// The I/O edge of the control-port client: a SwiftNIO channel that writes `TorCommand`s, feeds tor's
// bytes to `TorReplyCorrelator`, completes each command's promise with its reply and hands 6yz events to
// an AsyncStream. All mutable state lives in `TorControlHandler`, which only runs on the channel's event
// loop; `TorControlConnection` itself holds only immutable, Sendable values.

/// Where tor's control port listens (torrc `ControlPort` or `ControlSocket`, control-spec 1).
public enum TorControlEndpoint: Sendable, Equatable, CustomStringConvertible {
    case tcp(host: String, port: Int)
    case unix(path: String)

    public var description: String {
        switch self {
        case let .tcp(host, port): return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case let .unix(path): return "unix:\(path)"
        }
    }
}

/// The connection itself failed (not tor refusing a command: that is `TorReplyError`).
public struct TorControlError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Reason: Sendable, Equatable {
        /// The TCP or Unix socket connection could not be made.
        case connectFailed(String)
        /// The connection closed; `protocolError` says if it closed in the middle of a reply.
        case connectionClosed(protocolError: TorProtocolError?)
        /// Tor sent bytes that are not the control protocol; the connection was closed.
        case protocolViolation(TorProtocolError)
        /// No reply within the time limit; the connection was closed because later replies could no
        /// longer be matched to their commands.
        case timedOut(seconds: Int64)
        /// `close()` was called.
        case closedByClient
    }

    public var endpoint: String
    /// The command that was waiting ("GETINFO"), when there was one.
    public var command: String?
    public var reason: Reason

    public init(endpoint: String, command: String? = nil, reason: Reason) {
        self.endpoint = endpoint
        self.command = command
        self.reason = reason
    }

    func with(command: String) -> TorControlError {
        var copy = self
        copy.command = command
        return copy
    }

    public var description: String {
        let port = "tor control port \(endpoint)"
        let waiting = command.map { " while waiting for the reply to \($0)" } ?? ""
        switch reason {
        case let .connectFailed(text):
            return "cannot connect to \(port): \(text) (is tor running, and is ControlPort set?)"
        case let .connectionClosed(error):
            return "\(port) closed the connection\(waiting)" + (error.map { ": \($0)" } ?? "")
        case let .protocolViolation(error):
            return "\(port) sent data that breaks the control protocol\(waiting): \(error)"
        case let .timedOut(seconds):
            return "\(port) did not answer within \(seconds) s\(waiting); the connection was closed"
        case .closedByClient:
            return "the connection to \(port) was closed by this process\(waiting)"
        }
    }
}

/// One command on its way to tor: the promise its reply completes.
struct TorControlRequest: Sendable {
    var command: TorCommand
    var reply: EventLoopPromise<TorReply>
}

/// Frames tor's byte stream into replies and events. Event loop only.
final class TorControlHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = TorControlRequest
    typealias OutboundOut = ByteBuffer

    private var correlator: TorReplyCorrelator<TorControlRequest>
    private let events: AsyncStream<TorEvent>.Continuation
    private let endpoint: String
    /// Set once the connection is known to be unusable; later writes fail with it at once.
    private var failure: TorControlError?

    init(endpoint: String, limits: TorReplyParser.Limits, events: AsyncStream<TorEvent>.Continuation) {
        self.endpoint = endpoint
        self.correlator = TorReplyCorrelator(limits: limits)
        self.events = events
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        if let failure {
            request.reply.fail(failure.with(command: request.command.keyword))
            promise?.fail(failure)
            return
        }
        // Registered before the bytes leave, so the reply can never arrive ahead of its entry.
        correlator.commandSent(request)
        var buffer = context.channel.allocator.buffer(capacity: request.command.bytes.count)
        buffer.writeBytes(request.command.bytes)
        context.write(wrapOutboundOut(buffer), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        do {
            for delivery in try correlator.receive(buffer) {
                switch delivery {
                case let .reply(reply, to: request):
                    request.reply.succeed(reply)
                case let .event(reply):
                    // Clients must tolerate events they cannot parse (control-spec 4.1): keep them raw.
                    let event = (try? TorEvent(reply: reply))
                        ?? .other(keyword: TorEvent.keyword(of: reply) ?? "", reply: reply)
                    events.yield(event)
                }
            }
        } catch let error as TorProtocolError {
            fail(context: context, TorControlError(endpoint: endpoint, reason: .protocolViolation(error)))
        } catch {
            fail(context: context, TorControlError(endpoint: endpoint, reason: .connectionClosed(protocolError: nil)))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        let (unanswered, protocolError) = correlator.connectionClosed()
        let error = failure ?? TorControlError(endpoint: endpoint, reason: .connectionClosed(protocolError: protocolError))
        failure = error
        for request in unanswered { request.reply.fail(error.with(command: request.command.keyword)) }
        events.finish()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        fail(context: context, TorControlError(endpoint: endpoint, reason: .connectionClosed(protocolError: nil)))
    }

    func markClosedByClient() {
        if failure == nil { failure = TorControlError(endpoint: endpoint, reason: .closedByClient) }
    }

    /// Records why the connection is being closed (first reason wins) and closes it; the pending
    /// commands fail in `channelInactive`.
    func fail(context: ChannelHandlerContext, _ error: TorControlError) {
        if failure == nil { failure = error }
        context.close(promise: nil)
    }
}

/// An authenticated tor control connection.
///
/// Commands may be sent from any task and are answered in order ("Servers respond to messages in the
/// order messages are received", control-spec 1). Async events (after SETEVENTS) arrive on `events` at
/// any time, including between a command and its reply (control-spec 4.1).
public final class TorControlConnection: Sendable {
    public struct Options: Sendable {
        /// HASHEDPASSWORD secret, if tor is configured with one.
        public var password: String?
        /// The cookie's contents, when already known; otherwise the file named in PROTOCOLINFO is read.
        public var cookie: [UInt8]?
        /// Bound on connecting and on each command's reply.
        public var timeout: TimeAmount
        public var limits: TorReplyParser.Limits
        /// Events kept while nobody reads `events`; the oldest are dropped beyond this.
        public var eventBufferSize: Int

        public init(password: String? = nil, cookie: [UInt8]? = nil, timeout: TimeAmount = .seconds(30),
                    limits: TorReplyParser.Limits = .init(), eventBufferSize: Int = 4096) {
            self.password = password
            self.cookie = cookie
            self.timeout = timeout
            self.limits = limits
            self.eventBufferSize = eventBufferSize
        }
    }

    public let endpoint: TorControlEndpoint
    /// The method the connection authenticated with.
    public let authMethod: TorAuthMethod
    /// Tor's PROTOCOLINFO answer (version, methods, cookie file).
    public let protocolInfo: ProtocolInfo
    /// Asynchronous events (650 replies), in arrival order; finishes when the connection closes.
    /// A single consumer: iterate it from one task.
    public let events: AsyncStream<TorEvent>

    private let channel: Channel
    private let timeout: TimeAmount

    private init(endpoint: TorControlEndpoint, channel: Channel, events: AsyncStream<TorEvent>, timeout: TimeAmount,
                 authMethod: TorAuthMethod, protocolInfo: ProtocolInfo) {
        self.endpoint = endpoint
        self.channel = channel
        self.events = events
        self.timeout = timeout
        self.authMethod = authMethod
        self.protocolInfo = protocolInfo
    }

    /// Connects and authenticates (PROTOCOLINFO, then SAFECOOKIE > COOKIE > HASHEDPASSWORD > NULL;
    /// control-spec 3.5, 3.21, 3.24).
    /// - Throws: `TorControlError` (connection), `TorAuthenticationError` (authentication).
    public static func connect(to endpoint: TorControlEndpoint, options: Options = .init(),
                               group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> TorControlConnection {
        let name = endpoint.description
        let (events, continuation) = AsyncStream<TorEvent>.makeStream(bufferingPolicy: .bufferingNewest(options.eventBufferSize))
        let limits = options.limits
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(options.timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        TorControlHandler(endpoint: name, limits: limits, events: continuation))
                }
            }
        let channel: Channel
        do {
            switch endpoint {
            case let .tcp(host, port): channel = try await bootstrap.connect(host: host, port: port).get()
            case let .unix(path): channel = try await bootstrap.connect(unixDomainSocketPath: path).get()
            }
        } catch {
            continuation.finish()
            throw TorControlError(endpoint: name, reason: .connectFailed("\(error)"))
        }

        do {
            // 32 fresh random bytes: control-spec 3.24 asks for a nonce "of at least 32 octets"
            // chosen so tor cannot predict it; SystemRandomNumberGenerator is the OS CSPRNG.
            var rng = SystemRandomNumberGenerator()
            let nonce = (0..<SafeCookie.nonceLength).map { _ in UInt8.random(in: 0...255, using: &rng) }
            var authenticator = TorAuthenticator(controlPort: name, password: options.password, cookie: options.cookie,
                                                 clientNonce: nonce)
            var action = try authenticator.start()
            while true {
                switch action {
                case let .send(command):
                    let reply = try await exchange(command, on: channel, timeout: options.timeout, endpoint: name)
                    action = try authenticator.receive(reply)
                case let .readCookieFile(path):
                    do {
                        let contents = try Data(contentsOf: URL(fileURLWithPath: path))
                        action = try authenticator.provideCookie(Array(contents))
                    } catch let error as TorAuthenticationError {
                        throw error
                    } catch {
                        action = try authenticator.cookieUnavailable(Self.describeFileError(error))
                    }
                case let .authenticated(method, info):
                    return TorControlConnection(endpoint: endpoint, channel: channel, events: events,
                                                timeout: options.timeout, authMethod: method, protocolInfo: info)
                }
            }
        } catch {
            try? await channel.close().get()
            throw error
        }
    }

    /// Sends one command and waits for its reply.
    /// - Parameter requireSuccess: when true (the default) a 4yz/5yz answer throws `TorReplyError` with
    ///   tor's text; when false it is returned like any reply.
    /// - Throws: `TorReplyError` (tor refused), `TorControlError` (connection failed or timed out).
    @discardableResult
    public func send(_ command: TorCommand, requireSuccess: Bool = true) async throws -> TorReply {
        let reply = try await Self.exchange(command, on: channel, timeout: timeout, endpoint: endpoint.description)
        if requireSuccess { try reply.requireSuccess(command.keyword) }
        return reply
    }

    /// `GETINFO` with the reply parsed into key/value pairs (control-spec 3.9).
    public func getInfo(_ keys: [String]) async throws -> GetInfoResult {
        try GetInfoResult(reply: await send(.getInfo(keys)))
    }

    /// Closes the connection; commands still waiting fail with `.closedByClient` and `events`
    /// finishes. Safe to call more than once.
    public func close() async {
        let channel = self.channel
        try? await channel.eventLoop.flatSubmit {
            if let handler = try? channel.pipeline.syncOperations.handler(type: TorControlHandler.self) {
                handler.markClosedByClient()
            }
            return channel.close()
        }.get()
    }

    /// True until the connection closes (either side).
    public var isActive: Bool { channel.isActive }

    /// Completes when the connection has closed.
    public var closeFuture: EventLoopFuture<Void> { channel.closeFuture }

    private static func exchange(_ command: TorCommand, on channel: Channel, timeout: TimeAmount,
                                 endpoint: String) async throws -> TorReply {
        let reply = channel.eventLoop.makePromise(of: TorReply.self)
        let request = TorControlRequest(command: command, reply: reply)
        let deadline = channel.eventLoop.scheduleTask(in: timeout) {
            // A late reply would be matched to the next command, so the connection cannot go on.
            reply.fail(TorControlError(endpoint: endpoint, command: command.keyword,
                                       reason: .timedOut(seconds: timeout.nanoseconds / 1_000_000_000)))
            channel.close(promise: nil)
        }
        reply.futureResult.whenComplete { _ in deadline.cancel() }
        // If the channel is already closed our handler never sees the write: fail the reply here
        // (a promise completed twice keeps its first result).
        channel.writeAndFlush(request).whenFailure { _ in
            reply.fail(TorControlError(endpoint: endpoint, command: command.keyword,
                                       reason: .connectionClosed(protocolError: nil)))
        }
        return try await reply.futureResult.get()
    }

    static func describeFileError(_ error: Error) -> String {
        let ns = error as NSError
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        return ns.localizedDescription
    }
}
