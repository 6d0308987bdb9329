import Glibc
import LegatoCore
import LegatoSystem

/// ptrace stops: syscalls the seccomp filter traps, clones, exec, signals, job control, exits.
extension Agent {
    func handleWait(_ tid: pid_t, _ status: Sys.WaitStatus) throws {
        if snapshotPIDs.contains(tid) {
            if status.exited || status.signaled { snapshotPIDs.remove(tid) }
            return
        }
        guard let t = tracees[tid] else {
            if status.stopped {
                // A new thread or child reported its first stop before its parent's clone event.
                let t = Tracee(tid: tid, tgid: tid, sharesMemory: false, classified: false)
                t.parked = status
                tracees[tid] = t
            }
            return
        }
        if status.exited || status.signaled {
            tracees[tid] = nil
            if tid == mainPID { programStatus = status }
            return
        }
        guard status.stopped else { return }
        // Any ptrace stop consumes a pending PTRACE_INTERRUPT (the kernel clears the STOP trap).
        t.interruptSent = false
        // While freezing, only stops fit for injection are held; a syscall or event stop is handled,
        // and the thread resumed and interrupted again.
        if !t.classified || (phase != .running && Agent.isInjectable(status)) {
            t.parked = status
            return
        }
        try handleStop(t, status)
        if phase == .freezing && t.sharesMemory && t.parked == nil && tracees[tid] != nil {
            t.interruptSent = true
            tolerateGone { try Sys.ptraceInterrupt(tid) }
        }
    }

    /// Acts on one stop and resumes the tracee (or leaves it in group-stop).
    func handleStop(_ t: Tracee, _ status: Sys.WaitStatus) throws {
        let sig = status.stopSignal
        switch status.event {
        case Sys.PtraceEvent.seccomp.rawValue:
            try handleSeccompEntry(t)
        case Sys.PtraceEvent.clone.rawValue, Sys.PtraceEvent.fork.rawValue, Sys.PtraceEvent.vfork.rawValue:
            try handleCloneEvent(t, event: status.event)
        case Sys.PtraceEvent.exec.rawValue:
            try handleExec(t)
        case Sys.PtraceEvent.stop.rawValue:
            if sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU {
                t.groupStopped = true
                tolerateGone { try Sys.ptraceListen(t.tid) }
            } else {
                resume(t)
            }
        case 0 where sig == (SIGTRAP | 0x80):
            try handleSyscallExit(t)
        case 0:
            if sig == SIGCONT { t.groupStopped = false }
            resume(t, signal: sig)
        default:
            resume(t)
        }
    }

    /// Resumes a tracee, to its syscall-exit stop if we are waiting for one.
    func resume(_ t: Tracee, signal: Int32 = 0) {
        var sig = signal
        if sig == 0, !t.pendingSignals.isEmpty { sig = t.pendingSignals.removeFirst() }
        for extra in t.pendingSignals { Sys.tgkill(t.tgid, t.tid, extra) }
        t.pendingSignals.removeAll()
        tolerateGone {
            if t.awaitingExit != nil { try Sys.ptraceSyscall(t.tid, signal: sig) } else { try Sys.ptraceCont(t.tid, signal: sig) }
        }
    }

    /// Runs a ptrace call on a thread that may have died under us (SIGKILL): ESRCH is not an error,
    /// its exit is reported by waitpid.
    func tolerateGone(_ body: () throws -> Void) {
        do { try body() } catch let e as SystemError where e.code == ESRCH {} catch {
            log.warning("\(error)")
        }
    }

    // MARK: syscalls the filter traps

    func handleSeccompEntry(_ t: Tracee) throws {
        let regs: Registers
        do { regs = try Sys.getRegisters(t.tid) } catch let e as SystemError where e.code == ESRCH { return }
        let nr = Int(regs.orig_rax)
        switch nr {
        case Syscall.mmap, Syscall.mremap, Syscall.brk:
            if t.sharesMemory { t.awaitingExit = nr }
        case Syscall.madvise:
            try madviseEntry(t, regs)
        case Syscall.processMadvise:
            try processMadviseEntry(t, regs)
        case Syscall.clone:
            t.cloneFlags = regs.rdi
        case Syscall.clone3:
            t.cloneFlags = try readProgramWord(at: regs.rdi, tid: t.tid)
        case Syscall.fork:
            t.cloneFlags = 0
        case Syscall.vfork:
            t.cloneFlags = CloneFlag.vm | CloneFlag.vfork
        default:
            break
        }
        if let flags = t.cloneFlags, t.sharesMemory, flags & CloneFlag.vm == 0 {
            // A fork copies PROG's page tables; the child runs unmanaged, so it must find every page present.
            try materializeAll()
        }
        resume(t)
    }

    func handleSyscallExit(_ t: Tracee) throws {
        guard let nr = t.awaitingExit else { resume(t); return }
        t.awaitingExit = nil
        let regs: Registers
        do { regs = try Sys.getRegisters(t.tid) } catch let e as SystemError where e.code == ESRCH { return }
        let ret = Int64(bitPattern: regs.rax)
        let failed = ret < 0 && ret > -4096
        switch nr {
        case Syscall.madvise, Syscall.processMadvise:
            discardExit(t, result: ret)
        case Syscall.execve:
            if !failed {
                if let source = pendingRestore {
                    pendingRestore = nil
                    try restoreAddressSpace(t, from: source)
                } else {
                    try setUpAddressSpace(t)
                }
            }
        case Syscall.mmap where !failed && t.sharesMemory:
            let flags = regs.r10
            let mapPrivate: UInt64 = 0x02, mapAnonymous: UInt64 = 0x20, mapGrowsDown: UInt64 = 0x100, mapHugeTLB: UInt64 = 0x40000
            if flags & 0x0f == mapPrivate && flags & mapAnonymous != 0 && flags & mapHugeTLB == 0 {
                let start = UInt64(bitPattern: ret)
                try manage(start: start, end: start + Page.alignUp(regs.rsi), growsDown: flags & mapGrowsDown != 0)
            }
        case Syscall.brk where t.sharesMemory:
            let newBrk = UInt64(bitPattern: ret)
            if mm.currentBrk != 0 && Page.alignUp(newBrk) > Page.alignUp(mm.currentBrk) {
                try manage(start: Page.alignUp(mm.currentBrk), end: Page.alignUp(newBrk), growsDown: false)
            }
            mm.currentBrk = newBrk
        case Syscall.mremap where !failed && t.sharesMemory:
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
        resume(t)
    }

    func handleCloneEvent(_ parent: Tracee, event: Int32) throws {
        let childTID = pid_t(truncatingIfNeeded: try Sys.eventMessage(parent.tid))
        let flags = parent.cloneFlags ?? (event == Sys.PtraceEvent.vfork.rawValue ? CloneFlag.vm | CloneFlag.vfork :
                                          event == Sys.PtraceEvent.clone.rawValue ? CloneFlag.vm | CloneFlag.thread : 0)
        parent.cloneFlags = nil
        let child = tracees[childTID] ?? Tracee(tid: childTID, tgid: childTID, sharesMemory: false, classified: false)
        tracees[childTID] = child
        child.tgid = flags & CloneFlag.thread != 0 ? parent.tgid : childTID
        child.sharesMemory = parent.sharesMemory && flags & CloneFlag.vm != 0
        child.classified = true
        if let st = child.parked, phase == .running {
            child.parked = nil
            try handleStop(child, st)
        }
        resume(parent)
    }

    func handleExec(_ t: Tracee) throws {
        let former = pid_t(truncatingIfNeeded: (try? Sys.eventMessage(t.tid)) ?? UInt64(t.tid))
        // Every other thread of the process is gone; the exec'ing thread now has the leader's tid.
        for (tid, other) in tracees where other.tgid == t.tgid && tid != t.tid { tracees[tid] = nil }
        if former != t.tid { tracees[former] = nil }
        t.awaitingExit = nil
        if t.tgid == mainPID {
            resetAddressSpace()
            t.sharesMemory = true
            t.awaitingExit = Syscall.execve
        } else {
            t.sharesMemory = false
        }
        resume(t)
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
