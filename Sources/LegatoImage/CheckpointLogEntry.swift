import Foundation
import LegatoCore
import LegatoSystem

/// The payloads of checkpoint entries in a replicated log (Docs/on-disk-format.md), written by an
/// agent into its run's log and by memory nodes into their participant logs. The log entry header
/// carries the epoch; the payload starts with a kind byte.
public enum CheckpointLogEntry {
    /// Every way a checkpoint log entry can be malformed.
    public enum FormatError: Error, CustomStringConvertible, Equatable {
        case notAnIndex
        case indexSize(runs: Int, zeroRuns: Int, bytes: Int)
        case pagesSize(pages: Int, bytes: Int)
        case unknownKind(epoch: UInt64)
        case zerosSize(epoch: UInt64, runs: Int, bytes: Int)

        public var description: String {
            switch self {
            case .notAnIndex: return "not a checkpoint index entry"
            case .indexSize(let nr, let nz, let b): return "checkpoint index entry: \(nr) runs and \(nz) zero runs in \(b) bytes"
            case .pagesSize(let n, let b): return "checkpoint pages entry of \(n) pages in \(b) bytes"
            case .unknownKind(let e): return "checkpoint log entry of epoch \(e) has an unknown kind"
            case .zerosSize(let e, let n, let b): return "checkpoint log entry of epoch \(e): \(n) zero runs in \(b) bytes"
            }
        }
    }

    public enum Kind: UInt8 {
        case pages = 1     // [kind, 0, 0, 0, count u32, address u64] + count pages
        case zeros = 2     // [kind, 0, 0, 0, runs u32] + runs x [address u64, count u64]
        case context = 3   // [kind, 0 x 7] + the ProcessImage as JSON
        case index = 4     // [kind, flags, 0, 0, runs u32, zero runs u32, 0 x 4]
                           //   + runs x [address u64, pages u64, segment u64, entry u32, node u32, key u64]
                           //     (flags bit 0 clear, as written before memory nodes retained
                           //     checkpoints: runs are the first 32 bytes only, node 0)
                           //   + zero runs x [address u64, pages u64]
    }

    /// A page run named by an index entry, with where it lies in the run's own log (segment ~0 for
    /// a run in a participant log: found by reading that log). A participant run also names its
    /// memory node (an index into the commit record's "memory_nodes") and the key of its first page
    /// in the record's "space" (its pages have consecutive keys): while that node retains the
    /// checkpoint, the run can be fetched from there.
    public struct IndexedRun: Equatable {
        public var address: UInt64
        public var pages: Int
        public var segment: UInt64
        public var entry: UInt32
        public var node: UInt32
        public var key: UInt64
        public static let noNode = UInt32.max
        public init(address: UInt64, pages: Int, segment: UInt64 = .max, entry: UInt32 = 0, node: UInt32 = noNode, key: UInt64 = 0) {
            self.address = address
            self.pages = pages
            self.segment = segment
            self.entry = entry
            self.node = node
            self.key = key
        }
    }

    /// An index entry: every page run of an epoch (in the run's log or a participant log) and its
    /// zero runs, so a restore knows where each page comes from before any page arrives.
    public static func index(runs: [IndexedRun], zeros: [(UInt64, Int)]) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 16)
        b[0] = Kind.index.rawValue
        b[1] = 1  // runs with node and key
        withUnsafeBytes(of: UInt32(runs.count).littleEndian) { b.replaceSubrange(4..<8, with: $0) }
        withUnsafeBytes(of: UInt32(zeros.count).littleEndian) { b.replaceSubrange(8..<12, with: $0) }
        b.reserveCapacity(16 + runs.count * 40 + zeros.count * 16)
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { b.append(contentsOf: $0) } }
        for r in runs {
            put(r.address); put(UInt64(r.pages)); put(r.segment); put(r.entry); put(r.node); put(r.key)
        }
        for (a, n) in zeros {
            put(a); put(UInt64(n))
        }
        return b
    }

    /// The runs and zero runs of an index entry.
    public static func parseIndex(_ p: UnsafeRawBufferPointer) throws -> (runs: [IndexedRun], zeros: [(UInt64, Int)]) {
        guard p.count >= 16, p[0] == Kind.index.rawValue else { throw FormatError.notAnIndex }
        func u32(_ o: Int) -> UInt32 { UInt32(littleEndian: p.loadUnaligned(fromByteOffset: o, as: UInt32.self)) }
        func u64(_ o: Int) -> UInt64 { UInt64(littleEndian: p.loadUnaligned(fromByteOffset: o, as: UInt64.self)) }
        let nr = Int(u32(4)), nz = Int(u32(8))
        let withNodes = p[1] & 1 != 0, runBytes = withNodes ? 40 : 32
        guard p.count == 16 + nr * runBytes + nz * 16 else { throw FormatError.indexSize(runs: nr, zeroRuns: nz, bytes: p.count) }
        let runs = (0..<nr).map { i -> IndexedRun in
            let o = 16 + i * runBytes
            return IndexedRun(address: u64(o), pages: Int(u64(o + 8)), segment: u64(o + 16), entry: u32(o + 24),
                              node: withNodes ? u32(o + 28) : IndexedRun.noNode, key: withNodes ? u64(o + 32) : 0)
        }
        let zeros = (0..<nz).map { i -> (UInt64, Int) in
            let o = 16 + nr * runBytes + i * 16
            return (u64(o), Int(u64(o + 8)))
        }
        return (runs, zeros)
    }

    /// A pages entry: `count` pages from `address`, copied from `data`.
    public static func pages(address: UInt64, count: Int, data: UnsafeRawPointer) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: 16 + count * Page.size) { buf, n in
            let p = UnsafeMutableRawPointer(buf.baseAddress!)
            p.storeBytes(of: UInt32(Kind.pages.rawValue).littleEndian, toByteOffset: 0, as: UInt32.self)
            p.storeBytes(of: UInt32(count).littleEndian, toByteOffset: 4, as: UInt32.self)
            p.storeBytes(of: address.littleEndian, toByteOffset: 8, as: UInt64.self)
            (p + 16).copyMemory(from: data, byteCount: count * Page.size)
            n = 16 + count * Page.size
        }
    }

    /// A pages entry's run: its address, page count and bytes (nil for another kind; throws if its
    /// size does not match its count).
    public static func parsePages(_ p: UnsafeRawBufferPointer) throws -> (address: UInt64, count: Int, data: UnsafeRawBufferPointer)? {
        guard p.count >= 16, p[0] == Kind.pages.rawValue else { return nil }
        let n = Int(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
        guard p.count == 16 + n * Page.size else { throw FormatError.pagesSize(pages: n, bytes: p.count) }
        return (UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self)), n, UnsafeRawBufferPointer(rebasing: p[16...]))
    }

    /// A zeros entry: `runs` as [address, pages].
    public static func zeros(_ runs: ArraySlice<[UInt64]>) -> [UInt8] {
        var p = [UInt8](repeating: 0, count: 8)
        p[0] = Kind.zeros.rawValue
        withUnsafeBytes(of: UInt32(runs.count).littleEndian) { p.replaceSubrange(4..<8, with: $0) }
        p.reserveCapacity(8 + runs.count * 16)
        for r in runs {
            withUnsafeBytes(of: r[0].littleEndian) { p.append(contentsOf: $0) }
            withUnsafeBytes(of: r[1].littleEndian) { p.append(contentsOf: $0) }
        }
        return p
    }

    /// A context entry: the process image's JSON after the kind.
    public static func context(json: Data) -> [UInt8] {
        var p = [UInt8](repeating: 0, count: 8)
        p[0] = Kind.context.rawValue
        p.append(contentsOf: json)
        return p
    }

    /// The log writer id of memory node `node`'s participant log for run `name` (FNV-1a, top bit set).
    public static func participantWriter(name: String, node: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in "legato-participant:\(name):\(node)".utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h | (1 << 63)
    }

    /// The token that owns participant log `writer` (derived from the cluster secret: the memory
    /// node writing it and a restore reading it both know it).
    public static func participantToken(writer: UInt64, secret: ClusterSecret) -> [UInt8] {
        Sys.hmacSHA256(key: secret.bytes, data: Array("legato participant log \(writer)".utf8))
    }
}
