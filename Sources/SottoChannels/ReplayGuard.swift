/// Remembers the message ids opened per channel, so that an envelope delivered twice (by a
/// mailbox that replays it, or a GET without DELETE) is refused the second time.
///
/// Memory is bounded: at most `limitPerChannel` ids per channel. Ids whose epoch has left the
/// channel's acceptance window are forgotten first (their envelopes fail the epoch check
/// anyway); only when a channel receives more than the limit within one window does the oldest
/// id go early, which `evicted` counts: a replay of that message would then pass.
public struct ReplayGuard: Sendable, Equatable {
    public static let defaultLimitPerChannel = 4096
    /// Bounds `init(serialized:)`.
    public static let maximumLimitPerChannel = 1 << 20
    public static let maximumChannels = 4096

    public let limitPerChannel: Int
    /// Envelopes refused as replays since this guard was made (not persisted).
    public private(set) var replaysRefused = 0
    /// Ids dropped while still inside their window because the limit was reached.
    public private(set) var evicted = 0

    struct Entry: Sendable, Equatable {
        var epoch: UInt64
        var messageID: [UInt8]
    }

    /// Channel id (16 bytes) to its ids in the order they came.
    private var records: [[UInt8]: [Entry]] = [:]

    public init(limitPerChannel: Int = ReplayGuard.defaultLimitPerChannel) {
        precondition((1...Self.maximumLimitPerChannel).contains(limitPerChannel))
        self.limitPerChannel = limitPerChannel
    }

    /// How many ids the guard holds for `channel`.
    public func count(for channel: Channel) -> Int { records[channel.id]?.count ?? 0 }

    /// Records `message` for `channel`, or throws `.replayed` when its id was seen.
    public mutating func admit(channel: Channel, message: OpenedMessage, at unixTime: Double) throws {
        var entries = records[channel.id] ?? []
        let window = SealedEnvelope.acceptedEpochs(channel, at: unixTime)
        entries.removeAll { !window.contains($0.epoch) }
        if entries.contains(where: { $0.messageID == message.messageID }) {
            records[channel.id] = entries
            replaysRefused += 1
            throw EnvelopeError.replayed(messageID: message.messageIDText)
        }
        if entries.count >= limitPerChannel {
            let excess = entries.count - limitPerChannel + 1
            entries.removeFirst(excess)
            evicted += excess
        }
        entries.append(Entry(epoch: message.epoch, messageID: message.messageID))
        records[channel.id] = entries
    }

    // MARK: - Persistence

    /// Why saved guard bytes were refused.
    public enum FormatError: Error, Sendable, Equatable, CustomStringConvertible {
        case badMagic
        case truncated(at: Int)
        case trailingBytes(Int)
        case badLimit(Int)
        case tooManyChannels(Int)
        case tooManyEntries(Int, limit: Int)
        case duplicateChannel

        public var description: String {
            switch self {
            case .badMagic: return "not a replay guard file (bad magic)"
            case .truncated(let offset): return "replay guard file is truncated at byte \(offset)"
            case .trailingBytes(let count): return "replay guard file has \(count) bytes after its end"
            case .badLimit(let limit): return "replay guard file has an invalid limit \(limit)"
            case .tooManyChannels(let count): return "replay guard file lists \(count) channels, at most \(ReplayGuard.maximumChannels)"
            case .tooManyEntries(let count, let limit): return "replay guard file lists \(count) ids for a channel, its limit is \(limit)"
            case .duplicateChannel: return "replay guard file lists a channel twice"
            }
        }
    }

    static let magic = Array("SRG1".utf8)

    /// magic "SRG1" || limit (4) || channel count (2) ||
    /// per channel: channel id (16) || id count (4) || per id: epoch (8) || message id (16); big-endian.
    /// Channels in byte order, so equal guards save equal bytes.
    public func serialized() -> [UInt8] {
        var out = Self.magic
        out += bytes(UInt64(limitPerChannel), count: 4)
        out += bytes(UInt64(records.count), count: 2)
        for channelID in records.keys.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            let entries = records[channelID]!
            out += channelID
            out += bytes(UInt64(entries.count), count: 4)
            for entry in entries {
                out += Derivation.bigEndian(entry.epoch)
                out += entry.messageID
            }
        }
        return out
    }

    public init(serialized data: [UInt8]) throws {
        var reader = Reader(data: data)
        guard try reader.take(4) == Self.magic else { throw FormatError.badMagic }
        let limit = Int(try reader.number(4))
        guard (1...Self.maximumLimitPerChannel).contains(limit) else { throw FormatError.badLimit(limit) }
        self.init(limitPerChannel: limit)
        let channels = Int(try reader.number(2))
        guard channels <= Self.maximumChannels else { throw FormatError.tooManyChannels(channels) }
        for _ in 0..<channels {
            let channelID = try reader.take(16)
            let count = Int(try reader.number(4))
            guard count <= limit else { throw FormatError.tooManyEntries(count, limit: limit) }
            guard records[channelID] == nil else { throw FormatError.duplicateChannel }
            var entries: [Entry] = []
            entries.reserveCapacity(min(count, data.count / 24))
            for _ in 0..<count {
                let epoch = try reader.number(8)
                entries.append(Entry(epoch: epoch, messageID: try reader.take(16)))
            }
            records[channelID] = entries
        }
        guard reader.offset == data.count else { throw FormatError.trailingBytes(data.count - reader.offset) }
    }

    private func bytes(_ value: UInt64, count: Int) -> [UInt8] {
        Array(Derivation.bigEndian(value).suffix(count))
    }

    private struct Reader {
        let data: [UInt8]
        var offset = 0

        mutating func take(_ count: Int) throws -> [UInt8] {
            guard data.count - offset >= count else { throw FormatError.truncated(at: data.count) }
            defer { offset += count }
            return Array(data[offset..<(offset + count)])
        }

        mutating func number(_ count: Int) throws -> UInt64 {
            Derivation.readBigEndian(try take(count))
        }
    }
}
