import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// A local checkpoint's small records (its context, page index and summary), each one JSON
/// document in a checked envelope:
///
///      0  u32  magic "LGCR"       8  u32  body length
///      4  u16  version (1)       12  u32  CRC32C of the body
///      6  u16  kind              16  body: the record as JSON (UTF-8)
///
/// A record is written whole and fsync'd; reading checks every field before it decodes the body.
public enum RecordFile {
    public static let magic: [UInt8] = Array("LGCR".utf8)
    public static let version: UInt16 = 1
    public static let headerSize = 16

    public enum Kind: UInt16, CustomStringConvertible, Sendable {
        case context = 1    // the ProcessImage
        case pageIndex = 2  // where the pages file's pages go, and the zero runs
        case summary = 3    // when it committed, its pause, its parent, its size

        public var description: String {
            switch self {
            case .context: return "context"
            case .pageIndex: return "page index"
            case .summary: return "summary"
            }
        }
    }

    public enum FormatError: Error, Equatable, CustomStringConvertible {
        case shortFile(String)
        case badMagic(String)
        case unsupportedVersion(String, UInt16)
        case wrongKind(String, expected: Kind, found: UInt16)
        case lengthMismatch(String, header: Int, file: Int)
        case checksum(String)
        case badBody(String, String)

        public var description: String {
            switch self {
            case .shortFile(let p): return "\(p) is shorter than a record header"
            case .badMagic(let p): return "\(p) is not a Legato record (bad magic)"
            case .unsupportedVersion(let p, let v): return "\(p) has record version \(v); this build reads version \(RecordFile.version)"
            case .wrongKind(let p, let e, let f): return "\(p) holds a record of kind \(f), not a \(e)"
            case .lengthMismatch(let p, let h, let f): return "\(p) says its body has \(h) bytes but holds \(f)"
            case .checksum(let p): return "\(p): body checksum mismatch (the file is corrupt)"
            case .badBody(let p, let why): return "\(p): the record does not decode: \(why)"
            }
        }
    }

    /// The envelope and body of `value`, as written to a file.
    public static func encode<T: Encodable>(_ value: T, kind: Kind) throws -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        let body = [UInt8](try e.encode(value))
        var out = magic
        out += LittleEndian.bytes(version) + LittleEndian.bytes(kind.rawValue) + LittleEndian.bytes(UInt32(body.count))
            + LittleEndian.bytes(body.withUnsafeBytes { Sys.crc32c(0, $0) })
        return out + body
    }

    /// The record in `bytes` (a whole file), checked and decoded.
    public static func decode<T: Decodable>(_ type: T.Type, kind: Kind, from bytes: [UInt8], path: String) throws -> T {
        try decodeBody(T.self, try checkedBody(kind: kind, from: bytes, path: path), path: path)
    }

    /// The JSON body of the record at `path`, its envelope checked (for tools that read it as JSON).
    public static func body(kind: Kind, from path: String) throws -> Data {
        guard let data = FileManager.default.contents(atPath: path) else { throw SystemError("read \(path)", code: ENOENT) }
        return try checkedBody(kind: kind, from: [UInt8](data), path: path)
    }

    private static func checkedBody(kind: Kind, from bytes: [UInt8], path: String) throws -> Data {
        guard bytes.count >= headerSize else { throw FormatError.shortFile(path) }
        guard Array(bytes[0..<4]) == magic else { throw FormatError.badMagic(path) }
        let v = LittleEndian.get(bytes, 4, as: UInt16.self)
        guard v == version else { throw FormatError.unsupportedVersion(path, v) }
        let k = LittleEndian.get(bytes, 6, as: UInt16.self)
        guard k == kind.rawValue else { throw FormatError.wrongKind(path, expected: kind, found: k) }
        let length = Int(LittleEndian.get(bytes, 8, as: UInt32.self))
        guard length == bytes.count - headerSize else { throw FormatError.lengthMismatch(path, header: length, file: bytes.count - headerSize) }
        let body = Array(bytes[headerSize...])
        guard body.withUnsafeBytes({ Sys.crc32c(0, $0) }) == LittleEndian.get(bytes, 12, as: UInt32.self) else { throw FormatError.checksum(path) }
        return Data(body)
    }

    /// Writes the record to `path` and fsyncs it.
    public static func write<T: Encodable>(_ value: T, kind: Kind, to path: String) throws {
        let bytes = try encode(value, kind: kind)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        if fd < 0 { throw SystemError.fromErrno("create \(path)") }
        defer { close(fd) }
        try bytes.withUnsafeBytes { try Sys.writeFully(fd, $0.baseAddress!, count: $0.count, "write \(path)") }
        if fsync(fd) != 0 { throw SystemError.fromErrno("fsync \(path)") }
    }

    public static func read<T: Decodable>(_ type: T.Type, kind: Kind, from path: String) throws -> T {
        try decodeBody(T.self, try body(kind: kind, from: path), path: path)
    }

    private static func decodeBody<T: Decodable>(_ type: T.Type, _ body: Data, path: String) throws -> T {
        do { return try JSONDecoder().decode(T.self, from: body) } catch {
            throw FormatError.badBody(path, "\(error)")
        }
    }
}
