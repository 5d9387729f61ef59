import NIOCore

/// Incremental parser for the replies tor writes on its control port (control-spec 2.3):
///
///     Reply         = *(MidReplyLine / DataReplyLine) EndReplyLine
///     MidReplyLine  = StatusCode "-" ReplyLine
///     DataReplyLine = StatusCode "+" ReplyLine CmdData
///     EndReplyLine  = StatusCode SP ReplyLine
///
/// Feed bytes as they arrive; take complete replies out. Command replies and asynchronous events
/// (6yz) come out of the same stream in order; `TorReplyCorrelator` tells them apart.
///
/// Line endings: tor "MUST NOT generate LF instead of CRLF" (control-spec 2.1), so reply lines must end
/// in CRLF and a bare LF there is an error (`bareLineFeed`): it means the peer is not tor. Inside a data
/// block the CmdData grammar (control-spec 2.4) lets a line hold lone CR or LF bytes, so there only CRLF
/// ends a line. Leading dots are unstuffed as in RFC 2821 4.5.2.
///
/// The spec sets no limits ("There are explicitly no limits on line length"); this parser does, so a
/// wrong peer cannot make it buffer without bound. Every limit throws a described error.
/// After any error the parser stays failed and rethrows it: the byte stream can no longer be trusted.
public struct TorReplyParser: Sendable {
    public struct Limits: Sendable, Equatable {
        /// Bytes in one line, CRLF excluded (reply lines and data-block lines).
        public var maxLineLength: Int
        /// Lines in one reply (a data line and its block count as one).
        public var maxLinesPerReply: Int
        /// Bytes in one data block after unstuffing, counting one byte per line break.
        public var maxDataBlockSize: Int

        public init(maxLineLength: Int = 64 * 1024, maxLinesPerReply: Int = 4096, maxDataBlockSize: Int = 1024 * 1024) {
            self.maxLineLength = maxLineLength
            self.maxLinesPerReply = maxLinesPerReply
            self.maxDataBlockSize = maxDataBlockSize
        }
    }

    public let limits: Limits

    private var buffer: [UInt8] = []
    private var readIndex = 0
    /// Where the search for the next LF resumes, so bytes fed one at a time are scanned once.
    private var scanIndex = 0
    private var lines: [TorReplyLine] = []
    private var status: Int?
    /// The `+` line whose data block is being read, with the block so far.
    private var dataLine: TorReplyLine?
    private var dataBytes: [UInt8] = []
    private var dataHasLine = false
    private var failure: TorProtocolError?

    public init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// Bytes received but not yet part of a returned reply.
    public var bufferedByteCount: Int { buffer.count - readIndex }

    /// True while no partial reply is pending (a clean place for the stream to end).
    public var isAtReplyBoundary: Bool { lines.isEmpty && dataLine == nil && bufferedByteCount == 0 }

    public mutating func feed(_ bytes: [UInt8]) {
        buffer.append(contentsOf: bytes)
    }

    public mutating func feed(_ buffer: ByteBuffer) {
        self.buffer.append(contentsOf: buffer.readableBytesView)
    }

    /// The next complete reply, or nil when more bytes are needed.
    public mutating func nextReply() throws -> TorReply? {
        if let failure { throw failure }
        do {
            return try parseNextReply()
        } catch let error as TorProtocolError {
            failure = error
            throw error
        }
    }

    /// Every complete reply currently buffered.
    public mutating func allReplies() throws -> [TorReply] {
        var out: [TorReply] = []
        while let reply = try nextReply() { out.append(reply) }
        return out
    }

    /// Call when the connection has ended: throws if it ended inside a reply or a data block.
    public func finish() throws {
        if let failure { throw failure }
        if let dataLine { throw TorProtocolError.unterminatedDataBlock(line: excerpt(dataLine.description)) }
        if !isAtReplyBoundary { throw TorProtocolError.truncatedReply(bufferedBytes: bufferedByteCount) }
    }

    private mutating func parseNextReply() throws -> TorReply? {
        while true {
            if dataLine != nil {
                guard let line = try nextRawLine(inDataBlock: true) else { return nil }
                if line.count == 1, line.first == ASCII.dot {
                    var finished = dataLine!
                    finished.data = String(decoding: dataBytes, as: UTF8.self)
                    dataLine = nil
                    dataBytes = []
                    dataHasLine = false
                    if let reply = try append(finished) { return reply }
                    continue
                }
                // RFC 2821 4.5.2 dot-unstuffing: a leading "." was doubled by the sender.
                let content = line.first == ASCII.dot ? line.dropFirst() : line[...]
                let added = content.count + (dataHasLine ? 1 : 0)
                guard dataBytes.count + added <= limits.maxDataBlockSize else {
                    throw TorProtocolError.dataBlockTooLarge(limit: limits.maxDataBlockSize)
                }
                if dataHasLine { dataBytes.append(ASCII.lf) }
                dataBytes.append(contentsOf: content)
                dataHasLine = true
                continue
            }

            guard let line = try nextRawLine(inDataBlock: false) else { return nil }
            let parsed = try Self.parseLine(line)
            if parsed.separator == .data {
                if let status, status != parsed.status {
                    throw TorProtocolError.mixedStatusCodes(expected: status, found: parsed.status, line: excerpt(line))
                }
                dataLine = parsed
                continue
            }
            if let reply = try append(parsed) { return reply }
        }
    }

    /// Adds a finished line to the reply being built; returns the reply when the line ends it.
    private mutating func append(_ line: TorReplyLine) throws -> TorReply? {
        if let status, status != line.status {
            throw TorProtocolError.mixedStatusCodes(expected: status, found: line.status, line: excerpt(line.description))
        }
        guard lines.count < limits.maxLinesPerReply else {
            throw TorProtocolError.tooManyLines(limit: limits.maxLinesPerReply)
        }
        status = line.status
        lines.append(line)
        guard line.separator == .end else { return nil }
        let reply = TorReply(status: line.status, lines: lines)
        lines = []
        status = nil
        return reply
    }

    static func parseLine(_ line: ArraySlice<UInt8>) throws -> TorReplyLine {
        let b = Array(line)
        guard b.count >= 3, b[0..<3].allSatisfy({ (0x30...0x39).contains($0) }) else {
            throw TorProtocolError.invalidStatusCode(line: excerpt(b))
        }
        guard b.count >= 4, let separator = TorReplyLine.Separator(rawValue: b[3]) else {
            throw TorProtocolError.missingSeparator(line: excerpt(b))
        }
        let status = Int(b[0] - 0x30) * 100 + Int(b[1] - 0x30) * 10 + Int(b[2] - 0x30)
        return TorReplyLine(status: status, separator: separator, text: String(decoding: b[4...], as: UTF8.self))
    }

    /// The next CRLF-terminated line (CRLF stripped), or nil when none is complete yet.
    private mutating func nextRawLine(inDataBlock: Bool) throws -> ArraySlice<UInt8>? {
        var i = max(scanIndex, readIndex)
        while i < buffer.count {
            if buffer[i] == ASCII.lf {
                if i > readIndex, buffer[i - 1] == ASCII.cr {
                    let line = buffer[readIndex..<(i - 1)]
                    guard line.count <= limits.maxLineLength else {
                        throw TorProtocolError.lineTooLong(limit: limits.maxLineLength)
                    }
                    readIndex = i + 1
                    scanIndex = readIndex
                    compactIfWorthwhile()
                    return line
                }
                if !inDataBlock {
                    throw TorProtocolError.bareLineFeed(line: excerpt(buffer[readIndex..<i]))
                }
            }
            i += 1
        }
        scanIndex = i
        // +1 leaves room for a CR that arrived without its LF yet.
        guard buffer.count - readIndex <= limits.maxLineLength + 1 else {
            throw TorProtocolError.lineTooLong(limit: limits.maxLineLength)
        }
        return nil
    }

    private mutating func compactIfWorthwhile() {
        if readIndex == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            readIndex = 0
            scanIndex = 0
        } else if readIndex > 4096, readIndex * 2 > buffer.count {
            buffer.removeFirst(readIndex)
            scanIndex -= readIndex
            readIndex = 0
        }
    }
}
