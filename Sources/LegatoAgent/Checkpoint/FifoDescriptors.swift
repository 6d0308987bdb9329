import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// Named pipes (FIFOs) the tree holds open. A FIFO is a pipe anyone may open by its path: it is
/// kept only when no process outside the tree holds it open too (its readers or writers would
/// lose or gain bytes the restore cannot know of). What it holds is copied (tee(2), through a reader
/// the agent opens while the tree is frozen: no byte is consumed) onto its first holder's entry,
/// with its capacity; a restore opens the path again for each open file description the tree had
/// (Agent+RestoreFiles) and refills it.
enum FifoDescriptors {
    /// Marks what each FIFO of `images` holds (PROG first; `pids` as the agent sees them); returns
    /// the refusals, each named.
    static func resolve(_ images: inout [ProcessImage], pids: [pid_t]) throws -> [String] {
        let groups = TreeDescriptors.groupedByInode(images, kind: .fifo)
        guard !groups.isEmpty else { return [] }
        let outside = holdersOutside(Set(groups.map { $0.inode }), tree: Set(pids))
        var refused: [String] = []
        for (inode, members) in groups {
            let first = images[members[0].process].fds[members[0].fd]
            if let holder = outside[inode] {
                refused.append("pid \(images[members[0].process].pid): fd \(first.fd) is the FIFO \(first.path), which \(holder) outside the program holds open too")
                continue
            }
            let (data, size) = try TreeDescriptors.contents(at: "/proc/\(pids[members[0].process])/fd/\(first.fd)", of: "the FIFO \(first.path)")
            if !data.isEmpty { images[members[0].process].fds[members[0].fd].pipeData = data }
            for m in members where size > 0 { images[m.process].fds[m.fd].pipeSize = Int(size) }
        }
        return refused
    }

    /// The FIFOs among `inodes` that a process not in `tree` holds open, each with such a process
    /// ("pid 812 (cat)"). Reads every process's fd table: FIFOs are rare enough for that.
    private static func holdersOutside(_ inodes: Set<UInt64>, tree: Set<pid_t>) -> [UInt64: String] {
        var found: [UInt64: String] = [:]
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = pid_t(entry), !tree.contains(pid), pid != getpid() else { continue }
            let dir = "/proc/\(pid)/fd"
            for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
                guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: dir + "/" + name), target.hasPrefix("/") else { continue }
                var st = stat()
                guard stat(dir + "/" + name, &st) == 0, st.st_mode & S_IFMT == S_IFIFO, inodes.contains(UInt64(st.st_ino)), found[UInt64(st.st_ino)] == nil else { continue }
                let command = ProcFile.text("/proc/\(pid)/comm")?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
                found[UInt64(st.st_ino)] = "pid \(pid) (\(command))"
            }
        }
        return found
    }
}
