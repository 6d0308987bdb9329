import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// Restoring threads: each thread but the leader is recreated by an injected clone3 that asks for its
/// original tid (set_tid, in PROG's fresh PID namespace), is caught at its first stop (the agent traces
/// clones), gets its kernel-side registrations by injection, then its registers.
extension Agent {
    /// Recreates `thread` in the process `calls` injects into; returns it stopped, registers set.
    func restoreThread(_ thread: ProcessImage.ThreadState, _ image: ProcessImage, _ calls: RestoreCalls, space: AddressSpace? = nil) throws -> Tracee {
        let space = space ?? mm
        let pid = calls.tid
        // CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM, no stack: it never runs on
        // the injector's registers, it is stopped before returning to user space and gets its own.
        let flags: UInt64 = 0x100 | 0x200 | 0x400 | 0x800 | 0x10000 | 0x40000
        let tidArray = try calls.args.bytes(withUnsafeBytes(of: thread.tid) { Array($0) })
        let cloneArgs: [UInt64] = [flags, 0, 0, 0, 0, 0, 0, 0, tidArray, 1, 0]
        let ptr = try calls.args.bytes(cloneArgs.withUnsafeBytes { Array($0) })
        let got = try calls.call("clone3 thread \(thread.tid)", .clone3, ptr, UInt64(cloneArgs.count * 8))
        calls.args.reset()
        guard got == Int64(thread.tid) else { throw RestoreError.threadNotRestored(name: image.name, tid: thread.tid, "came back from clone3 as thread \(got)") }
        guard let global = globalTID(of: thread.tid, in: pid) else {
            throw RestoreError.threadNotRestored(name: image.name, tid: thread.tid, "is not in /proc/\(pid)/task")
        }
        // Its first stop (a PTRACE_EVENT_STOP: it was auto-attached).
        while true {
            guard let (_, st) = try Sys.wait(global, nohang: false) else {
                throw RestoreError.threadNotRestored(name: image.name, tid: thread.tid, "(tid \(global)) is not traced")
            }
            if st.exited || st.signaled { throw RestoreError.threadNotRestored(name: image.name, tid: thread.tid, "died at birth") }
            if st.stopped { break }
        }
        let t = Tracee(tid: global, tgid: pid, space: space, classified: true)
        tracer.add(t)
        let own = try RestoreCalls(tid: global, scratch: space.scratch, context: calls.context)
        try restoreThreadState(thread, of: t, own)
        try own.inj.cure()
        try setThreadRegisters(thread, of: t)
        return t
    }

    /// The thread's kernel-side registrations, injected into the thread itself.
    func restoreThreadState(_ thread: ProcessImage.ThreadState, of t: Tracee, _ calls: RestoreCalls) throws {
        _ = try calls.call("set_tid_address", .setTidAddress, thread.tidAddress)
        if thread.robustList != 0 { _ = try calls.call("set_robust_list", .setRobustList, thread.robustList, thread.robustListLength) }
        if let r = thread.rseq { _ = try calls.call("rseq", .rseq, r.address, UInt64(r.size), 0, UInt64(r.signature)) }
        if let ss = thread.sigaltstack, ss.count == 3, ss[1] & 0x2 == 0 {  // not SS_DISABLE
            let stack = try calls.args.bytes([ss[0], ss[1], ss[2]].withUnsafeBytes { Array($0) })
            _ = try calls.call("sigaltstack", .sigaltstack, stack, 0)
            calls.args.reset()
        }
        // The thread's own prctl settings (no_new_privs only ever goes on; each thread sets its own
        // after the others were created, so none inherits another's).
        if let sig = thread.parentDeathSignal { _ = try calls.call("prctl(PR_SET_PDEATHSIG, \(sig))", .prctl, 1, UInt64(sig)) }
        if let slack = thread.timerSlackNanos { _ = try calls.call("prctl(PR_SET_TIMERSLACK, \(slack))", .prctl, 29, slack) }
        if thread.noNewPrivileges == true { _ = try calls.call("prctl(PR_SET_NO_NEW_PRIVS)", .prctl, 38, 1, 0, 0, 0) }
        if let name = thread.name {
            _ = try calls.call("prctl(PR_SET_NAME, \(name))", .prctl, 15, try calls.args.string(String(decoding: name.utf8.prefix(15), as: UTF8.self)))
            calls.args.reset()
        }
    }

    /// Registers, FPU/SSE/AVX state and signal mask (after the injections into the thread are cured).
    func setThreadRegisters(_ thread: ProcessImage.ThreadState, of t: Tracee) throws {
        var regs = Registers(words: thread.registers)
        regs.orig_rax = UInt64.max  // no syscall restart at this stop: the registers say where to go
        try Sys.setRegisters(t.tid, regs)
        try Sys.setRegisterSet(t.tid, type: Sys.ntX86XState, [UInt8](thread.xstate))
        try Sys.setSignalMask(t.tid, thread.sigmask)
    }

    /// The global tid of the thread `nsTID` (an id in PROG's namespace) of process `pid`.
    func globalTID(of nsTID: Int32, in pid: pid_t) -> pid_t? {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? [] {
            if let g = pid_t(name), Sys.namespaceTID(g) == nsTID { return g }
        }
        return nil
    }
}
