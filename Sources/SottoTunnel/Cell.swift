// The plaintext of a tunnel cell and the control payloads it carries (protocol.md, "Cells").
// Pure value types: bytes in, values out. Sealing and opening cells is CellCipher's job.

/// The type byte of a cell (protocol.md, "Cells", table "Types").
public enum CellType: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case cover = 0
    case ping
    case pong
    case open
    case opened
    case close
    case datagram
    case streamData
    case windowUpdate

    public var description: String {
        switch self {
        case .cover: return "cover"
        case .ping: return "ping"
        case .pong: return "pong"
        case .open: return "open"
        case .opened: return "opened"
        case .close: return "close"
        case .datagram: return "datagram"
        case .streamData: return "stream data"
        case .windowUpdate: return "window update"
        }
    }
}

/// One cell's plaintext, decoded. `message`, `fragmentIndex` and `fragmentCount` only mean
/// something for `.datagram` cells; every other type is a single fragment (index 0 of 1).
public struct Cell: Equatable, Sendable, CustomStringConvertible {
    public var type: CellType
    public var flow: UInt32
    public var message: UInt16
    public var fragmentIndex: UInt16
    public var fragmentCount: UInt16
    public var payload: [UInt8]

    public init(
        type: CellType,
        flow: UInt32 = 0,
        message: UInt16 = 0,
        fragmentIndex: UInt16 = 0,
        fragmentCount: UInt16 = 1,
        payload: [UInt8] = []
    ) {
        self.type = type
        self.flow = flow
        self.message = message
        self.fragmentIndex = fragmentIndex
        self.fragmentCount = fragmentCount
        self.payload = payload
    }

    public var description: String {
        if type == .datagram {
            return "\(type) cell, flow \(flow), message \(message), fragment \(fragmentIndex + 1) of \(fragmentCount), \(payload.count) bytes"
        }
        return "\(type) cell, flow \(flow), \(payload.count) bytes"
    }
}

/// Why a cell plaintext was rejected. Each violation of the layout in protocol.md ("Cells") has
/// its own case, so a log line says exactly what the peer got wrong.
public enum CellError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The plaintext is not `cell_size - 16` bytes for the agreed cell size.
    case wrongPlaintextSize(actual: Int, expected: Int)
    /// The plaintext length does not belong to any permitted cell size (128 to 16384).
    case plaintextSizeOutOfRange(actual: Int)
    case unknownType(UInt8)
    case reservedNotZero(UInt8)
    case fragmentCountZero
    case fragmentIndexOutOfRange(index: UInt16, count: UInt16)
    /// Only datagrams are fragmented; any other type must say fragment 0 of 1.
    case fragmentedNonDatagram(type: CellType, index: UInt16, count: UInt16)
    case payloadLengthBeyondCapacity(length: Int, capacity: Int)
    /// Cover cells carry no payload (protocol.md, "Types").
    case coverWithPayload(length: Int)
    /// The byte at `offset` (from the start of the plaintext) is in the padding and is not zero.
    case nonzeroPadding(offset: Int)

    public var description: String {
        switch self {
        case let .wrongPlaintextSize(actual, expected):
            return "cell plaintext is \(actual) bytes, expected \(expected) (cell_size - 16); both ends must use the same cell_size"
        case let .plaintextSizeOutOfRange(actual):
            return "cell plaintext is \(actual) bytes; a plaintext is cell_size - 16 bytes with cell_size from \(CellCodec.cellSizeRange.lowerBound) to \(CellCodec.cellSizeRange.upperBound)"
        case let .unknownType(byte):
            return "cell type \(byte) is unknown (protocol version 1 defines 0 to 8)"
        case let .reservedNotZero(byte):
            return "cell reserved byte is \(byte), must be 0"
        case .fragmentCountZero:
            return "cell fragment count is 0; an unfragmented cell says 1"
        case let .fragmentIndexOutOfRange(index, count):
            return "cell fragment index \(index) is not below its fragment count \(count)"
        case let .fragmentedNonDatagram(type, index, count):
            return "\(type) cell says fragment index \(index) of \(count); only datagram cells are fragmented"
        case let .payloadLengthBeyondCapacity(length, capacity):
            return "cell payload length \(length) exceeds the \(capacity) bytes a cell of this size carries"
        case let .coverWithPayload(length):
            return "cover cell carries \(length) payload bytes; cover cells carry none"
        case let .nonzeroPadding(offset):
            return "cell padding byte at offset \(offset) is not zero"
        }
    }
}

/// Encodes and decodes the `cell_size - 16` byte plaintext of a cell (protocol.md, "Cells").
public enum CellCodec {
    /// type, reserved, flow, message, fragment index, fragment count, payload length.
    public static let headerSize = 14
    // Same values as TunnelConstants.tagSize and .cellSizeRange; kept here so the codec builds
    // without the handshake (and its Crypto dependency).
    static let tagSize = 16
    static let cellSizeRange: ClosedRange<Int> = 128...16384

    /// Payload bytes one cell carries: `cell_size - 30` (484 for the default 514).
    public static func payloadCapacity(cellSize: Int) -> Int {
        cellSize - tagSize - headerSize
    }

    /// Plaintext bytes per cell: `cell_size - 16`.
    public static func plaintextSize(cellSize: Int) -> Int {
        cellSize - tagSize
    }

    /// The plaintext of `cell`: exactly `cell_size - 16` bytes, zero padded.
    /// The caller guarantees the payload fits and the fragment fields are valid; a cell that
    /// breaks either is a programming error, not a peer's fault.
    public static func encode(_ cell: Cell, cellSize: Int) -> [UInt8] {
        precondition(cellSizeRange.contains(cellSize), "cell size \(cellSize) outside \(cellSizeRange)")
        let size = plaintextSize(cellSize: cellSize)
        return [UInt8](unsafeUninitializedCapacity: size) { buffer, initializedCount in
            encode(cell, into: UnsafeMutableRawBufferPointer(buffer))
            initializedCount = size
        }
    }

    /// Writes the plaintext of `cell` into `plaintext` (all of it: header, payload, zero
    /// padding), for callers that seal in a buffer of their own. `plaintext.count` is the
    /// plaintext size (`cell_size - 16`).
    public static func encode(_ cell: Cell, into plaintext: UnsafeMutableRawBufferPointer) {
        let capacity = plaintext.count - headerSize
        let length = cell.payload.count
        precondition(length <= capacity, "cell payload of \(length) bytes exceeds capacity \(capacity)")
        precondition(cell.fragmentCount >= 1 && cell.fragmentIndex < cell.fragmentCount,
                     "cell fragment \(cell.fragmentIndex) of \(cell.fragmentCount) is invalid")
        precondition(cell.type == .datagram || cell.fragmentCount == 1, "only datagram cells are fragmented")

        plaintext.storeBytes(of: cell.type.rawValue, toByteOffset: 0, as: UInt8.self)
        plaintext.storeBytes(of: 0, toByteOffset: 1, as: UInt8.self)
        plaintext.storeBytes(of: cell.flow.bigEndian, toByteOffset: 2, as: UInt32.self)
        plaintext.storeBytes(of: cell.message.bigEndian, toByteOffset: 6, as: UInt16.self)
        plaintext.storeBytes(of: cell.fragmentIndex.bigEndian, toByteOffset: 8, as: UInt16.self)
        plaintext.storeBytes(of: cell.fragmentCount.bigEndian, toByteOffset: 10, as: UInt16.self)
        plaintext.storeBytes(of: UInt16(length).bigEndian, toByteOffset: 12, as: UInt16.self)
        let base = plaintext.baseAddress!
        cell.payload.withUnsafeBytes { payload in
            if let source = payload.baseAddress {
                (base + headerSize).copyMemory(from: source, byteCount: length)
            }
        }
        let paddingStart = headerSize + length
        (base + paddingStart).initializeMemory(as: UInt8.self, repeating: 0, count: plaintext.count - paddingStart)
    }

    /// Decodes a plaintext whose size must match the agreed `cellSize` exactly.
    public static func decode(_ plaintext: [UInt8], cellSize: Int) throws -> Cell {
        let expected = plaintextSize(cellSize: cellSize)
        guard plaintext.count == expected else {
            throw CellError.wrongPlaintextSize(actual: plaintext.count, expected: expected)
        }
        return try decode(plaintext)
    }

    /// Decodes a plaintext of any permitted cell size (its length tells the capacity).
    public static func decode(_ plaintext: [UInt8]) throws -> Cell {
        try plaintext.withUnsafeBytes { try decode($0) }
    }

    /// Decodes a plaintext held in a buffer of the caller's (e.g. the `Data` an AEAD returns),
    /// copying only the payload out of it.
    public static func decode(_ plaintext: UnsafeRawBufferPointer) throws -> Cell {
        let size = plaintext.count
        guard size >= plaintextSize(cellSize: cellSizeRange.lowerBound),
              size <= plaintextSize(cellSize: cellSizeRange.upperBound)
        else {
            throw CellError.plaintextSizeOutOfRange(actual: size)
        }
        let typeByte = plaintext[0]
        guard let type = CellType(rawValue: typeByte) else { throw CellError.unknownType(typeByte) }
        guard plaintext[1] == 0 else { throw CellError.reservedNotZero(plaintext[1]) }
        let flow = UInt32(bigEndian: plaintext.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
        let message = UInt16(bigEndian: plaintext.loadUnaligned(fromByteOffset: 6, as: UInt16.self))
        let index = UInt16(bigEndian: plaintext.loadUnaligned(fromByteOffset: 8, as: UInt16.self))
        let count = UInt16(bigEndian: plaintext.loadUnaligned(fromByteOffset: 10, as: UInt16.self))
        let length = Int(UInt16(bigEndian: plaintext.loadUnaligned(fromByteOffset: 12, as: UInt16.self)))
        guard count != 0 else { throw CellError.fragmentCountZero }
        guard index < count else { throw CellError.fragmentIndexOutOfRange(index: index, count: count) }
        guard type == .datagram || count == 1 else {
            throw CellError.fragmentedNonDatagram(type: type, index: index, count: count)
        }
        let capacity = size - headerSize
        guard length <= capacity else {
            throw CellError.payloadLengthBeyondCapacity(length: length, capacity: capacity)
        }
        guard type != .cover || length == 0 else { throw CellError.coverWithPayload(length: length) }
        let paddingStart = headerSize + length
        if let offset = firstNonzeroByte(in: plaintext, from: paddingStart) {
            throw CellError.nonzeroPadding(offset: offset)
        }
        let payload = [UInt8](UnsafeRawBufferPointer(rebasing: plaintext[headerSize..<paddingStart]))
        return Cell(type: type, flow: flow, message: message, fragmentIndex: index, fragmentCount: count, payload: payload)
    }

    /// The offset of the first nonzero byte at or after `start`, or nil. Checks eight bytes at a
    /// time: padding is most of a cell whenever traffic is light, and every cell is checked.
    private static func firstNonzeroByte(in bytes: UnsafeRawBufferPointer, from start: Int) -> Int? {
        var offset = start
        let end = bytes.count
        while end - offset >= 8 {
            if bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self) != 0 { break }
            offset += 8
        }
        while offset < end {
            if bytes[offset] != 0 { return offset }
            offset += 1
        }
        return nil
    }
}

// MARK: - Control payloads (protocol.md, "Types")

/// The kind of flow an `open` cell starts.
public enum FlowKind: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case udp = 1
    case tcp = 2

    public var description: String {
        switch self {
        case .udp: return "udp"
        case .tcp: return "tcp"
        }
    }
}

/// Why a control payload was rejected.
public enum ControlPayloadError: Error, Equatable, Sendable, CustomStringConvertible {
    /// `payload` names the cell type whose payload this is ("open", "ping/pong", ...).
    case wrongLength(payload: String, actual: Int, expected: Int)
    case tooShort(payload: String, actual: Int, minimum: Int)
    case unknownFlowKind(UInt8)
    case zeroVirtualPort
    /// A tcp flow with a zero window could never carry a byte.
    case zeroWindow(payload: String)
    /// The window field only means something for tcp (protocol.md: "u32 initial stream window (tcp)").
    case windowOnUDPFlow(UInt32)
    case zeroWindowIncrement
    case unknownCloseReason(UInt8)
    case closeMessageNotUTF8

    public var description: String {
        switch self {
        case let .wrongLength(payload, actual, expected):
            return "\(payload) payload is \(actual) bytes, expected \(expected)"
        case let .tooShort(payload, actual, minimum):
            return "\(payload) payload is \(actual) bytes, at least \(minimum) expected"
        case let .unknownFlowKind(byte):
            return "open payload has flow kind \(byte); known kinds are 1 (udp) and 2 (tcp)"
        case .zeroVirtualPort:
            return "open payload names virtual port 0, which no service can expose"
        case let .zeroWindow(payload):
            return "\(payload) payload announces a tcp window of 0 bytes; the stream could never carry data"
        case let .windowOnUDPFlow(window):
            return "open payload for a udp flow carries window \(window); the window is for tcp flows only and must be 0"
        case .zeroWindowIncrement:
            return "window update payload grants 0 bytes"
        case let .unknownCloseReason(byte):
            return "close payload has reason \(byte); known reasons are 0 to 6"
        case .closeMessageNotUTF8:
            return "close payload message is not valid UTF-8"
        }
    }
}

/// Payload of an `open` cell: u8 kind, u16 virtual port, u32 initial stream window (tcp; 0 for udp).
public struct OpenRequest: Equatable, Sendable {
    public static let encodedSize = 7

    public var kind: FlowKind
    public var virtualPort: UInt16
    /// The opener's receive window for a tcp flow; 0 for udp.
    public var window: UInt32

    public init(kind: FlowKind, virtualPort: UInt16, window: UInt32 = 0) {
        self.kind = kind
        self.virtualPort = virtualPort
        self.window = window
    }

    public func encode() -> [UInt8] {
        var bytes = [UInt8]()
        bytes.reserveCapacity(Self.encodedSize)
        bytes.append(kind.rawValue)
        bytes.appendBigEndian(virtualPort)
        bytes.appendBigEndian(window)
        return bytes
    }

    public static func decode(_ payload: [UInt8]) throws -> OpenRequest {
        guard payload.count == encodedSize else {
            throw ControlPayloadError.wrongLength(payload: "open", actual: payload.count, expected: encodedSize)
        }
        guard let kind = FlowKind(rawValue: payload[0]) else { throw ControlPayloadError.unknownFlowKind(payload[0]) }
        let port = payload.readBigEndianUInt16(at: 1)
        let window = payload.readBigEndianUInt32(at: 3)
        guard port != 0 else { throw ControlPayloadError.zeroVirtualPort }
        switch kind {
        case .tcp:
            guard window != 0 else { throw ControlPayloadError.zeroWindow(payload: "open") }
        case .udp:
            guard window == 0 else { throw ControlPayloadError.windowOnUDPFlow(window) }
        }
        return OpenRequest(kind: kind, virtualPort: port, window: window)
    }
}

/// Payload of an `opened` cell (tcp only): u32 initial stream window of the exit.
public struct OpenedReply: Equatable, Sendable {
    public static let encodedSize = 4

    public var window: UInt32

    public init(window: UInt32) {
        self.window = window
    }

    public func encode() -> [UInt8] {
        var bytes = [UInt8]()
        bytes.reserveCapacity(Self.encodedSize)
        bytes.appendBigEndian(window)
        return bytes
    }

    public static func decode(_ payload: [UInt8]) throws -> OpenedReply {
        guard payload.count == encodedSize else {
            throw ControlPayloadError.wrongLength(payload: "opened", actual: payload.count, expected: encodedSize)
        }
        let window = payload.readBigEndianUInt32(at: 0)
        guard window != 0 else { throw ControlPayloadError.zeroWindow(payload: "opened") }
        return OpenedReply(window: window)
    }
}

/// The reason byte of a `close` cell (protocol.md, "Cells": close reasons).
public enum CloseReason: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case normal = 0
    case noSuchPort
    case targetRefused
    case limitReached
    case idleTimeout
    case protocolError
    case targetUnreachable

    public var description: String {
        switch self {
        case .normal: return "closed normally"
        case .noSuchPort: return "the exit exposes no service on this virtual port"
        case .targetRefused: return "the exit's local target refused the connection"
        case .limitReached: return "the tunnel carries as many flows as it is allowed to"
        case .idleTimeout: return "the flow was idle too long"
        case .protocolError: return "the peer broke the tunnel protocol on this flow"
        case .targetUnreachable: return "the exit's local target is unreachable"
        }
    }
}

/// Payload of a `close` cell: u8 reason, then an optional UTF-8 message.
public struct CloseNotice: Equatable, Sendable {
    public var reason: CloseReason
    public var message: String

    public init(reason: CloseReason, message: String = "") {
        self.reason = reason
        self.message = message
    }

    /// The payload capacity of the smallest permitted cell (128 - 30): a notice this long fits
    /// a cell of any size.
    public static let portableSize = 98

    /// Encodes the notice in at most `payloadCapacity` bytes, cutting the message at a UTF-8
    /// scalar boundary if needed. By default the result fits a cell of any permitted size.
    public func encode(payloadCapacity: Int = CloseNotice.portableSize) -> [UInt8] {
        precondition(payloadCapacity >= 1, "a close payload needs at least the reason byte")
        let utf8 = message.utf8
        let budget = payloadCapacity - 1
        var bytes = [UInt8]()
        bytes.reserveCapacity(1 + min(utf8.count, budget))
        bytes.append(reason.rawValue)
        if utf8.count <= budget {
            bytes.append(contentsOf: utf8)
        } else {
            let all = Array(utf8)
            var cut = budget
            // Back up over continuation bytes (10xxxxxx) so no scalar is split.
            while cut > 0 && all[cut] & 0xC0 == 0x80 { cut -= 1 }
            bytes.append(contentsOf: all[..<cut])
        }
        return bytes
    }

    public static func decode(_ payload: [UInt8]) throws -> CloseNotice {
        guard let first = payload.first else {
            throw ControlPayloadError.tooShort(payload: "close", actual: 0, minimum: 1)
        }
        guard let reason = CloseReason(rawValue: first) else { throw ControlPayloadError.unknownCloseReason(first) }
        let bytes = payload[1...]
        // Decoding repairs invalid UTF-8 with U+FFFD; only valid input survives unchanged.
        let message = String(decoding: bytes, as: UTF8.self)
        guard message.utf8.elementsEqual(bytes) else { throw ControlPayloadError.closeMessageNotUTF8 }
        return CloseNotice(reason: reason, message: message)
    }
}

/// Payload of a `window update` cell: u32 credit increment, big-endian.
public struct WindowUpdate: Equatable, Sendable {
    public static let encodedSize = 4

    public var increment: UInt32

    public init(increment: UInt32) {
        self.increment = increment
    }

    public func encode() -> [UInt8] {
        var bytes = [UInt8]()
        bytes.reserveCapacity(Self.encodedSize)
        bytes.appendBigEndian(increment)
        return bytes
    }

    public static func decode(_ payload: [UInt8]) throws -> WindowUpdate {
        guard payload.count == encodedSize else {
            throw ControlPayloadError.wrongLength(payload: "window update", actual: payload.count, expected: encodedSize)
        }
        let increment = payload.readBigEndianUInt32(at: 0)
        guard increment != 0 else { throw ControlPayloadError.zeroWindowIncrement }
        return WindowUpdate(increment: increment)
    }
}

/// Payload of `ping` and `pong` cells: 8 opaque bytes, echoed by the pong. Held as a number so
/// the pinger can compare it cheaply (a send timestamp or a counter both fit).
public struct PingPayload: Equatable, Hashable, Sendable {
    public static let encodedSize = 8

    public var value: UInt64

    public init(value: UInt64) {
        self.value = value
    }

    public func encode() -> [UInt8] {
        var bytes = [UInt8]()
        bytes.reserveCapacity(Self.encodedSize)
        bytes.appendBigEndian(value)
        return bytes
    }

    public static func decode(_ payload: [UInt8]) throws -> PingPayload {
        guard payload.count == encodedSize else {
            throw ControlPayloadError.wrongLength(payload: "ping/pong", actual: payload.count, expected: encodedSize)
        }
        let value = payload.withUnsafeBytes { UInt64(bigEndian: $0.loadUnaligned(as: UInt64.self)) }
        return PingPayload(value: value)
    }
}

extension Array where Element == UInt8 {
    fileprivate mutating func appendBigEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.bigEndian) { append(contentsOf: $0) }
    }

    fileprivate func readBigEndianUInt16(at offset: Int) -> UInt16 {
        UInt16(self[offset]) << 8 | UInt16(self[offset + 1])
    }

    fileprivate func readBigEndianUInt32(at offset: Int) -> UInt32 {
        UInt32(self[offset]) << 24 | UInt32(self[offset + 1]) << 16 | UInt32(self[offset + 2]) << 8 | UInt32(self[offset + 3])
    }
}
