/// Pure pieces of the issue-3 benchmark (Benchmarks/tor-bench.sh): the sized exchange on a byte
/// stream, the target check that lets an onion address through, message sizes, and the datagram
/// size tally of the UDP relay. No sockets here.

/// Counts bytes of a stream that carries messages of one fixed length and no framing: the sized
/// echo reads `length` bytes as one request (however TCP cut them up or glued them together) and
/// answers a response of its own fixed length. With no length field on the wire, the stream
/// carries exactly as many bytes as the DTLS datagrams it stands in for.
struct FixedLengthMessages: Equatable {
    let length: Int
    /// Bytes of the message under way.
    private(set) var partial = 0
    private(set) var completed: UInt64 = 0

    init(length: Int) {
        precondition(length > 0, "a message has at least one byte")
        self.length = length
    }

    /// Consumes `count` bytes and returns how many messages they completed.
    mutating func consume(_ count: Int) -> Int {
        precondition(count >= 0)
        let total = partial + count
        let done = total / length
        partial = total % length
        completed += UInt64(done)
        return done
    }
}

/// Where `stream-rtt` may open its stream: a loopback address, straight or through the SOCKS
/// server, or (only through the SOCKS server, which is loopback) a v3 onion service of the private
/// network. A v3 address is 56 base32 characters (rend-spec-v3 section 6: public key, checksum,
/// version byte 3) and ".onion"; anything else with a dot could be a public host name and is
/// refused, so a typo cannot send traffic off this machine. (The checksum needs SHA3-256, which
/// nothing here offers; tor checks it anyway and refuses a bad address with SOCKS error 0xF6.)
enum StreamTarget {
    static let onionLabelLength = 56
    private static let base32: Set<Character> = Set("abcdefghijklmnopqrstuvwxyz234567")

    static func isV3OnionName(_ name: String) -> Bool {
        let lower = name.lowercased()
        guard lower.hasSuffix(".onion") else { return false }
        let label = lower.dropLast(".onion".count)
        // The version byte (3) makes the last base32 character 'd' in every v3 address.
        return label.count == onionLabelLength && label.allSatisfy(base32.contains) && label.last == "d"
    }

    static func check(_ target: Endpoint, throughProxy: Bool) throws {
        if case .domain(let name) = target.host, isV3OnionName(name) {
            guard throughProxy else {
                throw BenchError("target \(target): an onion address is reachable only through tor's SocksPort (--socks)")
            }
            return
        }
        if case .domain = target.host, !target.host.isLoopback {
            throw BenchError("target \(target): give a loopback IP address, or through --socks a v3 onion address (56 base32 characters ending in 'd', then .onion)")
        }
        try target.requireLoopback(role: "target", allowPeerName: false)
    }
}

/// Request and response sizes: bytes, at most 64 KiB (a DTLS record, and so the datagram it
/// stands in for, is never longer). Accepts the K suffix of the other byte options.
func parseMessageSize(_ text: String) throws -> Int {
    let value = try parseByteCount(text)
    guard value >= 1, value <= 65_536 else {
        throw BenchError("'\(text)': a message size must be 1 to 65536 bytes")
    }
    return Int(value)
}

/// The sizes of the datagrams that crossed the relay in one direction: a count per size.
struct DatagramSizeTally: Equatable {
    private(set) var counts: [Int: UInt64] = [:]
    private(set) var datagrams: UInt64 = 0
    private(set) var bytes: UInt64 = 0

    mutating func record(_ size: Int) {
        precondition(size >= 0)
        counts[size, default: 0] += 1
        datagrams += 1
        bytes += UInt64(size)
    }

    /// The most frequent size (the smaller one on a tie, so the answer does not depend on
    /// dictionary order); nil before any datagram.
    var mode: Int? {
        counts.max { a, b in a.value != b.value ? a.value < b.value : a.key > b.key }?.key
    }

    /// "37x100,120x1": every size with its count, most frequent first, for the RESULT line.
    var summary: String {
        guard !counts.isEmpty else { return "none" }
        return counts.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
            .map { "\($0.key)x\($0.value)" }.joined(separator: ",")
    }
}
