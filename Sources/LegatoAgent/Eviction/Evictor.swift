import Glibc
import LegatoCore
import LegatoSystem

/// Keeps the resident managed memory of the run's address spaces within its one budget, one
/// address space a round (the one with the most resident pages):
///
///     pick victims -> freeze threads -> PAGEMAP_SCAN (which victims were written) -> read dirty
///     victims (process_vm_readv) into write-back batches -> injected process_madvise(MADV_DONTNEED)
///     -> thaw -> the write-back thread stores the batches
///
/// The threads stay frozen from the scan to the discard: with WP_ASYNC the kernel resolves write
/// faults itself, so a running thread could write a victim after we read it and the write would be
/// lost. Victims are the pages sequential streams have passed (drop-behind), then the oldest installed.
///
/// Owned by the event-loop thread: `serve` (the event loop) serves faults while threads freeze;
/// `serveWhileInjecting` while the discard is injected (the injected thread may fault on its way).
final class Evictor {
    struct Counters {
        var evictedPages = 0       // pages dropped from the program (clean or dirty)
        var evictions = 0          // eviction rounds (freeze, scan, read, discard, thaw)
        var cleanEvictions = 0     // evicted pages that needed no transfer
        var evictionsDeferred = 0  // rounds given up: no thread in a stop fit for injection
        var freezeNanos: UInt64 = 0
        var phaseNanos: [UInt64] = [0, 0, 0, 0]  // freeze, scan, read, discard
    }

    /// Pages kept free for the single-page faults served while threads are being frozen.
    static let freezeSlack = 16

    /// The address spaces to take victims from (every managed one of the run).
    let spaces: () -> [AddressSpace]
    let budget: LocalBudget
    let pool: RemotePool
    let writeBack: WriteBackBuffer
    let tracer: Tracer
    /// Pages evicted past the need in one round (amortizes the freeze).
    let batchPages: Int
    /// Most pages one fault installs: kept free beside the budget's use.
    let prefetchWindow: Int
    private(set) var counters = Counters()
    /// After a round that freed nothing (every node full, no thread to inject into), the next waits
    /// until the resident set passes this.
    private var floor = 0
    var serve: (_ until: () -> Bool) throws -> Void = { _ in }
    var serveWhileInjecting: () -> Void = {}
    var isStopping: () -> Bool = { false }
    /// Told the keys of shared remote copies (a fork's) that pages stored anew no longer read.
    var releaseShared: ([UInt64]) -> Void = { _ in }
    private let log: Logger

    init(spaces: @escaping () -> [AddressSpace], budget: LocalBudget, pool: RemotePool, writeBack: WriteBackBuffer, tracer: Tracer,
         batchPages: Int, prefetchWindow: Int, log: Logger) {
        self.spaces = spaces
        self.budget = budget
        self.pool = pool
        self.writeBack = writeBack
        self.tracer = tracer
        self.batchPages = batchPages
        self.prefetchWindow = prefetchWindow
        self.log = log
    }

    /// Installing `extra` more pages plus one more fault's worth could pass the budget.
    func needsEviction(extra: Int = 0) -> Bool {
        budget.residentPages + extra + prefetchWindow + Evictor.freezeSlack > budget.pages
            && budget.residentPages > floor
    }

    /// Evicts enough for `inbound` pages on their way and a batch more, if the budget needs it;
    /// false when it did not need to.
    @discardableResult
    func evictIfNeeded(inbound: Int) throws -> Bool {
        guard !tracer.freezing, needsEviction(extra: inbound) else { return false }
        let before = budget.residentPages
        try evict(budget.residentPages + inbound + prefetchWindow + Evictor.freezeSlack - budget.pages + batchPages)
        floor = budget.residentPages < before ? 0 : budget.residentPages + batchPages
        return true
    }

    private func evict(_ wanted: Int) throws {
        while writeBack.sendingBytes > WriteBackBuffer.maxInflightBytes && !isStopping() { writeBack.waitForCompletions() }
        if isStopping() { return }
        // Not a space inside a fork: the child's copy of its table is being made from it.
        guard let mm = spaces().filter({ $0.isManaged && $0.forkingThread == nil && $0.table.residentPages > 0 })
            .max(by: { $0.table.residentPages < $1.table.residentPages }) else { return }
        var candidates = VictimChoice.pick(wanted, from: mm.table)
        if candidates.isEmpty { return }

        let frozenAt = monotonicNanos()
        try tracer.freeze(mm, serve: serve)
        let frozen = monotonicNanos()
        counters.phaseNanos[0] += frozen - frozenAt
        defer {
            tracer.thaw()
            counters.freezeNanos += monotonicNanos() - frozenAt
        }
        if tracer.programStatus != nil || isStopping() || !mm.isManaged { return }
        guard let injector = tracer.injectableThread(in: mm) else {
            // Every thread is inside a syscall stop; put the victims back and try after they move on.
            counters.evictionsDeferred += 1
            for a in candidates { if let r = mm.table.regions.find(a) { mm.table.pushVictim(r, r.index(of: a)) } }
            return
        }

        // Victims still resident after whatever the freeze let through, grouped by region.
        candidates.sort()
        // (Each region's list is built aside and added whole: appending to the last element of
        // perRegion copied that element's list on every append, 37 ms in a run of seqscan.)
        var perRegion: [(Region, [Int])] = []
        var current: Region?
        var currentIndexes: [Int] = []
        for a in candidates {
            guard let r = mm.table.regions.find(a) else { continue }
            let i = r.index(of: a)
            guard r.state(i).contains(.resident) else { continue }
            if r !== current {
                if let c = current { perRegion.append((c, currentIndexes)) }
                current = r
                currentIndexes = []
            }
            currentIndexes.append(i)
        }
        if let c = current { perRegion.append((c, currentIndexes)) }

        // Which victims are present and which were written since installed: one PAGEMAP_SCAN over
        // each region's victim span, without write-protecting anything (the victims' protection does
        // not matter once they are discarded, and other pages keep their written bit for later).
        // Each victim gets a mark, parallel to perRegion (per-page tuples cost a retain each, and
        // this all happens with PROG frozen).
        var marks: [[Mark]] = []
        marks.reserveCapacity(perRegion.count)
        for (r, idx) in perRegion {
            let first = idx.first!, last = idx.last!
            var seen = [UInt8](repeating: 0, count: last - first + 1)  // bit 0 present, bit 1 written
            try mm.scan(start: r.address(at: first), end: r.address(at: last + 1), required: .present, writeProtect: false) { s, e, cat in
                let mark: UInt8 = cat.contains(.written) ? 3 : 1
                for k in r.index(of: s)..<r.index(of: e) { seen[k - first] = mark }
            }
            var m = [Mark](repeating: .vanished, count: idx.count)
            for (j, i) in idx.enumerated() {
                let seenBits = seen[i - first]
                if seenBits & 1 == 0 { continue }
                if seenBits & 2 != 0 { r.remove(i, .saved) }  // written since installed or since the last checkpoint
                m[j] = seenBits & 2 != 0 || r.state(i).contains(.dirty) ? .dirty : .clean
            }
            marks.append(m)
        }

        let scanned = monotonicNanos()
        counters.phaseNanos[1] += scanned - frozen
        // Route dirty pages to memory nodes; a page with nowhere to go stays.
        var byNode: [Int: (keys: [UInt64], addresses: [UInt64])] = [:]
        var kept = 0
        var unshared: [UInt64] = []
        for (ri, (r, idx)) in perRegion.enumerated() {
            if PageTrace.on { PageTrace.note("REGION \(String(r.address(at: 0), radix: 16)) \(String(r.key(at: 0), radix: 16)) \(r.pageCount)") }
            for (j, i) in idx.enumerated() where marks[ri][j] == .dirty {
                let key = r.storeKey(at: i)
                if let node = pool.route(key) {
                    if let old = r.dropInherited(i) { unshared.append(old) }
                    byNode[node, default: ([], [])].keys.append(key)
                    byNode[node, default: ([], [])].addresses.append(r.address(at: i))
                } else {
                    marks[ri][j] = .keptLocal
                    kept += 1
                    r.remove(i, .queued)
                }
            }
        }
        if kept > 0 { writeBack.keptLocal(kept) }

        var newBatches: [WriteBackBatch] = []
        for (node, pages) in byNode.sorted(by: { $0.key < $1.key }) {
            // A batch is one STORE_PAGES request: at most 1024 pages (the protocol allows 4096).
            var start = 0
            while start < pages.keys.count {
                let end = min(pages.keys.count, start + 1024)
                let b = writeBack.makeBatch(node: node, keys: Array(pages.keys[start..<end]), table: mm.table)
                try readPages(mm, Array(pages.addresses[start..<end]), into: b.buffer)
                newBatches.append(b)
                start = end
            }
        }

        let read = monotonicNanos()
        counters.phaseNanos[2] += read - scanned
        // The victims' new state goes in before the discard: the injected thread may fault on its way
        // back to user space (rseq, its stack), and such a fault must find the page's content where
        // the table says it is (the batch buffer, a memory node, or zero) — never the zapped page.
        for b in newBatches { writeBack.hold(b) }
        var evicted = 0, clean = 0, vanished = 0
        var discard: [UInt64] = []  // in address order: perRegion is sorted, each idx ascending
        discard.reserveCapacity(candidates.count)
        for (ri, (r, idx)) in perRegion.enumerated() {
            for (j, i) in idx.enumerated() {
                switch marks[ri][j] {
                case .dirty:
                    var st = r.state(i)
                    st.remove([.resident, .dirty, .queued])
                    st.insert([.remote, .inFlight])
                    r.setState(i, st)
                    evicted += 1
                    discard.append(r.address(at: i))
                case .clean:
                    if PageTrace.on { PageTrace.note("CLEAN \(String(r.key(at: i), radix: 16)) st\(r.state(i).rawValue) loc\(pool.location(r.key(at: i)) ?? -1)") }
                    r.remove(i, [.resident, .queued])
                    evicted += 1
                    clean += 1
                    discard.append(r.address(at: i))
                case .vanished:
                    r.setState(i, r.state(i).intersection(.remote))
                    vanished += 1
                case .keptLocal:
                    break
                }
            }
        }
        mm.table.noteResident(-(evicted + vanished))
        counters.evictedPages += evicted
        counters.cleanEvictions += clean
        counters.evictions += 1

        try discardInProgram(mm, discard, using: injector)
        counters.phaseNanos[3] += monotonicNanos() - read
        for b in newBatches { writeBack.send(b) }
        if !unshared.isEmpty { releaseShared(unshared) }
    }

    /// What the freeze found of a victim.
    enum Mark { case vanished, clean, dirty, keptLocal }

    // MARK: reading and discarding

    /// Reads pages of PROG (all present; threads frozen) into `buffer`, page k at buffer + k*4096.
    private func readPages(_ mm: AddressSpace, _ addresses: [UInt64], into buffer: UnsafeMutableRawPointer) throws {
        // Contiguous victims are read as one range (a scan evicts megabytes of consecutive pages).
        var runStarts: [UInt64] = [], runLengths: [UInt64] = []
        for a in addresses {
            if let last = runStarts.last, last + runLengths[runLengths.count - 1] == a {
                runLengths[runLengths.count - 1] += Page.size.u64
            } else {
                runStarts.append(a)
                runLengths.append(Page.size.u64)
            }
        }
        let total = addresses.count * Page.size
        let got = try runStarts.withUnsafeBufferPointer { a in
            try runLengths.withUnsafeBufferPointer { l in
                try Sys.processRead(pid: mm.pid, into: buffer, capacity: total, addresses: a.baseAddress!, lengths: l.baseAddress!, count: a.count)
            }
        }
        if got < total {
            // A page process_vm_readv may not read (PROT_NONE now): read the rest one page at a time,
            // through /proc/PID/mem where needed.
            var k = got / Page.size
            while k < addresses.count {
                let dst = buffer + k * Page.size
                var a = addresses[k]
                var len = Page.size.u64
                let n = (try? Sys.processRead(pid: mm.pid, into: dst, capacity: Page.size, addresses: &a, lengths: &len, count: 1)) ?? 0
                if n < Page.size { try readViaProcMem(mm.pid, addresses[k], into: dst) }
                k += 1
            }
        }
    }

    private func readViaProcMem(_ pid: pid_t, _ address: UInt64, into dst: UnsafeMutableRawPointer) throws {
        let fd = open("/proc/\(pid)/mem", O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw SystemError.fromErrno("open /proc/\(pid)/mem") }
        defer { close(fd) }
        let n = pread(fd, dst, Page.size, off_t(Int64(bitPattern: address)))
        if n != Page.size { throw SystemError.fromErrno("read page 0x\(String(address, radix: 16)) of pid \(pid)") }
    }

    /// process_madvise(MADV_DONTNEED) on `addresses` (sorted), injected into a frozen thread of `mm`.
    private func discardInProgram(_ mm: AddressSpace, _ addresses: [UInt64], using t: Tracee) throws {
        guard !addresses.isEmpty else { return }
        var runs: [(UInt64, UInt64)] = []
        for a in addresses {
            if let last = runs.last, last.0 + last.1 == a { runs[runs.count - 1].1 += Page.size.u64 } else { runs.append((a, Page.size.u64)) }
        }
        let inj = try Sys.Injection(tid: t.tid, stub: mm.scratch, whileWaiting: serveWhileInjecting)
        defer {
            tracer.tolerateGone { try inj.cure() }
            t.pendingSignals.append(contentsOf: inj.deferredSignals)
        }
        if mm.pidfdInherited { try replaceInheritedPidfd(mm, inj) }
        var k = 0
        while k < runs.count {
            let n = min(1024, runs.count - k)
            var iov = [UInt64]()
            iov.reserveCapacity(n * 2)
            for r in runs[k..<k + n] { iov.append(r.0); iov.append(r.1) }
            let iovAddr = mm.scratch + Page.size.u64
            try iov.withUnsafeBytes { try Sys.processWrite(pid: mm.pid, from: $0.baseAddress!, length: $0.count, to: iovAddr) }
            let want = runs[k..<k + n].reduce(0) { $0 + Int($1.1) }
            let r = try inj.syscall(.processMadvise, UInt64(bitPattern: mm.processMadvisePidfd), iovAddr, UInt64(n), 4, 0)
            if r < 0 {
                throw SystemError("process_madvise(MADV_DONTNEED) of \(n) ranges injected into tid \(t.tid)", code: Int32(-r))
            }
            if Int(r) != want {
                throw AddressSpaceError.shortAdvice(tid: t.tid, advised: Int(r), wanted: Int(want))
            }
            k += n
        }
    }

    /// A fork's child holds, under the number its injected calls use, the parent's pidfd: it is
    /// replaced in place (dup3 over it) by a pidfd of the child, made inside the child.
    private func replaceInheritedPidfd(_ mm: AddressSpace, _ inj: Sys.Injection) throws {
        let me = try inj.syscall(.getpid)
        let fd = try inj.syscall(.pidfdOpen, UInt64(me), 0)
        guard fd >= 0 else { throw SystemError("pidfd_open injected into pid \(mm.pid)", code: Int32(-fd)) }
        let oCloexec: UInt64 = 0o2000000
        let r = try inj.syscall(.dup3, UInt64(fd), UInt64(mm.processMadvisePidfd), oCloexec)
        _ = try inj.syscall(.close, UInt64(fd))
        guard r >= 0 else { throw SystemError("dup3 of the injected pidfd over fd \(mm.processMadvisePidfd) in pid \(mm.pid)", code: Int32(-r)) }
        mm.pidfdInherited = false
    }
}
