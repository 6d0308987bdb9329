/// The x86-64 system calls Legato traps in a traced program or injects into one, by name
/// (their numbers are kernel ABI, arch/x86/entry/syscalls/syscall_64.tbl).
public enum Syscall: Int, CaseIterable, CustomStringConvertible, Sendable {
    case open = 2
    case close = 3
    case lseek = 8
    case mmap = 9
    case munmap = 11
    case brk = 12
    case rtSigaction = 13
    case rtSigprocmask = 14
    case mremap = 25
    case madvise = 28
    case getitimer = 36
    case setitimer = 38
    case getpid = 39
    case clone = 56
    case fork = 57
    case vfork = 58
    case execve = 59
    case fcntl = 72
    case flock = 73
    case chdir = 80
    case umask = 95
    case setpgid = 109
    case rtSigqueueinfo = 129
    case personality = 135
    case sigaltstack = 131
    case mlock = 149
    case munlock = 150
    case mlockall = 151
    case munlockall = 152
    case prctl = 157
    case archPrctl = 158
    case setTidAddress = 218
    case setRobustList = 273
    case dup3 = 292
    case pipe2 = 293
    case rtTgsigqueueinfo = 297
    case userfaultfd = 323
    case membarrier = 324
    case mlock2 = 325
    case rseq = 334
    case pidfdOpen = 434
    case clone3 = 435
    case closeRange = 436
    case pidfdGetfd = 438
    case processMadvise = 440
    case mseal = 462

    /// The name as in the kernel's table (`rt_sigaction`).
    public var description: String {
        switch self {
        case .open: return "open"
        case .close: return "close"
        case .lseek: return "lseek"
        case .mmap: return "mmap"
        case .munmap: return "munmap"
        case .brk: return "brk"
        case .rtSigaction: return "rt_sigaction"
        case .rtSigprocmask: return "rt_sigprocmask"
        case .mremap: return "mremap"
        case .madvise: return "madvise"
        case .getitimer: return "getitimer"
        case .setitimer: return "setitimer"
        case .getpid: return "getpid"
        case .clone: return "clone"
        case .fork: return "fork"
        case .vfork: return "vfork"
        case .execve: return "execve"
        case .fcntl: return "fcntl"
        case .flock: return "flock"
        case .chdir: return "chdir"
        case .umask: return "umask"
        case .setpgid: return "setpgid"
        case .rtSigqueueinfo: return "rt_sigqueueinfo"
        case .personality: return "personality"
        case .sigaltstack: return "sigaltstack"
        case .mlock: return "mlock"
        case .munlock: return "munlock"
        case .mlockall: return "mlockall"
        case .munlockall: return "munlockall"
        case .mlock2: return "mlock2"
        case .membarrier: return "membarrier"
        case .mseal: return "mseal"
        case .prctl: return "prctl"
        case .archPrctl: return "arch_prctl"
        case .setTidAddress: return "set_tid_address"
        case .setRobustList: return "set_robust_list"
        case .dup3: return "dup3"
        case .pipe2: return "pipe2"
        case .rtTgsigqueueinfo: return "rt_tgsigqueueinfo"
        case .userfaultfd: return "userfaultfd"
        case .rseq: return "rseq"
        case .pidfdOpen: return "pidfd_open"
        case .clone3: return "clone3"
        case .closeRange: return "close_range"
        case .pidfdGetfd: return "pidfd_getfd"
        case .processMadvise: return "process_madvise"
        }
    }
}
