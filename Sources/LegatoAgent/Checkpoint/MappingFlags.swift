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
        "gu": 0,    // guard regions: their ranges are kept with the mapping and installed again
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

    /// smaps as read at one moment: each mapping's VmFlags by start address, and the mappings
    /// themselves as /proc/PID/maps lists them.
    ///
    /// Reading smaps walks every page table entry (12 ms for 1 GiB of 4 KiB pages), so a checkpoint
    /// reads it before its pause and, in the pause, only checks that it still holds: /proc/PID/maps
    /// unchanged (boundaries, permissions, names) and no call that changes flags in between (every
    /// such call is trapped by the seccomp filter: madvise, mmap, mremap, the mlocks, mseal).
    struct Reading {
        let flags: [UInt64: [String]]
        let mapsLines: [Substring]
        /// AddressSpace.tracedMemoryCalls when it was read.
        let tracedCalls: UInt64

        init(pid: pid_t, tracedCalls: UInt64) {
            self.tracedCalls = tracedCalls
            var flags: [UInt64: [String]] = [:]
            var lines: [Substring] = []
            var current: UInt64?
            for line in (ProcFile.text("/proc/\(pid)/smaps") ?? "").split(separator: "\n") {
                if line.hasPrefix("VmFlags:") {
                    if let start = current { flags[start] = line.dropFirst(8).split(separator: " ").map(String.init) }
                    continue
                }
                // A mapping's first line, as in maps: "start-end perms offset dev inode path".
                if let dash = line.firstIndex(of: "-"), let start = UInt64(line[..<dash], radix: 16),
                   line[line.index(after: dash)...].first?.isHexDigit == true {
                    current = start
                    lines.append(line)
                }
            }
            self.flags = flags
            mapsLines = lines
        }

        /// Whether this reading still describes the process whose maps are `mapsText` now.
        func holds(mapsText: String, tracedCalls now: UInt64) -> Bool {
            now == tracedCalls && mapsText.split(separator: "\n").elementsEqual(mapsLines)
        }
    }

    /// Why `flags` cannot be restored exactly (nil: they can).
    static func refusal(_ flags: [String]) -> String? {
        for f in flags where !implied.contains(f) && restored[f] == nil {
            return refusedNames[f] ?? "a mapping flag this build does not restore (\(f) in smaps' VmFlags)"
        }
        return nil
    }
}
