import Glibc
import LegatoCore
import LegatoSystem

/// The agent's side of the fault path: each address space's FaultHandler serves its faults by the
/// userfaultfd rules; the agent decides when to evict between them, and is the handler's
/// `FaultSources` (the write-back buffer, memory nodes, a restored checkpoint).
extension Agent: FaultSources {
    func handleUffd(_ space: AddressSpace) throws {
        try space.faults.readEvents()
        guard space.isManaged else { return }
        try serveFaults(space.faults.takePending(), in: space)
    }

    /// Evicts if the budget needs it, then serves the faults that waited for the room.
    func maybeEvict() throws {
        guard try evictor.evictIfNeeded(inbound: fetcher.inboundPages) else { return }
        // (The freeze serves events: an exec may have ended an address space meanwhile.)
        for s in managedSpaces where s.faults.hasPending { try handleUffd(s) }
    }

    /// Serves a batch of faults: local ones at once; remote ones become fetches answered
    /// asynchronously (see Fetcher), so the faults of several threads share a round trip; the
    /// lone pages of the batch go out together, one request per node.
    func serveFaults(_ faults: [Sys.UffdEvent], in space: AddressSpace) throws {
        for (k, f) in faults.enumerated() {
            if !tracer.freezing && evictor.needsEviction(extra: fetcher.inboundPages) {
                // Evict before installing more; the rest are served right after.
                space.faults.requeue(faults[k...])
                break
            }
            try space.faults.serve(f)
            if fatalError != nil { return }
        }
        try fetcher.sendGathered()
    }

    func fetch(_ h: FaultHandler, _ fault: Sys.UffdEvent, _ r: Region, _ i: Int, run: Int) throws { try fetcher.fetch(h, fault, r, i, run: run) }

    func readAhead(_ h: FaultHandler, thread: UInt32, _ r: Region, _ i: Int, run: Int) throws {
        try fetcher.readAhead(h, thread: thread, r, i, run: run)
    }

    func bufferedPage(key: UInt64) -> UnsafeRawPointer? { writeBack.page(key: key) }

    /// Discards the remote copies of pages that left the program (a copy a fork shared goes with
    /// its last holder), and forgets those on their way to a memory node.
    func discardRemoteCopies(of parts: [Region]) {
        var discards = RemoteDiscards()
        for r in parts {
            for i in 0..<r.pageCount {
                let s = r.state(i)
                if s.contains(.remote) {
                    let key = r.key(at: i)
                    if sharedKeys.release(key) {
                        for node in pool.holders(key) { discards.add(key, on: node) }
                        pool.recordDiscarded(key: key)
                    }
                }
                if s.contains(.inFlight) { writeBack.forget(key: r.key(at: i)) }
            }
        }
        discards.send(through: writeBack)
    }

    /// Lets go of remote copies under `keys` (a fork's shared copies no longer read by one holder):
    /// those with no holder left are discarded.
    func releaseRemoteCopies(keys: [UInt64]) {
        var discards = RemoteDiscards()
        for key in keys where sharedKeys.release(key) {
            for node in pool.holders(key) { discards.add(key, on: node) }
            pool.recordDiscarded(key: key)
        }
        discards.send(through: writeBack)
    }

    /// Pages removed from `space`'s table (an mmap over them, exec): their remote copies go, and
    /// they no longer count as resident.
    func forget(_ parts: [Region], in space: AddressSpace) {
        discardRemoteCopies(of: parts)
        space.table.forget(parts)
    }

    // MARK: bringing pages in outside a fault

    /// Installs `page` of `space` if it is managed and not resident, so the agent can read it safely.
    func ensureResident(_ page: UInt64, in space: AddressSpace) throws {
        guard space.isManaged, let r = space.table.regions.find(page) else { return }
        let i = r.index(of: page)
        let st = r.state(i)
        if st.contains(.resident) { return }
        try bringIn(r, i, in: space)
    }

    private func bringIn(_ r: Region, _ i: Int, in space: AddressSpace) throws {
        let h: FaultHandler = space.faults
        if r.state(i).contains(.fetching), let node = pool.location(r.key(at: i)) {
            try fetcher.drain(node: node)
            if r.state(i).contains(.resident) || fatalError != nil { return }
        }
        let st = r.state(i)
        if st.contains(.inFlight), let page = writeBack.page(key: r.key(at: i)) {
            h.install(nil, r, i, count: 1, from: page)
        } else if st.contains(.remote) {
            // A page of a dead node waits for its recovery (which wakes the faults parked on it).
            while try !fetcher.fetchNow(h, r, i) && fatalError == nil {
                try waitForRecoveries()
                if r.state(i).contains(.resident) { return }
                r.remove(i, .fetching)
            }
        } else if st.contains(.restoring) {
            try serveRestoring(nil, r, i, run: 0)
        } else {
            h.installZero(r, i)
        }
    }

    /// Brings the pages of `space` in `states` that are not resident into its process (before a
    /// fork: pages a write-back batch no node will take, and a restore's pages not back yet, are
    /// not where a child could share them). The budget is exceeded until eviction catches up.
    func materialize(_ states: PageState, in space: AddressSpace) throws {
        var n = 0
        for r in space.table.regions.regions {
            for i in 0..<r.pageCount {
                let s = r.state(i)
                if !s.contains(.resident) && !s.isDisjoint(with: states) {
                    try bringIn(r, i, in: space)
                    n += 1
                    if fatalError != nil { return }
                }
            }
        }
        if n > 0 {
            stats.materializedPages += n
            log.info("fork: brought \(n) pages (\(formatSize(UInt64(n * Page.size)))) back into pid \(space.pid) before it forked")
        }
    }
}
