import LegatoCore
import LegatoSegmentLog
import LegatoSystem
import LegatoWire

/// The caller's side of one log node (see LogService for layouts). One per thread.
public final class LogNodeClient {
    public let rpc: RPCClient
    public var endpoint: Endpoint { rpc.endpoint }

    public init(endpoint: Endpoint, secret: ClusterSecret, token: [UInt8]) throws {
        rpc = try RPCClient(endpoint: endpoint, secret: secret, token: token, ioTimeoutSeconds: 30)
    }

    public func close() { rpc.close() }

    private func key(_ w: inout WireWriter, _ writer: UInt64, _ segment: UInt64) {
        w.u64(writer)
        w.u64(segment)
    }

    public func open(writer: UInt64, segment: UInt64) throws {
        var w = WireWriter()
        key(&w, writer, segment)
        _ = try rpc.call(.openReplica, w.bytes)
    }

    /// An APPEND_ENTRIES request: the entries in their on-disk form, index and CRC included, so a log
    /// node checks them and stores them as they arrive.
    public static func encodeAppend(writer: UInt64, segment: UInt64, first: UInt32, entries: ArraySlice<LogEntry>) -> [UInt8] {
        let size = 24 + LogEntry.encodedSize(entries)
        return [UInt8](unsafeUninitializedCapacity: size) { buf, count in
            let p = UnsafeMutableRawPointer(buf.baseAddress!)
            p.storeBytes(of: writer.littleEndian, toByteOffset: 0, as: UInt64.self)
            p.storeBytes(of: segment.littleEndian, toByteOffset: 8, as: UInt64.self)
            p.storeBytes(of: first.littleEndian, toByteOffset: 16, as: UInt32.self)
            p.storeBytes(of: UInt32(entries.count).littleEndian, toByteOffset: 20, as: UInt32.self)
            LogEntry.encode(entries, first: first, into: p + 24)
            count = size
        }
    }

    /// Sends an append without waiting (see `finishAppend`).
    public func startAppend(writer: UInt64, segment: UInt64, first: UInt32, entries: ArraySlice<LogEntry>) throws -> UInt32 {
        try rpc.send(.appendEntries, Self.encodeAppend(writer: writer, segment: segment, first: first, entries: entries))
    }

    /// Sends an append already encoded with `encodeAppend` (one encoding for every replica).
    public func startAppend(encoded: [UInt8]) throws -> UInt32 { try rpc.send(.appendEntries, encoded) }

    /// The replica's entry count after the append.
    public func finishAppend(_ id: UInt32) throws -> UInt32 {
        var r = WireReader(try rpc.receive(.appendEntries, id: id))
        return try r.u32("entries")
    }

    public func append(writer: UInt64, segment: UInt64, first: UInt32, entries: ArraySlice<LogEntry>) throws -> UInt32 {
        try finishAppend(try startAppend(writer: writer, segment: segment, first: first, entries: entries))
    }

    public func sync(writer: UInt64, segment: UInt64) throws { try simple(.syncReplica, writer, segment) }
    public func close(writer: UInt64, segment: UInt64) throws { try simple(.closeReplica, writer, segment) }
    public func free(writer: UInt64, segment: UInt64) throws { try simple(.freeReplica, writer, segment) }

    public func startSync(writer: UInt64, segment: UInt64) throws -> UInt32 { try startSimple(.syncReplica, writer, segment) }
    public func finishSync(_ id: UInt32) throws { _ = try rpc.receive(.syncReplica, id: id) }

    /// OPEN_REPLICA or CLOSE_REPLICA sent without waiting (see `finishSimple`): a writer asks all
    /// its replicas at once.
    public func startSimple(_ op: Opcode, _ writer: UInt64, _ segment: UInt64) throws -> UInt32 {
        var w = WireWriter()
        key(&w, writer, segment)
        return try rpc.send(op, w.bytes)
    }

    public func finishSimple(_ op: Opcode, _ id: UInt32) throws { _ = try rpc.receive(op, id: id) }

    private func simple(_ op: Opcode, _ writer: UInt64, _ segment: UInt64) throws {
        var w = WireWriter()
        key(&w, writer, segment)
        _ = try rpc.call(op, w.bytes)
    }

    public func list(writer: UInt64) throws -> [ReplicaInfo] {
        var w = WireWriter()
        w.u64(writer)
        var r = WireReader(try rpc.call(.listReplicas, w.bytes))
        let n = try r.count(itemSize: 25, limit: 1 << 24, "replicas")
        return try (0..<n).map { _ in
            ReplicaInfo(segment: try r.u64(), entries: try r.u32(), bytes: try r.u64(), closed: try r.u8() == 1, corrupt: try r.u32())
        }
    }

    /// An entry of a read reply; `payload` points into the client's receive buffer and is valid only
    /// during the visit.
    public struct EntryVisit {
        public var index: UInt32
        public var type: UInt8
        public var epoch: UInt32
        public var slab: UInt64
        public var payload: UnsafeRawBufferPointer
    }

    public struct PageInfo {
        public var next: UInt32
        public var end: Bool
        public var closed: Bool
        public var corrupt: UInt32
    }

    /// One page of a replica's entries from index `first` (only those of `slabs`, if any), each handed
    /// to `body` in place in the receive buffer (reused from call to call: no copy, no allocation).
    @discardableResult
    public func readPage(writer: UInt64, segment: UInt64, first: UInt32, maxEntries: UInt32 = 65536, maxBytes: UInt32 = 8 << 20,
                         slabs: [UInt64] = [], readAhead: UInt64? = nil, _ body: (EntryVisit) throws -> Void) throws -> PageInfo {
        let id = try startReadPage(writer: writer, segment: segment, first: first, maxEntries: maxEntries, maxBytes: maxBytes,
                                   slabs: slabs, readAhead: readAhead)
        return try finishReadPage(id, body)
    }

    /// Sends a READ_REPLICA without waiting; `finishReadPage` takes the answers in the order sent
    /// (several reads in flight on one connection).
    public func startReadPage(writer: UInt64, segment: UInt64, first: UInt32, maxEntries: UInt32 = 65536, maxBytes: UInt32 = 8 << 20,
                              slabs: [UInt64] = [], readAhead: UInt64? = nil) throws -> UInt32 {
        var w = WireWriter()
        key(&w, writer, segment)
        w.u32(first)
        w.u32(maxEntries)
        w.u32(maxBytes)
        w.u32(UInt32(slabs.count))
        for s in slabs { w.u64(s) }
        if let readAhead { w.u64(readAhead) }
        return try rpc.send(.readReplica, w.bytes)
    }

    public func finishReadPage(_ id: UInt32, _ body: (EntryVisit) throws -> Void) throws -> PageInfo {
        let header = try rpc.receiveHeader(.readReplica, id: id)
        let length = Int(header.length)
        guard length >= Self.pageHeaderSize else { throw WireError.truncated("READ_REPLICA reply of \(length) bytes") }
        receiveBuffer.reserve(length)
        try rpc.connection.receivePayload(into: receiveBuffer.base, count: length)
        let raw = receiveBuffer.bytes(length)
        func u32(_ o: Int) -> UInt32 { UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt32.self)) }
        let info = PageInfo(next: u32(0), end: raw[4] == 1, closed: raw[5] == 1, corrupt: u32(6))
        do {
            try SegmentFormat.forEachEntry(in: UnsafeRawBufferPointer(rebasing: raw[Self.pageHeaderSize...]), count: Int(u32(10))) { h, payload in
                try body(EntryVisit(index: h.index, type: h.type, epoch: h.epoch, slab: h.slab, payload: payload))
            }
        } catch let e as SegmentFormat.FormatError {
            throw WireError.malformed("READ_REPLICA reply from \(endpoint): \(e)")
        }
        return info
    }

    private static let pageHeaderSize = 14
    private let receiveBuffer = ScratchBuffer(capacity: 1 << 20)

    /// Every entry of a replica, paging through it, each visited in place (see `readPage`). `readAhead`
    /// names the segment this client will read next from this node, for the node to read it ahead.
    @discardableResult
    public func forEachEntry(writer: UInt64, segment: UInt64, slabs: [UInt64] = [], readAhead: UInt64? = nil,
                             _ body: (EntryVisit) throws -> Void) throws -> (closed: Bool, corrupt: UInt32) {
        var next: UInt32 = 0
        var corrupt: UInt32 = 0
        while true {
            let page = try readPage(writer: writer, segment: segment, first: next, slabs: slabs, readAhead: readAhead, body)
            corrupt += page.corrupt
            next = page.next
            if page.end { return (page.closed, corrupt) }
        }
    }

    /// One page of a replica's entries, copied out as values.
    public func read(writer: UInt64, segment: UInt64, first: UInt32, maxEntries: UInt32 = 65536, maxBytes: UInt32 = 8 << 20,
                     slabs: [UInt64] = []) throws -> (entries: [(UInt32, LogEntry)], next: UInt32, end: Bool, closed: Bool, corrupt: UInt32) {
        var out: [(UInt32, LogEntry)] = []
        let p = try readPage(writer: writer, segment: segment, first: first, maxEntries: maxEntries, maxBytes: maxBytes, slabs: slabs) {
            out.append(($0.index, .init(type: $0.type, epoch: $0.epoch, slab: $0.slab, payload: Array($0.payload))))
        }
        return (out, p.next, p.end, p.closed, p.corrupt)
    }

    /// Every entry of a replica, copied out as values.
    public func readAll(writer: UInt64, segment: UInt64, slabs: [UInt64] = []) throws -> (entries: [(UInt32, LogEntry)], closed: Bool, corrupt: UInt32) {
        var all: [(UInt32, LogEntry)] = []
        let r = try forEachEntry(writer: writer, segment: segment, slabs: slabs) {
            all.append(($0.index, .init(type: $0.type, epoch: $0.epoch, slab: $0.slab, payload: Array($0.payload))))
        }
        return (all, r.closed, r.corrupt)
    }
}
