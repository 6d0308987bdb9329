import LegatoCore

/// A managed range of private anonymous memory of the program, with one PageState per page.
///
/// Pages are named remotely by *keys*, not addresses: each region gets a fresh key range when it
/// is created, and keeps it when mremap moves it, so a page's remote copy never has to be re-keyed
/// and a new mapping at an old address never collides with a moved one.
///
/// A fork shares the remote copies of both processes' pages: from then on each side stores under
/// fresh keys (`keyBase` changes), and a page whose remote copy is still the shared one reads it from
/// its `inherited` key until it is stored again (see SharedKeys).
final class Region {
    private(set) var start: UInt64
    private(set) var end: UInt64
    /// Where pages are stored: page i under keyBase + i.
    private(set) var keyBase: UInt64
    let growsDown: Bool
    private(set) var states: [UInt8]
    /// Per page, the key its remote copy lies under when that is not keyBase + i (a fork's shared
    /// copy); 0 where it is. nil until a fork.
    private(set) var inherited: [UInt64]?

    init(start: UInt64, end: UInt64, keyBase: UInt64, growsDown: Bool = false, states: [UInt8]? = nil, inherited: [UInt64]? = nil) {
        precondition(start < end && start & Page.mask == 0 && end & Page.mask == 0)
        self.start = start
        self.end = end
        self.keyBase = keyBase
        self.growsDown = growsDown
        let n = Int((end - start) >> Page.shift)
        self.states = states ?? [UInt8](repeating: 0, count: n)
        precondition(self.states.count == n)
        precondition(inherited == nil || inherited!.count == n)
        self.inherited = inherited
    }

    var pageCount: Int { states.count }
    var length: UInt64 { end - start }

    @inline(__always) func contains(_ address: UInt64) -> Bool { address >= start && address < end }
    @inline(__always) func index(of address: UInt64) -> Int { Int((address - start) >> Page.shift) }
    @inline(__always) func address(at index: Int) -> UInt64 { start + UInt64(index) << Page.shift }
    /// The key the page's remote (or in-flight) copy is under.
    @inline(__always) func key(at index: Int) -> UInt64 {
        if let inh = inherited, inh[index] != 0 { return inh[index] }
        return keyBase + UInt64(index)
    }
    /// The key the page is stored under when it is next evicted.
    @inline(__always) func storeKey(at index: Int) -> UInt64 { keyBase + UInt64(index) }

    /// The page no longer reads the shared copy (it is stored anew, or discarded): the key it held,
    /// if it held one, for the caller to release.
    @inline(__always) func dropInherited(_ i: Int) -> UInt64? {
        guard let inh = inherited, inh[i] != 0 else { return nil }
        inherited![i] = 0
        return inh[i]
    }

    /// Points page i at a shared copy again (a discard that the kernel refused).
    func setInherited(_ i: Int, key: UInt64) {
        if key == keyBase + UInt64(i) { return }
        if inherited == nil { inherited = [UInt64](repeating: 0, count: pageCount) }
        inherited![i] = key
    }

    /// A fork: every page with a remote copy keeps reading it under its current key (now shared with
    /// the child), and new stores go under `newKeyBase`. Calls `shared` with each such key.
    func shareRemoteCopies(newKeyBase: UInt64, _ shared: (UInt64) -> Void) {
        let remote = PageState.remote.rawValue
        for i in states.indices where states[i] & remote != 0 {
            let k = key(at: i)
            if inherited == nil { inherited = [UInt64](repeating: 0, count: pageCount) }
            inherited![i] = k
            shared(k)
        }
        keyBase = newKeyBase
    }

    /// The child's copy of this region after a fork: same pages, states (as `mask` keeps them) and
    /// shared keys, its own fresh keys for stores.
    func forkCopy(keyBase newKeys: UInt64, keeping mask: PageState) -> Region {
        Region(start: start, end: end, keyBase: newKeys, growsDown: growsDown, states: states.map { $0 & mask.rawValue }, inherited: inherited)
    }

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
                      states: Array(states[a..<b]), inherited: inherited.map { Array($0[a..<b]) })
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
