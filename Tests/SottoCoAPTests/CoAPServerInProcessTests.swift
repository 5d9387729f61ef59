import Foundation
import XCTest
@testable import SottoCoAP

/// CoAPServer and CoAPClient in one process: both on the one libcoap thread and context.
final class CoAPServerInProcessTests: XCTestCase {
    private var folder: URL!

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("sotto-inproc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    override func tearDown() {
        if let folder { try? FileManager.default.removeItem(at: folder) }
    }

    private func configuration(resolver: (@Sendable ([UInt8]) -> [UInt8]?)? = nil) -> CoAPServerConfiguration {
        CoAPServerConfiguration(dtlsListen: [CoAPListenAddress(host: "127.0.0.1", port: 0)],
                                pskKeys: [Array("static".utf8): Array("static-key".utf8)], identityResolver: resolver,
                                databasePath: folder.appendingPathComponent("s.sqlite").path)
    }

    func testAClientInTheSameProcessPostsGetsAndObserves() async throws {
        let server = try await CoAPServer(configuration: configuration())
        let port = try XCTUnwrap(server.endpoints.first?.address.port)
        XCTAssertNotEqual(port, 0)
        let client = try await CoAPClient(host: "127.0.0.1", port: port,
                                          security: try .psk(identity: Array("static".utf8), key: Array("static-key".utf8)))
        let created = try await client.request(.post, path: "/mb/me", payload: [1, 2, 3])
        XCTAssertEqual(created.code, .created)
        XCTAssertEqual(created.options.filter { $0.number == 8 }.map { String(decoding: $0.value, as: UTF8.self) }, ["mb", "me", "1"])
        var iterator = client.observe(path: "/mb/me").makeAsyncIterator()
        let first = try await iterator.next()
        XCTAssertNotNil(first?.observeSequence)
        XCTAssertEqual(try EnvelopeFraming.decode(first?.payload ?? []).count, 1)
        _ = try await client.request(.post, path: "/mb/me", payload: Array(repeating: 9, count: 2000))
        let notification = try await iterator.next()
        XCTAssertEqual(try EnvelopeFraming.decode(notification?.payload ?? []).map(\.envelope.count), [3, 2000],
                       "a notification larger than one block arrives whole")
        let statistics = await server.statistics()
        XCTAssertGreaterThanOrEqual(statistics.requests, 3)
        XCTAssertEqual(statistics.store.envelopes, 2)
        await client.close()
        await server.stop()
        XCTAssertTrue(server.endpoints.isEmpty)
    }

    func testTheFirstObserveOfANewBoxIsAnsweredWithoutObserveAndTheNextOneRegisters() async throws {
        let server = try await CoAPServer(configuration: configuration())
        let port = try XCTUnwrap(server.endpoints.first?.address.port)
        let client = try await CoAPClient(host: "127.0.0.1", port: port,
                                          security: try .psk(identity: Array("static".utf8), key: Array("static-key".utf8)))
        var responses: [CoAPResponse] = []
        for try await response in client.observe(path: "/mb/fresh") { responses.append(response) }
        XCTAssertEqual(responses.count, 1)
        XCTAssertNil(responses.first?.observeSequence, "libcoap cannot observe the unknown resource")
        var iterator = client.observe(path: "/mb/fresh").makeAsyncIterator()
        let registered = try await iterator.next()
        XCTAssertNotNil(registered?.observeSequence)
        await client.close()
        await server.stop()
    }

    func testTheIdentityResolverAcceptsIdentitiesItKnowsAndOnlyThose() async throws {
        let resolver: @Sendable ([UInt8]) -> [UInt8]? = { identity in
            identity.starts(with: Array("derived-".utf8)) ? Array("key-for-".utf8) + identity : nil
        }
        let server = try await CoAPServer(configuration: configuration(resolver: resolver))
        let port = try XCTUnwrap(server.endpoints.first?.address.port)
        let identity = Array("derived-42".utf8)
        let good = try await CoAPClient(host: "127.0.0.1", port: port,
                                        security: try .psk(identity: identity, key: Array("key-for-".utf8) + identity))
        let response = try await good.request(.get, path: "/mb/x")
        XCTAssertEqual(response.code, .content)
        await good.close()
        do {
            let bad = try await CoAPClient(host: "127.0.0.1", port: port, security: try .psk(identity: Array("other".utf8), key: [1]),
                                           timeout: .seconds(2))
            await bad.close()
            XCTFail("an identity the resolver does not know got in")
        } catch let error as CoAPError {
            switch error {
            case .dtlsHandshakeFailed, .dtlsHandshakeTimedOut: break
            default: XCTFail("\(error)")
            }
        }
        let statistics = await server.statistics()
        XCTAssertEqual(statistics.unknownIdentities, 1)
        await server.stop()
    }

    func testASecondServerInTheProcessIsRefusedAndTheFirstKeepsItsStore() async throws {
        let server = try await CoAPServer(configuration: configuration())
        var other = configuration()
        other.databasePath = folder.appendingPathComponent("other.sqlite").path
        do {
            _ = try await CoAPServer(configuration: other)
            XCTFail("two servers in one process")
        } catch let error as CoAPServerError {
            XCTAssertEqual(error, .alreadyRunning)
        }
        XCTAssertNoThrow(try server.store.put(box: "a", envelope: [1], now: 0))
        await server.stop()
    }

    func testAConfigurationWithoutKeysOrAddressesIsRefused() async throws {
        var noKeys = configuration()
        noKeys.pskKeys = [:]
        do {
            _ = try await CoAPServer(configuration: noKeys)
            XCTFail("started without keys")
        } catch let error as CoAPServerError {
            XCTAssertEqual(error, .noPSK)
        }
        var nowhere = configuration()
        nowhere.dtlsListen = []
        do {
            _ = try await CoAPServer(configuration: nowhere)
            XCTFail("started without an address")
        } catch let error as CoAPServerError {
            XCTAssertEqual(error, .noListenAddress)
        }
    }

    func testEndpointsCanBeAddedAndRemovedWhileRunning() async throws {
        let server = try await CoAPServer(configuration: configuration())
        let extra = try await server.addEndpoint(CoAPListenAddress(host: "127.0.0.1", port: 0))
        XCTAssertEqual(server.endpoints.count, 2)
        let security = try CoAPSecurity.psk(identity: Array("static".utf8), key: Array("static-key".utf8))
        let client = try await CoAPClient(host: "127.0.0.1", port: extra.address.port, security: security)
        let answered = try await client.request(.get, path: "/mb/x")
        XCTAssertEqual(answered.code, .content)
        await client.close()
        await server.removeEndpoint(extra)
        XCTAssertEqual(server.endpoints.count, 1)
        do {
            let gone = try await CoAPClient(host: "127.0.0.1", port: extra.address.port, security: security, timeout: .seconds(2))
            await gone.close()
            XCTFail("the removed endpoint still answered")
        } catch is CoAPError {}
        await server.stop()
    }
}
