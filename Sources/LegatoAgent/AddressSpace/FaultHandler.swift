import Glibc
import LegatoCore
import LegatoSystem

/// Where the fault handler gets the pages it cannot make itself: the write-back buffer, memory
/// nodes, a restored checkpoint. Implemented by the agent (its fetcher, evictor and restore).
protocol FaultSources: AnyObject {
    /// The newest content of evicted page `key`, while its write-back batch is unacknowledged.
    func bufferedPage(key: UInt64) -> UnsafeRawPointer?
    /// Fetches the faulting remote page r[i] of `h`'s address space (and on a stream of `run`
    /// faults, pages after it); the answer's install wakes the thread.
    func fetch(_ h: FaultHandler, _ fault: Sys.UffdEvent, _ r: Region, _ i: Int, run: Int) throws
    /// Keeps a stream's read-ahead going past r[i], whose fetch is on its way already.
    func readAhead(_ h: FaultHandler, thread: UInt32, _ r: Region, _ i: Int, run: Int) throws
    /// Serves a page a restored checkpoint holds and that is not back yet.
    func serveRestoring(_ fault: Sys.UffdEvent?, _ r: Region, _ i: Int, run: Int) throws
    /// The program unmapped these parts (taken out of the page table, their states as they were):
    /// their remote copies are to be discarded.
    func discardRemoteCopies(of parts: [Region])
    /// The process forked: the kernel made `uffd` (a descriptor of the agent's) for the child's
    /// copy of the address space `h` serves.
    func forked(_ h: FaultHandler, uffd: Int32)
}

/// Serves one address space's userfaultfd by its rules:
///
/// - Events are read in batches and the non-cooperative ones (UNMAP, REMAP) are applied to the page
///   table before the faults of the same batch are served: the kernel hands out faults first, and a
///   fault queued behind an unmap must not be served from the pre-unmap state.
/// - A fault on a page that is resident is stale (the thread was interrupted and faulted again, or
///   the page came in meanwhile): the copy's EEXIST counts as success and the thread is woken.
/// - EAGAIN from UFFDIO_COPY means the address space is changing (mmap_changing): the fault is
///   queued again and retried after the events that hold the change have been read.
/// - A fault on memory the table does not hold (the mapping is gone) is woken: the thread then
///   takes whatever a plain run would (SIGSEGV, or a fresh page).
///
/// Pages are installed write-protected (WP_ASYNC then tracks writes), except zero pages for a write
/// fault, which count as written.
final class FaultHandler {
    enum InstallResult { case done, again, gone }

    /// Counted over the run, across the address spaces it manages (one instance shared by their handlers).
    final class Counters {
        var faults = 0        // fault messages served
        var zeroFills = 0     // pages installed as zeros without a round trip
        var inboundHits = 0   // faults on pages already on their way
        var bufferHits = 0    // faults served from the write-back buffer
        var staleFaults = 0   // faults on pages already present (EEXIST)
        init() {}
    }

    let kernel: UserfaultKernel
    let table: PageTable
    let pid: pid_t
    weak var sources: FaultSources?
    /// While threads are being frozen, faults get single pages: just enough to reach their stop.
    var singlePagesOnly = false
    var streams = FaultStreams()
    let counters: Counters
    /// Most pages one fault installs ahead (zero-fill on a stream).
    let prefetchWindow: Int
    /// At least `prefetchWindow` pages of zeros.
    private let zeroPages: UnsafeRawPointer
    /// The mapping holding an address the table does not know (the kernel's view, /proc/PID/maps).
    var lookUpMapping: (UInt64) -> MapsEntry?
    private let log: Logger
    private let events: UnsafeMutablePointer<Sys.UffdEvent>
    private static let eventBatch = 64
    /// Faults read and not yet served (or to be retried).
    private(set) var pending: [Sys.UffdEvent] = []
    /// The process is gone (exit): answers still on their way for it are dropped.
    var retired = false

    init(kernel: UserfaultKernel, table: PageTable, pid: pid_t, prefetchWindow: Int, zeroPages: UnsafeRawPointer,
         counters: Counters, log: Logger) {
        self.kernel = kernel
        self.counters = counters
        self.table = table
        self.pid = pid
        self.prefetchWindow = prefetchWindow
        self.zeroPages = zeroPages
        self.log = log
        lookUpMapping = { address in (try? ProcMaps.read(pid: pid))?.first { $0.start <= address && address < $0.end } }
        events = UnsafeMutablePointer<Sys.UffdEvent>.allocate(capacity: FaultHandler.eventBatch)
    }

    deinit { events.deallocate() }

    var hasPending: Bool { !pending.isEmpty }

    /// The faults read so far, to be served now (the queue is emptied).
    func takePending() -> [Sys.UffdEvent] {
        let out = pending
        pending.removeAll()
        return out
    }

    /// Queues faults again (to be served after an eviction, or retried).
    func requeue<S: Sequence>(_ faults: S) where S.Element == Sys.UffdEvent { pending.append(contentsOf: faults) }

    /// Reads the pending uffd messages: UNMAP and REMAP are applied at once, faults are queued.
    func readEvents() throws {
        while true {
            let n = try kernel.readEvents(into: events, max: FaultHandler.eventBatch)
            if n == 0 { break }
            for k in 0..<n {
                let e = events[k]
                switch Sys.UffdEventKind(rawValue: e.kind) ?? .other {
                case .pageFault: pending.append(e)
                case .unmap:
                    log.trace("UNMAP \(describeRange(e.addr, e.a2 - e.addr))")
                    dropRange(e.addr, e.a2)
                case .remap:
                    log.trace("REMAP \(describeRange(e.addr, e.a3)) -> 0x\(String(e.a2, radix: 16))")
                    table.regions.move(from: e.addr, to: e.a2, length: e.a3)
                case .fork:
                    if let sources { sources.forked(self, uffd: Int32(truncatingIfNeeded: e.a2)) } else { close(Int32(truncatingIfNeeded: e.a2)) }
                case .remove, .other: log.warning("unexpected userfaultfd event \(e.kind)/\(e.flags) in pid \(pid)")
                }
            }
            if n < FaultHandler.eventBatch { break }
        }
    }

    /// The program unmapped [start, end) (munmap, an mmap over it, an mremap that shrank it): its
    /// pages are gone and their remote copies are discarded.
    func dropRange(_ start: UInt64, _ end: UInt64) {
        let parts = table.regions.remove(start: start, end: end)
        sources?.discardRemoteCopies(of: parts)
        table.forget(parts)
    }

    /// Serves one fault: locally (zeros, the write-back buffer, a stale page) or through `sources`.
    func serve(_ f: Sys.UffdEvent) throws {
        let page = Page.alignDown(f.addr)
        counters.faults += 1
        guard let r = table.regions.find(page) ?? adoptUnknown(page) else {
            // The mapping is gone: wake the thread, it will take the SIGSEGV a plain run would.
            kernel.wake(start: page, length: Page.size.u64)
            return
        }
        let i = r.index(of: page)
        let st = r.state(i)
        let run = singlePagesOnly ? 0 : streams.note(thread: f.tid, page: page, table: table)
        if st.contains(.fetching) {
            // On its way (prefetched or asked for by another thread): the install wakes this thread.
            counters.inboundHits += 1
            if run > 0 { try sources?.readAhead(self, thread: f.tid, r, i, run: run) }
        } else if st.contains(.resident) {
            // Stale (already present: EEXIST wakes it) or dropped behind our back: Linux gives zeros then.
            install(f, r, i, count: 1, from: zeroPages)
        } else if st.contains(.inFlight), let buffered = sources?.bufferedPage(key: r.key(at: i)) {
            counters.bufferHits += 1
            if PageTrace.on { PageTrace.note("BUF \(String(r.key(at: i), radix: 16))") }
            install(f, r, i, count: 1, from: buffered)
        } else if st.contains(.remote) {
            try sources?.fetch(self, f, r, i, run: run)
        } else if st.contains(.restoring) {
            try sources?.serveRestoring(f, r, i, run: run)
        } else {
            let n = zeroRun(r, i, run: run)
            let writing = f.flags & Sys.uffdPageFaultFlagWrite != 0
            if install(f, r, i, count: n, from: zeroPages, writable: writing) == .done { counters.zeroFills += n }
            streams.advance(thread: f.tid, to: r.address(at: i + n - 1), in: table.regions)
        }
    }

    /// Installs r[i] as a page of zeros (outside a fault).
    @discardableResult
    func installZero(_ r: Region, _ i: Int) -> InstallResult { install(nil, r, i, count: 1, from: zeroPages) }

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

    /// UFFDIO_COPY of `count` pages at r[i...], then the bookkeeping. EEXIST means already present
    /// (wake the waiter, go on past it); EAGAIN means the address space is changing: the fault `f`
    /// is queued to be retried after the pending events are read. `writable` installs without write
    /// protection: for pages about to be written (a write fault on untouched memory), which saves the
    /// kernel's write-protect fault; they count as written.
    @discardableResult
    func install(_ f: Sys.UffdEvent?, _ r: Region, _ i: Int, count: Int, from src: UnsafeRawPointer, writable: Bool = false) -> InstallResult {
        let dst = r.address(at: i)
        let (err, copied) = kernel.copy(to: dst, from: src, length: UInt64(count * Page.size), writeProtect: !writable)
        let done = Int(copied) / Page.size
        if done > 0 { table.markInstalled(r, i, done) }

        switch err {
        case 0:
            return .done
        case EEXIST:
            if done == 0 {
                // The page is there already: a stale fault, or populated without us. Make sure it counts.
                if !r.state(i).contains(.resident) { table.markInstalled(r, i, 1, dirty: true) }
                counters.staleFaults += 1
                kernel.wake(start: dst, length: Page.size.u64)
                return count == 1 ? .done : install(f, r, i + 1, count: count - 1, from: src + Page.size, writable: writable)
            }
            // Pages [i, i+done) went in; page i+done exists; go on after it.
            return install(f, r, i + done, count: count - done, from: src + done * Page.size, writable: writable)
        case EAGAIN:
            if done > 0 { return install(f, r, i + done, count: count - done, from: src + done * Page.size, writable: writable) }
            if let f { pending.append(f) }
            return .again
        case ENOENT, EFAULT, ESRCH:
            // The mapping went or was replaced (a JVM commits its heap with mmap(MAP_FIXED) over it):
            // the threads waiting there are woken, to fault again on what is there now (a wake
            // needs no registration). Left asleep, each waited for the liveness guard's 2 s.
            kernel.wake(start: dst, length: UInt64(count * Page.size))
            return .gone
        default:
            log.warning("UFFDIO_COPY \(describeRange(dst, UInt64(count * Page.size))) in pid \(pid): \(Errno.name(err))")
            kernel.wake(start: dst, length: UInt64(count * Page.size))
            return .gone
        }
    }

    /// A fault in a registered range the table does not know: a stack that grew down, or a VMA
    /// the kernel created from one of ours. Adopts the VMA's unknown parts as fresh (never written) pages.
    private func adoptUnknown(_ page: UInt64) -> Region? {
        guard let m = lookUpMapping(page), m.isPrivate && m.inode == 0 else { return nil }
        let regions = table.regions
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
}
