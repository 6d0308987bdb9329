import Glibc
import LegatoCore
import LegatoSystem

/// A memory node dies while it holds pages of the run: with `--memory-replication log` the run goes
/// on. Faults on the dead node's pages wait (Fetcher parks them), new write-backs go to the other
/// nodes, and a NodeRecovery rebuilds the dead node's pages on them from its write-back log; then
/// its pages are fetched from their new nodes. Without replication the run stops, as it must: no
/// page is ever served stale or zero.
extension Agent {
    static let declaredDead = "the coordinator declared it dead"

    /// Node `node` failed (`why`); answers whether the run goes on.
    func memoryNodeFailed(_ node: Int, why: String) -> Bool {
        let n = pool.nodes[node]
        if n.dead { return fatalError == nil }  // known already: its recovery (if it held pages) is under way
        let failure = NodeFailure(node: n.endpoint, pagesHeld: n.pagesHeld, underlying: why)
        switch config.memoryReplication {
        case .mirror: return promoteMirrors(node, failure)
        case .adaptive:
            // Mirrored pages are read from their mirrors; logged ones are rebuilt from the log.
            let located = remoteKeys(on: node, inFlightToo: true)
            let logged = located.filter { pool.isLogged($0) }
            let recover = logged.filter { writeBack.location(of: $0) == nil }
            let holdings = pool.holdings(of: node)
            let loggedSet = Set(logged)
            // (Kept on the dead node until rebuilt: the promotion gives their slabs to mirror nodes,
            // which may hold an older copy of them.)
            for k in recover { pool.pin(k, to: node) }
            guard promoteMirrors(node, failure, located: located.filter { !loggedSet.contains($0) }) else { return false }
            if recover.isEmpty { return true }
            return recoverFromLog(node, failure, keys: recover, slabs: holdings.slabs, why: why)
        case .log:
            let keys = newestCopies(on: node)
            let holdings = pool.holdings(of: node)
            if PageTrace.on { PageTrace.note("DEAD n\(node) wanted=\(PageTrace.keys(keys.sorted()))") }
            pool.markDead(node)
            fetcher.parkRequests(to: node)
            guard recoverFromLog(node, failure, keys: keys, slabs: holdings.slabs, why: why) else { return false }
            stats.nodeFailures += 1
            return true
        case .none:
            fail(failure.description)
            return false
        }
    }

    /// Starts rebuilding `keys` (their newest copies were logged by dead node `node`, which owned
    /// `slabs`) on the live nodes from its write-back log; the node is marked dead already. Answers
    /// whether the run goes on.
    private func recoverFromLog(_ node: Int, _ failure: NodeFailure, keys: [UInt64], slabs: [UInt64], why: String) -> Bool {
        let n = pool.nodes[node]
        guard n.logWriter != 0, let coordinator = config.coordinator else {
            fail("\(failure.description); \(keys.count) of its pages were logged, but it kept no write-back log")
            return false
        }
        pool.awaitingRecovery.formUnion(keys)
        loggingBehind.removeAll { $0.settled }
        let fallbacks = loggingBehind.compactMap { $0.takeFallback(address: n.endpoint.description) }
        let unlogged = fallbacks.reduce(0) { $0 + $1.keys.count }
        let also = fallbacks.isEmpty ? "" : " (\(unlogged) pages it rebuilt after an earlier death were not in its log yet: they are read from the earlier node's log)"
        log.warning("memory node \(n.endpoint) failed (\(why)) holding \(keys.count) pages (\(formatSize(UInt64(keys.count * Page.size)))) of the run; recovering them from its write-back log while the run goes on\(also)")
        do {
            let r = try NodeRecovery(dead: node, endpoint: n.endpoint, deadLog: n.logWriter, slabs: slabs,
                                     keys: keys, alsoDead: pool.nodes.filter { $0.dead && $0.index != node }.map { $0.endpoint },
                                     fallbacks: fallbacks, context: .init(space: space, ephemeral: config.name == nil, secret: config.secret,
                                                    token: token, coordinator: coordinator, log: log))
            recoveries[ObjectIdentifier(r)] = r
        } catch {
            fail("\(failure.description); its recovery could not start: \(error)")
            return false
        }
        return true
    }

    /// Node `node` failed outside a store (a freeze, a checkpoint's read): a death like any other if it
    /// held anything of the run, else it is left out from now on. Answers whether the run goes on.
    func memoryNodeUnreachable(_ node: Int, why: String) -> Bool {
        let n = pool.nodes[node]
        if n.dead { return fatalError == nil }
        if n.pagesHeld > 0 || writeBack.hasBatches(for: node) { return memoryNodeFailed(node, why: why) }
        pool.markDead(node)
        fetcher.parkRequests(to: node)
        resumeParkedSoon = true
        log.warning("memory node \(n.endpoint) failed (\(why)); it held none of our pages")
        return true
    }

    /// The coordinator declared memory nodes at `addresses` dead: those the run uses are dealt with
    /// as failed (no connection of ours may have noticed: a host cut off sends no reset).
    func memoryNodesDeclaredDead(_ addresses: Set<String>) {
        for n in pool.nodes where !n.dead && addresses.contains(n.endpoint.description) {
            let why = Agent.declaredDead
            writeBack.thread.abandon(node: n.index, why: why)
            if !memoryNodeUnreachable(n.index, why: why) { return }
        }
    }

    /// Every key with a copy on node `node` the run may read again (acknowledged there, not since
    /// replaced by a batch on its way; a key stored there away from its slab's node too), over
    /// every address space of the run.
    func newestCopies(on node: Int) -> [UInt64] { remoteKeys(on: node, inFlightToo: false) }

    /// Every key of the run's address spaces with a remote copy located on `node` (a resident page's
    /// too: a clean page is evicted by dropping it); with `inFlightToo`, those replaced by a batch on
    /// its way as well.
    private func remoteKeys(on node: Int, inFlightToo: Bool) -> [UInt64] {
        var keys = Set<UInt64>()
        for s in spaces.values {
            for r in s.table.regions.regions {
                for i in 0..<r.pageCount {
                    let st = r.state(i)
                    guard st.contains(.remote), inFlightToo || !st.contains(.inFlight) else { continue }
                    let key = r.key(at: i)
                    if pool.location(key) == node { keys.insert(key) }
                }
            }
        }
        return Array(keys)
    }

    /// Mirrored, node `node` died (`failure`): the pages whose newest copy was there (`located`, by
    /// default every one; adaptive, those not logged) are read from their mirrors from now on, and a
    /// ReMirror gives every page left with one copy a second one. A page with no mirror (stored when
    /// no second node could take it) is lost: the run stops.
    private func promoteMirrors(_ node: Int, _ failure: NodeFailure, located: [UInt64]? = nil) -> Bool {
        let n = pool.nodes[node]
        let located = located ?? remoteKeys(on: node, inFlightToo: true)
        promotions += 1
        pool.markDead(node)
        fetcher.parkRequests(to: node)
        let p = pool.promoteMirrors(dead: node, keys: located, generation: promotions)
        if PageTrace.on { PageTrace.note("PROMOTED n\(node) \(PageTrace.keys(p.promoted.sorted())) unmirrored=\(PageTrace.keys(p.unmirrored.sorted()))") }
        // Remote pages not in flight whose one copy was there are gone; in flight, their batch
        // still holds them and goes elsewhere.
        let lost = p.lost.filter { writeBack.location(of: $0) == nil }
        if !lost.isEmpty {
            fail("\(failure.description); \(lost.count) of its pages had no mirror (no second node could take them when they were stored)")
            return false
        }
        stats.nodeFailures += 1
        stats.promotedPages += p.promoted.count
        resumeParkedSoon = true
        log.warning("memory node \(n.endpoint) failed (\(failure.underlying)); \(p.promoted.count) pages (\(formatSize(UInt64(p.promoted.count * Page.size)))) are read from their mirrors from now on, \(p.unmirrored.count) more lost their mirror")
        startReMirror(dead: node, keys: p.promoted + p.unmirrored)
        return true
    }

    /// Copies every key of `keys` (each with one copy, on its location) to another live node; not
    /// those in a batch on its way, which stores its two copies itself. Adaptive, while the memory
    /// nodes' room is below the threshold, they are logged where they are instead.
    private func startReMirror(dead: Int, keys: [UInt64]) {
        let relog = config.memoryReplication == .adaptive && pool.mirrorNow?() == false
        var bySource: [Int: [UInt64]] = [:]
        for k in keys where writeBack.location(of: k) == nil {
            if let at = pool.location(k) { bySource[at, default: []].append(k) }
        }
        var groups: [ReMirror.Group] = []
        var unplaced = 0
        for (source, keys) in bySource.sorted(by: { $0.key < $1.key }) {
            guard let target = relog ? source : pool.place(except: source) else {
                unplaced += keys.count
                continue
            }
            groups.append(.init(source: source, sourceEndpoint: pool.nodes[source].endpoint, target: target,
                                targetEndpoint: pool.nodes[target].endpoint, keys: keys))
        }
        if unplaced > 0 {
            log.warning("\(unplaced) pages keep one copy: no other live memory node can take a second")
        }
        guard !groups.isEmpty else { return }
        do {
            let m = try ReMirror(dead: dead, endpoint: pool.nodes[dead].endpoint, generation: promotions, groups: groups,
                                 space: space, secret: config.secret, token: token)
            recoveries[ObjectIdentifier(m)] = m
            for g in groups { pool.awaitingRecovery.formUnion(g.keys) }
        } catch {
            log.warning("copying \(keys.count) pages to new mirrors could not start: \(error); they keep one copy")
        }
    }

    func finishRecovery(_ task: any RecoveryTask) {
        if let r = task as? NodeRecovery { finishRecovery(r) } else if let m = task as? ReMirror { finishReMirror(m) }
    }

    /// A ReMirror is done: the pages it copied have their mirror on its targets; the stores it held
    /// back go.
    private func finishReMirror(_ m: ReMirror) {
        guard let o = m.outcome else { return }
        recoveries[ObjectIdentifier(m)] = nil
        var mirrored = 0
        for (g, copied) in zip(m.groups, o.copied) {
            mirrored += pool.applyReMirror(keys: copied, on: g.target, generation: m.generation)
            if PageTrace.on { PageTrace.note("REMIRRORED n\(g.target) \(PageTrace.keys(copied))") }
            pool.awaitingRecovery.subtract(g.keys)
        }
        writeBack.recoveryDone()
        stats.remirroredPages += mirrored
        for f in o.failures { log.warning("giving pages a second copy after \(m.deadEndpoint) died: \(f); they keep one copy") }
        let how = m.groups.allSatisfy { $0.source == $0.target } ? "are logged" : "have a mirror again"
        log.warning("\(mirrored) pages that had one copy since \(m.deadEndpoint) died \(how) (\(String(format: "%.2f", Double(monotonicNanos() - m.started) / 1e9)) s)")
    }

    /// A recovery's thread is done: its pages move to their new nodes and the faults that waited
    /// fault again there; or, if it failed, the run stops.
    func finishRecovery(_ r: NodeRecovery) {
        guard let outcome = r.outcome else { return }
        recoveries[ObjectIdentifier(r)] = nil
        switch outcome {
        case .failure(let error):
            fail("memory node \(r.deadEndpoint) failed holding \(r.keys.count) pages of the program, and they could not be recovered: \(error)")
        case .success(let o):
            // (The recovery's connections go once the agent has its own to every recovery node.)
            defer { for p in o.partitions { p.client?.close() } }
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
            if r.logsBehind {
                loggingBehind.removeAll { $0.settled }
                loggingBehind.append(r)
            }
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
