import Glibc
import LegatoSystem

/// What /proc/PID/smaps says of each mapping beyond maps' permissions (its `VmFlags:` line), and what
/// a checkpoint does with each flag: carried over by the restore, implied by what the restore does
/// anyway, or refused (by name) because nothing brings it back exactly.
enum MappingFlags {
    /// Advice (and MAP_NORESERVE) the restore applies again: flag -> madvise advice (0: at mmap).
    static let restored: [String: UInt64] = [
        "rr": 1,    // MADV_RANDOM
        "sr": 2,    // MADV_SEQUENTIAL
        "dc": 10,   // MADV_DONTFORK
        "mg": 12,   // MADV_MERGEABLE
        "hg": 14,   // MADV_HUGEPAGE
        "nh": 15,   // MADV_NOHUGEPAGE
        "dd": 16,   // MADV_DONTDUMP
        "wf": 18,   // MADV_WIPEONFORK
        "nr": 0,    // MAP_NORESERVE, given to mmap
    ]

    /// Flags that follow from the mapping's permissions and kind, from the agent's own userfaultfd
    /// registration, or from the kernel's bookkeeping: the restore makes them so by mapping it.
    static let implied: Set<String> = ["rd", "wr", "ex", "sh", "mr", "mw", "me", "ms", "gd", "ac", "sd", "um", "uw", "ui"]

    /// Flags with no exact restore yet, named in the refusal.
    static let refusedNames: [String: String] = [
        "lo": "locked memory (mlock)",
        "lf": "memory locked on fault (mlock2 MLOCK_ONFAULT)",
        "sl": "sealed memory (mseal)",
        "ss": "a shadow stack",
        "ht": "hugetlbfs memory",
        "pf": "a PFN mapping of a device",
        "io": "a device I/O mapping",
        "dp": "droppable memory (MAP_DROPPABLE)",
        "sf": "a synchronous DAX mapping (MAP_SYNC)",
        "mt": "MTE-tagged memory",
        "de": "a mapping the kernel may not expand (VM_DONTEXPAND)",
    ]

    /// The VmFlags of every mapping of `pid`, by start address.
    static func read(pid: pid_t) -> [UInt64: [String]] {
        guard let text = ProcFile.text("/proc/\(pid)/smaps") else { return [:] }
        var out: [UInt64: [String]] = [:]
        var current: UInt64?
        for line in text.split(separator: "\n") {
            if line.hasPrefix("VmFlags:") {
                if let start = current { out[start] = line.dropFirst(8).split(separator: " ").map(String.init) }
                continue
            }
            // A mapping's first line: "start-end perms offset dev inode path".
            if let dash = line.firstIndex(of: "-"), let start = UInt64(line[..<dash], radix: 16),
               line[line.index(after: dash)...].first?.isHexDigit == true {
                current = start
            }
        }
        return out
    }

    /// Why `flags` cannot be restored exactly (nil: they can).
    static func refusal(_ flags: [String]) -> String? {
        for f in flags where !implied.contains(f) && restored[f] == nil {
            return refusedNames[f] ?? "a mapping flag this build does not restore (\(f) in smaps' VmFlags)"
        }
        return nil
    }
}
