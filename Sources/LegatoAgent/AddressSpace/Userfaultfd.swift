import Glibc
import LegatoCore
import LegatoSystem

/// What the fault path asks of one address space's userfaultfd. `Userfaultfd` is the kernel's;
/// unit tests play the kernel with a fake, so the fault handler's rules can be checked without ptrace.
protocol UserfaultKernel: AnyObject {
    /// Reads pending messages into `buffer`; 0 when none are pending.
    func readEvents(into buffer: UnsafeMutablePointer<Sys.UffdEvent>, max: Int) throws -> Int
    /// UFFDIO_COPY of `length` bytes to `address`; the errno (0 on success) and the bytes copied
    /// (a partial copy reports both).
    func copy(to address: UInt64, from source: UnsafeRawPointer, length: UInt64, writeProtect: Bool) -> (errno: Int32, copied: Int64)
    /// UFFDIO_WAKE: threads waiting on a fault in the range fault again.
    func wake(start: UInt64, length: UInt64)
}

/// The userfaultfd of a traced process's address space, copied into the agent (pidfd_getfd).
/// Owns the descriptor; `close()` gives it back.
final class Userfaultfd: UserfaultKernel {
    private(set) var fd: Int32
    let pid: pid_t

    init(fd: Int32, pid: pid_t) {
        self.fd = fd
        self.pid = pid
    }

    deinit { close() }

    func readEvents(into buffer: UnsafeMutablePointer<Sys.UffdEvent>, max: Int) throws -> Int {
        try Sys.uffdReadEvents(fd, into: buffer, max: max)
    }

    func copy(to address: UInt64, from source: UnsafeRawPointer, length: UInt64, writeProtect: Bool) -> (errno: Int32, copied: Int64) {
        Sys.uffdCopy(fd, to: address, from: source, length: length, writeProtect: writeProtect)
    }

    func wake(start: UInt64, length: UInt64) { _ = Sys.uffdWake(fd, start: start, length: length) }

    /// UFFDIO_REGISTER for missing pages and write protection.
    func register(start: UInt64, length: UInt64) throws {
        try Sys.uffdRegister(fd, start: start, length: length, mode: Sys.uffdRegisterMissing | Sys.uffdRegisterWP, pid: pid)
    }

    func writeProtect(start: UInt64, length: UInt64, protect: Bool) throws {
        try Sys.uffdWriteProtect(fd, start: start, length: length, protect: protect, pid: pid)
    }

    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }
}
