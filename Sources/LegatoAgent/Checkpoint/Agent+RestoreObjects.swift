import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// Restoring the tree's shared objects (SharedObjects): each is made again in PROG before any of
/// its mappings — shared anonymous memory by a MAP_SHARED|MAP_ANONYMOUS mapping reopened through
/// /proc/self/map_files, a memfd by memfd_create, an unlinked file by creating and unlinking it
/// where it was, a removed directory by making, opening and removing it — and kept open there, above every restored descriptor, until the whole tree is
/// restored. The agent writes the content through its own descriptor of it; every mapping of it,
/// PROG's or a member's (which takes PROG's descriptor with pidfd_getfd), maps it at its offset.
/// A SysV segment is made with its key and id (the IPC namespace's shm_next_id), filled by the
/// agent attached to it, and attached by each process where it was (shmat: no descriptor).
extension Agent {
    /// How a process maps a shared object again: through a descriptor, or by attaching a segment.
    enum SharedMapping {
        case descriptor(UInt64)
        case segment(Int32)
    }

    func makeSharedObjects(_ image: ProcessImage, pid: pid_t, _ calls: RestoreCalls, _ source: RestoreSource, _ tree: TreeRestore) throws {
        let objects = image.sharedObjects ?? []
        guard !objects.isEmpty else { return }
        let reader = try RestoreBacking(layers: source.layers, areas: [])
        for o in objects {
            if o.kind == .sysv {
                try makeSegment(o, calls, source, reader, tree)
                continue
            }
            let made = try makeObject(o, calls)
            let fd = try calls.call("fcntl(F_DUPFD_CLOEXEC) for \(o.name)", .fcntl, UInt64(made), 1030, tree.high)
            _ = try calls.call("close", .close, UInt64(made))
            tree.objects[o.id] = Int32(fd)
            tree.parked[image.pid, default: []].append(Int32(fd))
            if o.kind == .unlinkedDirectory { continue }  // (nothing in it)
            let path = "/proc/\(pid)/fd/\(fd)"
            let own = open(path, O_RDWR | O_CLOEXEC)
            guard own >= 0 else { throw SystemError.fromErrno("open \(path) (\(o.name), made again) to write its content") }
            tree.objectFiles[o.id] = own
            try writeContent(of: o, from: source, reader) { offset, page, bytes in
                try Sys.pwriteFully(own, page, count: bytes, at: Int(offset), "write \(o.name) (made again) at \(offset)")
            }
        }
    }

    /// A SysV segment with its key, size, permissions and id, made in PROG; its content written by
    /// the agent through an attachment of its own.
    private func makeSegment(_ o: ProcessImage.SharedObject, _ calls: RestoreCalls, _ source: RestoreSource, _ reader: RestoreBacking,
                             _ tree: TreeRestore) throws {
        guard let shmid = o.shmid, let key = o.key else { throw RestoreError.sharedObjectMissing(id: o.id) }
        let next = "/proc/sys/kernel/shm_next_id"
        try ProcFile.write(next, "\(shmid)\n")
        defer { try? ProcFile.write(next, "-1\n") }
        let got = try calls.callResult(.shmget, UInt64(UInt32(bitPattern: key)), o.size, UInt64(o.mode) | 0o1000 | 0o2000)  // IPC_CREAT|IPC_EXCL
        if got == -Int64(EEXIST) || got == -Int64(ENOSPC) {
            // The segment outlived the run (a keyed one not marked for removal): if it is the one,
            // attached by nobody, it is given the checkpoint's content.
            var ds = shmid_ds()
            guard shmctl(shmid, IPC_STAT, &ds) == 0, ds.shm_perm.__key == key, UInt64(ds.shm_segsz) == o.size, ds.shm_nattch == 0 else {
                throw RestoreError.segmentNotRestored(name: o.name, shmid: shmid, got: -2)
            }
        } else if got < 0 {
            throw SystemError("restoring \(o.name): shmget(key \(key), \(o.size) bytes, 0\(String(o.mode, radix: 8))) as SysV shared memory \(shmid)", code: Int32(-got))
        } else if got != Int64(shmid) {
            throw RestoreError.segmentNotRestored(name: o.name, shmid: shmid, got: Int32(truncatingIfNeeded: got))
        }
        guard let at = shmat(shmid, nil, 0), at != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw SystemError.fromErrno("attach SysV shared memory \(shmid) to the agent to write its content")
        }
        defer { shmdt(at) }
        try writeContent(of: o, from: source, reader) { offset, page, bytes in memcpy(at + Int(offset), page, bytes) }
        tree.segments[o.id] = shmid
    }

    /// A new object like `o`, at some descriptor of the process `calls` injects into.
    private func makeObject(_ o: ProcessImage.SharedObject, _ calls: RestoreCalls) throws -> Int64 {
        let size = Page.alignUp(max(o.size, 1))
        switch o.kind {
        case .sysv:  // made by makeSegment, with no descriptor
            throw RestoreError.sharedObjectMissing(id: o.id)
        case .anonymous:
            let at = UInt64(try calls.call("mmap shared anonymous \(size) bytes", .mmap, 0, size, 3, 0x21, UInt64(bitPattern: -1), 0))  // MAP_SHARED|MAP_ANONYMOUS
            let path = "/proc/self/map_files/\(String(at, radix: 16))-\(String(at + size, radix: 16))"
            let fd = try calls.call("open \(path) (needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE)", .open, try calls.args.string(path),
                                    UInt64(O_RDWR | O_CLOEXEC), 0)
            calls.args.reset()
            _ = try calls.call("munmap \(describeRange(at, size))", .munmap, at, size)
            return fd
        case .memfd:
            let name = String(o.name.dropFirst("/memfd:".count))
            let fd = try calls.call("memfd_create(\(name))", .memfdCreate, try calls.args.string(name), 0x1 | 0x2)  // MFD_CLOEXEC|MFD_ALLOW_SEALING
            calls.args.reset()
            _ = try calls.call("ftruncate \(o.name) to \(o.size)", .ftruncate, UInt64(fd), o.size)
            return fd
        case .unlinkedFile:
            // At its own path if nothing took it since (maps then names it as before), else an
            // unnamed file in its directory.
            let exact = try calls.callResult(.open, try calls.args.string(o.name), UInt64(O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC), UInt64(o.mode))
            calls.args.reset()
            let fd: Int64
            if exact >= 0 {
                fd = exact
                _ = try calls.call("unlink \(o.name)", .unlink, try calls.args.string(o.name))
                calls.args.reset()
            } else if exact == -Int64(EEXIST) {
                let dir = (o.name as NSString).deletingLastPathComponent
                fd = try calls.call("open \(dir) O_TMPFILE for \(o.name)", .open, try calls.args.string(dir), UInt64(O_RDWR | O_CLOEXEC) | 0o20200000, UInt64(o.mode))
                calls.args.reset()
            } else {
                throw SystemError("restoring the unlinked file \(o.name): open", code: Int32(-exact))
            }
            _ = try calls.call("ftruncate \(o.name) to \(o.size)", .ftruncate, UInt64(fd), o.size)
            return fd
        case .unlinkedDirectory:
            // Made where it was if nothing took the name since (else beside it), opened, removed.
            var path = o.name
            var made = try calls.callResult(.mkdir, try calls.args.string(path), UInt64(o.mode))
            calls.args.reset()
            if made == -Int64(EEXIST) {
                path = o.name + ".legato-restore-\(getpid())"
                made = try calls.callResult(.mkdir, try calls.args.string(path), UInt64(o.mode))
                calls.args.reset()
            }
            if made < 0 { throw SystemError("restoring the removed directory \(o.name): mkdir \(path)", code: Int32(-made)) }
            let fd = try calls.call("open \(path) (the removed directory \(o.name))", .open, try calls.args.string(path), UInt64(O_RDONLY | O_DIRECTORY | O_CLOEXEC), 0)
            calls.args.reset()
            _ = try calls.call("rmdir \(path)", .rmdir, try calls.args.string(path))
            calls.args.reset()
            return fd
        }
    }

    /// The object's saved pages (the newest checkpoint's: each holds all of an object), each handed
    /// to `write` with its offset and how many of its bytes are the object's.
    func writeContent(of o: ProcessImage.SharedObject, from source: RestoreSource, _ reader: RestoreBacking,
                      _ write: (UInt64, UnsafeRawPointer, Int) throws -> Void) throws {
        try writeContent(id: o.id, size: o.size, from: source, reader, write)
    }

    /// Hands `write` each saved page of object `id` (of `size` bytes) with its offset and how many
    /// of its bytes are the object's; holes are not handed.
    func writeContent(id: Int, size: UInt64, from source: RestoreSource, _ reader: RestoreBacking,
                      _ write: (UInt64, UnsafeRawPointer, Int) throws -> Void) throws {
        let newest = source.layers.last?.epoch
        let page = UnsafeMutableRawPointer.allocate(byteCount: Page.size, alignment: Page.size)
        defer { page.deallocate() }
        let low = TreePages.objectAddress(id, 0), high = TreePages.objectAddress(id + 1, 0)
        for (n, layer) in source.layers.enumerated() where layer.epoch == newest {
            var index: Int64 = 0
            for (address, count) in layer.pageRuns {
                defer { index += Int64(count) }
                guard address >= low && address < high else { continue }
                for k in 0..<count {
                    try reader.read(.init(layer: n, page: index + Int64(k)), into: page)
                    let offset = address - low + UInt64(k * Page.size)
                    let bytes = Int(min(UInt64(Page.size), size > offset ? size - offset : 0))
                    guard bytes > 0 else { continue }
                    try write(offset, page, bytes)
                }
            }
        }
    }

    /// Seals go on once every mapping is back (a write seal forbids the shared writable ones
    /// made before it); then the agent's descriptors close.
    func finishSharedObjects(_ image: ProcessImage, _ tree: TreeRestore) throws {
        for o in image.sharedObjects ?? [] where o.removed == true {
            guard let shmid = tree.segments[o.id] else { continue }
            if shmctl(shmid, IPC_RMID, nil) != 0 { throw SystemError.fromErrno("shmctl(IPC_RMID) on SysV shared memory \(shmid) (\(o.name))") }
        }
        for o in image.sharedObjects ?? [] {
            guard let fd = tree.objectFiles.removeValue(forKey: o.id) else { continue }
            defer { close(fd) }
            if let seals = o.seals, seals != 0, fcntl(fd, 1033, seals) < 0 {  // F_ADD_SEALS
                throw SystemError.fromErrno("fcntl(F_ADD_SEALS 0x\(String(seals, radix: 16))) on \(o.name)")
            }
        }
    }

    /// The descriptor, in the process `calls` injects into, of the shared object `id`: PROG's own,
    /// or (for a member) PROG's taken with pidfd_getfd, once per member (`taken`); a member's
    /// temporaries go with the descriptors its fork copied.
    func objectDescriptor(_ id: Int, _ calls: RestoreCalls, _ tree: TreeRestore, prog: Int32, member: Bool,
                          taken: inout [Int: Int64]) throws -> SharedMapping {
        if let shmid = tree.segments[id] { return .segment(shmid) }
        guard let fd = tree.objects[id] else { throw RestoreError.sharedObjectMissing(id: id) }
        if !member { return .descriptor(UInt64(fd)) }
        if let got = taken[id] { return .descriptor(UInt64(got)) }
        let got = try takeFromProcess(prog, fd: fd, calls, for: "shared object \(id)")
        taken[id] = got
        return .descriptor(UInt64(got))
    }
}
