import ArgumentParser
import Crypto
import Foundation
import SottoTunnel

/// What sealing and opening one cell costs on this machine, on one core: the tunnel's own
/// `CellSealer` / `CellOpener` (the code every cell goes through) and, beside it, one bare
/// swift-crypto `ChaChaPoly.seal` of the same plaintext, so that the share of the library call
/// is visible. Prints ns per cell and the throughput one core could reach doing nothing else.
struct CellCost: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cell-cost",
        abstract: "Nanoseconds to seal and to open one tunnel cell (CellSealer/CellOpener and bare ChaChaPoly), per cell size.",
        discussion: """
            Each measurement repeats for --seconds (at most --cells cells) after a warm-up and \
            prints 'RESULT name=cell-cost ...' lines. No sockets: CPU only.
            """)

    @Option(help: "Cell sizes in bytes, comma-separated (each within the tunnel's 128 to 16,384).")
    var sizes: String = "514,1400,16384"

    @Option(help: "Seconds per measurement (0.1 to 10).")
    var seconds: Double = 1.0

    @Option(help: "At most this many cells per measurement.")
    var cells: Int = 5_000_000

    @Option(help: "Seal with this many sealers (own keys), round-robin, as an exit does for its tunnels (1 to 100000).")
    var keys: Int = 1

    func validate() throws {
        guard (0.1...10).contains(seconds) else { throw ValidationError("--seconds must be from 0.1 to 10") }
        guard (1...100_000_000).contains(cells) else { throw ValidationError("--cells must be from 1 to 100000000") }
        guard (1...100_000).contains(keys) else { throw ValidationError("--keys must be from 1 to 100000") }
        let range = TunnelConstants.cellSizeRange
        guard let sizes = parsedSizes, sizes.allSatisfy({ range.contains($0) }) else {
            throw ValidationError("--sizes takes cell sizes from \(range.lowerBound) to \(range.upperBound), comma-separated, got '\(self.sizes)'")
        }
    }

    /// The sizes of `--sizes`; nil when one of them is no number (or there is none).
    var parsedSizes: [Int]? {
        let pieces = sizes.split(separator: ",", omittingEmptySubsequences: false)
        let numbers = pieces.compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        return numbers.isEmpty || numbers.count != pieces.count ? nil : numbers
    }

    func run() throws {
        let key = [UInt8](repeating: 7, count: 32)
        for size in parsedSizes ?? [] {
            let plaintext = [UInt8](repeating: 0xA5, count: size - 16)
            var sealers = try (0..<keys).map { index in
                try CellSealer(key: (0..<32).map { UInt8(truncatingIfNeeded: index >> (($0 % 4) * 8)) ^ 7 }, cellSize: size)
            }
            // The cells `open` reads: sealed up front with the same key and counters.
            let sample = min(cells, 4_096)
            var sealedCells: [[UInt8]] = []
            var preSealer = try CellSealer(key: key, cellSize: size)
            for _ in 0..<sample { sealedCells.append(try preSealer.seal(plaintext)) }

            var output: [UInt8] = []
            output.reserveCapacity(size)
            var next = 0
            let sealNs = try measure(cellsPerRound: 1_024) {
                for _ in 0..<1_024 {
                    output.removeAll(keepingCapacity: true)
                    try sealers[next].seal(plaintext, appendingTo: &output)
                    next = next + 1 == sealers.count ? 0 : next + 1
                }
            }
            // Cells open only in counter order: each round opens the pre-sealed cells with a new opener.
            var opened: [UInt8] = []
            opened.reserveCapacity(size)
            let openNs = try measure(cellsPerRound: sample) {
                var opener = try CellOpener(key: key, cellSize: size)
                for cell in sealedCells {
                    opened.removeAll(keepingCapacity: true)
                    try opener.open(cell, appendingTo: &opened)
                }
            }
            let symmetric = SymmetricKey(data: key)
            let nonce = try ChaChaPoly.Nonce(data: [UInt8](repeating: 0, count: 12))
            var sink = 0
            let bareNs = try measure(cellsPerRound: 1_024) {
                for _ in 0..<1_024 {
                    let box = try ChaChaPoly.seal(plaintext, using: symmetric, nonce: nonce)
                    sink &+= box.tag.count
                }
            }
            precondition(sink > 0)
            let perCore = { (ns: Double) in Double(size - 16) / ns * 1e3 }   // MB/s of plaintext
            print(String(format: "cell %5d B: seal %7.0f ns (%6.0f MB/s a core), open %7.0f ns (%6.0f MB/s), bare ChaChaPoly.seal %7.0f ns",
                         size, sealNs, perCore(sealNs), openNs, perCore(openNs), bareNs))
            print("RESULT name=cell-cost cell_size=\(size) keys=\(keys) seal_ns=\(Int(sealNs)) open_ns=\(Int(openNs)) bare_seal_ns=\(Int(bareNs)) "
                + "seal_mb_s=\(Int(perCore(sealNs))) open_mb_s=\(Int(perCore(openNs)))")
        }
    }

    /// Mean nanoseconds per cell of `round` (which handles `cellsPerRound` cells), repeated for
    /// `seconds` or until `cells` cells, after one round of warm-up.
    private func measure(cellsPerRound: Int, _ round: () throws -> Void) throws -> Double {
        let clock = ContinuousClock()
        let budget = Duration.milliseconds(Int(seconds * 1000))
        try round()
        var done = 0
        let start = clock.now
        while done < cells {
            try round()
            done += cellsPerRound
            if clock.now - start >= budget { break }
        }
        let elapsed = clock.now - start
        let ns = Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9
        return ns / Double(done)
    }
}
