import TOMLKit

/// Reads one TOML table key by key, so that every error names the exact key path.
///
/// Values are read by type; a value of another type is an error that names both types and never
/// the value itself (it might be a secret).
struct TableReader {
    let table: TOMLTable
    /// The key path of this table: "" (top level), "socks", "peer[1] 'home'".
    var path: String
    /// How the table is named in messages: "the top level", "[socks]", "[[peer]] #1".
    let displayName: String
    let file: String

    func keyPath(_ key: String) -> String {
        path.isEmpty ? key : "\(path).\(key)"
    }

    func error(_ key: String, _ message: String) -> ConfigError {
        ConfigError(file: file, key: keyPath(key), message: message)
    }

    func has(_ key: String) -> Bool {
        table[key] != nil
    }

    /// Every key must be one the schema knows; a near miss gets a suggestion.
    func rejectUnknownKeys(allowed: [String]) throws {
        for key in table.keys where !allowed.contains(key) {
            // A pasted key in key position would otherwise be echoed; do not.
            if Redaction.looksLikeKeyMaterial(key) {
                throw ConfigError(file: file, key: path,
                                  message: "unknown key in \(displayName) that looks like base64 key material (not shown)")
            }
            var message = "unknown key '\(key)' in \(displayName)"
            if let suggestion = Suggestion.closest(to: key, among: allowed) {
                message += "; did you mean '\(suggestion)'?"
            } else {
                message += "; expected one of: " + allowed.joined(separator: ", ")
            }
            throw error(key, message)
        }
    }

    func string(_ key: String) throws -> String? {
        guard let value = table[key] else { return nil }
        guard let string = value.string else { throw typeError(key, expected: "a string", got: value.type) }
        return string
    }

    func requiredString(_ key: String) throws -> String {
        guard let value = try string(key) else { throw missing(key) }
        return value
    }

    func bool(_ key: String) throws -> Bool? {
        guard let value = table[key] else { return nil }
        guard let bool = value.bool else { throw typeError(key, expected: "true or false", got: value.type) }
        return bool
    }

    func int(_ key: String) throws -> Int? {
        guard let value = table[key] else { return nil }
        guard let int = value.int else { throw typeError(key, expected: "an integer", got: value.type) }
        return int
    }

    /// An integer within `range`, or `defaultValue` when absent.
    func int(_ key: String, in range: ClosedRange<Int>, default defaultValue: Int) throws -> Int {
        guard let value = try int(key) else { return defaultValue }
        guard range.contains(value) else {
            throw error(key, "must be from \(range.lowerBound) to \(range.upperBound), got \(value)")
        }
        return value
    }

    /// A number of seconds: an integer or a float, finite, greater than zero and at most `maximum`.
    func seconds(_ key: String, maximum: Double, default defaultValue: Double) throws -> Double {
        guard let value = table[key] else { return defaultValue }
        let seconds: Double
        if let int = value.int {
            seconds = Double(int)
        } else if let double = value.double {
            seconds = double
        } else {
            throw typeError(key, expected: "a number of seconds", got: value.type)
        }
        guard seconds.isFinite, seconds > 0, seconds <= maximum else {
            throw error(key, "must be more than 0 and at most \(Int(maximum)) seconds, got \(value.debugDescription)")
        }
        return seconds
    }

    /// A string that must be one of an enum's raw values.
    func choice<T: RawRepresentable & CaseIterable>(_ key: String, as type: T.Type) throws -> T?
    where T.RawValue == String {
        guard let text = try string(key) else { return nil }
        if let value = T(rawValue: text) { return value }
        let names = T.allCases.map(\.rawValue)
        var message = "unknown value '\(text)'; expected one of: " + names.joined(separator: ", ")
        if let suggestion = Suggestion.closest(to: text, among: names) { message += "; did you mean '\(suggestion)'?" }
        throw error(key, message)
    }

    func subtable(_ key: String) throws -> TOMLTable? {
        guard let value = table[key] else { return nil }
        guard let table = value.table else {
            throw typeError(key, expected: "a table ([\(keyPath(key))])", got: value.type)
        }
        return table
    }

    /// An array of tables (`[[peer]]`); empty when absent.
    func tableArray(_ key: String) throws -> [TOMLTable] {
        guard let value = table[key] else { return [] }
        guard let array = value.array else {
            throw typeError(key, expected: "an array of tables ([[\(key)]])", got: value.type)
        }
        var tables: [TOMLTable] = []
        for (index, element) in array.enumerated() {
            guard let table = element.table else {
                throw ConfigError(file: file, key: "\(keyPath(key))[\(index + 1)]",
                                  message: "expected a table ([[\(key)]]), got \(Redaction.kindName(element.type))")
            }
            tables.append(table)
        }
        return tables
    }

    /// An array of strings; each element's path is `key[n]`, counted from 1.
    func stringArray(_ key: String) throws -> [String]? {
        guard let value = table[key] else { return nil }
        guard let array = value.array else { throw typeError(key, expected: "an array of strings", got: value.type) }
        var strings: [String] = []
        for (index, element) in array.enumerated() {
            guard let string = element.string else {
                throw ConfigError(file: file, key: "\(keyPath(key))[\(index + 1)]",
                                  message: "expected a string, got \(Redaction.kindName(element.type))")
            }
            strings.append(string)
        }
        return strings
    }

    func missing(_ key: String) -> ConfigError {
        error(key, "missing key '\(key)' in \(displayName)")
    }

    private func typeError(_ key: String, expected: String, got type: TOMLType) -> ConfigError {
        error(key, "expected \(expected), got \(Redaction.kindName(type))")
    }
}

/// Keeps secret values out of messages.
enum Redaction {
    /// "a string", "an integer": what a value is, never what it holds.
    static func kindName(_ type: TOMLType) -> String {
        switch type {
        case .string: return "a string"
        case .int: return "an integer"
        case .double: return "a floating-point number"
        case .bool: return "a boolean"
        case .table: return "a table"
        case .array: return "an array"
        case .date: return "a date"
        case .time: return "a time"
        case .dateTime: return "a date-time"
        }
    }

    /// Text that could be (part of) a base64 key: long, and only base64 characters.
    static func looksLikeKeyMaterial<S: StringProtocol>(_ text: S) -> Bool {
        text.utf8.count >= 20 && text.utf8.allSatisfy { b in
            (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39)
                || b == UInt8(ascii: "+") || b == UInt8(ascii: "/") || b == UInt8(ascii: "=")
        }
    }

    /// TOMLKit's (toml++'s) parse messages quote bits of the document ("saw 'x'"); a quoted run that
    /// could be key material is replaced, so a syntax error near a secret does not print it.
    static func scrubQuoted(_ message: String) -> String {
        let parts = message.split(separator: "'", omittingEmptySubsequences: false)
        guard parts.count >= 3 else { return message }
        var out: [Substring] = []
        for (index, part) in parts.enumerated() {
            // Odd-numbered parts sit between a pair of quotes.
            if index % 2 == 1, index < parts.count - 1, looksLikeKeyMaterial(part) {
                out.append("(redacted)")
            } else {
                out.append(part)
            }
        }
        return out.joined(separator: "'")
    }
}

/// "did you mean" for keys and values: the closest candidate within a small edit distance.
enum Suggestion {
    static func closest(to word: String, among candidates: [String]) -> String? {
        let lowered = word.lowercased()
        // "warn" for "warning": a clear prefix beats an edit distance.
        if lowered.utf8.count >= 3, let extended = candidates.first(where: { $0.lowercased().hasPrefix(lowered) }) {
            return extended
        }
        var best: (candidate: String, distance: Int)?
        for candidate in candidates {
            let distance = editDistance(Array(lowered.utf8), Array(candidate.lowercased().utf8))
            // Two edits, and fewer than half of the word, so "ab" does not suggest "cd".
            let allowed = min(2, max(1, candidate.utf8.count / 3))
            if distance <= allowed, distance < (best?.distance ?? .max) {
                best = (candidate, distance)
            }
        }
        return best?.candidate
    }

    /// Levenshtein distance with adjacent transpositions counted as one edit.
    static func editDistance(_ a: [UInt8], _ b: [UInt8]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previousPrevious = [Int](repeating: 0, count: b.count + 1)
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    current[j] = min(current[j], previousPrevious[j - 2] + 1)
                }
            }
            (previousPrevious, previous, current) = (previous, current, previousPrevious)
        }
        return previous[b.count]
    }
}
