import CShims
import Glibc

/// signalfd, eventfd, pipes peeked, thread signals.
extension Sys {
    // MARK: signals

    /// A non-blocking signalfd for SIGCHLD; blocks SIGCHLD in the calling thread.
    public static func sigchldFD() throws -> Int32 {
        let r = lg_sigchld_fd()
        if r < 0 { throw SystemError("signalfd(SIGCHLD)", code: -r) }
        return r
    }

    /// A non-blocking signalfd for `signals` (block them first).
    public static func signalFD(_ signals: [Int32]) throws -> Int32 {
        let r = signals.withUnsafeBufferPointer { lg_signal_fd($0.baseAddress, Int32($0.count)) }
        if r < 0 { throw SystemError("signalfd", code: -r) }
        return r
    }

    /// The next pending signal of a signalfd, if any.
    public static func readSignalFD(_ fd: Int32) -> (signo: Int32, code: Int32, sender: pid_t)? {
        var s: Int32 = 0, c: Int32 = 0, p: Int32 = 0
        return lg_signal_fd_read(fd, &s, &c, &p) == 1 ? (s, c, p) : nil
    }

    public static func eventFD() throws -> Int32 {
        let r = lg_eventfd()
        if r < 0 { throw SystemError("eventfd", code: -r) }
        return r
    }

    /// What the pipe behind `fd` holds, copied without consuming it (at most `capacity` bytes).
    public static func peekPipe(_ fd: Int32, capacity: Int = 1 << 20, what: String) throws -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: capacity)
        let n = buf.withUnsafeMutableBytes { lg_pipe_peek(fd, $0.baseAddress, UInt64(capacity)) }
        if n < 0 { throw SystemError("copy the contents of \(what)", code: Int32(-n)) }
        return Array(buf[0..<Int(n)])
    }

    public static func tgkill(_ tgid: pid_t, _ tid: pid_t, _ sig: Int32) { _ = lg_tgkill(tgid, tid, sig) }

    public static func drainSignalFD(_ fd: Int32) { _ = lg_signalfd_drain(fd) }

    public static func blockSignalInThisThread(_ sig: Int32) { _ = lg_block_signal(sig) }

    public static func threadID() -> pid_t { lg_thread_id() }
}
