#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads small files (the configuration, key files) with errors that keep the system's words.
enum FileAccess {
    struct Contents {
        var bytes: [UInt8]
        /// Permission bits (st_mode & 0o7777).
        var mode: UInt32
    }

    enum Failure: Error, CustomStringConvertible {
        case system(String)
        case notRegularFile
        case tooLarge(limit: Int)

        var description: String {
            switch self {
            case .system(let text): return text
            case .notRegularFile: return "not a regular file"
            case .tooLarge(let limit): return "larger than \(limit) bytes"
            }
        }
    }

    /// The whole file when it is a regular file of at most `limit` bytes.
    static func readFile(path: String, limit: Int) -> Result<Contents, Failure> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(.system(errnoText())) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return .failure(.system(errnoText())) }
        // A FIFO or device could block or never end; keys and configs are plain files.
        guard (UInt32(info.st_mode) & UInt32(S_IFMT)) == UInt32(S_IFREG) else { return .failure(.notRegularFile) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                return .failure(.system(errnoText()))
            }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
            if bytes.count > limit { return .failure(.tooLarge(limit: limit)) }
        }
        return .success(Contents(bytes: bytes, mode: UInt32(info.st_mode) & 0o7777))
    }

    /// The user's home directory: $HOME, or the password database's entry.
    static func homeDirectory() -> String? {
        if let home = getenv("HOME"), home.pointee != 0 { return String(cString: home) }
        if let entry = getpwuid(getuid()), let dir = entry.pointee.pw_dir { return String(cString: dir) }
        return nil
    }

    private static func errnoText() -> String {
        String(cString: strerror(errno))
    }
}

/// Path helpers: no file system access.
enum Paths {
    /// `path` when absolute, else `path` under `base`.
    static func resolve(_ path: String, against base: String) -> String {
        if path.hasPrefix("/") || base.isEmpty { return path }
        return base.hasSuffix("/") ? base + path : base + "/" + path
    }

    /// The folder of a file path: "a/b.toml" -> "a", "b.toml" -> ".".
    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }

    /// Expands a leading `~` or `~/`; nil for `~user` forms, which need a lookup we do not do.
    static func expandTilde(_ path: String, home: String?) -> String? {
        guard path.hasPrefix("~") else { return path }
        guard let home else { return nil }
        if path == "~" { return home }
        guard path.hasPrefix("~/") else { return nil }
        return (home.hasSuffix("/") ? String(home.dropLast()) : home) + String(path.dropFirst())
    }
}

extension String {
    /// The text of `bytes` when they are valid UTF-8, else nil. (String(validating:as:) needs
    /// macOS 15; this works wherever the package builds.)
    init?(validatingUTF8Bytes bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        // Decoding replaces invalid sequences with U+FFFD, which changes the bytes.
        guard text.utf8.elementsEqual(bytes) else { return nil }
        self = text
    }
}
