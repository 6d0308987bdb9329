import Foundation
import LegatoClients
import LegatoCore
import LegatoSystem

/// The coordinator's state: membership with failure detection, slab placement for memory nodes,
/// and the checkpoint registry (the decision record of the two-phase commit). Everything that must
/// survive a restart is written to the store before it is acknowledged; liveness (heartbeats) lives
/// in memory and is rebuilt from heartbeats after a restart. Thread-safe.
public final class Coordinator {
    public struct Timing: Sendable {
        public var heartbeatMillis: UInt32
        public var deadAfterMillis: UInt32
        public init(heartbeatMillis: UInt32 = 500, deadAfterMillis: UInt32 = 3000) {
            self.heartbeatMillis = heartbeatMillis
            self.deadAfterMillis = deadAfterMillis
        }
    }

    public enum CoordinatorError: Error, CustomStringConvertible {
        case unknownNode(UInt64)
        case badName(String)
        case noMemoryNodes
        case epochNotNew(String, UInt64, last: UInt64)
        case noSuchCheckpoint(String, UInt64)
        case notBegun(String, UInt64, CheckpointState)

        public var description: String {
            switch self {
            case .unknownNode(let id): return "node \(id) is not registered (or was declared dead)"
            case .badName(let n): return "invalid process name '\(n)': use 1-64 of A-Z a-z 0-9 . _ -"
            case .noMemoryNodes: return "no live memory node to place a slab on"
            case .epochNotNew(let n, let e, let last): return "checkpoint \(n) epoch \(e) is not after epoch \(last)"
            case .noSuchCheckpoint(let n, let e): return "no checkpoint \(n) epoch \(e)"
            case .notBegun(let n, let e, let s): return "checkpoint \(n) epoch \(e) is \(s.rawValue), not begun"
            }
        }
    }

    final class Live {
        var record: NodeRecord
        var lastSeen: UInt64
        var used: UInt64
        init(record: NodeRecord, lastSeen: UInt64) {
            self.record = record
            self.lastSeen = lastSeen
            used = 0
        }
    }

    public let store: CoordinatorStore
    public let timing: Timing
    private let log: Logger
    private let lock = Lock()
    private var nodes: [UInt64: Live] = [:]
    private var nextNodeID: UInt64 = 1
    private(set) var version: UInt64 = 1
    private var stopped = false
    private var rng = SystemRandomNumberGenerator()

    public init(store: CoordinatorStore, timing: Timing, log: Logger) throws {
        self.store = store
        self.timing = timing
        self.log = log
        let now = monotonicNanos()
        if let next = try store.getJSON([String: UInt64].self, StoreKeys.nextNodeID)?["value"] { nextNodeID = next }
        for (_, v) in try store.list(prefix: "nodes/") {
            let r = try JSONDecoder().decode(NodeRecord.self, from: Data(v))
            nodes[r.id] = Live(record: r, lastSeen: now)
            nextNodeID = max(nextNodeID, r.id + 1)
        }
        if !nodes.isEmpty { log.info("carrying on from \(store.description): \(nodes.count) nodes known") }
        startThread(name: "failure-detector") { [self] in detectFailures() }
    }

    public func stop() { lock.withLock { stopped = true } }

    static func validName(_ n: String) -> Bool {
        !n.isEmpty && n.count <= 64 && n.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "_" || $0 == "-") }
    }

    // MARK: membership

    /// Registers a node (or re-registers it: the same uuid keeps its id). Returns its id.
    public func register(role: NodeRole, address: String, capacity: UInt64, uuid: String) throws -> UInt64 {
        try lock.withLock {
            if let existing = nodes.values.first(where: { $0.record.uuid == uuid && $0.record.role == role }) {
                existing.record.address = address
                existing.record.capacity = capacity
                existing.record.dead = false
                existing.lastSeen = monotonicNanos()
                try store.putJSON(StoreKeys.node(existing.record.id), existing.record)
                version += 1
                lock.broadcast()
                log.info("\(role.rawValue) node \(existing.record.id) at \(address) registered again")
                return existing.record.id
            }
            let id = nextNodeID
            nextNodeID += 1
            try store.putJSON(StoreKeys.nextNodeID, ["value": nextNodeID])
            let r = NodeRecord(id: id, role: role, address: address, capacity: capacity, uuid: uuid,
                               registeredAt: Date().timeIntervalSince1970, dead: false)
            try store.putJSON(StoreKeys.node(id), r)
            nodes[id] = Live(record: r, lastSeen: monotonicNanos())
            version += 1
            lock.broadcast()
            log.info("\(role.rawValue) node \(id) at \(address) joined (capacity \(formatSize(capacity)))")
            return id
        }
    }

    /// A heartbeat; throws unknownNode if the node was declared dead (it must register again).
    public func heartbeat(id: UInt64, used: UInt64, capacity: UInt64) throws {
        try lock.withLock {
            guard let n = nodes[id], !n.record.dead else { throw CoordinatorError.unknownNode(id) }
            n.lastSeen = monotonicNanos()
            n.used = used
            n.record.capacity = capacity
        }
    }

    public func membership() -> (version: UInt64, nodes: [NodeStatus]) {
        lock.withLock { (version, snapshot()) }
    }

    /// Waits until the membership changes past `known` (or `timeoutMillis` pass).
    public func waitMembership(after known: UInt64, timeoutMillis: UInt32) -> (version: UInt64, nodes: [NodeStatus]) {
        lock.withLock {
            let deadline = monotonicNanos() + UInt64(timeoutMillis) * 1_000_000
            while version <= known && !stopped {
                let now = monotonicNanos()
                if now >= deadline { break }
                lock.wait(seconds: Double(deadline - now) / 1e9)
            }
            return (version, snapshot())
        }
    }

    private func snapshot() -> [NodeStatus] {
        let now = monotonicNanos()
        return nodes.values.sorted { $0.record.id < $1.record.id }.map {
            NodeStatus(id: $0.record.id, role: $0.record.role, address: $0.record.address, alive: !$0.record.dead,
                       capacity: $0.record.capacity, used: $0.used, silentMillis: (now - min(now, $0.lastSeen)) / 1_000_000)
        }
    }

    private func detectFailures() {
        while !lock.withLock({ stopped }) {
            usleep(UInt32(max(20, timing.heartbeatMillis / 4)) * 1000)
            lock.withLock {
                let now = monotonicNanos()
                for n in nodes.values where !n.record.dead && now - min(now, n.lastSeen) > UInt64(timing.deadAfterMillis) * 1_000_000 {
                    n.record.dead = true
                    do { try store.putJSON(StoreKeys.node(n.record.id), n.record) } catch {
                        log.error("recording the death of node \(n.record.id): \(error)")
                    }
                    version += 1
                    log.warning("\(n.record.role.rawValue) node \(n.record.id) at \(n.record.address) declared dead (silent for \((now - n.lastSeen) / 1_000_000) ms)")
                }
                lock.broadcast()
            }
        }
    }

    // MARK: slab placement

    /// The memory node holding `slab` of `space`, placed now if it has none: two live memory nodes
    /// picked at random, the one with more free room wins (randomization with refinement).
    public func assignSlab(space: UInt64, slab: UInt64, slabBytes: UInt64) throws -> NodeStatus {
        try lock.withLock {
            if let s = try store.getJSON(SlabRecord.self, StoreKeys.slab(space, slab)), let n = nodes[s.node] {
                return status(n)
            }
            let candidates = nodes.values.filter { $0.record.role == .memory && !$0.record.dead }
            guard !candidates.isEmpty else { throw CoordinatorError.noMemoryNodes }
            let placed = try store.list(prefix: "slabs/").compactMap { try? JSONDecoder().decode(SlabRecord.self, from: Data($0.value)) }
            func free(_ n: Live) -> Int64 {
                let assigned = UInt64(placed.filter { $0.node == n.record.id }.count) * slabBytes
                return Int64(n.record.capacity) - Int64(max(n.used, assigned))
            }
            let a = candidates.randomElement(using: &rng)!
            var b = candidates.randomElement(using: &rng)!
            if candidates.count > 1 { while b === a { b = candidates.randomElement(using: &rng)! } }
            let chosen = free(a) >= free(b) ? a : b
            try store.putJSON(StoreKeys.slab(space, slab), SlabRecord(space: space, slab: slab, node: chosen.record.id))
            return status(chosen)
        }
    }

    /// Splits the slabs of `space` a dead memory node held into partitions, one per live memory
    /// node but the dead ones, each sized in proportion to the node's free room (its capacity less
    /// what it uses, as its heartbeats say: the will RAMCloud's masters keep current). The new
    /// placement is recorded before the answer.
    public func planRecovery(space: UInt64, deadAddress: String, alsoDead: [String] = [], slabs: [(slab: UInt64, pages: UInt64)]) throws -> [(node: NodeStatus, slabs: [UInt64])] {
        try lock.withLock {
            let dead = Set(alsoDead + [deadAddress])
            let candidates = nodes.values.filter { $0.record.role == .memory && !$0.record.dead && !dead.contains($0.record.address) }
                .sorted { $0.record.id < $1.record.id }
            guard !candidates.isEmpty else { throw CoordinatorError.noMemoryNodes }
            // Each node's share of the pages is in proportion to its free room; the largest slabs
            // go first, each to the node furthest below its share (every node recovers at once).
            let room = candidates.map { max(Int64(1), Int64($0.record.capacity) - Int64($0.used)) }
            let totalRoom = room.reduce(0, +)
            let totalPages = slabs.reduce(0) { $0 + Int64($1.pages) } + Int64(slabs.count)
            let share = room.map { Double(totalPages) * Double($0) / Double(totalRoom) }
            var taken = [Int64](repeating: 0, count: candidates.count)
            var assigned = [[UInt64]](repeating: [], count: candidates.count)
            for s in slabs.sorted(by: { ($0.pages, $1.slab) > ($1.pages, $0.slab) }) {
                let k = candidates.indices.max { a, b in
                    let da = share[a] - Double(taken[a]), db = share[b] - Double(taken[b])
                    return da != db ? da < db : room[a] < room[b]
                }!
                taken[k] += Int64(s.pages) + 1
                assigned[k].append(s.slab)
            }
            var plan: [(node: NodeStatus, slabs: [UInt64])] = []
            for (k, n) in candidates.enumerated() where !assigned[k].isEmpty {
                for slab in assigned[k] { try store.putJSON(StoreKeys.slab(space, slab), SlabRecord(space: space, slab: slab, node: n.record.id)) }
                plan.append((status(n), assigned[k].sorted()))
            }
            let shares = plan.map { "\($0.slabs.count) to \($0.node.address)" }.joined(separator: ", ")
            log.info("recovery of \(slabs.count) slabs of space \(String(space, radix: 16)) from \(deadAddress): \(shares)")
            return plan
        }
    }

    public func slabs(space: UInt64) throws -> [SlabRecord] {
        try store.list(prefix: StoreKeys.slabs(space)).map { try JSONDecoder().decode(SlabRecord.self, from: Data($0.value)) }
    }

    public func dropSlabs(space: UInt64) throws {
        for (k, _) in try store.list(prefix: StoreKeys.slabs(space)) { try store.delete(k) }
    }

    private func status(_ n: Live) -> NodeStatus {
        NodeStatus(id: n.record.id, role: n.record.role, address: n.record.address, alive: !n.record.dead,
                   capacity: n.record.capacity, used: n.used, silentMillis: 0)
    }

    // MARK: checkpoint registry

    public func beginCheckpoint(name: String, epoch: UInt64, record: Data) throws {
        guard Self.validName(name) else { throw CoordinatorError.badName(name) }
        try lock.withLock {
            let existing = try store.list(prefix: StoreKeys.checkpoints(name)).compactMap { try? JSONDecoder().decode(CheckpointRecord.self, from: Data($0.value)) }
            if let last = existing.map({ $0.epoch }).max(), epoch <= last {
                throw CoordinatorError.epochNotNew(name, epoch, last: last)
            }
            try store.putJSON(StoreKeys.checkpoint(name, epoch), CheckpointRecord(name: name, epoch: epoch, state: .begun,
                                                                                   begunAt: Date().timeIntervalSince1970, decidedAt: nil,
                                                                                   record: record, reason: nil))
        }
    }

    /// The commit point of a checkpoint: once this returns, the checkpoint is restorable.
    public func commitCheckpoint(name: String, epoch: UInt64, record: Data) throws {
        try decide(name: name, epoch: epoch, state: .committed, record: record, reason: nil)
    }

    public func abortCheckpoint(name: String, epoch: UInt64, reason: String) throws {
        try decide(name: name, epoch: epoch, state: .aborted, record: nil, reason: reason)
    }

    private func decide(name: String, epoch: UInt64, state: CheckpointState, record: Data?, reason: String?) throws {
        guard Self.validName(name) else { throw CoordinatorError.badName(name) }
        try lock.withLock {
            guard var r = try store.getJSON(CheckpointRecord.self, StoreKeys.checkpoint(name, epoch)) else {
                throw CoordinatorError.noSuchCheckpoint(name, epoch)
            }
            if r.state == state { return }  // a retried decision
            guard r.state == .begun else { throw CoordinatorError.notBegun(name, epoch, r.state) }
            r.state = state
            r.decidedAt = Date().timeIntervalSince1970
            if let record { r.record = record }
            r.reason = reason
            try store.putJSON(StoreKeys.checkpoint(name, epoch), r)
        }
    }

    /// Checkpoints of `name` (every name if empty), by name and epoch.
    public func checkpoints(name: String) throws -> [CheckpointRecord] {
        if !name.isEmpty && !Self.validName(name) { throw CoordinatorError.badName(name) }
        return try store.list(prefix: StoreKeys.checkpoints(name)).compactMap {
            try? JSONDecoder().decode(CheckpointRecord.self, from: Data($0.value))
        }.sorted { ($0.name, $0.epoch) < ($1.name, $1.epoch) }
    }

    public func deleteCheckpoint(name: String, epoch: UInt64) throws {
        guard Self.validName(name) else { throw CoordinatorError.badName(name) }
        try store.delete(StoreKeys.checkpoint(name, epoch))
    }
}
