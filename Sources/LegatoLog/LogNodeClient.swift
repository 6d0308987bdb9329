import LegatoCore
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

    public static func encodeAppend(writer: UInt64, segment: UInt64, first: UInt32, entries: ArraySlice<ReplicaStore.Entry>) -> [UInt8] {
        var w = WireWriter(capacity: 28 + entries.reduce(0) { $0 + 21 + $1.payload.count })
        w.u64(writer)
        w.u64(segment)
        w.u32(first)
        w.u32(UInt32(entries.count))
        for e in entries {
            w.u8(e.type)
            w.u32(e.epoch)
            w.u64(e.slab)
            w.blob(e.payload)
        }
        return w.bytes
    }

    /// Sends an append without waiting (see `finishAppend`).
    public func startAppend(writer: UInt64, segment: UInt64, first: UInt32, entries: ArraySlice<ReplicaStore.Entry>) throws -> UInt32 {
        try rpc.send(.appendEntries, Self.encodeAppend(writer: writer, segment: segment, first: first, entries: entries))
    }

    /// Sends an append already encoded with `encodeAppend` (one encoding for every replica).
    public func startAppend(encoded: [UInt8]) throws -> UInt32 { try rpc.send(.appendEntries, encoded) }

    /// The replica's entry count after the append.
    public func finishAppend(_ id: UInt32) throws -> UInt32 {
        var r = WireReader(try rpc.receive(.appendEntries, id: id))
        return try r.u32("entries")
    }

    public func append(writer: UInt64, segment: UInt64, first: UInt32, entries: ArraySlice<ReplicaStore.Entry>) throws -> UInt32 {
        try finishAppend(try startAppend(writer: writer, segment: segment, first: first, entries: entries))
    }

    public func sync(writer: UInt64, segment: UInt64) throws { try simple(.syncReplica, writer, segment) }
    public func close(writer: UInt64, segment: UInt64) throws { try simple(.closeReplica, writer, segment) }
    public func free(writer: UInt64, segment: UInt64) throws { try simple(.freeReplica, writer, segment) }

    public func startSync(writer: UInt64, segment: UInt64) throws -> UInt32 {
        var w = WireWriter()
        key(&w, writer, segment)
        return try rpc.send(.syncReplica, w.bytes)
    }

    public func finishSync(_ id: UInt32) throws { _ = try rpc.receive(.syncReplica, id: id) }

    private func simple(_ op: Opcode, _ writer: UInt64, _ segment: UInt64) throws {
        var w = WireWriter()
        key(&w, writer, segment)
        _ = try rpc.call(op, w.bytes)
    }

    public func list(writer: UInt64) throws -> [ReplicaStore.ReplicaInfo] {
        var w = WireWriter()
        w.u64(writer)
        var r = WireReader(try rpc.call(.listReplicas, w.bytes))
        let n = try r.count(itemSize: 25, limit: 1 << 24, "replicas")
        return try (0..<n).map { _ in
            ReplicaStore.ReplicaInfo(segment: try r.u64(), entries: try r.u32(), bytes: try r.u64(), closed: try r.u8() == 1, corrupt: try r.u32())
        }
    }

    /// One page of a replica's entries from index `first` (only those of `slabs`, if any).
    public func read(writer: UInt64, segment: UInt64, first: UInt32, maxEntries: UInt32 = 65536, maxBytes: UInt32 = 8 << 20,
                     slabs: [UInt64] = []) throws -> (entries: [(UInt32, ReplicaStore.Entry)], next: UInt32, end: Bool, closed: Bool, corrupt: UInt32) {
        var w = WireWriter()
        key(&w, writer, segment)
        w.u32(first)
        w.u32(maxEntries)
        w.u32(maxBytes)
        w.u32(UInt32(slabs.count))
        for s in slabs { w.u64(s) }
        var r = WireReader(try rpc.call(.readReplica, w.bytes))
        let n = try r.count(itemSize: 21, limit: 1 << 20, "entries")
        var out: [(UInt32, ReplicaStore.Entry)] = []
        out.reserveCapacity(n)
        for _ in 0..<n {
            let index = try r.u32("index"), type = try r.u8("type"), epoch = try r.u32("epoch"), slab = try r.u64("slab")
            out.append((index, .init(type: type, epoch: epoch, slab: slab, payload: try r.blob(limit: SegmentFormat.maxPayload, "payload"))))
        }
        return (out, try r.u32("next"), try r.u8("end") == 1, try r.u8("closed") == 1, try r.u32("corrupt"))
    }

    /// Every entry of a replica (paging through it).
    public func readAll(writer: UInt64, segment: UInt64, slabs: [UInt64] = []) throws -> (entries: [(UInt32, ReplicaStore.Entry)], closed: Bool, corrupt: UInt32) {
        var all: [(UInt32, ReplicaStore.Entry)] = []
        var next: UInt32 = 0
        var corrupt: UInt32 = 0
        while true {
            let page = try read(writer: writer, segment: segment, first: next, slabs: slabs)
            all += page.entries
            corrupt += page.corrupt
            next = page.next
            if page.end { return (all, page.closed, corrupt) }
        }
    }
}
