import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// libcoap's example server (`coap-server-openssl`) on 127.0.0.1, started for a test and stopped
/// by its PID. It serves plain CoAP on `port` and DTLS on `port + 1`, accepts any PSK identity
/// with `key`, and lets PUT create resources (`-d`).
final class LibcoapServer {
    let process: Process
    let port: UInt16
    var dtlsPort: UInt16 { port + 1 }
    let key: String

    static func executable() throws -> String {
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let path = "\(directory)/coap-server-openssl"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        throw XCTSkip("coap-server-openssl is not installed (Debian package libcoap3-bin)")
    }

    /// Starts the server on a free port pair; tries a few pairs in case another process takes
    /// one between the probe and the server's bind.
    /// With `log`, the server logs at debug level (-v 7) into that file; it flushes on `stop()`.
    init(key: String = "sotto-test-key", log: URL? = nil) throws {
        let executable = try Self.executable()
        self.key = key
        for _ in 0..<5 {
            let port = try Self.freePortPair()
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = ["-A", "127.0.0.1", "-p", String(port), "-k", key, "-d", "50", "-v", log == nil ? "0" : "7"]
            if let log {
                FileManager.default.createFile(atPath: log.path, contents: nil)
                let handle = try FileHandle(forWritingTo: log)
                process.standardOutput = handle
                process.standardError = handle
            } else {
                process.standardOutput = FileHandle.nullDevice
                process.standardError = FileHandle.nullDevice
            }
            try process.run()
            if Self.waitUntilBound(port: port + 1, process: process) {
                self.process = process
                self.port = port
                return
            }
            Self.stop(process)
        }
        throw XCTSkip("could not start coap-server-openssl on a free port of 127.0.0.1")
    }

    func stop() {
        Self.stop(process)
    }

    private static func stop(_ process: Process) {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGTERM)
        for _ in 0..<100 where process.isRunning { usleep(20_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// A port P with UDP and TCP free on P and P+1 (the server binds all four).
    private static func freePortPair() throws -> UInt16 {
        for _ in 0..<50 {
            guard let port = bindProbe(port: 0, type: SOCK_DGRAM), port < 65535 else { continue }
            if bindProbe(port: port + 1, type: SOCK_DGRAM) != nil, bindProbe(port: port, type: SOCK_STREAM) != nil,
               bindProbe(port: port + 1, type: SOCK_STREAM) != nil {
                return port
            }
        }
        throw XCTSkip("found no free port pair on 127.0.0.1")
    }

    /// The server is up once its DTLS port is taken. Bounded to 5 s.
    private static func waitUntilBound(port: UInt16, process: Process) -> Bool {
        for _ in 0..<250 {
            guard process.isRunning else { return false }
            if bindProbe(port: port, type: SOCK_DGRAM) == nil { return true }
            usleep(20_000)
        }
        return false
    }

    /// Binds a socket of `type` to 127.0.0.1:`port` and closes it; the bound port, or nil.
    private static func bindProbe(port: UInt16, type: __socket_type) -> UInt16? {
        let fd = socket(AF_INET, Int32(type.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { return nil }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return UInt16(bigEndian: actual.sin_port)
    }
}
