import Foundation
import LegatoCore
import LegatoSystem

/// One line of /proc/PID/maps.
struct MapsEntry {
    let start: UInt64
    let end: UInt64
    let perms: String     // "rw-p"
    let offset: UInt64
    let inode: UInt64
    let path: String      // "", "[heap]", "[stack]", "/usr/lib/..."

    var isPrivate: Bool { perms.hasSuffix("p") }
    /// Private anonymous memory the agent manages: heap, stacks, anonymous mmaps.
    var isManageableAnonymous: Bool {
        isPrivate && inode == 0 && (path.isEmpty || path == "[heap]" || path == "[stack]" || path.hasPrefix("[anon:"))
    }
}

enum ProcMaps {
    static func read(pid: pid_t) throws -> [MapsEntry] {
        guard let text = ProcFile.text("/proc/\(pid)/maps") else {
            throw AddressSpaceError.unreadableMaps(pid: pid)
        }
        return parse(text)
    }

    static func parse(_ text: String) -> [MapsEntry] {
        var out: [MapsEntry] = []
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            guard f.count >= 5 else { continue }
            let range = f[0].split(separator: "-")
            guard range.count == 2, let s = UInt64(range[0], radix: 16), let e = UInt64(range[1], radix: 16) else { continue }
            let path = f.count > 5 ? String(f[5]).trimmingCharacters(in: .whitespaces) : ""
            out.append(MapsEntry(start: s, end: e, perms: String(f[1]), offset: UInt64(f[2], radix: 16) ?? 0,
                                 inode: UInt64(f[4]) ?? 0, path: path))
        }
        return out
    }
}
