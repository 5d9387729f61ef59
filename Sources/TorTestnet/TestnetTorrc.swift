/// When the authorities vote. A consensus is valid from `midnight + offset + k * interval`
/// (dir-spec 1.4; tor-manual TestingV3AuthVotingStartOffset); the vote for it happens
/// `voteDelay + distDelay` earlier. The offset is recomputed on every `up` so that the first vote
/// comes `firstVoteAfter` seconds after the authorities start: late enough for the relays to have
/// uploaded their descriptors (else the first consensus lists no relays and clients wait a whole
/// interval), early enough not to waste time.
public struct VotingSchedule: Sendable, Equatable {
    public var interval: Int
    public var voteDelay: Int
    public var distDelay: Int
    public var firstVoteAfter: Int

    public init(interval: Int = 10, voteDelay: Int = 2, distDelay: Int = 2, firstVoteAfter: Int = 4) {
        precondition(interval > 0 && voteDelay >= 0 && distDelay >= 0 && firstVoteAfter >= 0)
        self.interval = interval
        self.voteDelay = voteDelay
        self.distDelay = distDelay
        self.firstVoteAfter = firstVoteAfter
    }

    /// `TestingV3AuthVotingStartOffset` for authorities started at `now` (seconds since the epoch,
    /// UTC): the next consensus period then starts at `now + firstVoteAfter + voteDelay + distDelay`.
    public func startOffset(now: Int) -> Int {
        let secondsSinceMidnight = ((now % 86_400) + 86_400) % 86_400
        return (secondsSinceMidnight + firstVoteAfter + voteDelay + distDelay) % interval
    }
}

/// The torrc of each node, and the fragment for a gateway's tor. Text out; nothing is written here.
///
/// Why the options (DESIGN.md "Facts measured on this kind of machine"):
/// - every tor: explicit DirAuthority lines (tor then ignores its built-in public authorities) and
///   `UseDefaultFallbackDirs 0`, `OutboundBindAddress 127.0.0.1`: it never contacts the public network;
/// - `UseMicrodescriptors 0` on client and onion host: microdescriptor exit summaries drop private
///   addresses, so the client would find no exit for 127.0.0.1;
/// - `DirCache 0` on relays and `TestingDirAuthVoteHSDir` limited to the authorities: caches answer
///   404 for a while after start;
/// - `RefuseUnknownExits 0` on the exit: every relay shares 127.0.0.1;
/// - `VanguardsLiteEnabled 0`, `UseEntryGuards 0`: with three relays, paths collide;
/// - empty GeoIP files: memory.
public enum TestnetTorrc {
    /// The lines every node shares (all but the node's own folder, name and ports).
    static func common(_ network: TorTestnetInfo) -> [String] {
        let paths = network.paths
        return [
            "TestingTorNetwork 1",
        ] + network.authorities.compactMap(\.dirAuthorityLine) + [
            "UseDefaultFallbackDirs 0",
            "ClientUseIPv6 0",
            "OutboundBindAddress 127.0.0.1",
            "GeoIPFile \(paths.geoIP)",
            "GeoIPv6File \(paths.geoIPv6)",
            "PathsNeededToBuildCircuits 0.25",
        ]
    }

    /// The client-side options the client, the onion host and a gateway's tor need.
    static let clientPaths = [
        "UseMicrodescriptors 0",
        "UseEntryGuards 0",
        "VanguardsLiteEnabled 0",
    ]

    /// The torrc of `node`, for the run described by `network`.
    public static func text(for node: TestnetNode, network: TorTestnetInfo, schedule: VotingSchedule, votingOffset: Int) -> String {
        let paths = network.paths
        let folder = paths.node(node.name)
        var lines = [
            "# Written by `sotto testnet tor up` on every start (the ports change); keys/ is kept.",
            "DataDirectory \(folder)",
            "PidFile \(paths.pidFile(node.name))",
            // The parent returns once the daemon has parsed this file and opened its ports.
            "RunAsDaemon 1",
            "Nickname \(node.name)",
            "ContactInfo \(node.name)@testnet.invalid",
            "Log notice file \(paths.noticeLog(node.name))",
            "SafeLogging 0",
            "ShutdownWaitLength 0",
            "Address 127.0.0.1",
            "AssumeReachable 1",
        ]
        lines += common(network)
        lines += [
            "V3AuthNIntervalsValid 2",
            "TestingDirAuthVoteGuard *",
            "TestingDirAuthVoteExit \(network.exit.fingerprint)",
            "TestingDirAuthVoteHSDir \(network.authorities.map(\.fingerprint).joined(separator: ","))",
            "TestingMinExitFlagThreshold 0",
        ]
        let relay = network.relays.first { $0.name == node.name }
        switch node.kind {
        case .authority:
            lines += [
                "ORPort 127.0.0.1:\(relay!.orPort)",
                "DirPort 127.0.0.1:\(relay!.dirPort!)",
                "SocksPort 0",
                "AuthoritativeDirectory 1",
                "V3AuthoritativeDirectory 1",
                "ExitRelay 0",
                "ExitPolicy reject *:*",
                "TestingV3AuthInitialVotingInterval \(schedule.interval)",
                "TestingV3AuthInitialVoteDelay \(schedule.voteDelay)",
                "TestingV3AuthInitialDistDelay \(schedule.distDelay)",
                "V3AuthVotingInterval \(schedule.interval)",
                "V3AuthVoteDelay \(schedule.voteDelay)",
                "V3AuthDistDelay \(schedule.distDelay)",
                "TestingV3AuthVotingStartOffset \(votingOffset)",
            ]
        case .relay:
            lines += [
                "ORPort 127.0.0.1:\(relay!.orPort)",
                "DirCache 0",
                "ExitRelay 0",
                "SocksPort 0",
                "ExitPolicy reject *:*",
            ]
        case .exit:
            lines += [
                "ORPort 127.0.0.1:\(relay!.orPort)",
                "DirCache 0",
                "ExitRelay 1",
                "SocksPort 0",
                "IPv6Exit 0",
                "ExitPolicyRejectPrivate 0",
                "ExitPolicyRejectLocalInterfaces 0",
                "ExitPolicy accept 127.0.0.0/8:*",
                "ExitPolicy reject *:*",
                "RefuseUnknownExits 0",
                // Names resolve through 127.0.0.1 only, never the host's (possibly public) resolver.
                "ServerDNSResolvConfFile \(paths.resolvConf)",
                "ServerDNSDetectHijacking 0",
            ]
        case .client:
            lines += [
                "SocksPort 127.0.0.1:\(network.clientSocksPort) ExtendedErrors",
                "ControlPort 127.0.0.1:\(network.clientControlPort)",
                "CookieAuthentication 1",
                "CookieAuthFile \(paths.cookie(node.name))",
            ] + clientPaths
        case .onionHost:
            lines += [
                "ControlPort 127.0.0.1:\(network.onionHostControlPort)",
                "SocksPort 0",
                "CookieAuthentication 1",
                "CookieAuthFile \(paths.cookie(node.name))",
            ] + clientPaths
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// `DIR/gateway.torrc`: what a gateway's managed tor (`[tor] torrc_include`) needs to join this
    /// network as a client or onion service host, and nothing node-specific: the gateway's own torrc
    /// sets DataDirectory, ControlPort, SocksPort and logging.
    public static func gateway(network: TorTestnetInfo) -> String {
        let lines = [
            "# Written by `sotto testnet tor up` for a gateway's own tor ([tor] torrc_include): joins the private",
            "# Tor network in \(network.directory) and no other. Rewritten on every 'up' (the ports change).",
        ] + common(network) + clientPaths
        return lines.joined(separator: "\n") + "\n"
    }
}
