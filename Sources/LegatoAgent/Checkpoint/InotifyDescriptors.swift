import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// inotify instances, read from /proc/PID/fdinfo while the process is frozen: each watch's
/// descriptor number (wd), mask, and the path of what it watches, found through the file handle
/// fdinfo gives (open_by_handle_at on a mount of its file system). A restore makes the instance
/// again and adds each watch at its number (Agent+RestoreEvents).
///
/// Refused: events not read yet (a read consumes them: they cannot be copied), a watch on a file
/// that has no path any more, a watch whose handle does not open (a file system without handles).
enum InotifyDescriptors {
    static func read(fd: Int32, pid: pid_t, fdinfo: String, describe: (String) -> String) throws -> [ProcessImage.InotifyWatch] {
        let unread = try unreadBytes(fd: fd, pid: pid)
        if unread > 0 {
            throw CheckpointRefused(description: describe("anon_inode:inotify (an inotify instance) with \(unread) bytes of events not read yet"))
        }
        var watches: [ProcessImage.InotifyWatch] = []
        var mounts: [String: Int32] = [:]  // major:minor -> an fd of a mount of it
        defer { for m in mounts.values { close(m) } }
        for line in fdinfo.split(separator: "\n") where line.hasPrefix("inotify ") {
            var fields: [String: String] = [:]
            for word in line.split(separator: " ").dropFirst() {
                guard let colon = word.firstIndex(of: ":") else { continue }
                fields[String(word[..<colon])] = String(word[word.index(after: colon)...])
            }
            guard let wd = Int32(fields["wd"] ?? ""), let mask = UInt32(fields["mask"] ?? "", radix: 16), let sdev = UInt64(fields["sdev"] ?? "", radix: 16),
                  let type = Int32(fields["fhandle-type"] ?? ""), let handle = fields["f_handle"].flatMap(hexBytes) else {
                throw SystemError("read the inotify instance at fd \(fd) of pid \(pid): a watch reads \"\(line)\"", code: EINVAL)
            }
            let device = "\(sdev >> 20):\(sdev & 0xfffff)"  // the kernel's dev_t: 12 bits of major, 20 of minor
            if mounts[device] == nil { mounts[device] = try mount(of: device, pid: pid) }
            let opened: Int32
            switch Sys.openByHandle(mountFD: mounts[device]!, type: type, handle: handle) {
            case .success(let fd): opened = fd
            case .failure(let e):
                throw CheckpointRefused(description: describe("an inotify instance whose watch \(wd) (on device \(device)) cannot be found again by its handle: \(Errno.name(e.code))"))
            }
            defer { close(opened) }
            guard let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(opened)"), path.hasPrefix("/"),
                  !path.hasSuffix(SharedObjects.deletedSuffix) else {
                throw CheckpointRefused(description: describe("an inotify instance whose watch \(wd) is on a file that has no path any more"))
            }
            watches.append(ProcessImage.InotifyWatch(wd: wd, mask: mask, path: path))
        }
        return watches.sorted { $0.wd < $1.wd }
    }

    /// FIONREAD on the very instance (a pidfd_getfd copy).
    private static func unreadBytes(fd: Int32, pid: pid_t) throws -> Int32 {
        let copy = try Sys.copyDescriptor(fd, of: pid)
        defer { close(copy) }
        var n: Int32 = 0
        guard ioctl(copy, UInt(FIONREAD), &n) == 0 else { throw SystemError.fromErrno("ioctl(FIONREAD) on the inotify instance at fd \(fd) of pid \(pid)") }
        return n
    }

    /// A directory of a mount of file system `device` ("major:minor") in `pid`'s mount table,
    /// opened through its root (one mounting the file system's own root first).
    private static func mount(of device: String, pid: pid_t) throws -> Int32 {
        // 36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw
        let lines = (ProcFile.text("/proc/\(pid)/mountinfo") ?? "").split(separator: "\n").map { $0.split(separator: " ") }
        let candidates = lines.filter { $0.count > 4 && $0[2] == device }.sorted { ($0[3] == "/" ? 0 : 1) < ($1[3] == "/" ? 0 : 1) }
        for m in candidates {
            let fd = open("/proc/\(pid)/root\(m[4])", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if fd >= 0 { return fd }
        }
        throw SystemError("find a mount of device \(device) in /proc/\(pid)/mountinfo for an inotify watch", code: ENOENT)
    }

    private static func hexBytes(_ hex: String) -> [UInt8]? {
        guard hex.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        var i = hex.startIndex
        while i < hex.endIndex {
            let j = hex.index(i, offsetBy: 2)
            guard let b = UInt8(hex[i..<j], radix: 16) else { return nil }
            out.append(b)
            i = j
        }
        return out
    }
}
