import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A tor of the network, found by its command line.
public struct TestnetProcess: Sendable, Equatable, CustomStringConvertible {
    public let pid: Int32
    public let node: TestnetNode
    public var description: String { "\(node.name) (pid \(pid))" }
}

/// Process and file I/O at the edge: launching tor and tor-gencert, finding the network's tors in
/// /proc, stopping them by PID, reading and writing the folder's files.
enum TestnetIO {
    // MARK: Tools

    /// `configured` when given (it must be executable); else the first `name` in PATH, then the
    /// Debian locations.
    static func findTool(_ name: String, configured: String? = nil, besides sibling: String? = nil) throws -> String {
        let fm = FileManager.default
        if let configured {
            guard fm.isExecutableFile(atPath: configured) else { throw TorTestnetError.toolNotFound(name: name, searched: [configured]) }
            return configured
        }
        var candidates: [String] = []
        if let sibling, let slash = sibling.lastIndex(of: "/") { candidates.append(String(sibling[..<slash]) + "/" + name) }
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") where !dir.isEmpty {
            candidates.append("\(dir)/\(name)")
        }
        candidates += ["/usr/bin/\(name)", "/usr/sbin/\(name)", "/usr/local/bin/\(name)"]
        var searched: [String] = []
        for candidate in candidates where !searched.contains(candidate) {
            searched.append(candidate)
            if fm.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw TorTestnetError.toolNotFound(name: name, searched: searched)
    }

    // MARK: Launching

    /// A child started by `spawn`; `wait` reaps it.
    struct Child {
        let pid: pid_t

        /// Waits until the child exits or `deadline` passes; its exit status, or nil (still running,
        /// or killed by a signal: `signal` then says which).
        func wait(until deadline: ContinuousClock.Instant) -> (exited: Bool, status: Int32?, signal: Int32?) {
            while true {
                var status: Int32 = 0
                let result = waitpid(pid, &status, WNOHANG)
                if result == pid {
                    // <sys/wait.h> macros, which Swift does not import.
                    let signal = status & 0x7F
                    return signal == 0 ? (true, (status >> 8) & 0xFF, nil) : (true, nil, signal)
                }
                if result < 0, errno != EINTR { return (true, nil, nil) }
                if ContinuousClock.now >= deadline { return (false, nil, nil) }
                usleep(20_000)
            }
        }

        /// SIGKILL and reap (for a child that overran its deadline).
        func forceStop() {
            sendSignal(pid, SIGKILL)
            _ = wait(until: ContinuousClock.now + .seconds(2))
        }
    }

    /// Starts `executable` with stdin from `inputPath` (or /dev/null), stdout and stderr appended to
    /// a fresh `outputPath`, in a process group of its own.
    ///
    /// posix_spawn, not Foundation's Process, for two reasons measured here:
    /// - Process on Linux hands the child one end of a socket pair and reports it running until that
    ///   socket closes; tor with `RunAsDaemon 1` keeps it open in the daemon, so the launching tor
    ///   looked alive for as long as the relay ran;
    /// - a child inherits the signal mask across fork and exec, and the threads Swift concurrency runs
    ///   on block SIGTERM and friends (TorControl's ManagedTor measured a tor that only SIGKILL
    ///   stopped). The attributes here give the child an empty mask and default dispositions (a
    ///   SIG_IGN of ours, e.g. the CLI's for SIGINT, would survive exec otherwise).
    static func spawn(_ executable: String, _ arguments: [String], environment extra: [String: String] = [:],
                      inputPath: String? = nil, outputPath: String) throws -> Child {
        try writeFile(outputPath, "", mode: 0o600)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, inputPath ?? "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_APPEND, 0)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))

        var environment = ProcessInfo.processInfo.environment
        environment.merge(extra) { $1 }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard result == 0 else {
            throw TorTestnetError.file(path: executable, reason: "cannot start: \(String(cString: strerror(result)))")
        }
        return Child(pid: pid)
    }

    static func sendSignal(_ pid: pid_t, _ signal: Int32) { _ = kill(pid, signal) }

    // MARK: Finding and stopping the network's tors

    /// The network's running tors: those named by pid files, plus any process whose command line
    /// names a torrc of the folder (a tor that lost its pid file, or died before writing it). Only
    /// such processes are ever signalled; a zombie's empty command line does not count.
    static func runningTors(_ paths: TestnetPaths) -> [TestnetProcess] {
        var found: [Int32: TestnetNode] = [:]
        for node in TestnetLayout.nodes {
            guard let text = readText(paths.pidFile(node.name), limit: 64), let pid = TestnetFiles.parsePidFile(text),
                  let owner = testnetNode(pid: pid, paths) else { continue }
            found[pid] = owner
        }
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let first = entry.utf8.first, first >= 0x30, first <= 0x39, let pid = Int32(entry), found[pid] == nil,
                  let node = testnetNode(pid: pid, paths) else { continue }
            found[pid] = node
        }
        return found.map { TestnetProcess(pid: $0.key, node: $0.value) }.sorted { $0.pid < $1.pid }
    }

    static func testnetNode(pid: Int32, _ paths: TestnetPaths) -> TestnetNode? {
        guard let bytes = readBytes("/proc/\(pid)/cmdline", limit: 16 * 1024) else { return nil }
        return TestnetFiles.testnetNode(commandLine: TestnetFiles.parseCommandLine(bytes), paths: paths)
    }

    /// SIGTERM to every tor of the folder, SIGKILL to those still running after `grace` seconds.
    static func stopAll(_ paths: TestnetPaths, grace: Double = 10, progress: (String) -> Void) throws {
        var running = runningTors(paths)
        guard !running.isEmpty else {
            progress("no tor of \(paths.directory) is running")
            removePidFiles(paths)
            return
        }
        progress("stopping \(running.count) tor processes (SIGTERM): \(running.map(\.description).joined(separator: ", "))")
        for tor in running { kill(tor.pid, SIGTERM) }
        // ShutdownWaitLength 0: relays exit at once; the grace period is for a busy machine.
        let deadline = ContinuousClock.now + .milliseconds(Int(grace * 1000))
        while !running.isEmpty, ContinuousClock.now < deadline {
            usleep(50_000)
            running = runningTors(paths)
        }
        if !running.isEmpty {
            progress("still running after \(grace) s, SIGKILL: \(running.map(\.description).joined(separator: ", "))")
            for tor in running { kill(tor.pid, SIGKILL) }
            let killDeadline = ContinuousClock.now + .seconds(3)
            while !running.isEmpty, ContinuousClock.now < killDeadline {
                usleep(50_000)
                running = runningTors(paths)
            }
            guard running.isEmpty else { throw TorTestnetError.couldNotStop(pids: running.map(\.pid)) }
        }
        removePidFiles(paths)
        progress("stopped")
    }

    static func removePidFiles(_ paths: TestnetPaths) {
        for node in TestnetLayout.nodes { unlink(paths.pidFile(node.name)) }
    }

    // MARK: Ports

    /// `count` distinct free TCP ports on 127.0.0.1, all bound at once while chosen so none repeats.
    /// tor binds them a moment later; another program could take one in between, which shows as a
    /// start failure naming the port.
    static func freePorts(_ count: Int) throws -> [Int] {
        var sockets: [Int32] = []
        defer { for fd in sockets { close(fd) } }
        var ports: [Int] = []
        for _ in 0..<count {
            #if canImport(Glibc)
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            #else
            let fd = socket(AF_INET, SOCK_STREAM, 0)
            #endif
            guard fd >= 0 else { throw TorTestnetError.noFreePorts(reason: String(cString: strerror(errno))) }
            sockets.append(fd)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = 0
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
                    guard bind(fd, pointer, length) == 0 else { return -1 }
                    return getsockname(fd, pointer, &length)
                }
            }
            guard bound == 0 else { throw TorTestnetError.noFreePorts(reason: String(cString: strerror(errno))) }
            ports.append(Int(UInt16(bigEndian: address.sin_port)))
        }
        return ports
    }

    // MARK: Files

    /// At most `limit` bytes of the file (its end, if `tail`); nil when it cannot be read.
    static func readBytes(_ path: String, limit: Int, tail: Bool = false) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        if tail {
            var info = stat()
            if fstat(fd, &info) == 0, Int(info.st_size) > limit { lseek(fd, off_t(Int(info.st_size) - limit), SEEK_SET) }
        }
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        while result.count <= limit {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { break }
            result += buffer[0..<n]
        }
        return result
    }

    static func readText(_ path: String, limit: Int, tail: Bool = false) -> String? {
        readBytes(path, limit: limit, tail: tail).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Reads a file we parse, bounded one byte past the parsers' limit so they can name an oversized file.
    static func readSmallFile(_ path: String) throws -> String {
        guard let text = readText(path, limit: TestnetFiles.maximumFileSize + 1) else {
            throw TorTestnetError.file(path: path, reason: "cannot read: \(String(cString: strerror(errno)))")
        }
        return text
    }

    /// Replaces the file with `text`, created with `mode` (a new inode: no earlier, wider mode survives).
    static func writeFile(_ path: String, _ text: String, mode: mode_t) throws {
        let temporary = path + ".new"
        unlink(temporary)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw TorTestnetError.file(path: temporary, reason: String(cString: strerror(errno))) }
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else {
                let reason = String(cString: strerror(errno))
                close(fd)
                unlink(temporary)
                throw TorTestnetError.file(path: path, reason: reason)
            }
            offset += n
        }
        close(fd)
        guard rename(temporary, path) == 0 else { throw TorTestnetError.file(path: path, reason: String(cString: strerror(errno))) }
    }

    /// `mkdir -m 0700`, keeping an existing folder but narrowing its mode (tor refuses a
    /// DataDirectory that others can read).
    static func makeDirectory(_ path: String) throws {
        if mkdir(path, 0o700) != 0 {
            guard errno == EEXIST else { throw TorTestnetError.file(path: path, reason: "cannot create: \(String(cString: strerror(errno)))") }
            var info = stat()
            guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
                throw TorTestnetError.file(path: path, reason: "exists and is not a folder")
            }
            chmod(path, 0o700)
        }
    }

    static func fileSize(_ path: String) -> Int? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return Int(info.st_size)
    }

    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }
}
