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
    var awaitingExit: Int?
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

enum Syscall {
    static let mmap = 9
    static let brk = 12
    static let mremap = 25
    static let madvise = 28
    static let clone = 56
    static let fork = 57
    static let vfork = 58
    static let execve = 59
    static let close = 3
    static let munmap = 11
    static let userfaultfd = 323
    static let clone3 = 435
    static let pidfdOpen = 434
    static let processMadvise = 440
    static let getpid = 39

    /// The calls the seccomp filter sends to the agent.
    static let traced: [Int32] = [Int32(mmap), Int32(brk), Int32(mremap), Int32(madvise), Int32(clone), Int32(fork),
                                  Int32(vfork), Int32(clone3), Int32(processMadvise)]
}

enum CloneFlag {
    static let vm: UInt64 = 0x100
    static let vfork: UInt64 = 0x4000
    static let thread: UInt64 = 0x10000
}
