import LegatoCore

/// One address space's managed pages as the agent knows them: the regions with a state byte per
/// page, how many are resident (counted against the run's budget), and the order they leave in
/// (the victim FIFO, and the pages sequential streams have passed).
///
/// Owned by the event-loop thread; no locks.
final class PageTable {
    let regions: RegionTable
    var victims = VictimQueue()
    var consumed = ConsumedRanges()
    let budget: LocalBudget
    private(set) var residentPages = 0

    init(budget: LocalBudget, keys: KeyAllocator = KeyAllocator()) {
        self.budget = budget
        regions = RegionTable(keys: keys)
    }

    func noteResident(_ delta: Int) {
        residentPages += delta
        budget.noteResident(delta)
    }

    /// Queues r[i] for eviction once (the `queued` bit says it has an entry).
    @inline(__always)
    func pushVictim(_ r: Region, _ i: Int) {
        if !r.state(i).contains(.queued) {
            r.insert(i, .queued)
            victims.push(r.address(at: i))
        }
    }

    /// Pages r[i..<i+n] are now in the program's page tables: resident, no longer on their way,
    /// dirty or clean as given, queued for eviction. Pages already resident are left as they are.
    @inline(__always)
    func markInstalled(_ r: Region, _ i: Int, _ n: Int, dirty: Bool = false) {
        var added = 0
        for k in i..<i + n {
            var s = r.state(k)
            if s.contains(.resident) { continue }
            s.remove(.fetching)
            s.insert(.resident)
            if dirty { s.insert(.dirty) } else { s.remove(.dirty) }
            r.setState(k, s)
            pushVictim(r, k)
            added += 1
        }
        noteResident(added)
    }

    /// The region and index of the page whose copy is under `key` (its store key, or a fork's shared key).
    func region(forKey key: UInt64) -> (region: Region, index: Int)? {
        for r in regions.regions where key >= r.keyBase && key < r.keyBase + UInt64(r.pageCount) {
            let i = Int(key - r.keyBase)
            if r.key(at: i) == key { return (r, i) }
        }
        for r in regions.regions {
            if let inh = r.inherited, let i = inh.firstIndex(of: key) { return (r, i) }
        }
        return nil
    }

    /// Fills this (empty) table with a fork's copy of `parent`: the same regions and pages, resident
    /// ones counted against the budget and queued as victims (the child's page tables hold them,
    /// shared copy-on-write with the parent's), remote ones reading the parent's copies under keys
    /// now shared (`shared` is told each), and both sides storing under fresh keys from now on.
    func copyForFork(of parent: PageTable, shared: (UInt64) -> Void) {
        precondition(regions.isEmpty)
        let keep: PageState = [.resident, .remote, .dirty]
        for r in parent.regions.regions {
            r.shareRemoteCopies(newKeyBase: parent.regions.allocateKeys(r.pageCount), shared)
            regions.insert(r.forkCopy(keyBase: regions.allocateKeys(r.pageCount), keeping: keep))
        }
        var resident = 0
        for r in regions.regions {
            for i in 0..<r.pageCount where r.state(i).contains(.resident) {
                pushVictim(r, i)
                resident += 1
            }
        }
        noteResident(resident)
    }

    /// Pages of `parts` (taken out of the table) are gone: they no longer count as resident and
    /// their states are reset to untouched. Their remote copies are the caller's to discard first.
    func forget(_ parts: [Region]) {
        var gone = 0
        for r in parts {
            for i in 0..<r.pageCount {
                let s = r.state(i)
                if s.contains(.resident) { gone += 1 }
                r.setState(i, s.intersection(.queued))
            }
        }
        if gone > 0 { noteResident(-gone) }
    }

    /// Refills the victim FIFO from the resident pages (when it ran dry of live entries).
    func rebuildVictimQueue() {
        victims.removeAll()
        for r in regions.regions {
            for i in 0..<r.pageCount {
                r.remove(i, .queued)
                if r.state(i).contains(.resident) { pushVictim(r, i) }
            }
        }
    }

    /// Forgets every page (the address space is gone: exec). The caller has dealt with their
    /// remote copies.
    func removeAll() {
        regions.removeAll()
        victims.removeAll()
        consumed.removeAll()
        noteResident(-residentPages)
    }
}
