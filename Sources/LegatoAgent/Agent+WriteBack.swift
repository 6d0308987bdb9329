import Glibc
import LegatoCore
import LegatoSystem

/// Completions of the write-back thread, applied on the event loop.
extension Agent {
    func processCompletions() throws {
        for outcome in writeBack.takeCompletions() {
            switch outcome {
            case .stored(let b):
                pool.recordStored(keys: b.keys, on: b.node)
                stats.storedPages += b.keys.count
                release(b)
            case .refused(let b, let why):
                if let other = pool.alternative(to: b.node) {
                    log.info("memory node \(pool.nodes[b.node].endpoint) is full (\(why)); sending \(b.keys.count) pages to \(pool.nodes[other].endpoint)")
                    b.node = other
                    writeBack.submit(.store(b))
                } else {
                    // Nowhere to put them: they stay in the buffer, which serves their faults.
                    if !warnedFull {
                        warnedFull = true
                        writeStderr("legato: warning: every memory node is full; keeping pages local, over the --local-mem budget\n")
                    }
                    stuckBatches.append(b.id)
                    stats.keptLocalPages += b.keys.count
                }
            case .failed(let node, let why):
                let n = pool.nodes[node]
                if n.pagesHeld > 0 || batches.values.contains(where: { $0.node == node }) {
                    fail(NodeFailure(node: n.endpoint, pagesHeld: n.pagesHeld, underlying: why).description)
                    return
                }
                n.dead = true
                log.warning("memory node \(n.endpoint) failed (\(why)); it held none of our pages")
            }
        }
    }

    /// The batch is on its node: faults on its pages now go there.
    private func release(_ b: WriteBackBatch) {
        for (k, key) in b.keys.enumerated() {
            if let loc = inflight[key], loc.batch == b.id, loc.index == Int32(k) {
                inflight[key] = nil
                if let r = mm.table.region(forKey: key) { r.region.remove(r.index, .inFlight) }
            }
        }
        batches[b.id] = nil
        inflightBytes -= b.bytes
    }

    /// Blocks until the write-back thread completes something.
    func waitForCompletions() throws {
        var pfd = pollfd(fd: writeBack.wakeFD, events: Int16(POLLIN), revents: 0)
        _ = poll(&pfd, 1, 1000)
        try processCompletions()
    }
}
