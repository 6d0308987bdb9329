import LegatoSegmentLog
import LegatoWire

// The log node's requests (Docs/wire-protocol.md, "Log node"). Mutations need the token that opened
// the replica; reads are open to every authenticated peer (recovery reads a dead writer's log).

extension ReplicaKey {
    func encode(to w: inout WireWriter) {
        w.u64(writer)
        w.u64(segment)
    }
    init(from r: inout WireReader) throws { self.init(writer: try r.u64("writer"), segment: try r.u64("segment")) }
}

/// The requests that name only a replica: OPEN_REPLICA, SYNC_REPLICA, CLOSE_REPLICA, FREE_REPLICA.
public protocol ReplicaRequest: WireRequest where Response == NoPayload {
    var key: ReplicaKey { get }
    init(key: ReplicaKey)
}

extension ReplicaRequest {
    public func encode(to w: inout WireWriter) { key.encode(to: &w) }
    public init(from r: inout WireReader) throws { self.init(key: try ReplicaKey(from: &r)) }
}

public struct OpenReplica: ReplicaRequest, Equatable {
    public static let opcode = Opcode.openReplica
    public var key: ReplicaKey
    public init(key: ReplicaKey) { self.key = key }
}

/// SYNC_REPLICA: answered once everything appended is on disk and fsync'd.
public struct SyncReplica: ReplicaRequest, Equatable {
    public static let opcode = Opcode.syncReplica
    public var key: ReplicaKey
    public init(key: ReplicaKey) { self.key = key }
}

/// CLOSE_REPLICA: answered once the footer is buffered.
public struct CloseReplica: ReplicaRequest, Equatable {
    public static let opcode = Opcode.closeReplica
    public var key: ReplicaKey
    public init(key: ReplicaKey) { self.key = key }
}

public struct FreeReplica: ReplicaRequest, Equatable {
    public static let opcode = Opcode.freeReplica
    public var key: ReplicaKey
    public init(key: ReplicaKey) { self.key = key }
}

/// APPEND_ENTRIES: `count` entries from index `first`, in their on-disk form (header with index and
/// CRC32C, then payload), so a log node checks them and stores them as they arrive. A writer
/// encodes an append once for all its replicas (`encode(key:first:entries:)`).
public struct AppendEntries: WireRequest, Equatable {
    public typealias Response = AppendResult
    public static let opcode = Opcode.appendEntries
    /// The bytes before the entries, which a log node reads before it decides where the rest goes.
    public static let headSize = 24

    public struct Head: Equatable {
        public var key: ReplicaKey
        public var first: UInt32
        public var count: Int
        public init(from r: inout WireReader) throws {
            key = try ReplicaKey(from: &r)
            first = try r.u32("first index")
            count = Int(try r.u32("entry count"))
            guard count <= WireLimits.maxEntriesPerRequest else { throw WireError.malformed("APPEND_ENTRIES of \(count) entries") }
        }
    }

    public var head: Head
    /// The entries as on disk (checked by the node against `head`).
    public var entries: [UInt8]

    public static func encode(key: ReplicaKey, first: UInt32, entries: ArraySlice<LogEntry>) -> [UInt8] {
        let size = headSize + LogEntry.encodedSize(entries)
        return [UInt8](unsafeUninitializedCapacity: size) { buf, count in
            let p = UnsafeMutableRawPointer(buf.baseAddress!)
            p.storeBytes(of: key.writer.littleEndian, toByteOffset: 0, as: UInt64.self)
            p.storeBytes(of: key.segment.littleEndian, toByteOffset: 8, as: UInt64.self)
            p.storeBytes(of: first.littleEndian, toByteOffset: 16, as: UInt32.self)
            p.storeBytes(of: UInt32(entries.count).littleEndian, toByteOffset: 20, as: UInt32.self)
            LogEntry.encode(entries, first: first, into: p + headSize)
            count = size
        }
    }

    public func encode(to w: inout WireWriter) {
        head.key.encode(to: &w)
        w.u32(head.first)
        w.u32(UInt32(head.count))
        w.raw(entries)
    }
    public init(from r: inout WireReader) throws {
        head = try Head(from: &r)
        entries = try r.raw(r.remaining, "entries")
    }
}

/// The replica's entry count and file size after an append.
public struct AppendResult: WireMessage, Equatable {
    public var entries: UInt32
    public var fileBytes: UInt64
    public init(entries: UInt32, fileBytes: UInt64) {
        self.entries = entries
        self.fileBytes = fileBytes
    }
    public func encode(to w: inout WireWriter) {
        w.u32(entries)
        w.u64(fileBytes)
    }
    public init(from r: inout WireReader) throws {
        entries = try r.u32("entries")
        fileBytes = try r.u64("file bytes")
    }
}

/// LIST_REPLICAS: the replicas a node holds of one log.
public struct ListReplicas: WireRequest, Equatable {
    public typealias Response = ReplicaList
    public static let opcode = Opcode.listReplicas
    public var writer: UInt64
    public init(writer: UInt64) { self.writer = writer }
    public func encode(to w: inout WireWriter) { w.u64(writer) }
    public init(from r: inout WireReader) throws { writer = try r.u64("writer") }
}

public struct ReplicaList: WireMessage, Equatable {
    public var replicas: [ReplicaInfo]
    public init(_ replicas: [ReplicaInfo]) { self.replicas = replicas }
    public func encode(to w: inout WireWriter) {
        w.u32(UInt32(replicas.count))
        for i in replicas {
            w.u64(i.segment)
            w.u32(i.entries)
            w.u64(i.bytes)
            w.u8(i.closed ? 1 : 0)
            w.u32(i.corrupt)
        }
    }
    public init(from r: inout WireReader) throws {
        let n = try r.count(itemSize: 25, limit: 1 << 24, "replicas")
        replicas = try (0..<n).map { _ in
            ReplicaInfo(segment: try r.u64("segment"), entries: try r.u32("entries"), bytes: try r.u64("payload bytes"),
                        closed: try r.bool("closed"), corrupt: try r.u32("corrupt"))
        }
    }
}

/// READ_REPLICA: up to `maxEntries` entries and about `maxBytes` from index `first`, only those of
/// `slabs` (empty: all); `readAhead` names the segment this client reads next from this node.
public struct ReadReplica: WireRequest, Equatable {
    public typealias Response = ReplicaPage
    public static let opcode = Opcode.readReplica
    public var key: ReplicaKey
    public var first: UInt32
    public var maxEntries: UInt32
    public var maxBytes: UInt32
    public var slabs: [UInt64]
    public var readAhead: UInt64?
    public init(key: ReplicaKey, first: UInt32, maxEntries: UInt32, maxBytes: UInt32, slabs: [UInt64], readAhead: UInt64?) {
        self.key = key
        self.first = first
        self.maxEntries = maxEntries
        self.maxBytes = maxBytes
        self.slabs = slabs
        self.readAhead = readAhead
    }
    public func encode(to w: inout WireWriter) {
        key.encode(to: &w)
        w.u32(first)
        w.u32(maxEntries)
        w.u32(maxBytes)
        w.u32(UInt32(slabs.count))
        for s in slabs { w.u64(s) }
        if let readAhead { w.u64(readAhead) }
    }
    public init(from r: inout WireReader) throws {
        key = try ReplicaKey(from: &r)
        first = try r.u32("first")
        maxEntries = try r.u32("max entries")
        maxBytes = try r.u32("max bytes")
        let n = try r.count(itemSize: 8, limit: 1 << 20, "slab count")
        slabs = try r.u64Array(n, "slabs")
        readAhead = r.remaining >= 8 ? try r.u64("read-ahead segment") : nil
    }
}

/// A page of a replica's entries: where to go on, whether the replica ends there, and the entries in
/// their on-disk form. The node sends `head` and then the entries from its read buffer in place; the
/// client visits them in its receive buffer.
public struct ReplicaPage: WireMessage, Equatable {
    public struct Head: Equatable {
        public static let size = 14
        public var next: UInt32
        public var end: Bool
        public var closed: Bool
        public var corrupt: UInt32
        public var count: Int
        public init(next: UInt32, end: Bool, closed: Bool, corrupt: UInt32, count: Int) {
            self.next = next
            self.end = end
            self.closed = closed
            self.corrupt = corrupt
            self.count = count
        }
        public var encoded: [UInt8] {
            var w = WireWriter(capacity: Self.size)
            w.u32(next)
            w.u8(end ? 1 : 0)
            w.u8(closed ? 1 : 0)
            w.u32(corrupt)
            w.u32(UInt32(count))
            return w.bytes
        }
        /// Reads the head from the first `size` bytes of `raw` (the caller checked there are that many).
        public init(_ raw: UnsafeRawBufferPointer) throws {
            func u32(_ o: Int) -> UInt32 { UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt32.self)) }
            guard raw[4] <= 1, raw[5] <= 1 else { throw WireError.malformed("READ_REPLICA reply flags \(raw[4]), \(raw[5])") }
            self.init(next: u32(0), end: raw[4] == 1, closed: raw[5] == 1, corrupt: u32(6), count: Int(u32(10)))
        }
    }

    public var head: Head
    public var entries: [UInt8]
    public init(head: Head, entries: [UInt8]) {
        self.head = head
        self.entries = entries
    }
    public func encode(to w: inout WireWriter) {
        w.raw(head.encoded)
        w.raw(entries)
    }
    public init(from r: inout WireReader) throws {
        let raw = try r.raw(Head.size, "READ_REPLICA reply head")
        head = try raw.withUnsafeBytes { try Head($0) }
        entries = try r.raw(r.remaining, "entries")
    }
}
