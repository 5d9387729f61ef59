import XCTest
@testable import SottoConfig

/// `expose = ["udp VPORT HOST:hopping"]`: an exit's UDP expose that follows the file's
/// `[hopping]` schedule (docs/configuration.md, docs/channels.md).
final class HoppingExposeTests: XCTestCase {
    private let hopSecret = KeyEncoding.encode([UInt8](repeating: 0x42, count: 32))

    private func folderWithSecret() throws -> TemporaryDirectory {
        let dir = try TemporaryDirectory()
        try dir.write("hop.secret", hopSecret + "\n")
        return dir
    }

    private func hopping(range: String = "20000-20999", epoch: Int = 3) -> String {
        """

        [hopping]
        secret_file = "hop.secret"
        range = "\(range)"
        epoch_seconds = \(epoch)

        """
    }

    private func exit(_ exposes: String) -> String {
        Fixture.profile(anonymizer: "none") + Fixture.service(expose: exposes)
    }

    func testAUDPExposeCanTargetTheHoppingSchedule() throws {
        let dir = try folderWithSecret()
        let config = try parse(
            exit(#"["udp 5684 127.0.0.1:hopping", "udp 5685 [::1]:hopping", "tcp 80 127.0.0.1:8080", "udp 7 127.0.0.1:7"]"#)
                + hopping(), baseDirectory: dir.path)
        let service = try XCTUnwrap(config.service(named: "coap"))
        XCTAssertEqual(service.exposes, [
            Expose(proto: .udp, virtualPort: 5684, target: .hopping(host: "127.0.0.1")),
            Expose(proto: .udp, virtualPort: 5685, target: .hopping(host: "::1")),
            Expose(proto: .tcp, virtualPort: 80, target: HostPort(host: "127.0.0.1", port: 8080)),
            Expose(proto: .udp, virtualPort: 7, target: HostPort(host: "127.0.0.1", port: 7)),
        ])
        XCTAssertEqual(service.target(for: .udp, virtualPort: 5684), .hopping(host: "127.0.0.1"))
        XCTAssertNil(service.target(for: .udp, virtualPort: 5684)?.hostPort)
        XCTAssertEqual(service.target(for: .udp, virtualPort: 7)?.hostPort, HostPort(host: "127.0.0.1", port: 7))
        XCTAssertEqual(config.hopping?.portRange, 20000...20999)
        XCTAssertEqual(config.hopping?.epochSeconds, 3)
        XCTAssertEqual(service.exposes.map(\.target.description),
                       ["127.0.0.1:hopping", "[::1]:hopping", "127.0.0.1:8080", "127.0.0.1:7"])
        // The word is matched without regard to case; the host keeps its spelling.
        let upper = try parse(exit(#"["udp 5684 LocalHost:HOPPING"]"#) + hopping(), baseDirectory: dir.path)
        XCTAssertEqual(upper.services.first?.exposes.first?.target, .hopping(host: "LocalHost"))
    }

    func testAHoppingExposeWithoutAHoppingTableNamesTheExpose() {
        let error = assertConfigError(exit(#"["tcp 80 127.0.0.1:80", "udp 5684 127.0.0.1:hopping"]"#),
                                      key: "service[1] 'coap'.expose[2]", "this file has no [hopping] table")
        XCTAssertEqual(error?.file, "gateway.toml")
        XCTAssertTrue(error?.message.contains("'127.0.0.1:hopping'") ?? false, "\(String(describing: error))")
        // The second service is the one that needs it.
        assertConfigError(exit(#"["udp 1 127.0.0.1:1"]"#) + Fixture.service(name: "two", expose: #"["udp 2 127.0.0.1:hopping"]"#)
                            .replacingOccurrences(of: "127.0.0.1:7000", with: "127.0.0.1:7001"),
                          key: "service[2] 'two'.expose[1]", "has no [hopping] table")
    }

    func testMalformedHoppingTargetsAreRefusedWithTheKey() throws {
        let dir = try folderWithSecret()
        func refused(_ line: String, _ message: String, file: StaticString = #filePath, line sourceLine: UInt = #line) {
            assertConfigError(exit("[\"\(line)\"]") + hopping(), key: "service[1] 'coap'.expose[1]", message,
                              baseDirectory: dir.path, file: file, line: sourceLine)
        }
        refused("tcp 5684 127.0.0.1:hopping", "port hopping applies to udp exposes only")
        refused("udp 5684 :hopping", "target ':hopping': the host is empty")
        refused("udp 5684 ::1:hopping", "an IPv6 address needs brackets, as in [::1]:hopping")
        refused("udp 5684 [::1:hopping", "'[' without a closing ']'")
        refused("udp 5684 [zz]:hopping", "is not an IPv6 address")
        refused("udp 5684 bad/host:hopping", "the host may hold only letters")
        refused("udp 5684 127.0.0.1:hop", "the port must be a number from 0 to 65535 (or HOST:hopping")
        refused("udp 5684 127.0.0.1:hoppingx", "the port must be a number")
        refused("udp 5684 127.0.0.1: hopping", "expected \"udp|tcp VPORT HOST:PORT\"")
        refused("udp 5684 hopping", "missing ':PORT'")
        // Two exposes on one virtual port stay a duplicate, hopping or not.
        assertConfigError(exit(#"["udp 5684 127.0.0.1:hopping", "udp 5684 127.0.0.1:5684"]"#) + hopping(),
                          key: "service[1] 'coap'.expose[2]", "duplicate virtual port udp 5684", baseDirectory: dir.path)
    }

    func testABadHoppingTableIsReportedAtItsOwnKey() throws {
        let dir = try folderWithSecret()
        assertConfigError(exit(#"["udp 5684 127.0.0.1:hopping"]"#) + hopping(range: "20999-20000"),
                          key: "hopping.range", "the first port 20999 is above the last 20000", baseDirectory: dir.path)
        assertConfigError(exit(#"["udp 5684 127.0.0.1:hopping"]"#) + hopping(epoch: 0),
                          key: "hopping.epoch_seconds", "must be from 1 to 31622400, got 0", baseDirectory: dir.path)
        let missingFile = exit(#"["udp 5684 127.0.0.1:hopping"]"#) + hopping()
        let error = assertConfigError(missingFile, key: "hopping.secret_file", "cannot read")
        XCTAssertFalse(error?.description.contains(hopSecret.prefix(20)) ?? true)
    }
}
