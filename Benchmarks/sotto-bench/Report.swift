#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A failure the person running the benchmark can act on.
struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Progress and diagnostics go to stderr so stdout carries only results.
func benchLog(_ message: String) {
    fputs("sotto-bench: \(message)\n", stderr)
}

/// One result: a machine-readable `RESULT name=... key=value ...` line (values never contain
/// spaces) and a line for people, both on stdout.
struct ResultLine {
    var name: String
    var fields: [(String, String)]
    var human: String

    var machineReadable: String {
        (["RESULT", "name=\(name)"] + fields.map { "\($0.0)=\($0.1.replacingSpaces())" }).joined(separator: " ")
    }

    func emit() {
        print(machineReadable)
        print(human)
        fflush(stdout)
    }
}

/// Fixed-point text for a measurement (no Foundation needed).
func decimal(_ value: Double, places: Int = 1) -> String {
    guard value.isFinite else { return "nan" }
    var scale = 1.0
    for _ in 0..<places { scale *= 10 }
    let scaled = (abs(value) * scale).rounded()
    let whole = Int(scaled / scale)
    let fraction = Int(scaled - Double(whole) * scale)
    let sign = value < 0 && scaled != 0 ? "-" : ""
    guard places > 0 else { return "\(sign)\(whole)" }
    var fractionText = String(fraction)
    while fractionText.count < places { fractionText = "0" + fractionText }
    return "\(sign)\(whole).\(fractionText)"
}

func microseconds(_ nanoseconds: UInt64) -> String {
    decimal(Double(nanoseconds) / 1_000, places: 1)
}

extension String {
    fileprivate func replacingSpaces() -> String {
        String(map { $0 == " " ? "_" : $0 })
    }
}

/// Ends the process at once (the watchdog's way out of a run that overstays its limit).
func terminateProcess(status: Int32) -> Never {
    exit(status)
}
