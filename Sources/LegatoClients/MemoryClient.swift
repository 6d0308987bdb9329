import Glibc
import LegatoCore
import LegatoSystem
import LegatoWire

/// The caller's side of a memory node (messages in Messages/MemoryMessages.swift). One per thread.
public final class MemoryClient {
    public let rpc: RPCClient
    public var endpoint: Endpoint { rpc.endpoint }

    /// `ioTimeoutSeconds`: how long a request may wait for its answer (a recovery takes longer).
    public init(endpoint: Endpoint, secret: ClusterSecret, token: [UInt8], ioTimeoutSeconds: Double = 60) throws {
        rpc = try RPCClient(endpoint: endpoint, secret: secret, token: token, ioTimeoutSeconds: ioTimeoutSeconds)
    }

    public func close() { rpc.close() }

    public typealias PageVersion = LegatoClients.PageVersion

    /// `ephemeral`: the node drops the space once the last connection with this client's token has
    /// closed (an agent that dies leaves nothing behind; a checkpointable run's space outlives it).
    /// Creates (or opens again) an address space; returns the node's write-back log for it (0: none).
    @discardableResult
    public func createSpace(_ space: UInt64, ephemeral: Bool = false) throws -> UInt64 {
        try rpc.call(CreateSpace(space: space, ephemeral: ephemeral)).logWriter
    }

    /// Rebuilds here the pages of `runs` a dead node held (see RecoverSpace); returns how many.
    public func recover(_ request: RecoverSpace) throws -> RecoveredSpace { try rpc.call(request) }
    public func awaitRecoveryLogged(space: UInt64, deadLog: UInt64) throws { _ = try rpc.call(AwaitRecoveryLogged(space: space, deadLog: deadLog)) }

    public func dropSpace(_ space: UInt64) throws { _ = try rpc.call(DropSpace(space: space)) }

    /// Sends a STORE_PAGES request without waiting for its answer (see `finishStore`); the keys and
    /// pages go out from where they lie.
    public func startStore(space: UInt64, flags: StorePages.Flags = [], vpns: UnsafeBufferPointer<UInt64>, pages: UnsafeRawPointer) throws -> UInt32 {
        try StorePages.head(space: space, flags: flags, count: vpns.count).withUnsafeBytes { head in
            try rpc.send(.storePages, parts: [head, UnsafeRawBufferPointer(vpns), UnsafeRawBufferPointer(start: pages, count: vpns.count * Page.size)])
        }
    }

    public func finishStore(_ id: UInt32) throws { _ = try rpc.receive(StorePages.self, id: id) }

    public func store(space: UInt64, flags: StorePages.Flags = [], vpns: UnsafeBufferPointer<UInt64>, pages: UnsafeRawPointer) throws {
        try finishStore(try startStore(space: space, flags: flags, vpns: vpns, pages: pages))
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
        try PageFetch.head(space: space, version: version, count: vpns.count).withUnsafeBytes { head in
            try rpc.send(version.opcode, parts: [head, UnsafeRawBufferPointer(vpns)])
        }
    }

    /// Receives the answer to `startFetch` for `count` pages (see `fetch`) straight into `out`.
    public func finishFetch(_ id: UInt32, count n: Int, present: UnsafeMutablePointer<UInt8>, out: UnsafeMutableRawPointer,
                            version: PageVersion = .current) throws -> Int {
        let header = try rpc.receiveHeader(version.opcode, id: id)
        try FetchedPages.checkLength(Int(header.length), asked: n)
        try rpc.connection.receivePayload(into: present, count: n)
        let found = try FetchedPages.check(length: Int(header.length), asked: n, present: UnsafeBufferPointer(start: present, count: n))
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
        try rpc.call(DiscardPages(space: space, runs: ranges.map { PageRun(first: $0.vpn, count: $0.count) })).value
    }

    /// Freezes the space: until `release`, FETCH_FROZEN returns each page as it is now, whatever
    /// is stored or discarded meanwhile (a checkpoint reads its pages while the program runs on).
    public func freeze(space: UInt64) throws { _ = try rpc.call(FreezeSpace(space: space)) }

    /// Ends a freeze; returns how many old versions it had kept.
    @discardableResult
    public func release(space: UInt64) throws -> UInt64 { try rpc.call(ReleaseSpace(space: space)).value }

    /// Ends a freeze whose checkpoint `epoch` committed: the space retains that checkpoint's
    /// versions (fetchable with `.checkpoint(epoch)`) until the next commit. Returns how many
    /// versions of the checkpoint it retained before were released.
    @discardableResult
    public func commit(space: UInt64, epoch: UInt32) throws -> UInt64 {
        try rpc.call(CommitSpace(space: space, epoch: epoch)).value
    }

    /// The checkpoint a space retains (0: none), whether it is frozen, and how many pages it holds.
    public func describe(space: UInt64) throws -> (retainedEpoch: UInt32, frozen: Bool, pages: UInt64) {
        let d = try rpc.call(DescribeSpace(space: space))
        return (d.retainedEpoch, d.frozen, d.pages)
    }

    /// Asks the node to persist the frozen versions of `runs` (address, vpns) of `space` into log
    /// `writer` as entries of `epoch` (its PREPARE in a checkpoint); see `finishPrepare`.
    public func startPrepare(space: UInt64, epoch: UInt32, writer: UInt64, runs: [(address: UInt64, vpns: [UInt64])]) throws -> UInt32 {
        try rpc.send(PrepareSpace(space: space, epoch: epoch, writer: writer, runs: runs.map { .init(address: $0.address, vpns: $0.vpns) }))
    }

    /// The pages the node persisted (PREPARED), or the error it answered.
    public func finishPrepare(_ id: UInt32) throws -> UInt64 { try rpc.receive(PrepareSpace.self, id: id).value }
}
