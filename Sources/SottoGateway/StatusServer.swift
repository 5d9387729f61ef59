import Foundation
import NIOCore
import NIOPosix
import SottoConfig

/// `sotto status`: the gateway answers every connection on a Unix socket in its state
/// directory (mode 0700) with one JSON snapshot of its counters, then closes.
enum StatusServer {
    static func bind(path: String, gateway: GatewayContext) -> EventLoopFuture<Channel> {
        ServerBootstrap(group: gateway.loop)
            .childChannelInitializer { channel in
                channel.pipeline.addHandler(Answer(gateway: gateway))
            }
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true)
    }

    /// Writes the snapshot as soon as the connection is up, then closes.
    private final class Answer: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let gateway: GatewayContext
        init(gateway: GatewayContext) { self.gateway = gateway }

        func channelActive(context: ChannelHandlerContext) {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let data = (try? encoder.encode(gateway.snapshot())) ?? Data("{}".utf8)
            var buffer = context.channel.allocator.buffer(capacity: data.count + 1)
            buffer.writeBytes(data)
            buffer.writeString("\n")
            context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { _ in context.close(promise: nil) }
        }
    }

    /// Reads one snapshot from a running gateway's status socket.
    public static func fetch(path: String) async throws -> String {
        let group = MultiThreadedEventLoopGroup.singleton
        let collector = Collector()
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { $0.pipeline.addHandler(collector) }
            .connect(unixDomainSocketPath: path).get()
        try await channel.closeFuture.get()
        return collector.text
    }

    private final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        var text = ""
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var buffer = unwrapInboundIn(data)
            text += buffer.readString(length: buffer.readableBytes) ?? ""
        }
    }
}

/// Reads a running gateway's status (what `sotto status` prints).
public enum GatewayStatus {
    public static func fetch(config: SottoConfig) async throws -> String {
        let path = Gateway.statusSocketPath(config)
        guard FileManager.default.fileExists(atPath: path) else {
            throw GatewayError.invalid("no gateway is running for \(config.file): \(path) does not exist")
        }
        do {
            return try await StatusServer.fetch(path: path)
        } catch {
            throw GatewayError.invalid("no gateway answers on \(path): \(error)")
        }
    }
}
