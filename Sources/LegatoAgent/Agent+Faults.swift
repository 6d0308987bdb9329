import Glibc
import LegatoCore
import LegatoSystem

/// The agent's side of the fault path: each address space's FaultHandler serves its faults by the
/// userfaultfd rules; the agent decides when to evict between them, and is the handler's
/// `FaultSources` (the write-back buffer, memory nodes, a restored checkpoint).
extension Agent: FaultSources {
    func handleUffd() throws {
        try mm.faults.readEvents()
        try serveFaults(mm.faults.takePending())
    }

    /// Evicts if the budget needs it, then serves the faults that waited for the room.
    func maybeEvict() throws {
        guard try evictor.evictIfNeeded(inbound: fetcher.inboundPages) else { return }
        // (The freeze serves events: an exec may have ended the address space meanwhile.)
        if mm.faults?.hasPending == true { try handleUffd() }
    }

    /// Serves a batch of faults: local ones at once; remote ones become fetches answered
    /// asynchronously (see Fetcher), so the faults of several threads share a round trip; the
    /// lone pages of the batch go out together, one request per node.
    func serveFaults(_ faults: [Sys.UffdEvent]) throws {
        for (k, f) in faults.enumerated() {
            if !tracer.freezing && evictor.needsEviction(extra: fetcher.inboundPages) {
                // Evict before installing more; the rest are served right after.
                mm.faults.requeue(faults[k...])
                break
            }
            try mm.faults.serve(f)
            if fatalError != nil { return }
        }
        try fetcher.sendGathered()
    }

    func fetch(_ fault: Sys.UffdEvent, _ r: Region, _ i: Int, run: Int) throws { try fetcher.fetch(fault, r, i, run: run) }

    func readAhead(thread: UInt32, _ r: Region, _ i: Int, run: Int) throws { try fetcher.readAhead(thread: thread, r, i, run: run) }

    func bufferedPage(key: UInt64) -> UnsafeRawPointer? { writeBack.page(key: key) }

    /// Discards the remote copies of pages that left the program, and forgets those on their way
    /// to a memory node.
    func discardRemoteCopies(of parts: [Region]) {
        var discards = RemoteDiscards()
        for r in parts {
            for i in 0..<r.pageCount {
                let s = r.state(i)
                if s.contains(.remote) {
                    let key = r.key(at: i)
                    if let node = pool.location(key) { discards.add(key, on: node) }
                    pool.recordDiscarded(key: key)
                }
                if s.contains(.inFlight) { writeBack.forget(key: r.key(at: i)) }
            }
        }
        discards.send(through: writeBack)
    }

    /// Pages removed from the table (an mmap over them, exec): their remote copies go, and they no
    /// longer count as resident.
    func forget(_ parts: [Region]) {
        discardRemoteCopies(of: parts)
        mm.table.forget(parts)
    }

    // MARK: bringing pages in outside a fault

    /// Installs `page` if it is managed and not resident, so the agent can read it safely.
    func ensureResident(_ page: UInt64) throws {
        guard let r = mm.table.regions.find(page) else { return }
        let i = r.index(of: page)
        let st = r.state(i)
        if st.contains(.resident) { return }
        try bringIn(r, i)
    }

    private func bringIn(_ r: Region, _ i: Int) throws {
        if r.state(i).contains(.fetching), let node = pool.location(r.key(at: i)) {
            try fetcher.drain(node: node)
            if r.state(i).contains(.resident) || fatalError != nil { return }
        }
        let st = r.state(i)
        if st.contains(.inFlight), let page = writeBack.page(key: r.key(at: i)) {
            mm.faults.install(nil, r, i, count: 1, from: page)
        } else if st.contains(.remote) {
            try fetcher.fetchNow(r, i)
        } else if st.contains(.restoring) {
            try serveRestoring(nil, r, i, run: 0)
        } else {
            mm.faults.installZero(r, i)
        }
    }

    /// Brings every remote or buffered page back into PROG (before a fork: the child is unmanaged
    /// and must find its copy of every page present). The budget is exceeded until eviction catches up.
    func materializeAll() throws {
        try fetcher.drainAll()
        var n = 0
        for r in mm.table.regions.regions {
            for i in 0..<r.pageCount {
                let s = r.state(i)
                if !s.contains(.resident) && !s.isDisjoint(with: [.remote, .inFlight, .restoring]) {
                    try bringIn(r, i)
                    n += 1
                    if fatalError != nil { return }
                }
            }
        }
        if n > 0 {
            stats.materializedPages += n
            log.info("fork: brought \(n) pages (\(formatSize(UInt64(n * Page.size)))) back into pid \(mainPID) for the child")
        }
    }
}
