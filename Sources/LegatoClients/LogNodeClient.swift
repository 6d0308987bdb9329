import LegatoCore
import LegatoSegmentLog
import LegatoSystem
import LegatoWire

/// The caller's side of one log node (messages in Messages/LogNodeMessages.swift). One per thread.
public final class LogNodeClient {
    public let rpc: RPCClient
    public var endpoint: Endpoint { rpc.endpoint }

    public init(endpoint: Endpoint, secret: ClusterSecret, token: [UInt8]) throws {
        rpc = try RPCClient(endpoint: endpoint, secret: secret, token: token, ioTimeoutSeconds: 30)
    }

    public func close() { rpc.close() }

    public func open(writer: UInt64, segment: UInt64) throws {
        _ = try rpc.call(OpenReplica(key: ReplicaKey(writer: writer, segment: segment)))
    }

    /// An APPEND_ENTRIES request: the entries in their on-disk form, index and CRC included, so a log
    /// node checks them and stores them as they arrive.
    public static func encodeAppend(writer: UInt64, segment: UInt64, first: UInt32, entries: ArraySlice<LogEntry>) -> [UInt8] {
        AppendEntries.encode(key: ReplicaKey(writer: writer, segment: segment), first: first, entries: entries)
    }

    /// Sends an append without waiting (see `finishAppend`).
    public func startAppend(writer: UInt64, segment: UInt64, first: UInt32, entries: ArraySlice<LogEntry>) throws -> UInt32 {
        try startAppend(encoded: Self.encodeAppend(writer: writer, segment: segment, first: first, entries: entries))
    }

    /// Sends an append already encoded with `encodeAppend` (one encoding for every replica).
    public func startAppend(encoded: [UInt8]) throws -> UInt32 { try rpc.send(.appendEntries, encoded) }

    /// The replica's entry count after the append.
    public func finishAppend(_ id: UInt32) throws -> UInt32 { try rpc.receive(AppendEntries.self, id: id).entries }

    public func append(writer: UInt64, segment: UInt64, first: UInt32, entries: ArraySlice<LogEntry>) throws -> UInt32 {
        try finishAppend(try startAppend(writer: writer, segment: segment, first: first, entries: entries))
    }

    public func sync(writer: UInt64, segment: UInt64) throws { _ = try rpc.call(SyncReplica(key: .init(writer: writer, segment: segment))) }
    public func close(writer: UInt64, segment: UInt64) throws { _ = try rpc.call(CloseReplica(key: .init(writer: writer, segment: segment))) }
    public func free(writer: UInt64, segment: UInt64) throws { _ = try rpc.call(FreeReplica(key: .init(writer: writer, segment: segment))) }

    public func startSync(writer: UInt64, segment: UInt64) throws -> UInt32 {
        try rpc.send(SyncReplica(key: .init(writer: writer, segment: segment)))
    }
    public func finishSync(_ id: UInt32) throws { _ = try rpc.receive(SyncReplica.self, id: id) }

    /// A replica request sent without waiting (see `finish`): a writer asks all its replicas at once.
    public func start<R: ReplicaRequest>(_ request: R) throws -> UInt32 { try rpc.send(request) }
    public func finish<R: ReplicaRequest>(_ type: R.Type, _ id: UInt32) throws { _ = try rpc.receive(type, id: id) }

    public func list(writer: UInt64) throws -> [ReplicaInfo] { try rpc.call(ListReplicas(writer: writer)).replicas }

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
        try rpc.send(ReadReplica(key: ReplicaKey(writer: writer, segment: segment), first: first, maxEntries: maxEntries,
                                 maxBytes: maxBytes, slabs: slabs, readAhead: readAhead))
    }

    public func finishReadPage(_ id: UInt32, _ body: (EntryVisit) throws -> Void) throws -> PageInfo {
        let header = try rpc.receiveHeader(.readReplica, id: id)
        let length = Int(header.length)
        guard length >= ReplicaPage.Head.size else { throw WireError.truncated("READ_REPLICA reply of \(length) bytes") }
        receiveBuffer.reserve(length)
        try rpc.connection.receivePayload(into: receiveBuffer.base, count: length)
        let raw = receiveBuffer.bytes(length)
        let head = try ReplicaPage.Head(raw)
        let info = PageInfo(next: head.next, end: head.end, closed: head.closed, corrupt: head.corrupt)
        do {
            try SegmentFormat.forEachEntry(in: UnsafeRawBufferPointer(rebasing: raw[ReplicaPage.Head.size...]), count: head.count) { h, payload in
                try body(EntryVisit(index: h.index, type: h.type, epoch: h.epoch, slab: h.slab, payload: payload))
            }
        } catch let e as SegmentFormat.FormatError {
            throw WireError.malformed("READ_REPLICA reply from \(endpoint): \(e)")
        }
        return info
    }

    private let receiveBuffer = ScratchBuffer.take(capacity: 1 << 20)
    deinit { ScratchBuffer.recycle(receiveBuffer) }

    /// The size of a page `forEachEntry` asks for. The node reads the next page ahead while this one
    /// travels; a larger page only costs memory to zero: each session's buffers are new.
    static let pageBytes = 2 << 20

    /// Every entry of a replica, paging through it, each visited in place (see `readPage`). `readAhead`
    /// names the segment this client will read next from this node, for the node to read it ahead.
    @discardableResult
    public func forEachEntry(writer: UInt64, segment: UInt64, slabs: [UInt64] = [], readAhead: UInt64? = nil,
                             _ body: (EntryVisit) throws -> Void) throws -> (closed: Bool, corrupt: UInt32) {
        var next: UInt32 = 0
        var corrupt: UInt32 = 0
        while true {
            let page = try readPage(writer: writer, segment: segment, first: next, maxBytes: UInt32(Self.pageBytes), slabs: slabs, readAhead: readAhead, body)
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
