/// One entry of a replicated log as a writer hands it over and a reader gets it back: its type,
/// the checkpoint epoch and slab it belongs to, and its payload. On the wire and on disk it is a
/// `SegmentFormat` entry header (with its index in the segment and a CRC32C) followed by the payload.
public struct LogEntry: Equatable {
    public var type: UInt8
    public var epoch: UInt32
    public var slab: UInt64
    public var payload: [UInt8]

    public init(type: UInt8 = SegmentFormat.EntryType.data.rawValue, epoch: UInt32, slab: UInt64, payload: [UInt8]) {
        self.type = type
        self.epoch = epoch
        self.slab = slab
        self.payload = payload
    }

    /// Entries in their on-disk form (header with index first+i and CRC, then payload), back to back:
    /// what APPEND_ENTRIES carries and what a replica keeps.
    public static func encode(_ entries: ArraySlice<LogEntry>, first: UInt32) -> [UInt8] {
        let size = encodedSize(entries)
        return [UInt8](unsafeUninitializedCapacity: size) { buf, count in
            encode(entries, first: first, into: UnsafeMutableRawPointer(buf.baseAddress!))
            count = size
        }
    }

    public static func encodedSize(_ entries: ArraySlice<LogEntry>) -> Int {
        entries.reduce(0) { $0 + SegmentFormat.entryHeaderSize + $1.payload.count }
    }

    /// `encode` into memory with room for `encodedSize(entries)` bytes.
    public static func encode(_ entries: ArraySlice<LogEntry>, first: UInt32, into p: UnsafeMutableRawPointer) {
        var at = 0
        for (i, e) in entries.enumerated() {
            e.payload.withUnsafeBytes { payload in
                SegmentFormat.writeEntryHeader(at: p + at, type: e.type, flags: 0, epoch: e.epoch, slab: e.slab,
                                               index: first + UInt32(i), payload: payload)
                if payload.count > 0 { (p + at + SegmentFormat.entryHeaderSize).copyMemory(from: payload.baseAddress!, byteCount: payload.count) }
            }
            at += SegmentFormat.entryHeaderSize + e.payload.count
        }
    }
}

/// A replica's name: the log (writer) and the segment of it.
public struct ReplicaKey: Hashable, Sendable, CustomStringConvertible {
    public let writer: UInt64
    public let segment: UInt64
    public init(writer: UInt64, segment: UInt64) {
        self.writer = writer
        self.segment = segment
    }
    public var description: String { "writer \(String(writer, radix: 16)) segment \(segment)" }
}

/// What a log node says of one replica it holds (LIST_REPLICAS).
public struct ReplicaInfo: Equatable {
    public var segment: UInt64
    public var entries: UInt32
    public var bytes: UInt64
    public var closed: Bool
    public var corrupt: UInt32

    public init(segment: UInt64, entries: UInt32, bytes: UInt64, closed: Bool, corrupt: UInt32) {
        self.segment = segment
        self.entries = entries
        self.bytes = bytes
        self.closed = closed
        self.corrupt = corrupt
    }
}
