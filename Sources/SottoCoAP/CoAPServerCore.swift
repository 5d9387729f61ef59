import CLibCoAP
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The server's part that lives on libcoap's thread (CoAPEngine): its endpoints and resources in
/// the shared context, the PSK lookup and the request handlers. Every method runs on that thread.
final class CoAPServerCore: @unchecked Sendable {
    private let service: MailboxService
    private let store: MessageStore
    private let pskKeys: [[UInt8]: [UInt8]]
    private let identityResolver: (@Sendable ([UInt8]) -> [UInt8]?)?
    private let events: @Sendable (CoAPServerEvent) -> Void
    private let expiryInterval: UInt64

    private var endpoints: [(endpoint: CoAPServerEndpoint, handle: OpaquePointer)] = []
    private var boxResources: [String: OpaquePointer] = [:]
    private var installed = false
    private var nextExpiry: UInt64 = 0
    /// POSTed envelopes wait in the store's pending log (MessageStore) until a flush moves them
    /// into its tables, many in one SQLite commit. The server flushes once no POST came for
    /// `flushIdle`, so that a burst of POSTs is not slowed by its own flushes, and at the latest
    /// `flushDelay` after the first waiting POST; the store flushes on its own at its limits and
    /// before a DELETE or the expiry. Waiting longer costs no durability: the log is as safe as
    /// SQLite's WAL (docs/coap-server.md).
    static let flushIdle: UInt64 = 50_000_000
    static let flushDelay: UInt64 = 1_000_000_000
    /// When the first POST since the last flush came, and the last one; nil while nothing waits.
    private var firstUnflushedPost: UInt64?
    private var lastUnflushedPost: UInt64 = 0

    private var nextFlush: UInt64? {
        firstUnflushedPost.map { min($0 + Self.flushDelay, lastUnflushedPost + Self.flushIdle) }
    }
    private(set) var statistics = CoAPServerStatistics()

    /// Where the key handed to libcoap's PSK callback lives: libcoap copies it before the callback
    /// returns (coap_dtls.h, coap_dtls_id_callback_t), so one buffer serves every handshake.
    private let keyBytes = UnsafeMutablePointer<UInt8>.allocate(capacity: CoAPSecurity.maximumKeyLength)
    private let keyValue = UnsafeMutablePointer<coap_bin_const_t>.allocate(capacity: 1)

    init(configuration: CoAPServerConfiguration, store: MessageStore, events: @escaping @Sendable (CoAPServerEvent) -> Void) {
        self.store = store
        self.service = MailboxService(store: store, maximumEnvelopesPerResponse: configuration.maximumEnvelopesPerResponse)
        self.pskKeys = configuration.pskKeys
        self.identityResolver = configuration.identityResolver
        self.events = events
        self.expiryInterval = UInt64(configuration.expiryIntervalSeconds * 1_000_000_000)
        service.onStoreFault = { error in events(.storeFault("\(error)")) }
    }

    deinit {
        memset(keyBytes, 0, CoAPSecurity.maximumKeyLength)
        keyBytes.deallocate()
        keyValue.deallocate()
    }

    // MARK: - Installing

    func install(loop: CoAPLoop) throws {
        guard loop.server == nil else { throw CoAPServerError.alreadyRunning }
        let context = loop.context
        var setup = coap_dtls_spsk_t()
        setup.version = UInt8(COAP_DTLS_SPSK_SETUP_VERSION)
        setup.validate_id_call_back = coapValidateIdentity
        // Every key comes from the callback, so the context holds no default key.
        guard coap_context_set_psk2(context, &setup) == 1 else {
            throw CoAPServerError.cannotListen(CoAPServerEndpoint(address: CoAPListenAddress(host: "-", port: 0), secure: true),
                                               reason: "libcoap refused the PSK setup (DTLS not available?)")
        }
        loop.server = self
        installed = true

        // /.well-known/core (RFC 6690) is served here rather than by libcoap, which would list
        // every box resource and so tell any PSK holder the names of everyone's boxes.
        let wellKnown = coap_resource_init(coap_make_str_const(".well-known/core"), 0)
        coap_register_handler(wellKnown, COAP_REQUEST_GET, coapWellKnownHandler)
        coap_add_resource(context, wellKnown)

        // The unknown-resource handler sees every path no resource matches: a first request to
        // a box makes it a resource (libcoap cannot observe the unknown resource, resource.h).
        let unknown = coap_resource_unknown_init2(coapMailboxHandler, 0)
        for method in [COAP_REQUEST_GET, COAP_REQUEST_POST, COAP_REQUEST_DELETE, COAP_REQUEST_FETCH,
                       COAP_REQUEST_PATCH, COAP_REQUEST_IPATCH] {
            coap_register_handler(unknown, method, coapMailboxHandler)
        }
        coap_add_resource(context, unknown)

        let boxes = (try? store.boxes()) ?? []
        for box in boxes { makeBoxResource(box, context: context) }
        nextExpiry = monotonicNanoseconds()
    }

    /// Frees the endpoints and resources; the context stays for the clients.
    func uninstall(loop: CoAPLoop) {
        guard installed else { return }
        installed = false
        for entry in endpoints { coap_free_endpoint(entry.handle) }
        endpoints.removeAll()
        for resource in boxResources.values { coap_delete_resource(loop.context, resource) }
        boxResources.removeAll()
        if let wellKnown = coap_get_resource_from_uri_path(loop.context, coap_make_str_const(".well-known/core")) {
            coap_delete_resource(loop.context, wellKnown)
        }
        // A new unknown resource replaces the old one (coap_add_resource frees it); a handlerless
        // one makes unknown paths 4.04 again, as a client-only context answers them.
        if let empty = coap_resource_unknown_init2(nil, 0) { coap_add_resource(loop.context, empty) }
        if loop.server === self { loop.server = nil }
    }

    func listen(loop: CoAPLoop, address: CoAPListenAddress, resolved: ResolvedAddress, secure: Bool) throws -> CoAPServerEndpoint {
        var bind = coap_address_t()
        let wanted = CoAPServerEndpoint(address: address, secure: secure)
        guard resolved.withSockaddr({ sotto_coap_address_set(&bind, $0, $1) }) == 1 else {
            throw CoAPServerError.cannotListen(wanted, reason: "address not usable")
        }
        guard let handle = coap_new_endpoint(loop.context, &bind, secure ? COAP_PROTO_DTLS : COAP_PROTO_UDP) else {
            throw CoAPServerError.cannotListen(wanted, reason: "libcoap could not bind it (port in use, or address not on this host)")
        }
        var bound = address
        if let text = coap_endpoint_str(handle), let port = Self.port(fromEndpointText: String(cString: text)) {
            bound.port = port
        }
        let endpoint = CoAPServerEndpoint(address: bound, secure: secure)
        endpoints.append((endpoint, handle))
        events(.listening(endpoint))
        return endpoint
    }

    func unlisten(_ endpoint: CoAPServerEndpoint) {
        guard let index = endpoints.firstIndex(where: { $0.endpoint == endpoint }) else { return }
        coap_free_endpoint(endpoints[index].handle)
        endpoints.remove(at: index)
        events(.stoppedListening(endpoint))
    }

    /// coap_endpoint_str gives "ADDRESS:PORT" or "[V6]:PORT", then the protocol after a space.
    static func port(fromEndpointText text: String) -> UInt16? {
        let address = text.split(separator: " ").first ?? Substring(text)
        guard let colon = address.lastIndex(of: ":") else { return nil }
        return UInt16(address[address.index(after: colon)...])
    }

    // MARK: - Timers

    func expireDeadlines(now: UInt64) {
        guard installed else { return }
        if let flushAt = nextFlush, now >= flushAt {
            firstUnflushedPost = nil
            do {
                try store.flush()
            } catch {
                events(.storeFault("\(error)"))
                // Still in the log, and in memory: try again later.
                firstUnflushedPost = now
                lastUnflushedPost = now + Self.flushDelay
            }
        }
        guard now >= nextExpiry else { return }
        nextExpiry = now + expiryInterval
        do {
            let removed = try store.expire(now: Self.unixNow())
            if removed > 0 { events(.expired(envelopes: removed)) }
        } catch {
            events(.storeFault("\(error)"))
        }
    }

    func nextDeadline() -> UInt64? {
        guard installed else { return nil }
        return min(nextExpiry, nextFlush ?? .max)
    }

    static func unixNow() -> Int64 { Int64(Date().timeIntervalSince1970) }

    // MARK: - DTLS

    /// The key for `identity`: configured ones first, then the resolver.
    func key(for identity: [UInt8]) -> UnsafePointer<coap_bin_const_t>? {
        guard let key = pskKeys[identity] ?? identityResolver?(identity),
              !key.isEmpty, key.count <= CoAPSecurity.maximumKeyLength else {
            statistics.unknownIdentities += 1
            events(.unknownIdentity(length: identity.count))
            return nil
        }
        key.withUnsafeBufferPointer { keyBytes.update(from: $0.baseAddress!, count: $0.count) }
        keyValue.pointee = coap_bin_const_t(length: key.count, s: UnsafePointer(keyBytes))
        return UnsafePointer(keyValue)
    }

    func handleEvent(_ session: OpaquePointer, _ event: coap_event_t) {
        guard event == COAP_EVENT_DTLS_ERROR, coap_session_get_type(session) == COAP_SESSION_TYPE_SERVER else { return }
        statistics.dtlsErrors += 1
        events(.dtlsError(peer: Self.peer(session)))
    }

    static func peer(_ session: OpaquePointer) -> String {
        guard let remote = coap_session_get_addr_remote(session) else { return "?" }
        var buffer = [UInt8](repeating: 0, count: 64)
        let length = coap_print_addr(remote, &buffer, buffer.count)
        return String(decoding: buffer.prefix(length), as: UTF8.self)
    }

    // MARK: - Requests

    func handle(resource: OpaquePointer, session: OpaquePointer, request: OpaquePointer,
                query: UnsafePointer<coap_string_t>?, response: OpaquePointer) {
        statistics.requests += 1
        let mailboxRequest = Self.mailboxRequest(from: request)
        let reply = service.handle(mailboxRequest, now: Self.unixNow())
        let context = coap_session_get_context(session)!
        var target = resource
        if let box = reply.box {
            target = boxResources[box] ?? makeBoxResource(box, context: context) ?? resource
        }
        write(reply, resource: target, session: session, request: request, query: query, response: response)
        statistics.responsesByClass[reply.code.codeClass, default: 0] += 1
        if reply.boxChanged, let box = reply.box, let boxResource = boxResources[box] {
            // RFC 7641 section 4.2: each observer of the box gets the new state.
            coap_resource_notify_observers(boxResource, nil)
        }
        if reply.boxChanged {
            let now = monotonicNanoseconds()
            if firstUnflushedPost == nil { firstUnflushedPost = now }
            lastUnflushedPost = now
        }
    }

    /// The method, Uri-Path and Uri-Query options and the payload (whole: libcoap reassembles
    /// Block1 bodies), read straight from libcoap's PDU; other options are not copied.
    static func mailboxRequest(from pdu: OpaquePointer) -> MailboxRequest {
        var request = MailboxRequest(method: UInt8(truncatingIfNeeded: coap_pdu_get_code(pdu).rawValue), path: [], query: [], payload: [])
        var iterator = coap_opt_iterator_t()
        if coap_option_iterator_init(pdu, &iterator, nil) != nil {
            while let option = coap_option_next(&iterator) {
                guard iterator.number == CoAPOption.uriPath || iterator.number == CoAPOption.uriQuery else { continue }
                let count = Int(coap_opt_length(option))
                let value = count > 0 ? coap_opt_value(option).map { Array(UnsafeBufferPointer(start: $0, count: count)) } ?? [] : []
                if iterator.number == CoAPOption.uriPath { request.path.append(value) } else { request.query.append(value) }
            }
        }
        var length = 0
        var data: UnsafePointer<UInt8>?
        var offset = 0
        var total = 0
        if coap_get_data_large(pdu, &length, &data, &offset, &total) == 1, let data, length > 0 {
            request.payload = Array(UnsafeBufferPointer(start: data, count: length))
        }
        return request
    }

    func handleWellKnown(request: OpaquePointer, response: OpaquePointer) {
        statistics.requests += 1
        let decoded = ClientSession.response(from: request)
        let filters = decoded.options.filter { $0.number == CoAPOption.uriQuery }.map { String(decoding: $0.value, as: UTF8.self) }
        let body = WellKnownCore.document(filters: filters)
        coap_pdu_set_code(response, coap_pdu_code_t(rawValue: UInt32(CoAPCode.content.rawValue)))
        let format = CoAPOption.encodeUInt(40)  // application/link-format (RFC 6690 section 7.2)
        _ = format.withUnsafeBufferPointer { coap_add_option(response, CoAPOption.contentFormat, $0.count, $0.baseAddress) }
        _ = body.withUnsafeBufferPointer { coap_add_data(response, $0.count, $0.baseAddress) }
        statistics.responsesByClass[2, default: 0] += 1
    }

    @discardableResult
    private func makeBoxResource(_ box: String, context: OpaquePointer) -> OpaquePointer? {
        if let existing = boxResources[box] { return existing }
        guard boxResources.count < store.limits.maximumBoxes else { return nil }
        let path = Array("mb/\(box)".utf8)
        guard let uri = path.withUnsafeBufferPointer({ coap_new_str_const($0.baseAddress, $0.count) }) else { return nil }
        // Confirmable notifications: an observer that went away stops being one after its
        // notifications go unacknowledged (RFC 7641 section 4.5).
        guard let resource = coap_resource_init(uri, COAP_RESOURCE_FLAGS_RELEASE_URI | COAP_RESOURCE_FLAGS_NOTIFY_CON) else {
            coap_delete_str_const(uri)
            return nil
        }
        for method in [COAP_REQUEST_GET, COAP_REQUEST_POST, COAP_REQUEST_DELETE] {
            coap_register_handler(resource, method, coapMailboxHandler)
        }
        coap_resource_set_get_observable(resource, 1)
        coap_add_resource(context, resource)
        boxResources[box] = resource
        statistics.boxResources = boxResources.count
        return resource
    }

    /// Puts a reply into libcoap's response PDU, options in ascending order (RFC 7252 3.1).
    private func write(_ reply: MailboxReply, resource: OpaquePointer, session: OpaquePointer, request: OpaquePointer,
                       query: UnsafePointer<coap_string_t>?, response: OpaquePointer) {
        coap_pdu_set_code(response, coap_pdu_code_t(rawValue: UInt32(reply.code.rawValue)))
        func add(_ number: UInt16, _ value: [UInt8]) {
            _ = value.withUnsafeBufferPointer { coap_add_option(response, number, $0.count, $0.baseAddress) }
        }
        for segment in reply.locationPath { add(8, Array(segment.utf8)) }  // Location-Path
        if let maxAge = reply.maxAge { add(14, CoAPOption.encodeUInt(maxAge)) }  // Max-Age
        if let size1 = reply.size1 { add(60, CoAPOption.encodeUInt(size1)) }  // Size1 (RFC 7959 section 4)
        if let format = reply.contentFormat {
            if reply.payload.isEmpty {
                add(CoAPOption.contentFormat, CoAPOption.encodeUInt(UInt32(format)))
                return
            }
            // libcoap sends it block-wise (RFC 7959 Block2) when it does not fit in one message,
            // and keeps reading the copy until the last block went out.
            guard let copy = malloc(reply.payload.count) else {
                coap_pdu_set_code(response, coap_pdu_code_t(rawValue: UInt32(CoAPCode.internalServerError.rawValue)))
                return
            }
            reply.payload.withUnsafeBytes { copy.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            let added = coap_add_data_large_response(resource, session, request, response, query, format, -1, 0,
                                                     reply.payload.count, copy.assumingMemoryBound(to: UInt8.self),
                                                     { _, data in free(data) }, copy)
            if added != 1 {
                coap_pdu_set_code(response, coap_pdu_code_t(rawValue: UInt32(CoAPCode.internalServerError.rawValue)))
            }
        } else if !reply.payload.isEmpty {
            _ = reply.payload.withUnsafeBufferPointer { coap_add_data(response, $0.count, $0.baseAddress) }
        }
    }
}

/// The `/.well-known/core` document (RFC 6690): the mailbox collection only.
enum WellKnownCore {
    static let links: [(href: String, attributes: [(String, String)])] = [
        ("/mb", [("rt", "sotto.mailbox"), ("ct", "42"), ("title", "POST, GET (observable), DELETE /mb/{box}")]),
    ]

    /// Filtering per RFC 6690 section 4.1: `name=value`, or `name=prefix*`; an unknown
    /// attribute or no match gives an empty document.
    static func document(filters: [String]) -> [UInt8] {
        var chosen = links
        for filter in filters.prefix(1) {
            guard let equals = filter.firstIndex(of: "=") else { continue }
            let name = String(filter[..<equals])
            let value = String(filter[filter.index(after: equals)...])
            chosen = chosen.filter { link in
                let candidates = name == "href" ? [link.href] : link.attributes.filter { $0.0 == name }.map(\.1)
                return candidates.contains { candidate in
                    value.hasSuffix("*") ? candidate.hasPrefix(String(value.dropLast())) : candidate == value
                }
            }
        }
        let text = chosen.map { link in
            "<\(link.href)>" + link.attributes.map { name, value in
                value.allSatisfy(\.isNumber) ? ";\(name)=\(value)" : ";\(name)=\"\(value)\""
            }.joined()
        }.joined(separator: ",")
        return Array(text.utf8)
    }
}

// MARK: - libcoap callbacks

private func serverCore(_ session: OpaquePointer?) -> CoAPServerCore? {
    guard let session, let context = coap_session_get_context(session), let data = coap_get_app_data(context) else { return nil }
    return Unmanaged<CoAPLoop>.fromOpaque(data).takeUnretainedValue().server
}

private let coapMailboxHandler: coap_method_handler_t = { resource, session, request, query, response in
    guard let resource, let session, let request, let response, let core = serverCore(session) else { return }
    core.handle(resource: resource, session: session, request: request, query: query, response: response)
}

private let coapWellKnownHandler: coap_method_handler_t = { _, session, request, _, response in
    guard let session, let request, let response, let core = serverCore(session) else { return }
    core.handleWellKnown(request: request, response: response)
}

private let coapValidateIdentity: coap_dtls_id_callback_t = { identity, session, _ in
    guard let identity, let core = serverCore(session) else { return nil }
    let value = identity.pointee
    let bytes = value.length > 0 && value.s != nil ? Array(UnsafeBufferPointer(start: value.s, count: value.length)) : []
    return core.key(for: bytes)
}

/// Server sessions' events (client sessions carry their ClientSession as app data instead).
func serverSessionEvent(_ session: OpaquePointer?, _ event: coap_event_t) {
    guard let session, let core = serverCore(session) else { return }
    core.handleEvent(session, event)
}
