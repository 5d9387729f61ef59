import Crypto

/// A DTLS PSK identity and the key that goes with it, for one session.
///
/// Identities are printable ASCII (a mode letter and lower-case hex) and at most 51 bytes, within
/// libcoap's 64-byte limit (COAP_DTLS_MAX_PSK_IDENTITY), because some clients pass identities
/// around as C strings.
public struct PSKCredential: Sendable, Equatable, CustomStringConvertible {
    public let identity: [UInt8]
    public let key: [UInt8]
    public let channel: String
    public let mode: IdentityMode
    /// The epoch the credential belongs to (0 for `global`, which has none).
    public let epoch: UInt64

    public var identityText: String { String(decoding: identity, as: UTF8.self) }

    /// Never shows the key.
    public var description: String {
        "PSK identity '\(identityText)' (channel '\(channel)', \(mode.rawValue), epoch \(epoch), \(key.count)-byte key)"
    }
}

/// The identity derivations (docs/channels.md, "Private identities").
///
/// - `global`:      "g" || hex(HKDF(secret, "global identity", 20 bytes)); key HKDF(secret, "global psk").
///                  Neither depends on the name or the time.
/// - `per-channel`: "c" || hex(HMAC(identityKey, "per-channel" || epoch)[0..<20]);
///                  key HKDF(secret, "per-channel psk", name, epoch).
/// - `throwaway`:   "t" || hex(nonce (10 random bytes) || HMAC(identityKey, "throwaway" || epoch || nonce)[0..<15]);
///                  key HKDF(secret, "throwaway psk", name, epoch, nonce).
///
/// identityKey = HKDF(secret, "identity key", name): knowing the name alone gives nothing.
public enum PrivateIdentity {
    static let hashLength = 20
    static let throwawayNonceLength = 10
    static let throwawayTagLength = 15
    static let pskLength = 32

    /// The credential a client uses at `unixTime`: for `throwaway`, a new one at every call.
    public static func credential(for channel: Channel, at unixTime: Double) -> PSKCredential {
        var generator = SystemRandomNumberGenerator()
        return credential(for: channel, at: unixTime, using: &generator)
    }

    /// As above with the randomness of a throwaway nonce from `generator`.
    public static func credential<R: RandomNumberGenerator>(for channel: Channel, at unixTime: Double,
                                                           using generator: inout R) -> PSKCredential {
        let epoch = channel.schedule.epoch(at: unixTime)
        switch channel.identityMode {
        case .global:
            return global(channel)
        case .perChannel:
            return perChannel(channel, epoch: epoch)
        case .throwaway:
            let nonce = (0..<throwawayNonceLength).map { _ in UInt8.random(in: 0...255, using: &generator) }
            return throwaway(channel, epoch: epoch, nonce: nonce)
        }
    }

    static func global(_ channel: Channel) -> PSKCredential {
        let hash = Derivation.bytes(channel.secret, label: "global identity", name: "", count: hashLength)
        let key = Derivation.bytes(channel.secret, label: "global psk", name: "", count: pskLength)
        return PSKCredential(identity: Array(("g" + Derivation.hex(hash)).utf8), key: key, channel: channel.name,
                             mode: .global, epoch: 0)
    }

    static func perChannelIdentity(_ channel: Channel, epoch: UInt64) -> [UInt8] {
        let hash = Array(Derivation.hmac(channel.identityKey, Array("per-channel".utf8), Derivation.bigEndian(epoch))
            .prefix(hashLength))
        return Array(("c" + Derivation.hex(hash)).utf8)
    }

    static func perChannel(_ channel: Channel, epoch: UInt64) -> PSKCredential {
        let key = Derivation.bytes(channel.secret, label: "per-channel psk", name: channel.name, epoch: epoch,
                                   count: pskLength)
        return PSKCredential(identity: perChannelIdentity(channel, epoch: epoch), key: key, channel: channel.name,
                             mode: .perChannel, epoch: epoch)
    }

    static func throwawayTag(_ channel: Channel, epoch: UInt64, nonce: [UInt8]) -> [UInt8] {
        Array(Derivation.hmac(channel.identityKey, Array("throwaway".utf8), Derivation.bigEndian(epoch), nonce)
            .prefix(throwawayTagLength))
    }

    static func throwaway(_ channel: Channel, epoch: UInt64, nonce: [UInt8]) -> PSKCredential {
        let tag = throwawayTag(channel, epoch: epoch, nonce: nonce)
        let key = Derivation.bytes(channel.secret, label: "throwaway psk", name: channel.name, epoch: epoch,
                                   extra: nonce, count: pskLength)
        return PSKCredential(identity: Array(("t" + Derivation.hex(nonce + tag)).utf8), key: key,
                             channel: channel.name, mode: .throwaway, epoch: epoch)
    }
}

/// The server's side: which channel (and key) an identity from a handshake belongs to, found by
/// deriving instead of looking up a table, so the server keeps no list of identities.
///
/// Work is bounded and does not depend on where a match is: every configured channel of the
/// identity's mode is tried for the previous, current and next epoch (clock skew of up to one
/// epoch either way), each comparison in constant time, and the loop never stops early.
public struct ChannelIdentityResolver: Sendable {
    /// Bounds the work per handshake: three HMACs per channel.
    public static let maximumChannels = 4096

    public let channels: [Channel]

    public init(channels: [Channel]) {
        precondition(channels.count <= Self.maximumChannels, "more than \(Self.maximumChannels) channels")
        self.channels = channels
    }

    /// The credential `identity` stands for at `unixTime`, or nil when no channel derives it.
    public func resolve(identity: [UInt8], at unixTime: Double) -> PSKCredential? {
        // Shape first: mode letter and hex of the right length. The shape is public anyway.
        guard let letter = identity.first else { return nil }
        let body = identity.dropFirst()
        switch letter {
        case UInt8(ascii: "g"):
            guard body.count == 2 * PrivateIdentity.hashLength, Derivation.unhex(body) != nil else { return nil }
            return firstMatch(mode: .global) { channel in
                let credential = PrivateIdentity.global(channel)
                return Derivation.constantTimeEqual(credential.identity, identity) ? credential : nil
            }
        case UInt8(ascii: "c"):
            guard body.count == 2 * PrivateIdentity.hashLength, Derivation.unhex(body) != nil else { return nil }
            return firstMatch(mode: .perChannel) { channel in
                var found: UInt64?
                for epoch in Self.window(channel.schedule.epoch(at: unixTime)) {
                    let expected = PrivateIdentity.perChannelIdentity(channel, epoch: epoch)
                    if Derivation.constantTimeEqual(expected, identity), found == nil { found = epoch }
                }
                return found.map { PrivateIdentity.perChannel(channel, epoch: $0) }
            }
        case UInt8(ascii: "t"):
            let length = PrivateIdentity.throwawayNonceLength + PrivateIdentity.throwawayTagLength
            guard body.count == 2 * length, let bytes = Derivation.unhex(body) else { return nil }
            let nonce = Array(bytes.prefix(PrivateIdentity.throwawayNonceLength))
            let tag = Array(bytes.dropFirst(PrivateIdentity.throwawayNonceLength))
            return firstMatch(mode: .throwaway) { channel in
                var found: UInt64?
                for epoch in Self.window(channel.schedule.epoch(at: unixTime)) {
                    let expected = PrivateIdentity.throwawayTag(channel, epoch: epoch, nonce: nonce)
                    if Derivation.constantTimeEqual(expected, tag), found == nil { found = epoch }
                }
                // The key is derived only for the match: one HKDF more, not per candidate.
                return found.map { PrivateIdentity.throwaway(channel, epoch: $0, nonce: nonce) }
            }
        default:
            return nil
        }
    }

    /// A closure for `CoAPServer`'s identity callback: identity in, key out (nil refuses the
    /// handshake). `now` is the server's clock, seconds since 1970.
    public func keyLookup(now: @escaping @Sendable () -> Double) -> @Sendable ([UInt8]) -> [UInt8]? {
        let resolver = self
        return { identity in resolver.resolve(identity: identity, at: now())?.key }
    }

    /// Tries every channel of `mode`; keeps the first match without stopping, so the time taken
    /// does not tell which channel matched.
    private func firstMatch(mode: IdentityMode, _ attempt: (Channel) -> PSKCredential?) -> PSKCredential? {
        var found: PSKCredential?
        for channel in channels where channel.identityMode == mode {
            if let credential = attempt(channel), found == nil { found = credential }
        }
        return found
    }

    /// The epochs accepted around `current`: one either way.
    static func window(_ current: UInt64) -> [UInt64] {
        [current == 0 ? nil : current - 1, current, current == UInt64.max ? nil : current + 1].compactMap { $0 }
    }
}
