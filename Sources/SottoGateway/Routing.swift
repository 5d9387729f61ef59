import NIOSOCKS
import SottoConfig

/// Where a destination asked for by an application goes, decided without any DNS lookup.
enum Route: Equatable {
    /// Through the profile's tunnel to a peer's virtual port.
    case peer(name: String, virtualPort: Int)
    /// Straight to host:port, outside any tunnel (anonymizer `none` with `allow_direct`).
    case direct(host: String, port: Int)
    /// An ordinary stream through the profile's anonymizer (tor: out of a tor exit, or to an onion
    /// service that is no peer); the name is resolved by the anonymizer, never here.
    case anonymized(host: String, port: Int)
    /// Refused, with the SOCKS reply that says why and a message for the log.
    case refused(RouteRefusal)
}

enum RouteRefusal: Equatable, CustomStringConvertible {
    case notAllowed(String)
    case anonymizerUnavailable(String)

    var description: String {
        switch self {
        case .notAllowed(let s), .anonymizerUnavailable(let s): return s
        }
    }

    var socksReply: SOCKSServerReply {
        switch self {
        case .notAllowed: return .notAllowed
        case .anonymizerUnavailable: return .networkUnreachable
        }
    }
}

/// Decides routes for one configuration. Pure: no sockets, no resolver.
struct Router {
    let config: SottoConfig

    /// The peer a destination names, by the peer's name or by its .onion / .b32.i2p address.
    func peer(forHost host: String) -> Peer? {
        config.peer(named: host) ?? config.peer(forAddress: host)
    }

    func route(host: String, port: Int, profile: Profile) -> Route {
        if let peer = peer(forHost: host) {
            if let refusal = reachability(of: peer, profile: profile) { return .refused(refusal) }
            return .peer(name: peer.name, virtualPort: port)
        }
        switch profile.anonymizer {
        case .none:
            if Self.isAnonymousName(host) {
                return .refused(.notAllowed(
                    "\(host) is an onion or I2P name that is no peer of this gateway; profile '\(profile.name)' (anonymizer none) never sends it anywhere"))
            }
            guard profile.allowDirect else {
                return .refused(.notAllowed(
                    "\(host):\(port) is no peer of this gateway and profile '\(profile.name)' does not allow direct connections"))
            }
            return .direct(host: host, port: port)
        case .tor:
            if Self.isI2PName(host) {
                return .refused(.notAllowed("\(host) is an I2P name; profile '\(profile.name)' uses tor, which cannot reach it"))
            }
            return .anonymized(host: host, port: port)
        case .i2p:
            return .refused(.anonymizerUnavailable(
                "profile '\(profile.name)' uses anonymizer i2p, which this build cannot drive yet; refusing rather than sending \(host):\(port) another way"))
        }
    }

    /// Names that only an anonymizer can reach; a direct connection would leak them to DNS.
    static func isAnonymousName(_ host: String) -> Bool {
        var lower = host.lowercased()
        if lower.hasSuffix(".") { lower.removeLast() }  // a fully qualified name is the same name
        return lower.hasSuffix(".onion") || lower.hasSuffix(".i2p") || lower == "onion" || lower == "i2p"
    }

    static func isI2PName(_ host: String) -> Bool {
        var lower = host.lowercased()
        if lower.hasSuffix(".") { lower.removeLast() }
        return lower.hasSuffix(".i2p") || lower == "i2p"
    }

    /// Whether a profile's anonymizer can carry a tunnel to a peer; nil when it can.
    func reachability(of peer: Peer, profile: Profile) -> RouteRefusal? {
        switch (profile.anonymizer, peer.address) {
        case (.none, .hostPort):
            return nil
        case (.none, _):
            return .notAllowed("peer '\(peer.name)' has an anonymous address and profile '\(profile.name)' uses anonymizer none")
        case (.tor, .onion), (.tor, .hostPort):
            return nil
        case (.tor, .i2p):
            return .notAllowed("peer '\(peer.name)' has an I2P address and profile '\(profile.name)' uses tor")
        case (.i2p, _):
            return .anonymizerUnavailable(
                "profile '\(profile.name)' uses anonymizer \(profile.anonymizer.rawValue), which this build cannot drive yet")
        }
    }
}

extension SOCKSAddress {
    /// Host text and port as the application gave them (a domain stays a domain).
    var hostAndPort: (host: String, port: Int) {
        switch self {
        case .domain(let name, let port):
            return (name, port)
        case .address(let address):
            return (address.ipAddress ?? "?", address.port ?? 0)
        }
    }
}
