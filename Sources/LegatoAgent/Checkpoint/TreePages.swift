/// The pages of every process of a tree in one checkpoint: a run's address carries, in bits 48-63
/// (above any x86-64 user address), the pid of the process it belongs to in PROG's namespace; PROG's
/// own runs carry 0, so a checkpoint of one process reads as before. Docs/on-disk-format.md.
enum TreePages {
    static let shift: UInt64 = 48
    static let addressMask: UInt64 = (1 << 48) - 1
    /// Pids a tag can hold (a pid namespace of its own starts counting at 1).
    static let largestPID: Int32 = 0xFFFD
    /// The tag of shared objects' pages (SharedObjects): object `id`'s page at `offset` is
    /// objectAddress(id, offset); 4096 objects of up to 64 GiB each.
    static let objectTag: Int32 = 0xFFFE
    static let objectShift: UInt64 = 36
    static let largestObjectID = (1 << (48 - 36)) - 1
    static let largestObjectSize: UInt64 = 1 << 36

    @inline(__always) static func objectAddress(_ id: Int, _ offset: UInt64) -> UInt64 {
        tagged(UInt64(id) << objectShift | offset, pid: objectTag)
    }

    /// `address` of the process with namespace pid `pid` (0: PROG).
    @inline(__always) static func tagged(_ address: UInt64, pid: Int32) -> UInt64 {
        address | UInt64(UInt32(pid)) << shift
    }

    /// The pid tag of a run's address (0 for PROG's).
    @inline(__always) static func pid(of address: UInt64) -> Int32 { Int32(address >> shift) }

    /// The layers as the member with namespace pid `pid` reads them: its runs at their own
    /// addresses, every other run (PROG's included, 0xFFFF) tagged out of the way. Positions in each layer
    /// stay as they are (a run's pages are found by its place in pageRuns order).
    static func view(_ layers: [RestoreSource.Layer], member pid: Int32, since: UInt64) -> [RestoreSource.Layer] {
        let away = UInt64(0xFFFF) << shift
        func retag(_ a: UInt64) -> UInt64 {
            let owner = TreePages.pid(of: a)
            if owner == pid { return a & addressMask }
            return owner == 0 ? a | away : a
        }
        return layers.filter { $0.epoch >= since }.map { l in
            RestoreSource.Layer(epoch: l.epoch, pageRuns: l.pageRuns.map { (retag($0.0), $0.1) },
                                zeroRuns: l.zeroRuns.map { (retag($0.0), $0.1) }, pages: l.pages)
        }
    }
}
