import Glibc
import LegatoCore
import LegatoSystem

/// What the agent does when a traced thread stops for a reason that concerns memory; the tracer
/// resumes the thread afterwards.
protocol TraceEvents: AnyObject {
    /// A seccomp stop at the entry of a filtered call (`Syscall.traced`). Setting `t.awaitingExit`
    /// asks for the call's exit stop.
    func syscallEntry(_ t: Tracee) throws
    /// The exit stop of `call`, asked for at its entry.
    func syscallExit(_ t: Tracee, call: Syscall) throws
    /// `t` exec'd (the other threads of its process are gone): its process has a new address space.
    func execed(_ t: Tracee)
    /// `parent` forked a process (a clone without CLONE_VM): the child's address space, if managed.
    func forkedSpace(parent: Tracee, child: pid_t) -> AddressSpace?
    /// The last thread in `space` is gone (its process exited, or exec'd into a new one).
    func spaceEnded(_ space: AddressSpace)
}

/// Every thread the agent traces, and their stops: ptrace events, syscall stops, signals, job
/// control, exits; and freezing all threads of one address space (for an eviction or a checkpoint)
/// and thawing them.
///
/// Contract: one thread (the event loop's, which ptrace binds the tracees to) calls everything.
/// Every signal is passed on as a plain run would get it; a group stop is kept with PTRACE_LISTEN.
/// While frozen, stops fit for injection are held (`parked`); other stops are handled, and the
/// thread interrupted again.
final class Tracer {
    private(set) var mainPID: pid_t = 0
    private(set) var tracees: [pid_t: Tracee] = [:]
    /// PROG's exit (or death) status, once it has ended.
    private(set) var programStatus: Sys.WaitStatus?
    /// Children of the agent that are not traced (checkpoint snapshots), reaped as they die.
    var untracedChildren = Set<pid_t>()
    /// The address space whose threads are being (or have been) stopped.
    /// The address spaces whose threads are being (or have been) stopped: one for an eviction,
    /// every one of the tree for a checkpoint.
    private(set) var frozenSpaces: [AddressSpace] = [] {
        didSet { for s in (frozenSpaces.isEmpty ? oldValue : frozenSpaces) { onFreezingChange(s, !frozenSpaces.isEmpty) } }
    }
    var freezing: Bool { !frozenSpaces.isEmpty }

    /// `t` runs in a frozen address space.
    @inline(__always) func isFrozen(_ t: Tracee) -> Bool {
        guard let s = t.space, !frozenSpaces.isEmpty else { return false }
        return frozenSpaces.contains { $0 === s }
    }
    var onFreezingChange: (AddressSpace, Bool) -> Void = { _, _ in }
    /// True once the run is stopping: a freeze does not wait for threads then.
    var isStopping: () -> Bool = { false }
    weak var events: TraceEvents?
    private let log: Logger

    init(log: Logger) { self.log = log }

    /// PROG, seized by the launcher, is the first tracee; `space` is what its exec makes.
    func adopt(program pid: pid_t, space: AddressSpace) {
        mainPID = pid
        tracees[pid] = Tracee(tid: pid, tgid: pid, space: space, classified: true)
    }

    /// A thread the agent made itself (a restored thread).
    func add(_ t: Tracee) { tracees[t.tid] = t }

    /// The threads of PROG's process, in tid order.
    var programThreads: [Tracee] {
        tracees.values.filter { $0.tgid == mainPID }.sorted { $0.tid < $1.tid }
    }

    /// The threads running in `space`.
    func threads(in space: AddressSpace) -> [Tracee] { tracees.values.filter { $0.space === space } }

    /// A frozen thread of `space` in a stop where a syscall can be injected.
    func injectableThread(in space: AddressSpace) -> Tracee? {
        tracees.values.first { $0.space === space && Tracer.isInjectable($0.parked) }
    }

    /// Collects every pending ptrace stop and exit (until `isStopping`).
    func reapStops() throws {
        while let (pid, status) = try Sys.wait(-1, nohang: true) {
            try handleWait(pid, status)
            if isStopping() { return }
        }
    }

    func handleWait(_ tid: pid_t, _ status: Sys.WaitStatus) throws {
        if untracedChildren.contains(tid) {
            if status.exited || status.signaled { untracedChildren.remove(tid) }
            return
        }
        guard let t = tracees[tid] else {
            if status.stopped {
                // A new thread or child reported its first stop before its parent's clone event.
                let t = Tracee(tid: tid, tgid: tid, space: nil, classified: false)
                t.parked = status
                tracees[tid] = t
            }
            return
        }
        if status.exited || status.signaled {
            tracees[tid] = nil
            if tid == mainPID { programStatus = status }
            if let s = t.space, !tracees.values.contains(where: { $0.space === s }) { events?.spaceEnded(s) }
            return
        }
        guard status.stopped else { return }
        // Any ptrace stop consumes a pending PTRACE_INTERRUPT (the kernel clears the STOP trap).
        t.interruptSent = false
        // While freezing, only stops fit for injection are held; a syscall or event stop is handled,
        // and the thread resumed and interrupted again.
        if !t.classified || (isFrozen(t) && Tracer.isInjectable(status)) {
            t.parked = status
            return
        }
        try handleStop(t, status)
        if t.parked == nil && isFrozen(t) && tracees[tid] != nil {
            t.interruptSent = true
            tolerateGone { try Sys.ptraceInterrupt(tid) }
        }
    }

    /// Acts on one stop and resumes the tracee (or leaves it in group-stop).
    func handleStop(_ t: Tracee, _ status: Sys.WaitStatus) throws {
        let sig = status.stopSignal
        if status.event == Sys.PtraceEvent.stop.rawValue || (status.event == 0 && sig != (SIGTRAP | 0x80)) { noteRestart(t) }
        switch status.event {
        case Sys.PtraceEvent.seccomp.rawValue:
            t.heldAtForkEntry = false
            try events?.syscallEntry(t)
            if t.heldAtForkEntry {
                t.parked = status
                return
            }
            resume(t)
        case Sys.PtraceEvent.clone.rawValue, Sys.PtraceEvent.fork.rawValue, Sys.PtraceEvent.vfork.rawValue:
            try handleCloneEvent(t, event: status.event)
        case Sys.PtraceEvent.exec.rawValue:
            handleExec(t)
        case Sys.PtraceEvent.stop.rawValue:
            if sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU {
                t.groupStopped = true
                tolerateGone { try Sys.ptraceListen(t.tid) }
            } else {
                resume(t)
            }
        case 0 where sig == (SIGTRAP | 0x80):
            if let call = t.awaitingExit {
                t.awaitingExit = nil
                try events?.syscallExit(t, call: call)
            }
            resume(t)
        case 0:
            if sig == SIGCONT { t.groupStopped = false }
            resume(t, signal: sig)
        default:
            resume(t)
        }
    }

    /// At a signal or interrupt stop: a sleep interrupted with ERESTART_RESTARTBLOCK is noted, as
    /// the kernel goes on with it as restart_syscall once the thread is resumed.
    private func noteRestart(_ t: Tracee) {
        guard let regs = try? Sys.getRegisters(t.tid), Int64(bitPattern: regs.rax) == -516 else { return }  // ERESTART_RESTARTBLOCK
        if regs.orig_rax != 219 && Int64(bitPattern: regs.orig_rax) >= 0 { t.restartingCall = regs.orig_rax }
    }

    /// Resumes a tracee, to its syscall-exit stop if we are waiting for one, with the signals that
    /// arrived while the agent injected into it.
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

    private func handleCloneEvent(_ parent: Tracee, event: Int32) throws {
        let childTID = pid_t(truncatingIfNeeded: try Sys.eventMessage(parent.tid))
        let flags = parent.cloneFlags ?? (event == Sys.PtraceEvent.vfork.rawValue ? CloneFlag.vm | CloneFlag.vfork :
                                          event == Sys.PtraceEvent.clone.rawValue ? CloneFlag.vm | CloneFlag.thread : 0)
        parent.cloneFlags = nil
        let child = tracees[childTID] ?? Tracee(tid: childTID, tgid: childTID, space: nil, classified: false)
        tracees[childTID] = child
        child.tgid = flags & CloneFlag.thread != 0 ? parent.tgid : childTID
        child.space = flags & CloneFlag.vm != 0 ? parent.space : events?.forkedSpace(parent: parent, child: childTID)
        child.classified = true
        if let st = child.parked, !isFrozen(child) {
            child.parked = nil
            try handleStop(child, st)
        }
        resume(parent)
    }

    private func handleExec(_ t: Tracee) {
        let former = pid_t(truncatingIfNeeded: (try? Sys.eventMessage(t.tid)) ?? UInt64(t.tid))
        // Every other thread of the process is gone; the exec'ing thread now has the leader's tid.
        for (tid, other) in tracees where other.tgid == t.tgid && tid != t.tid { tracees[tid] = nil }
        if former != t.tid { tracees[former] = nil }
        t.awaitingExit = nil
        let old = t.space
        events?.execed(t)
        if let old, old !== t.space, !tracees.values.contains(where: { $0.space === old }) { events?.spaceEnded(old) }
        resume(t)
    }

    /// A stop in which a syscall can be injected: an interrupt/group stop or a signal-delivery stop,
    /// not a syscall or ptrace-event stop inside a system call.
    static func isInjectable(_ st: Sys.WaitStatus?) -> Bool {
        guard let st else { return false }
        if st.event == Sys.PtraceEvent.stop.rawValue { return true }
        return st.event == 0 && st.stopSignal != (SIGTRAP | 0x80)
    }

    // MARK: freeze and thaw

    /// Interrupts every thread in `space`; `serve(until:)` (the event loop) serves faults and stops
    /// until all are held, PROG (or the process of `space`) has ended or the run is stopping.
    func freeze(_ space: AddressSpace, serve: (_ until: () -> Bool) throws -> Void) throws {
        try freeze([space], serve: serve)
    }

    /// Interrupts every thread in each of `spaces` (a checkpoint's: the whole tree), as `freeze`.
    func freeze(_ spaces: [AddressSpace], serve: (_ until: () -> Bool) throws -> Void) throws {
        precondition(frozenSpaces.isEmpty, "one freeze at a time")
        frozenSpaces = spaces
        for t in tracees.values where isFrozen(t) && t.parked == nil && !t.interruptSent {
            t.interruptSent = true
            tolerateGone { try Sys.ptraceInterrupt(t.tid) }
        }
        try serve { [self] in
            programStatus != nil || isStopping() || tracees.values.allSatisfy { !isFrozen($0) || $0.parked != nil }
        }
    }

    /// Lets every held thread go on (acting on the stop it reported while frozen).
    func thaw() {
        frozenSpaces = []
        for tid in tracees.keys.sorted() {
            guard let t = tracees[tid], t.classified, let st = t.parked else { continue }
            t.parked = nil
            do { try handleStop(t, st) } catch { log.warning("resuming tid \(tid): \(error)") }
        }
    }

    /// Lets the threads of `space` held at a fork's entry go on (the fork before them is done); those
    /// of a frozen space go on at the thaw.
    func releaseHeldForks(in space: AddressSpace) {
        guard !frozenSpaces.contains(where: { $0 === space }) else { return }
        for tid in tracees.keys.sorted() {
            guard let t = tracees[tid], t.space === space, t.heldAtForkEntry, let st = t.parked else { continue }
            t.parked = nil
            t.heldAtForkEntry = false
            do { try handleStop(t, st) } catch { log.warning("resuming tid \(tid): \(error)") }
            if space.forkingThread != nil { return }  // it forks now: the others wait for it
        }
    }

    // MARK: the end

    /// Kills every tracee but PROG's main thread and every untraced child, and reaps them all, in
    /// whatever order they die (a leader is reported only after its other threads are reaped;
    /// the namespace's PID 1 cannot finish exiting while one of them is an unreaped zombie).
    func killAndReapAll() {
        for (tid, _) in tracees where tid != mainPID { kill(tid, SIGKILL) }
        for pid in untracedChildren { kill(pid, SIGKILL) }
        var pending = Set(tracees.keys).union(untracedChildren)
        untracedChildren.removeAll()
        let deadline = monotonicNanos() + 10_000_000_000
        while !pending.isEmpty && monotonicNanos() < deadline {
            if let (pid, st) = try? Sys.wait(-1, nohang: true) {
                if st.exited || st.signaled { pending.remove(pid) }
                continue
            }
            pending = pending.filter { access("/proc/\($0)", F_OK) == 0 }
            usleep(1000)
        }
        tracees.removeAll()
    }
}
