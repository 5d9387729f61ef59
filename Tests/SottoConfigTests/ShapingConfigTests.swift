import XCTest
@testable import SottoConfig

/// The shaping keys (docs/configuration.md; docs/shaping.md "Parameters and defaults",
/// "Negotiation"): per profile the policy's parameters, per service the exit's limits.
final class ShapingConfigTests: XCTestCase {
    private func profile(_ extra: String) throws -> Profile {
        try parse(Fixture.profile(extra: extra)).profiles[0]
    }

    private func service(_ extra: String) throws -> Service {
        try parse(Fixture.profile(anonymizer: "none") + Fixture.service(extra: extra)).services[0]
    }

    func testAProfileWithoutParametersGetsTheShapingModuleDefaults() throws {
        let p = try profile("shaping = \"constant\"")
        XCTAssertEqual(p.shaping, .constant)
        XCTAssertEqual(p.shapingOptions, ShapingOptions(rate: 10, jitter: 0.2, minDelayMs: 10, maxDelayMs: 50))
        XCTAssertEqual(try profile("").shaping, .off)
    }

    func testConstantTakesRateAndJitterAsIntegersOrFloats() throws {
        let p = try profile("shaping = \"constant\"\nrate = 12\njitter = 0.35")
        XCTAssertEqual(p.shapingOptions.rate, 12)
        XCTAssertEqual(p.shapingOptions.jitter, 0.35)
        XCTAssertEqual(try profile("shaping = \"poisson\"\nrate = 2.5").shapingOptions.rate, 2.5)
    }

    func testPaddedTakesItsDelayRange() throws {
        let p = try profile("shaping = \"padded\"\nmin_delay_ms = 0\nmax_delay_ms = 200")
        XCTAssertEqual(p.shapingOptions.minDelayMs, 0)
        XCTAssertEqual(p.shapingOptions.maxDelayMs, 200)
    }

    func testAParameterOfAnotherPolicyIsAnErrorNamingTheKey() {
        assertConfigError(Fixture.profile(extra: "shaping = \"padded\"\nrate = 10"), key: "profile[1] 'p'.rate",
                          "applies only to shaping 'constant' or 'poisson'; this profile's shaping is 'padded'")
        assertConfigError(Fixture.profile(extra: "shaping = \"poisson\"\njitter = 0.1"), key: "profile[1] 'p'.jitter",
                          "applies only to shaping 'constant'")
        assertConfigError(Fixture.profile(extra: "max_delay_ms = 20"), key: "profile[1] 'p'.max_delay_ms",
                          "applies only to shaping 'padded'; this profile's shaping is 'off'")
    }

    func testOutOfRangeAndNonNumericParametersAreRefused() {
        assertConfigError(Fixture.profile(extra: "shaping = \"constant\"\nrate = 0"), key: "profile[1] 'p'.rate",
                          "must be from 0.1 to 10000 cells per second, got 0")
        assertConfigError(Fixture.profile(extra: "shaping = \"constant\"\nrate = 10001"), key: "profile[1] 'p'.rate",
                          "must be from 0.1 to 10000")
        assertConfigError(Fixture.profile(extra: "shaping = \"constant\"\nrate = nan"), key: "profile[1] 'p'.rate",
                          "must be from 0.1 to 10000")
        assertConfigError(Fixture.profile(extra: "shaping = \"constant\"\njitter = 0.95"), key: "profile[1] 'p'.jitter",
                          "must be from 0 to 0.9")
        assertConfigError(Fixture.profile(extra: "shaping = \"constant\"\njitter = -0.1"), key: "profile[1] 'p'.jitter",
                          "must be from 0 to 0.9")
        assertConfigError(Fixture.profile(extra: "shaping = \"constant\"\nrate = \"fast\""), key: "profile[1] 'p'.rate",
                          "expected a number, got a string")
        assertConfigError(Fixture.profile(extra: "shaping = \"padded\"\nmax_delay_ms = 10001"),
                          key: "profile[1] 'p'.max_delay_ms", "must be from 0 to 10000 ms")
    }

    func testAMinimumDelayAboveTheMaximumIsRefused() {
        assertConfigError(Fixture.profile(extra: "shaping = \"padded\"\nmin_delay_ms = 60"),
                          key: "profile[1] 'p'.min_delay_ms", "min_delay_ms (60.0) must not be above max_delay_ms (50.0)")
        assertConfigError(Fixture.profile(extra: "shaping = \"padded\"\nmax_delay_ms = 5"),
                          key: "profile[1] 'p'.max_delay_ms", "must not be above max_delay_ms (5.0)")
    }

    func testAServiceWithoutLimitsGetsTheDocumentedDefaults() throws {
        XCTAssertEqual(try service("").shapingLimits,
                       ShapingLimitSettings(policies: [.off, .padded, .constant, .poisson], minRate: 1, maxRate: 50,
                                            maxJitter: 0.9, maxDelayMs: 1000))
    }

    func testAServiceSetsItsLimits() throws {
        let limits = try service("""
            shaping_policies = ["constant", "off"]
            shaping_min_rate = 2
            shaping_max_rate = 20.5
            shaping_max_jitter = 0.3
            shaping_max_delay_ms = 250
            """).shapingLimits
        XCTAssertEqual(limits, ShapingLimitSettings(policies: [.constant, .off], minRate: 2, maxRate: 20.5,
                                                    maxJitter: 0.3, maxDelayMs: 250))
    }

    func testBadServiceLimitsAreErrorsNamingTheKey() {
        let prefix = Fixture.profile(anonymizer: "none")
        assertConfigError(prefix + Fixture.service(extra: "shaping_policies = []"),
                          key: "service[1] 'coap'.shaping_policies", "must name at least one policy")
        assertConfigError(prefix + Fixture.service(extra: "shaping_policies = [\"steady\"]"),
                          key: "service[1] 'coap'.shaping_policies", "'steady' (item 1) is not a shaping policy")
        assertConfigError(prefix + Fixture.service(extra: "shaping_policies = [\"off\", \"off\"]"),
                          key: "service[1] 'coap'.shaping_policies", "'off' is listed twice")
        assertConfigError(prefix + Fixture.service(extra: "shaping_policies = \"off\""),
                          key: "service[1] 'coap'.shaping_policies", "expected an array of strings")
        assertConfigError(prefix + Fixture.service(extra: "shaping_max_rate = 100000"),
                          key: "service[1] 'coap'.shaping_max_rate", "must be from 0.1 to 10000 cells per second")
        assertConfigError(prefix + Fixture.service(extra: "shaping_min_rate = 60"),
                          key: "service[1] 'coap'.shaping_min_rate", "shaping_min_rate (60.0) must not be above shaping_max_rate (50.0)")
        assertConfigError(prefix + Fixture.service(extra: "shaping_max_jitter = 1"),
                          key: "service[1] 'coap'.shaping_max_jitter", "must be from 0 to 0.9")
        assertConfigError(prefix + Fixture.service(extra: "shaping_max_delay_ms = -1"),
                          key: "service[1] 'coap'.shaping_max_delay_ms", "must be from 0 to 10000 ms")
    }

    func testShapingLimitsAreServiceKeysNotProfileKeys() {
        assertConfigError(Fixture.profile(extra: "shaping_max_rate = 10"), key: "profile[1].shaping_max_rate",
                          "unknown key 'shaping_max_rate'")
    }
}
