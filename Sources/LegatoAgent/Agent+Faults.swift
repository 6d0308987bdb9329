import Glibc
import LegatoCore
import LegatoSystem

/// The fault path: uffd events in, pages installed with UFFDIO_COPY.
///
/// Events are read in batches and the non-cooperative ones (REMOVE, UNMAP, REMAP) are applied
/// before the faults of the same batch: the kernel hands out faults first, and a fault queued
/// behind an unmap must not be served from the pre-unmap state.
extension Agent {
    func handleUffd() throws {
        try readEvents()
        let faults = retryFaults
        retryFaults.removeAll()
        try serveFaults(faults)
    }

    /// Reads the pending uffd messages: unmap and remap are applied at once, faults are queued
    /// (in `retryFaults`) to be served after them.
    func readEvents() throws {
        while true {
            let n = try Sys.uffdReadEvents(uffd, into: eventBuffer, max: 64)
            if n == 0 { break }
            for k in 0..<n {
                let e = eventBuffer[k]
                switch Sys.UffdEventKind(rawValue: e.kind) ?? .other {
                case .pageFault: retryFaults.append(e)
                case .unmap:
                    log.trace("UNMAP \(describeRange(e.addr, e.a2 - e.addr))")
                    dropRange(e.addr, e.a2)
                case .remap:
                    log.trace("REMAP \(describeRange(e.addr, e.a3)) -> 0x\(String(e.a2, radix: 16))")
                    regions.move(from: e.addr, to: e.a2, length: e.a3)
                case .remove, .fork, .other: log.warning("unexpected userfaultfd event \(e.kind)/\(e.flags)")
                }
            }
            if n < 64 { break }
        }
    }

    /// Installing `extra` more pages plus one more fault's worth could pass the budget.
    /// After an eviction that freed nothing (every node full, no thread to inject into), the next
    /// attempt waits until another batch has come in.
    func needsEviction(extra: Int = 0) -> Bool {
        uffd >= 0 && stats.residentPages + extra + prefetchWindow + Agent.freezeSlack > budgetPages
            && stats.residentPages > evictionFloor
    }

    /// Pages kept free for the single-page faults served while threads are being frozen.
    static let freezeSlack = 16

    /// Serves a batch of faults: local ones at once; remote ones become fetches answered
    /// asynchronously (see Agent+Fetch), so the faults of several threads share a round trip; the
    /// lone pages of the batch go out together, one request per node.
    func serveFaults(_ faults: [Sys.UffdEvent]) throws {
        for (k, f) in faults.enumerated() {
            if phase == .running && needsEviction(extra: inboundPages) {
                // Evict before installing more; the rest are served right after.
                retryFaults.append(contentsOf: faults[k...])
                break
            }
            try serveFault(f)
            if fatalError != nil { return }
        }
        try sendGathered()
    }

    /// Serves one fault locally, or sends the fetch of its page.
    func serveFault(_ f: Sys.UffdEvent) throws {
        let page = Page.alignDown(f.addr)
        stats.faults += 1
        guard let r = regions.find(page) ?? adoptUnknown(page) else {
            // The mapping is gone: wake the thread, it will take the SIGSEGV a plain run would.
            _ = Sys.uffdWake(uffd, start: page, length: Page.size.u64)
            return
        }
        let i = r.index(of: page)
        let st = r.state(i)
        // While freezing, serve single pages only: just enough for threads to reach their stop.
        let run = phase == .running ? sequentialRun(thread: f.tid, page: page) : 0
        if st.contains(.fetching) {
            // On its way (prefetched or asked for by another thread): the install wakes this thread.
            stats.inboundHits += 1
            if run > 0 { try readAhead(thread: f.tid, r, i, run: run) }
        } else if st.contains(.resident) {
            // Stale (already present: EEXIST wakes it) or dropped behind our back: Linux gives zeros then.
            install(f, r, i, count: 1, from: zeroPages)
        } else if st.contains(.inFlight), let loc = inflight[r.key(at: i)], let b = batches[loc.batch] {
            stats.bufferHits += 1
            install(f, r, i, count: 1, from: UnsafeRawPointer(b.page(Int(loc.index))))
        } else if st.contains(.remote) {
            try fetch(f, r, i, run: run)
        } else if st.contains(.restoring) {
            try serveRestoring(f, r, i, run: run)
        } else {
            let n = zeroRun(r, i, run: run)
            let writing = f.flags & Sys.uffdPageFaultFlagWrite != 0
            if install(f, r, i, count: n, from: zeroPages, writable: writing) == .done { stats.zeroFills += n }
            advanceFrontier(f.tid, r.address(at: i + n - 1))
        }
    }

    /// How long a run of consecutive pages thread `tid` has been faulting on, counting this fault.
    /// A stream continues at the page after the last one installed or fetched for it.
    private func sequentialRun(thread tid: UInt32, page: UInt64) -> Int {
        let s = streams[tid]
        let continues = s.map { page > $0.last && page <= $0.frontier &+ Page.size.u64 } ?? false
        let run = continues ? s!.run + 1 : 0
        // The pages a stream has moved past are the first to go (drop-behind): a scan does not come
        // back to them before it has seen everything else, which FIFO would evict first.
        if continues && run >= 2 && page > s!.last + Page.size.u64 { consumed.push(s!.last, page) }
        if streams.count > 256 && s == nil { streams.removeAll(keepingCapacity: true) }
        streams[tid] = Stream(last: page, frontier: continues ? max(s!.frontier, page) : page, run: run)
        return run
    }

    /// How many pages from i on to zero-fill: 1, or more ahead of a sequential stream of untouched pages.
    private func zeroRun(_ r: Region, _ i: Int, run: Int) -> Int {
        guard run >= 2 else { return 1 }
        let want = min(prefetchWindow, 1 << min(run, 8))
        var n = 1
        let busy = PageState.resident.rawValue | PageState.remote.rawValue | PageState.inFlight.rawValue | PageState.fetching.rawValue
            | PageState.restoring.rawValue
        while n < want && i + n < r.pageCount && r.states[i + n] & busy == 0 { n += 1 }
        return n
    }

    enum InstallResult { case done, again, gone }

    /// UFFDIO_COPY of `count` pages at r[i...] (write-protected, so writes are tracked), then the
    /// bookkeeping. EEXIST means already present (wake the waiter); EAGAIN means the address
    /// space is changing: the fault is retried after the pending events are read.
    @discardableResult
    /// `writable` installs without write protection: for pages about to be written (a write fault
    /// on untouched memory), which saves the kernel's write-protect fault; they count as written.
    func install(_ f: Sys.UffdEvent?, _ r: Region, _ i: Int, count: Int, from src: UnsafeRawPointer, writable: Bool = false) -> InstallResult {
        let dst = r.address(at: i)
        let (err, copied) = Sys.uffdCopy(uffd, to: dst, from: src, length: UInt64(count * Page.size), writeProtect: !writable)
        let done = Int(copied) / Page.size
        if done > 0 { markInstalled(r, i, done) }

        switch err {
        case 0:
            return .done
        case EEXIST:
            if done == 0 {
                // The page is there already: a stale fault, or populated without us. Make sure it counts.
                if !r.state(i).contains(.resident) { markInstalled(r, i, 1, dirty: true) }
                stats.staleFaults += 1
                _ = Sys.uffdWake(uffd, start: dst, length: Page.size.u64)
                return count == 1 ? .done : install(f, r, i + 1, count: count - 1, from: src + Page.size, writable: writable)
            }
            // Pages [i, i+done) went in; page i+done exists; go on after it.
            return install(f, r, i + done, count: count - done, from: src + done * Page.size, writable: writable)
        case EAGAIN:
            if done > 0 { return install(f, r, i + done, count: count - done, from: src + done * Page.size, writable: writable) }
            if let f { retryFaults.append(f) }
            return .again
        case ENOENT, EFAULT, ESRCH:
            return .gone
        default:
            log.warning("UFFDIO_COPY \(describeRange(dst, UInt64(count * Page.size))) in pid \(mainPID): \(Errno.name(err))")
            return .gone
        }
    }

    @inline(__always)
    private func markInstalled(_ r: Region, _ i: Int, _ n: Int, dirty: Bool = false) {
        var added = 0
        for k in i..<i + n {
            var s = r.state(k)
            if s.contains(.resident) { continue }
            s.remove(.fetching)
            s.insert(.resident)
            if dirty { s.insert(.dirty) } else { s.remove(.dirty) }
            r.setState(k, s)
            pushVictim(r, k)
            added += 1
        }
        stats.noteResident(added)
    }

    /// A fault in a registered range the table does not know: a stack that grew down, or a VMA
    /// the kernel created from one of ours. Adopts the VMA's unknown parts as fresh (never written) pages.
    func adoptUnknown(_ page: UInt64) -> Region? {
        guard let maps = try? ProcMaps.read(pid: mainPID),
              let m = maps.first(where: { $0.start <= page && page < $0.end && $0.isPrivate && $0.inode == 0 }) else { return nil }
        var a = m.start
        while a < m.end {
            if let r = regions.find(a) { a = r.end; continue }
            let next = regions.firstIndex(atOrAbove: a)
            let gapEnd = next < regions.regions.count ? min(m.end, regions.regions[next].start) : m.end
            regions.add(start: a, end: gapEnd, growsDown: m.path == "[stack]")
            a = gapEnd
        }
        log.debug("adopted \(describeRange(m.start, m.end - m.start)) after a fault at 0x\(String(page, radix: 16))")
        return regions.find(page)
    }

    // MARK: pages leaving

    /// PROG unmapped [start, end) (munmap, an mmap over it, an mremap that shrank it): its pages are
    /// gone and their remote copies are discarded.
    func dropRange(_ start: UInt64, _ end: UInt64) {
        forget(regions.remove(start: start, end: end))
    }

    /// Resets the pages of `parts` to untouched and discards their remote copies.
    func forget(_ parts: [Region]) {
        var discards: [Int: [(vpn: UInt64, count: UInt64)]] = [:]
        var gone = 0
        for r in parts {
            for i in 0..<r.pageCount {
                let s = r.state(i)
                if s.contains(.resident) { gone += 1 }
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
                r.setState(i, s.intersection(.queued))
            }
        }
        if gone > 0 { stats.noteResident(-gone) }
        for (node, ranges) in discards { writeBack.submit(.discard(node: node, ranges: ranges)) }
    }

    // MARK: bringing pages in outside a fault

    /// Installs `page` if it is managed and not resident, so the agent can read it safely.
    func ensureResident(_ page: UInt64) throws {
        guard let r = regions.find(page) else { return }
        let i = r.index(of: page)
        let st = r.state(i)
        if st.contains(.resident) { return }
        try bringIn(r, i)
    }

    private func bringIn(_ r: Region, _ i: Int) throws {
        if r.state(i).contains(.fetching), let node = pool.location(r.key(at: i)) {
            try drainInbound(node: node)
            if r.state(i).contains(.resident) || fatalError != nil { return }
        }
        let st = r.state(i)
        if st.contains(.inFlight), let loc = inflight[r.key(at: i)], let b = batches[loc.batch] {
            install(nil, r, i, count: 1, from: UnsafeRawPointer(b.page(Int(loc.index))))
        } else if st.contains(.remote) {
            let key = r.key(at: i)
            guard let node = pool.location(key) else { return }
            do {
                try drainInbound(node: node)
                syncKey[0] = key
                try pool.fetch(node: node, keys: UnsafeBufferPointer(start: syncKey, count: 1), present: syncPresent, out: syncPage)
            } catch let e as NodeFailure {
                fail(e.description)
                return
            }
            if install(nil, r, i, count: 1, from: syncPage) == .done { stats.fetchedPages += 1 }
        } else if st.contains(.restoring) {
            try serveRestoring(nil, r, i, run: 0)
        } else {
            install(nil, r, i, count: 1, from: zeroPages)
        }
    }

    /// Brings every remote or buffered page back into PROG (before a fork: the child is unmanaged
    /// and must find its copy of every page present). The budget is exceeded until eviction catches up.
    func materializeAll() throws {
        try drainAllInbound()
        var n = 0
        for r in regions.regions {
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
        guard uffd >= 0, now - lastStuckCheck >= 1_000_000_000 else { return }
        lastStuckCheck = now
        guard retryFaults.isEmpty, inboundPages == 0 else { stuckThreads = []; return }
        let waiting = Set(tracees.values.filter { $0.sharesMemory && ProcFile.text("/proc/\($0.tid)/wchan") == "handle_userfault" }.map { $0.tid })
        // A thread that faulted after the loop's last poll is waiting too, with its message queued:
        // only a thread seen waiting while the uffd has nothing for us, at two checks running, is stuck.
        // (Without this, threads faulting at the moment of each check were taken for a lost fault
        // now and then in busy runs.)
        var pending = pollfd(fd: uffd, events: Int16(POLLIN), revents: 0)
        guard !waiting.isEmpty, poll(&pending, 1, 0) == 0 else { stuckThreads = []; return }
        let still = waiting.intersection(stuckThreads)
        stuckThreads = waiting
        guard !still.isEmpty else { return }
        stuckThreads = []
        stats.lostFaultWakes += 1
        // Nothing is on its way, so no page can be waiting for a fetch answer: a `fetching` bit left
        // behind (an answer dropped while its range changed) would make every refault wait forever.
        var stale = 0
        for r in regions.regions {
            for i in 0..<r.pageCount where r.state(i).contains(.fetching) {
                r.remove(i, .fetching)
                stale += 1
            }
        }
        let report = "\(stale) pages marked as being fetched with no fetch under way, cleared; \(registrationReport())"
        log.warning("thread(s) \(still.sorted()) of pid \(mainPID) have waited for a page for 2 s with nothing on its way; waking its faults again (\(report))")
        // The whole user address range: the lost fault may be on a page the table no longer holds
        // (a wake needs no registration); the refault then comes back as a new message.
        _ = Sys.uffdWake(uffd, start: 0x10000, length: 0x7fff_ffff_0000 - 0x10000)
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
                while covered < b, let r = regions.find(covered) { covered = r.end }
                if covered < b { unknown.append("\(describeRange(a, b - a)) \(path) [\(line.dropFirst(9))] unknown from 0x\(String(covered, radix: 16))") }
            }
        }
        return unknown.isEmpty ? "every registered mapping is known" : "registered but not in the table: " + unknown.prefix(6).joined(separator: "; ")
    }
}
