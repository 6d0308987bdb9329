import CShims
import Glibc

/// Reading and writing another process's memory; pidfds.
extension Sys {
    // MARK: process memory

    /// Reads the ranges of `pid` back to back into `buffer`; returns bytes read (may be short).
    public static func processRead(pid: pid_t, into buffer: UnsafeMutableRawPointer, capacity: Int,
                                   addresses: UnsafePointer<UInt64>, lengths: UnsafePointer<UInt64>, count: Int) throws -> Int {
        let r = lg_process_vm_read(pid, buffer, UInt64(capacity), addresses, lengths, Int32(count))
        if r < 0 { throw SystemError("process_vm_readv of \(count) ranges in pid \(pid)", code: Int32(-r)) }
        return Int(r)
    }

    /// Reads `length` bytes of process `pid`'s memory at `address`: process_vm_readv, and where that
    /// is refused (it honours protections) /proc/PID/mem, which reads PROT_NONE pages too. Only
    /// present pages: a missing page of a userfaultfd range would fault into its handler.
    public static func readProcessMemory(pid: pid_t, address: UInt64, length: Int, into dst: UnsafeMutableRawPointer) throws {
        var addr = address, len = UInt64(length)
        if let n = try? processRead(pid: pid, into: dst, capacity: length, addresses: &addr, lengths: &len, count: 1), n == length { return }
        let fd = open("/proc/\(pid)/mem", O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw SystemError.fromErrno("open /proc/\(pid)/mem") }
        defer { close(fd) }
        let n = Sys.retryingEINTR { pread(fd, dst, length, off_t(Int64(bitPattern: address))) }
        if n != length { throw SystemError("read \(describeRange(address, UInt64(length))) of pid \(pid)", code: n < 0 ? errno : EIO) }
    }

    /// A thread's id in its own (innermost) PID namespace: the last NSpid of its status.
    public static func namespaceTID(_ tid: pid_t) -> Int32 {
        ProcFile.statusField("\(tid)", "NSpid")?.split(whereSeparator: { $0 == "\t" || $0 == " " }).last.flatMap { Int32($0) } ?? tid
    }

    public static func processWrite(pid: pid_t, from buffer: UnsafeRawPointer, length: Int, to address: UInt64) throws {
        let r = lg_process_vm_write(pid, buffer, UInt64(length), address)
        if r < 0 { throw SystemError("process_vm_writev \(describeRange(address, UInt64(length))) in pid \(pid)", code: Int32(-r)) }
        if r != length { throw SystemError("process_vm_writev \(describeRange(address, UInt64(length))) in pid \(pid) wrote \(r)", code: EFAULT) }
    }

    public static func pidfdOpen(_ pid: pid_t) throws -> Int32 {
        let r = lg_pidfd_open(pid)
        if r < 0 { throw SystemError("pidfd_open(\(pid))", code: -r) }
        return r
    }

    /// Whether descriptors `fd1` and `fd2` of `pid` are one open file description (a dup: they share
    /// the offset and the status flags).
    public static func sameOpenFile(pid: pid_t, _ fd1: Int32, _ fd2: Int32) throws -> Bool {
        try sameOpenFile(pid, fd1, pid, fd2)
    }

    /// Whether fd1 of pid1 and fd2 of pid2 are one open file description (kcmp KCMP_FILE).
    public static func sameOpenFile(_ pid1: pid_t, _ fd1: Int32, _ pid2: pid_t, _ fd2: Int32) throws -> Bool {
        let r = lg_kcmp_file(pid1, fd1, pid2, fd2)
        if r < 0 { throw SystemError("kcmp(KCMP_FILE, fd \(fd1) of pid \(pid1) and fd \(fd2) of pid \(pid2))", code: -r) }
        return r == 0
    }

    /// Whether fd `fd` of `pid` is the file its epoll set `epfd` watches under fd number `tfd`
    /// (kcmp KCMP_EPOLL_TFD); false where the set has no such entry.
    public static func epollWatches(pid: pid_t, epfd: Int32, tfd: Int32, isFD fd: Int32) throws -> Bool {
        let r = lg_kcmp_epoll_target(pid, epfd, tfd, 0, fd)
        if r == -ENOENT || r == -EBADF { return false }
        if r < 0 { throw SystemError("kcmp(KCMP_EPOLL_TFD, epoll fd \(epfd) entry \(tfd) and fd \(fd) of pid \(pid))", code: -r) }
        return r == 0
    }

    public static func pidfdGetFD(pidfd: Int32, targetFD: Int32, pid: pid_t) throws -> Int32 {
        let r = lg_pidfd_getfd(pidfd, targetFD)
        if r < 0 { throw SystemError("pidfd_getfd(fd \(targetFD) of pid \(pid))", code: -r) }
        return r
    }

    /// This process's own copy of fd `fd` of `pid` (pidfd_open + pidfd_getfd): the same open file
    /// description, close-on-exec. The caller closes it.
    public static func copyDescriptor(_ fd: Int32, of pid: pid_t) throws -> Int32 {
        let pidfd = try pidfdOpen(pid)
        defer { close(pidfd) }
        return try pidfdGetFD(pidfd: pidfd, targetFD: fd, pid: pid)
    }
}
