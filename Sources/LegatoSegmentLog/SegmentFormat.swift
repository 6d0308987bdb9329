import LegatoSystem

/// The on-disk form of a segment replica (Docs/on-disk-format.md). All integers little-endian.
///
///     file header (64 bytes)
///     0   u32  magic "LGSG"
///     4   u16  version (1)
///     6   u16  header size (64)
///     8   u64  writer id
///     16  u64  segment id
///     24  u64  created (Unix ns)
///     32  28 bytes reserved (zero)
///     60  u32  CRC32C of bytes 0..<60
///
///     entries, back to back (32-byte header + payload)
///     0   u32  magic "LGEN"
///     4   u32  payload length
///     8   u8   type (1 data, 2 footer)
///     9   u8   flags
///     10  u16  reserved
///     12  u32  epoch
///     16  u64  slab
///     24  u32  index of the entry in its segment
///     28  u32  CRC32C of bytes 0..<28 and the payload
///
///     footer (type 2, last entry of a closed segment), payload:
///     u32 data entries, u64 data payload bytes, u32 CRC32C over every data entry's CRC
///
/// A torn tail (the last entry cut short) is cut off at recovery; a corrupt entry (CRC mismatch) is
/// skipped — the reader resynchronizes on the next entry magic whose CRC holds — and never returned.
public enum SegmentFormat {
    public static let fileMagic: UInt32 = 0x4753_474C      // "LGSG"
    public static let entryMagic: UInt32 = 0x4E45_474C     // "LGEN"
    public static let version: UInt16 = 1
    public static let headerSize = 64
    public static let entryHeaderSize = 32
    public static let maxPayload = 16 << 20

    public enum EntryType: UInt8 {
        case data = 1
        case footer = 2
    }

    /// Every way a segment file can be wrong.
    public enum FormatError: Error, CustomStringConvertible, Equatable {
        case shortHeader
        case badMagic(UInt32)
        case unsupportedVersion(UInt16)
        case headerChecksum
        case identityMismatch(writer: UInt64, segment: UInt64)
        case badEntry(Int, at: Int)
        case trailingBytes(Int)

        public var description: String {
            switch self {
            case .shortHeader: return "file shorter than a segment header"
            case .badMagic(let m): return "bad segment magic 0x\(String(m, radix: 16))"
            case .unsupportedVersion(let v): return "unsupported segment version \(v)"
            case .headerChecksum: return "segment header checksum mismatch"
            case .identityMismatch(let w, let s): return "header names writer \(w) segment \(s), not the file's"
            case .badEntry(let n, let at): return "entry \(n) at byte \(at) has a bad header or runs past the end"
            case .trailingBytes(let n): return "\(n) bytes after the last entry"
            }
        }
    }

    /// A segment file's header; `ownerTag` (up to 16 bytes: the log node's tag of the writer's token)
    /// goes in the reserved bytes 32..<48, under the header's checksum.
    public static func encodeHeader(writer: UInt64, segment: UInt64, created: UInt64, ownerTag: [UInt8] = []) -> [UInt8] {
        precondition(ownerTag.count <= 16, "an owner tag has at most 16 bytes")
        var b = [UInt8](repeating: 0, count: headerSize)
        for (i, byte) in ownerTag.enumerated() { b[32 + i] = byte }
        put32(&b, 0, fileMagic)
        put16(&b, 4, version)
        put16(&b, 6, UInt16(headerSize))
        put64(&b, 8, writer)
        put64(&b, 16, segment)
        put64(&b, 24, created)
        let crc = b.withUnsafeBytes { Sys.crc32c(0, UnsafeRawBufferPointer(rebasing: $0[0..<60])) }
        put32(&b, 60, crc)
        return b
    }

    public static func decodeHeader(_ b: [UInt8]) throws -> (writer: UInt64, segment: UInt64, created: UInt64) {
        guard b.count >= headerSize else { throw FormatError.shortHeader }
        let magic = get32(b, 0)
        guard magic == fileMagic else { throw FormatError.badMagic(magic) }
        let v = get16(b, 4)
        guard v == version else { throw FormatError.unsupportedVersion(v) }
        let crc = b.withUnsafeBytes { Sys.crc32c(0, UnsafeRawBufferPointer(rebasing: $0[0..<60])) }
        guard crc == get32(b, 60) else { throw FormatError.headerChecksum }
        return (get64(b, 8), get64(b, 16), get64(b, 24))
    }

    /// An entry's metadata.
    public struct EntryHeader: Equatable {
        public var length: UInt32
        public var type: UInt8
        public var flags: UInt8
        public var epoch: UInt32
        public var slab: UInt64
        public var index: UInt32
        public var crc: UInt32
    }

    /// Writes the 32-byte header of an entry carrying `payload` at `at`; returns its CRC.
    @discardableResult
    public static func writeEntryHeader(at: UnsafeMutableRawPointer, type: UInt8, flags: UInt8, epoch: UInt32, slab: UInt64,
                                        index: UInt32, payload: UnsafeRawBufferPointer) -> UInt32 {
        at.storeBytes(of: entryMagic.littleEndian, toByteOffset: 0, as: UInt32.self)
        at.storeBytes(of: UInt32(payload.count).littleEndian, toByteOffset: 4, as: UInt32.self)
        at.storeBytes(of: type, toByteOffset: 8, as: UInt8.self)
        at.storeBytes(of: flags, toByteOffset: 9, as: UInt8.self)
        at.storeBytes(of: UInt16(0), toByteOffset: 10, as: UInt16.self)
        at.storeBytes(of: epoch.littleEndian, toByteOffset: 12, as: UInt32.self)
        at.storeBytes(of: slab.littleEndian, toByteOffset: 16, as: UInt64.self)
        at.storeBytes(of: index.littleEndian, toByteOffset: 24, as: UInt32.self)
        let crc = Sys.crc32c(Sys.crc32c(0, UnsafeRawBufferPointer(start: at, count: 28)), payload)
        at.storeBytes(of: crc.littleEndian, toByteOffset: 28, as: UInt32.self)
        return crc
    }

    /// Parses the entry header at `raw[0..<32]`; nil if its magic is wrong or its length is insane.
    public static func parseEntryHeader(_ raw: UnsafeRawBufferPointer) -> EntryHeader? {
        guard raw.count >= entryHeaderSize else { return nil }
        func u32(_ o: Int) -> UInt32 { UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt32.self)) }
        guard u32(0) == entryMagic else { return nil }
        let len = u32(4)
        guard len <= UInt32(maxPayload) else { return nil }
        return EntryHeader(length: len, type: raw[8], flags: raw[9], epoch: u32(12),
                           slab: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self)),
                           index: u32(24), crc: u32(28))
    }

    /// Walks `count` entries in on-disk form back to back in `raw` (a read reply), checking each header
    /// and that it fits; the payloads handed to `body` point into `raw`. Throws on anything malformed.
    public static func forEachEntry(in raw: UnsafeRawBufferPointer, count: Int,
                                    _ body: (EntryHeader, UnsafeRawBufferPointer) throws -> Void) throws {
        var at = 0
        for n in 0..<count {
            guard let h = parseEntryHeader(UnsafeRawBufferPointer(rebasing: raw[at..<min(raw.count, at + entryHeaderSize)])) else {
                throw FormatError.badEntry(n, at: at)
            }
            let payloadStart = at + entryHeaderSize
            guard raw.count - payloadStart >= Int(h.length) else { throw FormatError.badEntry(n, at: at) }
            try body(h, UnsafeRawBufferPointer(rebasing: raw[payloadStart..<payloadStart + Int(h.length)]))
            at = payloadStart + Int(h.length)
        }
        guard at == raw.count else { throw FormatError.trailingBytes(raw.count - at) }
    }

    /// Whether the entry whose header is at `header` and payload at `payload` has the CRC it claims.
    public static func verify(header: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, claimed: UInt32) -> Bool {
        var crc = Sys.crc32c(0, UnsafeRawBufferPointer(rebasing: header[0..<28]))
        crc = Sys.crc32c(crc, payload)
        return crc == claimed
    }

    public static func footerPayload(entries: UInt32, bytes: UInt64, digest: UInt32) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 16)
        put32(&b, 0, entries)
        put64(&b, 4, bytes)
        put32(&b, 12, digest)
        return b
    }

    public static func parseFooter(_ b: UnsafeRawBufferPointer) -> (entries: UInt32, bytes: UInt64, digest: UInt32)? {
        guard b.count == 16 else { return nil }
        return (UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 0, as: UInt32.self)),
                UInt64(littleEndian: b.loadUnaligned(fromByteOffset: 4, as: UInt64.self)),
                UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 12, as: UInt32.self)))
    }

    static func put16(_ b: inout [UInt8], _ o: Int, _ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { for i in 0..<2 { b[o + i] = $0[i] } } }
    static func put32(_ b: inout [UInt8], _ o: Int, _ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { for i in 0..<4 { b[o + i] = $0[i] } } }
    static func put64(_ b: inout [UInt8], _ o: Int, _ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { for i in 0..<8 { b[o + i] = $0[i] } } }
    static func get16(_ b: [UInt8], _ o: Int) -> UInt16 { UInt16(b[o]) | UInt16(b[o + 1]) << 8 }
    static func get32(_ b: [UInt8], _ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[o + $1]) << (8 * $1) } }
    static func get64(_ b: [UInt8], _ o: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(b[o + $1]) << (8 * $1) } }
}
