import Crypto
import Foundation

/// A v3 onion service identity that Sotto makes itself, so that a service's address is known
/// before tor ever runs (`sotto keygen --onion`) and stays the same across restarts.
///
/// The key file holds the 32-byte Ed25519 seed. What tor's `ADD_ONION ED25519-V3:` takes is the
/// 64-byte *expanded* secret key (control-spec 3.27; tor's `ed25519_secret_key_from_seed`):
/// SHA-512 of the seed with the scalar half clamped (RFC 8032 5.1.5). The public key is the one
/// RFC 8032 derives from the same seed, which swift-crypto computes; the address follows from it
/// (rend-spec-v3 6): base32(PUBKEY | CHECKSUM | VERSION), CHECKSUM = SHA3-256(".onion checksum" |
/// PUBKEY | VERSION)[:2], VERSION = 3.
public struct OnionIdentity: Sendable, Equatable {
    public static let seedLength = 32

    public let seed: [UInt8]
    /// The Ed25519 public key (32 bytes).
    public let publicKey: [UInt8]

    public init(seed: [UInt8]) throws {
        guard seed.count == Self.seedLength else { throw OnionIdentityError.badSeedLength(seed.count) }
        self.seed = seed
        let key = try Curve25519.Signing.PrivateKey(rawRepresentation: seed)
        self.publicKey = Array(key.publicKey.rawRepresentation)
    }

    /// A new identity from the system's CSPRNG.
    public static func generate() -> OnionIdentity {
        var rng = SystemRandomNumberGenerator()
        let seed = (0..<seedLength).map { _ in UInt8.random(in: 0...255, using: &rng) }
        return try! OnionIdentity(seed: seed)
    }

    /// The service ID: the address without ".onion", 56 lower-case base32 characters.
    public var serviceID: String { Self.serviceID(publicKey: publicKey) }

    /// `serviceID + ".onion"`.
    public var address: String { serviceID + ".onion" }

    /// The 64-byte expanded secret key tor's ADD_ONION takes, base64 (a secret: never log it).
    public var expandedSecretKeyBase64: String {
        var digest = Array(SHA512.hash(data: seed))
        digest[0] &= 248
        digest[31] &= 127
        digest[31] |= 64
        return Data(digest).base64EncodedString()
    }

    /// What `ADD_ONION` is given for this identity.
    public var addOnionKey: OnionServiceKey { .ed25519V3(base64: expandedSecretKeyBase64) }

    public static func serviceID(publicKey: [UInt8]) -> String {
        let version: UInt8 = 3
        let checksum = SHA3_256.hash(Array(".onion checksum".utf8) + publicKey + [version])
        return Base32Text.encode(publicKey + checksum[0..<2] + [version]).lowercased()
    }
}

public enum OnionIdentityError: Error, Sendable, Equatable, CustomStringConvertible {
    case badSeedLength(Int)

    public var description: String {
        switch self {
        case .badSeedLength(let n): return "an onion key seed has 32 bytes, got \(n)"
        }
    }
}

/// RFC 4648 base32 without padding, upper case: onion addresses (rend-spec-v3 6) and ClientAuthV3
/// keys (control-spec 3.27) are written this way.
public enum Base32Text {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)

    public static func encode<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count * 8 + 4) / 5)
        var buffer: UInt32 = 0
        var bits = 0
        for byte in bytes {
            buffer = (buffer << 8) | UInt32(byte)
            bits += 8
            while bits >= 5 {
                bits -= 5
                out.append(alphabet[Int((buffer >> UInt32(bits)) & 31)])
            }
        }
        if bits > 0 { out.append(alphabet[Int((buffer << UInt32(5 - bits)) & 31)]) }
        return String(decoding: out, as: UTF8.self)
    }
}

/// SHA3-256 (FIPS 202): Keccak-f[1600] with rate 136 bytes and the SHA-3 domain byte 0x06.
/// swift-crypto 3 has no SHA-3, and an onion address checksum needs it.
public enum SHA3_256 {
    private static let rate = 136

    private static let roundConstants: [UInt64] = [
        0x0000_0000_0000_0001, 0x0000_0000_0000_8082, 0x8000_0000_0000_808A, 0x8000_0000_8000_8000,
        0x0000_0000_0000_808B, 0x0000_0000_8000_0001, 0x8000_0000_8000_8081, 0x8000_0000_0000_8009,
        0x0000_0000_0000_008A, 0x0000_0000_0000_0088, 0x0000_0000_8000_8009, 0x0000_0000_8000_000A,
        0x0000_0000_8000_808B, 0x8000_0000_0000_008B, 0x8000_0000_0000_8089, 0x8000_0000_0000_8003,
        0x8000_0000_0000_8002, 0x8000_0000_0000_0080, 0x0000_0000_0000_800A, 0x8000_0000_8000_000A,
        0x8000_0000_8000_8081, 0x8000_0000_0000_8080, 0x0000_0000_8000_0001, 0x8000_0000_8000_8008,
    ]
    /// Rotation offsets r[x + 5y] (FIPS 202 3.2.2, rho).
    private static let rotations: [UInt64] = [
        0, 1, 62, 28, 27,
        36, 44, 6, 55, 20,
        3, 10, 43, 25, 39,
        41, 45, 15, 21, 8,
        18, 2, 61, 56, 14,
    ]

    public static func hash(_ message: [UInt8]) -> [UInt8] {
        var state = [UInt64](repeating: 0, count: 25)
        var padded = message
        padded.append(0x06)
        while padded.count % rate != 0 { padded.append(0) }
        padded[padded.count - 1] |= 0x80
        for blockStart in stride(from: 0, to: padded.count, by: rate) {
            for lane in 0..<(rate / 8) {
                var word: UInt64 = 0
                for i in 0..<8 { word |= UInt64(padded[blockStart + lane * 8 + i]) << UInt64(8 * i) }
                state[lane] ^= word
            }
            permute(&state)
        }
        var out: [UInt8] = []
        out.reserveCapacity(32)
        for lane in 0..<4 {
            for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: state[lane] >> UInt64(8 * i))) }
        }
        return out
    }

    private static func rotl(_ x: UInt64, _ n: UInt64) -> UInt64 { n == 0 ? x : (x << n) | (x >> (64 - n)) }

    private static func permute(_ a: inout [UInt64]) {
        var c = [UInt64](repeating: 0, count: 5)
        var b = [UInt64](repeating: 0, count: 25)
        for round in 0..<24 {
            // theta
            for x in 0..<5 { c[x] = a[x] ^ a[x + 5] ^ a[x + 10] ^ a[x + 15] ^ a[x + 20] }
            for x in 0..<5 {
                let d = c[(x + 4) % 5] ^ rotl(c[(x + 1) % 5], 1)
                for y in 0..<5 { a[x + 5 * y] ^= d }
            }
            // rho and pi: B[y, 2x + 3y] = rot(A[x, y], r[x, y])
            for x in 0..<5 {
                for y in 0..<5 {
                    b[y + 5 * ((2 * x + 3 * y) % 5)] = rotl(a[x + 5 * y], rotations[x + 5 * y])
                }
            }
            // chi
            for x in 0..<5 {
                for y in 0..<5 {
                    a[x + 5 * y] = b[x + 5 * y] ^ (~b[(x + 1) % 5 + 5 * y] & b[(x + 2) % 5 + 5 * y])
                }
            }
            // iota
            a[0] ^= roundConstants[round]
        }
    }
}
