import Glibc
import LegatoCore
import LegatoSystem

/// A memory node dies while it holds pages of the run: with `--memory-replication log` the run goes
/// on. Faults on the dead node's pages wait (Fetcher parks them), new write-backs go to the other
/// nodes, and a NodeRecovery rebuilds the dead node's pages on them from its write-back log; then
/// its pages are fetched from their new nodes. Without replication the run stops, as it must: no
/// page is ever served stale or zero.
extension Agent {
    /// Node `node` failed (`why`); answers whether the run goes on.
    func memoryNodeFailed(_ node: Int, why: String) -> Bool {
        let n = pool.nodes[node]
        if n.dead { return fatalError == nil }  // known already: its recovery (if it held pages) is under way
        let failure = NodeFailure(node: n.endpoint, pagesHeld: n.pagesHeld, underlying: why)
        guard config.memoryReplication == .log, n.logWriter != 0, let coordinator = config.coordinator else {
            fail(failure.description)
            return false
        }
        let keys = newestCopies(on: node)
        let holdings = pool.holdings(of: node)
        pool.markDead(node)
        pool.awaitingRecovery.formUnion(keys)
        log.warning("memory node \(n.endpoint) failed (\(why)) holding \(keys.count) pages (\(formatSize(UInt64(keys.count * Page.size)))) of the run; recovering them from its write-back log while the run goes on")
        do {
            recoveries[node] = try NodeRecovery(dead: node, endpoint: n.endpoint, deadLog: n.logWriter, slabs: holdings.slabs,
                                                keys: keys, alsoDead: pool.nodes.filter { $0.dead && $0.index != node }.map { $0.endpoint },
                                                context: .init(space: space, ephemeral: config.name == nil, secret: config.secret,
                                                               token: token, coordinator: coordinator, log: log))
        } catch {
            fail("\(failure.description); its recovery could not start: \(error)")
            return false
        }
        stats.nodeFailures += 1
        return true
    }

    /// Every key with a copy on node `node` the run may read again (acknowledged there, not since
    /// replaced by a batch on its way; a key stored there away from its slab's node too), over
    /// every address space of the run.
    func newestCopies(on node: Int) -> [UInt64] {
        var keys = Set<UInt64>()
        for s in spaces.values {
            for r in s.table.regions.regions {
                for i in 0..<r.pageCount {
                    let st = r.state(i)
                    // A resident page's remote copy counts too: a clean page is evicted by dropping it.
                    guard st.contains(.remote), !st.contains(.inFlight) else { continue }
                    let key = r.key(at: i)
                    if pool.location(key) == node { keys.insert(key) }
                }
            }
        }
        return Array(keys)
    }

    /// A recovery's thread is done: its pages move to their new nodes and the faults that waited
    /// fault again there; or, if it failed, the run stops.
    func finishRecovery(_ r: NodeRecovery) {
        guard let outcome = r.outcome else { return }
        recoveries[r.dead] = nil
        switch outcome {
        case .failure(let error):
            fail("memory node \(r.deadEndpoint) failed holding \(r.keys.count) pages of the program, and they could not be recovered: \(error)")
        case .success(let o):
            var newOwner: [UInt64: Int] = [:]
            var first: Int?
            do {
                for p in o.partitions {
                    let i = try pool.node(id: p.node, address: p.address)
                    if first == nil { first = i }
                    for s in p.owned { newOwner[s] = i }
                }
            } catch {
                return fail("memory node \(r.deadEndpoint)'s pages were recovered, but a recovery node cannot be reached: \(error)")
            }
            pool.applyRecovery(dead: r.dead, newOwner: newOwner, recovered: r.keys, strayOwner: first ?? 0)
            pool.awaitingRecovery.subtract(r.keys)
            writeBack.recoveryDone()
            fetcher.resumeParked()
            stats.recoveredPages += r.keys.count
            stats.recoveryNanos += monotonicNanos() - r.started
            let shares = o.partitions.map { "\($0.pages) on \($0.address)" }.joined(separator: ", ")
            log.warning("recovered the \(r.keys.count) pages (\(formatSize(UInt64(r.keys.count * Page.size)))) memory node \(r.deadEndpoint) held in \(String(format: "%.2f", o.seconds)) s: \(shares)")
        }
    }

    /// Serves the event loop until no recovery is under way (a page outside a fault is needed
    /// from a dead node).
    func waitForRecoveries() throws {
        try loop(until: { recoveries.isEmpty || fatalError != nil })
    }
}
