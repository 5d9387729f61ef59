import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import SottoConfig
import SottoShaping

/// A running gateway: whatever the configuration describes (SOCKS server, forwards, exit
/// services) on one event loop, with a status socket, until graceful shutdown.
public final class Gateway: ServiceLifecycle.Service, @unchecked Sendable {
    public let config: SottoConfig
    private let logger: Logger

    public init(config: SottoConfig, logger: Logger) {
        self.config = config
        self.logger = logger
    }

    /// Refuses configurations this build cannot run safely, before anything listens: a profile
    /// whose anonymizer is missing must not start at all rather than fall back to a weaker path.
    public static func validate(_ config: SottoConfig) throws {
        for profile in config.profiles where profile.anonymizer == .i2p {
            let users = config.forwards.contains { $0.profile == profile.name }
                || config.services.contains { $0.profile == profile.name }
                || config.socks != nil
            if users {
                throw GatewayError.invalid(
                    "\(config.file): profile '\(profile.name)': anonymizer 'i2p' is not available in this build yet; refusing to start rather than carry its traffic another way")
            }
        }
        // Every shaping policy runs (docs/shaping.md); what the parser let through must also
        // make valid shaping values, or the gateway refuses to start instead of shaping less.
        for profile in config.profiles {
            do {
                _ = try profile.shapingParameters()
            } catch {
                throw GatewayError.invalid("\(config.file): profile '\(profile.name)': shaping: \(error)")
            }
        }
        for service in config.services {
            do {
                let fallback = try config.profile(named: service.profile)?.shapingParameters() ?? .off
                _ = try service.shapingLimits.shapingLimits(fallback: fallback)
            } catch {
                throw GatewayError.invalid("\(config.file): service '\(service.name)': shaping limits: \(error)")
            }
        }
        for forward in config.forwards {
            guard let peer = config.peer(named: forward.peer), let profile = config.profile(named: forward.profile) else { continue }
            if let refusal = Router(config: config).reachability(of: peer, profile: profile) {
                throw GatewayError.invalid("\(config.file): forward \(forward.listen): \(refusal)")
            }
        }
        if config.socks == nil && config.forwards.isEmpty && config.services.isEmpty {
            throw GatewayError.invalid("\(config.file): nothing to run: no [socks], [[forward]] or [[service]]")
        }
    }

    public func run() async throws {
        try Self.validate(config)
        try prepareStateDirectory()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let gateway = GatewayContext(config: config, loop: loop, logger: logger)
        var channels: [Channel] = []
        do {
            channels = try await loop.flatSubmit { self.start(gateway) }.get()
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        if let tor = gateway.tor { tor.start() }
        logger.notice("sotto ready", metadata: ["listeners": "\(gateway.listeners.joined(separator: ", "))"])
        do {
            try await gracefulShutdown()
        } catch {}
        logger.notice("shutting down")
        try? await loop.submit {
            for service in gateway.exitServices { service.stop() }
            for tunnel in gateway.entryTunnels.values { tunnel.shutdown() }
        }.get()
        if let tor = gateway.tor { await tor.stop() }
        for channel in channels { try? await channel.close() }
        try? FileManager.default.removeItem(atPath: statusSocketPath)
        try? await group.shutdownGracefully()
    }

    public var statusSocketPath: String { Self.statusSocketPath(config) }

    public static func statusSocketPath(_ config: SottoConfig) -> String {
        (config.stateDir as NSString).appendingPathComponent("status.sock")
    }

    private func prepareStateDirectory() throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: config.stateDir, withIntermediateDirectories: true,
                               attributes: [.posixPermissions: 0o700])
        try? fm.setAttributes([.posixPermissions: 0o700], ofItemAtPath: config.stateDir)
    }

    /// The address a listener actually got (port 0 in the configuration picks a free port).
    private static func bound(_ channel: Channel, _ configured: HostPort) -> String {
        guard let address = channel.localAddress, let ip = address.ipAddress, let port = address.port else {
            return "\(configured)"
        }
        return address.protocol == .inet6 ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }

    /// Binds every listener on the loop. Any failure stops the start: half a gateway is worse
    /// than none.
    private func start(_ gateway: GatewayContext) -> EventLoopFuture<[Channel]> {
        var futures: [EventLoopFuture<Channel>] = []
        if config.uses(.tor) {
            let tor = TorRuntime(config: config, loop: gateway.loop, logger: logger)
            tor.onReady.append { [weak gateway] in gateway?.anonymizerReady(.tor) }
            gateway.tor = tor
        }
        for service in config.services {
            let exit = ExitService(service: service, gateway: gateway)
            gateway.exitServices.append(exit)
            let anonymizer = config.profile(named: service.profile)?.anonymizer ?? .none
            futures.append(exit.start().explainFailure("exit service '\(service.name)' tunnel listener \(service.listen)").map { channel in
                if anonymizer == .tor, let tor = gateway.tor, let port = channel.localAddress?.port {
                    tor.addOnionService(service, localPort: port)
                }
                gateway.listeners.append("service \(service.name) tunnel listener \(Self.bound(channel, service.listen))")
                self.logger.notice("exit service '\(service.name)' accepting tunnels on \(Self.bound(channel, service.listen))",
                                   metadata: ["exposes": "\(service.exposes.map { "\($0.proto.rawValue) \($0.virtualPort) -> \($0.target)" })"])
                return channel
            })
        }
        if let socks = config.socks {
            futures.append(SOCKSServer.bind(gateway: gateway, settings: socks).explainFailure("SOCKS5 server \(socks.listen)").map { channel in
                gateway.listeners.append("socks5 \(Self.bound(channel, socks.listen))")
                self.logger.notice("SOCKS5 server on \(Self.bound(channel, socks.listen)) (auth \(socks.auth.rawValue))")
                return channel
            })
        }
        for forward in config.forwards {
            futures.append(LocalForward.bind(forward, gateway: gateway).explainFailure("forward \(forward.proto.rawValue)://\(forward.listen)").map { channel in
                let listen = Self.bound(channel, forward.listen)
                gateway.listeners.append("forward \(forward.proto.rawValue)://\(listen) -> \(forward.peer):\(forward.virtualPort)")
                self.logger.notice("forward \(forward.proto.rawValue)://\(listen) -> \(forward.peer):\(forward.virtualPort) (profile \(forward.profile))")
                return channel
            })
        }
        futures.append(StatusServer.bind(path: statusSocketPath, gateway: gateway).explainFailure("status socket \(statusSocketPath)"))
        return EventLoopFuture.whenAllSucceed(futures, on: gateway.loop).flatMapError { error in
            // Close whatever did bind before reporting the failure.
            EventLoopFuture.whenAllComplete(futures, on: gateway.loop).flatMapThrowing { results in
                for case .success(let channel) in results { channel.close(promise: nil) }
                throw error
            }
        }
    }
}

extension EventLoopFuture {
    /// Names what failed: "SOCKS5 server 127.0.0.1:1080: Address already in use".
    func explainFailure(_ what: String) -> EventLoopFuture<Value> {
        flatMapErrorThrowing { error in
            if let ioError = error as? IOError {
                throw GatewayError.invalid("\(what): cannot listen: \(String(cString: strerror(ioError.errnoCode)))")
            }
            throw GatewayError.invalid("\(what): \(error)")
        }
    }
}
