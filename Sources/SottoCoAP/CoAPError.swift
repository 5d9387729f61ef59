/// What went wrong with a CoAP exchange, in words a person can act on.
///
/// No case ever carries PSK key material: key problems name the position or the kind of fault,
/// never the bytes.
public enum CoAPError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The URI text could not be used; the problem says which part and why.
    case badURI(String, CoAPURIProblem)
    /// coaps:// without a PSK, or a PSK with coap://.
    case securityDoesNotMatchScheme(CoAPURI.Scheme)
    /// A PSK identity or key could not be used.
    case badPSK(PSKProblem)
    /// The host name did not resolve (getaddrinfo's words in `reason`).
    case resolutionFailed(host: String, reason: String)
    /// libcoap refused to set up the session (no socket, or DTLS not available).
    case sessionSetupFailed(endpoint: String)
    /// The DTLS handshake ended early: an alert, or the port refused it (ICMP).
    case dtlsHandshakeFailed(endpoint: String, reason: String)
    /// No DTLS handshake answer arrived in time.
    case dtlsHandshakeTimedOut(endpoint: String, seconds: Double)
    /// No response to a request arrived in time.
    case timeout(request: String, endpoint: String, seconds: Double)
    /// The peer answered a confirmable message with a Reset (RFC 7252 section 4.2).
    case reset(request: String, endpoint: String)
    /// libcoap gave up: retransmissions exhausted, or an ICMP error (nothing listening).
    case notDelivered(request: String, endpoint: String, reason: String)
    /// The DTLS session ended (close_notify or an error) while requests were outstanding.
    case sessionClosed(endpoint: String)
    /// The request could not be built (option or payload refused by libcoap).
    case requestRejected(request: String, reason: String)
    /// The client was closed before or during the request.
    case clientClosed

    public var description: String {
        switch self {
        case .badURI(let uri, let problem):
            return "bad CoAP URI '\(CoAPURI.abbreviated(uri))': \(problem)"
        case .securityDoesNotMatchScheme(.coaps):
            return "coaps:// needs a PSK identity and key"
        case .securityDoesNotMatchScheme(.coap):
            return "a PSK was given for a coap:// URI, which is plain CoAP: use coaps://"
        case .badPSK(let problem):
            return "bad PSK: \(problem)"
        case .resolutionFailed(let host, let reason):
            return "cannot resolve host '\(host)': \(reason)"
        case .sessionSetupFailed(let endpoint):
            return "libcoap could not set up a session to \(endpoint)"
        case .dtlsHandshakeFailed(let endpoint, let reason):
            return "DTLS handshake with \(endpoint) failed: \(reason)"
        case .dtlsHandshakeTimedOut(let endpoint, let seconds):
            // RFC 6347 section 4.1.2.7: a DTLS server drops what it cannot verify, so a wrong key
            // looks the same as a silent peer.
            return "DTLS handshake with \(endpoint) did not complete within \(Self.format(seconds)) s: wrong PSK key or identity, or no DTLS CoAP server there (coaps:// uses port 5684 unless one is given)"
        case .timeout(let request, let endpoint, let seconds):
            return "\(request) to \(endpoint): no response within \(Self.format(seconds)) s"
        case .reset(let request, let endpoint):
            return "\(request) to \(endpoint): the server answered with a Reset (it does not know this message)"
        case .notDelivered(let request, let endpoint, let reason):
            return "\(request) to \(endpoint) was not delivered: \(reason)"
        case .sessionClosed(let endpoint):
            return "the session with \(endpoint) was closed"
        case .requestRejected(let request, let reason):
            return "\(request): \(reason)"
        case .clientClosed:
            return "the CoAP client was closed"
        }
    }

    static func format(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)
    }
}
