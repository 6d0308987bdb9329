import Glibc
import LegatoCore
import LegatoSystem

/// The agent's side of ptrace stops (the Tracer's TraceEvents): the calls the seccomp filter traps
/// change a process's memory (mmap, brk, mremap, madvise) or copy it (fork: see Agent+Fork); an
/// exec replaces it. Every process of PROG's tree is handled alike, in its own address space.
extension Agent: TraceEvents {
    /// MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, _PRIVATE_EXPEDITED, _PRIVATE_EXPEDITED_SYNC_CORE,
    /// _PRIVATE_EXPEDITED_RSEQ: what a restore registers again.
    static let membarrierRegistrations: Set<UInt64> = [1 << 2, 1 << 4, 1 << 6, 1 << 8]

    func syscallEntry(_ t: Tracee) throws {
        let regs: Registers
        do { regs = try Sys.getRegisters(t.tid) } catch let e as SystemError where e.code == ESRCH { return }
        guard let call = Syscall(rawValue: Int(regs.orig_rax)) else { return }
        guard let space = t.space else { return }
        space.tracedMemoryCalls &+= 1
        switch call {
        case .mmap, .mremap, .brk, .mlock, .munlock, .mlockall, .munlockall, .mlock2, .mseal,
             .ioSetup, .ioSubmit, .ioGetevents, .ioPgetevents, .ioDestroy:
            t.awaitingExit = call
        case .membarrier:
            // Only a registration needs its result (a barrier itself may be frequent: one stop is enough).
            if Agent.membarrierRegistrations.contains(regs.rdi) { t.awaitingExit = call }
        case .madvise:
            try madviseEntry(t, regs)
            // Advice changes mappings' flags: its exit is counted too (see MappingFlags.Reading).
            if t.awaitingExit == nil { t.awaitingExit = .madvise }
        case .processMadvise:
            try processMadviseEntry(t, regs)
        case .clone:
            t.cloneFlags = regs.rdi
        case .clone3:
            t.cloneFlags = try readProgramWord(at: regs.rdi, tid: t.tid, in: space)
        case .fork:
            t.cloneFlags = 0
        case .vfork:
            t.cloneFlags = CloneFlag.vm | CloneFlag.vfork
        default:
            break
        }
        if let flags = t.cloneFlags, flags & CloneFlag.vm == 0, space.isManaged {
            try forkEntry(t, call: call, in: space)
        }
    }

    func syscallExit(_ t: Tracee, call: Syscall) throws {
        let regs: Registers
        do { regs = try Sys.getRegisters(t.tid) } catch let e as SystemError where e.code == ESRCH { return }
        let ret = Int64(bitPattern: regs.rax)
        let failed = ret < 0 && ret > -4096
        guard let mm = t.space else { return }
        // Counted at entry and at exit: a call still running when smaps was read shows as a change.
        mm.tracedMemoryCalls &+= 1
        switch call {
        case .madvise, .processMadvise:
            discardExit(t, result: ret)
            // MADV_DONTFORK, MADV_WIPEONFORK: a fork's child gets less than the parent has.
            if call == .madvise && ret == 0 && (regs.rdx == 10 || regs.rdx == 18) { mm.usesForkAdvice = true }
        case .clone, .clone3, .fork:
            forkExit(t, in: mm)
        case .ioSetup where ret == 0:
            // io_setup(nr_events, &ctx): the new context's id is in *ctx.
            let id = try readProgramWord(at: regs.rsi, tid: t.tid, in: mm)
            mm.aio.setUp(id, requested: UInt32(truncatingIfNeeded: regs.rdi))
        case .ioSubmit:
            mm.aio.submitted(regs.rdi, ret)
        case .ioGetevents, .ioPgetevents:
            mm.aio.reaped(regs.rdi, ret)
        case .ioDestroy where ret == 0:
            mm.aio.destroyed(regs.rdi)
        case .membarrier where ret == 0:
            // (The first argument is still in rdi at the exit stop.)
            if Agent.membarrierRegistrations.contains(regs.rdi) { mm.membarrierRegistrations.insert(regs.rdi) }
        case .execve:
            if !failed {
                if t.tgid == mainPID, let source = restore.pending {
                    restore.pending = nil
                    try restoreAddressSpace(t, from: source)
                } else {
                    try setUpAddressSpace(t)
                }
            }
        case .mmap where !failed:
            let flags = regs.r10
            let mapPrivate: UInt64 = 0x02, mapAnonymous: UInt64 = 0x20, mapGrowsDown: UInt64 = 0x100, mapHugeTLB: UInt64 = 0x40000
            if flags & 0x0f == mapPrivate && flags & mapAnonymous != 0 && flags & mapHugeTLB == 0 {
                let start = UInt64(bitPattern: ret)
                try manage(start: start, end: start + Page.alignUp(regs.rsi), growsDown: flags & mapGrowsDown != 0, in: mm)
            }
        case .brk:
            let newBrk = UInt64(bitPattern: ret)
            if mm.currentBrk != 0 && Page.alignUp(newBrk) > Page.alignUp(mm.currentBrk) {
                try manage(start: Page.alignUp(mm.currentBrk), end: Page.alignUp(newBrk), growsDown: false, in: mm)
            }
            mm.currentBrk = newBrk
        case .mremap where !failed:
            let oldSize = Page.alignUp(regs.rsi), newSize = Page.alignUp(regs.rdx)
            let at = UInt64(bitPattern: ret)
            // An aio ring moved: its context's id is its new address (the kernel's aio_ring_mremap).
            if at != regs.rdi { mm.aio.moved(regs.rdi, to: at) }
            // A move was reported by the REMAP event already; a managed region that grew keeps its
            // uffd registration (the VMA was expanded), so only the table needs the new pages.
            if newSize > oldSize, mm.table.regions.find(at) != nil || mm.table.regions.find(at + oldSize - Page.size.u64) != nil {
                mm.table.regions.add(start: at + oldSize, end: at + newSize)
            }
        default:
            break
        }
    }

    /// The process's old address space is gone: the one it owned is reset (and set up again at the
    /// exec's exit stop); a vfork child leaves its parent's and gets one of its own.
    func execed(_ t: Tracee) {
        if let own = spaces[t.tgid] {
            if own.isManaged || own.forkedChild != nil { resetAddressSpace(own) }
            t.space = own
        } else {
            let s = AddressSpace(budget: budget, keys: keys)
            spaces[t.tgid] = s
            t.space = s
        }
        t.awaitingExit = .execve
    }

    /// The last thread of a process of the tree is gone: its address space goes with it (PROG's own
    /// stays until the run ends).
    func spaceEnded(_ space: AddressSpace) {
        guard space !== mm else { return }
        resetAddressSpace(space)
        if let pid = spaces.first(where: { $0.value === space })?.key { spaces[pid] = nil }
    }

    /// Reads one word of a process's memory, bringing the page in first if it is not resident
    /// (reading a missing managed page would fault into our own uffd and deadlock).
    func readProgramWord(at address: UInt64, tid: pid_t, in space: AddressSpace) throws -> UInt64 {
        try ensureResident(Page.alignDown(address), in: space)
        var word: UInt64 = 0
        var addr = address
        var len: UInt64 = 8
        _ = try Sys.processRead(pid: tid, into: &word, capacity: 8, addresses: &addr, lengths: &len, count: 1)
        return word
    }
}

extension Int {
    var u64: UInt64 { UInt64(self) }
}
