import Glibc
import LegatoCore
import LegatoSystem

/// The agent's side of ptrace stops (the Tracer's TraceEvents): the calls the seccomp filter traps
/// change PROG's memory (mmap, brk, mremap, madvise) or copy it (fork); an exec replaces it.
extension Agent: TraceEvents {
    /// MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, _PRIVATE_EXPEDITED, _PRIVATE_EXPEDITED_SYNC_CORE,
    /// _PRIVATE_EXPEDITED_RSEQ: what a restore registers again.
    static let membarrierRegistrations: Set<UInt64> = [1 << 2, 1 << 4, 1 << 6, 1 << 8]

    func syscallEntry(_ t: Tracee) throws {
        let regs: Registers
        do { regs = try Sys.getRegisters(t.tid) } catch let e as SystemError where e.code == ESRCH { return }
        guard let call = Syscall(rawValue: Int(regs.orig_rax)) else { return }
        if t.sharesMemory { mm.tracedMemoryCalls &+= 1 }
        switch call {
        case .mmap, .mremap, .brk, .mlock, .munlock, .mlockall, .munlockall, .mlock2, .mseal:
            if t.sharesMemory { t.awaitingExit = call }
        case .membarrier:
            // Only a registration needs its result (a barrier itself may be frequent: one stop is enough).
            if t.sharesMemory && Agent.membarrierRegistrations.contains(regs.rdi) { t.awaitingExit = call }
        case .madvise:
            try madviseEntry(t, regs)
            // Advice changes mappings' flags: its exit is counted too (see MappingFlags.Reading).
            if t.sharesMemory && t.awaitingExit == nil { t.awaitingExit = .madvise }
        case .processMadvise:
            try processMadviseEntry(t, regs)
        case .clone:
            t.cloneFlags = regs.rdi
        case .clone3:
            t.cloneFlags = try readProgramWord(at: regs.rdi, tid: t.tid)
        case .fork:
            t.cloneFlags = 0
        case .vfork:
            t.cloneFlags = CloneFlag.vm | CloneFlag.vfork
        default:
            break
        }
        if let flags = t.cloneFlags, t.sharesMemory, flags & CloneFlag.vm == 0 {
            // A fork copies PROG's page tables; the child runs unmanaged, so it must find every page present.
            try materializeAll()
        }
    }

    func syscallExit(_ t: Tracee, call: Syscall) throws {
        let regs: Registers
        do { regs = try Sys.getRegisters(t.tid) } catch let e as SystemError where e.code == ESRCH { return }
        let ret = Int64(bitPattern: regs.rax)
        let failed = ret < 0 && ret > -4096
        // Counted at entry and at exit: a call still running when smaps was read shows as a change.
        if t.sharesMemory { mm.tracedMemoryCalls &+= 1 }
        switch call {
        case .madvise, .processMadvise:
            discardExit(t, result: ret)
        case .membarrier where ret == 0 && t.sharesMemory:
            // (The first argument is still in rdi at the exit stop.)
            if Agent.membarrierRegistrations.contains(regs.rdi) { mm.membarrierRegistrations.insert(regs.rdi) }
        case .execve:
            if !failed {
                if let source = restore.pending {
                    restore.pending = nil
                    try restoreAddressSpace(t, from: source)
                } else {
                    try setUpAddressSpace(t)
                }
            }
        case .mmap where !failed && t.sharesMemory:
            let flags = regs.r10
            let mapPrivate: UInt64 = 0x02, mapAnonymous: UInt64 = 0x20, mapGrowsDown: UInt64 = 0x100, mapHugeTLB: UInt64 = 0x40000
            if flags & 0x0f == mapPrivate && flags & mapAnonymous != 0 && flags & mapHugeTLB == 0 {
                let start = UInt64(bitPattern: ret)
                try manage(start: start, end: start + Page.alignUp(regs.rsi), growsDown: flags & mapGrowsDown != 0)
            }
        case .brk where t.sharesMemory:
            let newBrk = UInt64(bitPattern: ret)
            if mm.currentBrk != 0 && Page.alignUp(newBrk) > Page.alignUp(mm.currentBrk) {
                try manage(start: Page.alignUp(mm.currentBrk), end: Page.alignUp(newBrk), growsDown: false)
            }
            mm.currentBrk = newBrk
        case .mremap where !failed && t.sharesMemory:
            let oldSize = Page.alignUp(regs.rsi), newSize = Page.alignUp(regs.rdx)
            let at = UInt64(bitPattern: ret)
            // A move was reported by the REMAP event already; a managed region that grew keeps its
            // uffd registration (the VMA was expanded), so only the table needs the new pages.
            if newSize > oldSize, mm.table.regions.find(at) != nil || mm.table.regions.find(at + oldSize - Page.size.u64) != nil {
                mm.table.regions.add(start: at + oldSize, end: at + newSize)
            }
        default:
            break
        }
    }

    func execed(_ t: Tracee) {
        if t.tgid == mainPID {
            resetAddressSpace()
            t.sharesMemory = true
            t.awaitingExit = .execve
        } else {
            t.sharesMemory = false
        }
    }

    /// Reads one word of PROG's memory, bringing the page in first if it is not resident
    /// (reading a missing managed page would fault into our own uffd and deadlock).
    func readProgramWord(at address: UInt64, tid: pid_t) throws -> UInt64 {
        try ensureResident(Page.alignDown(address))
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
