import NIOCore

/// Copies bytes between two local channels (a SOCKS client and a direct connection), with
/// back-pressure: a side stops reading while the other cannot write.
final class RelayHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny
    typealias OutboundOut = NIOAny

    private var partner: RelayHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    /// What the partner read before this side joined its pipeline (bytes a SOCKS server sent right
    /// behind its reply): written as soon as it joins.
    private var early: [NIOAny] = []

    /// Two handlers that relay into each other; add one to each channel.
    static func pair() -> (RelayHandler, RelayHandler) {
        let a = RelayHandler(), b = RelayHandler()
        a.partner = b
        b.partner = a
        return (a, b)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        // The partner may have asked to read while this side had no channel to write to; a channel
        // that was writable all along never reports a change, so do the deferred read now.
        if context.channel.isWritable { partner?.partnerBecameWritable() }
        guard !early.isEmpty else { return }
        for data in early { context.write(data, promise: nil) }
        early = []
        context.flush()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    private func partnerWrite(_ data: NIOAny) {
        if let context { context.write(data, promise: nil) } else if partner != nil { early.append(data) }
    }
    private func partnerFlush() { context?.flush() }
    private var partnerWritable: Bool { context?.channel.isWritable ?? false }

    private func partnerCloseOutput() {
        context?.close(mode: .all, promise: nil)
    }

    private func partnerBecameWritable() {
        if pendingRead {
            pendingRead = false
            context?.read()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        partner?.partnerWrite(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.partnerFlush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        partner?.partnerCloseOutput()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerBecameWritable() }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    func read(context: ChannelHandlerContext) {
        if partner?.partnerWritable ?? false {
            context.read()
        } else {
            pendingRead = true
        }
    }
}
