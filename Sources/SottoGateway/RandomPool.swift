#if canImport(Glibc)
import Glibc
#endif

/// Random numbers for the shaping schedules of one event loop's tunnels, read from the kernel's
/// CSPRNG (`/dev/urandom`) 4 KiB at a time.
///
/// `SystemRandomNumberGenerator` makes one `getrandom` system call per draw: one per shaping
/// slot, 10,000 a second for 1,000 shaped tunnels (1-2 % of such an exit's CPU samples). The
/// jitter must stay unpredictable to an observer, so the source stays the kernel's CSPRNG; only
/// the reads are batched. Should `/dev/urandom` fail, draws come from
/// `SystemRandomNumberGenerator` one by one: never a weaker source. Loop-confined, like
/// `SlotTimer`, which owns one.
final class RandomPool {
    static let words = 512
    private var buffer = [UInt64](repeating: 0, count: RandomPool.words)
    private var used = RandomPool.words
    private var fallback = SystemRandomNumberGenerator()
    /// Refills from `/dev/urandom` (counted; the tests check that draws are batched).
    private(set) var refills = 0

    func next() -> UInt64 {
        if used == buffer.count && !refill() { return fallback.next() }
        let value = buffer[used]
        buffer[used] = 0
        used += 1
        return value
    }

    private func refill() -> Bool {
        let fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let wanted = buffer.count * MemoryLayout<UInt64>.size
        var filled = 0
        var attempts = 0
        buffer.withUnsafeMutableBytes { raw in
            while filled < wanted && attempts < 16 {
                attempts += 1
                let count = read(fd, raw.baseAddress! + filled, wanted - filled)
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { return }
                filled += count
            }
        }
        guard filled == wanted else { return false }
        used = 0
        refills += 1
        return true
    }
}

/// A `RandomNumberGenerator` drawing from a loop's `RandomPool`.
struct PooledRandom: RandomNumberGenerator {
    let pool: RandomPool

    mutating func next() -> UInt64 { pool.next() }
}
