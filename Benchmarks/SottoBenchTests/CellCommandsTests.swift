import NIOCore
import SottoTunnel
import XCTest
@testable import sotto_bench

/// The options of `cell-cost` and `cell-pacer`: malformed values are refused before anything runs.
final class CellCommandsTests: XCTestCase {
    func testCellCostRefusesMalformedSizesAndBounds() {
        for arguments in [["--sizes", "abc"], ["--sizes", "514,,1400"], ["--sizes", "514,x"], ["--sizes", ""],
                          ["--sizes", "127"], ["--sizes", "16385"], ["--seconds", "0"], ["--seconds", "11"], ["--cells", "0"],
                          ["--keys", "0"], ["--keys", "100001"], ["--keys", "x"]] {
            XCTAssertThrowsError(try CellCost.parse(arguments), "\(arguments)")
        }
        XCTAssertEqual(try CellCost.parse(["--sizes", "514, 1400"]).parsedSizes, [514, 1400])
    }

    func testCellCostMeasuresEachSize() throws {
        // A short run: every size seals and opens (an open of a cell sealed under another counter would throw).
        var command = try CellCost.parse(["--sizes", "128,514", "--seconds", "0.1", "--cells", "3000", "--keys", "3"])
        try command.run()
    }

    func testCellPacerNeedsExactlyOneSideAndLoopback() {
        for arguments in [[], ["--listen", "127.0.0.1:9", "--connect", "127.0.0.1:9"], ["--connect", "10.0.0.1:9"],
                          ["--listen", "127.0.0.1:9", "--jitter", "1.5"], ["--connect", "127.0.0.1:9", "--connections", "0"],
                          ["--listen", "127.0.0.1:9", "--rate", "0"], ["--listen", "127.0.0.1:9", "--bytes", "0"],
                          ["--listen", "127.0.0.1:9", "--seal", "--bytes", "20"], ["--listen", "127.0.0.1:9", "--seal", "--bytes", "16385"]] {
            XCTAssertThrowsError(try CellPacer.parse(arguments), "\(arguments)")
        }
        XCTAssertNoThrow(try CellPacer.parse(["--connect", "127.0.0.1:9", "--connections", "10"]))
        XCTAssertNoThrow(try CellPacer.parse(["--listen", "127.0.0.1:9", "--bytes", "20"]))
        XCTAssertNoThrow(try CellPacer.parse(["--listen", "127.0.0.1:9", "--seal", "--bytes", "514"]))
    }

    /// `--seal`: cells split across reads open in order; a flipped bit poisons the connection.
    func testSealedPacerOpensCellsAcrossReadsAndRefusesATamperedOne() throws {
        let size = 514
        var sender = try CellCrypto(keys: CellCipherKeys(listening: false), cellSize: size)
        var receiver = try CellCrypto(keys: CellCipherKeys(listening: true), cellSize: size)
        var wire: [UInt8] = []
        for _ in 0..<5 { try sender.sealer.seal(sender.plaintext, appendingTo: &wire) }
        // Reads of 300, 1,000 and the rest: whole cells are opened as soon as they are complete.
        var opened: [Int?] = []
        for range in [0..<300, 300..<1_300, 1_300..<wire.count] {
            var buffer = ByteBuffer(bytes: wire[range])
            opened.append(receiver.open(&buffer))
        }
        XCTAssertEqual(opened, [0, 2, 3])
        XCTAssertEqual(receiver.opener.counter, 5)

        // The same side's own key does not open its cells, and a flipped bit is refused.
        var wrongSide = try CellCrypto(keys: CellCipherKeys(listening: false), cellSize: size)
        var buffer = ByteBuffer(bytes: wire[0..<size])
        XCTAssertNil(wrongSide.open(&buffer))
        var next: [UInt8] = []
        try sender.sealer.seal(sender.plaintext, appendingTo: &next)
        next[100] ^= 1
        buffer = ByteBuffer(bytes: next)
        XCTAssertNil(receiver.open(&buffer))
    }
}
