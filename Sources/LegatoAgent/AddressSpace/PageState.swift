/// What the agent knows of one managed page, one byte per page.
///
///  - `resident`: present in the program's page tables (we installed it, or it was there at registration).
///  - `remote`: a memory node holds its content (else its backing is zero: never written, or discarded).
///  - `dirty`: the local copy differs from its backing (a scan cleared the kernel's written bit, or the
///    page was present before we registered it). The kernel's own written bit (WP_ASYNC) covers the rest.
///  - `inFlight`: evicted, its newest content is in a write-back batch not yet acknowledged.
///  - `queued`: the page has an entry in the victim FIFO.
///  - `fetching`: a fetch of the page is on its way from a memory node.
///  - `saved`: the content is what the last committed checkpoint (with its parents) holds at this
///    address. Any change clears it — a write (the kernel's written bit, read at the checkpoint), an
///    eviction of a written page, a discard, a move — and a new region starts without it, so a page
///    without `saved` goes into the next incremental checkpoint (as data, or as a zero run).
///  - `restoring`: a restored checkpoint holds its content and it is not back yet (RestoreBacking).
struct PageState: OptionSet {
    let rawValue: UInt8
    static let resident = PageState(rawValue: 1 << 0)
    static let remote = PageState(rawValue: 1 << 1)
    static let dirty = PageState(rawValue: 1 << 2)
    static let inFlight = PageState(rawValue: 1 << 3)
    static let queued = PageState(rawValue: 1 << 4)
    static let fetching = PageState(rawValue: 1 << 5)
    static let saved = PageState(rawValue: 1 << 6)
    static let restoring = PageState(rawValue: 1 << 7)
}
