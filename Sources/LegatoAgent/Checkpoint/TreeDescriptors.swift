import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// The descriptors of a tree's processes seen together: open file descriptions several processes
/// share (what a fork shared, found with kcmp), and pipes, whose ends may lie in different
/// processes. A pipe with both ends in the tree is restored with what it held, as is one whose other
/// end no process holds any more; one whose other end is outside is refused above fd 2 (on 0-2 it
/// becomes `legato restore`'s own).
enum TreeDescriptors {
    /// Marks `sharedWith` and the pipes of `images` (PROG first, in restore order; `pids` as the
    /// agent sees them); throws the refusals, each named.
    static func resolve(_ images: inout [ProcessImage], pids: [pid_t], kept: KeptDescriptors) throws {
        let ptys = try PtyDescriptors.resolve(&images, pids: pids)  // (before markShared: slaves become ptySlaves)
        try markShared(&images, pids: pids)
        let refused = ptys + (try resolvePipes(&images, pids: pids, kept: kept)) + (try FifoDescriptors.resolve(&images, pids: pids))
        if !refused.isEmpty {
            throw CheckpointRefused(description: refused.sorted().joined(separator: "; ") + "; cannot checkpoint \(refused.count == 1 ? "it" : "them")")
        }
    }

    /// Each descriptor of a later process that is an open file description of an earlier one points
    /// at its first holder (so the restore takes it from there and the offset, flags and locks stay
    /// one). Only descriptions with a path alike are compared.
    private static func markShared(_ images: inout [ProcessImage], pids: [pid_t]) throws {
        guard images.count > 1 else { return }
        for k in images.indices.dropFirst() {
            for fi in images[k].fds.indices where images[k].fds[fi].dupOf == nil {
                let f = images[k].fds[fi]
                search: for j in 0..<k {
                    for g in images[j].fds where g.dupOf == nil && g.sharedWith == nil && g.kind == f.kind && g.path == f.path {
                        if try Sys.sameOpenFile(pids[j], g.fd, pids[k], f.fd) {
                            images[k].fds[fi].sharedWith = [images[j].pid, g.fd]
                            break search
                        }
                    }
                }
            }
        }
    }

    /// Pipes grouped by inode over the whole tree: with a reader and a writer inside, what the pipe
    /// holds is copied (tee(2), not consumed) onto its first holder's entry and its size kept.
    private static func resolvePipes(_ images: inout [ProcessImage], pids: [pid_t], kept: KeptDescriptors) throws -> [String] {
        var refused: [String] = []
        for (inode, members) in groupedByInode(images, kind: .pipe) {
            func entry(_ m: (process: Int, fd: Int)) -> ProcessImage.FileDescriptor { images[m.process].fds[m.fd] }
            let readers = members.filter { entry($0).flags & 3 == 0 }, writers = members.filter { entry($0).flags & 3 == 1 }
            let otherEndClosed = try (readers.isEmpty || writers.isEmpty) && otherEndIsClosed(pids[members[0].process], entry(members[0]))
            if (readers.isEmpty || writers.isEmpty) && !otherEndClosed {
                for m in members where entry(m).fd > 2 || (m.process > 0 && entry(m).sharedWith == nil) {
                    let what = "pipe:[\(inode)], whose other end is outside the program"
                    refused.append(m.process == 0 ? kept.describe(entry(m).fd, what) : "pid \(images[m.process].pid): fd \(entry(m).fd) is \(what)")
                }
                continue
            }
            for m in members where otherEndClosed { images[m.process].fds[m.fd].pipeOtherEndClosed = true }
            guard let r = readers.first else {  // only writers, and no reader anywhere: nothing to read
                for m in members where images.count > 1 { images[m.process].fds[m.fd].pipeInTree = true }
                continue
            }
            let (data, size) = try contents(at: "/proc/\(pids[r.process])/fd/\(entry(r).fd)", of: "pipe:[\(inode)]")
            images[members[0].process].fds[members[0].fd].pipeData = data
            for m in members {
                if size > 0 { images[m.process].fds[m.fd].pipeSize = Int(size) }
                if images.count > 1 { images[m.process].fds[m.fd].pipeInTree = true }
            }
        }
        return refused
    }

    /// The descriptors of `kind` (pipes or FIFOs) over the tree, by pipe inode in the order first
    /// seen, each as [process index, fd index].
    static func groupedByInode(_ images: [ProcessImage], kind: ProcessImage.FileDescriptor.Kind) -> [(inode: UInt64, members: [(process: Int, fd: Int)])] {
        var groups: [UInt64: [(process: Int, fd: Int)]] = [:]
        var order: [UInt64] = []
        for (k, image) in images.enumerated() {
            for (fi, f) in image.fds.enumerated() where f.kind == kind {
                let inode = f.pipeInode ?? 0
                if groups[inode] == nil { order.append(inode) }
                groups[inode, default: []].append((k, fi))
            }
        }
        return order.map { ($0, groups[$0]!) }
    }

    /// What the pipe or FIFO `path` (a /proc link to one of its ends) holds, copied with tee(2)
    /// through a reader opened there (nothing consumed), and its capacity (F_GETPIPE_SZ).
    static func contents(at path: String, of what: String) throws -> (data: Data, capacity: Int32) {
        let reader = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        if reader < 0 { throw SystemError.fromErrno("open \(what) (\(path)) to copy what it holds") }
        defer { close(reader) }
        return (Data(try Sys.peekPipe(reader, what: "\(what) (\(path))")), fcntl(reader, 1032))
    }

    /// Whether the pipe end `f` of process `pid` is the only kind left: a read end no process can
    /// write to any more (poll says POLLHUP), or a write end no process reads (POLLERR) — make's
    /// stdin for its jobs is such a pipe. Asked on the very description (pidfd_getfd): a reopening
    /// through /proc would be a new reader or writer.
    private static func otherEndIsClosed(_ pid: pid_t, _ f: ProcessImage.FileDescriptor) throws -> Bool {
        let fd = try Sys.copyDescriptor(f.fd, of: pid)
        defer { close(fd) }
        let reads = f.flags & 3 == 0
        var p = pollfd(fd: fd, events: Int16(reads ? POLLIN : POLLOUT), revents: 0)
        guard poll(&p, 1, 0) >= 0 else { throw SystemError.fromErrno("poll pipe \(f.path) (fd \(f.fd) of pid \(pid))") }
        return reads ? p.revents & Int16(POLLHUP) != 0 : p.revents & Int16(POLLERR) != 0
    }
}
