/// A CoAP code: a 3-bit class and a 5-bit detail, written "c.dd" (RFC 7252 section 3 and 12.1).
public struct CoAPCode: Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt8

    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// nil when `codeClass` > 7 or `detail` > 31.
    public init?(codeClass: UInt8, detail: UInt8) {
        guard codeClass <= 7, detail <= 31 else { return nil }
        rawValue = codeClass << 5 | detail
    }

    /// Parses "2.05" (exactly one class digit, a dot and two detail digits); nil otherwise.
    public init?(_ text: String) {
        let chars = Array(text.utf8)
        let digits = UInt8(ascii: "0")...UInt8(ascii: "9")
        guard chars.count == 4, chars[1] == UInt8(ascii: "."),
              digits.contains(chars[0]), digits.contains(chars[2]), digits.contains(chars[3]) else {
            return nil
        }
        let codeClass = chars[0] - UInt8(ascii: "0")
        let detail = (chars[2] - UInt8(ascii: "0")) * 10 + (chars[3] - UInt8(ascii: "0"))
        self.init(codeClass: codeClass, detail: detail)
    }

    public var codeClass: UInt8 { rawValue >> 5 }
    public var detail: UInt8 { rawValue & 0x1F }

    /// Class 2: the request was received, understood and accepted.
    public var isSuccess: Bool { codeClass == 2 }

    public var description: String {
        "\(codeClass).\(detail < 10 ? "0" : "")\(detail)"
    }

    /// The registered name (RFC 7252 section 12.1.2, RFC 7959, RFC 8132), if there is one.
    public var name: String? { Self.names[rawValue] }

    /// "4.04 Not Found", or just "4.04" for an unregistered code.
    public var summary: String { name.map { "\(description) \($0)" } ?? description }

    public static let created = CoAPCode(codeClass: 2, detail: 1)!
    public static let deleted = CoAPCode(codeClass: 2, detail: 2)!
    public static let valid = CoAPCode(codeClass: 2, detail: 3)!
    public static let changed = CoAPCode(codeClass: 2, detail: 4)!
    public static let content = CoAPCode(codeClass: 2, detail: 5)!
    public static let notFound = CoAPCode(codeClass: 4, detail: 4)!

    private static let names: [UInt8: String] = {
        let table: [(UInt8, UInt8, String)] = [
            (0, 1, "GET"), (0, 2, "POST"), (0, 3, "PUT"), (0, 4, "DELETE"), (0, 5, "FETCH"), (0, 6, "PATCH"), (0, 7, "iPATCH"),
            (2, 1, "Created"), (2, 2, "Deleted"), (2, 3, "Valid"), (2, 4, "Changed"), (2, 5, "Content"), (2, 31, "Continue"),
            (4, 0, "Bad Request"), (4, 1, "Unauthorized"), (4, 2, "Bad Option"), (4, 3, "Forbidden"), (4, 4, "Not Found"),
            (4, 5, "Method Not Allowed"), (4, 6, "Not Acceptable"), (4, 8, "Request Entity Incomplete"), (4, 9, "Conflict"),
            (4, 12, "Precondition Failed"), (4, 13, "Request Entity Too Large"), (4, 15, "Unsupported Content-Format"),
            (4, 22, "Unprocessable Entity"), (4, 29, "Too Many Requests"),
            (5, 0, "Internal Server Error"), (5, 1, "Not Implemented"), (5, 2, "Bad Gateway"), (5, 3, "Service Unavailable"),
            (5, 4, "Gateway Timeout"), (5, 5, "Proxying Not Supported"), (5, 8, "Hop Limit Reached"),
        ]
        var names: [UInt8: String] = [:]
        for (codeClass, detail, name) in table { names[codeClass << 5 | detail] = name }
        return names
    }()
}

/// The request methods this client sends (RFC 7252 section 5.8).
public enum CoAPMethod: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case get = 1, post = 2, put = 3, delete = 4

    public var code: CoAPCode { CoAPCode(rawValue: rawValue) }
    public var description: String { code.name! }
}

/// One option of a message: its number and raw value (RFC 7252 section 3.1).
public struct CoAPOption: Sendable, Hashable {
    public var number: UInt16
    public var value: [UInt8]

    public init(number: UInt16, value: [UInt8]) {
        self.number = number
        self.value = value
    }

    /// The value as a uint option (RFC 7252 section 3.2): big-endian, leading zeros dropped,
    /// nil when longer than 4 bytes.
    public var uintValue: UInt32? {
        guard value.count <= 4 else { return nil }
        return value.reduce(0) { $0 << 8 | UInt32($1) }
    }

    /// A uint option value in its shortest form (0 is the empty value).
    public static func encodeUInt(_ value: UInt32) -> [UInt8] {
        var bytes: [UInt8] = []
        var rest = value
        while rest != 0 {
            bytes.insert(UInt8(truncatingIfNeeded: rest), at: 0)
            rest >>= 8
        }
        return bytes
    }

    // Option numbers used here (RFC 7252 section 12.2, RFC 7641, RFC 7959).
    public static let uriHost: UInt16 = 3
    public static let observe: UInt16 = 6
    public static let uriPath: UInt16 = 11
    public static let contentFormat: UInt16 = 12
    public static let uriQuery: UInt16 = 15
    public static let block2: UInt16 = 23
    public static let block1: UInt16 = 27
    public static let size2: UInt16 = 28
}

/// A whole response: libcoap has already put block-wise bodies (RFC 7959) back together.
public struct CoAPResponse: Sendable, Equatable {
    public var code: CoAPCode
    public var payload: [UInt8]
    /// In the order they came (ascending option number).
    public var options: [CoAPOption]

    public init(code: CoAPCode, payload: [UInt8], options: [CoAPOption]) {
        self.code = code
        self.payload = payload
        self.options = options
    }

    /// The Content-Format option, if present (RFC 7252 section 5.10.3).
    public var contentFormat: UInt32? { option(CoAPOption.contentFormat)?.uintValue }

    /// The Observe sequence number of a notification (RFC 7641 section 2).
    public var observeSequence: UInt32? { option(CoAPOption.observe)?.uintValue }

    public func option(_ number: UInt16) -> CoAPOption? {
        options.first { $0.number == number }
    }
}
