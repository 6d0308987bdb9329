import LegatoClients
import LegatoCore
import LegatoImage
import LegatoSystem
import LegatoWire

/// Reads a checkpoint's pages from the memory nodes' freeze of PROG's space, on a thread of its
/// own (the commit thread: its own connections, the same credentials as the agent's), and ends
/// the freezes. See MemoryClient.freeze.
final class FrozenPages {
    let endpoints: [Endpoint]   // by the pool's node index
    let secret: ClusterSecret
    let token: [UInt8]
    let space: UInt64
    private var clients: [Int: MemoryClient] = [:]

    init(endpoints: [Endpoint], secret: ClusterSecret, token: [UInt8], space: UInt64) {
        self.endpoints = endpoints
        self.secret = secret
        self.token = token
        self.space = space
    }

    deinit { for c in clients.values { c.close() } }

    private func client(_ node: Int) throws -> MemoryClient {
        if let c = clients[node] { return c }
        let c = try MemoryClient(endpoint: endpoints[node], secret: secret, token: token)
        clients[node] = c
        return c
    }

    /// The frozen versions of `keys` on `node` into dst (page i at dst + i*4096); every one must exist.
    func read(node: Int, keys: [UInt64], into dst: UnsafeMutableRawPointer) throws {
        var present = [UInt8](repeating: 0, count: keys.count)
        let found = try keys.withUnsafeBufferPointer { k in
            try client(node).fetch(space: space, vpns: k, present: &present, out: dst, version: .frozen)
        }
        guard found == keys.count else {
            throw CaptureError.nodeLostPages(node: "\(endpoints[node])", count: keys.count - found)
        }
    }

    /// Ends the freeze on each of `nodes`: COMMIT_SPACE for a committed checkpoint, else RELEASE_SPACE.
    /// Failures are returned as text (the node keeps old versions; a restore checks what it retains).
    func endFreezes(_ nodes: Set<Int>, committedEpoch: UInt32?) -> [String] {
        var problems: [String] = []
        for node in nodes.sorted() {
            do {
                if let e = committedEpoch { try client(node).commit(space: space, epoch: e) } else { try client(node).release(space: space) }
            } catch {
                problems.append("\(committedEpoch == nil ? "release" : "commit") on \(endpoints[node]): \(error)")
                dropClient(node)
            }
        }
        return problems
    }

    /// A PREPARE on its way to one memory node: its requests, or why it could not be sent.
    struct PendingPrepare {
        var node: Int
        var writer: UInt64
        var requests: [UInt32] = []
        var failure: String?
    }

    /// Sends PREPARE to every node of `byNode`: each is to persist the frozen versions of its runs
    /// into its participant log for run `name` (requests of at most 65536 pages, all sent before any
    /// answer is awaited, so the nodes work in parallel with each other and with the caller).
    func startPrepare(name: String, epoch: UInt32, byNode: [Int: [(address: UInt64, vpns: [UInt64])]]) -> [PendingPrepare] {
        byNode.keys.sorted().map { node in
            var p = PendingPrepare(node: node, writer: CheckpointLogEntry.participantWriter(name: name, node: endpoints[node].description))
            var chunk: [(address: UInt64, vpns: [UInt64])] = []
            var pages = 0
            do {
                for run in byNode[node]! {
                    if pages + run.vpns.count > 65536 && !chunk.isEmpty {
                        p.requests.append(try client(node).startPrepare(space: space, epoch: epoch, writer: p.writer, runs: chunk))
                        chunk.removeAll()
                        pages = 0
                    }
                    chunk.append(run)
                    pages += run.vpns.count
                }
                if !chunk.isEmpty { p.requests.append(try client(node).startPrepare(space: space, epoch: epoch, writer: p.writer, runs: chunk)) }
            } catch {
                p.failure = "\(error)"
                dropClient(node)
            }
            return p
        }
    }

    /// The answers: the nodes that persisted all they were asked (PREPARED), with their log writer and
    /// page count; the others, with why (the caller persists their pages itself).
    typealias PrepareOutcome = (prepared: [Int: (writer: UInt64, pages: Int)], failed: [Int: String])

    func finishPrepare(_ pending: [PendingPrepare]) -> PrepareOutcome {
        var prepared: [Int: (writer: UInt64, pages: Int)] = [:]
        var failed: [Int: String] = [:]
        for p in pending {
            if let f = p.failure {
                failed[p.node] = f
                continue
            }
            var pages = 0
            do {
                for id in p.requests { pages += Int(try client(p.node).finishPrepare(id)) }
                prepared[p.node] = (p.writer, pages)
            } catch {
                failed[p.node] = "\(error)"
                dropClient(p.node)
            }
        }
        return (prepared, failed)
    }

    private func dropClient(_ node: Int) {
        clients[node]?.close()
        clients[node] = nil
    }
}
