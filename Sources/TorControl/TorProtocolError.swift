/// Tor sent bytes that do not follow the control protocol (control-spec 2.3), or a reply whose content
/// does not have the shape its command promises. After a framing error the stream cannot be trusted:
/// close the connection.
public enum TorProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The first three bytes of a line are not digits (StatusCode = 3DIGIT).
    case invalidStatusCode(line: String)
    /// The status code is not followed by "-", "+" or " ".
    case missingSeparator(line: String)
    /// A line of a multi-line reply carries a different status code than the reply's first line.
    case mixedStatusCodes(expected: Int, found: Int, line: String)
    /// A reply line ended in LF without CR; tor "MUST NOT generate LF instead of CRLF" (control-spec 2.1).
    case bareLineFeed(line: String)
    /// A line grew past the parser's limit without a CRLF.
    case lineTooLong(limit: Int)
    /// A reply has more lines than the parser's limit.
    case tooManyLines(limit: Int)
    /// A `+` data block grew past the parser's limit before its "." line.
    case dataBlockTooLarge(limit: Int)
    /// The stream ended inside a `+` data block (no line holding only ".").
    case unterminatedDataBlock(line: String)
    /// The stream ended in the middle of a reply (after a `-` line, or inside a line).
    case truncatedReply(bufferedBytes: Int)
    /// A QuotedString has no closing quote.
    case unterminatedQuotedString(line: String)
    /// An escape in a QuotedString stands for no octet (octal above \377).
    case invalidEscape(sequence: String, line: String)
    /// Text follows a closing quote without a space.
    case textAfterQuotedString(line: String)
    /// A reply parsed as a frame but lacks what its command's grammar requires.
    case malformedReply(command: String, reason: String, reply: String)
    /// A command reply arrived while no command was waiting for one.
    case unsolicitedReply(reply: String)

    public var description: String {
        switch self {
        case let .invalidStatusCode(line):
            return "tor control reply line does not start with a 3-digit status code: \"\(line)\""
        case let .missingSeparator(line):
            return "tor control reply line has no \"-\", \"+\" or space after its status code: \"\(line)\""
        case let .mixedStatusCodes(expected, found, line):
            return "tor control reply mixes status codes \(expected) and \(found) in one reply: \"\(line)\""
        case let .bareLineFeed(line):
            return "tor control reply line ends in LF without CR (is this really a tor control port?): \"\(line)\""
        case let .lineTooLong(limit):
            return "tor control reply line exceeds \(limit) bytes without CRLF (is this really a tor control port?)"
        case let .tooManyLines(limit):
            return "tor control reply has more than \(limit) lines"
        case let .dataBlockTooLarge(limit):
            return "tor control reply data block exceeds \(limit) bytes"
        case let .unterminatedDataBlock(line):
            return "tor control connection ended inside the data block of \"\(line)\" (no terminating \".\" line)"
        case let .truncatedReply(bufferedBytes):
            return "tor control connection ended in the middle of a reply (\(bufferedBytes) bytes pending)"
        case let .unterminatedQuotedString(line):
            return "tor control reply has a quoted string without its closing quote: \"\(line)\""
        case let .invalidEscape(sequence, line):
            return "tor control reply has an invalid escape \\\(sequence.dropFirst()) in a quoted string: \"\(line)\""
        case let .textAfterQuotedString(line):
            return "tor control reply has text glued to a closing quote: \"\(line)\""
        case let .malformedReply(command, reason, reply):
            return "tor's reply to \(command) is malformed: \(reason) (reply: \"\(excerpt(reply))\")"
        case let .unsolicitedReply(reply):
            return "tor sent a reply while no command was waiting: \"\(excerpt(reply))\""
        }
    }
}
