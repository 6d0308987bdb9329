import Glibc
import LegatoSystem

/// One thread the agent traces (every thread of PROG and of its descendants).
final class Tracee {
    let tid: pid_t
    var tgid: pid_t
    /// Runs in PROG's managed address space (a thread of PROG, or a vfork child before it execs).
    var sharesMemory: Bool
    /// Its parent's clone event has been seen, so `tgid` and `sharesMemory` are known.
    var classified: Bool
    /// A stop the agent holds (parked while freezing, or before classification).
    var parked: Sys.WaitStatus?
    /// The syscall whose exit stop we asked for (resumed with PTRACE_SYSCALL).
    var awaitingExit: Syscall?
    /// Clone flags read at the clone/clone3/fork/vfork entry stop, until the clone event.
    var cloneFlags: UInt64?
    /// In a group-stop (job control), kept there with PTRACE_LISTEN.
    var groupStopped = false
    /// We sent PTRACE_INTERRUPT and have not seen the resulting stop yet.
    var interruptSent = false
    /// A discard (madvise) marked at entry, committed or undone at its exit stop.
    var pendingDiscard: Agent.PendingDiscard?
    /// Signals to deliver when it is next resumed (arrived while we injected).
    var pendingSignals: [Int32] = []

    init(tid: pid_t, tgid: pid_t, sharesMemory: Bool, classified: Bool) {
        self.tid = tid
        self.tgid = tgid
        self.sharesMemory = sharesMemory
        self.classified = classified
    }
}
