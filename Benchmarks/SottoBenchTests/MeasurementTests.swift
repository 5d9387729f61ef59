import XCTest
@testable import sotto_bench

final class EndpointTests: XCTestCase {
    func testParsesIPv4IPv6AndNames() throws {
        XCTAssertEqual(try Endpoint(parsing: "127.0.0.1:1080"), Endpoint(host: .ipv4([127, 0, 0, 1]), port: 1080))
        XCTAssertEqual(try Endpoint(parsing: "[::1]:7"), Endpoint(host: .ipv6([UInt8](repeating: 0, count: 15) + [1]), port: 7))
        XCTAssertEqual(try Endpoint(parsing: "exit:9"), Endpoint(host: .domain("exit"), port: 9))
        XCTAssertEqual(try Endpoint(parsing: "[::1]:7").description, "[::1]:7")
    }

    func testMalformedEndpointsAreRefusedWithAReason() {
        for text in ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "::1:80", "[::1]80", "[::1:80",
                     "[exit]:9", ":80", "exit:", "ex it:9", "127.0.0.1:-1"] {
            XCTAssertThrowsError(try Endpoint(parsing: text), text) { error in
                guard case .malformed = error as? EndpointError else { return XCTFail("\(text): \(error)") }
            }
        }
    }

    func testAnIPv4LiteralWithAnOutOfRangeOctetIsANameNotAnAddress() throws {
        XCTAssertEqual(try Endpoint(parsing: "127.0.0.256:1").host, .domain("127.0.0.256"))
    }

    func testOnlyLoopbackAddressesAreAccepted() throws {
        XCTAssertNoThrow(try Endpoint(parsing: "127.0.0.2:1").requireLoopback(role: "t", allowPeerName: false))
        XCTAssertNoThrow(try Endpoint(parsing: "[::1]:1").requireLoopback(role: "t", allowPeerName: false))
        XCTAssertNoThrow(try Endpoint(parsing: "localhost:1").requireLoopback(role: "t", allowPeerName: false))
        for text in ["10.0.0.1:1", "192.168.1.1:1", "8.8.8.8:53", "[2001:db8::1]:1"] {
            XCTAssertThrowsError(try Endpoint(parsing: text).requireLoopback(role: "t", allowPeerName: true), text) {
                guard case .notLoopback = $0 as? EndpointError else { return XCTFail("\($0)") }
            }
        }
    }

    func testAPeerNameIsAllowedOnlyThroughTheProxyAndOnlyAsASingleLabel() throws {
        XCTAssertNoThrow(try Endpoint(parsing: "exit:7").requireLoopback(role: "t", allowPeerName: true))
        XCTAssertThrowsError(try Endpoint(parsing: "exit:7").requireLoopback(role: "t", allowPeerName: false))
        XCTAssertThrowsError(try Endpoint(parsing: "example.com:80").requireLoopback(role: "t", allowPeerName: true))
    }
}

final class ProbePayloadTests: XCTestCase {
    func testAProbeRoundTrips() {
        var bytes = ProbePayload.template(length: 64)
        ProbePayload(run: 0xDEAD_BEEF, sequence: 0x0102_0304_0506_0708).write(into: &bytes)
        XCTAssertEqual(ProbePayload.parse(bytes), ProbePayload(run: 0xDEAD_BEEF, sequence: 0x0102_0304_0506_0708))
        XCTAssertEqual(ProbePayload.parse(bytes[0...]), ProbePayload(run: 0xDEAD_BEEF, sequence: 0x0102_0304_0506_0708))
    }

    func testAProbeInsideASliceIsReadFromTheSliceStart() {
        var bytes = [UInt8](repeating: 0, count: 10) + ProbePayload.template(length: 16)
        ProbePayload(run: 3, sequence: 4).write(into: &bytes, at: 10)
        XCTAssertEqual(ProbePayload.parse(bytes[10...]), ProbePayload(run: 3, sequence: 4))
    }

    func testForeignOrTruncatedDatagramsAreNoProbes() {
        var bytes = ProbePayload.template(length: 16)
        ProbePayload(run: 1, sequence: 1).write(into: &bytes)
        XCTAssertNil(ProbePayload.parse(Array(bytes.prefix(15))))
        bytes[0] = UInt8(ascii: "X")
        XCTAssertNil(ProbePayload.parse(bytes))
        XCTAssertNil(ProbePayload.parse([UInt8]()))
    }

    func testTheFillerIsNotConstant() {
        let filler = ProbePayload.template(length: 1200)
        XCTAssertGreaterThan(Set(filler).count, 200)
    }
}

final class LatencySummaryTests: XCTestCase {
    func testNearestRankPercentiles() throws {
        let summary = try XCTUnwrap(LatencySummary(samples: (1...100).reversed().map(UInt64.init)))
        XCTAssertEqual(summary.p50, 50)
        XCTAssertEqual(summary.p99, 99)
        XCTAssertEqual(summary.minimum, 1)
        XCTAssertEqual(summary.maximum, 100)
        XCTAssertEqual(summary.mean, 50)
    }

    func testASingleSampleIsEveryPercentile() throws {
        let summary = try XCTUnwrap(LatencySummary(samples: [7]))
        XCTAssertEqual([summary.p50, summary.p99, summary.minimum, summary.maximum], [7, 7, 7, 7])
    }

    func testP99OfFewSamplesIsTheLargest() throws {
        XCTAssertEqual(try XCTUnwrap(LatencySummary(samples: [1, 2, 3, 1000])).p99, 1000)
    }

    func testNoSamplesGiveNoSummary() {
        XCTAssertNil(LatencySummary(samples: []))
    }
}

final class ZeroLossRateSearchTests: XCTestCase {
    /// Runs the search against a path that loses datagrams above `capacity`.
    private func search(capacity: Int, start: Int = 1000, maximum: Int = 1_000_000) -> (ZeroLossRateSearch, [Int]) {
        var search = ZeroLossRateSearch(start: start, maximum: maximum)
        var offered: [Int] = []
        while let rate = search.nextRate {
            offered.append(rate)
            search.record(rate: rate, lossFree: rate <= capacity)
        }
        return (search, offered)
    }

    func testDoublesThenBisectsToWithinTheResolution() {
        let (result, offered) = search(capacity: 50_000)
        XCTAssertEqual(Array(offered.prefix(7)), [1000, 2000, 4000, 8000, 16000, 32000, 64000])
        XCTAssertLessThanOrEqual(result.bestLossFree, 50_000)
        XCTAssertGreaterThanOrEqual(Double(result.bestLossFree), 50_000 * 0.95)
        XCTAssertLessThanOrEqual(offered.count, 20)
    }

    func testStopsAtTheMaximumWhenNothingIsLost() {
        let (result, offered) = search(capacity: .max, maximum: 5000)
        XCTAssertEqual(offered, [1000, 2000, 4000, 5000])
        XCTAssertEqual(result.bestLossFree, 5000)
        XCTAssertNil(result.lowestLossy)
    }

    func testAPathThatLosesEvenTheMinimumRateScoresZero() {
        let (result, offered) = search(capacity: 0)
        XCTAssertEqual(result.bestLossFree, 0)
        XCTAssertEqual(offered.last, 100)
    }

    func testALowCapacityBelowTheStartIsFoundByHalving() {
        let (result, _) = search(capacity: 300)
        XCTAssertLessThanOrEqual(result.bestLossFree, 300)
        XCTAssertGreaterThanOrEqual(result.bestLossFree, 250)
    }

    func testNeverSpendsMoreThanTheProbeBudget() {
        var search = ZeroLossRateSearch(start: 1, minimum: 1, maximum: 1 << 30, resolution: 1e-9, maximumProbes: 5)
        var count = 0
        while let rate = search.nextRate {
            count += 1
            search.record(rate: rate, lossFree: rate < 12_345)
        }
        XCTAssertEqual(count, 5)
    }
}

final class SinkFramingTests: XCTestCase {
    func testATransferSplitAcrossChunksCompletesOnce() throws {
        var framing = SinkFraming()
        let message = SinkFraming.encodeLength(10) + [UInt8](repeating: 7, count: 10)
        var completed: [UInt64] = []
        for byte in message { completed += try framing.consume([byte]) }
        XCTAssertEqual(completed, [10])
        XCTAssertEqual(framing.totalBytes, 10)
    }

    func testTransfersFollowingEachOtherInOneChunkAreAllAcknowledged() throws {
        var framing = SinkFraming()
        let chunk = SinkFraming.encodeLength(3) + [1, 2, 3] + SinkFraming.encodeLength(0) + SinkFraming.encodeLength(2) + [9, 9]
        XCTAssertEqual(try framing.consume(chunk), [3, 0, 2])
    }

    func testAnIncompleteTransferIsNotAcknowledged() throws {
        var framing = SinkFraming()
        XCTAssertEqual(try framing.consume(SinkFraming.encodeLength(5) + [1, 2, 3, 4]), [])
        var truncatedHeader = SinkFraming()
        XCTAssertEqual(try truncatedHeader.consume(Array(SinkFraming.encodeLength(5).prefix(7))), [])
    }

    func testAnOversizedDeclaredLengthIsRefused() {
        var framing = SinkFraming()
        XCTAssertThrowsError(try framing.consume(Array("GET / HTTP/1.1\r\n".utf8))) {
            guard case .transferTooLong = $0 as? SinkFramingError else { return XCTFail("\($0)") }
        }
    }

    func testLengthEncodingRoundTrips() {
        XCTAssertEqual(SinkFraming.decodeLength(SinkFraming.encodeLength(0x0102_0304_0506_0708)), 0x0102_0304_0506_0708)
        XCTAssertNil(SinkFraming.decodeLength([1, 2, 3]))
    }
}

final class HelperTests: XCTestCase {
    func testByteCountsTakeBinarySuffixes() throws {
        XCTAssertEqual(try parseByteCount("1048576"), 1 << 20)
        XCTAssertEqual(try parseByteCount("64K"), 64 << 10)
        XCTAssertEqual(try parseByteCount("256m"), 256 << 20)
        XCTAssertEqual(try parseByteCount("1G"), 1 << 30)
        for bad in ["", "M", "1.5G", "-1", "12Q", "99999999999999999999G", "١٢"] {
            XCTAssertThrowsError(try parseByteCount(bad), bad)
        }
    }

    func testDecimalFormatting() {
        XCTAssertEqual(decimal(27.04), "27.0")
        XCTAssertEqual(decimal(0.05, places: 2), "0.05")
        XCTAssertEqual(decimal(69939.4, places: 0), "69939")
        XCTAssertEqual(decimal(-1.25, places: 1), "-1.3")
        XCTAssertEqual(decimal(.nan), "nan")
    }

    func testResultLinesAreOneTokenPerField() {
        let line = ResultLine(name: "udp_rtt", fields: [("label", "a b"), ("p50_us", "1.0")], human: "")
        XCTAssertEqual(line.machineReadable, "RESULT name=udp_rtt label=a_b p50_us=1.0")
    }

    func testProcNetTableFindsListenersByPortAndState() {
        let table = """
              sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
               0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
               1: 0100007F:0050 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1
            """
        XCTAssertTrue(ProcNetTable.hasSocket(in: table, port: 8080, state: .tcpListen))
        XCTAssertFalse(ProcNetTable.hasSocket(in: table, port: 80, state: .tcpListen))
        XCTAssertFalse(ProcNetTable.hasSocket(in: table, port: 8080, state: .udpUnconnected))
        XCTAssertFalse(ProcNetTable.hasSocket(in: "garbage\nno fields here", port: 1, state: .tcpListen))
    }
}
