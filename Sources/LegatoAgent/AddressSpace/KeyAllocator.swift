/// Hands out the keys pages are stored under on memory nodes, for every address space of the run
/// (they share the run's memory-node space, so a key is never given twice). Event-loop thread only.
final class KeyAllocator {
    private var next: UInt64 = 1 << 20

    /// `pages` fresh consecutive keys (a gap of one follows each range).
    func allocate(_ pages: Int) -> UInt64 {
        let k = next
        next += UInt64(pages) + 1
        return k
    }
}
