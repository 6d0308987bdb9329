/// Which resident pages an eviction takes: first those sequential streams have moved past, most
/// recently passed first (drop-behind: a scan does not come back to them before it has seen
/// everything else), then the oldest installed (the FIFO, LegoOS's order). Stale entries (pages
/// gone or no longer resident) are skipped; a FIFO that runs dry is rebuilt once from the table.
enum VictimChoice {
    /// Up to `wanted` resident pages of `table`, taken off its queues (a page taken from the FIFO
    /// loses its `queued` bit).
    static func pick(_ wanted: Int, from table: PageTable) -> [UInt64] {
        var out: [UInt64] = []
        out.reserveCapacity(wanted)
        // Each page once, whichever queue names it (a FIFO rebuilt in this call names again the
        // pages it handed out before).
        var taken = Set<UInt64>()
        // First what sequential streams have passed, most recently passed first ...
        while out.count < wanted, let a = table.consumed.popPage() {
            guard let r = table.regions.find(a), r.state(r.index(of: a)).contains(.resident), taken.insert(a).inserted else { continue }
            out.append(a)
        }
        // ... then the oldest installed.
        var rebuilt = false
        while out.count < wanted {
            guard let a = table.victims.pop() else {
                if rebuilt { break }
                rebuilt = true
                table.rebuildVictimQueue()
                continue
            }
            guard let r = table.regions.find(a) else { continue }
            let i = r.index(of: a)
            r.remove(i, .queued)
            if r.state(i).contains(.resident) && taken.insert(a).inserted { out.append(a) }
        }
        return out
    }
}
