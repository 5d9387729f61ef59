import CLibCoAP
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Monotonic time in nanoseconds, for deadlines and round-trip times.
func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

/// The one thread that makes every `coap_*` call in the process.
///
/// libcoap 4.3.1 as Debian builds it has no thread-safe mode (DESIGN.md), so its context, its
/// sessions and its global state are touched only here. Other threads hand work over as jobs;
/// a write to an eventfd that sits in libcoap's own epoll set ends `coap_io_process` early so a
/// job runs at once instead of after the poll timeout.
///
/// One engine serves every client in the process. It starts with the first user and frees its
/// context and ends its thread when the last one leaves; a new engine waits for the old thread
/// to end, so two threads never run libcoap at the same time.
final class CoAPEngine: @unchecked Sendable {
    typealias Job = (CoAPLoop) -> Void

    // MARK: - The shared instance

    private static let registryLock = NSLock()
    nonisolated(unsafe) private static var current: CoAPEngine?
    nonisolated(unsafe) private static var users = 0
    nonisolated(unsafe) private static var retiring: CoAPEngine?

    /// The running engine, started if need be. Pair each call with one `release()`.
    static func acquire() throws -> CoAPEngine {
        registryLock.lock()
        defer { registryLock.unlock() }
        if let engine = current {
            users += 1
            return engine
        }
        if let old = retiring {
            old.stopped.wait()
            old.stopped.signal()
            retiring = nil
        }
        let engine = try CoAPEngine()
        current = engine
        users = 1
        return engine
    }

    /// Gives up one use; the last one stops the thread after the jobs already submitted.
    func release() {
        Self.registryLock.lock()
        defer { Self.registryLock.unlock() }
        guard Self.current === self else { return }
        Self.users -= 1
        if Self.users == 0 {
            Self.current = nil
            Self.retiring = self
            lock.lock()
            stopRequested = true
            wakeLocked()
            lock.unlock()
        }
    }

    /// Whether an engine is running: the tests use it to see that the last close frees libcoap.
    static var isRunning: Bool {
        registryLock.lock()
        defer { registryLock.unlock() }
        return current != nil
    }

    // MARK: - Jobs

    private let lock = NSLock()
    private var jobs: [Job] = []
    private var stopRequested = false
    /// Whether the eventfd holds a count the engine has not read yet. Written and read under
    /// `lock`, together with the eventfd itself: the engine reads the eventfd only when a write
    /// is there to read (no `read` ending in EAGAIN per turn), and jobs submitted before it runs
    /// them cost one write between them.
    private var wakePending = false
    private let wakeFD: Int32
    private let stopped = DispatchSemaphore(value: 0)

    /// Runs `job` on the engine's thread. False when the engine is stopping (the job is dropped).
    @discardableResult
    func submit(_ job: @escaping Job) -> Bool {
        lock.lock()
        guard !stopRequested else {
            lock.unlock()
            return false
        }
        jobs.append(job)
        wakeLocked()
        lock.unlock()
        return true
    }

    /// Makes the eventfd readable, so that `coap_io_process` returns; called with `lock` held.
    private func wakeLocked() {
        guard !wakePending else { return }
        var one: UInt64 = 1
        wakePending = write(wakeFD, &one, MemoryLayout<UInt64>.size) == MemoryLayout<UInt64>.size
    }

    private func takeJobs() -> (jobs: [Job], stop: Bool) {
        lock.lock()
        defer { lock.unlock() }
        if wakePending {
            var drained: UInt64 = 0
            _ = read(wakeFD, &drained, MemoryLayout<UInt64>.size)
            wakePending = false
        }
        let taken = jobs
        jobs.removeAll(keepingCapacity: true)
        return (taken, stopRequested)
    }

    // MARK: - The thread

    private init() throws {
        wakeFD = sotto_coap_new_wake_fd()
        guard wakeFD >= 0 else { throw CoAPError.sessionSetupFailed(endpoint: "eventfd: \(String(cString: strerror(errno)))") }
        let started = DispatchSemaphore(value: 0)
        let outcome = StartOutcome()
        let thread = Thread { [self] in run(started: started, outcome: outcome) }
        thread.name = "libcoap"
        thread.start()
        started.wait()
        if !outcome.succeeded {
            stopped.wait()
            throw CoAPError.sessionSetupFailed(endpoint: "libcoap could not create a context")
        }
    }

    private final class StartOutcome: @unchecked Sendable {
        var succeeded = false
    }

    nonisolated(unsafe) private static var libcoapStarted = false

    private func run(started: DispatchSemaphore, outcome: StartOutcome) {
        if !Self.libcoapStarted {
            coap_startup()
            // libcoap's own log lines would repeat what the errors here say better, and at
            // debug level they can show PSK details: keep them all out.
            coap_set_log_handler { _, _ in }
            coap_set_log_level(LOG_EMERG)
            coap_dtls_set_log_level(LOG_EMERG)
            Self.libcoapStarted = true
        }
        guard let context = coap_new_context(nil) else {
            close(wakeFD)
            started.signal()
            stopped.signal()
            return
        }
        // RFC 7959: libcoap requests the blocks and hands over one whole body.
        coap_context_set_block_mode(context, UInt8(COAP_BLOCK_USE_LIBCOAP | COAP_BLOCK_SINGLE_BODY))
        coap_register_response_handler(context, coapResponseHandler)
        coap_register_nack_handler(context, coapNackHandler)
        coap_register_event_handler(context, coapEventHandler)
        let loop = CoAPLoop(context: context)
        coap_set_app_data(context, Unmanaged.passUnretained(loop).toOpaque())
        let wakeInEpoll: Int32 = sotto_coap_watch_wake_fd(context, wakeFD) == 1 ? 1 : 0
        outcome.succeeded = true
        started.signal()

        while true {
            let (batch, stop) = takeJobs()
            for job in batch { job(loop) }
            if stop && batch.isEmpty { break }
            let now = monotonicNanoseconds()
            loop.expireDeadlines(now: now)
            // Never 0: that is COAP_IO_WAIT, which could sleep past a deadline.
            var waitMilliseconds: UInt64 = 1000
            if let next = loop.nextDeadline() {
                waitMilliseconds = next > now ? min(waitMilliseconds, (next - now + 999_999) / 1_000_000) : 1
            }
            _ = sotto_coap_io_process_waking(context, UInt32(max(waitMilliseconds, 1)), wakeFD, wakeInEpoll)
        }
        loop.closeAll(error: .clientClosed)
        coap_set_app_data(context, nil)
        coap_free_context(context)
        close(wakeFD)
        stopped.signal()
    }
}

/// What lives on the engine's thread: the libcoap context and the client sessions on it.
/// Used only from that thread.
final class CoAPLoop {
    let context: OpaquePointer
    private var sessions: [ObjectIdentifier: ClientSession] = [:]
    /// The process's CoAP server, when one runs: its endpoints and resources share this context.
    var server: CoAPServerCore?

    init(context: OpaquePointer) {
        self.context = context
    }

    func add(_ session: ClientSession) { sessions[ObjectIdentifier(session)] = session }
    func remove(_ session: ClientSession) { sessions[ObjectIdentifier(session)] = nil }

    func expireDeadlines(now: UInt64) {
        for session in sessions.values { session.expireDeadlines(now: now) }
        server?.expireDeadlines(now: now)
    }

    func nextDeadline() -> UInt64? {
        var next = server?.nextDeadline()
        for session in sessions.values {
            if let deadline = session.nextDeadline() { next = min(next ?? deadline, deadline) }
        }
        return next
    }

    func closeAll(error: CoAPError) {
        for session in sessions.values { session.close(error: error, loop: self) }
        sessions.removeAll()
        server?.uninstall(loop: self)
    }
}

// MARK: - libcoap callbacks (C function pointers: they find their Swift object through the
// session's app data)

private func clientSession(_ session: OpaquePointer?) -> ClientSession? {
    guard let session, let data = coap_session_get_app_data(session) else { return nil }
    return Unmanaged<ClientSession>.fromOpaque(data).takeUnretainedValue()
}

private let coapResponseHandler: coap_response_handler_t = { session, _, received, _ in
    guard let received, let state = clientSession(session) else { return COAP_RESPONSE_FAIL }
    // FAIL makes libcoap answer with a Reset, which is what RFC 7252 section 5.3.2 asks for a
    // response to an unknown token, and what ends an observation we no longer want (RFC 7641 3.6).
    return state.handleResponse(received) ? COAP_RESPONSE_OK : COAP_RESPONSE_FAIL
}

private let coapNackHandler: coap_nack_handler_t = { session, sent, reason, _ in
    clientSession(session)?.handleNack(sent: sent, reason: reason)
}

private let coapEventHandler: coap_event_handler_t = { session, event in
    if let client = clientSession(session) {
        client.handleEvent(event)
    } else {
        serverSessionEvent(session, event)
    }
    return 0
}
