/// Why a network operation failed; the description says what to do about it.
public enum TorTestnetError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidDirectory(path: String, reason: String)
    case toolNotFound(name: String, searched: [String])
    case alreadyRunning(directory: String, pids: [Int32])
    case file(path: String, reason: String)
    case malformedFile(path: String, error: TestnetParseError)
    case keyGenerationFailed(command: String, node: String, output: String)
    case noFreePorts(reason: String)
    case startFailed(node: String, output: String)
    case noConsensus(waitingFor: [String], seconds: Double, directory: String)
    case exitedDuringBootstrap(nodes: [String], directory: String)
    case bootstrapTimeout(seconds: Double, state: String, directory: String)
    case notConfigured(directory: String)
    case couldNotStop(pids: [Int32])
    case interrupted

    public var description: String {
        switch self {
        case let .invalidDirectory(path, reason):
            return "cannot use '\(path)' as the network's folder: \(reason)"
        case let .toolNotFound(name, searched):
            return "\(name) is not installed (looked for \(searched.joined(separator: ", "))); on Debian: apt-get install tor "
                + "(the package also starts a system tor that joins the public network: stop it with "
                + "'systemctl disable --now tor' if you do not want that)"
        case let .alreadyRunning(directory, pids):
            return "a network of \(directory) is already running (pids \(pids.map(String.init).joined(separator: " "))): "
                + "run 'sotto testnet tor down \(directory)' first"
        case let .file(path, reason):
            return "\(path): \(reason)"
        case let .malformedFile(path, error):
            return "\(path) is malformed: \(error)"
        case let .keyGenerationFailed(command, node, output):
            return "\(command) for \(node) failed" + (output.isEmpty ? "" : ": \(output)")
        case let .noFreePorts(reason):
            return "could not reserve \(TestnetLayout.portCount) free TCP ports on 127.0.0.1: \(reason)"
        case let .startFailed(node, output):
            return "tor \(node) did not start" + (output.isEmpty ? "" : ": \(output)")
        case let .noConsensus(waiting, seconds, directory):
            return "no consensus from \(waiting.joined(separator: ", ")) within \(Int(seconds)) s; logs kept in \(directory)/nodes/*/notice.log"
        case let .exitedDuringBootstrap(nodes, directory):
            return "tor \(nodes.joined(separator: ", ")) exited during bootstrap; see \(directory)/nodes/*/notice.log"
        case let .bootstrapTimeout(seconds, state, directory):
            return "no bootstrap within \(Int(seconds)) s (\(state)); logs kept in \(directory)/nodes/*/notice.log"
        case let .notConfigured(directory):
            return "no network in \(directory): run 'sotto testnet tor up \(directory)' first"
        case let .couldNotStop(pids):
            return "could not stop tor processes \(pids.map(String.init).joined(separator: " ")) even with SIGKILL"
        case .interrupted:
            return "interrupted; the tors started so far were stopped"
        }
    }
}
