import LegatoCore
import LegatoImage
import LegatoSegmentLog

/// The payload of an entry of a memory node's write-back log (Docs/on-disk-format.md, "Write-back
/// logs"): a header, then either pages or discarded runs of keys. Every entry carries the sequence
/// number of the store or discard it logs, counted per address space on the node that wrote it:
/// a replay (whose threads read segments in parallel, so out of order) keeps the highest per key.
///
/// ```
/// u8 kind (1 pages, 2 discard), [7] zero, u64 seq, u32 n, u32 zero,
///   pages:   n × u64 key, n × [4096] page
///   discard: n × (u64 first key, u64 count)
/// ```
/// The entry's slab (in its header) is the slab of its keys (key >> 12): a recovery asks the log
/// nodes for the slabs it rebuilds only.
enum WriteBackLogEntry: Equatable {
    case pages(seq: UInt64, keys: [UInt64], data: UnsafeRawBufferPointer)
    case discard(seq: UInt64, runs: [(first: UInt64, count: UInt64)])

    static let headerSize = 24
    static let slabShift: UInt64 = 12

    static func == (a: WriteBackLogEntry, b: WriteBackLogEntry) -> Bool {
        switch (a, b) {
        case let (.pages(s1, k1, d1), .pages(s2, k2, d2)): return s1 == s2 && k1 == k2 && Array(d1) == Array(d2)
        case let (.discard(s1, r1), .discard(s2, r2)): return s1 == s2 && r1.map { $0.first } == r2.map { $0.first } && r1.map { $0.count } == r2.map { $0.count }
        default: return false
        }
    }

    /// The writer id of the write-back log of `space` on the node incarnation `incarnation`
    /// (random per process: a node that comes back is a new node, with new logs).
    static func writer(incarnation: UInt64, space: UInt64) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        withUnsafeBytes(of: (incarnation.littleEndian, space.littleEndian, UInt64(0x7772_6974_6562_6163))) { b in
            for x in b { h = (h ^ UInt64(x)) &* 0x100_0000_01b3 }
        }
        return h | 1
    }

    /// The token that owns write-back log `writer` (derived from the cluster secret, so the node
    /// recovering it and the agent cleaning it up after a recovery both know it).
    static func token(writer: UInt64, secret: ClusterSecret) -> [UInt8] {
        CheckpointLogEntry.participantToken(writer: writer, secret: secret)
    }

    private static func header(kind: UInt8, seq: UInt64, count: Int, into b: inout [UInt8]) {
        b.append(kind)
        b.append(contentsOf: [UInt8](repeating: 0, count: 7))
        le(seq, to: &b)
        le(UInt32(count), to: &b)
        le(UInt32(0), to: &b)
    }

    /// A pages entry for `keys` (all of one slab), page i at pages + i * 4096.
    static func pagesEntry<Keys: Collection<UInt64>>(seq: UInt64, keys: Keys, pages: UnsafeRawPointer) -> LogEntry {
        var b: [UInt8] = []
        b.reserveCapacity(headerSize + keys.count * (8 + Page.size))
        header(kind: 1, seq: seq, count: keys.count, into: &b)
        for k in keys { le(k, to: &b) }
        b.append(contentsOf: UnsafeRawBufferPointer(start: pages, count: keys.count * Page.size))
        return LogEntry(epoch: 0, slab: keys.first! >> slabShift, payload: b)
    }

    /// A discard entry for `runs` (filed under the first run's slab: a discard is only space to
    /// free, and a recovery that misses one frees it with the space).
    static func discardEntry(seq: UInt64, runs: [(first: UInt64, count: UInt64)]) -> LogEntry {
        var b: [UInt8] = []
        header(kind: 2, seq: seq, count: runs.count, into: &b)
        for r in runs {
            le(r.first, to: &b)
            le(r.count, to: &b)
        }
        return LogEntry(epoch: 0, slab: (runs.first?.first ?? 0) >> slabShift, payload: b)
    }

    /// Reads an entry in place (the pages point into `p`).
    static func parse(_ p: UnsafeRawBufferPointer) throws -> WriteBackLogEntry {
        guard p.count >= headerSize else { throw Malformed.entry("\(p.count) bytes, shorter than its header") }
        let kind = p[0]
        let seq = u64(p, 8)
        let n = Int(u32(p, 16))
        switch kind {
        case 1:
            guard p.count == headerSize + n * (8 + Page.size) else { throw Malformed.entry("\(n) pages in \(p.count) bytes") }
            let keys = (0..<n).map { u64(p, headerSize + 8 * $0) }
            let at = headerSize + 8 * n
            return .pages(seq: seq, keys: keys, data: UnsafeRawBufferPointer(rebasing: p[at..<at + n * Page.size]))
        case 2:
            guard p.count == headerSize + n * 16 else { throw Malformed.entry("\(n) discarded runs in \(p.count) bytes") }
            return .discard(seq: seq, runs: (0..<n).map { (u64(p, headerSize + 16 * $0), u64(p, headerSize + 16 * $0 + 8)) })
        default:
            throw Malformed.entry("kind \(kind)")
        }
    }

    private static func le<T: FixedWidthInteger>(_ v: T, to b: inout [UInt8]) {
        withUnsafeBytes(of: v.littleEndian) { b.append(contentsOf: $0) }
    }
    private static func u64(_ p: UnsafeRawBufferPointer, _ at: Int) -> UInt64 { UInt64(littleEndian: p.loadUnaligned(fromByteOffset: at, as: UInt64.self)) }
    private static func u32(_ p: UnsafeRawBufferPointer, _ at: Int) -> UInt32 { UInt32(littleEndian: p.loadUnaligned(fromByteOffset: at, as: UInt32.self)) }

    enum Malformed: Error, CustomStringConvertible {
        case entry(String)
        var description: String {
            switch self { case .entry(let why): return "malformed write-back log entry: \(why)" }
        }
    }
}
