import Glibc
import LegatoCore
import LegatoSystem

/// A local checkpoint's page contents (`pages.bin`, format 2), each page checked when it is read:
///
///     offset 0       header, 4096 bytes
///                      0  u64  magic "LGCKPAGE"       16  u64  epoch
///                      8  u16  version (2)            24  u64  pages
///                     10  u16  header size (4096)     32  u32  CRC32C of the CRC table
///                     12  u32  0                      36..4092 zero
///                   4092  u32  CRC32C of bytes 0..<4092
///     offset 4096    the pages, 4096 bytes each, back to back (page i at 4096 + i * 4096)
///     after them     the CRC table: u32 CRC32C of each page, in page order
///
/// A file is written whole by `PagesFileWriter` and fsync'd before its checkpoint commits.
public enum PagesFile {
    public static let magic: [UInt8] = Array("LGCKPAGE".utf8)
    public static let version: UInt16 = 2
    public static let headerSize = 4096

    public enum FormatError: Error, Equatable, CustomStringConvertible {
        case shortFile(String)
        case badMagic(String)
        case unsupportedVersion(String, UInt16)
        case headerChecksum(String)
        case tableChecksum(String)
        case pageChecksum(String, page: Int)
        case truncated(String, pages: Int, bytes: Int)
        case pastEnd(String, first: Int, count: Int, pages: Int)

        public var description: String {
            switch self {
            case .shortFile(let p): return "\(p) is shorter than a pages-file header"
            case .badMagic(let p): return "\(p) is not a Legato pages file (bad magic)"
            case .unsupportedVersion(let p, let v): return "\(p) has pages-file version \(v); this build reads version \(PagesFile.version)"
            case .headerChecksum(let p): return "\(p): header checksum mismatch"
            case .tableChecksum(let p): return "\(p): page checksum table does not match its checksum"
            case .pageChecksum(let p, let page): return "\(p): page \(page) does not match its checksum (the file is corrupt)"
            case .truncated(let p, let pages, let bytes): return "\(p) holds \(bytes) bytes, too few for its \(pages) pages and their checksums"
            case .pastEnd(let p, let first, let count, let pages): return "pages \(first)..<\(first + count) are past the \(pages) pages of \(p)"
            }
        }
    }

    static func header(epoch: UInt64, pages: UInt64, tableCRC: UInt32) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: headerSize)
        for (i, b) in magic.enumerated() { h[i] = b }
        LittleEndian.put(&h, 8, version)
        LittleEndian.put(&h, 10, UInt16(headerSize))
        LittleEndian.put(&h, 16, epoch)
        LittleEndian.put(&h, 24, pages)
        LittleEndian.put(&h, 32, tableCRC)
        let crc = h.withUnsafeBytes { Sys.crc32c(0, UnsafeRawBufferPointer(rebasing: $0[0..<headerSize - 4])) }
        LittleEndian.put(&h, headerSize - 4, crc)
        return h
    }
}

/// Writes a pages file front to back: pages as they come, then the CRC table and the header.
public final class PagesFileWriter {
    public let path: String
    public let epoch: UInt64
    private let fd: Int32
    private var crcs: [UInt32] = []
    private var finished = false

    public init(path: String, epoch: UInt64) throws {
        self.path = path
        self.epoch = epoch
        fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        if fd < 0 { throw SystemError.fromErrno("create \(path)") }
        // The header goes in last (it holds the table's checksum); a crash before leaves none.
        if ftruncate(fd, off_t(PagesFile.headerSize)) != 0 {
            let e = SystemError.fromErrno("extend \(path)")
            close(fd)
            throw e
        }
    }

    deinit { close(fd) }

    public var pages: Int { crcs.count }

    /// Appends `count` pages from `data`.
    public func append(_ data: UnsafeRawPointer, count: Int) throws {
        for k in 0..<count {
            crcs.append(Sys.crc32c(0, UnsafeRawBufferPointer(start: data + k * Page.size, count: Page.size)))
        }
        try writeAll(data, count * Page.size, at: PagesFile.headerSize + (crcs.count - count) * Page.size)
    }

    /// The CRC table, then the header; fsync'd. The file is complete once this returns.
    public func finish() throws {
        precondition(!finished, "a pages file is finished once")
        finished = true
        let table = crcs.flatMap(LittleEndian.bytes)
        let tableCRC = table.withUnsafeBytes { Sys.crc32c(0, $0) }
        try table.withUnsafeBytes { try writeAll($0.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, $0.count,
                                                 at: PagesFile.headerSize + crcs.count * Page.size) }
        let header = PagesFile.header(epoch: epoch, pages: UInt64(crcs.count), tableCRC: tableCRC)
        try header.withUnsafeBytes { try writeAll($0.baseAddress!, $0.count, at: 0) }
        if fsync(fd) != 0 { throw SystemError.fromErrno("fsync \(path)") }
    }

    private func writeAll(_ p: UnsafeRawPointer, _ count: Int, at offset: Int) throws {
        try Sys.pwriteFully(fd, p, count: count, at: offset, "write \(path)")
    }
}

/// Reads a pages file, checking its header and CRC table when opened and each page as it is read.
public final class PagesFileReader {
    public let path: String
    public let epoch: UInt64
    public let pages: Int
    /// Open for reading; pages lie at `PagesFile.headerSize + page * 4096` (for read-ahead).
    public let fd: Int32
    private let crcs: [UInt32]

    public init(path: String) throws {
        self.path = path
        fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw SystemError.fromErrno("open \(path)") }
        do {
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw SystemError.fromErrno("stat \(path)") }
            let size = Int(st.st_size)
            guard size >= PagesFile.headerSize else { throw PagesFile.FormatError.shortFile(path) }
            var h = [UInt8](repeating: 0, count: PagesFile.headerSize)
            try Self.readAll(fd, &h, at: 0, path: path)
            guard Array(h[0..<8]) == PagesFile.magic else { throw PagesFile.FormatError.badMagic(path) }
            let v = LittleEndian.get(h, 8, as: UInt16.self)
            guard v == PagesFile.version else { throw PagesFile.FormatError.unsupportedVersion(path, v) }
            let crc = h.withUnsafeBytes { Sys.crc32c(0, UnsafeRawBufferPointer(rebasing: $0[0..<PagesFile.headerSize - 4])) }
            guard crc == LittleEndian.get(h, PagesFile.headerSize - 4, as: UInt32.self) else { throw PagesFile.FormatError.headerChecksum(path) }
            epoch = LittleEndian.get(h, 16, as: UInt64.self)
            let count = LittleEndian.get(h, 24, as: UInt64.self)
            guard count < UInt64(Int.max / Page.size), size >= PagesFile.headerSize + Int(count) * (Page.size + 4) else {
                throw PagesFile.FormatError.truncated(path, pages: Int(clamping: count), bytes: size)
            }
            pages = Int(count)
            var table = [UInt8](repeating: 0, count: pages * 4)
            try Self.readAll(fd, &table, at: PagesFile.headerSize + pages * Page.size, path: path)
            guard table.withUnsafeBytes({ Sys.crc32c(0, $0) }) == LittleEndian.get(h, 32, as: UInt32.self) else {
                throw PagesFile.FormatError.tableChecksum(path)
            }
            crcs = (0..<pages).map { LittleEndian.get(table, $0 * 4, as: UInt32.self) }
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }

    /// Copies pages [first, first + count) to `dst`, each checked against its CRC.
    public func read(first: Int, count: Int, into dst: UnsafeMutableRawPointer) throws {
        guard first >= 0, count >= 0, first + count <= pages else {
            throw PagesFile.FormatError.pastEnd(path, first: first, count: count, pages: pages)
        }
        try Sys.preadFully(fd, dst, count: count * Page.size, at: PagesFile.headerSize + first * Page.size,
                           "read \(count) pages at page \(first) of \(path)")
        for k in 0..<count where Sys.crc32c(0, UnsafeRawBufferPointer(start: dst + k * Page.size, count: Page.size)) != crcs[first + k] {
            throw PagesFile.FormatError.pageChecksum(path, page: first + k)
        }
    }

    private static func readAll(_ fd: Int32, _ b: inout [UInt8], at offset: Int, path: String) throws {
        let count = b.count
        do {
            try b.withUnsafeMutableBytes { try Sys.preadFully(fd, $0.baseAddress!, count: count, at: offset, "read \(path)") }
        } catch let e as SystemError where e.code == EIO {
            throw PagesFile.FormatError.truncated(path, pages: 0, bytes: offset)
        }
    }
}
