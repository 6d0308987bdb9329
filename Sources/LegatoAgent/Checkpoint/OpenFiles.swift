import Glibc
import LegatoCore
import LegatoSystem

/// The regular files the tree holds open or maps shared and writable, saved with the checkpoint so
/// that a restore finds each as the program left it. A file goes on changing after its checkpoint — a compiler's temporary
/// file rewritten by the next job, a log appended to, a file deleted once done — and a process
/// restored at its old offset in a changed file reads or writes what it never would have. So each
/// open file's content is saved (once, however many descriptors of however many processes hold
/// it), read through /proc/PID/fd while the tree is frozen, and a restore puts back every one that
/// changed or went (Agent+RestoreOpenFiles); one that did not is left untouched.
///
/// Files above `largestFile`, and those past `largestTotal` in all, are not saved: a restore reopens
/// them as they are then, as it does with the files of file mappings (whose size and mtime are
/// checked). Pseudo files (/proc, /sys, cgroup and the like) are never saved.
enum OpenFiles {
    static let largestFile: UInt64 = 8 << 20
    static let largestTotal: UInt64 = 64 << 20

    /// An open file found in the tree, with the agent's own descriptor of it (the finder's caller closes it).
    struct Found {
        var file: ProcessImage.OpenFile
        let fd: Int32
    }

    struct Findings {
        var saved: [Found] = []
        /// Files left out for their size, each with it.
        var tooLarge: [(path: String, size: UInt64)] = []
    }

    /// The open regular files of `images` (each description once: dups and descriptions shared
    /// with another process are left to their first holder), numbered from `firstID`. `pids` are
    /// the images' processes as the agent sees them, in the same order.
    static func find(_ images: [ProcessImage], pids: [pid_t], firstID: Int) throws -> Findings {
        var out = Findings()
        var seen = Set<String>()
        var total: UInt64 = 0
        do {
            for (k, pid) in pids.enumerated() {
                // Each open regular file, and each file mapped shared and writable (what the
                // program writes through it is the file's content: a JVM's hsperfdata file).
                let held = images[k].fds.filter { $0.kind == .regular && $0.dupOf == nil && $0.sharedWith == nil }
                    .map { (shown: $0.path, at: "/proc/\(pid)/fd/\($0.fd)") }
                let mapped = images[k].vmas.filter { $0.kind == .shared && $0.object == nil && $0.vmFlags?.contains("mw") == true }
                    .compactMap { v in v.path.map { (shown: $0, at: "/proc/\(pid)/map_files/\(String(v.start, radix: 16))-\(String(v.end, radix: 16))") } }
                for f in held + mapped {
                    if ["/proc/", "/sys/", "/dev/"].contains(where: { f.shown.hasPrefix($0) }) || f.shown.hasSuffix(SharedObjects.deletedSuffix) { continue }
                    let path = f.at
                    let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)
                    guard fd >= 0 else { throw SystemError.fromErrno("open \(path) (\(f.shown), of pid \(images[k].pid)) to save its content") }
                    var st = stat()
                    let fsType: UInt32
                    do {
                        fsType = try Sys.fileSystemType(fd, "\(path) (\(f.shown))")
                        guard fstat(fd, &st) == 0 else { throw SystemError.fromErrno("fstat \(path) (\(f.shown))") }
                    } catch {
                        close(fd)
                        throw error
                    }
                    let size = UInt64(st.st_size)
                    guard st.st_mode & S_IFMT == S_IFREG, !pseudoFileSystems.contains(fsType),
                          seen.insert("\(st.st_dev):\(st.st_ino)").inserted else {
                        close(fd)
                        continue
                    }
                    guard size <= largestFile && total + size <= largestTotal else {
                        out.tooLarge.append((f.shown, size))
                        close(fd)
                        continue
                    }
                    let id = firstID + out.saved.count
                    guard id <= TreePages.largestObjectID else {
                        close(fd)
                        throw CheckpointRefused(description: "the program holds more than \(TreePages.largestObjectID - firstID) open files and shared objects, more than a checkpoint holds")
                    }
                    total += size
                    out.saved.append(Found(file: ProcessImage.OpenFile(id: id, path: f.shown, size: size, mode: UInt32(st.st_mode) & 0o7777,
                                                                       uid: st.st_uid, gid: st.st_gid), fd: fd))
                }
            }
        } catch {
            for f in out.saved { close(f.fd) }
            throw error
        }
        return out
    }

    /// Stages the content of each saved file; returns the pages staged.
    static func stage(_ found: [Found], into staging: CheckpointStaging) throws -> Int {
        try found.reduce(0) { $0 + (try SharedObjects.stageContent(of: $1.fd, id: $1.file.id, size: $1.file.size, name: $1.file.path, into: staging)) }
    }

    /// statfs f_type of file systems whose files are views of the kernel, not data: proc, sysfs,
    /// cgroup (1 and 2), debugfs, tracefs, securityfs, bpf, configfs, efivarfs.
    private static let pseudoFileSystems: Set<UInt32> = [0x9fa0, 0x6265_6572, 0x27e0eb, 0x6367_7270, 0x6462_6720, 0x7472_6163,
                                                          0x7363_6673, 0xcafe_4a11, 0x6265_6570, 0xde5e_81e4]
}
