import XCTest
@testable import sotto_bench

/// The options of `cell-cost` and `cell-pacer`: malformed values are refused before anything runs.
final class CellCommandsTests: XCTestCase {
    func testCellCostRefusesMalformedSizesAndBounds() {
        for arguments in [["--sizes", "abc"], ["--sizes", "514,,1400"], ["--sizes", "514,x"], ["--sizes", ""],
                          ["--sizes", "127"], ["--sizes", "16385"], ["--seconds", "0"], ["--seconds", "11"], ["--cells", "0"]] {
            XCTAssertThrowsError(try CellCost.parse(arguments), "\(arguments)")
        }
        XCTAssertEqual(try CellCost.parse(["--sizes", "514, 1400"]).parsedSizes, [514, 1400])
    }

    func testCellCostMeasuresEachSize() throws {
        // A short run: every size seals and opens (an open of a cell sealed under another counter would throw).
        var command = try CellCost.parse(["--sizes", "128,514", "--seconds", "0.1", "--cells", "3000"])
        try command.run()
    }

    func testCellPacerNeedsExactlyOneSideAndLoopback() {
        for arguments in [[], ["--listen", "127.0.0.1:9", "--connect", "127.0.0.1:9"], ["--connect", "10.0.0.1:9"],
                          ["--listen", "127.0.0.1:9", "--jitter", "1.5"], ["--connect", "127.0.0.1:9", "--connections", "0"],
                          ["--listen", "127.0.0.1:9", "--rate", "0"], ["--listen", "127.0.0.1:9", "--bytes", "0"]] {
            XCTAssertThrowsError(try CellPacer.parse(arguments), "\(arguments)")
        }
        XCTAssertNoThrow(try CellPacer.parse(["--connect", "127.0.0.1:9", "--connections", "10"]))
    }
}
