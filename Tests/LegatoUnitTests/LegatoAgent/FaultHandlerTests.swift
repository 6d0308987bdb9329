import Glibc
import LegatoCore
import LegatoSystem
import Testing
@testable import LegatoAgent

/// Plays the kernel's side of a userfaultfd: a set of present pages, a queue of messages, and
/// errors to hand out, as UFFDIO_COPY and UFFDIO_WAKE would.
final class FakeUserfaultKernel: UserfaultKernel {
    var present = Set<UInt64>()
    var queued: [Sys.UffdEvent] = []
    /// Errors the next copies return before doing anything (EAGAIN while the mm changes).
    var failNextCopies: [Int32] = []
    private(set) var copies: [(address: UInt64, pages: Int, writeProtect: Bool, source: UnsafeRawPointer)] = []
    private(set) var wakes: [(start: UInt64, length: UInt64)] = []

    func readEvents(into buffer: UnsafeMutablePointer<Sys.UffdEvent>, max: Int) throws -> Int {
        let n = min(max, queued.count)
        for k in 0..<n { buffer[k] = queued[k] }
        queued.removeFirst(n)
        return n
    }

    func copy(to address: UInt64, from source: UnsafeRawPointer, length: UInt64, writeProtect: Bool) -> (errno: Int32, copied: Int64) {
        copies.append((address, Int(length) / Page.size, writeProtect, source))
        if !failNextCopies.isEmpty { return (failNextCopies.removeFirst(), 0) }
        // Like the kernel: pages go in one by one; the first one already there stops the copy with EEXIST.
        var a = address
        while a < address + length {
            if present.contains(a) { return (EEXIST, Int64(a - address)) }
            present.insert(a)
            a += UInt64(Page.size)
        }
        return (0, Int64(length))
    }

    func wake(start: UInt64, length: UInt64) { wakes.append((start, length)) }

    func woke(_ address: UInt64) -> Bool { wakes.contains { $0.start <= address && address < $0.start + $0.length } }
}

/// Records what the fault handler asks of the rest of the agent.
final class RecordingSources: FaultSources {
    var buffered: [UInt64: UnsafeRawPointer] = [:]
    private(set) var fetched: [(address: UInt64, run: Int)] = []
    private(set) var discarded: [Region] = []

    func bufferedPage(key: UInt64) -> UnsafeRawPointer? { buffered[key] }
    private(set) var forks: [Int32] = []
    func fetch(_ h: FaultHandler, _ fault: Sys.UffdEvent, _ r: Region, _ i: Int, run: Int) throws {
        r.insert(i, .fetching)
        fetched.append((r.address(at: i), run))
    }
    func readAhead(_ h: FaultHandler, thread: UInt32, _ r: Region, _ i: Int, run: Int) throws {}
    func forked(_ h: FaultHandler, uffd: Int32) { forks.append(uffd) }
    func serveRestoring(_ fault: Sys.UffdEvent?, _ r: Region, _ i: Int, run: Int) throws {}
    func discardRemoteCopies(of parts: [Region]) { discarded.append(contentsOf: parts) }
}

@Suite struct FaultHandlerTests {
    static let base: UInt64 = 0x7f00_0000_0000
    static let page = UInt64(Page.size)

    let kernel = FakeUserfaultKernel()
    let sources = RecordingSources()
    let budget = LocalBudget(pages: 1024)
    let table: PageTable
    let handler: FaultHandler
    let zeros: UnsafeMutableRawPointer

    init() {
        table = PageTable(budget: budget)
        zeros = UnsafeMutableRawPointer.allocate(byteCount: 16 * Page.size, alignment: Page.size)
        memset(zeros, 0, 16 * Page.size)
        handler = FaultHandler(kernel: kernel, table: table, pid: 4242, prefetchWindow: 16, zeroPages: zeros,
                               counters: FaultHandler.Counters(), log: LegatoLogging.logger("test.faults"))
        handler.sources = sources
        handler.lookUpMapping = { _ in nil }
        table.regions.add(start: Self.base, end: Self.base + 64 * Self.page)
    }

    func fault(_ pageIndex: Int, write: Bool = false, thread: UInt32 = 7) -> Sys.UffdEvent {
        var e = Sys.UffdEvent()
        e.kind = Sys.UffdEventKind.pageFault.rawValue
        e.flags = write ? Sys.uffdPageFaultFlagWrite : 0
        e.addr = Self.base + UInt64(pageIndex) * Self.page + 0x123  // faults name the byte, not the page
        e.tid = thread
        return e
    }

    func unmap(_ from: Int, _ to: Int) -> Sys.UffdEvent {
        var e = Sys.UffdEvent()
        e.kind = Sys.UffdEventKind.unmap.rawValue
        e.addr = Self.base + UInt64(from) * Self.page
        e.a2 = Self.base + UInt64(to) * Self.page
        return e
    }

    func state(_ pageIndex: Int) -> PageState {
        let a = Self.base + UInt64(pageIndex) * Self.page
        guard let r = table.regions.find(a) else { return [] }
        return r.state(r.index(of: a))
    }

    func serveAll() throws {
        try handler.readEvents()
        for f in handler.takePending() { try handler.serve(f) }
    }

    @Test func anUntouchedPageIsZeroFilledWriteProtectedWithoutARoundTrip() throws {
        kernel.queued = [fault(3)]
        try serveAll()
        #expect(kernel.copies.count == 1)
        #expect(kernel.copies[0].address == Self.base + 3 * Self.page && kernel.copies[0].pages == 1)
        #expect(kernel.copies[0].writeProtect, "a read fault's page is installed write-protected so writes are tracked")
        #expect(state(3).contains([.resident, .queued]))
        #expect(budget.residentPages == 1 && handler.counters.zeroFills == 1)
        #expect(sources.fetched.isEmpty)
    }

    @Test func aWriteFaultOnUntouchedMemoryIsInstalledWritable() throws {
        kernel.queued = [fault(5, write: true)]
        try serveAll()
        #expect(kernel.copies.count == 1 && !kernel.copies[0].writeProtect)
    }

    /// EEXIST from UFFDIO_COPY is success: the page is there, the waiting thread is woken.
    @Test func aStaleFaultIsWokenAndCountsAsSuccess() throws {
        kernel.queued = [fault(2)]
        try serveAll()
        // The thread was interrupted (a freeze) and faulted again on the page it now has.
        kernel.queued = [fault(2)]
        try serveAll()
        #expect(kernel.copies.count == 2)
        #expect(kernel.woke(Self.base + 2 * Self.page), "the stale fault's thread must be woken")
        #expect(handler.counters.staleFaults == 1)
        #expect(budget.residentPages == 1, "a page already resident is not counted twice")
    }

    /// A page the kernel has but the table thought absent (populated behind the agent's back) counts
    /// as resident and dirty: its content is not what any memory node holds.
    @Test func aPagePopulatedBehindOurBackIsAdoptedAsDirty() throws {
        kernel.present.insert(Self.base + 9 * Self.page)
        kernel.queued = [fault(9)]
        try serveAll()
        #expect(state(9).contains([.resident, .dirty]))
        #expect(kernel.woke(Self.base + 9 * Self.page))
        #expect(budget.residentPages == 1)
    }

    /// EAGAIN means the address space is changing: the fault is queued again, nothing is installed.
    @Test func eagainQueuesTheFaultToBeRetried() throws {
        kernel.failNextCopies = [EAGAIN]
        kernel.queued = [fault(4)]
        try serveAll()
        #expect(!state(4).contains(.resident))
        #expect(handler.hasPending, "the fault must wait for a retry, not be dropped")
        #expect(budget.residentPages == 0)
        try serveAll()
        #expect(state(4).contains(.resident))
        #expect(!handler.hasPending)
    }

    /// The kernel queues a fault before the UNMAP that follows it; served after the unmap is applied,
    /// the fault finds no page to fill and its thread is woken (a plain run would take SIGSEGV).
    @Test func unmapIsAppliedBeforeTheFaultsOfTheSameBatch() throws {
        kernel.queued = [fault(10)]
        try serveAll()
        #expect(budget.residentPages == 1)
        kernel.queued = [fault(11), unmap(8, 16)]
        try serveAll()
        #expect(kernel.copies.count == 1, "the fault behind the unmap must not be served from the old mapping")
        #expect(kernel.woke(Self.base + 11 * Self.page))
        #expect(table.regions.find(Self.base + 11 * Self.page) == nil)
        #expect(budget.residentPages == 0, "the unmapped resident page no longer counts")
        #expect(sources.discarded.map { $0.start } == [Self.base + 8 * Self.page], "its remote copies are discarded")
    }

    /// A multi-page zero-fill that meets a page already present (a partial copy, then EEXIST) goes
    /// on past it, and the present page counts as resident and dirty.
    @Test func aCopyStoppedByAPresentPageGoesOnPastIt() throws {
        kernel.present.insert(Self.base + 24 * Self.page)
        // The third fault of a sequential stream zero-fills four pages ahead: 22..<26.
        kernel.queued = [fault(20), fault(21), fault(22)]
        try serveAll()
        #expect(kernel.copies.map { $0.pages } == [1, 1, 4, 2, 1], "\(kernel.copies.map { ($0.address - Self.base) / Self.page })")
        for k in 20..<26 { #expect(state(k).contains(.resident), "page \(k)") }
        #expect(state(24).contains(.dirty) && !state(23).contains(.dirty))
        #expect(kernel.woke(Self.base + 24 * Self.page))
        #expect(budget.residentPages == 6)
    }

    @Test func remotePagesAreFetchedAndBufferedPagesServedFromTheBuffer() throws {
        let r = table.regions.find(Self.base)!
        r.insert(30, .remote)
        r.insert(31, [.remote, .inFlight])
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: Page.size, alignment: Page.size)
        defer { buffer.deallocate() }
        sources.buffered[r.key(at: 31)] = UnsafeRawPointer(buffer)
        kernel.queued = [fault(30, thread: 1), fault(31, thread: 2)]
        try serveAll()
        #expect(sources.fetched.map { $0.address } == [Self.base + 30 * Self.page])
        #expect(state(30).contains(.fetching) && !state(30).contains(.resident))
        #expect(kernel.copies.count == 1 && kernel.copies[0].source == UnsafeRawPointer(buffer))
        #expect(state(31).contains(.resident) && handler.counters.bufferHits == 1)
    }

    /// The window doubles as the stream goes on: 1, 1, then 4 and 8 pages ahead (within the prefetch window).
    @Test func aSequentialStreamZeroFillsFurtherAheadAsItGoesOn() throws {
        kernel.queued = [fault(40), fault(41), fault(42)]
        try serveAll()
        kernel.queued = [fault(46)]  // the page after the last one installed for the stream
        try serveAll()
        #expect(kernel.copies.map { $0.pages } == [1, 1, 4, 8])
        #expect(budget.residentPages == 14 && handler.counters.zeroFills == 14)
        // A fault elsewhere starts a new stream: one page.
        kernel.queued = [fault(60)]
        try serveAll()
        #expect(kernel.copies.last?.pages == 1)
    }
}
