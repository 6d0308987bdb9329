import Glibc
import LegatoClients
import LegatoCore
import LegatoSystem
import LegatoWire

/// The write-back thread: stores batches and forwards discards to memory nodes, in submission
/// order per node (so a discard never overtakes the store it cancels), on its own connections.
/// Completions are queued and signalled on `wakeFD` for the event loop.
final class WriteBack {
    enum Work {
        case store(WriteBackBatch)
        case discard(node: Int, ranges: [(vpn: UInt64, count: UInt64)])
    }

    enum Outcome {
        case stored(WriteBackBatch)
        /// A node (the batch's, or its mirror) has no room for it.
        case refused(WriteBackBatch, node: Int, String)
        /// The node failed (the batch, if it was a store, still holds its pages).
        case failed(node: Int, WriteBackBatch?, String)
    }

    let wakeFD: Int32
    private let lock = Lock()
    private var queue: [Work] = []
    private var done: [Outcome] = []
    private var stopping = false
    private var clients: [Int: MemoryClient] = [:]
    private var endpoints: [Endpoint]
    private let secret: ClusterSecret
    private let token: [UInt8]
    private let space: UInt64
    /// Stores of batches with no mirror are logged (`--memory-replication log` or `adaptive`).
    private let logged: Bool
    /// Nodes that failed once: later work for them fails at once (no connect to wait out).
    private var failedNodes: [Int: String] = [:]
    /// Each node's connection (by the thread, under `lock`), and the nodes given up from outside.
    private var sockets: [Int: Int32] = [:]
    private var abandoned: [Int: String] = [:]

    init(endpoints: [Endpoint], secret: ClusterSecret, token: [UInt8], space: UInt64, logged: Bool) throws {
        self.endpoints = endpoints
        self.logged = logged
        self.secret = secret
        self.token = token
        self.space = space
        wakeFD = try Sys.eventFD()
        startThread(name: "writeback") { [self] in run() }
    }

    func submit(_ w: Work) {
        lock.withLock {
            queue.append(w)
            lock.broadcast()
        }
    }

    /// Completed work since the last call.
    func takeCompletions() -> [Outcome] {
        var v: UInt64 = 0
        _ = read(wakeFD, &v, 8)
        return lock.withLock {
            let d = done
            done.removeAll(keepingCapacity: true)
            return d
        }
    }

    var pendingCount: Int { lock.withLock { queue.count } }

    func stop() {
        lock.withLock {
            stopping = true
            lock.broadcast()
        }
    }

    /// A node the pool connected to after the start (its index is the next one).
    func addEndpoint(_ ep: Endpoint) { lock.withLock { endpoints.append(ep) } }

    struct NodeFailedBefore: Error, CustomStringConvertible {
        let why: String
        var description: String { "it failed before: \(why)" }
    }

    private func client(_ node: Int) throws -> MemoryClient {
        if let why = lock.withLock({ abandoned[node] }), failedNodes[node] == nil { nodeFailed(node, NodeFailedBefore(why: why)) }
        if let c = clients[node] { return c }
        if let why = failedNodes[node] { throw NodeFailedBefore(why: why) }
        let c = try MemoryClient(endpoint: lock.withLock { endpoints[node] }, secret: secret, token: token)
        clients[node] = c
        lock.withLock { sockets[node] = c.rpc.connection.fd }
        return c
    }

    /// Node `node` is dead (`why`: the coordinator says so): a store waiting on it fails now rather
    /// than at its I/O timeout (a host cut off sends no reset), and no work goes to it any more.
    func abandon(node: Int, why: String) {
        lock.withLock {
            abandoned[node] = why
            if let fd = sockets[node] { shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }

    private func run() {
        Sys.blockSignalInThisThread(SIGCHLD)
        while true {
            let work: Work? = lock.withLock {
                while queue.isEmpty && !stopping { lock.wait() }
                return queue.isEmpty ? nil : queue.removeFirst()
            }
            guard let work else { break }
            let outcome: Outcome?
            switch work {
            case .store(let b):
                outcome = store(b)
            case .discard(let node, let ranges):
                do {
                    _ = try client(node).discard(space: space, ranges: ranges)
                    outcome = nil
                } catch {
                    nodeFailed(node, error)
                    outcome = .failed(node: node, nil, "\(error)")
                }
            }
            if let outcome {
                lock.withLock { done.append(outcome) }
                var one: UInt64 = 1
                _ = write(wakeFD, &one, 8)
            }
        }
        for (_, c) in clients { c.close() }
    }

    /// Stores `b` on its node and, mirrored, on its mirror at the same time; stored only once both
    /// have it. A batch with no mirror is logged if the run logs.
    private func store(_ b: WriteBackBatch) -> Outcome {
        let flags: StorePages.Flags = logged && b.mirror == nil ? .logged : []
        var sent: [(node: Int, client: MemoryClient, id: UInt32)] = []
        var outcome: Outcome?
        for node in [b.node] + (b.mirror.map { [$0] } ?? []) {
            do {
                let c = try client(node)
                let id = try b.keys.withUnsafeBufferPointer { try c.startStore(space: space, flags: flags, vpns: $0, pages: b.buffer) }
                sent.append((node, c, id))
            } catch {
                nodeFailed(node, error)
                if outcome == nil { outcome = .failed(node: node, b, "\(error)") }
            }
        }
        for s in sent {
            do { try s.client.finishStore(s.id) } catch let e as RemoteError where e.status == .capacityExceeded {
                if outcome == nil { outcome = .refused(b, node: s.node, e.message) }
            } catch {
                nodeFailed(s.node, error)
                if outcome == nil { outcome = .failed(node: s.node, b, "\(error)") }
            }
        }
        return outcome ?? .stored(b)
    }

    private func nodeFailed(_ node: Int, _ error: Error) {
        lock.withLock { sockets[node] = nil }  // (before the close: its descriptor may be another's after)
        clients[node]?.close()
        clients[node] = nil
        if failedNodes[node] == nil { failedNodes[node] = "\(error)" }
    }
}
