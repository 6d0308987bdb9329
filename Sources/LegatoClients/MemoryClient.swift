import Glibc
import LegatoCore
import LegatoSystem
import LegatoWire

/// The caller's side of a memory node (see MemoryService for layouts). One per thread.
public final class MemoryClient {
    public let rpc: RPCClient
    public var endpoint: Endpoint { rpc.endpoint }

    public init(endpoint: Endpoint, secret: ClusterSecret, token: [UInt8]) throws {
        rpc = try RPCClient(endpoint: endpoint, secret: secret, token: token)
    }

    public func close() { rpc.close() }

    /// `ephemeral`: the node drops the space once the last connection with this client's token has
    /// closed (an agent that dies leaves nothing behind; a checkpointable run's space outlives it).
    public func createSpace(_ space: UInt64, ephemeral: Bool = false) throws {
        var w = WireWriter()
        w.u64(space)
        if ephemeral { w.u8(1) }
        _ = try rpc.call(.createSpace, w.bytes)
    }

    public func dropSpace(_ space: UInt64) throws {
        var w = WireWriter()
        w.u64(space)
        _ = try rpc.call(.dropSpace, w.bytes)
    }

    /// Sends a STORE_PAGES request without waiting for its answer (see `finishStore`).
    public func startStore(space: UInt64, epoch: UInt32, vpns: UnsafeBufferPointer<UInt64>, pages: UnsafeRawPointer) throws -> UInt32 {
        var w = WireWriter(capacity: 16)
        w.u64(space)
        w.u32(epoch)
        w.u32(UInt32(vpns.count))
        return try w.bytes.withUnsafeBytes { head in
            try rpc.send(.storePages, parts: [head, UnsafeRawBufferPointer(vpns), UnsafeRawBufferPointer(start: pages, count: vpns.count * Page.size)])
        }
    }

    public func finishStore(_ id: UInt32) throws { _ = try rpc.receive(.storePages, id: id) }

    public func store(space: UInt64, epoch: UInt32, vpns: UnsafeBufferPointer<UInt64>, pages: UnsafeRawPointer) throws {
        try finishStore(try startStore(space: space, epoch: epoch, vpns: vpns, pages: pages))
    }

    /// Which version of its pages a fetch asks for.
    public enum PageVersion: Equatable, Sendable {
        case current                // FETCH_PAGES
        case frozen                 // FETCH_FROZEN: as the pages were when the space was frozen
        case checkpoint(UInt32)     // FETCH_CHECKPOINTED: as they were at this retained checkpoint

        var opcode: Opcode {
            switch self {
            case .current: return .fetchPages
            case .frozen: return .fetchFrozen
            case .checkpoint: return .fetchCheckpointed
            }
        }
    }

    /// Fetches pages into `out` (page i at out + i*4096, present pages only are written there);
    /// `present[i]` tells which exist. Returns the number found.
    public func fetch(space: UInt64, vpns: UnsafeBufferPointer<UInt64>, present: UnsafeMutablePointer<UInt8>,
                      out: UnsafeMutableRawPointer, version: PageVersion = .current) throws -> Int {
        let id = try startFetch(space: space, vpns: vpns, version: version)
        return try finishFetch(id, count: vpns.count, present: present, out: out, version: version)
    }

    /// Sends a fetch request without waiting; requests on one client are answered in order.
    public func startFetch(space: UInt64, vpns: UnsafeBufferPointer<UInt64>, version: PageVersion = .current) throws -> UInt32 {
        var w = WireWriter(capacity: 16)
        w.u64(space)
        if case .checkpoint(let e) = version { w.u32(e) }
        w.u32(UInt32(vpns.count))
        return try w.bytes.withUnsafeBytes { head in
            try rpc.send(version.opcode, parts: [head, UnsafeRawBufferPointer(vpns)])
        }
    }

    /// Receives the answer to `startFetch` for `count` pages (see `fetch`).
    public func finishFetch(_ id: UInt32, count n: Int, present: UnsafeMutablePointer<UInt8>, out: UnsafeMutableRawPointer,
                            version: PageVersion = .current) throws -> Int {
        let header = try rpc.receiveHeader(version.opcode, id: id)
        guard Int(header.length) >= n, (Int(header.length) - n) % Page.size == 0 else {
            throw WireError.malformed("FETCH_PAGES reply of \(header.length) bytes for \(n) pages")
        }
        try rpc.connection.receivePayload(into: present, count: n)
        var found = 0
        for i in 0..<n { if present[i] > 1 { throw WireError.malformed("presence byte \(present[i])") } else { found += Int(present[i]) } }
        guard found * Page.size == Int(header.length) - n else {
            throw WireError.malformed("FETCH_PAGES reply holds \((Int(header.length) - n) / Page.size) pages, presence says \(found)")
        }
        try rpc.connection.receivePayload(into: out, count: found * Page.size)
        // Spread present pages to their slots (page i at out + i*4096), back to front.
        if found < n {
            var src = found - 1
            for i in stride(from: n - 1, through: 0, by: -1) where present[i] == 1 {
                if src != i { memmove(out + i * Page.size, out + src * Page.size, Page.size) }
                src -= 1
            }
        }
        return found
    }

    public func discard(space: UInt64, ranges: [(vpn: UInt64, count: UInt64)]) throws -> UInt64 {
        var w = WireWriter(capacity: 12 + ranges.count * 16)
        w.u64(space)
        w.u32(UInt32(ranges.count))
        for r in ranges {
            w.u64(r.vpn)
            w.u64(r.count)
        }
        var r = WireReader(try rpc.call(.discardPages, w.bytes))
        return try r.u64("discarded")
    }

    /// Freezes the space: until `release`, FETCH_FROZEN returns each page as it is now, whatever
    /// is stored or discarded meanwhile (a checkpoint reads its pages while the program runs on).
    public func freeze(space: UInt64) throws {
        var w = WireWriter()
        w.u64(space)
        _ = try rpc.call(.freezeSpace, w.bytes)
    }

    /// Ends a freeze; returns how many old versions it had kept.
    @discardableResult
    public func release(space: UInt64) throws -> UInt64 {
        var w = WireWriter()
        w.u64(space)
        var r = WireReader(try rpc.call(.releaseSpace, w.bytes))
        return try r.u64("released")
    }

    /// Ends a freeze whose checkpoint `epoch` committed: the space retains that checkpoint's
    /// versions (fetchable with `.checkpoint(epoch)`) until the next commit. Returns how many
    /// versions of the checkpoint it retained before were released.
    @discardableResult
    public func commit(space: UInt64, epoch: UInt32) throws -> UInt64 {
        var w = WireWriter()
        w.u64(space)
        w.u32(epoch)
        var r = WireReader(try rpc.call(.commitSpace, w.bytes))
        return try r.u64("released")
    }

    /// The checkpoint a space retains (0: none), whether it is frozen, and how many pages it holds.
    public func describe(space: UInt64) throws -> (retainedEpoch: UInt32, frozen: Bool, pages: UInt64) {
        var w = WireWriter()
        w.u64(space)
        var r = WireReader(try rpc.call(.describeSpace, w.bytes))
        let e = try r.u32("retained epoch"), f = try r.u8("frozen"), n = try r.u64("pages")
        try r.expectEnd("DESCRIBE_SPACE reply")
        return (e, f != 0, n)
    }

    /// Asks the node to persist the frozen versions of `runs` (address, vpns) of `space` into log
    /// `writer` as entries of `epoch` (its PREPARE in a checkpoint); see `finishPrepare`.
    public func startPrepare(space: UInt64, epoch: UInt32, writer: UInt64, runs: [(address: UInt64, vpns: [UInt64])]) throws -> UInt32 {
        var w = WireWriter(capacity: 32 + runs.reduce(0) { $0 + 12 + $1.vpns.count * 8 })
        w.u64(space)
        w.u32(epoch)
        w.u64(writer)
        w.u32(UInt32(runs.count))
        for r in runs {
            w.u64(r.address)
            w.u32(UInt32(r.vpns.count))
        }
        for r in runs { for v in r.vpns { w.u64(v) } }
        return try rpc.send(.prepareSpace, w.bytes)
    }

    /// The pages the node persisted (PREPARED), or the error it answered.
    public func finishPrepare(_ id: UInt32) throws -> UInt64 {
        var r = WireReader(try rpc.receive(.prepareSpace, id: id))
        return try r.u64("pages persisted")
    }
}
