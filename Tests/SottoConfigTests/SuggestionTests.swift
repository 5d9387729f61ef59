import XCTest
@testable import SottoConfig

final class SuggestionTests: XCTestCase {
    func testSuggestsTheClosestKeyWithinTwoEdits() {
        let keys = ["listen", "auth", "max_connections"]
        XCTAssertEqual(Suggestion.closest(to: "lisen", among: keys), "listen")
        XCTAssertEqual(Suggestion.closest(to: "lsiten", among: keys), "listen", "a transposition is one edit")
        XCTAssertEqual(Suggestion.closest(to: "LISTEN", among: keys), "listen")
        XCTAssertEqual(Suggestion.closest(to: "max_conections", among: keys), "max_connections")
        XCTAssertEqual(Suggestion.closest(to: "max_conn", among: keys), "max_connections", "a prefix suggests its key")
    }

    func testSuggestsNothingForUnrelatedWords() {
        XCTAssertNil(Suggestion.closest(to: "password", among: ["listen", "auth"]))
        XCTAssertNil(Suggestion.closest(to: "ab", among: ["cd"]))
        XCTAssertNil(Suggestion.closest(to: "", among: []))
    }

    func testEditDistance() {
        XCTAssertEqual(Suggestion.editDistance(Array("kitten".utf8), Array("sitting".utf8)), 3)
        XCTAssertEqual(Suggestion.editDistance(Array("".utf8), Array("abc".utf8)), 3)
        XCTAssertEqual(Suggestion.editDistance(Array("ab".utf8), Array("ba".utf8)), 1)
    }
}
