import CShims
import Glibc

/// Whole reads and writes of files, with the one EINTR policy of Swift code here: an interrupted
/// call is retried, in this file (the C layer retries its own calls). Errors name what was
/// attempted, with the errno (a short read or write past the file's end is EIO or ENOSPC).
extension Sys {
    /// Retries `call` while it fails with EINTR; returns its result.
    @inline(__always)
    public static func retryingEINTR<T: BinaryInteger>(_ call: () -> T) -> T {
        while true {
            let r = call()
            if r < 0 && errno == EINTR { continue }
            return r
        }
    }

    /// The statfs f_type of the file system `fd` is on (PROC_SUPER_MAGIC, EXT4_SUPER_MAGIC...).
    public static func fileSystemType(_ fd: Int32, _ what: @autoclosure () -> String) throws -> UInt32 {
        let t = lg_fs_type(fd)
        guard t >= 0 else { throw SystemError.fromErrno("fstatfs \(what())") }
        return UInt32(truncatingIfNeeded: t)
    }

    /// Reads exactly `count` bytes at `offset` into `buffer`.
    public static func preadFully(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, count: Int, at offset: Int,
                                  _ what: @autoclosure () -> String) throws {
        try whole(count, short: EIO, what) { done in pread(fd, buffer + done, count - done, off_t(offset + done)) }
    }

    /// Writes all `count` bytes of `buffer` at `offset`.
    public static func pwriteFully(_ fd: Int32, _ buffer: UnsafeRawPointer, count: Int, at offset: Int,
                                   _ what: @autoclosure () -> String) throws {
        try whole(count, short: ENOSPC, what) { done in pwrite(fd, buffer + done, count - done, off_t(offset + done)) }
    }

    /// Writes as much of `count` bytes at `offset` as the file takes: how many were written, and the
    /// errno that stopped it short (ENOSPC for a write that moved nothing; 0 if all were written).
    /// For a caller that keeps what did get written (a log keeps the whole entries on disk).
    public static func pwriteAsMuch(_ fd: Int32, _ buffer: UnsafeRawPointer, count: Int, at offset: Int) -> (written: Int, error: Int32) {
        var done = 0
        while done < count {
            let n = retryingEINTR { pwrite(fd, buffer + done, count - done, off_t(offset + done)) }
            if n <= 0 { return (done, n < 0 ? errno : ENOSPC) }
            done += n
        }
        return (done, 0)
    }

    /// Writes all `count` bytes of `buffer` at the file's offset.
    public static func writeFully(_ fd: Int32, _ buffer: UnsafeRawPointer, count: Int, _ what: @autoclosure () -> String) throws {
        try whole(count, short: ENOSPC, what) { done in write(fd, buffer + done, count - done) }
    }

    /// Calls `step(done)` until `count` bytes are done; a call that moves none fails with `short`.
    private static func whole(_ count: Int, short: Int32, _ what: () -> String, _ step: (Int) -> Int) throws {
        var done = 0
        while done < count {
            let n = retryingEINTR { step(done) }
            if n <= 0 { throw SystemError(what(), code: n < 0 ? errno : short) }
            done += n
        }
    }
}

extension Sys {
    /// open_by_handle_at(mountFD, handle, O_PATH|O_CLOEXEC): the file a file handle names (as
    /// name_to_handle_at or an inotify watch's fdinfo gives it), on the file system `mountFD` is on.
    public static func openByHandle(mountFD: Int32, type: Int32, handle: [UInt8]) -> Result<Int32, SystemError> {
        let fd = handle.withUnsafeBytes { lg_open_by_handle(mountFD, type, $0.baseAddress, UInt32($0.count)) }
        return fd >= 0 ? .success(fd) : .failure(SystemError("open_by_handle_at (a handle of type \(type))", code: -fd))
    }
}
