import LegatoCore

/// Each thread's run of faults on consecutive pages, which decides how far ahead to zero-fill or
/// fetch: a stream continues at the page after the last one installed or asked for on its behalf.
struct FaultStreams {
    /// `last` faulted page, `frontier` the last page installed or asked for on the thread's behalf.
    struct Stream {
        var last: UInt64
        var frontier: UInt64
        var run: Int
    }

    private var streams: [UInt32: Stream] = [:]

    subscript(thread: UInt32) -> Stream? { streams[thread] }

    /// How long a run of consecutive pages thread `tid` has been faulting on, counting this fault.
    /// The pages a stream has moved past are the first to go (drop-behind, into `table.consumed`):
    /// a scan does not come back to them before it has seen everything else, which FIFO would evict first.
    mutating func note(thread tid: UInt32, page: UInt64, table: PageTable) -> Int {
        let s = streams[tid]
        let continues = s.map { page > $0.last && page <= $0.frontier &+ Page.size.u64 } ?? false
        let run = continues ? s!.run + 1 : 0
        if continues && run >= 2 && page > s!.last + Page.size.u64 { table.consumed.push(s!.last, page) }
        if streams.count > 256 && s == nil { streams.removeAll(keepingCapacity: true) }
        streams[tid] = Stream(last: page, frontier: continues ? max(s!.frontier, page) : page, run: run)
        return run
    }

    /// Moves thread `tid`'s frontier up to `page`, if the page lies in the region of the stream's
    /// last fault. (A fault served while freezing does not update the stream: without this check
    /// the frontier of a stream in the heap could jump to the thread's stack, and its next fault
    /// anywhere in between would count the whole gap as passed.)
    mutating func advance(thread tid: UInt32, to page: UInt64, in regions: RegionTable) {
        guard var s = streams[tid], page > s.frontier, let r = regions.find(page), r.contains(s.last) else { return }
        s.frontier = page
        streams[tid] = s
    }
}
