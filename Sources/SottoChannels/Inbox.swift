/// What became of one envelope a mailbox returned.
public struct InboxEntry: Sendable, Equatable {
    /// The mailbox's id of the envelope (not the message id inside it).
    public let id: Int64
    public let result: Result<OpenedMessage, EnvelopeError>

    /// Whether the reader may delete it from the mailbox: opened now, or opened before (a
    /// replay). Envelopes of other channels stay for their readers; tampered and wrong-epoch
    /// ones stay until the mailbox's time to live ends them, so a second reader can see them too.
    public var isAcknowledgeable: Bool {
        switch result {
        case .success: return true
        case .failure(.replayed): return true
        case .failure: return false
        }
    }
}

/// The receiving side of `sotto msg recv`, without I/O: the envelopes of one GET in, one entry
/// per envelope out, in the mailbox's order. One bad envelope never hides the others.
public enum Inbox {
    public static func open(_ envelopes: [(id: Int64, envelope: [UInt8])], channel: Channel, at unixTime: Double,
                            replayGuard: inout ReplayGuard) -> [InboxEntry] {
        envelopes.map { item in
            do {
                let message = try SealedEnvelope.open(item.envelope, channel: channel, at: unixTime, replayGuard: &replayGuard)
                return InboxEntry(id: item.id, result: .success(message))
            } catch let error as EnvelopeError {
                return InboxEntry(id: item.id, result: .failure(error))
            } catch {
                // SealedEnvelope.open throws EnvelopeError only; keep the entry rather than trap.
                return InboxEntry(id: item.id, result: .failure(.malformedContent))
            }
        }
    }

    /// The body of a DELETE that acknowledges `ids`: 8-byte big-endian ids, one after the other
    /// (docs/coap-server.md), at most `maximumIDsPerDelete` per request.
    public static func deletePayloads(_ ids: [Int64], maximumIDsPerDelete: Int = 256) -> [[UInt8]] {
        precondition(maximumIDsPerDelete >= 1)
        return stride(from: 0, to: ids.count, by: maximumIDsPerDelete).map { start in
            ids[start..<min(ids.count, start + maximumIDsPerDelete)].flatMap { Derivation.bigEndian(UInt64(bitPattern: $0)) }
        }
    }

    /// How a message is shown: its text when it is UTF-8 without control characters other than
    /// newline and tab, else its size (binary content is for `--out`, not a terminal).
    public static func displayText(_ body: [UInt8]) -> String? {
        let text = String(decoding: body, as: UTF8.self)
        guard text.utf8.elementsEqual(body) else { return nil }
        let printable = text.unicodeScalars.allSatisfy { scalar in
            scalar == "\n" || scalar == "\t" || !(scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value))
        }
        return printable ? text : nil
    }
}
