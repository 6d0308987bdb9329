import Glibc
import LegatoCore
import Metrics
import LegatoSystem
import LegatoWire

/// Brings pages of the run's address spaces from memory nodes, asynchronously.
///
/// A fetch is sent and its pages marked `fetching`; the event loop polls each node's connection
/// (`connections`) and calls `receive(node:)`, which installs the answer (answers come back in
/// request order per node). Faults on a page already on its way just wait for that install. A
/// sequential stream of faults also reads ahead: up to two windows beyond the fault are kept on
/// their way, so a scan overlaps its transfers with its own work. The lone pages of one batch of
/// faults are gathered into one request per node (`sendGathered`).
///
/// Owned by the event-loop thread; requests go out on the pool's connections. A memory node's
/// failure is reported through `onNodeFailure`: if its pages are being recovered, the faults on
/// them are parked (their pages stay `fetching`, so their threads wait) until `resumeParked`;
/// otherwise the run stops. A parked page is never served a stale or zero page.
final class Fetcher {
    struct Counters {
        var fetchedPages = 0       // pages brought from memory nodes (faulted or prefetched)
        var prefetchedPages = 0    // of those, pages fetched ahead of a fault
        var fetchRequests = 0      // FETCH_PAGES requests sent for them (lone faults of a batch share one)
        var remoteLatency = LatencyHistogram()  // faults served from a memory node
        var longestParkNanos: UInt64 = 0        // the longest a page waited for its dead node's recovery
    }

    /// A FETCH_PAGES request on its way.
    struct Inbound {
        /// The address space's fault handler the pages are for.
        let handler: FaultHandler
        let region: Region
        let index: Int
        let count: Int
        let id: UInt32
        let slot: Int
        let started: UInt64
        let forFault: Bool
        /// Lone pages gathered from one batch of faults (keys and addresses in the slot), not r[i..<i+count].
        let gathered: Bool
    }

    static let readAheadWindows = 2
    /// The fault-latency histogram at /metrics (`--metrics`): faults served from a memory node.
    static let faultTimerLabel = "legato_run_fault_seconds"
    static let faultTimerBuckets: [Duration] = [.microseconds(20), .microseconds(50), .microseconds(100), .microseconds(200),
                                                .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
                                                .milliseconds(20), .milliseconds(100), .seconds(1)]
    /// Records into the metrics registry if one was bootstrapped before this fetcher was made.
    private let faultTimer = Metrics.Timer(label: Fetcher.faultTimerLabel)
    /// Fetches on their way at once.
    static let slots = 16

    let pool: RemotePool
    let budget: LocalBudget
    /// Most pages one fault asks for ahead.
    let prefetchWindow: Int
    /// Pages one fetch may carry: the fault plus its prefetch.
    let slotPages: Int
    private(set) var counters = Counters()
    /// Pages asked for and not yet installed or given up.
    private(set) var inboundPages = 0
    /// Told why the run cannot go on.
    var onFailure: (String) -> Void = { _ in }
    /// Told that a memory node failed; answers whether its pages are being recovered (the run
    /// goes on) or not (the run stops).
    var onNodeFailure: (_ node: Int, _ why: String) -> Bool = { _, _ in false }
    /// Pages waiting for their dead node's recovery (`fetching`, not counted in `inboundPages`).
    private var parked: [(handler: FaultHandler, address: UInt64, key: UInt64)] = []
    /// When the first page now parked was parked.
    private var parkedSince: UInt64 = 0
    var parkedPages: Int { parked.count }
    /// True once the run is stopping (no request is started then).
    var isStopping: () -> Bool = { false }
    private let log: Logger

    // Fault path scratch (no allocation on the fault path): per slot, the answer's pages, their
    // present flags, the keys asked for and (gathered requests) the address of each.
    private let buffer: UnsafeMutableRawPointer
    private let present: UnsafeMutablePointer<UInt8>
    private let keys: UnsafeMutablePointer<UInt64>
    private let addresses: UnsafeMutablePointer<UInt64>
    private var freeSlots: [Int] = Array(0..<Fetcher.slots)
    private var inbound: [Int: [Inbound]] = [:]  // per node, in request order
    private var gathered: [Int: [(handler: FaultHandler, region: Region, index: Int)]] = [:]  // lone pages to fetch, per node (see sendGathered)
    // One page fetched synchronously (fetchNow).
    private let syncPage = UnsafeMutableRawPointer.allocate(byteCount: Page.size, alignment: Page.size)
    private let syncPresent = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
    private let syncKey = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)

    init(pool: RemotePool, budget: LocalBudget, prefetchWindow: Int, maxPrefetchPages: Int, log: Logger) {
        self.pool = pool
        self.budget = budget
        self.prefetchWindow = prefetchWindow
        self.log = log
        slotPages = max(1, maxPrefetchPages) + 1
        buffer = UnsafeMutableRawPointer.allocate(byteCount: Fetcher.slots * slotPages * Page.size, alignment: Page.size)
        present = UnsafeMutablePointer<UInt8>.allocate(capacity: Fetcher.slots * slotPages)
        keys = UnsafeMutablePointer<UInt64>.allocate(capacity: Fetcher.slots * slotPages)
        addresses = UnsafeMutablePointer<UInt64>.allocate(capacity: Fetcher.slots * slotPages)
    }

    deinit {
        buffer.deallocate()
        present.deallocate()
        keys.deallocate()
        addresses.deallocate()
        syncPage.deallocate()
        syncPresent.deallocate()
        syncKey.deallocate()
    }

    /// Fetches the faulting page r[i] (and, on a stream, the remote pages after it).
    func fetch(_ h: FaultHandler, _ f: Sys.UffdEvent, _ r: Region, _ i: Int, run: Int) throws {
        if run == 0 {
            // A lone page (no stream to read ahead for): asked for with the batch's other lone pages.
            guard let node = node(holding: r, i) else { return }
            r.insert(i, .fetching)
            if pool.nodes[node].dead { return park(h, r, i) }
            inboundPages += 1
            gathered[node, default: []].append((h, r, i))
            return
        }
        let want = min(prefetchWindow, 1 << min(run + 1, 8))
        guard let sent = try sendFetch(h, r, i, maxPages: want, forFault: true) else { return }
        h.streams.advance(thread: f.tid, to: r.address(at: i + sent - 1), in: h.table.regions)
        if run >= 2 { try readAhead(h, thread: f.tid, r, i, run: run) }
    }

    /// Keeps up to `readAheadWindows` windows of a stream on their way beyond the faulting page r[i].
    func readAhead(_ h: FaultHandler, thread tid: UInt32, _ r: Region, _ i: Int, run: Int) throws {
        guard let s = h.streams[tid], r.contains(s.frontier) else { return }
        let window = min(prefetchWindow, 1 << min(run + 1, 8))
        var next = r.index(of: s.frontier) + 1
        // Read-ahead never takes the room of the budget: what is on its way counts as resident.
        while next < r.pageCount && next - i <= Fetcher.readAheadWindows * window && !freeSlots.isEmpty
                && budget.residentPages + inboundPages + 2 * window <= budget.pages {
            let st = r.state(next)
            guard st.contains(.remote), !st.contains(.resident), !st.contains(.fetching), !st.contains(.inFlight),
                  let sent = try sendFetch(h, r, next, maxPages: window, forFault: false) else { break }
            next += sent
            h.streams.advance(thread: tid, to: r.address(at: next - 1), in: h.table.regions)
        }
    }

    /// The node holding remote page r[i]; nil (and the run failed) if none does.
    private func node(holding r: Region, _ i: Int) -> Int? {
        guard let node = pool.location(r.key(at: i)) else {
            onFailure("page 0x\(String(r.address(at: i), radix: 16)) is marked remote but no memory node holds it")
            return nil
        }
        return node
    }

    /// Sends one fetch for up to `maxPages` consecutive remote pages from r[i] on one node.
    /// Returns how many pages it asked for (nil when the node failed).
    private func sendFetch(_ h: FaultHandler, _ r: Region, _ i: Int, maxPages: Int, forFault: Bool) throws -> Int? {
        guard let node = node(holding: r, i) else { return nil }
        if pool.nodes[node].dead {
            if forFault {
                r.insert(i, .fetching)
                park(h, r, i)
            }
            return nil
        }
        var n = 1
        while n < maxPages && i + n < r.pageCount {
            let s = r.state(i + n)
            guard s.contains(.remote), !s.contains(.resident), !s.contains(.inFlight), !s.contains(.fetching),
                  pool.location(r.key(at: i + n)) == node else { break }
            n += 1
        }
        let sent = try startRequest(node: node, count: n, handler: h, region: r, index: i, forFault: forFault) { keys, _ in
            for k in 0..<n { keys[k] = r.key(at: i + k) }
        }
        guard sent == .sent else {
            if sent == .nodeDown && forFault {
                r.insert(i, .fetching)
                park(h, r, i)
            }
            return nil
        }
        for k in i..<i + n { r.insert(k, .fetching) }
        inboundPages += n
        return n
    }

    /// Takes a fetch slot (receiving the oldest answer due if none is free), lets `fill` write the
    /// request's `count` keys (and a gathered request's addresses) into it, sends the request and
    /// records it as on its way.
    private func startRequest(node: Int, count n: Int, handler h: FaultHandler, region r: Region, index i: Int, forFault: Bool, gathered: Bool = false,
                              fill: (_ keys: UnsafeMutablePointer<UInt64>, _ addresses: UnsafeMutablePointer<UInt64>) -> Void) throws -> Started {
        if freeSlots.isEmpty { try receiveOldest() }
        if isStopping() { return .stopped }
        if pool.nodes[node].dead { return .nodeDown }
        let slot = freeSlots.removeLast()
        let slotKeys = keys + slot * slotPages
        fill(slotKeys, addresses + slot * slotPages)
        let id: UInt32
        do { id = try pool.startFetch(node: node, keys: UnsafeBufferPointer(start: slotKeys, count: n)) } catch let e as NodeFailure {
            freeSlots.append(slot)
            return nodeFailed(node, e) ? .nodeDown : .stopped
        }
        counters.fetchRequests += 1
        if PageTrace.on { PageTrace.note("FETCH n\(node) \(PageTrace.keys(UnsafeBufferPointer(start: slotKeys, count: n)))") }
        inbound[node, default: []].append(Inbound(handler: h, region: r, index: i, count: n, id: id, slot: slot, started: monotonicNanos(),
                                                  forFault: forFault, gathered: gathered))
        return .sent
    }

    enum Started { case sent, stopped, nodeDown }

    /// Node `node` failed: true if its pages are being recovered, with every request on its way to
    /// it parked; false if the run stops.
    private func nodeFailed(_ node: Int, _ e: NodeFailure) -> Bool {
        guard onNodeFailure(node, e.description) else {
            onFailure(e.description)
            return false
        }
        parkRequests(to: node)
        return true
    }

    /// Node `node` died and its pages are being recovered: every request on its way to it is parked
    /// (its answer will never come; a page left `fetching` would make its faults wait forever),
    /// whichever part of the agent saw the death first.
    func parkRequests(to node: Int) {
        for p in inbound.removeValue(forKey: node) ?? [] {
            park(p)
            inboundPages -= p.count
            freeSlots.append(p.slot)
        }
    }

    /// Parks page r[i] (`fetching` already) until its node's recovery.
    private func park(_ h: FaultHandler, _ r: Region, _ i: Int) {
        PageTrace.note("PARK \(String(r.key(at: i), radix: 16))")
        if parked.isEmpty { parkedSince = monotonicNanos() }
        parked.append((h, r.address(at: i), r.key(at: i)))
    }

    /// Parks the pages of a request whose node died (the caller frees its slot).
    private func park(_ p: Inbound) {
        PageTrace.note("PARKREQ \(p.count)")
        if parked.isEmpty { parkedSince = monotonicNanos() }
        let slotKeys = keys + p.slot * slotPages
        if p.gathered {
            let slotAddresses = addresses + p.slot * slotPages
            for k in 0..<p.count { parked.append((p.handler, slotAddresses[k], slotKeys[k])) }
        } else {
            for k in 0..<p.count { parked.append((p.handler, p.region.address(at: p.index + k), slotKeys[k])) }
        }
    }

    /// The parked pages' nodes are recovered: each page still waiting is no longer `fetching`, and
    /// its threads are woken to fault again, now on the page's new node.
    func resumeParked() {
        let all = parked
        parked.removeAll()
        if !all.isEmpty { counters.longestParkNanos = max(counters.longestParkNanos, monotonicNanos() - parkedSince) }
        for p in all where !p.handler.retired {
            if let r = p.handler.table.regions.find(p.address), case let i = r.index(of: p.address), r.key(at: i) == p.key,
               r.state(i).contains(.fetching) {
                r.remove(i, .fetching)
            }
            p.handler.kernel.wake(start: p.address, length: Page.size.u64)
        }
    }

    /// Sends the lone pages `fetch` gathered during a batch of faults: one request per node (several
    /// when they fill more than a slot), so the faults of several threads share one round trip, one
    /// wake-up of the node and one answer. Pages are `fetching` and counted in `inboundPages` already.
    func sendGathered() throws {
        guard !gathered.isEmpty else { return }
        let all = gathered
        gathered.removeAll(keepingCapacity: true)
        for (node, all) in all {
          // One request carries pages of one address space (a gathered answer is installed into one).
          for pages in Fetcher.splitByHandler(all) {
            var k = 0
            while k < pages.count {
                let n = min(slotPages, pages.count - k)
                let sent: Started
                do {
                    sent = try startRequest(node: node, count: n, handler: pages[k].handler, region: pages[k].region, index: pages[k].index,
                                            forFault: true, gathered: true) { keys, addresses in
                        for j in 0..<n {
                            let (_, r, i) = pages[k + j]
                            keys[j] = r.key(at: i)
                            addresses[j] = r.address(at: i)
                        }
                    }
                } catch {
                    // Whatever stays unsent is still gathered (fetching, counted inbound): sent
                    // with the next batch, never left waiting on no request.
                    gathered[node, default: []].append(contentsOf: pages[k...])
                    throw error
                }
                if sent == .nodeDown {
                    // Its node died: what is left waits for the recovery.
                    inboundPages -= pages.count - k
                    for (h, r, i) in pages[k...] { park(h, r, i) }
                    break
                }
                if sent == .stopped { return }
                k += n
            }
          }
        }
    }

    private static func splitByHandler(_ pages: [(handler: FaultHandler, region: Region, index: Int)]) -> [[(handler: FaultHandler, region: Region, index: Int)]] {
        guard let first = pages.first, pages.contains(where: { $0.handler !== first.handler }) else { return [pages] }
        var groups: [ObjectIdentifier: Int] = [:]
        var out: [[(handler: FaultHandler, region: Region, index: Int)]] = []
        for p in pages {
            let id = ObjectIdentifier(p.handler)
            if let g = groups[id] { out[g].append(p) } else {
                groups[id] = out.count
                out.append([p])
            }
        }
        return out
    }

    /// The nodes with answers to wait for, and their connections (for the event loop to poll).
    var connections: [(node: Int, connection: Connection)] {
        inbound.compactMap { $0.value.isEmpty || pool.nodes[$0.key].dead ? nil : ($0.key, pool.nodes[$0.key].fetcher.rpc.connection) }
    }

    /// Receives and installs the next answer from `node`.
    func receive(node: Int) throws {
        // A dead node's connection is closed (its descriptor may be another connection's by now):
        // never read; what waited on it waits for the recovery.
        if pool.nodes[node].dead { return parkRequests(to: node) }
        guard let p = inbound[node]?.first else { return }
        inbound[node]!.removeFirst()  // in place (a copy taken out and put back would be copied whole)
        inboundPages -= p.count
        defer { freeSlots.append(p.slot) }
        let pages = buffer + p.slot * slotPages * Page.size
        let slotKeys = keys + p.slot * slotPages
        do {
            try pool.finishFetch(node: node, id: p.id, keys: UnsafeBufferPointer(start: slotKeys, count: p.count),
                                 present: present + p.slot * slotPages, out: pages)
        } catch let e as NodeFailure {
            // This request too waits for the recovery (its slot is freed on return).
            if nodeFailed(node, e) { park(p) }
            return
        }
        // Install what is still expected: the range may have been unmapped, discarded or moved
        // (keys follow moved pages) meanwhile, or the process may have ended.
        let h = p.handler
        if h.retired {
            // Nothing to install into: the answer is dropped.
        } else if p.gathered {
            try installGathered(h, count: p.count, keys: slotKeys, addresses: addresses + p.slot * slotPages, from: pages)
        } else if h.table.regions.find(p.region.address(at: p.index)) === p.region && p.region.contains(p.region.address(at: p.index + p.count - 1)) {
            try installExpected(h, p.region, p.index, count: p.count, keys: slotKeys, from: pages)
        } else {
            for k in 0..<p.count {
                if let (r, i) = h.table.region(forKey: slotKeys[k]) {
                    try installExpected(h, r, i, count: 1, keys: slotKeys + k, from: pages + k * Page.size)
                }
            }
            // A thread may wait on the old address of a page that moved or vanished: let it retry.
            h.kernel.wake(start: p.region.address(at: p.index), length: UInt64(p.count * Page.size))
        }
        counters.fetchedPages += p.count
        if p.gathered {
            let waited = monotonicNanos() - p.started
            for _ in 0..<p.count {
                counters.remoteLatency.record(nanos: waited)
                faultTimer.recordNanoseconds(Int64(waited))
            }
        } else if p.forFault {
            counters.prefetchedPages += p.count - 1
            let waited = monotonicNanos() - p.started
            counters.remoteLatency.record(nanos: waited)
            faultTimer.recordNanoseconds(Int64(waited))
        } else {
            counters.prefetchedPages += p.count
        }
    }

    /// Installs the pages of a gathered answer still waiting, each found where it was asked for or,
    /// if it moved, by its key; a thread waiting at an address its page left is woken to retry.
    private func installGathered(_ h: FaultHandler, count: Int, keys: UnsafePointer<UInt64>, addresses: UnsafePointer<UInt64>,
                                 from buffer: UnsafeRawPointer) throws {
        for k in 0..<count {
            let address = addresses[k]
            if let r = h.table.regions.find(address), case let i = r.index(of: address), r.key(at: i) == keys[k] {
                try installExpected(h, r, i, count: 1, keys: keys + k, from: buffer + k * Page.size)
                continue
            }
            if let (r, i) = h.table.region(forKey: keys[k]) {
                try installExpected(h, r, i, count: 1, keys: keys + k, from: buffer + k * Page.size)
            }
            h.kernel.wake(start: address, length: Page.size.u64)
        }
    }

    /// Installs the pages of r[i..<i+count] still waiting for these keys (those still `fetching`).
    private func installExpected(_ h: FaultHandler, _ r: Region, _ i: Int, count: Int, keys: UnsafePointer<UInt64>, from buffer: UnsafeRawPointer) throws {
        var k = 0
        while k < count {
            guard r.state(i + k).contains(.fetching), r.key(at: i + k) == keys[k] else {
                k += 1
                continue
            }
            var n = 1
            while k + n < count && r.state(i + k + n).contains(.fetching) && r.key(at: i + k + n) == keys[k + n] { n += 1 }
            try installRetrying(h, r, i + k, count: n, keys: keys + k, from: buffer + k * Page.size)
            k += n
        }
    }

    /// Installs fetched pages; while the address space is changing (EAGAIN), reads the pending
    /// events first (they are what holds the change) and tries again.
    private func installRetrying(_ h: FaultHandler, _ r: Region, _ i: Int, count: Int, keys: UnsafePointer<UInt64>, from src: UnsafeRawPointer) throws {
        for _ in 0..<10_000 {
            switch h.install(nil, r, i, count: count, from: src) {
            case .done: return
            case .gone:
                for k in i..<i + count { r.remove(k, .fetching) }
                return
            case .again:
                try h.readEvents()
                guard h.table.regions.find(r.address(at: i)) === r else {
                    // The range changed under the answer: whatever of it still waits is fetched anew.
                    abandonFetch(h, keys: keys, count: count)
                    return
                }
            }
        }
        log.warning("gave up installing \(describeRange(r.address(at: i), UInt64(count * Page.size))): the address space kept changing")
        abandonFetch(h, keys: keys, count: count)
    }

    /// Pages whose fetch answer cannot be installed: no longer `fetching` (so a fault on them fetches
    /// again rather than wait for an answer that has come and gone), and their waiters woken.
    private func abandonFetch(_ h: FaultHandler, keys: UnsafePointer<UInt64>, count: Int) {
        for k in 0..<count {
            guard let (r, i) = h.table.region(forKey: keys[k]), r.state(i).contains(.fetching) else { continue }
            r.remove(i, .fetching)
            h.kernel.wake(start: r.address(at: i), length: Page.size.u64)
        }
    }

    private func receiveOldest() throws {
        guard let node = inbound.first(where: { !$0.value.isEmpty })?.key else { return }
        try receive(node: node)
    }

    /// Fetches remote page r[i] now, on its node's connection (after the answers due on it), and
    /// installs it. For pages the agent must read outside a fault.
    /// False if the page's node is dead and being recovered: the caller waits for that, then asks again.
    func fetchNow(_ h: FaultHandler, _ r: Region, _ i: Int) throws -> Bool {
        let key = r.key(at: i)
        guard let node = pool.location(key) else { return true }
        if pool.nodes[node].dead { return false }
        do {
            try drain(node: node)
            syncKey[0] = key
            try pool.fetch(node: node, keys: UnsafeBufferPointer(start: syncKey, count: 1), present: syncPresent, out: syncPage)
        } catch let e as NodeFailure {
            return !nodeFailed(node, e)
        }
        PageTrace.note("FETCHNOW n\(node) \(String(key, radix: 16))")
        if h.install(nil, r, i, count: 1, from: syncPage) == .done { counters.fetchedPages += 1 }
        return true
    }

    /// Receives every answer still due from `node` (before a synchronous request on its connection).
    func drain(node: Int) throws {
        while let q = inbound[node], !q.isEmpty, !isStopping() { try receive(node: node) }
    }

    func drainAll() throws {
        for node in inbound.keys { try drain(node: node) }
    }
}
