import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// Memory of the tree that no path maps again: MAP_SHARED anonymous memory, memfds and files
/// unlinked while mapped (a POSIX semaphore's /dev/shm/sem.* once sem_open is done). A checkpoint
/// saves each object once, however many mappings of however many processes map it: its content
/// read through /proc/PID/map_files while the tree is frozen (holes left out), as pages tagged
/// TreePages.objectAddress, and notes on each mapping which object it maps. A restore makes each
/// object again in PROG and maps it wherever it was mapped (Agent+RestoreObjects).
///
/// SysV shared memory and the aio ring are not among them (they are refused by name): a segment's
/// id and an aio context must come back with the same numbers.
enum SharedObjects {
    /// The kind of object a mapping maps, nil for one a path or the agent's own paging brings back.
    static func kind(of v: ProcessImage.VMA) -> ProcessImage.SharedObject.Kind? {
        guard v.kind == .shared || v.kind == .file, let path = v.path, path.hasSuffix(deletedSuffix) else { return nil }
        let file = String(path.dropLast(deletedSuffix.count))
        if file.hasPrefix("/SYSV") || file == "/[aio]" { return nil }
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

    /// Finds the objects that `images`' mappings map (one per file: its device and inode), marks
    /// each mapping with its object's id and returns them. `pids` are the images' processes as the
    /// agent sees them, in the same order.
    static func find(_ images: inout [ProcessImage], pids: [pid_t]) throws -> [Found] {
        var found: [Found] = []
        var byFile: [String: Int] = [:]
        do {
            for (k, pid) in pids.enumerated() {
                for i in images[k].vmas.indices {
                    let v = images[k].vmas[i]
                    guard let kind = kind(of: v) else { continue }
                    let path = "/proc/\(pid)/map_files/\(String(v.start, radix: 16))-\(String(v.end, radix: 16))"
                    let fd = open(path, O_RDONLY | O_CLOEXEC)
                    guard fd >= 0 else { throw SystemError.fromErrno("open \(path) (a mapping of \(v.path ?? "?"))") }
                    var st = stat()
                    guard fstat(fd, &st) == 0 else {
                        let e = SystemError.fromErrno("fstat \(path)")
                        close(fd)
                        throw e
                    }
                    let identity = "\(st.st_dev):\(st.st_ino)"
                    if let id = byFile[identity] {
                        close(fd)
                        images[k].vmas[i].object = id
                        continue
                    }
                    guard UInt64(st.st_size) <= TreePages.largestObjectSize else {
                        close(fd)
                        throw CheckpointRefused(description: "\(v.path ?? "a shared object") is \(st.st_size) bytes: objects of up to 64 GiB are checkpointed")
                    }
                    let id = found.count
                    guard id <= TreePages.largestObjectID else {
                        close(fd)
                        throw CheckpointRefused(description: "the program maps more than \(TreePages.largestObjectID) shared objects, more than a checkpoint holds")
                    }
                    let seals = kind == .memfd ? fcntl(fd, 1034) : -1  // F_GET_SEALS
                    let name = String(v.path!.dropLast(deletedSuffix.count))
                    found.append(Found(object: .init(id: id, kind: kind, name: name, size: UInt64(st.st_size), mode: UInt32(st.st_mode) & 0o7777,
                                                      seals: seals >= 0 ? seals : nil), fd: fd))
                    byFile[identity] = id
                    images[k].vmas[i].object = id
                }
            }
        } catch {
            for f in found { close(f.fd) }
            throw error
        }
        return found
    }

    /// Stages the content of each object (its data, not its holes); returns the pages staged.
    static func stage(_ found: [Found], into staging: CheckpointStaging) throws -> Int {
        var pages = 0
        let end = { (size: UInt64) in Page.alignUp(size) }
        for f in found {
            let size = end(f.object.size)
            var at: UInt64 = 0
            while at < size {
                let data = lseek(f.fd, off_t(at), 3)  // SEEK_DATA
                if data < 0 {
                    if errno == ENXIO { break }  // only a hole is left
                    throw SystemError.fromErrno("lseek(SEEK_DATA) in \(f.object.name)")
                }
                let hole = lseek(f.fd, data, 4)  // SEEK_HOLE
                let first = UInt64(data) & ~UInt64(Page.size - 1)
                let last = min(size, hole < 0 ? size : Page.alignUp(UInt64(hole)))
                var a = first
                while a < last {
                    let n = Int(min(UInt64(CheckpointStaging.runPages), (last - a) >> UInt64(Page.shift)))
                    let dst = try staging.reserve(TreePages.objectAddress(f.object.id, a), n)
                    var done = 0
                    while done < n * Page.size {
                        let got = pread(f.fd, dst + done, n * Page.size - done, off_t(a) + off_t(done))
                        if got < 0 && errno == EINTR { continue }
                        if got < 0 { throw SystemError.fromErrno("read \(f.object.name) at \(a + UInt64(done))") }
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
        }
        return pages
    }
}
