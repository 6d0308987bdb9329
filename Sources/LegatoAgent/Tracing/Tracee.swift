import Glibc
import LegatoSystem

/// One thread the agent traces (every thread of PROG and of its descendants).
final class Tracee {
    let tid: pid_t
    var tgid: pid_t
    /// The address space it runs in: its process's, or its parent's for a vfork child until it
    /// execs (nil: none the agent manages).
    var space: AddressSpace?
    /// Its parent's clone event has been seen, so `tgid` and `space` are known.
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
    /// Held at the entry of a fork while another thread of its process forks (`parked` keeps the stop).
    var heldAtForkEntry = false
    /// The syscall (poll, nanosleep, clock_nanosleep, futex) a restart block goes on with, seen at
    /// the stop that interrupted it (rax -ERESTART_RESTARTBLOCK): from there the kernel runs it as
    /// restart_syscall, whose registers no longer say which (ProcessCapture.restartedCall).
    var restartingCall: UInt64?

    init(tid: pid_t, tgid: pid_t, space: AddressSpace?, classified: Bool) {
        self.tid = tid
        self.tgid = tgid
        self.space = space
        self.classified = classified
    }
}
