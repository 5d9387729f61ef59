import NIOCore
import NIOSOCKS
import SottoSOCKS
import XCTest

/// SplitMix64: a small seeded generator, so a failing buffer can be reproduced from its seed.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) {
        self.state = seed
    }

    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

final class SOCKSUDPHeaderFuzzTests: XCTestCase {
    /// A buffer that is often close to a valid header, so that the parser's deeper paths are hit and
    /// not only the first checks: mostly zero RSV, mostly known ATYP, domain lengths near the truth,
    /// mostly hostname characters.
    private func nearlyValidDatagram(_ random: inout SeededGenerator) -> [UInt8] {
        func byte() -> UInt8 { UInt8.random(in: 0...255, using: &random) }
        func chance(_ percent: Int) -> Bool { Int.random(in: 0..<100, using: &random) < percent }

        var bytes: [UInt8] = chance(90) ? [0, 0] : [byte(), byte()]
        bytes.append(chance(70) ? 0 : byte())
        let type: UInt8 = chance(90) ? [0x01, 0x03, 0x04].randomElement(using: &random)! : byte()
        bytes.append(type)
        switch type {
        case 0x01, 0x04:
            let length = (type == 0x01 ? 4 : 16) + 2
            for _ in 0..<(chance(85) ? length : Int.random(in: 0..<length, using: &random)) {
                bytes.append(byte())
            }
        case 0x03:
            let domainLength = chance(5) ? 0 : Int.random(in: 1...255, using: &random)
            bytes.append(UInt8(domainLength))
            let hostname = Array("abcxyzABC019-._".utf8)
            let present = chance(85) ? domainLength : Int.random(in: 0...domainLength, using: &random)
            for _ in 0..<present {
                bytes.append(chance(99) ? hostname.randomElement(using: &random)! : byte())
            }
            if present == domainLength {
                for _ in 0..<Int.random(in: 0...2, using: &random) { bytes.append(byte()) }
            }
        default:
            break
        }
        if chance(60) {
            for _ in 0..<Int.random(in: 0...32, using: &random) { bytes.append(byte()) }
        }
        return bytes
    }

    private func uniformlyRandomDatagram(_ random: inout SeededGenerator) -> [UInt8] {
        (0..<Int.random(in: 0...40, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
    }

    /// 20,000 buffers: the parser never traps, and either throws a `SOCKSUDPHeaderError` having
    /// consumed nothing, or returns a header whose encoding is exactly the bytes it consumed.
    func testRandomDatagramsEitherFailCleanlyOrRoundTripExactly() throws {
        let seed: UInt64 = 0x50_7770_5350_434B
        var random = SeededGenerator(seed: seed)
        var parsed = 0
        var rejected = 0
        var rejectedKinds = Set<String>()

        for iteration in 0..<20_000 {
            let bytes = iteration % 4 == 0 ? uniformlyRandomDatagram(&random) : nearlyValidDatagram(&random)
            var buffer = ByteBuffer(bytes: bytes)
            do {
                let header = try buffer.readSOCKSUDPHeader()
                parsed += 1
                let consumed = Array(bytes.prefix(buffer.readerIndex))
                var encoded = ByteBuffer()
                let written = encoded.writeSOCKSUDPHeader(header)
                XCTAssertEqual(Array(encoded.readableBytesView), consumed, "iteration \(iteration), seed \(seed)")
                XCTAssertEqual(written, consumed.count)
                XCTAssertEqual(header.encodedLength, consumed.count)
                XCTAssertEqual(Array(buffer.readableBytesView), Array(bytes.dropFirst(consumed.count)))
            } catch let error as SOCKSUDPHeaderError {
                rejected += 1
                XCTAssertEqual(buffer.readerIndex, 0, "iteration \(iteration): an error consumed bytes")
                XCTAssertFalse(error.description.isEmpty)
                rejectedKinds.insert(String("\(error)".prefix(48)))
            } catch {
                XCTFail("iteration \(iteration): unexpected error type \(type(of: error)): \(error)")
            }
        }
        // The generator must exercise both outcomes, or this test proves little.
        XCTAssertGreaterThan(parsed, 5_000)
        XCTAssertGreaterThan(rejected, 5_000)
        XCTAssertGreaterThanOrEqual(rejectedKinds.count, 5, "\(rejectedKinds)")
    }
}
