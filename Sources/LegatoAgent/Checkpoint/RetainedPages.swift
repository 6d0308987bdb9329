import LegatoClients
import LegatoCore
import LegatoSystem
import LegatoWire

/// A restore's access to the checkpoint versions memory nodes still retain of an earlier
/// incarnation's address space (COMMIT_SPACE, FETCH_CHECKPOINTED): the runs of a participant log
/// that can come from a node's DRAM instead of the log nodes' disks.
///
/// A participant run of epoch e' (node X, space S, keys k..k+n) may be read from X's retained
/// checkpoint b of S when b is in the restored chain and b >= e': the run's pages did not change
/// between e' and b (else a later layer of the chain would hold them), so b's versions are e''s.
/// Thread-safe: faults read one run at a time on shared connections (under a lock); the bulk
/// fetch uses connections of its own.
final class RetainedPages {
    /// Where a run can be read: a node, the space, and the checkpoint the node retains of it.
    struct Source: Hashable {
        let endpoint: Endpoint
        let space: UInt64
        let retained: UInt32
    }

    /// A run to read: `pages` pages from `key` on `source`, handed to `deliver` as they arrive.
    struct Run {
        let source: Source
        let key: UInt64
        let pages: Int
        let deliver: (UnsafeRawPointer) -> Void
    }

    private let secret: ClusterSecret
    private let token: [UInt8]
    private let lock = Lock()
    private var clients: [Endpoint: MemoryClient] = [:]
    private struct SpaceAt: Hashable {
        let endpoint: Endpoint
        let space: UInt64
    }
    private var described: [SpaceAt: Source?] = [:]   // what DESCRIBE_SPACE said (nil: no source)
    private var seen: [SpaceAt] = []                  // the spaces it found
    private(set) var fetchedPages = 0

    init(secret: ClusterSecret, token: [UInt8]) {
        self.secret = secret
        self.token = token
    }

    deinit { for c in clients.values { c.close() } }

    /// The source for runs of epoch `epoch` on `endpoint` in `space`, if the node retains a
    /// checkpoint of the space that is in `chain` and not older than `epoch` (asked once per node
    /// and space; an unreachable node or a space it no longer has is no source).
    func source(endpoint: Endpoint, space: UInt64, epoch: UInt32, chain: Set<UInt32>) -> Source? {
        let at = SpaceAt(endpoint: endpoint, space: space)
        let found: Source? = lock.withLock {
            if let known = described[at] { return known }
            var s: Source?
            if let d = try? client(endpoint).describe(space: space) {
                seen.append(at)
                if d.retainedEpoch != 0 { s = Source(endpoint: endpoint, space: space, retained: d.retainedEpoch) }
            }
            described[at] = s
            return s
        }
        guard let found, chain.contains(found.retained), found.retained >= epoch else { return nil }
        return found
    }

    private func client(_ ep: Endpoint) throws -> MemoryClient {
        if let c = clients[ep] { return c }
        let c = try MemoryClient(endpoint: ep, secret: secret, token: token)
        clients[ep] = c
        return c
    }

    /// Drops every space DESCRIBE_SPACE found (the earlier incarnation's); returns how many went.
    func dropSeenSpaces() -> Int {
        lock.withLock {
            var dropped = 0
            for s in seen where (try? client(s.endpoint).dropSpace(s.space)) != nil { dropped += 1 }
            seen.removeAll()
            return dropped
        }
    }

    /// Reads one run now (a fault waiting for it).
    func read(_ run: Run) throws {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: run.pages * Page.size, alignment: Page.size)
        defer { buffer.deallocate() }
        try lock.withLock {
            do {
                let c = try client(run.source.endpoint)
                try Self.receive(run, id: try Self.start(run, on: c), on: c, into: buffer)
            } catch {
                clients.removeValue(forKey: run.source.endpoint)?.close()
                throw error
            }
            fetchedPages += run.pages
        }
    }

    /// Reads every run on connections of its own, up to `depth` requests in flight per node.
    func readAll(_ runs: [Run], depth: Int = 16) throws {
        var own: [Endpoint: MemoryClient] = [:]
        defer { for c in own.values { c.close() } }
        let maxPages = runs.map { $0.pages }.max() ?? 0
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(1, maxPages) * Page.size, alignment: Page.size)
        defer { buffer.deallocate() }
        for (ep, mine) in Dictionary(grouping: runs, by: { $0.source.endpoint }) {
            let c = try MemoryClient(endpoint: ep, secret: secret, token: token)
            own[ep] = c
            var sent: [(Run, UInt32)] = []
            var next = 0
            while next < mine.count || !sent.isEmpty {
                while next < mine.count && sent.count < depth {
                    let r = mine[next]
                    sent.append((r, try Self.start(r, on: c)))
                    next += 1
                }
                let (r, id) = sent.removeFirst()
                try Self.receive(r, id: id, on: c, into: buffer)
                lock.withLock { fetchedPages += r.pages }
            }
        }
    }

    /// Sends the FETCH_CHECKPOINTED of a run (its keys are consecutive).
    private static func start(_ r: Run, on c: MemoryClient) throws -> UInt32 {
        let keys = (0..<r.pages).map { r.key &+ UInt64($0) }
        return try keys.withUnsafeBufferPointer { try c.startFetch(space: r.source.space, vpns: $0, version: .checkpoint(r.source.retained)) }
    }

    private static func receive(_ r: Run, id: UInt32, on c: MemoryClient, into buffer: UnsafeMutableRawPointer) throws {
        var present = [UInt8](repeating: 0, count: r.pages)
        let found = try c.finishFetch(id, count: r.pages, present: &present, out: buffer, version: .checkpoint(r.source.retained))
        guard found == r.pages else {
            throw CheckpointStoreError.retainedPagesMissing(node: "\(r.source.endpoint)", found: found, pages: r.pages, key: r.key, checkpoint: r.source.retained)
        }
        r.deliver(buffer)
    }
}
