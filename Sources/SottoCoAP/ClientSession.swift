import CLibCoAP
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A request as the client hands it to the engine's thread: plain values, no libcoap types.
struct OutgoingRequest: Sendable {
    var method: CoAPMethod
    var confirmable: Bool
    /// Uri-Host, Observe, Uri-Path, Content-Format, Uri-Query... in any order (libcoap sorts).
    var options: [CoAPOption]
    var payload: [UInt8]
    /// "GET /time", for errors.
    var label: String
}

/// Identifies one observation so that ending its stream can find it on the engine's thread.
final class ObservationHandle: Sendable {}

/// One libcoap client session and what waits on it. Lives on the engine's thread only: every
/// method here runs there (as a job or from a libcoap callback).
final class ClientSession: @unchecked Sendable {
    let endpoint: String
    private(set) var session: OpaquePointer?

    private enum Phase {
        case connecting
        case connected
        case failed(CoAPError)
        case closed
    }

    private var phase = Phase.connecting
    private var connectWaiter: (continuation: CheckedContinuation<Void, Error>, deadline: UInt64, seconds: Double)?

    private struct Pending {
        var label: String
        var continuation: CheckedContinuation<CoAPResponse, Error>
        var deadline: UInt64
        var seconds: Double
    }

    private struct Observation {
        var handle: ObservationHandle
        var label: String
        var continuation: AsyncThrowingStream<CoAPResponse, Error>.Continuation
        /// Until the first notification arrives; nil afterwards.
        var deadline: UInt64?
        var seconds: Double
    }

    private var pending: [[UInt8]: Pending] = [:]
    private var observations: [[UInt8]: Observation] = [:]
    /// Tokens of observations we ended, so that the answer to the deregistration is accepted
    /// instead of being reset. Bounded: see `forgetCancelled`.
    private var cancelledTokens: Set<[UInt8]> = []

    init(endpoint: String) {
        self.endpoint = endpoint
    }

    // MARK: - Opening and closing

    /// Creates the libcoap session and, for DTLS, resumes `continuation` once the handshake is
    /// done (or failed, or `seconds` passed).
    func open(loop: CoAPLoop, address: ResolvedAddress, security: CoAPSecurity, seconds: Double,
              continuation: CheckedContinuation<Void, Error>) {
        var server = coap_address_t()
        let copied = address.withSockaddr { sotto_coap_address_set(&server, $0, $1) }
        guard copied == 1 else {
            continuation.resume(throwing: CoAPError.sessionSetupFailed(endpoint: endpoint))
            return
        }
        switch security {
        case .none:
            session = coap_new_client_session(loop.context, nil, &server, COAP_PROTO_UDP)
        case .dtlsPSK(let identity, let key):
            // libcoap copies identity and key during the call (coap_dtls.h), so these buffers
            // need to live only until it returns.
            session = identity.withUnsafeBufferPointer { identityBytes in
                key.withUnsafeBufferPointer { keyBytes in
                    var setup = coap_dtls_cpsk_t()
                    setup.version = UInt8(COAP_DTLS_CPSK_SETUP_VERSION)
                    setup.psk_info.identity = coap_bin_const_t(length: identityBytes.count, s: identityBytes.baseAddress)
                    setup.psk_info.key = coap_bin_const_t(length: keyBytes.count, s: keyBytes.baseAddress)
                    return coap_new_client_session_psk2(loop.context, nil, &server, COAP_PROTO_DTLS, &setup)
                }
            }
        }
        guard let session else {
            phase = .closed
            continuation.resume(throwing: CoAPError.sessionSetupFailed(endpoint: endpoint))
            return
        }
        coap_session_set_app_data(session, Unmanaged.passUnretained(self).toOpaque())
        loop.add(self)
        if case .none = security {
            phase = .connected
            continuation.resume()
        } else if coap_session_get_state(session) == COAP_SESSION_STATE_ESTABLISHED {
            phase = .connected
            continuation.resume()
        } else {
            connectWaiter = (continuation, monotonicNanoseconds() + Self.nanoseconds(seconds), seconds)
        }
    }

    /// Ends every waiter with `error` and frees the libcoap session.
    func close(error: CoAPError, loop: CoAPLoop) {
        fail(error)
        phase = .closed
        if let session {
            // No callback may reach this object once it is gone.
            coap_session_set_app_data(session, nil)
            coap_session_release(session)
            self.session = nil
        }
        loop.remove(self)
    }

    /// Ends every waiter with `error`; the session stays until `close`.
    private func fail(_ error: CoAPError) {
        if case .closed = phase { return }
        phase = .failed(error)
        if let waiter = connectWaiter {
            connectWaiter = nil
            waiter.continuation.resume(throwing: error)
        }
        let waiting = pending
        pending.removeAll()
        for entry in waiting.values { entry.continuation.resume(throwing: error) }
        let watching = observations
        observations.removeAll()
        for entry in watching.values { entry.continuation.finish(throwing: error) }
    }

    // MARK: - Requests

    func send(_ request: OutgoingRequest, seconds: Double, continuation: CheckedContinuation<CoAPResponse, Error>) {
        switch prepare(request) {
        case .failure(let error):
            continuation.resume(throwing: error)
        case .success(let (pdu, token)):
            pending[token] = Pending(label: request.label, continuation: continuation,
                                     deadline: monotonicNanoseconds() + Self.nanoseconds(seconds), seconds: seconds)
            transmit(pdu, token: token, label: request.label)
        }
    }

    func startObservation(_ request: OutgoingRequest, handle: ObservationHandle, seconds: Double,
                          continuation: AsyncThrowingStream<CoAPResponse, Error>.Continuation) {
        switch prepare(request) {
        case .failure(let error):
            continuation.finish(throwing: error)
        case .success(let (pdu, token)):
            observations[token] = Observation(handle: handle, label: request.label, continuation: continuation,
                                              deadline: monotonicNanoseconds() + Self.nanoseconds(seconds), seconds: seconds)
            transmit(pdu, token: token, label: request.label)
        }
    }

    /// Deregisters an observation (RFC 7641 section 3.6) when its stream ends.
    func cancelObservation(_ handle: ObservationHandle) {
        guard let token = observations.first(where: { $0.value.handle === handle })?.key else { return }
        let observation = observations.removeValue(forKey: token)
        observation?.continuation.finish()
        guard let session, case .connected = phase else { return }
        forgetCancelled()
        cancelledTokens.insert(token)
        var tokenBytes = token
        tokenBytes.withUnsafeMutableBufferPointer { bytes in
            var binary = coap_binary_t(length: bytes.count, s: bytes.baseAddress)
            _ = coap_cancel_observe(session, &binary, COAP_MESSAGE_CON)
        }
    }

    private func forgetCancelled() {
        if cancelledTokens.count >= 64 { cancelledTokens.removeAll() }
    }

    /// Builds the PDU: a new token, the options, and the payload (which libcoap sends block-wise
    /// with Block1, RFC 7959 section 2.5, when it does not fit in one message).
    private func prepare(_ request: OutgoingRequest) -> Result<(OpaquePointer, [UInt8]), CoAPError> {
        switch phase {
        case .failed(let error): return .failure(error)
        case .closed: return .failure(.clientClosed)
        case .connecting, .connected: break
        }
        guard let session else { return .failure(.clientClosed) }
        var tokenBuffer = [UInt8](repeating: 0, count: 8)
        var tokenLength = 0
        coap_session_new_token(session, &tokenLength, &tokenBuffer)
        let token = Array(tokenBuffer[0..<tokenLength])
        let type = request.confirmable ? COAP_MESSAGE_CON : COAP_MESSAGE_NON
        guard let pdu = coap_new_pdu(type, coap_pdu_code_t(rawValue: UInt32(request.method.rawValue)), session) else {
            return .failure(.requestRejected(request: request.label, reason: "libcoap could not allocate a message"))
        }
        guard coap_add_token(pdu, tokenLength, tokenBuffer) == 1 else {
            coap_delete_pdu(pdu)
            return .failure(.requestRejected(request: request.label, reason: "libcoap refused the token"))
        }
        var chain: UnsafeMutablePointer<coap_optlist_t>?
        var built = true
        for option in request.options {
            let node = option.value.withUnsafeBufferPointer {
                coap_new_optlist(option.number, $0.count, $0.baseAddress)
            }
            guard let node, coap_insert_optlist(&chain, node) == 1 else {
                built = false
                break
            }
        }
        if built && chain != nil { built = coap_add_optlist_pdu(pdu, &chain) == 1 }
        coap_delete_optlist(chain)
        guard built else {
            coap_delete_pdu(pdu)
            return .failure(.requestRejected(request: request.label, reason: "the options do not fit in one CoAP message"))
        }
        if !request.payload.isEmpty {
            // libcoap keeps reading the body until the last block is acknowledged, so it gets
            // its own copy, freed by libcoap through the release function (also on failure).
            guard let copy = malloc(request.payload.count) else {
                coap_delete_pdu(pdu)
                return .failure(.requestRejected(request: request.label, reason: "out of memory for the payload"))
            }
            request.payload.withUnsafeBytes { copy.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            let added = coap_add_data_large_request(session, pdu, request.payload.count,
                                                    copy.assumingMemoryBound(to: UInt8.self),
                                                    { _, data in free(data) }, copy)
            guard added == 1 else {
                coap_delete_pdu(pdu)
                return .failure(.requestRejected(request: request.label, reason: "libcoap refused the payload"))
            }
        }
        return .success((pdu, token))
    }

    /// Sends a PDU whose waiter is registered under `token`. coap_send takes the PDU in every case.
    private func transmit(_ pdu: OpaquePointer, token: [UInt8], label: String) {
        guard let session else { return }
        if coap_send(session, pdu) == COAP_INVALID_MID {
            finishWaiter(token: token, error: .notDelivered(request: label, endpoint: endpoint, reason: "libcoap could not send it"))
        }
    }

    private func finishWaiter(token: [UInt8], error: CoAPError) {
        if let entry = pending.removeValue(forKey: token) {
            entry.continuation.resume(throwing: error)
        } else if let entry = observations.removeValue(forKey: token) {
            entry.continuation.finish(throwing: error)
        }
    }

    // MARK: - Deadlines

    func expireDeadlines(now: UInt64) {
        if let waiter = connectWaiter, waiter.deadline <= now {
            fail(.dtlsHandshakeTimedOut(endpoint: endpoint, seconds: waiter.seconds))
            return
        }
        let connecting: Bool
        if case .connecting = phase { connecting = true } else { connecting = false }
        for (token, entry) in pending where entry.deadline <= now {
            pending[token] = nil
            entry.continuation.resume(throwing: connecting
                ? CoAPError.dtlsHandshakeTimedOut(endpoint: endpoint, seconds: entry.seconds)
                : CoAPError.timeout(request: entry.label, endpoint: endpoint, seconds: entry.seconds))
        }
        for (token, entry) in observations {
            if let deadline = entry.deadline, deadline <= now {
                observations[token] = nil
                entry.continuation.finish(throwing: CoAPError.timeout(request: entry.label, endpoint: endpoint, seconds: entry.seconds))
            }
        }
    }

    func nextDeadline() -> UInt64? {
        var next = connectWaiter?.deadline
        for entry in pending.values { next = min(next ?? entry.deadline, entry.deadline) }
        for entry in observations.values {
            if let deadline = entry.deadline { next = min(next ?? deadline, deadline) }
        }
        return next
    }

    // MARK: - Callbacks

    /// A response or notification; false for a token nobody waits for.
    func handleResponse(_ pdu: OpaquePointer) -> Bool {
        let tokenValue = coap_pdu_get_token(pdu)
        let token = tokenValue.length == 0 || tokenValue.s == nil
            ? [] : Array(UnsafeBufferPointer(start: tokenValue.s, count: tokenValue.length))
        if let entry = pending.removeValue(forKey: token) {
            entry.continuation.resume(returning: Self.response(from: pdu))
            return true
        }
        if var entry = observations[token] {
            let response = Self.response(from: pdu)
            entry.continuation.yield(response)
            // RFC 7641 section 3.2: a response without Observe (or an error) ends the observation.
            if response.observeSequence == nil || !response.code.isSuccess {
                observations[token] = nil
                entry.continuation.finish()
            } else {
                entry.deadline = nil
                observations[token] = entry
            }
            return true
        }
        return cancelledTokens.remove(token) != nil
    }

    func handleNack(sent: OpaquePointer?, reason: coap_nack_reason_t) {
        if reason == COAP_NACK_TLS_FAILED {
            handshakeFailedOrClosed(alert: false)
            return
        }
        guard let sent else { return }
        let tokenValue = coap_pdu_get_token(sent)
        guard tokenValue.length > 0, let bytes = tokenValue.s else { return }
        let token = Array(UnsafeBufferPointer(start: bytes, count: tokenValue.length))
        let label = pending[token]?.label ?? observations[token]?.label ?? "request"
        let error: CoAPError
        switch reason {
        case COAP_NACK_RST: error = .reset(request: label, endpoint: endpoint)
        case COAP_NACK_TOO_MANY_RETRIES:
            error = .notDelivered(request: label, endpoint: endpoint, reason: "no acknowledgement after all retransmissions")
        case COAP_NACK_ICMP_ISSUE:
            error = .notDelivered(request: label, endpoint: endpoint, reason: "ICMP error (is anything listening there?)")
        default:
            error = .notDelivered(request: label, endpoint: endpoint, reason: "libcoap could not deliver it")
        }
        finishWaiter(token: token, error: error)
    }

    func handleEvent(_ event: coap_event_t) {
        switch event {
        case COAP_EVENT_DTLS_CONNECTED:
            if case .connecting = phase {
                phase = .connected
                if let waiter = connectWaiter {
                    connectWaiter = nil
                    waiter.continuation.resume()
                }
            }
        case COAP_EVENT_DTLS_ERROR:
            handshakeFailedOrClosed(alert: true)
        case COAP_EVENT_DTLS_CLOSED:
            handshakeFailedOrClosed(alert: false)
        default:
            break
        }
    }

    /// A DTLS error (`alert`) or close. A server that cannot verify the handshake (wrong key)
    /// usually drops it in silence instead (RFC 6347 section 4.1.2.7), which ends as a timeout;
    /// a close without an error during the handshake is what an ICMP port unreachable gives.
    private func handshakeFailedOrClosed(alert: Bool) {
        switch phase {
        case .connecting:
            fail(.dtlsHandshakeFailed(endpoint: endpoint, reason: alert
                ? "the server ended it with an alert (wrong PSK or unknown identity?)"
                : "the session closed before it completed (nothing listening on that UDP port?)"))
        case .connected: fail(.sessionClosed(endpoint: endpoint))
        case .failed, .closed: break
        }
    }

    // MARK: - Helpers

    /// A received PDU as plain values (also used by the server for requests).
    static func response(from pdu: OpaquePointer) -> CoAPResponse {
        let code = CoAPCode(rawValue: UInt8(truncatingIfNeeded: coap_pdu_get_code(pdu).rawValue))
        var length = 0
        var data: UnsafePointer<UInt8>?
        var offset = 0
        var total = 0
        var payload: [UInt8] = []
        if coap_get_data_large(pdu, &length, &data, &offset, &total) == 1, let data, length > 0 {
            payload = Array(UnsafeBufferPointer(start: data, count: length))
        }
        var options: [CoAPOption] = []
        var iterator = coap_opt_iterator_t()
        if coap_option_iterator_init(pdu, &iterator, nil) != nil {
            while let option = coap_option_next(&iterator) {
                let count = Int(coap_opt_length(option))
                let value = count > 0 ? coap_opt_value(option).map { Array(UnsafeBufferPointer(start: $0, count: count)) } ?? [] : []
                options.append(CoAPOption(number: iterator.number, value: value))
            }
        }
        return CoAPResponse(code: code, payload: payload, options: options)
    }

    static func nanoseconds(_ seconds: Double) -> UInt64 {
        UInt64(max(0, min(seconds, 86_400)) * 1_000_000_000)
    }
}

/// A socket address from getaddrinfo, copied out so it can cross to the engine's thread.
struct ResolvedAddress: @unchecked Sendable {
    private var storage = sockaddr_storage()
    private var length: socklen_t = 0

    /// The first address getaddrinfo gives for a UDP peer at `host`:`port`.
    static func resolve(host: String, port: UInt16) throws -> ResolvedAddress {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        hints.ai_flags = AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0, let first = list, let address = first.pointee.ai_addr else {
            if list != nil { freeaddrinfo(list) }
            throw CoAPError.resolutionFailed(host: host, reason: String(cString: gai_strerror(status)))
        }
        defer { freeaddrinfo(list) }
        var resolved = ResolvedAddress()
        let size = min(Int(first.pointee.ai_addrlen), MemoryLayout<sockaddr_storage>.size)
        withUnsafeMutableBytes(of: &resolved.storage) { $0.copyMemory(from: UnsafeRawBufferPointer(start: address, count: size)) }
        resolved.length = socklen_t(size)
        return resolved
    }

    func withSockaddr<T>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
        withUnsafeBytes(of: storage) { raw in
            body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), length)
        }
    }
}
