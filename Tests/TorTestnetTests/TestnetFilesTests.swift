import XCTest
@testable import TorTestnet

final class TestnetFilesTests: XCTestCase {
    let fp = "32E62DBB8E754F35F42F552DD4358D030DC2780F"

    // MARK: fingerprint files

    func testFingerprintFileGivesNicknameAndFingerprint() throws {
        let parsed = try TestnetFiles.parseFingerprintFile("relay0 \(fp)\n")
        XCTAssertEqual(parsed.nickname, "relay0")
        XCTAssertEqual(parsed.fingerprint, fp)
    }

    func testFingerprintFileWithoutTrailingNewlineIsAccepted() throws {
        XCTAssertEqual(try TestnetFiles.parseFingerprintFile("auth0 \(fp)").fingerprint, fp)
    }

    func testFingerprintFileRejectsMalformedContent() {
        let bad = [
            "",                                   // empty
            "\n",                                 // only a newline
            "relay0\n",                           // truncated: no fingerprint
            "relay0 \(fp.dropLast())\n",          // truncated fingerprint
            "relay0 \(fp)0\n",                    // one digit too many
            "relay0 \(fp.lowercased())\n",        // tor writes upper case
            "relay0 \(fp.dropLast())G\n",         // not hex
            "relay0 \(fp) extra\n",               // a third field
            "relay0  \(fp)\n",                    // two spaces: an empty field
            "relay0 \(fp)\nrelay1 \(fp)\n",       // two lines
            "bad-name \(fp)\n",                   // nickname with '-'
            "\(String(repeating: "a", count: 20)) \(fp)\n", // nickname of 20 characters
        ]
        for text in bad {
            XCTAssertThrowsError(try TestnetFiles.parseFingerprintFile(text), "accepted \(text.debugDescription)")
        }
    }

    func testOversizedFingerprintFileIsRejectedBeforeParsing() {
        let text = "relay0 \(fp)\n" + String(repeating: "#", count: TestnetFiles.maximumFileSize)
        XCTAssertThrowsError(try TestnetFiles.parseFingerprintFile(text)) { error in
            XCTAssertTrue("\(error)".contains("more than"), "\(error)")
        }
    }

    // MARK: authority certificates

    func certificate(fingerprint: String) -> String {
        """
        dir-key-certificate-version 3
        fingerprint \(fingerprint)
        dir-key-published 2025-11-22 05:51:10
        dir-key-expires 2026-11-22 05:51:10
        dir-identity-key
        -----BEGIN RSA PUBLIC KEY-----
        MIIBigKCAYEAx
        -----END RSA PUBLIC KEY-----

        """
    }

    func testAuthorityCertificateGivesTheV3Identity() throws {
        XCTAssertEqual(try TestnetFiles.parseAuthorityCertificate(certificate(fingerprint: fp)), fp)
    }

    func testAuthorityCertificateRejectsMalformedContent() {
        let good = certificate(fingerprint: fp)
        let bad = [
            "",
            "dir-key-certificate-version 3\n",                                 // truncated: no fingerprint
            good.replacingOccurrences(of: "version 3", with: "version 2"),     // wrong version
            "fingerprint \(fp)\n",                                             // not a certificate
            certificate(fingerprint: String(fp.dropLast())),                   // short fingerprint
            certificate(fingerprint: fp.lowercased()),
            certificate(fingerprint: fp + " " + fp),                           // extra field
            good + "fingerprint \(fp)\n",                                      // a second fingerprint line
            "\n" + good,                                                       // version not on line 1
        ]
        for text in bad {
            XCTAssertThrowsError(try TestnetFiles.parseAuthorityCertificate(text), "accepted \(text.debugDescription)")
        }
    }

    func testAuthorityCertificateErrorNamesTheLine() {
        XCTAssertThrowsError(try TestnetFiles.parseAuthorityCertificate(certificate(fingerprint: "XYZ"))) { error in
            XCTAssertEqual((error as? TestnetParseError)?.line, 2)
        }
    }

    func testOversizedAuthorityCertificateIsRejected() {
        let text = certificate(fingerprint: fp) + String(repeating: "x", count: TestnetFiles.maximumFileSize)
        XCTAssertThrowsError(try TestnetFiles.parseAuthorityCertificate(text))
    }

    // MARK: pid files and command lines

    func testPidFileIsDecimalDigitsAndANewline() {
        XCTAssertEqual(TestnetFiles.parsePidFile("12345\n"), 12345)
        XCTAssertEqual(TestnetFiles.parsePidFile("7"), 7)
        for bad in ["", "\n", "0\n", "-5\n", "12a\n", " 12\n", "99999999999\n", "12\n34\n", String(repeating: "1", count: 5000)] {
            XCTAssertNil(TestnetFiles.parsePidFile(bad), "accepted \(bad.debugDescription)")
        }
    }

    func testCommandLineSplitsAtNulBytes() {
        XCTAssertEqual(TestnetFiles.parseCommandLine(Array("tor\0-f\0/x/torrc\0".utf8)), ["tor", "-f", "/x/torrc"])
        XCTAssertEqual(TestnetFiles.parseCommandLine(Array("tor\0\0x\0".utf8)), ["tor", "", "x"])
        XCTAssertEqual(TestnetFiles.parseCommandLine([]), [])
        // A process that rewrote its command line without the final NUL.
        XCTAssertEqual(TestnetFiles.parseCommandLine(Array("tor -f x".utf8)), ["tor -f x"])
    }

    func testOnlyTheNetworksOwnTorCommandLinesMatch() {
        let paths = TestnetPaths(directory: "/tmp/net1")
        let ours = ["/usr/sbin/tor", "-f", "/tmp/net1/nodes/exit0/torrc", "--defaults-torrc", "/tmp/net1/empty-torrc"]
        XCTAssertEqual(TestnetFiles.testnetNode(commandLine: ours, paths: paths)?.name, "exit0")
        XCTAssertEqual(TestnetFiles.testnetNode(commandLine: ["tor"] + ours.dropFirst(), paths: paths)?.kind, .exit)

        var other = ours
        other[2] = "/tmp/net10/nodes/exit0/torrc"  // a folder whose name starts the same
        XCTAssertNil(TestnetFiles.testnetNode(commandLine: other, paths: paths))
        other = ours
        other[2] = "/tmp/net1/nodes/intruder/torrc"  // no node of the layout
        XCTAssertNil(TestnetFiles.testnetNode(commandLine: other, paths: paths))
        other = ours
        other[0] = "/usr/bin/python3"
        XCTAssertNil(TestnetFiles.testnetNode(commandLine: other, paths: paths))
        XCTAssertNil(TestnetFiles.testnetNode(commandLine: ["tor", "--list-fingerprint", "-f", "/tmp/net1/empty-torrc"], paths: paths))
        XCTAssertNil(TestnetFiles.testnetNode(commandLine: Array(ours.prefix(3)), paths: paths))
        XCTAssertNil(TestnetFiles.testnetNode(commandLine: [], paths: paths))
    }

    // MARK: bootstrap reports

    func testLatestBootstrapReportWins() {
        let log = """
        Nov 22 05:53:02.000 [notice] Bootstrapped 0% (starting): Starting
        Nov 22 05:53:03.000 [notice] Bootstrapped 45% (requesting_descriptors): Asking for relay descriptors
        Nov 22 05:53:03.100 [notice] Something else
        Nov 22 05:53:04.000 [notice] Bootstrapped 100% (done): Done
        Nov 22 05:53:05.000 [notice] New control connection opened.
        """
        XCTAssertEqual(BootstrapProgress.latest(inLog: log), BootstrapProgress(percent: 100, tag: "done"))
        XCTAssertTrue(BootstrapProgress.latest(inLog: log)!.isDone)
    }

    func testMalformedOrTruncatedBootstrapReportsAreSkipped() {
        let log = """
        [notice] Bootstrapped 14% (handshake): Handshaking with a relay
        [notice] Bootstrapped 101% (done): Done
        [notice] Bootstrapped x% (done): Done
        [notice] Bootstrapped 1000% (done): Done
        [notice] Bootstrapped 50% (Bad-Tag): x
        [notice] Bootstrapped 50%
        [notice] Bootstrapped 50% (unterminated
        [notice] Bootstrapped
        """
        XCTAssertEqual(BootstrapProgress.latest(inLog: log), BootstrapProgress(percent: 14, tag: "handshake"))
        XCTAssertNil(BootstrapProgress.latest(inLog: ""))
        XCTAssertNil(BootstrapProgress.latest(inLog: "[notice] Bootstrapped 5"))
    }

    func testOversizedBootstrapTagIsSkipped() {
        let tag = String(repeating: "a", count: 65)
        XCTAssertNil(BootstrapProgress.latest(inLog: "Bootstrapped 5% (\(tag)): x"))
    }
}
