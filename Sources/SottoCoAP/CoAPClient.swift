import Foundation

/// A CoAP client with one session (over DTLS with a PSK, or plain UDP) to one server, built on
/// libcoap. Requests may come from any task; libcoap itself runs on the engine's thread.
///
/// Block-wise transfers (RFC 7959) are left to libcoap: a large payload goes out in Block1
/// pieces and a large response body comes back whole.
///
/// The session is not re-established: once it ends (the server closed it, or the handshake
/// failed) every request throws that error, and a new client is needed.
public final class CoAPClient: Sendable {
    /// "host:port" of the server.
    public let endpoint: String
    /// The default time a request (or an observation's first response) may take.
    public let timeout: Duration

    private let engine: CoAPEngine
    private let session: ClientSession
    private let host: String
    private let hostIsName: Bool
    private let state = Lifecycle()

    /// Opens a session to `host`:`port` and, for DTLS, completes the handshake before returning,
    /// so that a wrong PSK or a missing server shows here, within `timeout`.
    public init(host: String, port: UInt16, security: CoAPSecurity, timeout: Duration = .seconds(5)) async throws {
        let endpoint = CoAPURI.endpoint(host: host, port: port)
        self.endpoint = endpoint
        self.timeout = timeout
        self.host = host
        self.hostIsName = !(CoAPURI.isIPv4(host) || CoAPURI.isIPv6(host))
        let address = try ResolvedAddress.resolve(host: host, port: port)
        let engine = try CoAPEngine.acquire()
        let session = ClientSession(endpoint: endpoint)
        self.engine = engine
        self.session = session
        let seconds = Self.seconds(timeout)
        do {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
                let accepted = engine.submit { loop in
                    session.open(loop: loop, address: address, security: security, seconds: seconds, continuation: continuation)
                }
                if !accepted { continuation.resume(throwing: CoAPError.clientClosed) }
            }
        } catch {
            state.markClosed()
            engine.submit { loop in session.close(error: .clientClosed, loop: loop) }
            engine.release()
            throw error
        }
    }

    /// Opens a session to the server a `coap://` or `coaps://` URI names. A `coaps://` URI needs
    /// `.dtlsPSK` security and a `coap://` one `.none`.
    public convenience init(uri: CoAPURI, security: CoAPSecurity, timeout: Duration = .seconds(5)) async throws {
        switch (uri.scheme, security) {
        case (.coaps, .none), (.coap, .dtlsPSK):
            throw CoAPError.securityDoesNotMatchScheme(uri.scheme)
        default:
            try await self.init(host: uri.host, port: uri.port, security: security, timeout: timeout)
        }
    }

    deinit {
        if state.markClosed() {
            let session = self.session
            engine.submit { loop in session.close(error: .clientClosed, loop: loop) }
            engine.release()
        }
    }

    /// Sends one request and waits for its response (however many blocks it took).
    ///
    /// - Parameters:
    ///   - path: percent-encoded, e.g. "/mb/alice"; "/" or "" for the root.
    ///   - query: decoded Uri-Query items, e.g. ["since=3"].
    ///   - contentFormat: the Content-Format option (RFC 7252 section 12.3), e.g. 0 for text/plain.
    ///   - confirmable: CON (retransmitted until acknowledged) or NON.
    /// - Throws: `CoAPError`; a response with an error code is no error, look at its `code`.
    public func request(_ method: CoAPMethod, path: String = "/", query: [String] = [], payload: [UInt8] = [],
                        contentFormat: UInt16? = nil, confirmable: Bool = true,
                        timeout: Duration? = nil) async throws -> CoAPResponse {
        let request = try outgoing(method, path: path, query: query, payload: payload, contentFormat: contentFormat,
                                   observe: false, confirmable: confirmable)
        guard !state.isClosed else { throw CoAPError.clientClosed }
        let seconds = Self.seconds(timeout ?? self.timeout)
        let session = self.session
        return try await withCheckedThrowingContinuation { continuation in
            let accepted = engine.submit { _ in
                session.send(request, seconds: seconds, continuation: continuation)
            }
            if !accepted { continuation.resume(throwing: CoAPError.clientClosed) }
        }
    }

    /// Observes a resource (RFC 7641): the stream yields the first response and then every
    /// notification. It ends when the server sends a response without Observe or with an error
    /// code, and throws when no first response comes within the timeout or the session ends.
    /// Ending the iteration deregisters the observation.
    public func observe(path: String = "/", query: [String] = [], timeout: Duration? = nil) -> AsyncThrowingStream<CoAPResponse, Error> {
        let (stream, continuation) = AsyncThrowingStream<CoAPResponse, Error>.makeStream(bufferingPolicy: .bufferingNewest(256))
        let request: OutgoingRequest
        do {
            request = try outgoing(.get, path: path, query: query, payload: [], contentFormat: nil, observe: true, confirmable: true)
        } catch {
            continuation.finish(throwing: error)
            return stream
        }
        guard !state.isClosed else {
            continuation.finish(throwing: CoAPError.clientClosed)
            return stream
        }
        let seconds = Self.seconds(timeout ?? self.timeout)
        let handle = ObservationHandle()
        let session = self.session
        let engine = self.engine
        continuation.onTermination = { _ in
            engine.submit { _ in session.cancelObservation(handle) }
        }
        let accepted = engine.submit { _ in
            session.startObservation(request, handle: handle, seconds: seconds, continuation: continuation)
        }
        if !accepted { continuation.finish(throwing: CoAPError.clientClosed) }
        return stream
    }

    /// Ends the session (a DTLS close_notify goes out) and fails whatever still waits with
    /// `CoAPError.clientClosed`. The last client to close stops libcoap's thread.
    public func close() async {
        guard state.markClosed() else { return }
        let session = self.session
        let engine = self.engine
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let accepted = engine.submit { loop in
                session.close(error: .clientClosed, loop: loop)
                continuation.resume()
            }
            if !accepted { continuation.resume() }
        }
        engine.release()
    }

    // MARK: - Helpers

    private func outgoing(_ method: CoAPMethod, path: String, query: [String], payload: [UInt8],
                          contentFormat: UInt16?, observe: Bool, confirmable: Bool) throws -> OutgoingRequest {
        let segments = try CoAPURI.pathSegments(fromPath: path)
        var options: [CoAPOption] = []
        // RFC 7252 section 6.4 step 5: Uri-Host only when the host is a name.
        if hostIsName { options.append(CoAPOption(number: CoAPOption.uriHost, value: Array(host.utf8))) }
        // RFC 7641 section 2: register = 0.
        if observe { options.append(CoAPOption(number: CoAPOption.observe, value: [])) }
        for segment in segments { options.append(CoAPOption(number: CoAPOption.uriPath, value: Array(segment.utf8))) }
        if let contentFormat {
            options.append(CoAPOption(number: CoAPOption.contentFormat, value: CoAPOption.encodeUInt(UInt32(contentFormat))))
        }
        for item in query {
            guard item.utf8.count <= CoAPURI.maximumOptionLength else {
                throw CoAPError.badURI(item, .optionTooLong(item, limit: CoAPURI.maximumOptionLength))
            }
            options.append(CoAPOption(number: CoAPOption.uriQuery, value: Array(item.utf8)))
        }
        let label = "\(method) \(path.isEmpty ? "/" : path)\(query.isEmpty ? "" : "?" + query.joined(separator: "&"))"
        return OutgoingRequest(method: method, confirmable: confirmable, options: options, payload: payload, label: label)
    }

    static func seconds(_ duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}

/// Whether the client has been closed; set once, from whichever of close() or deinit comes first.
private final class Lifecycle: @unchecked Sendable {
    private let lock = NSLock()
    private var closed = false

    var isClosed: Bool {
        lock.lock()
        defer { lock.unlock() }
        return closed
    }

    /// True for the caller that closed it.
    @discardableResult
    func markClosed() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if closed { return false }
        closed = true
        return true
    }
}
