import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// Restoring the fd table by injection: files reopen at their offsets; pipes between PROG's own fds
/// are recreated with what they held; terminals and pipes on 0-2 that lead outside stay what
/// `legato restore` has.
extension Agent {
    /// With `tree` (a process tree's restore): descriptions an earlier process holds are taken from
    /// it (pidfd_getfd), a pipe of the tree is made by its first holder, which keeps the ends it does
    /// not hold for the others (TreeRestore.parked); a member (`member`) starts with no descriptor.
    func restoreFileDescriptors(_ image: ProcessImage, _ calls: RestoreCalls, tree: TreeRestore? = nil, member: Bool = false) throws {
        let pipes = Dictionary(grouping: image.fds.filter { $0.kind == .pipe && $0.sharedWith == nil }, by: { $0.pipeInode ?? 0 })
        var pipesDone = Set<UInt64>()
        // Temporaries live above every fd the checkpoint has, so no placement can close one.
        let high = tree?.high ?? UInt64((image.fds.map { $0.fd }.max() ?? 2) + 1)
        for f in image.fds {
            if f.kind == .pidfd { continue }  // (made once the whole tree is back: Agent+RestorePidfds)
            if try restoreAsShared(f, calls, tree) { continue }
            switch f.kind {
            case .tty:
                // PROG keeps `legato restore`'s terminal; a member's own opening of one is made again.
                if member {
                    let fd = try calls.call("open \(f.path)", .open, try calls.args.string(f.path), UInt64(f.flags) & (0o3 | 0o4000 | 0o2000 | 0o400), 0)
                    calls.args.reset()
                    try place(fd, at: f, calls)
                }
                continue
            case .pipe where f.pipeInTree == true && tree != nil:
                let inode = f.pipeInode ?? 0
                if pipesDone.contains(inode) { continue }  // placed with the pipe this process made
                if let made = tree!.pipes[inode] {
                    try takeDescriptor(from: made.holder, fd: f.flags & 3 == 1 ? made.write : made.read, to: f, calls, tree!)
                } else if pipesDone.insert(inode).inserted {
                    try restorePipe(pipes[inode] ?? [f], above: high, calls) { read, write in
                        tree!.pipes[inode] = (image.pid, read, write)
                        tree!.parked[image.pid, default: []] += [read, write]
                    }
                }
            case .pipe:
                let group = pipes[f.pipeInode ?? 0] ?? [f]
                let bothEndsInside = group.contains { $0.flags & 3 == 0 } && group.contains { $0.flags & 3 == 1 }
                if !bothEndsInside && f.pipeOtherEndClosed != true {
                    guard f.fd <= 2 else { throw RestoreError.descriptorLeadsOutside(name: image.name, epoch: image.epoch, fd: f.fd, path: f.path) }
                    continue
                }
                if pipesDone.insert(f.pipeInode ?? 0).inserted { try restorePipe(group, above: high, calls) }
            case .regular, .directory, .path, .devnull, .devzero, .devurandom:
                let flags = UInt64(f.flags) & ~UInt64(0o100 | 0o200 | 0o1000)  // no O_CREAT, O_EXCL, O_TRUNC
                let fd = try calls.call("open \(f.path)", .open, try calls.args.string(f.path), flags, 0o644)
                calls.args.reset()
                try place(fd, at: f, calls)
                if f.kind == .regular || f.kind == .directory {  // (an O_APPEND one's too: writes go to the end, but lseek(SEEK_CUR) reads it)
                    _ = try calls.call("lseek fd \(f.fd)", .lseek, UInt64(f.fd), UInt64(bitPattern: f.offset), 0)
                }
            case .fifo:
                try restoreFifo(f, calls)
            case .memfd, .unlinked:
                try reopenObject(f, image, calls, tree, member: member)
            case .pidfd:
                continue
            case .ptyMaster:
                try restorePtyMaster(f, image, calls, tree)
            case .ptySlave:
                try restorePtySlave(f, image, calls, tree)
            case .eventfd, .timerfd, .signalfd, .epoll, .inotify:
                try restoreEventDescriptor(f, image, calls)
            case .unixSocket:
                guard let tree else { throw RestoreError.descriptorUnrestorable(name: image.name, epoch: image.epoch, fd: f.fd, path: f.path) }
                try restoreUnixSocket(f, image, calls, tree)
            case .inetSocket:
                try restoreInetSocket(f, image, calls)
            case .other:
                throw RestoreError.descriptorUnrestorable(name: image.name, epoch: image.epoch, fd: f.fd, path: f.path)
            }
        }
        if !epollWaitsForPidfds(image) { try fillEpollSets(image, calls) }
        try restoreLocks(image, calls)
    }

    /// Each lock taken again through the descriptor that held it, without waiting: one someone
    /// else holds now fails the restore (nothing of the checkpoint is lost; it can be tried again).
    private func restoreLocks(_ image: ProcessImage, _ calls: RestoreCalls) throws {
        for f in image.fds where f.dupOf == nil {
            for l in f.locks ?? [] {
                let what = "\(l.kind.rawValue) \(l.write ? "write" : "read") lock on fd \(f.fd) (\(f.path))"
                let r: Int64
                switch l.kind {
                case .flock:
                    r = try calls.callResult(.flock, UInt64(f.fd), (l.write ? 2 : 1) | 4)  // LOCK_EX or LOCK_SH, LOCK_NB
                case .lease:
                    if let sig = f.signal, sig != 0 { _ = try calls.call("fcntl(F_SETSIG, \(sig)) fd \(f.fd)", .fcntl, UInt64(f.fd), 10, UInt64(sig)) }
                    r = try calls.callResult(.fcntl, UInt64(f.fd), 1024, l.write ? 1 : 0)  // F_SETLEASE F_WRLCK or F_RDLCK
                case .posix, .openFileDescription:
                    var rec = [UInt8](repeating: 0, count: 32)  // struct flock: type, whence (SEEK_SET), start, len, pid
                    let length = l.end.map { $0 - l.start + 1 } ?? 0  // 0: to the end
                    rec.withUnsafeMutableBytes { p in
                        p.storeBytes(of: Int16(l.write ? 1 : 0).littleEndian, toByteOffset: 0, as: Int16.self)  // F_WRLCK or F_RDLCK
                        p.storeBytes(of: l.start.littleEndian, toByteOffset: 8, as: UInt64.self)
                        p.storeBytes(of: length.littleEndian, toByteOffset: 16, as: UInt64.self)
                    }
                    r = try calls.callResult(.fcntl, UInt64(f.fd), l.kind == .posix ? 6 : 37, try calls.args.bytes(rec))  // F_SETLK, F_OFD_SETLK
                    calls.args.reset()
                }
                if r < 0 { throw RestoreError.lockTaken(name: image.name, lock: what, errno: Int32(-r)) }
            }
        }
    }

    /// A FIFO's open file description, opened again by its path. The first of the restore's opens
    /// of a FIFO is preceded by the agent's own, for reading and writing (restore.fifos), which
    /// refills it and lets each open go through at once (an open for reading or writing alone
    /// waits for the other side; with O_NONBLOCK a writer's fails without a reader); the agent's
    /// closes when the whole tree is back.
    private func restoreFifo(_ f: ProcessImage.FileDescriptor, _ calls: RestoreCalls) throws {
        let inode = f.pipeInode ?? 0
        if restore.fifos[inode] == nil {
            let path = "/proc/\(calls.tid)/root\(f.path)"  // (the path as the restored process sees it)
            let own = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC)
            guard own >= 0 else { throw SystemError.fromErrno("open the FIFO \(f.path) again (for fd \(f.fd))") }
            restore.fifos[inode] = own
            if let size = f.pipeSize, size != 65536, fcntl(own, 1031, Int32(size)) < 0 {  // F_SETPIPE_SZ
                throw SystemError.fromErrno("fcntl(F_SETPIPE_SZ, \(size)) on the FIFO \(f.path)")
            }
        }
        if let data = f.pipeData, !data.isEmpty, let own = restore.fifos[inode] {
            let n = data.withUnsafeBytes { write(own, $0.baseAddress, $0.count) }
            if n != data.count { throw SystemError("refill the FIFO \(f.path) with \(data.count) bytes", code: n < 0 ? errno : EAGAIN) }
        }
        let fd = try calls.call("open the FIFO \(f.path)", .open, try calls.args.string(f.path), UInt64(f.flags) | UInt64(O_NONBLOCK), 0)
        calls.args.reset()
        try place(fd, at: f, calls)
        if f.flags & 0o4000 == 0 { _ = try calls.call("fcntl(F_SETFL) fd \(f.fd)", .fcntl, UInt64(f.fd), 4, UInt64(f.flags & ~0o4000)) }
    }

    /// The agent's own descriptors of the FIFOs, once every process of the tree has its own.
    func closeFifos() {
        for fd in restore.fifos.values { close(fd) }
        restore.fifos = [:]
    }

    /// A memfd or ghost descriptor: its object (made again in PROG, Agent+RestoreObjects) opened
    /// anew through /proc/self/fd with the flags it had, at its offset (a description of its own,
    /// as it was: not a dup of the object's).
    private func reopenObject(_ f: ProcessImage.FileDescriptor, _ image: ProcessImage, _ calls: RestoreCalls, _ tree: TreeRestore?, member: Bool) throws {
        guard let tree, let id = f.object, let made = tree.objects[id] else {
            throw RestoreError.descriptorUnrestorable(name: image.name, epoch: image.epoch, fd: f.fd, path: f.path)
        }
        let held = member ? try takeFromProcess(tree.prog, fd: made, calls, for: "fd \(f.fd) (\(f.path))") : Int64(made)
        let path = "/proc/self/fd/\(held)"
        let flags = UInt64(f.flags) & ~UInt64(0o100 | 0o200 | 0o1000)  // no O_CREAT, O_EXCL, O_TRUNC
        let fd = try calls.call("open \(f.path) again (through \(path))", .open, try calls.args.string(path), flags, 0)
        calls.args.reset()
        if member { _ = try calls.call("close", .close, UInt64(held)) }
        try place(fd, at: f, calls)
        _ = try calls.call("lseek fd \(f.fd)", .lseek, UInt64(f.fd), UInt64(bitPattern: f.offset), 0)
    }

    /// `f` restored as the open file description it shares, if it shares one: taken from the
    /// earlier process of the tree that holds it, or a dup of the lower fd it is (restored before
    /// it). False if it is a description of its own.
    func restoreAsShared(_ f: ProcessImage.FileDescriptor, _ calls: RestoreCalls, _ tree: TreeRestore?) throws -> Bool {
        if let tree, let from = f.sharedWith, from.count == 2 {
            try takeDescriptor(from: from[0], fd: from[1], to: f, calls, tree)
            return true
        }
        guard let first = f.dupOf else { return false }
        _ = try calls.call("dup3 fd \(first) to fd \(f.fd)", .dup3, UInt64(first), UInt64(f.fd), f.flags & 0o2000000 != 0 ? 0o2000000 : 0)
        return true
    }

    /// Moves a fresh fd to the number `f` had, with its close-on-exec flag.
    func place(_ fd: Int64, at f: ProcessImage.FileDescriptor, _ calls: RestoreCalls) throws {
        let cloexec = f.flags & 0o2000000 != 0
        guard fd != Int64(f.fd) else { return }
        _ = try calls.call("dup3 to fd \(f.fd)", .dup3, UInt64(fd), UInt64(f.fd), cloexec ? 0o2000000 : 0)
        _ = try calls.call("close", .close, UInt64(fd))
    }

    /// Takes fd `fd` of the restored process `ns` (its pid in PROG's namespace) into this one at
    /// `f`'s number: pidfd_open + pidfd_getfd, injected here. The description is the same one.
    func takeDescriptor(from ns: Int32, fd: Int32, to f: ProcessImage.FileDescriptor, _ calls: RestoreCalls, _ tree: TreeRestore) throws {
        try placeCloseOnExec(try takeFromProcess(ns, fd: fd, calls, for: "fd \(f.fd)"), at: f, calls)  // (pidfd_getfd sets close-on-exec)
    }

    /// `place` for a fresh fd made close-on-exec: one that came at `f`'s very number loses the flag
    /// if `f` did not have it.
    func placeCloseOnExec(_ fd: Int64, at f: ProcessImage.FileDescriptor, _ calls: RestoreCalls) throws {
        if fd == Int64(f.fd) {
            if f.flags & 0o2000000 == 0 { _ = try calls.call("fcntl(F_SETFD, 0) fd \(f.fd)", .fcntl, UInt64(f.fd), 2, 0) }
        } else {
            try place(fd, at: f, calls)
        }
    }

    /// A copy, in the process `calls` injects into, of fd `fd` of the restored process `ns` (its pid in
    /// PROG's namespace): pidfd_open + pidfd_getfd, injected there; the same open file description,
    /// close-on-exec, at the lowest free number.
    func takeFromProcess(_ ns: Int32, fd: Int32, _ calls: RestoreCalls, for what: String) throws -> Int64 {
        let pidfd = try calls.call("pidfd_open(\(ns)) to take its fd \(fd) as \(what)", .pidfdOpen, UInt64(ns), 0)
        let got = try calls.call("pidfd_getfd(fd \(fd) of pid \(ns)) as \(what)", .pidfdGetfd, UInt64(pidfd), UInt64(fd), 0)
        _ = try calls.call("close", .close, UInt64(pidfd))
        return got
    }

    /// One pipe: pipe2, both ends moved above `high`, dup'd to every fd of the group, refilled.
    /// With `keep`, the moved ends stay open (for other processes of a tree) and are handed to it.
    func restorePipe(_ group: [ProcessImage.FileDescriptor], above high: UInt64, _ calls: RestoreCalls,
                     keep: ((_ read: Int32, _ write: Int32) -> Void)? = nil) throws {
        let name = group[0].path
        let slot = try calls.args.bytes([UInt8](repeating: 0, count: 8))
        _ = try calls.call("pipe2 for \(name)", .pipe2, slot, 0o2000000)  // O_CLOEXEC
        var ends = [Int32](repeating: 0, count: 2)
        try ends.withUnsafeMutableBytes { try Sys.readProcessMemory(pid: calls.tid, address: slot, length: 8, into: $0.baseAddress!) }
        calls.args.reset()
        var moved: [UInt64] = []
        for e in ends {
            moved.append(UInt64(try calls.call("fcntl(F_DUPFD_CLOEXEC) for \(name)", .fcntl, UInt64(e), 1030, high)))
            _ = try calls.call("close", .close, UInt64(e))
        }
        let (readEnd, writeEnd) = (moved[0], moved[1])
        for f in group {
            let end = f.flags & 3 == 1 ? writeEnd : readEnd
            _ = try calls.call("dup3 \(name) to fd \(f.fd)", .dup3, end, UInt64(f.fd), f.flags & 0o2000000 != 0 ? 0o2000000 : 0)
            _ = try calls.call("fcntl(F_SETFL) fd \(f.fd)", .fcntl, UInt64(f.fd), 4, UInt64(f.flags & 0o4000))  // O_NONBLOCK
        }
        let data = group.compactMap({ $0.pipeData }).first ?? Data()
        // The pipe's capacity as it was (it holds what it held, at least).
        let size = max(group.compactMap { $0.pipeSize }.first ?? 65536, data.count)
        if size != 65536 { _ = try calls.call("fcntl(F_SETPIPE_SZ, \(size)) \(name)", .fcntl, writeEnd, 1031, UInt64(size)) }
        if !data.isEmpty {
            let w = open("/proc/\(calls.tid)/fd/\(writeEnd)", O_WRONLY | O_NONBLOCK | O_CLOEXEC)
            if w < 0 { throw SystemError.fromErrno("open the restored \(name) in pid \(calls.tid)") }
            defer { close(w) }
            let n = data.withUnsafeBytes { write(w, $0.baseAddress, $0.count) }
            if n != data.count { throw SystemError("refill \(name) with \(data.count) bytes", code: n < 0 ? errno : EAGAIN) }
        }
        if let keep {
            keep(Int32(readEnd), Int32(writeEnd))
        } else {
            for e in moved { _ = try calls.call("close", .close, e) }
        }
    }
}
