import Foundation
import XCTest
@testable import SottoCoAP
#if canImport(Glibc)
import Glibc
#endif

/// A test step that took longer than it may.
struct DeadlineExceeded: Error {
    let seconds: Double
}

/// CoAPClient against libcoap's own coap-server-openssl on 127.0.0.1.
final class CoAPClientInteropTests: XCTestCase {
    private var server: LibcoapServer!

    override func setUpWithError() throws {
        server = try LibcoapServer()
    }

    override func tearDown() {
        server?.stop()
        server = nil
    }

    private var psk: CoAPSecurity {
        get throws { try CoAPSecurity.psk(identity: Array("sotto-test".utf8), key: Array(server.key.utf8)) }
    }

    private func dtlsClient(timeout: Duration = .seconds(5)) async throws -> CoAPClient {
        try await CoAPClient(host: "127.0.0.1", port: server.dtlsPort, security: psk, timeout: timeout)
    }

    /// Runs `body`, failing the test instead of hanging when it takes longer than `seconds`.
    private func within<T: Sendable>(_ seconds: Double, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let value = first else { throw DeadlineExceeded(seconds: seconds) }
            return value
        }
    }

    func testGetOfTheRootOverDTLSReturnsTheServersGreeting() async throws {
        let client = try await dtlsClient()
        let response = try await client.request(.get, path: "/")
        await client.close()
        XCTAssertEqual(response.code, .content)
        XCTAssertTrue(String(decoding: response.payload, as: UTF8.self).contains("libcoap"))
    }

    func testGetOfTimeReturnsTheTimeWithItsMaxAge() async throws {
        let client = try await dtlsClient()
        let response = try await client.request(.get, path: "/time")
        await client.close()
        XCTAssertEqual(response.code, .content)
        XCTAssertFalse(response.payload.isEmpty)
        // The example server marks the time as valid for one second (Max-Age, RFC 7252 5.10.5).
        XCTAssertEqual(response.option(14)?.uintValue, 1)
    }

    func testPlainCoAPNeedsNoSecurity() async throws {
        let client = try await CoAPClient(uri: CoAPURI(parsing: "coap://127.0.0.1:\(server.port)/"), security: .none)
        let response = try await client.request(.get, path: "/.well-known/core")
        await client.close()
        XCTAssertEqual(response.code, .content)
        XCTAssertEqual(response.contentFormat, 40, "application/link-format")
        XCTAssertTrue(String(decoding: response.payload, as: UTF8.self).contains("</time>"))
    }

    func testPutCreatesPutChangesGetReadsAndDeleteRemoves() async throws {
        let client = try await dtlsClient()
        let created = try await client.request(.put, path: "/item", payload: Array("one".utf8), contentFormat: 0)
        XCTAssertEqual(created.code, .created)
        let response1 = try await client.request(.get, path: "/item")
        XCTAssertEqual(response1.payload, Array("one".utf8))
        let changed = try await client.request(.put, path: "/item", payload: Array("two".utf8), contentFormat: 0)
        XCTAssertEqual(changed.code, .changed)
        let response2 = try await client.request(.get, path: "/item")
        XCTAssertEqual(response2.payload, Array("two".utf8))
        let response3 = try await client.request(.delete, path: "/item")
        XCTAssertEqual(response3.code, .deleted)
        let response4 = try await client.request(.get, path: "/item")
        XCTAssertEqual(response4.code, .notFound)
        await client.close()
    }

    func testPostToANewPathCreatesAResourceAndSaysWhere() async throws {
        let client = try await dtlsClient()
        let response = try await client.request(.post, path: "/posted", payload: Array("hello".utf8))
        await client.close()
        XCTAssertEqual(response.code, .created)
        XCTAssertNotNil(response.option(8), "Location-Path (RFC 7252 section 5.10.7)")
    }

    func testBodiesLargerThanOneKiBTravelWholeBothWays() async throws {
        // 5000 bytes: five 1024-byte blocks at the most, so Block1 going out and Block2 coming back.
        let body = (0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let client = try await dtlsClient()
        let put = try await client.request(.put, path: "/large", payload: body, contentFormat: 42)
        XCTAssertTrue(put.code.isSuccess, put.code.summary)
        let got = try await client.request(.get, path: "/large")
        await client.close()
        XCTAssertEqual(got.code, .content)
        XCTAssertEqual(got.payload.count, body.count)
        XCTAssertEqual(got.payload, body)
    }

    func testObservingTimeDeliversNotificationsWithRisingSequenceNumbers() async throws {
        let client = try await dtlsClient()
        let responses = try await within(10) {
            var seen: [CoAPResponse] = []
            for try await response in client.observe(path: "/time") {
                seen.append(response)
                if seen.count == 3 { break }
            }
            return seen
        }
        // The stream still works for requests after the observation ended.
        let response5 = try await client.request(.get, path: "/time")
        XCTAssertEqual(response5.code, .content)
        await client.close()
        XCTAssertEqual(responses.count, 3, "the first response and two notifications")
        let sequences = responses.compactMap(\.observeSequence)
        XCTAssertEqual(sequences.count, 3)
        XCTAssertEqual(sequences, sequences.sorted())
        XCTAssertTrue(responses.allSatisfy { $0.code == .content && !$0.payload.isEmpty })
    }

    func testObservingAResourceThatIsNotObservableEndsAfterTheFirstResponse() async throws {
        let client = try await dtlsClient()
        let responses = try await within(10) {
            var seen: [CoAPResponse] = []
            for try await response in client.observe(path: "/nothing-here") { seen.append(response) }
            return seen
        }
        await client.close()
        XCTAssertEqual(responses.map(\.code), [.notFound])
    }

    func testAWrongPSKFailsWithAClearErrorWithinTheTimeout() async throws {
        let wrong = try CoAPSecurity.psk(identity: Array("sotto-test".utf8), key: Array("not-the-key".utf8))
        let start = ContinuousClock.now
        do {
            let client = try await CoAPClient(host: "127.0.0.1", port: server.dtlsPort, security: wrong, timeout: .seconds(2))
            await client.close()
            XCTFail("the handshake succeeded with a wrong key")
        } catch let error as CoAPError {
            switch error {
            case .dtlsHandshakeTimedOut, .dtlsHandshakeFailed: break
            default: XCTFail("unexpected \(error)")
            }
            XCTAssertTrue(error.description.contains("PSK"), error.description)
            XCTAssertFalse(error.description.contains("not-the-key"))
        }
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(4))
    }

    func testNothingListeningOnTheDTLSPortFailsFast() async throws {
        let port = server.dtlsPort
        server.stop()
        let start = ContinuousClock.now
        do {
            let client = try await CoAPClient(host: "127.0.0.1", port: port, security: psk, timeout: .seconds(3))
            await client.close()
            XCTFail("connected to a stopped server")
        } catch let error as CoAPError {
            switch error {
            case .dtlsHandshakeFailed, .dtlsHandshakeTimedOut: break
            default: XCTFail("unexpected \(error)")
            }
        }
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(4))
    }

    func testFiftyRequestsOneAfterTheOtherShareOneSession() async throws {
        let client = try await dtlsClient()
        var codes: [CoAPCode] = []
        for _ in 0..<50 { codes.append(try await client.request(.get, path: "/").code) }
        await client.close()
        XCTAssertEqual(codes, Array(repeating: .content, count: 50))
    }

    func testConcurrentRequestsEachGetTheirOwnResponse() async throws {
        let client = try await dtlsClient()
        let results = try await within(30) {
            try await withThrowingTaskGroup(of: (Int, [UInt8]).self) { group in
                for index in 0..<20 {
                    group.addTask {
                        let body = Array("value \(index)".utf8)
                        _ = try await client.request(.put, path: "/concurrent/\(index)", payload: body)
                        return (index, try await client.request(.get, path: "/concurrent/\(index)").payload)
                    }
                }
                var collected: [Int: [UInt8]] = [:]
                for try await (index, payload) in group { collected[index] = payload }
                return collected
            }
        }
        await client.close()
        XCTAssertEqual(results.count, 20)
        for (index, payload) in results { XCTAssertEqual(String(decoding: payload, as: UTF8.self), "value \(index)") }
    }

    func testAResponseThatNeverComesTimesOut() async throws {
        let client = try await dtlsClient(timeout: .seconds(1))
        // SIGSTOP keeps the server's socket but stops it answering.
        kill(server.process.processIdentifier, SIGSTOP)
        defer { kill(server.process.processIdentifier, SIGCONT) }
        let start = ContinuousClock.now
        do {
            _ = try await client.request(.get, path: "/time")
            XCTFail("a stopped server answered")
        } catch CoAPError.timeout(let request, let endpoint, let seconds) {
            XCTAssertEqual(request, "GET /time")
            XCTAssertEqual(endpoint, "127.0.0.1:\(server.dtlsPort)")
            XCTAssertEqual(seconds, 1)
        }
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(3))
        await client.close()
    }

    func testRequestsAfterCloseFailAndTheLastCloseStopsLibcoapsThread() async throws {
        let first = try await dtlsClient()
        let second = try await dtlsClient()
        XCTAssertTrue(CoAPEngine.isRunning)
        await first.close()
        XCTAssertTrue(CoAPEngine.isRunning, "the second client still uses it")
        do {
            _ = try await first.request(.get, path: "/")
            XCTFail("a closed client sent a request")
        } catch CoAPError.clientClosed {}
        let response6 = try await second.request(.get, path: "/")
        XCTAssertEqual(response6.code, .content)
        await second.close()
        XCTAssertFalse(CoAPEngine.isRunning)
        // And a new client starts it again.
        let third = try await dtlsClient()
        let response7 = try await third.request(.get, path: "/")
        XCTAssertEqual(response7.code, .content)
        await third.close()
    }

    func testSchemeAndSecurityMustAgree() async throws {
        do {
            _ = try await CoAPClient(uri: CoAPURI(parsing: "coaps://127.0.0.1:\(server.dtlsPort)/"), security: .none)
            XCTFail("coaps without a PSK")
        } catch CoAPError.securityDoesNotMatchScheme(.coaps) {}
    }
}
