/// Little-endian encoding into a growable byte array.
public struct WireWriter {
    public private(set) var bytes: [UInt8]

    public init(capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func raw(_ v: [UInt8]) { bytes.append(contentsOf: v) }
    public mutating func raw(_ v: UnsafeRawBufferPointer) { bytes.append(contentsOf: v) }
    /// A string as u16 length + UTF-8 (truncated to 65535 bytes).
    public mutating func string(_ s: String) {
        let utf8 = Array(s.utf8.prefix(65535))
        u16(UInt16(utf8.count))
        raw(utf8)
    }
    /// A blob as u32 length + bytes.
    public mutating func blob(_ b: [UInt8]) {
        u32(UInt32(b.count))
        raw(b)
    }
}

/// Bounds-checked little-endian decoding; every read past the end throws `.truncated`.
public struct WireReader {
    public let bytes: [UInt8]
    public private(set) var offset: Int

    public init(_ bytes: [UInt8], offset: Int = 0) {
        self.bytes = bytes
        self.offset = offset
    }

    public var remaining: Int { bytes.count - offset }

    @inline(__always)
    private mutating func take(_ n: Int, _ what: String) throws -> Int {
        guard n >= 0, remaining >= n else { throw WireError.truncated(what) }
        let o = offset
        offset += n
        return o
    }

    @inline(__always)
    private mutating func int<T: FixedWidthInteger>(_ type: T.Type, _ what: String) throws -> T {
        let o = try take(MemoryLayout<T>.size, what)
        var v: T = 0
        withUnsafeMutableBytes(of: &v) { dst in
            bytes.withUnsafeBytes { src in dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[o..<o + MemoryLayout<T>.size])) }
        }
        return T(littleEndian: v)
    }

    public mutating func u8(_ what: String = "u8") throws -> UInt8 { try int(UInt8.self, what) }
    public mutating func u16(_ what: String = "u16") throws -> UInt16 { try int(UInt16.self, what) }
    public mutating func u32(_ what: String = "u32") throws -> UInt32 { try int(UInt32.self, what) }
    public mutating func u64(_ what: String = "u64") throws -> UInt64 { try int(UInt64.self, what) }

    /// A byte that must be 0 or 1.
    public mutating func bool(_ what: String) throws -> Bool {
        let v = try u8(what)
        guard v <= 1 else { throw WireError.malformed("\(what) is \(v), not 0 or 1") }
        return v == 1
    }

    /// `n` u64s in a row (the caller has bounded `n`).
    public mutating func u64Array(_ n: Int, _ what: String) throws -> [UInt64] {
        let o = try take(n.multipliedReportingOverflow(by: 8).overflow ? -1 : n * 8, what)
        return bytes.withUnsafeBytes { raw in
            (0..<n).map { UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: o + $0 * 8, as: UInt64.self)) }
        }
    }

    public mutating func raw(_ n: Int, _ what: String = "bytes") throws -> [UInt8] {
        let o = try take(n, what)
        return Array(bytes[o..<o + n])
    }

    /// Offset of `n` bytes consumed without copying.
    public mutating func skip(_ n: Int, _ what: String = "bytes") throws -> Int { try take(n, what) }

    public mutating func string(_ what: String = "string") throws -> String {
        let n = Int(try u16(what))
        let b = try raw(n, what)
        guard let s = String(validating: b, as: UTF8.self) else { throw WireError.malformed("\(what) is not UTF-8") }
        return s
    }

    public mutating func blob(limit: Int, _ what: String = "blob") throws -> [UInt8] {
        let n = Int(try u32(what))
        guard n <= limit else { throw WireError.malformed("\(what) of \(n) bytes exceeds \(limit)") }
        return try raw(n, what)
    }

    /// A count that must be at most `limit` and fit `itemSize`-byte items in what remains.
    public mutating func count(itemSize: Int, limit: Int, _ what: String) throws -> Int {
        let n = Int(try u32(what))
        guard n <= limit else { throw WireError.malformed("\(what) \(n) exceeds \(limit)") }
        guard n.multipliedReportingOverflow(by: itemSize).partialValue <= remaining else { throw WireError.truncated(what) }
        return n
    }

    /// `what` names the message in the error (built only then: this runs on every request).
    public func expectEnd(_ what: @autoclosure () -> String) throws {
        guard remaining == 0 else { throw WireError.malformed("\(remaining) trailing bytes after \(what())") }
    }
}

/// Every way a message can be wrong on the wire.
public enum WireError: Error, CustomStringConvertible, Equatable {
    case badMagic(UInt32)
    case unsupportedVersion(UInt8)
    case frameTooLarge(UInt32, limit: UInt32)
    case truncated(String)
    case malformed(String)
    case unknownOpcode(UInt8)
    case unexpectedOpcode(UInt8, expected: UInt8)
    case authenticationFailed(String)
    case closed

    public var description: String {
        switch self {
        case .badMagic(let m): return "bad frame magic 0x\(String(m, radix: 16))"
        case .unsupportedVersion(let v): return "unsupported protocol version \(v)"
        case .frameTooLarge(let n, let limit): return "frame of \(n) bytes exceeds the \(limit)-byte limit"
        case .truncated(let what): return "truncated message (while reading \(what))"
        case .malformed(let what): return "malformed message: \(what)"
        case .unknownOpcode(let op): return "unknown opcode 0x\(String(op, radix: 16))"
        case .unexpectedOpcode(let op, let exp): return "unexpected opcode 0x\(String(op, radix: 16)) (expected 0x\(String(exp, radix: 16)))"
        case .authenticationFailed(let why): return "authentication failed: \(why)"
        case .closed: return "connection closed"
        }
    }
}
