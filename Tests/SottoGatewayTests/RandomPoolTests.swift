import XCTest
@testable import SottoGateway

/// The shaping schedules' randomness: the kernel's CSPRNG, read in batches.
final class RandomPoolTests: XCTestCase {
    func testDrawsComeFromOneReadPerBatchAndDoNotRepeat() {
        let pool = RandomPool()
        var generator = PooledRandom(pool: pool)
        var seen = Set<UInt64>()
        for _ in 0..<RandomPool.words { seen.insert(generator.next()) }
        XCTAssertEqual(pool.refills, 1, "one read of /dev/urandom for \(RandomPool.words) draws")
        _ = generator.next()
        XCTAssertEqual(pool.refills, 2)
        // 512 draws of 64 random bits: a repeat (or a zero word) would mean a broken source.
        XCTAssertEqual(seen.count, RandomPool.words)
        XCTAssertFalse(seen.contains(0))
    }

    func testBoundedDrawsAreSpreadOverTheRange() {
        var generator = PooledRandom(pool: RandomPool())
        var counts = [Int](repeating: 0, count: 10)
        for _ in 0..<10_000 { counts[Int.random(in: 0..<10, using: &generator)] += 1 }
        // Each bucket expects 1,000 (standard deviation 30): 800-1,200 fails only for a broken source.
        for (bucket, count) in counts.enumerated() { XCTAssertTrue((800...1_200).contains(count), "bucket \(bucket): \(count)") }
    }
}
