import Glibc
import LegatoCore
import LegatoSystem

/// Lazy restore: pages in state `restoring` come from the RestoreBacking — on PROG's faults first,
/// and by a background fill, in address order, while the event loop has nothing else to do: into
/// PROG while the local budget has room, then straight onto memory nodes (as write-back batches).
/// When the fill has passed every page, the restore is complete and the backing goes.
extension Agent {
    /// Serves a fault on a `restoring` page, with the restoring pages right after it (read-around).
    func serveRestoring(_ f: Sys.UffdEvent?, _ r: Region, _ i: Int, run: Int) throws {
        guard let b = restore.backing else {
            // No backing (cannot happen): the content is lost; never invent any.
            r.remove(i, .restoring)
            fail("restored page 0x\(String(r.address(at: i), radix: 16)) has no source")
            return
        }
        let want = min(RestoreBacking.runPages, run >= 2 ? max(16, min(prefetchWindow, 1 << min(run, 8))) : 16)
        let locs = restoringRun(r, i, max: want, b)
        let n = locs.count
        guard n > 0 else { r.remove(i, .restoring); return }
        try b.read(locs, into: b.buffer)
        let result = mm.faults.install(f, r, i, count: n, from: b.buffer, writable: true)
        guard result != .again else { return }
        for k in 0..<n where r.state(i + k).contains(.resident) || result == .gone { r.remove(i + k, .restoring) }
        stats.restoredByFault += n
    }

    /// Where the restoring, not yet resident pages r[i], r[i+1], ... are (at most `max`; stops at
    /// the first page that is not such a page).
    private func restoringRun(_ r: Region, _ i: Int, max: Int, _ b: RestoreBacking) -> [RestoreBacking.Location] {
        var locs: [RestoreBacking.Location] = []
        while locs.count < max && i + locs.count < r.pageCount {
            let s = r.state(i + locs.count)
            guard s.contains(.restoring), !s.contains(.resident), let l = b.location(key: r.key(at: i + locs.count)) else { break }
            locs.append(l)
        }
        return locs
    }

    /// Installs the runs that streamed in since the last step, in the order they came, where their
    /// pages are still to restore from them and the local budget has room: the replay does not
    /// arrive in address order, and the address-ordered fill would wait for its next run meanwhile.
    /// Returns whether it installed anything. Runs it passes over are left to the ordered fill.
    private func installArrivals(_ b: RestoreBacking) -> Bool {
        let arrivals = b.takeArrivals()
        var any = false
        for a in arrivals {
            var k = 0
            while k < a.pages {
                let address = a.address + UInt64(k * Page.size)
                guard let r = mm.table.regions.find(address) else { k += 1; continue }
                let i = r.index(of: address)
                // The pages from here that are this run's to restore (a later layer, a fault, an
                // mremap may have taken some).
                let locs = restoringRun(r, i, max: min(RestoreBacking.runPages, a.pages - k), b)
                let n = locs.enumerated().prefix { $0.element.layer == a.layer && $0.element.page == Int64(a.page + k + $0.offset) }.count
                guard n > 0, let source = b.inPlace(Array(locs.prefix(n))) else { k += 1; continue }
                guard !evictor.needsEviction(extra: n) else { return any }  // no room: the ordered fill stores the rest
                let result = mm.faults.install(nil, r, i, count: n, from: source, writable: true)
                if result == .again { return any }  // the address space is changing: the ordered fill has them
                for j in 0..<n { r.remove(i + j, .restoring) }
                stats.restoredByFill += n
                any = true
                k += n
            }
        }
        return any
    }

    /// One step of the background fill (a few hundred pages at most).
    func fillFromRestore() throws {
        guard let b = restore.backing else { return }
        restore.fillStalled = false
        let installedArrivals = installArrivals(b)
        var storeKeys: [UInt64] = []
        var steps = 0
        while steps < 1024, let key = b.currentKey() {
            steps += 1
            guard let (r, i) = mm.table.region(forKey: key), r.state(i).contains(.restoring), b.location(key: key) != nil else {
                b.advance(1)
                continue
            }
            if r.state(i).contains(.resident) {
                r.remove(i, .restoring)
                b.advance(1)
                continue
            }
            if evictor.needsEviction(extra: RestoreBacking.runPages), pool.route(key) != nil {
                // No room in PROG: this page goes to a memory node.
                guard writeBack.inflightBytes + (storeKeys.count + 1) * Page.size <= WriteBackBuffer.maxInflightBytes else { break }
                guard b.available(b.location(key: key)!) else {
                    restore.fillStalled = true
                    break
                }
                storeKeys.append(key)
                b.advance(1)
                continue
            }
            // A run of consecutive restoring pages of this region, read in as few reads as the layers
            // allow and installed in one UFFDIO_COPY.
            let locs = restoringRun(r, i, max: RestoreBacking.runPages, b)
            let n = locs.count
            // Pages still streaming in from the log nodes: the fill waits for them (without holding
            // up the event loop); a fault on them fetches them at once.
            if !b.available(locs[0]) || !b.available(locs[n - 1]) {
                restore.fillStalled = !installedArrivals
                break
            }
            restore.fillStalled = false
            let source: UnsafeRawPointer
            if let p = b.inPlace(locs) { source = p } else {
                try b.read(locs, into: b.buffer)
                source = UnsafeRawPointer(b.buffer)
            }
            let result = mm.faults.install(nil, r, i, count: n, from: source, writable: true)
            if result == .again { break }  // the address space is changing: after the events
            for k in 0..<n { r.remove(i + k, .restoring) }
            stats.restoredByFill += n
            b.advance(n)
        }
        if !storeKeys.isEmpty { try storeRestored(storeKeys, from: b) }
        if b.currentKey() == nil {
            stats.restoreCompleteNanos = monotonicNanos() - createdAt
            log.info("restore complete: \(stats.restoredByFault) pages brought back by faults, \(stats.restoredByFill) by the fill, after \(String(format: "%.0f", Double(stats.restoreCompleteNanos) / 1e6)) ms")
            restore.backing = nil
            if stats.checkpoints > 0 { dropEarlierSpaces() }
        }
    }

    /// Sends restored pages that do not fit the local budget to memory nodes (write-back batches:
    /// their faults are served from the batch until the node has them).
    private func storeRestored(_ keys: [UInt64], from b: RestoreBacking) throws {
        var byNode: [Int: [UInt64]] = [:]
        for key in keys {
            guard let node = pool.route(key) else { continue }  // checked by the caller; a race leaves it to its fault
            byNode[node, default: []].append(key)
        }
        for (node, nodeKeys) in byNode {
            var start = 0
            while start < nodeKeys.count {
                let chunk = Array(nodeKeys[start..<min(nodeKeys.count, start + 1024)])
                let wb = writeBack.makeBatch(node: node, keys: chunk, table: mm.table)
                for (k, key) in chunk.enumerated() {
                    guard let (r, i) = mm.table.region(forKey: key), let loc = b.location(key: key) else { continue }
                    try b.read(loc, into: wb.page(k))
                    var s = r.state(i)
                    s.remove(.restoring)
                    s.insert([.remote, .inFlight])
                    r.setState(i, s)
                }
                writeBack.hold(wb)
                writeBack.send(wb)
                stats.restoredByFill += chunk.count
                start += chunk.count
            }
        }
    }
}
