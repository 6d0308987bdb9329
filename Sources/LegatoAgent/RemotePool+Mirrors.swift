import LegatoCore

/// `--memory-replication mirror` (and `adaptive` while memory is plentiful): every batch is stored
/// on two different nodes before it counts as stored, so the death of either loses nothing and
/// needs no replay — the pages whose newest copy was on the dead node are read from their mirror
/// from then on (promoted), and a ReMirror gives them a second copy again. A slab's second copies go to one node while it can take them.
extension RemotePool {
    /// The node for the second copy of a batch whose first copy goes to `primary` and whose first
    /// key is `key`: the slab's mirror node if it is alive, has room and is not `primary`; else
    /// another node (which becomes the slab's). Nil when no other node can take it.
    func mirror(for key: UInt64, primary: Int) -> Int? {
        if let now = mirrorNow, !now() { return nil }
        let slab = key >> Self.slabShift
        if let m = mirrorSlab[slab], m != primary, !nodes[m].dead, !nodes[m].full { return m }
        guard let m = place(except: primary) else { return nil }
        mirrorSlab[slab] = m
        return m
    }

    /// `keys` were stored on `node` and `mirror`: their second copies are there now. Answers the
    /// second copies this left stale on other live nodes (the caller discards them: they would
    /// take room, and count as used, until written over).
    func recordMirrors(_ keys: [UInt64], on node: Int, _ mirror: Int?) -> [(node: Int, key: UInt64)] {
        var stale: [(node: Int, key: UInt64)] = []
        for k in keys {
            singleCopy[k] = nil
            if let old = mirrorOf[k] {
                nodes[old].pagesHeld -= 1
                if old != node && old != mirror && !nodes[old].dead { stale.append((old, k)) }
            }
            mirrorOf[k] = mirror
        }
        if let mirror { nodes[mirror].pagesHeld += keys.count }
        return stale
    }

    /// Adaptive: whether `key`'s newest remote copy was logged by its node (stored with no mirror,
    /// and not left with one copy by a mirror's death) — a copy that can be rebuilt from the log.
    func isLogged(_ key: UInt64) -> Bool { mirrorOf[key] == nil && singleCopy[key] == nil }

    func forgetMirror(_ key: UInt64) {
        singleCopy[key] = nil
        if let m = mirrorOf.removeValue(forKey: key) { nodes[m].pagesHeld -= 1 }
    }

    /// What the death of a node did to the mirrored pages.
    struct Promotion {
        /// Keys whose newest copy is now only on their mirror, which became their location.
        var promoted: [UInt64] = []
        /// Keys that lost their mirror (their location holds the one copy left).
        var unmirrored: [UInt64] = []
        /// Keys whose only copy was on the dead node (stored when no second node could take them).
        var lost: [UInt64] = []
    }

    /// Node `dead` died: every key of `keys` located there is read from its mirror from now on, a
    /// slab it owned goes to that slab's mirror node, and every key left with one copy is noted in
    /// `singleCopy` under `generation`.
    func promoteMirrors(dead: Int, keys: [UInt64], generation: UInt64) -> Promotion {
        var p = Promotion()
        for slab in slabs(ownedBy: dead) {
            if let m = mirrorSlab[slab], !nodes[m].dead { reassignSlab(slab, to: m) }
        }
        for k in keys {
            guard let m = mirrorOf[k], !nodes[m].dead else {
                p.lost.append(k)
                continue
            }
            mirrorOf[k] = nil
            relocate(k, to: m)
            singleCopy[k] = generation
            p.promoted.append(k)
        }
        for (k, m) in mirrorOf where m == dead {
            mirrorOf[k] = nil
            singleCopy[k] = generation
            p.unmirrored.append(k)
        }
        for (slab, m) in mirrorSlab where m == dead { mirrorSlab[slab] = nil }
        nodes[dead].pagesHeld = 0
        return p
    }

    /// A ReMirror copied `keys` to `node`: each still left with one copy by promotion `generation`
    /// (not stored or discarded since) has its mirror there — or, `node` being its location (adaptive,
    /// memory short), is logged there.
    func applyReMirror(keys: [UInt64], on node: Int, generation: UInt64) -> Int {
        var n = 0
        for k in keys where singleCopy[k] == generation && !nodes[node].dead {
            singleCopy[k] = nil
            if location(k) != node {
                mirrorOf[k] = node
                nodes[node].pagesHeld += 1
            }
            n += 1
        }
        return n
    }
}
