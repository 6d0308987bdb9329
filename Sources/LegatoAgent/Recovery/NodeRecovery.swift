import Foundation
import Glibc
import LegatoClients
import LegatoCore
import LegatoImage
import LegatoSystem
import LegatoWire

/// The recovery of a dead memory node's pages of the run (RAMCloud's fast recovery, from the
/// agent's side), on a thread of its own while the event loop goes on serving every other page:
///
/// 1. the coordinator splits the dead node's slabs into partitions over the live memory nodes, by
///    their free room, and records the new placement (PLAN_RECOVERY);
/// 2. each recovery node, all at once, reads its partition's entries of the dead node's write-back
///    log from the log nodes in parallel and rebuilds the newest version of each key it is given
///    (RECOVER_SPACE), logging them in its own write-back log;
/// 3. every key the agent knew on the dead node must come back (else the run stops: a page is
///    never served stale or zero); the outcome is published, and the faults go on;
/// 4. the recovery nodes log what they rebuilt behind their answer (RAMCloud's recovery masters
///    replicate as they go; here the faults need not wait for it): once each says it is done
///    (AWAIT_RECOVERY_LOGGED), the dead node's log is freed. A recovery node that dies before
///    then is recovered with the dead node's log as its fallback for those keys (`takeFallback`),
///    and that recovery, which logs before it answers, frees it.
///
/// `doneFD` (an eventfd) is signalled when `outcome` is set; the event loop then moves the pages
/// to their new nodes (RemotePool.applyRecovery) and wakes the faults that waited.
final class NodeRecovery {
    struct Partition {
        let node: UInt64
        let address: String
        /// The slabs whose entries the node reads (its share of the dead node's, plus any slab of a
        /// stray key it is given).
        let slabs: [UInt64]
        /// The dead node's slabs it now owns.
        let owned: [UInt64]
        let keys: [UInt64]
        var pages = 0
        /// The node's log mark for its keys (see RecoveredSpace).
        var mark: UInt64 = 0
        /// The connection the node recovered through, kept open until the agent has its own: the
        /// space of a run that is not named goes with its owner's last connection, and a node new to
        /// the run has no other.
        var client: MemoryClient?
    }

    struct Outcome {
        var partitions: [Partition]
        var seconds: Double
    }

    let dead: Int
    let deadEndpoint: Endpoint
    let doneFD: Int32
    let started = monotonicNanos()
    /// Every key whose newest copy was on the dead node, sorted.
    let keys: [UInt64]
    let deadLog: UInt64
    /// Whether the recovery nodes log behind their answer (not when this recovery has fallbacks:
    /// no chains of them).
    let logsBehind: Bool
    private let lock = Lock()
    private var result: Result<Outcome, Error>?
    /// Partitions not yet logged by their node, by address; and whether one of them was taken as
    /// a fallback (the log is then freed by the recovery that took it).
    private var unlogged: [String: Partition] = [:]
    private var fallbackTaken = false
    private var settledFlag = false

    struct Context {
        let space: UInt64
        let ephemeral: Bool
        let secret: ClusterSecret
        let token: [UInt8]
        let coordinator: Endpoint
        let log: Logger
    }

    /// Starts the recovery of node `dead` (at `endpoint`, its write-back log `deadLog`), which owned
    /// `slabs` and held the newest copy of `keys`.
    /// `fallbacks`: earlier recoveries' logs for keys the dead node rebuilt and had not logged yet
    /// (each with its keys); they are freed with the dead node's log.
    init(dead: Int, endpoint: Endpoint, deadLog: UInt64, slabs: [UInt64], keys: [UInt64], alsoDead: [Endpoint],
         fallbacks: [Fallback] = [], context: Context) throws {
        self.dead = dead
        deadEndpoint = endpoint
        self.keys = keys.sorted()
        self.deadLog = deadLog
        logsBehind = fallbacks.isEmpty
        doneFD = try Sys.eventFD()
        let sortedKeys = self.keys
        let behind = logsBehind
        startThread(name: "recovery") { [self] in
            let r = Result {
                try Self.recoverRetrying(deadAddress: endpoint.description, alsoDead: alsoDead.map { $0.description }, deadLog: deadLog, slabs: slabs,
                                         keys: sortedKeys, fallbacks: fallbacks, logBehind: behind, context)
            }
            lock.withLock {
                result = r.map { Outcome(partitions: $0, seconds: Double(monotonicNanos() - started) / 1e9) }
                if case .success(let parts) = r, behind { for p in parts where p.pages > 0 { unlogged[p.address] = p } }
            }
            var one: UInt64 = 1
            _ = write(doneFD, &one, 8)
            guard case .success = r else { return settle() }
            if !behind || awaitLogged(context) {
                for log in [deadLog] + fallbacks.map({ $0.log }) { Self.freeLog(log, context) }
            }
            settle()
        }
    }

    /// An earlier recovery's log a recovery reads for some of its keys (RecoveryFallback, with keys).
    struct Fallback {
        let log: UInt64
        let after: UInt64
        let keys: Set<UInt64>
    }

    /// If the node at `address` has not yet logged what this recovery put on it, the fallback a
    /// recovery of that node needs, which from now on frees this recovery's dead log.
    func takeFallback(address: String) -> Fallback? {
        lock.withLock {
            guard let p = unlogged[address] else { return nil }
            fallbackTaken = true
            return Fallback(log: deadLog, after: p.mark, keys: Set(p.keys))
        }
    }

    /// Whether this recovery has nothing left to do (its nodes logged, or it gave up on that).
    var settled: Bool { lock.withLock { settledFlag } }

    private func settle() { lock.withLock { settledFlag = true } }

    /// Waits for every recovery node to say it logged its partition; true if all did and none of
    /// them was taken as a fallback meanwhile (the dead log may go).
    private func awaitLogged(_ c: Context) -> Bool {
        let nodes = lock.withLock { Array(unlogged.values) }
        let all = Lock()
        var failed: [String] = []
        var remaining = nodes.count
        for p in nodes {
            startThread(name: "await-logged") { [self] in
                var why: String?
                do {
                    guard let ep = Endpoint(parsing: p.address) else { throw RecoveryError.node(p.address, "not HOST:PORT") }
                    let client = try MemoryClient(endpoint: ep, secret: c.secret, token: c.token, ioTimeoutSeconds: 600)
                    defer { client.close() }
                    try client.awaitRecoveryLogged(space: c.space, deadLog: deadLog)
                    lock.withLock { unlogged[p.address] = nil }
                } catch {
                    why = "\(error)"
                }
                all.withLock {
                    if let why { failed.append("\(p.address): \(why)") }
                    remaining -= 1
                    all.broadcast()
                }
            }
        }
        all.withLock { while remaining > 0 { all.wait() } }
        if !failed.isEmpty {
            c.log.warning("the pages recovered from \(deadEndpoint) are not all logged again (\(failed.joined(separator: "; "))); its log is kept for them")
            return false
        }
        return lock.withLock { !fallbackTaken }
    }

    deinit { close(doneFD) }

    /// The outcome, once `doneFD` is signalled.
    var outcome: Result<Outcome, Error>? { lock.withLock { result } }

    enum RecoveryError: Error, CustomStringConvertible {
        case pagesLost(asked: Int, found: Int)
        case node(String, String)
        /// Recovery nodes that could not be reached or failed on the way: planned around, once more.
        case recoveryNodesFailed([String], String)
        var description: String {
            switch self {
            case .pagesLost(let asked, let found):
                return "the write-back log gave back \(found) of the \(asked) pages the node held"
            case .node(let address, let why): return "recovery node \(address): \(why)"
            case .recoveryNodesFailed(let nodes, let why): return "recovery nodes \(nodes.joined(separator: ", ")) failed: \(why)"
            }
        }
    }

    /// A recovery node that dies during the recovery is planned around (up to 3 plans).
    private static func recoverRetrying(deadAddress: String, alsoDead: [String], deadLog: UInt64, slabs: [UInt64], keys: [UInt64],
                                        fallbacks: [Fallback], logBehind: Bool, _ c: Context) throws -> [Partition] {
        var avoid = alsoDead
        for attempt in 1... {
            do {
                return try recover(deadAddress: deadAddress, alsoDead: avoid, deadLog: deadLog, slabs: slabs, keys: keys,
                                   fallbacks: fallbacks, logBehind: logBehind, c)
            } catch RecoveryError.recoveryNodesFailed(let nodes, let why) where attempt < 3 {
                c.log.warning("recovering \(deadAddress): recovery nodes \(nodes.joined(separator: ", ")) failed (\(why)); planning around them")
                avoid += nodes
            }
        }
        fatalError("unreachable")
    }

    private static func recover(deadAddress: String, alsoDead: [String], deadLog: UInt64, slabs: [UInt64], keys: [UInt64],
                                fallbacks: [Fallback], logBehind: Bool, _ c: Context) throws -> [Partition] {
        var perSlab: [UInt64: UInt64] = [:]
        for s in slabs { perSlab[s] = 0 }
        for k in keys where perSlab[k >> RemotePool.slabShift] != nil { perSlab[k >> RemotePool.slabShift]! += 1 }
        let plan = try planWithRetries(deadAddress: deadAddress, alsoDead: alsoDead, slabs: perSlab.map { .init(slab: $0.key, pages: $0.value) }, c)
        guard !plan.isEmpty || keys.isEmpty else { throw RecoveryError.node(deadAddress, "the coordinator planned no recovery") }
        // Keys stored on the dead node away from their slab's node (it was full) go with the first
        // partition, which reads their slabs too.
        var slabNode: [UInt64: Int] = [:]
        for (k, p) in plan.enumerated() { for s in p.slabs { slabNode[s] = k } }
        var keysOf = [[UInt64]](repeating: [], count: plan.count)
        var extraSlabs = Set<UInt64>()
        for key in keys {
            let slab = key >> RemotePool.slabShift
            if let k = slabNode[slab] { keysOf[k].append(key) } else if !plan.isEmpty {
                keysOf[0].append(key)
                extraSlabs.insert(slab)
            }
        }
        var partitions = plan.enumerated().map { k, p in
            Partition(node: p.node, address: p.address, slabs: k == 0 ? p.slabs + extraSlabs.sorted() : p.slabs, owned: p.slabs, keys: keysOf[k])
        }
        // Every recovery node at once.
        let lock = Lock()
        var failures: [(address: String, why: String)] = []
        var remaining = partitions.count
        for k in partitions.indices {
            let p = partitions[k]
            startThread(name: "recover-part") {
                var pages = 0, mark: UInt64 = 0
                var failure: (String, String)?
                var kept: MemoryClient?
                do {
                    guard let ep = Endpoint(parsing: p.address) else { throw RecoveryError.node(p.address, "not HOST:PORT") }
                    let client = try MemoryClient(endpoint: ep, secret: c.secret, token: c.token, ioTimeoutSeconds: 600)
                    kept = client
                    let theirs = fallbacks.compactMap { f -> RecoveryFallback? in
                        let mine = p.keys.filter { f.keys.contains($0) }
                        return mine.isEmpty ? nil : RecoveryFallback(log: f.log, after: f.after, runs: Self.runs(mine))
                    }
                    let answer = try client.recover(RecoverSpace(space: c.space, ephemeral: c.ephemeral, logged: true, logBehind: logBehind,
                                                                 deadLog: deadLog, slabs: p.slabs, runs: Self.runs(p.keys), fallbacks: theirs))
                    pages = Int(answer.pages)
                    mark = answer.mark
                } catch {
                    failure = (p.address, "\(error)")
                }
                lock.withLock {
                    partitions[k].pages = pages
                    partitions[k].mark = mark
                    partitions[k].client = kept
                    if let failure { failures.append(failure) }
                    remaining -= 1
                    lock.broadcast()
                }
            }
        }
        lock.withLock { while remaining > 0 { lock.wait() } }
        if !failures.isEmpty || partitions.reduce(0, { $0 + $1.pages }) != keys.count { for p in partitions { p.client?.close() } }
        if !failures.isEmpty {
            throw RecoveryError.recoveryNodesFailed(failures.map { $0.address }, failures.map { "\($0.address): \($0.why)" }.joined(separator: "; "))
        }
        let found = partitions.reduce(0) { $0 + $1.pages }
        guard found == keys.count else { throw RecoveryError.pagesLost(asked: keys.count, found: found) }
        return partitions
    }

    /// Frees the dead node's log: nothing reads it any more (called after the outcome is out: the
    /// faults waiting do not wait for it).
    private static func freeLog(_ writer: UInt64, _ c: Context) {
        guard let dead = try? LogWriter(config: .init(writer: writer, secret: c.secret, token: CheckpointLogEntry.participantToken(writer: writer, secret: c.secret),
                                                      coordinator: c.coordinator)) else { return }
        dead.freeAll()
        dead.close()
    }

    /// The coordinator's plan; asked again for up to 10 s (the coordinator may be restarting).
    private static func planWithRetries(deadAddress: String, alsoDead: [String], slabs: [PlanRecovery.Slab], _ c: Context) throws -> [RecoveryPlan.Partition] {
        let deadline = monotonicNanos() + 10_000_000_000
        while true {
            do {
                let coordinator = try CoordinatorClient(endpoint: c.coordinator, secret: c.secret)
                defer { coordinator.close() }
                return try coordinator.planRecovery(space: c.space, deadAddress: deadAddress, alsoDead: alsoDead, slabs: slabs)
            } catch {
                if monotonicNanos() > deadline { throw error }
                c.log.warning("asking the coordinator at \(c.coordinator) to plan the recovery of \(deadAddress): \(error); trying again")
                usleep(200_000)
            }
        }
    }

    /// Sorted keys as runs of consecutive keys.
    static func runs(_ keys: [UInt64]) -> [PageRun] {
        var out: [PageRun] = []
        for k in keys {
            if let last = out.last, last.first + last.count == k { out[out.count - 1].count += 1 } else { out.append(PageRun(first: k, count: 1)) }
        }
        return out
    }
}
