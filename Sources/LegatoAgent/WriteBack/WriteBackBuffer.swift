import Glibc
import LegatoCore
import LegatoSystem

/// Pages on their way to memory nodes (evicted dirty, or restored past the budget): each batch
/// stays here, newest copy of its pages, until its node acknowledges it; a fault on one of its
/// pages is served from the batch. The write-back thread (`WriteBack`) does the stores; this side
/// runs on the event loop, applies their outcomes, and sends a refused batch to another node.
///
/// Contract: a page is `inFlight` in the page table exactly while `location(of:)` finds it here.
/// A batch no node will take stays (its pages kept local, over the budget) and is counted.
final class WriteBackBuffer {
    /// Bytes of batches on their way above which an eviction first waits for acknowledgements.
    static let maxInflightBytes = 64 << 20

    struct Counters {
        var storedPages = 0     // pages acknowledged by memory nodes
        var mirroredPages = 0   // of those, pages acknowledged by two nodes (mirror, adaptive)
        var keptLocalPages = 0  // pages kept local because every memory node was full
    }

    let thread: WriteBack
    let pool: RemotePool
    private(set) var counters = Counters()
    private(set) var inflightBytes = 0
    private var batches: [UInt64: WriteBackBatch] = [:]
    private var inflight: [UInt64: (batch: UInt64, index: Int32)] = [:]
    private var nextBatchID: UInt64 = 1
    private var stuckBatches: [UInt64] = []
    private var warnedFull = false
    private let buffers = BatchBuffers()
    private let log: Logger
    /// Told that a memory node holding pages of the program failed; answers whether the run goes
    /// on (the node's pages are being recovered) or stops.
    var onNodeFailure: (_ node: Int, _ why: String) -> Bool = { _, _ in false }

    init(thread: WriteBack, pool: RemotePool, log: Logger) {
        self.thread = thread
        self.pool = pool
        self.log = log
    }

    /// A new batch of `keys` (pages of `table`'s address space) for `node`, its buffer to be filled
    /// by the caller before `send`.
    func makeBatch(node: Int, keys: [UInt64], table: PageTable) -> WriteBackBatch {
        defer { nextBatchID += 1 }
        let b = WriteBackBatch(id: nextBatchID, node: node, keys: keys, table: table, buffers: buffers)
        if pool.mirrored { b.mirror = pool.mirror(for: keys[0], primary: node) }
        return b
    }

    /// Sends `b` to `node` (and, mirrored, a mirror of it) from now on.
    private func route(_ b: WriteBackBatch, to node: Int) {
        b.node = node
        if pool.mirrored { b.mirror = pool.mirror(for: b.keys[0], primary: node) }
    }

    /// Records the batch's pages as here (the caller marks them `inFlight`), without sending it yet.
    func hold(_ b: WriteBackBatch) {
        if PageTrace.on { PageTrace.note("HOLD b\(b.id) n\(b.node) \(PageTrace.keys(b.keys))") }
        for (k, key) in b.keys.enumerated() { inflight[key] = (b.id, Int32(k)) }
        batches[b.id] = b
        inflightBytes += b.bytes
    }

    /// Hands held batches to the write-back thread (one with a page a recovery is rebuilding waits
    /// for it: see RemotePool.awaitingRecovery). Every store goes through here, a batch sent again
    /// too: stored while the recovery (or a ReMirror) writes its old copy, the new one could be
    /// overwritten by it.
    func send(_ b: WriteBackBatch) {
        if !pool.awaitingRecovery.isEmpty && b.keys.contains(where: { pool.awaitingRecovery.contains($0) }) {
            PageTrace.note("WAIT b\(b.id)")
            waitingForRecovery.append(b)
            waitingBytes += b.bytes
            return
        }
        PageTrace.note("SEND b\(b.id) n\(b.node)")
        thread.submit(.store(b))
    }

    /// Batches held back by a recovery under way, and their bytes.
    private var waitingForRecovery: [WriteBackBatch] = []
    private var waitingBytes = 0
    /// Bytes of batches handed to the write-back thread and not acknowledged yet.
    var sendingBytes: Int { inflightBytes - waitingBytes }

    /// A recovery is done: the batches it held back go (to their pages' nodes now).
    func recoveryDone() {
        let all = waitingForRecovery
        waitingForRecovery.removeAll()
        waitingBytes = 0
        for held in all {
            // (A newer batch may have taken some of its pages meanwhile.)
            guard let b = current(held) else { continue }
            if let n = pool.route(b.keys[0]) { route(b, to: n) }
            PageTrace.note("UNWAIT b\(b.id) n\(b.node)")
            send(b)
        }
    }

    /// Discards remote copies on `node` (in order after the stores sent before).
    func discard(node: Int, ranges: [(vpn: UInt64, count: UInt64)]) { thread.submit(.discard(node: node, ranges: ranges)) }

    /// Where page `key`'s newest copy is while its batch is on its way.
    func location(of key: UInt64) -> (batch: WriteBackBatch, index: Int)? {
        guard let loc = inflight[key], let b = batches[loc.batch] else { return nil }
        return (b, Int(loc.index))
    }

    func page(key: UInt64) -> UnsafeRawPointer? {
        location(of: key).map { UnsafeRawPointer($0.batch.page($0.index)) }
    }

    /// The page left the program (discarded, unmapped): its copy here is no longer what it holds.
    func forget(key: UInt64) { inflight[key] = nil }

    /// Applies what the write-back thread has done since the last call.
    func processCompletions() {
        for outcome in thread.takeCompletions() {
            switch outcome {
            case .stored(let b) where pool.nodes[b.node].dead || b.mirror.map({ pool.nodes[$0].dead }) == true:
                PageTrace.note("ACKDEAD b\(b.id) n\(b.node)")
                // Stored just before its node died, but its death was seen first: the recovery
                // does not know of these pages, so they go to a live node.
                resend(b, away: pool.nodes[b.node].dead ? b.node : b.mirror!)
            case .stored(let b):
                // Only the pages this batch still holds the newest copy of move to its node: a batch
                // sent again (its node refused it or died) can be acknowledged after a newer batch of
                // the same page, whose node must stay the page's location.
                if PageTrace.on { PageTrace.note("ACK b\(b.id) n\(b.node) stale=\(PageTrace.keys(b.keys.indices.compactMap { holdsNewest(b, $0) ? nil : b.keys[$0] }))") }
                let stale = pool.recordStored(keys: b.keys.indices.compactMap { holdsNewest(b, $0) ? b.keys[$0] : nil }, on: b.node, mirror: b.mirror)
                discardStale(stale)
                counters.storedPages += b.keys.count
                if b.mirror != nil { counters.mirroredPages += b.keys.count }
                release(b)
            case .refused(let refused, let full, let why):
                PageTrace.note("REFUSED b\(refused.id) n\(full)")
                lastRefusal = "memory node \(pool.nodes[full].endpoint): \(why)"
                guard let b = current(refused) else { continue }
                if full != b.node, pool.mirrored {
                    // Its mirror is full: another mirror (or one copy, if no other node has room).
                    _ = pool.alternative(to: full)
                    b.mirror = pool.mirror(for: b.keys[0], primary: b.node)
                    log.info("memory node \(pool.nodes[full].endpoint) is full (\(why)); mirroring \(b.keys.count) pages on \(b.mirror.map { pool.nodes[$0].endpoint.description } ?? "no other node")")
                    send(b)
                } else if let other = pool.alternative(to: full) {
                    log.info("memory node \(pool.nodes[full].endpoint) is full (\(why)); sending \(b.keys.count) pages to \(pool.nodes[other].endpoint)")
                    route(b, to: other)
                    PageTrace.note("RESEND b\(b.id) n\(b.node)")
                    send(b)
                } else {
                    keep(b)
                }
            case .failed(let node, let batch, let why):
                PageTrace.note("FAILED n\(node) b\(batch?.id ?? 0)")
                let n = pool.nodes[node]
                if n.dead {
                    // Known already (its recovery is under way).
                } else if n.pagesHeld > 0 || hasBatches(for: node) {
                    guard onNodeFailure(node, why) else { return }
                } else {
                    pool.markDead(node)
                    log.warning("memory node \(n.endpoint) failed (\(why)); it held none of our pages")
                }
                // The batch still holds the newest copy of its pages: it goes to a live node.
                if let b = batch { resend(b, away: node) }
            }
        }
    }

    /// Discards second copies left stale by newer stores (no newer batch of them is on its way:
    /// only the keys a batch held the newest copy of are recorded stored).
    private func discardStale(_ stale: [(node: Int, key: UInt64)]) {
        guard !stale.isEmpty else { return }
        var byNode: [Int: [UInt64]] = [:]
        for s in stale { byNode[s.node, default: []].append(s.key) }
        for (node, keys) in byNode {
            var ranges: [(vpn: UInt64, count: UInt64)] = []
            for k in keys.sorted() {
                if let last = ranges.last, last.vpn + last.count == k { ranges[ranges.count - 1].count += 1 } else { ranges.append((k, 1)) }
            }
            discard(node: node, ranges: ranges)
        }
    }

    /// Whether a batch on its way goes to `node` (or to it as its mirror).
    func hasBatches(for node: Int) -> Bool { batches.values.contains { $0.node == node || $0.mirror == node } }

    /// Sends a batch its node did not take to another node (or keeps it, if there is none).
    private func resend(_ sent: WriteBackBatch, away node: Int) {
        guard let b = current(sent) else { return }
        if let other = pool.route(b.keys[0]), other != node {
            route(b, to: other)
            PageTrace.note("RESEND b\(b.id) n\(b.node)")
            send(b)
        } else {
            keep(b)
        }
    }

    /// A batch no node will take: it stays in the buffer, which serves its pages' faults.
    private func keep(_ b: WriteBackBatch) {
        warnEveryNodeFull()
        stuckBatches.append(b.id)
        counters.keptLocalPages += b.keys.count
    }

    /// Whether page `k` of `b` is still the newest copy of its page (no newer batch or discard took it).
    private func holdsNewest(_ b: WriteBackBatch, _ k: Int) -> Bool {
        guard let loc = inflight[b.keys[k]] else { return false }
        return loc.batch == b.id && loc.index == Int32(k)
    }

    /// The batch to send again in place of `b`: `b` itself if it still holds the newest copy of every
    /// page, else a new batch of only those it does (a newer batch or a discard took the others: sent
    /// after that newer batch, the old copy would be stored over the new one), which takes over their
    /// `inFlight` entries; nil if it holds none (or its address space is gone).
    private func current(_ b: WriteBackBatch) -> WriteBackBatch? {
        let kept = b.keys.indices.filter { holdsNewest(b, $0) }
        if kept.count == b.keys.count { return b }
        batches[b.id] = nil
        inflightBytes -= b.bytes
        guard !kept.isEmpty, let table = b.table else { return nil }
        let fresh = makeBatch(node: b.node, keys: kept.map { b.keys[$0] }, table: table)
        fresh.mirror = b.mirror
        for (j, k) in kept.enumerated() { fresh.page(j).copyMemory(from: b.page(k), byteCount: Page.size) }
        PageTrace.note("FRESH b\(b.id) -> b\(fresh.id)")
        hold(fresh)
        return fresh
    }

    /// Pages an eviction keeps because no node will take them.
    func keptLocal(_ pages: Int) {
        counters.keptLocalPages += pages
        warnEveryNodeFull()
    }

    /// The last store a memory node refused, and why (its memory, or its write-back log, is full).
    private var lastRefusal: String?

    /// Once per run: the user is told the budget is passed because the memory nodes are full.
    private func warnEveryNodeFull() {
        guard !warnedFull else { return }
        warnedFull = true
        let why = lastRefusal.map { " (the last refusal, from \($0))" } ?? ""
        writeStderr("legato: warning: every memory node is full\(why); keeping pages local, over the --local-mem budget\n")
    }

    /// Batches on their way to a node (not those no node would take).
    var sendingBatches: Int { batches.count - stuckBatches.count }

    /// Another descriptor a wait for completions serves (the coordinator's word on dead nodes: a
    /// store to a node that went quiet completes only once it is known dead), and what to do then.
    var alsoServe: (fd: Int32, handle: () -> Void)?

    /// Blocks until the write-back thread completes something (or a second passes).
    func waitForCompletions() {
        var pfds = [pollfd(fd: thread.wakeFD, events: Int16(POLLIN), revents: 0),
                    pollfd(fd: alsoServe?.fd ?? -1, events: Int16(POLLIN), revents: 0)]
        _ = poll(&pfds, 2, 1000)
        if pfds[1].revents != 0 { alsoServe?.handle() }
        processCompletions()
    }

    /// The batch is on its node: faults on its pages now go there.
    private func release(_ b: WriteBackBatch) {
        for (k, key) in b.keys.enumerated() where holdsNewest(b, k) {
            inflight[key] = nil
            if let r = b.table?.region(forKey: key) { r.region.remove(r.index, .inFlight) }
        }
        batches[b.id] = nil
        inflightBytes -= b.bytes
    }
}
