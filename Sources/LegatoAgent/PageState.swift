/// What the agent knows of one managed page, one byte per page.
///
///  - `resident`: present in the program's page tables (we installed it, or it was there at registration).
///  - `remote`: a memory node holds its content (else its backing is zero: never written, or discarded).
///  - `dirty`: the local copy differs from its backing (a scan cleared the kernel's written bit, or the
///    page was present before we registered it). The kernel's own written bit (WP_ASYNC) covers the rest.
///  - `inFlight`: evicted, its newest content is in a write-back batch not yet acknowledged.
///  - `queued`: the page has an entry in the victim FIFO.
///  - `fetching`: a fetch of the page is on its way from a memory node.
struct PageState: OptionSet {
    let rawValue: UInt8
    static let resident = PageState(rawValue: 1 << 0)
    static let remote = PageState(rawValue: 1 << 1)
    static let dirty = PageState(rawValue: 1 << 2)
    static let inFlight = PageState(rawValue: 1 << 3)
    static let queued = PageState(rawValue: 1 << 4)
    static let fetching = PageState(rawValue: 1 << 5)
}
