import Foundation
import XCTest
@testable import SottoCoAP

/// The mailbox protocol without libcoap: requests in, replies out, over a real store file.
final class MailboxServiceTests: XCTestCase {
    private var folder: URL!
    private var store: MessageStore!
    private var service: MailboxService!

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("sotto-mailbox-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        store = try MessageStore(path: folder.appendingPathComponent("s.sqlite").path,
                                 limits: MessageStoreLimits(maximumEnvelopeBytes: 100, maximumEnvelopesPerBox: 3))
        service = MailboxService(store: store, maximumEnvelopesPerResponse: 2, maximumResponseBytes: 150)
    }

    override func tearDown() {
        store?.close()
        if let folder { try? FileManager.default.removeItem(at: folder) }
    }

    private func request(_ method: CoAPMethod, _ path: [String], query: [String] = [], payload: [UInt8] = []) -> MailboxReply {
        service.handle(MailboxRequest(method: method.rawValue, path: path.map { Array($0.utf8) },
                                      query: query.map { Array($0.utf8) }, payload: payload), now: 1000)
    }

    func testPostAnswersCreatedWithTheIDAsLocationPathAndMarksTheBoxChanged() {
        let reply = request(.post, ["mb", "alice"], payload: [1, 2])
        XCTAssertEqual(reply.code, .created)
        XCTAssertEqual(reply.locationPath, ["mb", "alice", "1"])
        XCTAssertEqual(reply.box, "alice")
        XCTAssertTrue(reply.boxChanged)
    }

    func testGetFramesTheWaitingEnvelopesAndHonoursLimitAndAfter() throws {
        _ = request(.post, ["mb", "alice"], payload: [1])
        _ = request(.post, ["mb", "alice"], payload: [2, 2])
        _ = request(.post, ["mb", "alice"], payload: [3])
        let all = request(.get, ["mb", "alice"])
        XCTAssertEqual(all.code, .content)
        XCTAssertEqual(all.contentFormat, 42)
        XCTAssertFalse(all.boxChanged)
        let decoded = try EnvelopeFraming.decode(all.payload)
        XCTAssertEqual(decoded.map(\.id), [1, 2], "at most maximumEnvelopesPerResponse")
        XCTAssertEqual(decoded.map(\.envelope), [[1], [2, 2]])
        XCTAssertEqual(try EnvelopeFraming.decode(request(.get, ["mb", "alice"], query: ["after=2"]).payload).map(\.id), [3])
        XCTAssertEqual(try EnvelopeFraming.decode(request(.get, ["mb", "alice"], query: ["limit=1"]).payload).map(\.id), [1])
    }

    func testGetStopsAtTheResponseByteLimitButAlwaysGivesOneEnvelope() throws {
        _ = request(.post, ["mb", "big"], payload: Array(repeating: 7, count: 100))
        _ = request(.post, ["mb", "big"], payload: Array(repeating: 8, count: 100))
        let reply = request(.get, ["mb", "big"])
        XCTAssertEqual(try EnvelopeFraming.decode(reply.payload).map(\.id), [1])
    }

    func testAnEmptyBoxGivesAnEmptyBody() {
        let reply = request(.get, ["mb", "nobody"])
        XCTAssertEqual(reply.code, .content)
        XCTAssertEqual(reply.payload, [])
        XCTAssertEqual(reply.box, "nobody")
    }

    func testDeleteTakesIDsFromTheQueryOrThePayload() throws {
        for value in 1...3 { _ = request(.post, ["mb", "alice"], payload: [UInt8(value)]) }
        XCTAssertEqual(request(.delete, ["mb", "alice"], query: ["id=1,2"]).code, .deleted)
        XCTAssertEqual(request(.delete, ["mb", "alice"], payload: [0, 0, 0, 0, 0, 0, 0, 3]).code, .deleted)
        XCTAssertEqual(request(.get, ["mb", "alice"]).payload, [])
        XCTAssertEqual(request(.delete, ["mb", "alice"], query: ["id=3"]).code, .deleted, "acknowledging twice is fine")
    }

    func testBadDeletesAreBadRequests() {
        XCTAssertEqual(request(.delete, ["mb", "alice"]).code, .badRequest)
        XCTAssertEqual(request(.delete, ["mb", "alice"], query: ["id=x"]).code, .badRequest)
        XCTAssertEqual(request(.delete, ["mb", "alice"], query: ["id=0"]).code, .badRequest)
        XCTAssertEqual(request(.delete, ["mb", "alice"], query: ["id=1,,2"]).code, .badRequest)
        XCTAssertEqual(request(.delete, ["mb", "alice"], payload: [1, 2, 3]).code, .badRequest, "not a multiple of 8")
        XCTAssertEqual(request(.delete, ["mb", "alice"], payload: [0x80, 0, 0, 0, 0, 0, 0, 1]).code, .badRequest, "above Int64.max")
        let many = (1...257).map(String.init).joined(separator: ",")
        XCTAssertEqual(request(.delete, ["mb", "alice"], query: ["id=\(many)"]).code, .badRequest)
    }

    func testBadBoxNamesAreBadRequestsWithADiagnostic() {
        for name in ["", ".hidden", "a b", "ä", String(repeating: "x", count: 65), "a/b", "a%2F"] {
            let reply = request(.post, ["mb", name], payload: [1])
            XCTAssertEqual(reply.code, .badRequest, name)
            XCTAssertTrue(String(decoding: reply.payload, as: UTF8.self).hasPrefix("bad box name"), name)
            XCTAssertNil(reply.box)
        }
        XCTAssertEqual(request(.post, ["mb", String(repeating: "x", count: 64)], payload: [1]).code, .created)
        XCTAssertEqual(request(.post, ["mb", "A-z_0.9"], payload: [1]).code, .created)
    }

    func testOtherPathsAreNotFoundAndOtherMethodsNotAllowed() {
        XCTAssertEqual(request(.get, ["other"]).code, .notFound)
        XCTAssertEqual(request(.get, ["mb"]).code, .notFound)
        XCTAssertEqual(request(.get, ["mb", "a", "b"]).code, .notFound)
        XCTAssertEqual(request(.get, []).code, .notFound)
        XCTAssertEqual(request(.put, ["mb", "alice"], payload: [1]).code, .methodNotAllowed)
    }

    func testLimitsMapToTheirCodes() {
        let large = request(.post, ["mb", "alice"], payload: Array(repeating: 0, count: 101))
        XCTAssertEqual(large.code, .requestEntityTooLarge)
        XCTAssertEqual(large.size1, 100)
        XCTAssertEqual(request(.post, ["mb", "alice"], payload: []).code, .badRequest)
        for _ in 0..<3 { _ = request(.post, ["mb", "alice"], payload: [1]) }
        let full = request(.post, ["mb", "alice"], payload: [1])
        XCTAssertEqual(full.code, .tooManyRequests)
        XCTAssertEqual(full.maxAge, MailboxService.retryAfterSeconds)
        XCTAssertTrue(String(decoding: full.payload, as: UTF8.self).contains("holds 3 envelopes"))
    }

    func testBadQueriesAreBadRequests() {
        XCTAssertEqual(request(.post, ["mb", "a"], query: ["ttl=abc"], payload: [1]).code, .badRequest)
        XCTAssertEqual(request(.post, ["mb", "a"], query: ["ttl=0"], payload: [1]).code, .badRequest)
        XCTAssertEqual(request(.post, ["mb", "a"], query: ["colour=red"], payload: [1]).code, .badRequest)
        XCTAssertEqual(request(.post, ["mb", "a"], query: ["novalue"], payload: [1]).code, .badRequest)
        XCTAssertEqual(request(.get, ["mb", "a"], query: ["limit=0"]).code, .badRequest)
        XCTAssertEqual(request(.get, ["mb", "a"], query: ["limit=3"]).code, .badRequest, "above the response maximum")
        XCTAssertEqual(request(.get, ["mb", "a"], query: ["after=-1"]).code, .badRequest)
        let notUTF8 = service.handle(MailboxRequest(method: 1, path: [Array("mb".utf8), Array("a".utf8)], query: [[0xFF, 0x3D]],
                                                    payload: []), now: 0)
        XCTAssertEqual(notUTF8.code, .badRequest)
    }

    func testPostWithTTLSetsTheExpiry() throws {
        _ = request(.post, ["mb", "a"], query: ["ttl=30"], payload: [1])
        XCTAssertEqual(try store.list(box: "a", limit: 1, now: 1000).first?.expiresAt, 1030)
    }
}

final class EnvelopeFramingTests: XCTestCase {
    func testEncodeThenDecodeGivesTheEnvelopesBack() throws {
        let envelopes: [(id: Int64, envelope: [UInt8])] = [(1, [1, 2, 3]), (Int64.max, []), (300, Array(repeating: 9, count: 70_000))]
        let body = EnvelopeFraming.encode(envelopes)
        XCTAssertEqual(Array(body.prefix(12)), [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3])
        let decoded = try EnvelopeFraming.decode(body)
        XCTAssertEqual(decoded.map(\.id), envelopes.map(\.id))
        XCTAssertEqual(decoded.map(\.envelope), envelopes.map(\.envelope))
        XCTAssertTrue(try EnvelopeFraming.decode([]).isEmpty)
    }

    func testTruncatedHeadersAndBodiesAreRefusedWithTheirOffset() {
        let body = EnvelopeFraming.encode([(1, [1, 2, 3]), (2, [4])])
        for cut in [1, 11, 12, 14, 15 + 11, body.count - 1] {
            XCTAssertThrowsError(try EnvelopeFraming.decode(Array(body.prefix(cut))), "cut at \(cut)") { error in
                XCTAssertNotNil(error as? EnvelopeFraming.Problem)
            }
        }
        XCTAssertThrowsError(try EnvelopeFraming.decode(Array(body.prefix(15 + 5)))) { error in
            XCTAssertEqual((error as? EnvelopeFraming.Problem)?.offset, 15)
        }
    }

    func testAnOversizedLengthOrIDIsRefused() {
        XCTAssertThrowsError(try EnvelopeFraming.decode([0, 0, 0, 0, 0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF, 1]))
        XCTAssertThrowsError(try EnvelopeFraming.decode([0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]))
    }
}

final class WellKnownCoreTests: XCTestCase {
    func testTheDocumentListsOnlyTheMailboxCollection() {
        let text = String(decoding: WellKnownCore.document(filters: []), as: UTF8.self)
        XCTAssertTrue(text.hasPrefix("</mb>;rt=\"sotto.mailbox\";ct=42"), text)
        XCTAssertEqual(text.filter { $0 == "<" }.count, 1, "one link")
    }

    func testFiltersMatchExactlyOrByPrefix() {
        XCTAssertFalse(WellKnownCore.document(filters: ["rt=sotto.mailbox"]).isEmpty)
        XCTAssertFalse(WellKnownCore.document(filters: ["rt=sotto*"]).isEmpty)
        XCTAssertFalse(WellKnownCore.document(filters: ["href=/mb"]).isEmpty)
        XCTAssertTrue(WellKnownCore.document(filters: ["rt=other"]).isEmpty)
        XCTAssertTrue(WellKnownCore.document(filters: ["if=x"]).isEmpty)
    }
}

final class MailboxNameTests: XCTestCase {
    func testNamesFollowTheCharsetAndLengthRules() {
        XCTAssertNil(MailboxName.problem(Array("alice".utf8)))
        XCTAssertEqual(MailboxName.problem([]), .empty)
        XCTAssertEqual(MailboxName.problem(Array(repeating: 0x61, count: 65)), .tooLong(bytes: 65, limit: 64))
        XCTAssertEqual(MailboxName.problem(Array("ab c".utf8)), .badCharacter(position: 3))
        XCTAssertEqual(MailboxName.problem(Array(".x".utf8)), .leadingDot)
        XCTAssertEqual(MailboxName.problem([0x61, 0x00]), .badCharacter(position: 2))
    }
}

/// The server moves POSTed envelopes from the store's pending log into its tables on its own
/// timers (CoAPServerCore.flushIdle, flushDelay), with libcoap and a client in this process.
final class PendingFlushTimerTests: XCTestCase {
    func testPostedEnvelopesReachTheTablesSoonAfterThePostsStop() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("sotto-flush-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let configuration = CoAPServerConfiguration(dtlsListen: [CoAPListenAddress(host: "127.0.0.1", port: 0)],
                                                    pskKeys: [Array("flush".utf8): Array("flush-key".utf8)],
                                                    databasePath: folder.appendingPathComponent("s.sqlite").path)
        let server = try await CoAPServer(configuration: configuration)
        let port = try XCTUnwrap(server.endpoints.first?.address.port)
        let client = try await CoAPClient(host: "127.0.0.1", port: port,
                                          security: try .psk(identity: Array("flush".utf8), key: Array("flush-key".utf8)))
        for index in 0..<3 {
            let created = try await client.request(.post, path: "/mb/box", payload: [UInt8(index)])
            XCTAssertEqual(created.code, .created)
        }
        let right = await server.statistics().store
        XCTAssertEqual(right.envelopes, 3)
        // Usually 3 pending and no flush yet; a pause of over 50 ms between the POSTs (a busy
        // machine) may have flushed some already.
        XCTAssertEqual(right.stored, 3)
        XCTAssertEqual(right.pending + right.flushes > 0, true, "the envelopes are pending or were flushed")
        // flushIdle is 50 ms: poll for up to 3 s.
        let deadline = Date().addingTimeInterval(3)
        var counts = right
        while Date() < deadline {
            counts = await server.statistics().store
            if counts.pending == 0 { break }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        XCTAssertEqual(counts.pending, 0)
        XCTAssertTrue((1...3).contains(counts.flushes), "\(counts.flushes) flushes")
        XCTAssertEqual(counts.envelopes, 3)
        let listed = try await client.request(.get, path: "/mb/box")
        XCTAssertEqual(try EnvelopeFraming.decode(listed.payload).map(\.envelope), [[0], [1], [2]])
        await client.close()
        await server.stop()
    }
}
