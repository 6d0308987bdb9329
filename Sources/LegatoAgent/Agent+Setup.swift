import Glibc
import LegatoCore
import LegatoSystem

/// Taking over an address space after exec (PROG's, or that of a process of its tree), and
/// registering memory as it appears.
extension Agent {
    static let scratchBytes: UInt64 = 64 * 1024
    /// No EVENT_REMOVE: PROG's discards are caught by seccomp (see Agent+Discard), so the agent's own
    /// process_madvise does not wait for one event per range. EVENT_FORK hands over a forked child's
    /// copy of the address space, still registered (see Agent+Fork).
    static let uffdFeatures: Sys.UffdFeatures = [.eventRemap, .eventUnmap, .threadID, .wpAsync, .eventFork]
    static let pidfdSelfThreadGroup: Int64 = -20000

    /// At the syscall-exit stop of execve: map a scratch page, create PROG's userfaultfd and take a
    /// copy of it, then register every private anonymous mapping that exists already.
    func setUpAddressSpace(_ t: Tracee) throws {
        guard let space = t.space else { return }
        let started = monotonicNanos()
        try makeScratch(t.tid, at: nil, in: space)
        try takeUserfaultfd(t.tid, into: space)
        try manageExistingMappings(t.tid, in: space)
        stats.addressSpaces += 1
        log.debug("took over pid \(t.tid): uffd \(space.pollFD), scratch 0x\(String(space.scratch, radix: 16)), \(space.table.regions.regions.count) regions, \(budget.residentPages) pages resident, in \((monotonicNanos() - started) / 1000) µs")
    }

    /// A scratch mapping for the injection stub and small arguments (never managed), at `at` if given.
    /// The first injection runs a stub poked over the word at the thread's RIP.
    func makeScratch(_ pid: pid_t, at hint: UInt64?, in mm: AddressSpace) throws {
        let first = try Sys.Injection(tid: pid, stub: 0, whileWaiting: nil)
        let prot: UInt64 = 0x7  // RWX
        let flags: UInt64 = 0x22 | (hint != nil ? 0x100000 : 0)  // MAP_PRIVATE|MAP_ANONYMOUS [|MAP_FIXED_NOREPLACE]
        let addr = try first.syscall(.mmap, hint ?? 0, Agent.scratchBytes, prot, flags, UInt64(bitPattern: -1), 0)
        try first.cure()
        guard addr > 0 else { throw SystemError("mmap of the scratch area in pid \(pid)", code: Int32(-addr)) }
        mm.scratch = UInt64(addr)
        try Sys.pokeData(pid, address: mm.scratch, word: Sys.injectionStubWord)
    }

    /// userfaultfd() inside PROG, copied out with pidfd_getfd, closed inside again; UFFDIO_API.
    func takeUserfaultfd(_ pid: pid_t, into mm: AddressSpace) throws {
        let inj = try Sys.Injection(tid: pid, stub: mm.scratch, whileWaiting: nil)
        defer { try? inj.cure() }
        let oCloexec: UInt64 = 0o2000000, oNonblock: UInt64 = 0o4000
        let fdInTarget = try inj.syscall(.userfaultfd, oCloexec | oNonblock)
        let brk0 = try inj.syscall(.brk, 0)
        // process_madvise needs a pidfd of PROG inside PROG: PIDFD_SELF where the kernel has it.
        let probe = try inj.syscall(.processMadvise, UInt64(bitPattern: Agent.pidfdSelfThreadGroup), 0, 0, 4, 0)
        if probe >= 0 { mm.processMadvisePidfd = Agent.pidfdSelfThreadGroup }
        guard fdInTarget >= 0 else {
            throw SystemError("userfaultfd() injected into pid \(pid)", code: Int32(-fdInTarget))
        }
        let pidfd = try Sys.pidfdOpen(pid)
        defer { close(pidfd) }
        let uffd = Userfaultfd(fd: try Sys.pidfdGetFD(pidfd: pidfd, targetFD: Int32(fdInTarget), pid: pid), pid: pid)
        _ = try inj.syscall(.close, UInt64(fdInTarget))
        if mm.processMadvisePidfd == -1 {
            let selfPid = try inj.syscall(.getpid)
            let fd = try inj.syscall(.pidfdOpen, UInt64(selfPid), 0)
            guard fd >= 0 else { throw SystemError("pidfd_open injected into pid \(pid)", code: Int32(-fd)) }
            // Out of the way of PROG's own descriptors (which keep the numbers a plain run gives them).
            let high = try inj.syscall(.fcntl, UInt64(fd), 1030, 1000)  // fcntl(fd, F_DUPFD_CLOEXEC, 1000)
            _ = try inj.syscall(.close, UInt64(fd))
            guard high >= 0 else { throw SystemError("moving the injected pidfd in pid \(pid)", code: Int32(-high)) }
            mm.processMadvisePidfd = high
        }
        try inj.cure()
        mm.currentBrk = UInt64(bitPattern: brk0)

        let api: (features: UInt64, ioctls: UInt64)
        do { api = try Sys.uffdAPI(uffd.fd, features: Agent.uffdFeatures.rawValue) } catch {
            uffd.close()
            throw error
        }
        guard api.features & Agent.uffdFeatures.rawValue == Agent.uffdFeatures.rawValue else {
            uffd.close()
            throw AddressSpaceError.missingUffdFeatures(pid: pid, features: Agent.uffdFeatures.rawValue & ~api.features)
        }
        try mm.attach(pid: pid, uffd: uffd, faults: makeFaultHandler(uffd, table: mm.table, pid: pid))
    }

    func makeFaultHandler(_ uffd: Userfaultfd, table: PageTable, pid: pid_t) -> FaultHandler {
        let handler = FaultHandler(kernel: uffd, table: table, pid: pid, prefetchWindow: prefetchWindow, zeroPages: zeroPages,
                                   counters: faultCounters, log: log)
        handler.sources = self
        return handler
    }

    /// Registers what exists already: the stack, .bss, the heap if any.
    func manageExistingMappings(_ pid: pid_t, in mm: AddressSpace) throws {
        for m in try ProcMaps.read(pid: pid) where m.isManageableAnonymous && m.start != mm.scratch {
            try manage(start: m.start, end: m.end, growsDown: m.path == "[stack]", in: mm)
        }
    }

    /// Registers [start, end) with the uffd (missing + write-protect) and adds it to the table.
    /// Pages already present (a MAP_POPULATE, the stack at exec) become resident and dirty.
    func manage(start: UInt64, end: UInt64, growsDown: Bool, in mm: AddressSpace) throws {
        guard mm.isManaged, start < end else { return }
        if end - start > 1 << 40 {
            log.warning("not managing the \(formatSize(end - start)) mapping at 0x\(String(start, radix: 16)): too large")
            return
        }
        do {
            try mm.uffd!.register(start: start, length: end - start)
        } catch let e as SystemError where e.code == EINVAL || e.code == ENOMEM || e.code == EBUSY {
            log.debug("not managing \(describeRange(start, end - start)): \(e)")
            return
        }
        log.trace("manage \(describeRange(start, end - start))")
        let (region, removed) = mm.table.regions.add(start: start, end: end, growsDown: growsDown)
        forget(removed, in: mm)
        try adoptPresentPages(region, from: 0, to: region.pageCount, in: mm)
    }

    /// Marks pages of `region` that are already present as resident+dirty and write-protects them.
    func adoptPresentPages(_ region: Region, from: Int, to: Int, in mm: AddressSpace) throws {
        let start = region.address(at: from), end = region.address(at: to)
        var found = 0
        try mm.scan(start: start, end: end, required: .present, writeProtect: false) { s, e, _ in
            var a = s
            while a < e {
                let i = region.index(of: a)
                if !region.state(i).contains(.resident) {
                    region.insert(i, [.resident, .dirty])
                    mm.table.pushVictim(region, i)
                    found += 1
                }
                a += Page.size.u64
            }
        }
        if found > 0 {
            mm.table.noteResident(found)
            try mm.uffd!.writeProtect(start: start, length: end - start, protect: true)
        }
    }

    /// The process of `mm` exec'd or exited: its old address space is gone. Forget every page
    /// (their remote copies go) and the old uffd; answers still on their way for it are dropped.
    func resetAddressSpace(_ mm: AddressSpace) {
        if mm.isManaged {
            mm.faults.retired = true
            discardRemoteCopies(of: mm.table.regions.regions)
        }
        dropForkedChild(of: mm)
        mm.reset()
    }
}
