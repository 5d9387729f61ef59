// Credit-based flow control for one TCP flow (protocol.md, "TCP streams and credit").
// Pure bookkeeping: the gateway asks how much it may send, and reports what it received and
// delivered; this type says when to announce credit and when the peer broke the rules.

/// A peer that broke the credit rules. Either one ends the flow with `CloseReason.protocolError`.
public enum StreamCreditError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The peer granted credit for more bytes than it could have received: our credit would
    /// exceed the window it announced in `open`/`opened`.
    case grantBeyondWindow(increment: UInt32, credit: Int, window: UInt32)
    /// The peer sent more stream bytes than the credit we granted.
    case overrun(received: Int, credit: Int)

    public var description: String {
        switch self {
        case let .grantBeyondWindow(increment, credit, window):
            return "peer granted \(increment) more bytes of stream credit on top of \(credit), beyond the \(window)-byte window it announced"
        case let .overrun(received, credit):
            return "peer sent \(received) stream bytes with only \(credit) bytes of credit left"
        }
    }
}

/// Both halves of one TCP flow's credit.
///
/// Send side: the peer's window (from its `open` or `opened`) is our initial credit; each
/// stream-data byte we send uses one; each `window update` from the peer gives some back.
/// Receive side: we granted `receiveWindow`; each byte the peer sends uses one; once we have
/// written at least half the window to the local socket since our last announcement, we
/// announce those bytes back as a `window update`. Since credit only ever returns for bytes
/// that were sent, neither side's credit can exceed its window: memory stays bounded by it.
public struct StreamCredit: Equatable, Sendable {
    /// The window the peer announced: the most credit we can ever hold.
    public let sendWindow: UInt32
    /// The window we announced: the most the peer can have in flight to us.
    public let receiveWindow: UInt32

    /// Stream-data bytes we may send now.
    public private(set) var sendable: Int
    /// Bytes the peer may still send before it needs more credit from us.
    public private(set) var peerCredit: Int
    /// Bytes received from the peer and not yet written to the local socket.
    public private(set) var undelivered = 0
    /// Bytes written to the local socket since our last announcement.
    public private(set) var unannounced = 0

    /// Delivered bytes that trigger an announcement: half the window, rounded up, so a peer
    /// that used all its credit always gets some back once we deliver it.
    public var announcementThreshold: Int { (Int(receiveWindow) + 1) / 2 }

    public init(initialSendWindow: UInt32, receiveWindow: UInt32) {
        precondition(receiveWindow > 0, "a zero receive window would never let the peer send")
        self.sendWindow = initialSendWindow
        self.receiveWindow = receiveWindow
        self.sendable = Int(initialSendWindow)
        self.peerCredit = Int(receiveWindow)
    }

    // MARK: Send side

    /// Records `n` stream-data bytes sent. Sending more than `sendable` is a programming error.
    public mutating func consumeSend(_ n: Int) {
        precondition(n >= 0 && n <= sendable, "sending \(n) stream bytes with \(sendable) bytes of credit")
        sendable -= n
    }

    /// Applies a `window update` from the peer.
    public mutating func grant(_ increment: UInt32) throws {
        let updated = sendable + Int(increment)
        guard updated <= Int(sendWindow) else {
            throw StreamCreditError.grantBeyondWindow(increment: increment, credit: sendable, window: sendWindow)
        }
        sendable = updated
    }

    // MARK: Receive side

    /// Records `n` stream-data bytes received from the peer.
    public mutating func received(_ n: Int) throws {
        precondition(n >= 0, "negative byte count")
        guard n <= peerCredit else { throw StreamCreditError.overrun(received: n, credit: peerCredit) }
        peerCredit -= n
        undelivered += n
    }

    /// Records `n` received bytes written to the local socket. Returns the increment to send in
    /// a `window update` once at least half the receive window was delivered since the last
    /// announcement, else nil.
    public mutating func delivered(_ n: Int) -> UInt32? {
        precondition(n >= 0 && n <= undelivered, "delivering \(n) bytes with \(undelivered) received and undelivered")
        undelivered -= n
        unannounced += n
        guard unannounced >= announcementThreshold else { return nil }
        let increment = unannounced
        unannounced = 0
        peerCredit += increment
        return UInt32(increment)
    }
}
