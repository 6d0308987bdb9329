import LegatoCore

/// A managed range of private anonymous memory of the program, with one PageState per page.
///
/// Pages are named remotely by *keys*, not addresses: each region gets a fresh key range when it
/// is created, and keeps it when mremap moves it, so a page's remote copy never has to be re-keyed
/// and a new mapping at an old address never collides with a moved one.
final class Region {
    private(set) var start: UInt64
    private(set) var end: UInt64
    private(set) var keyBase: UInt64
    let growsDown: Bool
    private(set) var states: [UInt8]

    init(start: UInt64, end: UInt64, keyBase: UInt64, growsDown: Bool = false, states: [UInt8]? = nil) {
        precondition(start < end && start & Page.mask == 0 && end & Page.mask == 0)
        self.start = start
        self.end = end
        self.keyBase = keyBase
        self.growsDown = growsDown
        let n = Int((end - start) >> Page.shift)
        self.states = states ?? [UInt8](repeating: 0, count: n)
        precondition(self.states.count == n)
    }

    var pageCount: Int { states.count }
    var length: UInt64 { end - start }

    @inline(__always) func contains(_ address: UInt64) -> Bool { address >= start && address < end }
    @inline(__always) func index(of address: UInt64) -> Int { Int((address - start) >> Page.shift) }
    @inline(__always) func address(at index: Int) -> UInt64 { start + UInt64(index) << Page.shift }
    @inline(__always) func key(at index: Int) -> UInt64 { keyBase + UInt64(index) }

    @inline(__always) func state(_ i: Int) -> PageState { PageState(rawValue: states[i]) }
    @inline(__always) func setState(_ i: Int, _ s: PageState) { states[i] = s.rawValue }
    @inline(__always) func insert(_ i: Int, _ s: PageState) { states[i] |= s.rawValue }
    @inline(__always) func remove(_ i: Int, _ s: PageState) { states[i] &= ~s.rawValue }

    /// Marks every page as changed since the last checkpoint (clears `saved`).
    func forgetSaved() {
        let mask = ~PageState.saved.rawValue
        for i in states.indices { states[i] &= mask }
    }

    /// Marks every page as held by the checkpoint just taken.
    func markAllSaved() {
        let bit = PageState.saved.rawValue
        for i in states.indices { states[i] |= bit }
    }

    /// The part [from, to) as a new region (keys follow the pages).
    func slice(_ from: UInt64, _ to: UInt64) -> Region {
        let a = index(of: from), b = index(of: to)
        return Region(start: from, end: to, keyBase: keyBase + UInt64(a), growsDown: growsDown && from == start,
                      states: Array(states[a..<b]))
    }

    /// Moves the region to a new start address, keeping keys and states.
    func relocate(to newStart: UInt64) {
        end = newStart + length
        start = newStart
    }

    /// Grows the region downward (a stack VMA that grew) with fresh keys for the new pages.
    func extendDown(to newStart: UInt64, keyBase newKeys: UInt64) -> Region {
        Region(start: newStart, end: start, keyBase: newKeys, growsDown: true)
    }
}
