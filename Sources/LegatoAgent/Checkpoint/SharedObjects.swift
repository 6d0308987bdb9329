import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// Memory and files of the tree that no path opens again: MAP_SHARED anonymous memory, memfds
/// (mapped or held by a descriptor) and files unlinked while mapped or open (a POSIX semaphore's
/// /dev/shm/sem.* once sem_open is done, a temporary file unlinked at once: "ghosts"; a directory
/// removed while open is one with no content). A checkpoint saves each object once, however many
/// mappings and descriptors of however many processes hold it: its content read through
/// /proc/PID/map_files or /proc/PID/fd while the tree is frozen (holes left out), as pages tagged
/// TreePages.objectAddress, and notes on each mapping and descriptor which object it is. A restore
/// makes each object again in PROG, maps it wherever it was mapped and reopens it for each
/// descriptor (Agent+RestoreObjects, Agent+RestoreFiles).
///
/// A SysV segment is one too, made again with its key and id; it must be attached only by processes
/// of the tree, each mapping the whole of it. The aio ring is not: it comes back with its context
/// (AioRings).
enum SharedObjects {
    /// The kind of object a mapping maps, nil for one a path or the agent's own paging brings back.
    static func kind(of v: ProcessImage.VMA) -> ProcessImage.SharedObject.Kind? {
        guard v.kind == .shared || v.kind == .file, let path = v.path, path.hasSuffix(deletedSuffix) else { return nil }
        let file = String(path.dropLast(deletedSuffix.count))
        if file == "/[aio]" { return nil }
        if file.hasPrefix("/SYSV") { return v.kind == .shared ? .sysv : nil }
        if file == "/dev/zero" { return v.kind == .shared ? .anonymous : nil }
        if file.hasPrefix("/memfd:") { return .memfd }
        return .unlinkedFile
    }

    static let deletedSuffix = " (deleted)"

    /// An object found in the tree, with the agent's own descriptor of it (the finder closes it).
    struct Found {
        var object: ProcessImage.SharedObject
        let fd: Int32
    }

    /// Files unlinked while only descriptors hold them (no mapping) are saved up to this size.
    static let largestGhostFile: UInt64 = 64 << 20

    /// Finds the objects that `images`' mappings map and that their descriptors hold (memfds and
    /// files unlinked while open; one per file: its device and inode), marks each mapping and
    /// descriptor with its object's id and returns them. `pids` are the images' processes as the
    /// agent sees them, in the same order.
    static func find(_ images: inout [ProcessImage], pids: [pid_t]) throws -> [Found] {
        var found: [Found] = []
        var byFile: [String: Int] = [:]
        var attached: [Int: Int] = [:]  // SysV segments' nattch, by object id
        /// The id of the object `path` (a /proc link to it) is, found before or new.
        func object(at path: String, shown: String, kind: ProcessImage.SharedObject.Kind, mapped: Bool) throws -> Int {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw SystemError.fromErrno("open \(path) (\(shown))") }
            var st = stat()
            guard fstat(fd, &st) == 0 else {
                let e = SystemError.fromErrno("fstat \(path)")
                close(fd)
                throw e
            }
            let identity = "\(st.st_dev):\(st.st_ino)"
            if let id = byFile[identity] {
                close(fd)
                return id
            }
            let kind = kind == .unlinkedFile && st.st_mode & S_IFMT == S_IFDIR ? .unlinkedDirectory : kind
            let limit = mapped || kind == .memfd ? TreePages.largestObjectSize : largestGhostFile
            guard UInt64(st.st_size) <= limit else {
                close(fd)
                throw CheckpointRefused(description: "\(shown) is \(formatBytes(UInt64(st.st_size))): \(mapped ? "shared objects" : "files unlinked while open") of up to \(formatBytes(limit)) are checkpointed")
            }
            let id = found.count
            guard id <= TreePages.largestObjectID else {
                close(fd)
                throw CheckpointRefused(description: "the program maps more than \(TreePages.largestObjectID) shared objects, more than a checkpoint holds")
            }
            let seals = kind == .memfd ? fcntl(fd, 1034) : -1  // F_GET_SEALS
            let name = shown.hasSuffix(deletedSuffix) ? String(shown.dropLast(deletedSuffix.count)) : shown
            var object = ProcessImage.SharedObject(id: id, kind: kind, name: name, size: kind == .unlinkedDirectory ? 0 : UInt64(st.st_size),
                                                   mode: UInt32(st.st_mode) & 0o7777, seals: seals >= 0 ? seals : nil)
            if kind == .sysv {
                do { attached[id] = try describeSegment(&object, shmid: Int32(truncatingIfNeeded: st.st_ino)) } catch { close(fd); throw error }
            }
            found.append(Found(object: object, fd: fd))
            byFile[identity] = id
            return id
        }
        do {
            for (k, pid) in pids.enumerated() {
                for i in images[k].vmas.indices {
                    let v = images[k].vmas[i]
                    guard let kind = kind(of: v) else { continue }
                    let path = "/proc/\(pid)/map_files/\(String(v.start, radix: 16))-\(String(v.end, radix: 16))"
                    images[k].vmas[i].object = try object(at: path, shown: v.path ?? "a mapping", kind: kind, mapped: true)
                }
            }
            // Then the memfds and ghosts descriptors hold (dups and descriptions shared with an
            // earlier process are taken from their first holder at restore).
            for (k, pid) in pids.enumerated() {
                for i in images[k].fds.indices where [.memfd, .unlinked].contains(images[k].fds[i].kind) {
                    let f = images[k].fds[i]
                    guard f.dupOf == nil && f.sharedWith == nil else { continue }
                    images[k].fds[i].object = try object(at: "/proc/\(pid)/fd/\(f.fd)", shown: f.path, kind: f.kind == .memfd ? .memfd : .unlinkedFile, mapped: false)
                }
            }
            try checkSegmentsAttachedInTree(found, images, attached: attached)
        } catch {
            for f in found { close(f.fd) }
            throw error
        }
        return found
    }

    /// A SysV segment's key, permissions and state from /proc/sysvipc/shm (a segment's shmem file has
    /// its id for inode number); returns how many attachments it has (nattch).
    private static func describeSegment(_ o: inout ProcessImage.SharedObject, shmid: Int32) throws -> Int {
        // key shmid perms size cpid lpid nattch uid gid cuid cgid atime dtime ctime rss swap
        for line in (ProcFile.text("/proc/sysvipc/shm") ?? "").split(separator: "\n").dropFirst() {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count > 6, Int32(f[1]) == shmid, let key = Int32(f[0]), let perms = UInt32(f[2], radix: 8), let size = UInt64(f[3]),
                  let attached = Int(f[6]) else { continue }
            o.key = key
            o.shmid = shmid
            o.mode = perms & 0o777
            o.removed = perms & 0o1000 != 0  // SHM_DEST
            o.size = size
            return attached
        }
        throw CheckpointRefused(description: "SysV shared memory \(shmid) (\(o.name)) is not in /proc/sysvipc/shm")
    }

    /// Each segment is attached only by the tree (nattch counts one per mapping), whole, at offset 0:
    /// a restore attaches it again with shmat, which maps all of it.
    private static func checkSegmentsAttachedInTree(_ found: [Found], _ images: [ProcessImage], attached: [Int: Int]) throws {
        for f in found where f.object.kind == .sysv {
            let maps = images.flatMap { $0.vmas }.filter { $0.object == f.object.id }
            let id = f.object.shmid ?? -1
            if let n = attached[f.object.id], n != maps.count {
                throw CheckpointRefused(description: "SysV shared memory \(id) (\(f.object.name)) is attached \(n) times, \(maps.count) of them by the program")
            }
            if let part = maps.first(where: { $0.offset != 0 || $0.end - $0.start != Page.alignUp(f.object.size) }) {
                throw CheckpointRefused(description: "SysV shared memory \(id) (\(f.object.name)) is mapped in part at \(describeRange(part.start, part.end - part.start))")
            }
        }
    }

    /// Stages the content of each object (its data, not its holes); returns the pages staged.
    static func stage(_ found: [Found], into staging: CheckpointStaging) throws -> Int {
        try found.reduce(0) { $0 + (try stageContent(of: $1.fd, id: $1.object.id, size: $1.object.size, name: $1.object.name, into: staging)) }
    }

    /// Stages the data of the file `fd` (`size` bytes, holes left out) as object `id`'s pages;
    /// returns how many.
    static func stageContent(of fd: Int32, id: Int, size fileSize: UInt64, name: String, into staging: CheckpointStaging) throws -> Int {
        var pages = 0
        let size = Page.alignUp(fileSize)
        var at: UInt64 = 0
        while at < size {
            let data = lseek(fd, off_t(at), 3)  // SEEK_DATA
            if data < 0 {
                if errno == ENXIO { break }  // only a hole is left
                throw SystemError.fromErrno("lseek(SEEK_DATA) in \(name)")
            }
            let hole = lseek(fd, data, 4)  // SEEK_HOLE
            let first = UInt64(data) & ~UInt64(Page.size - 1)
            let last = min(size, hole < 0 ? size : Page.alignUp(UInt64(hole)))
            var a = first
            while a < last {
                let n = Int(min(UInt64(CheckpointStaging.runPages), (last - a) >> UInt64(Page.shift)))
                let dst = try staging.reserve(TreePages.objectAddress(id, a), n)
                var done = 0
                while done < n * Page.size {
                    let got = pread(fd, dst + done, n * Page.size - done, off_t(a) + off_t(done))
                    if got < 0 && errno == EINTR { continue }
                    if got < 0 { throw SystemError.fromErrno("read \(name) at \(a + UInt64(done))") }
                    if got == 0 {  // the file's end inside its last page: the rest reads as zeros
                        memset(dst + done, 0, n * Page.size - done)
                        break
                    }
                    done += got
                }
                pages += n
                a += UInt64(n * Page.size)
            }
            at = last
        }
        return pages
    }
}
