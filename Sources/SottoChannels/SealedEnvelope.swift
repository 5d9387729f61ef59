import Crypto

/// Why an envelope did not open. Descriptions say what a person can conclude; none holds key
/// bytes or plaintext.
public enum EnvelopeError: Error, Sendable, Equatable, CustomStringConvertible {
    case truncated(bytes: Int, minimum: Int)
    case oversized(bytes: Int, limit: Int)
    case unsupportedVersion(UInt8)
    /// The envelope's epoch lies outside the acceptance window around the reader's clock.
    case wrongEpoch(envelope: UInt64, earliest: UInt64, latest: UInt64)
    /// The channel tag does not match: sealed for another channel (or its nonce or tag altered).
    case otherChannel(String)
    /// The channel tag matches but the authenticated encryption fails: altered on the way.
    case tampered
    /// Authentic, but the plaintext inside is not laid out as `seal` writes it.
    case malformedContent
    /// The message id was opened before on this channel.
    case replayed(messageID: String)
    case messageTooLarge(bytes: Int, limit: Int)

    public var description: String {
        switch self {
        case .truncated(let bytes, let minimum):
            return "truncated: \(bytes) bytes, an envelope has at least \(minimum)"
        case .oversized(let bytes, let limit):
            return "oversized: \(bytes) bytes, an envelope has at most \(limit)"
        case .unsupportedVersion(let version):
            return "unsupported envelope version \(version) (this build reads version \(SealedEnvelope.version))"
        case .wrongEpoch(let envelope, let earliest, let latest):
            return "wrong epoch: sealed in epoch \(envelope), this channel accepts epochs \(earliest) to \(latest) now "
                + "(too old for max_message_age_seconds, or a clock is wrong)"
        case .otherChannel(let name):
            return "not sealed for channel '\(name)' (sealed for another channel, or its nonce or channel tag was altered)"
        case .tampered:
            return "tampered: authentication failed (the envelope was altered after sealing)"
        case .malformedContent:
            return "authentic but malformed content (the sender's software is broken)"
        case .replayed(let messageID):
            return "replayed: message \(messageID) was already received on this channel"
        case .messageTooLarge(let bytes, let limit):
            return "the message is \(bytes) bytes; an envelope carries at most \(limit)"
        }
    }
}

/// What an envelope held.
public struct OpenedMessage: Sendable, Equatable {
    /// Who sealed it, as they named themselves; only channel members can read it.
    public let sender: String
    /// 16 random bytes chosen by the sender; the replay guard's key.
    public let messageID: [UInt8]
    public let epoch: UInt64
    public let body: [UInt8]

    public var messageIDText: String { Derivation.hex(messageID) }
}

/// Sealed sender (docs/channels.md, "Sealed sender"): the mailbox stores and forwards an
/// envelope without learning who sent it or which channel it belongs to.
///
///     envelope  = version (1) || epoch (8, big-endian) || nonce (12) || channel tag (8)
///                 || ChaCha20-Poly1305 ciphertext || Poly1305 tag (16)
///     plaintext = sender length (1) || sender (UTF-8) || message id (16) || message
///     key       = HKDF(secret, "envelope key", name, epoch)
///     AD        = "sotto envelope" || version || channel id (16) || epoch (8)
///     channel tag = HMAC(tagKey, "channel tag" || nonce)[0..<8]
///
/// The channel tag lets a reader tell "not for this channel" from "altered" without naming the
/// channel to anyone else: it depends on the random nonce, so two envelopes' tags are unrelated.
public enum SealedEnvelope {
    public static let version: UInt8 = 1
    static let nonceLength = 12
    static let channelTagLength = 8
    static let aeadTagLength = 16
    static let messageIDLength = 16
    public static let maximumSenderLength = 255
    /// The largest message an envelope carries; CoAP moves it block-wise (RFC 7959).
    public static let maximumMessageLength = 1 << 20
    static let headerLength = 1 + 8 + nonceLength + channelTagLength
    /// An empty message from a one-byte sender.
    public static let minimumLength = headerLength + 1 + 1 + messageIDLength + aeadTagLength
    public static let maximumLength = headerLength + 1 + maximumSenderLength + messageIDLength + maximumMessageLength
        + aeadTagLength

    /// Seals `message` from `sender` for `channel`, in the epoch of `unixTime`.
    public static func seal(_ message: [UInt8], sender: String, channel: Channel, at unixTime: Double) throws -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return try seal(message, sender: sender, channel: channel, at: unixTime, using: &generator)
    }

    /// As above, with the nonce and message id from `generator`.
    public static func seal<R: RandomNumberGenerator>(_ message: [UInt8], sender: String, channel: Channel,
                                                     at unixTime: Double, using generator: inout R) throws -> [UInt8] {
        let senderBytes = Array(sender.utf8)
        guard (1...maximumSenderLength).contains(senderBytes.count) else { throw ChannelError.badSender(sender) }
        guard message.count <= maximumMessageLength else {
            throw EnvelopeError.messageTooLarge(bytes: message.count, limit: maximumMessageLength)
        }
        let epoch = channel.schedule.epoch(at: unixTime)
        let nonce = (0..<nonceLength).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let messageID = (0..<messageIDLength).map { _ in UInt8.random(in: 0...255, using: &generator) }

        var plaintext: [UInt8] = [UInt8(senderBytes.count)]
        plaintext.reserveCapacity(1 + senderBytes.count + messageIDLength + message.count)
        plaintext += senderBytes
        plaintext += messageID
        plaintext += message

        var envelope: [UInt8] = [version]
        envelope.reserveCapacity(headerLength + plaintext.count + aeadTagLength)
        envelope += Derivation.bigEndian(epoch)
        envelope += nonce
        envelope += channelTag(channel, nonce: nonce)
        let box = try ChaChaPoly.seal(plaintext, using: channel.envelopeKey(epoch: epoch),
                                      nonce: try ChaChaPoly.Nonce(data: nonce),
                                      authenticating: additionalData(channel, epoch: epoch))
        envelope += box.ciphertext
        envelope += box.tag
        return envelope
    }

    /// Opens an envelope for `channel` at `unixTime`; with a replay guard, refuses a message id
    /// it has seen and records a new one. Checks run cheapest first: size, version, epoch,
    /// channel tag, authentication, content, replay.
    public static func open(_ envelope: [UInt8], channel: Channel, at unixTime: Double,
                            replayGuard: inout ReplayGuard) throws -> OpenedMessage {
        let message = try open(envelope, channel: channel, at: unixTime)
        try replayGuard.admit(channel: channel, message: message, at: unixTime)
        return message
    }

    /// Opens without a replay check (for callers that keep their own record).
    public static func open(_ envelope: [UInt8], channel: Channel, at unixTime: Double) throws -> OpenedMessage {
        guard envelope.count >= minimumLength else {
            throw EnvelopeError.truncated(bytes: envelope.count, minimum: minimumLength)
        }
        guard envelope.count <= maximumLength else { throw EnvelopeError.oversized(bytes: envelope.count, limit: maximumLength) }
        guard envelope[0] == version else { throw EnvelopeError.unsupportedVersion(envelope[0]) }
        let epoch = Derivation.readBigEndian(envelope[1..<9])
        let window = acceptedEpochs(channel, at: unixTime)
        guard window.contains(epoch) else {
            throw EnvelopeError.wrongEpoch(envelope: epoch, earliest: window.lowerBound, latest: window.upperBound)
        }
        let nonce = Array(envelope[9..<(9 + nonceLength)])
        let tag = Array(envelope[(9 + nonceLength)..<headerLength])
        guard Derivation.constantTimeEqual(tag, channelTag(channel, nonce: nonce)) else {
            throw EnvelopeError.otherChannel(channel.name)
        }
        let sealed = envelope[headerLength...]
        let plaintext: [UInt8]
        do {
            let box = try ChaChaPoly.SealedBox(nonce: try ChaChaPoly.Nonce(data: nonce),
                                               ciphertext: sealed.dropLast(aeadTagLength),
                                               tag: sealed.suffix(aeadTagLength))
            plaintext = Array(try ChaChaPoly.open(box, using: channel.envelopeKey(epoch: epoch),
                                                  authenticating: additionalData(channel, epoch: epoch)))
        } catch {
            throw EnvelopeError.tampered
        }
        let senderLength = Int(plaintext[0])
        guard senderLength >= 1, plaintext.count >= 1 + senderLength + messageIDLength,
              let sender = String(strictUTF8: Array(plaintext[1..<(1 + senderLength)]))
        else { throw EnvelopeError.malformedContent }
        let idStart = 1 + senderLength
        return OpenedMessage(sender: sender, messageID: Array(plaintext[idStart..<(idStart + messageIDLength)]),
                             epoch: epoch, body: Array(plaintext[(idStart + messageIDLength)...]))
    }

    /// The epochs an envelope may carry at `unixTime`: back as far as the channel's maximum
    /// message age reaches, and one ahead for a sender whose clock runs early.
    public static func acceptedEpochs(_ channel: Channel, at unixTime: Double) -> ClosedRange<UInt64> {
        let current = channel.schedule.epoch(at: unixTime)
        let back = UInt64((channel.maxAgeSeconds + channel.schedule.seconds - 1) / channel.schedule.seconds)
        return (current >= back ? current - back : 0)...(current == .max ? current : current + 1)
    }

    static func channelTag(_ channel: Channel, nonce: [UInt8]) -> [UInt8] {
        Array(Derivation.hmac(channel.tagKey, Array("channel tag".utf8), nonce).prefix(channelTagLength))
    }

    static func additionalData(_ channel: Channel, epoch: UInt64) -> [UInt8] {
        Array("sotto envelope".utf8) + [version] + channel.id + Derivation.bigEndian(epoch)
    }
}

extension String {
    /// The text of `bytes` when they are valid UTF-8, else nil.
    fileprivate init?(strictUTF8 bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        guard text.utf8.elementsEqual(bytes) else { return nil }
        self = text
    }
}
