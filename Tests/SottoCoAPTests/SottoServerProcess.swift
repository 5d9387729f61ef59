import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// What a finished tool run printed.
struct ToolOutcome {
    var status: Int32
    var stdout: Data
    var stderr: String
    var text: String { String(decoding: stdout, as: UTF8.self) }
}

/// Runs `executable` with `arguments`, killing it by PID after `limit` seconds.
func runTool(_ executable: String, _ arguments: [String], limit: Double = 30, folder: URL) throws -> ToolOutcome {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let out = folder.appendingPathComponent("out-\(UUID().uuidString)")
    let err = folder.appendingPathComponent("err-\(UUID().uuidString)")
    FileManager.default.createFile(atPath: out.path, contents: nil)
    FileManager.default.createFile(atPath: err.path, contents: nil)
    process.standardOutput = try FileHandle(forWritingTo: out)
    process.standardError = try FileHandle(forWritingTo: err)
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let deadline = Date().addingTimeInterval(limit)
    while process.isRunning && Date() < deadline { usleep(10_000) }
    if process.isRunning {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        XCTFail("\(executable) \(arguments.joined(separator: " ")) ran longer than \(limit) s")
    }
    process.waitUntilExit()
    return ToolOutcome(status: process.terminationStatus, stdout: (try? Data(contentsOf: out)) ?? Data(),
                       stderr: (try? String(contentsOf: err, encoding: .utf8)) ?? "")
}

/// An installed program on PATH, or a skip naming the package.
func installedTool(_ name: String) throws -> String {
    for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let path = "\(directory)/\(name)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    throw XCTSkip("\(name) is not installed (Debian package libcoap3-bin)")
}

/// The sotto binary next to the test bundle.
func sottoExecutable() throws -> String {
    let url = Bundle.main.bundleURL.appendingPathComponent("sotto")
    guard FileManager.default.isExecutableFile(atPath: url.path) else {
        throw XCTSkip("no sotto executable at \(url.path); build the package first")
    }
    return url.path
}

/// `sotto coap-server` on 127.0.0.1 (free ports), started for a test and stopped by its PID.
final class SottoServerProcess {
    let process: Process
    let dtlsPort: UInt16
    let plainPort: UInt16?
    let log: URL
    static let identity = "sotto-test"
    static let key = "sotto-test-key"

    /// `keyFile` holds `key`; `database` is the store file; `extra` are more flags.
    init(folder: URL, keyFile: URL, database: URL, plain: Bool = false, extra: [String] = []) throws {
        let executable = try sottoExecutable()
        log = folder.appendingPathComponent("server-\(UUID().uuidString).log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["coap-server", "--listen", "127.0.0.1:0", "--psk-identity", Self.identity,
                             "--psk-key-file", keyFile.path, "--database", database.path]
            + (plain ? ["--plain-listen", "127.0.0.1:0"] : []) + extra
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        var dtls: UInt16?
        var plainFound: UInt16?
        // Bounded: 10 s for the listening lines.
        for _ in 0..<500 {
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            dtls = Self.port(in: text, scheme: "coaps")
            plainFound = Self.port(in: text, scheme: "coap")
            if dtls != nil && (!plain || plainFound != nil) && text.contains("serving") { break }
            if !process.isRunning { break }
            usleep(20_000)
        }
        guard let dtls, !plain || plainFound != nil else {
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            Self.stop(process)
            throw SetupFailure(description: "sotto coap-server did not start: \(text)")
        }
        dtlsPort = dtls
        plainPort = plainFound
    }

    struct SetupFailure: Error, CustomStringConvertible {
        let description: String
    }

    var logText: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }
    var isRunning: Bool { process.isRunning }

    /// SIGTERM, then SIGKILL after 5 s. Returns the exit status.
    @discardableResult
    func stop() -> Int32 {
        Self.stop(process)
        return process.terminationStatus
    }

    private static func stop(_ process: Process) {
        if process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            for _ in 0..<250 where process.isRunning { usleep(20_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        process.waitUntilExit()
    }

    private static func port(in text: String, scheme: String) -> UInt16? {
        guard let range = text.range(of: "listening on \(scheme)://127.0.0.1:") else { return nil }
        return UInt16(text[range.upperBound...].prefix { $0.isNumber })
    }
}
