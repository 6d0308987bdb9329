import Glibc
import LegatoCore
import LegatoSystem

/// Taking over PROG's address space after exec, and registering memory as it appears.
extension Agent {
    static let scratchBytes: UInt64 = 64 * 1024
    /// No EVENT_REMOVE: PROG's discards are caught by seccomp (see Agent+Discard), so the agent's own
    /// process_madvise does not wait for one event per range.
    static let uffdFeatures: Sys.UffdFeatures = [.eventRemap, .eventUnmap, .threadID, .wpAsync]
    static let pidfdSelfThreadGroup: Int64 = -20000

    /// At the syscall-exit stop of execve: map a scratch page, create PROG's userfaultfd and take a
    /// copy of it, then register every private anonymous mapping that exists already.
    func setUpAddressSpace(_ t: Tracee) throws {
        let started = monotonicNanos()
        try makeScratch(t.tid, at: nil)
        try takeUserfaultfd(t.tid)
        try manageExistingMappings(t.tid)
        log.debug("took over pid \(t.tid): uffd \(uffd), scratch 0x\(String(scratch, radix: 16)), \(regions.regions.count) regions, \(stats.residentPages) pages resident, in \((monotonicNanos() - started) / 1000) µs")
    }

    /// A scratch mapping for the injection stub and small arguments (never managed), at `at` if given.
    /// The first injection runs a stub poked over the word at the thread's RIP.
    func makeScratch(_ pid: pid_t, at hint: UInt64?) throws {
        let first = try Sys.Injection(tid: pid, stub: 0, whileWaiting: nil)
        let prot: UInt64 = 0x7  // RWX
        let flags: UInt64 = 0x22 | (hint != nil ? 0x100000 : 0)  // MAP_PRIVATE|MAP_ANONYMOUS [|MAP_FIXED_NOREPLACE]
        let addr = try first.syscall(Syscall.mmap, hint ?? 0, Agent.scratchBytes, prot, flags, UInt64(bitPattern: -1), 0)
        try first.cure()
        guard addr > 0 else { throw SystemError("mmap of the scratch area in pid \(pid)", code: Int32(-addr)) }
        scratch = UInt64(addr)
        try Sys.pokeData(pid, address: scratch, word: Sys.injectionStubWord)
    }

    /// userfaultfd() inside PROG, copied out with pidfd_getfd, closed inside again; UFFDIO_API.
    func takeUserfaultfd(_ pid: pid_t) throws {
        let inj = try Sys.Injection(tid: pid, stub: scratch, whileWaiting: nil)
        defer { try? inj.cure() }
        let oCloexec: UInt64 = 0o2000000, oNonblock: UInt64 = 0o4000
        let fdInTarget = try inj.syscall(Syscall.userfaultfd, oCloexec | oNonblock)
        let brk0 = try inj.syscall(Syscall.brk, 0)
        // process_madvise needs a pidfd of PROG inside PROG: PIDFD_SELF where the kernel has it.
        let probe = try inj.syscall(Syscall.processMadvise, UInt64(bitPattern: Agent.pidfdSelfThreadGroup), 0, 0, 4, 0)
        if probe >= 0 { processMadvisePidfd = Agent.pidfdSelfThreadGroup }
        guard fdInTarget >= 0 else {
            throw SystemError("userfaultfd() injected into pid \(pid)", code: Int32(-fdInTarget))
        }
        let pidfd = try Sys.pidfdOpen(pid)
        defer { close(pidfd) }
        uffd = try Sys.pidfdGetFD(pidfd: pidfd, targetFD: Int32(fdInTarget), pid: pid)
        _ = try inj.syscall(Syscall.close, UInt64(fdInTarget))
        if processMadvisePidfd == -1 {
            let selfPid = try inj.syscall(Syscall.getpid)
            let fd = try inj.syscall(Syscall.pidfdOpen, UInt64(selfPid), 0)
            guard fd >= 0 else { throw SystemError("pidfd_open injected into pid \(pid)", code: Int32(-fd)) }
            // Out of the way of PROG's own descriptors (which keep the numbers a plain run gives them).
            let high = try inj.syscall(72, UInt64(fd), 1030, 1000)  // fcntl(fd, F_DUPFD_CLOEXEC, 1000)
            _ = try inj.syscall(Syscall.close, UInt64(fd))
            guard high >= 0 else { throw SystemError("moving the injected pidfd in pid \(pid)", code: Int32(-high)) }
            processMadvisePidfd = high
        }
        try inj.cure()
        currentBrk = UInt64(bitPattern: brk0)

        let api = try Sys.uffdAPI(uffd, features: Agent.uffdFeatures.rawValue)
        guard api.features & Agent.uffdFeatures.rawValue == Agent.uffdFeatures.rawValue else {
            throw LegatoError("userfaultfd lacks features 0x\(String(Agent.uffdFeatures.rawValue & ~api.features, radix: 16))")
        }
        pagemapFD = open("/proc/\(pid)/pagemap", O_RDONLY | O_CLOEXEC)
        if pagemapFD < 0 { throw SystemError.fromErrno("open /proc/\(pid)/pagemap") }
    }

    /// Registers what exists already: the stack, .bss, the heap if any.
    func manageExistingMappings(_ pid: pid_t) throws {
        for m in try ProcMaps.read(pid: pid) where m.isManageableAnonymous && m.start != scratch {
            try manage(start: m.start, end: m.end, growsDown: m.path == "[stack]")
        }
    }

    /// Registers [start, end) with the uffd (missing + write-protect) and adds it to the table.
    /// Pages already present (a MAP_POPULATE, the stack at exec) become resident and dirty.
    func manage(start: UInt64, end: UInt64, growsDown: Bool) throws {
        guard uffd >= 0, start < end else { return }
        if end - start > 1 << 40 {
            log.warning("not managing the \(formatSize(end - start)) mapping at 0x\(String(start, radix: 16)): too large")
            return
        }
        do {
            try Sys.uffdRegister(uffd, start: start, length: end - start,
                                 mode: Sys.uffdRegisterMissing | Sys.uffdRegisterWP, pid: mainPID)
        } catch let e as SystemError where e.code == EINVAL || e.code == ENOMEM || e.code == EBUSY {
            log.debug("not managing \(describeRange(start, end - start)): \(e)")
            return
        }
        log.trace("manage \(describeRange(start, end - start))")
        let (region, removed) = regions.add(start: start, end: end, growsDown: growsDown)
        forget(removed)
        try adoptPresentPages(region, from: 0, to: region.pageCount)
    }

    /// Marks pages of `region` that are already present as resident+dirty and write-protects them.
    func adoptPresentPages(_ region: Region, from: Int, to: Int) throws {
        let start = region.address(at: from), end = region.address(at: to)
        var found = 0
        try scan(start: start, end: end, required: .present, writeProtect: false) { s, e, _ in
            var a = s
            while a < e {
                let i = region.index(of: a)
                if !region.state(i).contains(.resident) {
                    region.insert(i, [.resident, .dirty])
                    pushVictim(region, i)
                    found += 1
                }
                a += Page.size.u64
            }
        }
        if found > 0 {
            stats.noteResident(found)
            try Sys.uffdWriteProtect(uffd, start: start, length: end - start, protect: true, pid: mainPID)
        }
    }

    /// PAGEMAP_SCAN over [start, end) calling `body` for each matching range (and its categories).
    func scan(start: UInt64, end: UInt64, required: Sys.PageCategory, absent: Sys.PageCategory = [], writeProtect: Bool,
              _ body: (UInt64, UInt64, Sys.PageCategory) throws -> Void) throws {
        let cap = 512
        let vec = UnsafeMutablePointer<Sys.PageRegion>.allocate(capacity: cap)
        defer { vec.deallocate() }
        var from = start
        while from < end {
            let flags: Sys.ScanFlags = writeProtect ? [.writeProtectMatching, .checkWPAsync] : []
            let (n, walkEnd) = try Sys.pagemapScan(fd: pagemapFD, pid: mainPID, start: from, end: end, flags: flags,
                                                    required: required, absent: absent, returned: [.present, .written],
                                                    into: vec, capacity: cap)
            for k in 0..<n { try body(vec[k].start, vec[k].end, Sys.PageCategory(rawValue: vec[k].categories)) }
            if n < cap || walkEnd >= end || walkEnd <= from { break }
            from = walkEnd
        }
    }

    @inline(__always)
    func pushVictim(_ region: Region, _ i: Int) {
        if !region.state(i).contains(.queued) {
            region.insert(i, .queued)
            victims.push(region.address(at: i))
        }
    }

    /// PROG exec'd: its old address space is gone. Forget every page and the old uffd.
    func resetAddressSpace() {
        try? drainAllInbound()
        if uffd >= 0 {
            forget(regions.regions)
            regions.removeAll()
            victims.removeAll()
            consumed.removeAll()
            stats.residentPages = 0
            close(uffd)
            uffd = -1
        }
        if pagemapFD >= 0 { close(pagemapFD); pagemapFD = -1 }
        scratch = 0
        processMadvisePidfd = -1
        currentBrk = 0
    }
}
