import Glibc
import LegatoCore
import LegatoImage
import LegatoSystem

/// One epoch's pages arriving from the log nodes while the restored PROG already runs. The index
/// entry names every run beforehand, so each page has its place (page i of the layer, in index
/// order) before any byte arrives; the replay threads deliver runs as they read them, and a reader
/// that needs a run not there yet fetches that run itself where it can (from the log entry the
/// index locates, or from the memory node that retains it), else waits for the replay.
public final class StreamedPages {
    let epoch: UInt32
    let runs: [CheckpointLogEntry.IndexedRun]
    let pageCount: Int
    private let firstPage: [Int]               // by run: its first page in the layer
    private let runAt: [UInt64: Int]           // run start address -> run
    private let base: UnsafeMutableRawPointer  // pageCount pages, touched as they arrive
    private let lock = Lock()
    private var arrived: [Bool]
    private var arrivals: [Int] = []           // runs arrived since the last takeArrivals, in order
    private var fetching: Set<Int> = []
    private var failure: String?
    private var replayStarted = false
    private var replayDone = false
    /// Fetches runs (by index) and hands each to `deliver`: those `fetchable` says it can.
    var fetchRuns: (([Int]) throws -> Void)?
    /// Whether `fetchRuns` can bring run i (set before any reader comes; default: the runs the
    /// index locates in the run's own log).
    var fetchable: (Int) -> Bool = { _ in false }
    /// Starts the replay (idempotent): for a run only the replay can bring, needed before PROG runs.
    var startReplay: (() -> Void)?
    private(set) var fetchedByReader = 0

    init(epoch: UInt32, runs: [CheckpointLogEntry.IndexedRun]) throws {
        self.epoch = epoch
        self.runs = runs
        var first: [Int] = []
        var at: [UInt64: Int] = [:]
        var total = 0
        for (i, r) in runs.enumerated() {
            first.append(total)
            at[r.address] = i
            total += r.pages
        }
        firstPage = first
        runAt = at
        fetchable = { [runs] in runs[$0].segment != .max }
        pageCount = total
        arrived = [Bool](repeating: false, count: runs.count)
        let bytes = max(1, total) * Page.size
        guard let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0), p != MAP_FAILED else {
            throw SystemError.fromErrno("mmap \(bytes >> 20) MiB for the pages of epoch \(epoch)")
        }
        base = p
        // Huge pages: a 2 MiB fault where the deliveries would take 512 small ones (a 1 GiB
        // restore otherwise spends ~0.3 s of CPU faulting this area in).
        _ = madvise(p, bytes, MADV_HUGEPAGE)
    }

    deinit { munmap(base, max(1, pageCount) * Page.size) }

    /// A pages entry read from a log: copied to its run's place (again, harmlessly, if it came twice).
    func deliver(address: UInt64, count: Int, data: UnsafeRawPointer) {
        guard let i = runAt[address], runs[i].pages == count else { return }
        memcpy(base + firstPage[i] * Page.size, data, count * Page.size)
        lock.withLock {
            if !arrived[i] { arrivals.append(i) }
            arrived[i] = true
            lock.broadcast()
        }
    }

    /// The runs that arrived since the last call, in arrival order: (address, first page in the
    /// layer, pages).
    func takeArrivals() -> [(address: UInt64, page: Int, pages: Int)] {
        let taken: [Int] = lock.withLock {
            defer { arrivals.removeAll(keepingCapacity: true) }
            return arrivals
        }
        return taken.map { (runs[$0].address, firstPage[$0], runs[$0].pages) }
    }

    /// The replay starts: a reader whose own fetch fails waits for it from now on.
    func replayStarting() { lock.withLock { replayStarted = true } }

    /// The replay has read everything it will (`error`: it stopped on one). Runs still missing then
    /// will never come: their readers get an error rather than waiting forever.
    func replayFinished(error: Error?) {
        lock.withLock {
            replayDone = true
            if let error { failure = "\(error)" }
            lock.broadcast()
        }
    }

    /// Copies page `page` of the layer to dst, once its run is here.
    func copy(page: Int, into dst: UnsafeMutableRawPointer) throws {
        try waitFor(run: run(of: page))
        memcpy(dst, base + page * Page.size, Page.size)
    }

    /// Brings runs (by index) that are not here yet and can be fetched in one go: the pages the
    /// restore needs before PROG runs. Failures are left to the one-by-one path.
    func prefetch(runs wanted: [Int]) {
        let missing = lock.withLock { wanted.filter { !arrived[$0] } }.filter(fetchable)
        guard !missing.isEmpty, let fetch = fetchRuns else { return }
        if (try? fetch(missing)) != nil { lock.withLock { fetchedByReader += missing.count } }
    }

    /// Whether `copy` of `page` would not wait: its run is here, or the replay is over (and a
    /// missing run is an error at once).
    func available(page: Int) -> Bool {
        let i = run(of: page)
        return lock.withLock { arrived[i] || replayDone }
    }

    /// Where pages first..<first+count lie, if they have all arrived (for installing them straight
    /// from here).
    func arrivedPages(_ first: Int, _ count: Int) -> UnsafeRawPointer? {
        let a = run(of: first), b = run(of: first + count - 1)
        return lock.withLock { (a...b).allSatisfy { arrived[$0] } } ? UnsafeRawPointer(base + first * Page.size) : nil
    }

    private func run(of page: Int) -> Int {
        var lo = 0, hi = runs.count
        while lo + 1 < hi {
            let mid = (lo + hi) / 2
            if firstPage[mid] <= page { lo = mid } else { hi = mid }
        }
        return lo
    }

    private func waitFor(run i: Int) throws {
        var fetched = false
        let canFetch = fetchRuns != nil && fetchable(i)
        while true {
            let kick = lock.withLock { !replayStarted && (fetched || !canFetch) }
            if kick { startReplay?() }
            let fetchNow: Bool? = try lock.withLock {
                if arrived[i] { return nil }
                if !fetched, canFetch, !fetching.contains(i) {
                    fetching.insert(i)
                    return true
                }
                if (replayDone || (!replayStarted && startReplay == nil)) && !fetching.contains(i) {
                    throw CheckpointStoreError.pagesNeverArrived(address: runs[i].address, epoch: UInt64(epoch), why: failure.map { "\($0)" })
                }
                _ = lock.wait(seconds: 1)
                return false
            }
            guard let fetchNow else { return }
            guard fetchNow else { continue }
            fetched = true  // once: if the entry did not bring the run, the replay will (or will say why not)
            defer { lock.withLock { _ = fetching.remove(i) } }
            do {
                try fetchRuns!([i])
                lock.withLock { fetchedByReader += 1 }
            } catch {
                lock.withLock { if failure == nil { failure = "\(error)" } }
                // Leave it to the replay (it may still bring the run from another replica).
                if lock.withLock({ replayDone && !arrived[i] }) { throw error }
                lock.withLock { _ = lock.wait(seconds: 1) }
            }
        }
    }
}
