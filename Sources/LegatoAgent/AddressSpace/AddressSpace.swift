import Glibc
import LegatoCore
import LegatoSystem

/// One managed address space (one mm): its page table always; once the agent has taken the
/// process over (after exec, or at the fork that made it), its userfaultfd with the fault handler,
/// its /proc/PID/pagemap, the scratch area injected calls use, the pidfd its process_madvise names,
/// and its brk.
///
/// Owned by the event-loop thread.
final class AddressSpace {
    let table: PageTable
    /// The thread group whose mm this is (0 until taken over).
    private(set) var pid: pid_t = 0
    /// The thread of this process inside a fork (from its entry stop to its ptrace fork event):
    /// the userfaultfd's fork event, which comes in between, belongs to it. One at a time.
    var forkingThread: pid_t?
    /// The child's address space and its userfaultfd (a descriptor of the agent's), made at the
    /// userfaultfd's fork event, until the ptrace event names the child's pid.
    var forkedChild: (space: AddressSpace, uffd: Int32)?
    /// `processMadvisePidfd` is the descriptor number a fork copied from the parent: it names the
    /// parent, and is replaced (same number) by one naming this process before the first discard.
    var pidfdInherited = false
    /// A madvise of this process asked for MADV_DONTFORK or MADV_WIPEONFORK: a fork's child does not
    /// get all of its pages (read from the child's smaps at the fork).
    var usesForkAdvice = false
    private(set) var uffd: Userfaultfd?
    /// Serves `uffd`; nil while the space is not managed (before exec's take-over, after a reset).
    private(set) var faults: FaultHandler!
    private(set) var pagemapFD: Int32 = -1
    /// A 64 KiB RWX mapping for the injection stub and small arguments, never managed (0: none).
    var scratch: UInt64 = 0
    /// The pidfd (or PIDFD_SELF) that injected process_madvise calls name this process by.
    var processMadvisePidfd: Int64 = -1
    /// Calls of PROG's the seccomp filter trapped (each may have changed a mapping or its flags).
    var tracedMemoryCalls: UInt64 = 0
    /// membarrier(MEMBARRIER_CMD_REGISTER_*) commands PROG made for this mm (no call reads them back).
    var membarrierRegistrations: Set<UInt64> = []
    /// The process's aio contexts and their requests (a fork's child has none: rings are not copied).
    var aio = AioContexts()
    var currentBrk: UInt64 = 0

    init(budget: LocalBudget, keys: KeyAllocator) { table = PageTable(budget: budget, keys: keys) }

    var isManaged: Bool { faults != nil }
    /// The uffd descriptor to poll (-1 when not managed).
    var pollFD: Int32 { uffd?.fd ?? -1 }

    /// Takes the process's userfaultfd and pagemap over.
    func attach(pid: pid_t, uffd: Userfaultfd, faults: FaultHandler) throws {
        self.pid = pid
        self.uffd = uffd
        self.faults = faults
        pagemapFD = open("/proc/\(pid)/pagemap", O_RDONLY | O_CLOEXEC)
        if pagemapFD < 0 { throw SystemError.fromErrno("open /proc/\(pid)/pagemap") }
    }

    /// A fork's child: its userfaultfd came with the fork event; the fork copied the scratch area,
    /// the brk and the injected pidfd's number from `parent`.
    func attachFork(pid: pid_t, uffd: Userfaultfd, faults: FaultHandler, parent: AddressSpace) throws {
        try attach(pid: pid, uffd: uffd, faults: faults)
        scratch = parent.scratch
        processMadvisePidfd = parent.processMadvisePidfd
        pidfdInherited = parent.processMadvisePidfd >= 0
        currentBrk = parent.currentBrk
        usesForkAdvice = parent.usesForkAdvice
    }

    /// The address space is gone (exec) or the run is over: forgets every page and closes the
    /// descriptors. The caller has dealt with the pages' remote copies.
    func reset() {
        table.removeAll()
        uffd?.close()
        uffd = nil
        faults = nil
        if pagemapFD >= 0 { close(pagemapFD) }
        pagemapFD = -1
        scratch = 0
        processMadvisePidfd = -1
        currentBrk = 0
        membarrierRegistrations = []
        aio.removeAll()
        pidfdInherited = false
        usesForkAdvice = false
        forkingThread = nil
        forkedChild = nil
    }

    /// PAGEMAP_SCAN over [start, end) calling `body` for each matching range (and its categories);
    /// with `writeProtect`, the matched pages are write-protected again (get-and-clear of WRITTEN).
    /// The guard regions (MADV_GUARD_INSTALL) in [start, end), as [start, end) ranges.
    func guardRanges(start: UInt64, end: UInt64) throws -> [[UInt64]] {
        var out: [[UInt64]] = []
        try scan(start: start, end: end, required: .guardRegion, returned: .guardRegion, writeProtect: false) { s, e, _ in out.append([s, e]) }
        return out
    }

    func scan(start: UInt64, end: UInt64, required: Sys.PageCategory, absent: Sys.PageCategory = [],
              returned: Sys.PageCategory = [.present, .written], writeProtect: Bool,
              _ body: (UInt64, UInt64, Sys.PageCategory) throws -> Void) throws {
        let cap = 512
        let vec = UnsafeMutablePointer<Sys.PageRegion>.allocate(capacity: cap)
        defer { vec.deallocate() }
        var from = start
        while from < end {
            let flags: Sys.ScanFlags = writeProtect ? [.writeProtectMatching, .checkWPAsync] : []
            let (n, walkEnd) = try Sys.pagemapScan(fd: pagemapFD, pid: pid, start: from, end: end, flags: flags,
                                                    required: required, absent: absent, returned: returned,
                                                    into: vec, capacity: cap)
            for k in 0..<n { try body(vec[k].start, vec[k].end, Sys.PageCategory(rawValue: vec[k].categories)) }
            if n < cap || walkEnd >= end || walkEnd <= from { break }
            from = walkEnd
        }
    }
}
