import LegatoCore

/// The managed regions of the program's address space, sorted by address, non-overlapping.
/// Owned by the agent's event-loop thread.
final class RegionTable {
    private(set) var regions: [Region] = []
    let keys: KeyAllocator
    private var lastHit: Region?

    init(keys: KeyAllocator = KeyAllocator()) { self.keys = keys }

    var isEmpty: Bool { regions.isEmpty }

    /// Allocates `pages` fresh keys (never reused within the run).
    func allocateKeys(_ pages: Int) -> UInt64 { keys.allocate(pages) }

    /// The region holding `address`, if any.
    @inline(__always)
    func find(_ address: UInt64) -> Region? {
        if let r = lastHit, r.contains(address) { return r }
        var lo = 0, hi = regions.count
        while lo < hi {
            let mid = (lo + hi) / 2
            let r = regions[mid]
            if address < r.start { hi = mid } else if address >= r.end { lo = mid + 1 } else {
                lastHit = r
                return r
            }
        }
        return nil
    }

    /// The first region at or above `address`.
    func firstIndex(atOrAbove address: UInt64) -> Int {
        var lo = 0, hi = regions.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if regions[mid].end <= address { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// Adds a new region with fresh keys and all pages absent. Overlapping parts of old regions
    /// are removed first (and returned, so their remote copies can be discarded).
    @discardableResult
    func add(start: UInt64, end: UInt64, growsDown: Bool = false) -> (region: Region, removed: [Region]) {
        let removed = remove(start: start, end: end)
        let r = Region(start: start, end: end, keyBase: allocateKeys(Int((end - start) >> Page.shift)), growsDown: growsDown)
        insert(r)
        return (r, removed)
    }

    func insert(_ r: Region) {
        let i = firstIndex(atOrAbove: r.start)
        precondition(i == regions.count || regions[i].start >= r.end, "overlapping region insert")
        regions.insert(r, at: i)
    }

    /// Removes [start, end) from the table, splitting regions at the edges. Returns the removed parts.
    @discardableResult
    func remove(start: UInt64, end: UInt64) -> [Region] {
        guard start < end else { return [] }
        lastHit = nil
        var removed: [Region] = []
        var i = firstIndex(atOrAbove: start)
        while i < regions.count && regions[i].start < end {
            let r = regions[i]
            let cutStart = max(r.start, start), cutEnd = min(r.end, end)
            removed.append(r.slice(cutStart, cutEnd))
            var replacement: [Region] = []
            if r.start < cutStart { replacement.append(r.slice(r.start, cutStart)) }
            if cutEnd < r.end { replacement.append(r.slice(cutEnd, r.end)) }
            regions.replaceSubrange(i..<i + 1, with: replacement)
            i += replacement.count
        }
        return removed
    }

    /// Moves [from, from+length) to `to` (an mremap that moved pages), keeping keys and states.
    func move(from: UInt64, to: UInt64, length: UInt64) {
        let parts = remove(start: from, end: from + length)
        remove(start: to, end: to + length)
        for p in parts {
            p.relocate(to: to + (p.start - from))
            p.forgetSaved()  // checkpoints hold pages by address: at the new one they are new
            insert(p)
        }
    }

    func removeAll() {
        regions.removeAll()
        lastHit = nil
    }

    var totalPages: Int { regions.reduce(0) { $0 + $1.pageCount } }
}
