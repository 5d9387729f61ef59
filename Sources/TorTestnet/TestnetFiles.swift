/// Parsers for the files tor and tor-gencert leave in a node's folder, and for the network's own
/// `ports.env`. Text in, values out: the callers read the files (bounded by `maximumFileSize`).

/// A file that does not say what it should; `line` is 1-based, nil when the problem is the whole file.
public struct TestnetParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public let line: Int?
    public let reason: String

    public init(line: Int? = nil, _ reason: String) {
        self.line = line
        self.reason = reason
    }

    public var description: String { line.map { "line \($0): \(reason)" } ?? reason }
}

public enum TestnetFiles {
    /// Every file parsed here is a few hundred bytes; anything much larger is not the file we wrote.
    public static let maximumFileSize = 64 * 1024

    static func checkSize(_ text: String) throws {
        guard text.utf8.count <= maximumFileSize else {
            throw TestnetParseError("\(text.utf8.count) bytes, more than the \(maximumFileSize) such a file can have")
        }
    }

    static func isFingerprint<S: StringProtocol>(_ s: S) -> Bool {
        s.utf8.count == 40 && s.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x46) }
    }

    static func isNickname<S: StringProtocol>(_ s: S) -> Bool {
        // tor-spec: 1 to 19 characters of [A-Za-z0-9].
        (1...19).contains(s.utf8.count) && s.utf8.allSatisfy {
            ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A)
        }
    }

    /// A relay's `DataDirectory/fingerprint`: `NICKNAME FINGERPRINT` on one line, the RSA identity
    /// digest as 40 upper-case hex digits. Returns (nickname, fingerprint).
    public static func parseFingerprintFile(_ text: String) throws -> (nickname: String, fingerprint: String) {
        try checkSize(text)
        let lines = text.split(whereSeparator: \.isNewline)
        guard lines.count == 1 else {
            throw TestnetParseError(lines.isEmpty ? "the file is empty" : "expected one line, found \(lines.count)")
        }
        let fields = lines[0].split(separator: " ", omittingEmptySubsequences: false)
        guard fields.count == 2 else {
            throw TestnetParseError(line: 1, "expected 'NICKNAME FINGERPRINT', found \(fields.count) field(s)")
        }
        guard isNickname(fields[0]) else { throw TestnetParseError(line: 1, "'\(fields[0].prefix(40))' is no relay nickname") }
        guard isFingerprint(fields[1]) else {
            throw TestnetParseError(line: 1, "'\(fields[1].prefix(60))' is not 40 upper-case hex digits")
        }
        return (String(fields[0]), String(fields[1]))
    }

    /// The v3 identity (`v3ident` of a DirAuthority line) from tor-gencert's `authority_certificate`:
    /// dir-spec 3.1, the certificate starts with `dir-key-certificate-version 3` and carries exactly
    /// one `fingerprint` line, the hex digest of the authority's identity key.
    public static func parseAuthorityCertificate(_ text: String) throws -> String {
        try checkSize(text)
        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline)
        guard let first = lines.first, !first.isEmpty else { throw TestnetParseError("the file is empty") }
        guard first == "dir-key-certificate-version 3" else {
            throw TestnetParseError(line: 1, "expected 'dir-key-certificate-version 3', found '\(first.prefix(60))'")
        }
        var found: String?
        for (index, line) in lines.enumerated() {
            let fields = line.split(separator: " ", omittingEmptySubsequences: false)
            guard fields.first == "fingerprint" else { continue }
            guard found == nil else { throw TestnetParseError(line: index + 1, "a second 'fingerprint' line") }
            guard fields.count == 2, isFingerprint(fields[1]) else {
                throw TestnetParseError(line: index + 1, "expected 'fingerprint' and 40 upper-case hex digits")
            }
            found = String(fields[1])
        }
        guard let found else { throw TestnetParseError("no 'fingerprint' line (is this an authority certificate?)") }
        return found
    }

    /// A pid file tor wrote (`PidFile`): decimal digits and a newline.
    public static func parsePidFile(_ text: String) -> Int32? {
        let trimmed = text.trimmingTrailingNewlines()
        guard (1...10).contains(trimmed.utf8.count), trimmed.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
              let pid = Int32(trimmed), pid > 0 else { return nil }
        return pid
    }

    /// `/proc/PID/cmdline`: the arguments, each ended by a NUL.
    public static func parseCommandLine(_ bytes: [UInt8]) -> [String] {
        guard !bytes.isEmpty else { return [] }
        var parts = bytes.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        if bytes.last == 0 { parts.removeLast() }
        return parts
    }

    /// The node a process belongs to, when its command line is one this module starts for the
    /// network in `directory`: `…/tor -f DIR/nodes/NODE/torrc --defaults-torrc DIR/empty-torrc`.
    /// Only such processes are ever signalled.
    public static func testnetNode(commandLine args: [String], paths: TestnetPaths) -> TestnetNode? {
        guard args.count >= 4, let program = args[0].split(separator: "/").last, program.hasPrefix("tor"),
              args[1] == "-f", args[3] == "--defaults-torrc" else { return nil }
        return TestnetLayout.nodes.first { args[2] == paths.torrc($0.name) }
    }
}

/// The last bootstrap report in a notice log: `Bootstrapped 45% (requesting_descriptors): Asking…`.
public struct BootstrapProgress: Sendable, Equatable, CustomStringConvertible {
    public let percent: Int
    public let tag: String

    public init(percent: Int, tag: String) {
        self.percent = percent
        self.tag = tag
    }

    public static let notStarted = BootstrapProgress(percent: 0, tag: "starting")

    public var isDone: Bool { percent == 100 }
    public var description: String { "\(percent)% (\(tag))" }

    /// The latest well-formed report in `log`, nil when there is none.
    public static func latest(inLog log: String) -> BootstrapProgress? {
        for line in log.split(whereSeparator: \.isNewline).reversed() {
            if let progress = parse(line: line) { return progress }
        }
        return nil
    }

    static func parse<S: StringProtocol>(line: S) -> BootstrapProgress? {
        guard let range = line.range(of: "Bootstrapped ") else { return nil }
        let rest = line[range.upperBound...]
        guard let percentSign = rest.firstIndex(of: "%") else { return nil }
        let digits = rest[..<percentSign]
        guard (1...3).contains(digits.count), digits.allSatisfy(\.isASCII), let percent = Int(digits),
              (0...100).contains(percent) else { return nil }
        let afterPercent = rest[rest.index(after: percentSign)...]
        guard afterPercent.hasPrefix(" ("), let close = afterPercent.firstIndex(of: ")") else { return nil }
        let tag = afterPercent[afterPercent.index(afterPercent.startIndex, offsetBy: 2)..<close]
        guard (1...64).contains(tag.count), tag.allSatisfy({ $0 == "_" || ($0.isASCII && $0.isLowercase) }) else { return nil }
        return BootstrapProgress(percent: percent, tag: String(tag))
    }
}

extension String {
    func trimmingTrailingNewlines() -> String {
        var s = Substring(self)
        while let last = s.last, last.isNewline { s = s.dropLast() }
        return String(s)
    }
}
