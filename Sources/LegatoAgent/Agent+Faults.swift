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
        var faults = retryFaults
        retryFaults.removeAll()
        while true {
            let n = try Sys.uffdReadEvents(uffd, into: eventBuffer, max: 64)
            if n == 0 { break }
            for k in 0..<n {
                let e = eventBuffer[k]
                switch Sys.UffdEventKind(rawValue: e.kind) ?? .other {
                case .pageFault: faults.append(e)
                case .unmap: dropRange(e.addr, e.a2)
                case .remap: regions.move(from: e.addr, to: e.a2, length: e.a3)
                case .remove, .fork, .other: log.warning("unexpected userfaultfd event \(e.kind)/\(e.flags)")
                }
            }
            if n < 64 { break }
        }
        if phase == .discarding {
            deferredFaults.append(contentsOf: faults)
            return
        }
        for (k, f) in faults.enumerated() {
            if phase == .running && needsEviction {
                // Evict before installing more; the rest are served right after.
                retryFaults.append(contentsOf: faults[k...])
                return
            }
            try serveFault(f)
        }
    }

    /// Installing one more fault's worth of pages could pass the budget.
    /// After an eviction that freed nothing (every node full, no thread to inject into), the next
    /// attempt waits until another batch has come in.
    var needsEviction: Bool {
        uffd >= 0 && stats.residentPages + prefetchWindow > budgetPages && stats.residentPages > evictionFloor
    }

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
        let sequential = page == lastFaultPage &+ Page.size.u64
        sequentialRun = sequential ? sequentialRun + 1 : 0
        lastFaultPage = page
        if st.contains(.resident) {
            // Stale (already present: EEXIST wakes it) or dropped behind our back: Linux gives zeros then.
            _ = install(f, r, i, count: 1, from: zeroPages, zero: true)
        } else if st.contains(.inFlight), let loc = inflight[r.key(at: i)], let b = batches[loc.batch] {
            stats.bufferHits += 1
            _ = install(f, r, i, count: 1, from: UnsafeRawPointer(b.page(Int(loc.index))), zero: false)
        } else if st.contains(.remote) {
            try fetchAndInstall(f, r, i)
        } else {
            let n = zeroRun(r, i)
            if install(f, r, i, count: n, from: zeroPages, zero: true) { stats.zeroFills += n }
        }
    }

    /// How many pages from i on to zero-fill: 1, or more ahead of a sequential stream of untouched pages.
    private func zeroRun(_ r: Region, _ i: Int) -> Int {
        guard sequentialRun >= 2 else { return 1 }
        let want = min(prefetchWindow, 1 << min(sequentialRun, 6))
        var n = 1
        while n < want && i + n < r.pageCount && r.states[i + n] & (PageState.resident.rawValue | PageState.remote.rawValue | PageState.inFlight.rawValue) == 0 {
            n += 1
        }
        return n
    }

    /// Fetches the page (and, on a sequential stream, the remote pages after it) and installs them.
    private func fetchAndInstall(_ f: Sys.UffdEvent, _ r: Region, _ i: Int) throws {
        let started = monotonicNanos()
        let key = r.key(at: i)
        guard let node = pool.location(key) else {
            fail("page 0x\(String(r.address(at: i), radix: 16)) is marked remote but no memory node holds it")
            return
        }
        var n = 1
        if sequentialRun >= 1 {
            let want = min(prefetchWindow, 1 << min(sequentialRun + 1, 6))
            while n < want && i + n < r.pageCount {
                let s = r.state(i + n)
                guard s.contains(.remote), !s.contains(.resident), !s.contains(.inFlight),
                      pool.location(r.key(at: i + n)) == node else { break }
                n += 1
            }
        }
        for k in 0..<n { fetchKeys[k] = r.key(at: i + k) }
        do {
            try fetchKeys.withUnsafeBufferPointer {
                try pool.fetch(node: node, keys: UnsafeBufferPointer(rebasing: $0[0..<n]), present: fetchPresent, out: fetchBuffer)
            }
        } catch let e as NodeFailure {
            fail(e.description)
            return
        }
        if install(f, r, i, count: n, from: fetchBuffer, zero: false) {
            stats.fetchedPages += n
            stats.prefetchedPages += n - 1
            stats.remoteLatency.record(nanos: monotonicNanos() - started)
        }
    }

    /// UFFDIO_COPY of `count` pages at r[i...] (write-protected, so writes are tracked), then the
    /// bookkeeping. EEXIST means already present (wake the waiter); EAGAIN means the address
    /// space is changing: the fault is retried after the pending events are read.
    @discardableResult
    func install(_ f: Sys.UffdEvent?, _ r: Region, _ i: Int, count: Int, from src: UnsafeRawPointer, zero: Bool) -> Bool {
        let dst = r.address(at: i)
        let (err, copied) = Sys.uffdCopy(uffd, to: dst, from: src, length: UInt64(count * Page.size), writeProtect: true)
        let done = Int(copied) / Page.size
        if done > 0 { markInstalled(r, i, done) }
        switch err {
        case 0:
            return true
        case EEXIST:
            if done == 0 {
                // The page is there already: a stale fault, or populated without us. Make sure it counts.
                if !r.state(i).contains(.resident) { markInstalled(r, i, 1, dirty: true) }
                stats.staleFaults += 1
                _ = Sys.uffdWake(uffd, start: dst, length: Page.size.u64)
            } else if let f, Page.alignDown(f.addr) >= dst + UInt64(done * Page.size) {
                // The faulting page was behind the one that already existed: try it alone.
                let fi = r.index(of: Page.alignDown(f.addr))
                return install(f, r, fi, count: 1, from: src + (fi - i) * Page.size, zero: zero)
            }
            return done > 0
        case EAGAIN:
            if let f { retryFaults.append(f) }
            return false
        case ENOENT, EFAULT, ESRCH:
            return false
        default:
            log.warning("UFFDIO_COPY \(describeRange(dst, UInt64(count * Page.size))) in pid \(mainPID): \(Errno.name(err))")
            return false
        }
    }

    @inline(__always)
    private func markInstalled(_ r: Region, _ i: Int, _ n: Int, dirty: Bool = false) {
        var added = 0
        for k in i..<i + n {
            var s = r.state(k)
            if s.contains(.resident) { continue }
            s.insert(.resident)
            if dirty { s.insert(.dirty) } else { s.remove(.dirty) }
            r.setState(k, s)
            pushVictim(r, k)
            added += 1
        }
        if added != n, getenv("LEGATO_DEBUG_RESIDENT") != nil { writeStderr("install: \(n - added) of \(n) pages at 0x\(String(r.address(at: i), radix: 16)) were resident already\n") }
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
        let st = r.state(i)
        if st.contains(.inFlight), let loc = inflight[r.key(at: i)], let b = batches[loc.batch] {
            install(nil, r, i, count: 1, from: UnsafeRawPointer(b.page(Int(loc.index))), zero: false)
        } else if st.contains(.remote) {
            let key = r.key(at: i)
            guard let node = pool.location(key) else { return }
            let k = [key]
            do {
                try k.withUnsafeBufferPointer { try pool.fetch(node: node, keys: $0, present: fetchPresent, out: fetchBuffer) }
            } catch let e as NodeFailure {
                fail(e.description)
                return
            }
            if install(nil, r, i, count: 1, from: fetchBuffer, zero: false) { stats.fetchedPages += 1 }
        } else {
            install(nil, r, i, count: 1, from: zeroPages, zero: true)
        }
    }

    /// Brings every remote or buffered page back into PROG (before a fork: the child is unmanaged
    /// and must find its copy of every page present). The budget is exceeded until eviction catches up.
    func materializeAll() throws {
        var n = 0
        for r in regions.regions {
            for i in 0..<r.pageCount {
                let s = r.state(i)
                if !s.contains(.resident) && (s.contains(.remote) || s.contains(.inFlight)) {
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
