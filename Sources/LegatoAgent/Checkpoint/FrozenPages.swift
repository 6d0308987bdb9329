import LegatoCore
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
            try client(node).fetch(space: space, vpns: k, present: &present, out: dst, frozen: true)
        }
        guard found == keys.count else {
            throw LegatoError("memory node \(endpoints[node]) lost \(keys.count - found) of PROG's pages")
        }
    }

    /// Ends the freeze on each of `nodes`; failures are returned as text (the node keeps old versions).
    func release(_ nodes: Set<Int>) -> [String] {
        var problems: [String] = []
        for node in nodes.sorted() {
            do { try client(node).release(space: space) } catch { problems.append("release on \(endpoints[node]): \(error)") }
        }
        return problems
    }
}
