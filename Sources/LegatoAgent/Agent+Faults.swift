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

    /// Installing `extra` more pages plus one more fault's worth could pass the budget.
    /// After an eviction that freed nothing (every node full, no thread to inject into), the next
    /// attempt waits until another batch has come in.
    func needsEviction(extra: Int = 0) -> Bool {
        mm.isManaged && budget.residentPages + extra + prefetchWindow + Agent.freezeSlack > budget.pages
            && budget.residentPages > evictionFloor
    }

    /// Pages kept free for the single-page faults served while threads are being frozen.
    static let freezeSlack = 16

    /// Serves a batch of faults: local ones at once; remote ones become fetches answered
    /// asynchronously (see Agent+Fetch), so the faults of several threads share a round trip; the
    /// lone pages of the batch go out together, one request per node.
    func serveFaults(_ faults: [Sys.UffdEvent]) throws {
        for (k, f) in faults.enumerated() {
            if !tracer.freezing && needsEviction(extra: fetcher.inboundPages) {
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

    func bufferedPage(key: UInt64) -> UnsafeRawPointer? {
        guard let loc = inflight[key], let b = batches[loc.batch] else { return nil }
        return UnsafeRawPointer(b.page(Int(loc.index)))
    }

    /// Discards the remote copies of pages that left the program, and forgets those on their way
    /// to a memory node.
    func discardRemoteCopies(of parts: [Region]) {
        var discards: [Int: [(vpn: UInt64, count: UInt64)]] = [:]
        for r in parts {
            for i in 0..<r.pageCount {
                let s = r.state(i)
                if s.contains(.remote) {
                    let key = r.key(at: i)
                    if let node = pool.location(key) {
                        if var last = discards[node]?.last, last.vpn + last.count == key {
                            last.count += 1
                            discards[node]![discards[node]!.count - 1] = last
                        } else {
                            discards[node, default: []].append((key, 1))
                        }
                    }
                    pool.recordDiscarded(key: key)
                }
                if s.contains(.inFlight) { inflight[r.key(at: i)] = nil }
            }
        }
        for (node, ranges) in discards { writeBack.submit(.discard(node: node, ranges: ranges)) }
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
        if st.contains(.inFlight), let loc = inflight[r.key(at: i)], let b = batches[loc.batch] {
            mm.faults.install(nil, r, i, count: 1, from: UnsafeRawPointer(b.page(Int(loc.index))))
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

    /// Liveness guard, checked once a second while the agent is idle: a thread of PROG asleep in a
    /// userfault twice in a row while nothing is on its way for it means its fault was dropped (a
    /// bug). Waking the whole address range makes every waiting thread fault again and the new
    /// message is served; waking a thread that does not wait is harmless. Logged and counted, never silent.
    func wakeStuckFaults() {
        let now = monotonicNanos()
        guard mm.isManaged, now - lastStuckCheck >= 1_000_000_000 else { return }
        lastStuckCheck = now
        guard !mm.faults.hasPending, fetcher.inboundPages == 0 else { stuckThreads = []; return }
        let waiting = Set(tracer.tracees.values.filter { $0.sharesMemory && ProcFile.text("/proc/\($0.tid)/wchan") == "handle_userfault" }.map { $0.tid })
        // A thread that faulted after the loop's last poll is waiting too, with its message queued:
        // only a thread seen waiting while the uffd has nothing for us, at two checks running, is stuck.
        // (Without this, threads faulting at the moment of each check were taken for a lost fault
        // now and then in busy runs.)
        var pending = pollfd(fd: mm.pollFD, events: Int16(POLLIN), revents: 0)
        guard !waiting.isEmpty, poll(&pending, 1, 0) == 0 else { stuckThreads = []; return }
        let still = waiting.intersection(stuckThreads)
        stuckThreads = waiting
        guard !still.isEmpty else { return }
        stuckThreads = []
        stats.lostFaultWakes += 1
        // Nothing is on its way, so no page can be waiting for a fetch answer: a `fetching` bit left
        // behind (an answer dropped while its range changed) would make every refault wait forever.
        var stale = 0
        for r in mm.table.regions.regions {
            for i in 0..<r.pageCount where r.state(i).contains(.fetching) {
                r.remove(i, .fetching)
                stale += 1
            }
        }
        let report = "\(stale) pages marked as being fetched with no fetch under way, cleared; \(registrationReport())"
        log.warning("thread(s) \(still.sorted()) of pid \(mainPID) have waited for a page for 2 s with nothing on its way; waking its faults again (\(report))")
        // The whole user address range: the lost fault may be on a page the table no longer holds
        // (a wake needs no registration); the refault then comes back as a new message.
        mm.faults.kernel.wake(start: 0x10000, length: 0x7fff_ffff_0000 - 0x10000)
    }

    /// For the liveness guard's warning: mappings the kernel has registered with a userfaultfd that
    /// the region table does not cover (a fault there reaches no one who knows the page).
    func registrationReport() -> String {
        let smaps = ProcFile.text("/proc/\(mainPID)/smaps") ?? ""
        var unknown: [String] = []
        var current: (UInt64, UInt64, String)?
        for line in smaps.split(separator: "\n") {
            if let dash = line.firstIndex(of: "-"), let space = line.firstIndex(of: " "), dash < space,
               let a = UInt64(line[..<dash], radix: 16), let b = UInt64(line[line.index(after: dash)..<space], radix: 16) {
                current = (a, b, String(line.split(separator: " ").dropFirst(5).joined(separator: " ")))
            } else if line.hasPrefix("VmFlags:"), let (a, b, path) = current, line.contains(" um") || line.contains(" uw") {
                var covered = a
                while covered < b, let r = mm.table.regions.find(covered) { covered = r.end }
                if covered < b { unknown.append("\(describeRange(a, b - a)) \(path) [\(line.dropFirst(9))] unknown from 0x\(String(covered, radix: 16))") }
            }
        }
        return unknown.isEmpty ? "every registered mapping is known" : "registered but not in the table: " + unknown.prefix(6).joined(separator: "; ")
    }
}
