/// Remote copies that a fork left to more than one address space.
///
/// A fork does not copy remote pages: parent and child both read the copy under its key until they
/// store the page again (under keys of their own, Region.storeKey). A key listed here has holders
/// beyond its first; a key not listed has one. Only the last holder's release frees the copy on its
/// memory node, so no address space ever reads a copy another has discarded or overwritten.
/// Event-loop thread only.
final class SharedKeys {
    private var extraHolders: [UInt64: UInt32] = [:]

    /// One more address space reads `key` (a fork copied a page whose remote copy is there).
    func share(_ key: UInt64) { extraHolders[key, default: 0] += 1 }

    /// One holder no longer reads `key`; true when it was the last (its copy may be discarded).
    func release(_ key: UInt64) -> Bool {
        guard let n = extraHolders[key] else { return true }
        if n <= 1 { extraHolders[key] = nil } else { extraHolders[key] = n - 1 }
        return false
    }

    func isShared(_ key: UInt64) -> Bool { extraHolders[key] != nil }

    /// Keys read by more than one address space now.
    var count: Int { extraHolders.count }
}
