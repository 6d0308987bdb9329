import Foundation
import Logging
import LegatoClients
import LegatoCore
import LegatoSystem
import LegatoWire

/// The memory nodes holding one address space's pages, and where each page lives.
///
/// Keys are grouped into slabs (`slabPages` consecutive keys); a slab is placed on a node the
/// first time a page of it is stored, by randomization plus refinement (two random candidates,
/// the one with more free room wins — RAMCloud's placement). A page stored elsewhere because its
/// slab's node was full is recorded in `overrides`. With a coordinator, the nodes are the cluster's
/// live memory nodes and the coordinator places slabs (and remembers where). Used from the
/// event-loop thread only.
final class RemotePool {
    final class Node {
        let index: Int
        let endpoint: Endpoint
        let fetcher: MemoryClient
        var freePagesAtStart: Int
        var full = false
        var dead = false
        var pagesHeld = 0
        var slabsAssigned = 0
        /// The node's write-back log for the run's space (0: it keeps none).
        let logWriter: UInt64
        init(index: Int, endpoint: Endpoint, fetcher: MemoryClient, freePages: Int, logWriter: UInt64) {
            self.index = index
            self.endpoint = endpoint
            self.fetcher = fetcher
            self.freePagesAtStart = freePages
            self.logWriter = logWriter
        }
        var estimatedFree: Int { freePagesAtStart - pagesHeld }
    }

    static let slabShift: UInt64 = 12  // 4096 pages = 16 MiB of keys per slab

    let space: UInt64
    let token: [UInt8]
    let secret: ClusterSecret
    private(set) var nodes: [Node] = []
    private var slabOwner: [UInt64: Int] = [:]
    private var overrides: [UInt64: Int] = [:]
    private var rng = SystemRandomNumberGenerator()
    private let coordinator: CoordinatorClient?
    private var nodeIDs: [UInt64: Int] = [:]   // coordinator node id -> index in `nodes`
    /// Keys a recovery under way rebuilds on other nodes: a new copy of one must not be stored until
    /// it is done (the recovery would write the old copy over it), so its batch waits.
    var awaitingRecovery = Set<UInt64>()
    /// `--memory-replication mirror` or `adaptive`: stores also go to a second node (see RemotePool+Mirrors).
    let mirrored: Bool
    /// Adaptive: whether a batch stored now is mirrored (else it is logged); nil: always.
    var mirrorNow: (() -> Bool)?
    /// Where each mirrored key's second copy is (its newest copy is on both `location` and here).
    var mirrorOf: [UInt64: Int] = [:]
    /// Each slab's usual mirror node (the second copies of its keys go there while it can take them).
    var mirrorSlab: [UInt64: Int] = [:]
    /// Keys with one copy since their other node died, each with the promotion that left it so; a
    /// new store or a discard of the key takes it out (a ReMirror's copy is then not its mirror).
    var singleCopy: [UInt64: UInt64] = [:]
    /// Told of every node added after the start (the write-back thread connects to it too).
    var onNewNode: ((Endpoint) -> Void)?

    /// Spaces of a run that cannot be restored go with the agent's connections (see
    /// MemoryClient.createSpace); a checkpointable run's stay for its restore.
    let ephemeral: Bool
    /// Stores may ask the nodes to log them (`--memory-replication log` or `adaptive`): every node
    /// keeps a write-back log for the space.
    let logged: Bool
    let coordinatorEndpoint: Endpoint?

    init(endpoints: [Endpoint], coordinator: Endpoint?, secret: ClusterSecret, token: [UInt8], space: UInt64, ephemeral: Bool,
         replication: MemoryReplication = .none, log: Logger) throws {
        self.ephemeral = ephemeral
        self.logged = replication.logs
        self.mirrored = replication.mirrors
        self.coordinatorEndpoint = coordinator
        self.space = space
        self.token = token
        self.secret = secret
        var eps: [(endpoint: Endpoint, id: UInt64?)] = endpoints.map { ($0, nil) }
        if let c = coordinator {
            let client = try CoordinatorClient(endpoint: c, secret: secret, token: token)
            self.coordinator = client
            for n in try client.nodes().nodes where n.role == .memory && n.alive {
                guard let ep = Endpoint(parsing: n.address) else { continue }
                eps.append((ep, n.id))
            }
            if eps.isEmpty { throw RemoteMemoryError.noLiveMemoryNode(coordinator: "\(c)") }
        } else {
            self.coordinator = nil
        }
        // A cluster's node that cannot be reached is dead as far as this run goes, though the
        // coordinator may not say so yet (its failure detector takes a while): the run places its
        // slabs on the others, and a restore reads that node's share from the log nodes.
        var unreachable: [Error] = []
        for (ep, id) in eps {
            do {
                let i = try connect(ep)
                if let id { nodeIDs[id] = i }
            } catch where id != nil && !Self.isMisconfigured(error) {
                log.warning("memory node \(ep) cannot be reached, so it is left out (the coordinator still lists it as alive): \(error)")
                unreachable.append(error)
            }
        }
        if nodes.isEmpty, let first = unreachable.first { throw first }
    }

    /// A node that answers but cannot serve the run as asked: an error, not a node to leave out.
    private static func isMisconfigured(_ error: Error) -> Bool {
        if case .noWriteBackLog? = error as? RemoteMemoryError { return true }
        return false
    }

    /// The fetch connections, for MembershipWatch's thread to cut.
    let sockets = FetchSockets()

    /// The endpoints of the nodes in index order (the write-back thread's view).
    var endpoints: [Endpoint] { nodes.map { $0.endpoint } }

    @discardableResult
    private func connect(_ ep: Endpoint) throws -> Int {
        let client: MemoryClient
        do { client = try MemoryClient(endpoint: ep, secret: secret, token: token) } catch {
            throw RemoteMemoryError.unreachable(node: "\(ep)", "\(error)")
        }
        let logWriter = try client.createSpace(space, ephemeral: ephemeral)
        if logged && logWriter == 0 {
            client.close()
            throw RemoteMemoryError.noWriteBackLog(node: "\(ep)")
        }
        client.rpc.connection.spinNanos = Agent.spinNanos("LEGATO_FETCH_SPIN_US", 50)
        client.rpc.connection.bufferReads(upTo: 64 << 10)
        sockets.register(ep.description, fd: client.rpc.connection.fd)
        let free = Self.freePages(statsJSON: (try? client.rpc.stats()) ?? "")
        nodes.append(Node(index: nodes.count, endpoint: ep, fetcher: client, freePages: free, logWriter: logWriter))
        return nodes.count - 1
    }

    /// The index of the node with coordinator id `id` at `address`, connecting to it if it is new.
    func node(id: UInt64, address: String) throws -> Int {
        if let i = nodeIDs[id], !nodes[i].dead { return i }
        guard let ep = Endpoint(parsing: address) else { throw RemoteMemoryError.unreachable(node: address, "not HOST:PORT") }
        if let i = nodes.firstIndex(where: { $0.endpoint == ep && !$0.dead }) {
            nodeIDs[id] = i
            return i
        }
        let i = try connect(ep)
        nodeIDs[id] = i
        onNewNode?(ep)
        return i
    }

    /// Node `node` died: no slab is placed on it any more, and its slabs' new pages go elsewhere.
    func markDead(_ node: Int) {
        nodes[node].dead = true
        sockets.unregister(nodes[node].endpoint.description)
        nodes[node].fetcher.close()
    }

    /// The slabs a dead node owned, and the keys stored there away from their slab's node.
    func holdings(of node: Int) -> (slabs: [UInt64], strays: [UInt64]) {
        (slabOwner.compactMap { $0.value == node ? $0.key : nil }.sorted(), overrides.compactMap { $0.value == node ? $0.key : nil })
    }

    /// A recovery rebuilt dead node `dead`'s pages: its slabs now live where `newOwner` says, and
    /// each key of `recovered` whose newest copy was there lives on its slab's new node (one stored
    /// elsewhere since, by a later write-back, stays where it went).
    func applyRecovery(dead: Int, newOwner: [UInt64: Int], recovered: [UInt64], strayOwner: Int) {
        for key in recovered where location(key) == dead {
            let n = newOwner[key >> Self.slabShift] ?? strayOwner
            if PageTrace.on { PageTrace.note("MOVE \(String(key, radix: 16)) n\(n)") }
            overrides[key] = slabOwner[key >> Self.slabShift] == dead && newOwner[key >> Self.slabShift] != nil ? nil : n
            nodes[n].pagesHeld += 1
        }
        for (slab, n) in newOwner where slabOwner[slab] == dead {
            slabOwner[slab] = n
            nodes[n].slabsAssigned += 1
        }
        nodes[dead].pagesHeld = 0
    }

    /// The coordinator's placement of a slab, as an index into `nodes` (connecting to a new node).
    private func placeWithCoordinator(_ slab: UInt64) -> Int? {
        guard let c = coordinator else { return nil }
        do {
            let (id, address) = try c.assignSlab(space: space, slab: slab, slabBytes: UInt64(1) << (Self.slabShift + 12))
            if let i = nodeIDs[id] { return nodes[i].full || nodes[i].dead ? place() : i }
            guard let ep = Endpoint(parsing: address) else { return place() }
            let i = try connect(ep)
            nodeIDs[id] = i
            onNewNode?(ep)
            return i
        } catch {
            return place()
        }
    }

    /// The room a memory node's STATS answer gives it (unbounded when it cannot be read).
    static func freePages(statsJSON: String) -> Int {
        (try? StatsJSON.decode(MemoryNodeStats.self, from: statsJSON))?.freePages ?? 1 << 30
    }

    /// The node that holds (or will hold) `key`, placing its slab if needed; nil if every node is full.
    func route(_ key: UInt64) -> Int? {
        if let o = overrides[key], !nodes[o].dead { return o }
        let slab = key >> Self.slabShift
        if let n = slabOwner[slab] { return nodes[n].full || nodes[n].dead ? place() : n }
        guard let n = coordinator != nil ? placeWithCoordinator(slab) : place() else { return nil }
        slabOwner[slab] = n
        nodes[n].slabsAssigned += 1
        return n
    }

    /// Where `key` currently lives, without placing anything.
    func location(_ key: UInt64) -> Int? {
        overrides[key] ?? slabOwner[key >> Self.slabShift]
    }

    /// Whether `a` and `b` live on the same node (or both nowhere): no lookup for two keys of one
    /// slab when no page lives away from its slab's node (the pause asks this of every remote page).
    func sameLocation(_ a: UInt64, _ b: UInt64) -> Bool {
        if overrides.isEmpty && a >> Self.slabShift == b >> Self.slabShift { return true }
        return location(a) == location(b)
    }

    /// A node with room (other than `except`), by two random choices, the one with more free room
    /// winning; nil when there is none.
    func place(except: Int? = nil) -> Int? {
        let candidates = nodes.filter { !$0.full && !$0.dead && $0.index != except }
        guard !candidates.isEmpty else { return nil }
        if candidates.count == 1 { return candidates[0].index }
        let a = candidates.randomElement(using: &rng)!
        var b = candidates.randomElement(using: &rng)!
        if b === a { b = candidates[(candidates.firstIndex { $0 === a }! + 1) % candidates.count] }
        return a.estimatedFree >= b.estimatedFree ? a.index : b.index
    }

    /// Another node for pages refused by `full`, or nil when every node is full.
    func alternative(to full: Int) -> Int? {
        nodes[full].full = true
        return place()
    }

    /// `keys` are stored on `node` (and, mirrored, on `mirror` too): their newest copies are there.
    /// Answers the second copies of them this left stale elsewhere (see recordMirrors).
    @discardableResult
    func recordStored(keys: [UInt64], on node: Int, mirror: Int? = nil) -> [(node: Int, key: UInt64)] {
        if PageTrace.on { PageTrace.note("STORED n\(node) \(PageTrace.keys(keys))") }
        for k in keys {
            if slabOwner[k >> Self.slabShift] != node { overrides[k] = node } else { overrides[k] = nil }
        }
        nodes[node].pagesHeld += keys.count
        return mirrored ? recordMirrors(keys, on: node, mirror) : []
    }

    func recordDiscarded(key: UInt64) {
        if let n = location(key) { nodes[n].pagesHeld -= 1 }
        overrides[key] = nil
        if mirrored { forgetMirror(key) }
    }

    /// The nodes holding `key`'s newest copy: its location, and its mirror if it has one.
    func holders(_ key: UInt64) -> [Int] {
        guard let n = location(key) else { return [] }
        guard let m = mirrorOf[key] else { return [n] }
        return [n, m]
    }

    /// Makes `key`'s location `node` whatever its slab's node becomes, until it is stored again.
    func pin(_ key: UInt64, to node: Int) { overrides[key] = node }

    /// Makes `key`'s location `node` (its slab's node or an override), without counting a store.
    func relocate(_ key: UInt64, to node: Int) {
        overrides[key] = slabOwner[key >> Self.slabShift] == node ? nil : node
    }

    /// Places a slab of a dead owner anew: on `node` (keys then relocated there need no override).
    func reassignSlab(_ slab: UInt64, to node: Int) {
        slabOwner[slab] = node
        nodes[node].slabsAssigned += 1
    }

    /// The slabs node `node` owns.
    func slabs(ownedBy node: Int) -> [UInt64] { slabOwner.compactMap { $0.value == node ? $0.key : nil } }


    /// Fetches the pages of `keys` (all on node `node`) into `out`; throws if any is missing.
    func fetch(node: Int, keys: UnsafeBufferPointer<UInt64>, present: UnsafeMutablePointer<UInt8>, out: UnsafeMutableRawPointer) throws {
        try finishFetch(node: node, id: try startFetch(node: node, keys: keys), keys: keys, present: present, out: out)
    }

    /// Sends a fetch; answers come back in order per node (see `finishFetch`).
    func startFetch(node: Int, keys: UnsafeBufferPointer<UInt64>) throws -> UInt32 {
        let n = nodes[node]
        do { return try n.fetcher.startFetch(space: space, vpns: keys) } catch {
            throw NodeFailure(node: n.endpoint, pagesHeld: n.pagesHeld, underlying: "\(error)")
        }
    }

    func finishFetch(node: Int, id: UInt32, keys: UnsafeBufferPointer<UInt64>, present: UnsafeMutablePointer<UInt8>,
                     out: UnsafeMutableRawPointer) throws {
        let n = nodes[node]
        let found: Int
        do { found = try n.fetcher.finishFetch(id, count: keys.count, present: present, out: out) } catch {
            throw NodeFailure(node: n.endpoint, pagesHeld: n.pagesHeld, underlying: "\(error)")
        }
        if found != keys.count {
            let missing = (0..<keys.count).first { present[$0] == 0 }.map { keys[$0] } ?? 0
            throw NodeFailure(node: n.endpoint, pagesHeld: n.pagesHeld,
                              underlying: "it no longer holds \(keys.count - found) of the pages asked for (first key 0x\(String(missing, radix: 16)))")
        }
    }

    /// Drops the address space on every node (best effort, at exit).
    /// Freezes PROG's space on `node` (see MemoryClient.freeze); a freeze left over is released first.
    func freeze(node: Int) throws {
        let n = nodes[node]
        do {
            do { try n.fetcher.freeze(space: space) } catch let e as RemoteError where e.status == .frozen {
                try n.fetcher.release(space: space)
                try n.fetcher.freeze(space: space)
            }
        } catch {
            throw NodeFailure(node: n.endpoint, pagesHeld: n.pagesHeld, underlying: "freeze: \(error)")
        }
    }

    /// What a thread of its own needs to read frozen pages: endpoints by node index and credentials.
    func frozenSource() -> FrozenPages {
        FrozenPages(endpoints: nodes.map { $0.endpoint }, secret: secret, token: token, space: space)
    }

    /// The nodes not known to be dead, by index.
    var liveNodes: [Int] { nodes.filter { !$0.dead }.map { $0.index } }

    func dropEverywhere() {
        for n in nodes where !n.dead {
            try? n.fetcher.dropSpace(space)
            sockets.unregister(n.endpoint.description)
            n.fetcher.close()
        }
        try? coordinator?.dropSlabs(space: space)
        coordinator?.close()
    }
}

/// A memory node that failed while holding pages of the program.
struct NodeFailure: Error, CustomStringConvertible {
    let node: Endpoint
    let pagesHeld: Int
    let underlying: String
    var description: String {
        "memory node \(node) failed while holding \(pagesHeld) pages (\(formatSize(UInt64(pagesHeld) * 4096))) of the program: \(underlying)"
    }
}
