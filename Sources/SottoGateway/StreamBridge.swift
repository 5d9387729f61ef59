import NIOCore
import SottoTunnel

/// Joins a local TCP connection to a TCP flow of a tunnel, on either side.
///
/// Bytes read from the local socket go out as stream-data cells as far as the peer's credit
/// allows; without credit the bridge stops reading from the socket (back-pressure, so memory is
/// bounded by the window). Bytes from the tunnel are written to the socket, and credit is
/// returned only once they are written. The local socket and the tunnel must share an event loop.
final class StreamBridge: ChannelInboundHandler, RemovableChannelHandler, EntryFlow {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private weak var session: TunnelSession?
    private(set) var flowID: UInt32?
    private var context: ChannelHandlerContext?
    private var pending: ByteBuffer?
    private var localClosed = false
    private var tunnelClosed = false
    private var lastWrite: EventLoopFuture<Void>?
    private var unflushed = false

    /// Entry side: the exit has connected the target. Exit side: never called.
    var onOpened: (() -> Void)?
    /// The flow ended before `onOpened` (refused, tunnel gone), or later.
    var onClosed: ((CloseReason, String) -> Void)?

    let kind = FlowKind.tcp
    /// The exit's virtual port (entry side); unused at the exit.
    let virtualPort: Int

    init(virtualPort: Int = 0) {
        self.virtualPort = virtualPort
    }

    func entryFlowBound(session: TunnelSession, flowID: UInt32) {
        bind(session: session, flowID: flowID)
    }

    /// Binds the bridge to its flow once the flow exists.
    func bind(session: TunnelSession, flowID: UInt32) {
        self.session = session
        self.flowID = flowID
    }

    // MARK: local socket

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if pending == nil {
            pending = bytes
        } else {
            pending!.writeBuffer(&bytes)
        }
        pump()
    }

    func channelInactive(context: ChannelHandlerContext) {
        localClosed = true
        finishIfDrained()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    /// Sends what the credit allows; pauses reading the socket while anything is left over.
    private func pump() {
        guard let session = session, let id = flowID, var buffer = pending else { return }
        session.sendStream(flow: id, &buffer)
        if buffer.readableBytes == 0 {
            pending = nil
            setReading(true)
        } else {
            pending = buffer
            setReading(false)
        }
        finishIfDrained()
    }

    private var reading = true
    private func setReading(_ on: Bool) {
        guard on != reading, let context = context else { return }
        reading = on
        context.channel.setOption(ChannelOptions.autoRead, value: on).whenComplete { _ in }
    }

    /// The local side closed: once everything read from it has been sent, close the flow.
    private func finishIfDrained() {
        guard localClosed, !tunnelClosed, pending == nil, let session = session, let id = flowID else { return }
        tunnelClosed = true
        session.closeFlow(id)
    }

    // MARK: tunnel side

    func tunnelDeliver(datagram: ByteBuffer) {}

    func tunnelDeliver(stream: ByteBuffer) {
        guard let context = context, !localClosed else { return }
        let count = stream.readableBytes
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.write(wrapOutboundOut(stream), promise: promise)
        unflushed = true
        lastWrite = promise.futureResult
        promise.futureResult.whenSuccess { [weak self] in
            guard let self = self, let id = self.flowID else { return }
            self.session?.streamDelivered(flow: id, count: count)
        }
    }

    func tunnelFlush() {
        guard unflushed else { return }
        unflushed = false
        context?.flush()
    }

    func tunnelOpened() {
        onOpened?()
        onOpened = nil
    }

    func tunnelCreditAvailable() {
        pump()
    }

    /// The peer closed the flow, or the tunnel went away: close the socket once what was
    /// written has left.
    func tunnelClosed(reason: CloseReason, message: String) {
        tunnelClosed = true
        let callback = onClosed
        onClosed = nil
        onOpened = nil
        callback?(reason, message)
        guard let context = context else { return }
        tunnelFlush()
        let channel = context.channel
        if let lastWrite = lastWrite {
            lastWrite.whenComplete { _ in channel.close(promise: nil) }
        } else {
            channel.close(promise: nil)
        }
    }
}
