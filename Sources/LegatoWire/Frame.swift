import LegatoSystem
/// The frame every Legato message travels in (all integers little-endian):
///
///     0      4   5      6        8           12         16
///     +------+---+------+--------+-----------+----------+---------------+
///     |magic |ver|opcode| status | request id| length   | payload ...   |
///     |"LGTW"|u8 | u8   | u16    | u32       | u32      | length bytes  |
///     +------+---+------+--------+-----------+----------+---------------+
///
/// A response carries the request's opcode with bit 7 set and echoes its request id;
/// requests carry status 0. Frames on one connection may be pipelined: responses come
/// back in request order.
public struct FrameHeader: Equatable {
    public static let size = 16
    public static let magic: UInt32 = 0x5754_474C  // "LGTW" in memory order
    public static let version: UInt8 = 1
    public static let responseBit: UInt8 = 0x80

    public var opcode: UInt8
    public var status: UInt16
    public var requestID: UInt32
    public var length: UInt32

    public init(opcode: UInt8, status: UInt16 = 0, requestID: UInt32, length: UInt32) {
        self.opcode = opcode
        self.status = status
        self.requestID = requestID
        self.length = length
    }

    public func encoded() -> [UInt8] {
        var w = WireWriter(capacity: FrameHeader.size)
        w.u32(FrameHeader.magic)
        w.u8(FrameHeader.version)
        w.u8(opcode)
        w.u16(status)
        w.u32(requestID)
        w.u32(length)
        return w.bytes
    }

    /// Decodes and validates a header; `maxLength` bounds the payload a peer may announce.
    public static func decode(_ bytes: [UInt8], maxLength: UInt32) throws -> FrameHeader {
        var r = WireReader(bytes)
        let magic = try r.u32("frame magic")
        guard magic == FrameHeader.magic else { throw WireError.badMagic(magic) }
        let version = try r.u8("frame version")
        guard version == FrameHeader.version else { throw WireError.unsupportedVersion(version) }
        let opcode = try r.u8("opcode")
        let status = try r.u16("status")
        let id = try r.u32("request id")
        let length = try r.u32("length")
        guard length <= maxLength else { throw WireError.frameTooLarge(length, limit: maxLength) }
        return FrameHeader(opcode: opcode, status: status, requestID: id, length: length)
    }
}

/// A whole frame: header fields plus payload.
public struct Frame {
    public var header: FrameHeader
    public var payload: [UInt8]

    public init(header: FrameHeader, payload: [UInt8]) {
        self.header = header
        self.payload = payload
    }

    public var opcode: UInt8 { header.opcode }
    public var status: WireStatus { WireStatus(rawValue: header.status) ?? .internalError }
    public var isResponse: Bool { header.opcode & FrameHeader.responseBit != 0 }
}

/// Status of a response. Anything but `.ok` carries a UTF-8 message (u16 length + bytes) as payload.
public enum WireStatus: UInt16, CustomStringConvertible {
    case ok = 0
    case badRequest = 1
    case notAuthenticated = 2
    case notOwner = 3
    case noSuchSpace = 4
    case capacityExceeded = 5
    case unsupportedVersion = 6
    case tooLarge = 7
    case internalError = 8
    case notFound = 9
    case alreadyExists = 10
    /// FREEZE_SPACE of a space that is frozen already (a freeze a failed checkpoint left).
    case frozen = 11
    /// A coordinator that does not lead (several share an etcd store); the message is the leader's
    /// HOST:PORT, or empty while none is known.
    case notLeader = 12

    public var description: String {
        switch self {
        case .ok: return "ok"
        case .badRequest: return "bad request"
        case .notAuthenticated: return "not authenticated"
        case .notOwner: return "not the owner"
        case .noSuchSpace: return "no such address space"
        case .capacityExceeded: return "capacity exceeded"
        case .unsupportedVersion: return "unsupported version"
        case .tooLarge: return "too large"
        case .internalError: return "internal error"
        case .notFound: return "not found"
        case .alreadyExists: return "already exists"
        case .frozen: return "frozen already"
        case .notLeader: return "not the leader"
        }
    }
}

/// A non-ok response, surfaced to callers as an error.
public struct RemoteError: Error, CustomStringConvertible, Equatable {
    public let status: WireStatus
    public let message: String
    public let peer: String
    public init(status: WireStatus, message: String, peer: String) {
        self.status = status
        self.message = message
        self.peer = peer
    }
    public var description: String { "\(peer) answered \(status): \(message)" }
}

/// Whether `error` is the connection's or the peer's (the peer is unreachable, broke off, refused
/// the request), not the caller's: a reader tries another replica on these and stops on any other.
public func isTransportFailure(_ error: Error) -> Bool {
    error is WireError || error is RemoteError || error is SystemError
}
