import LegatoSystem

extension Syscall {
    /// The calls the seccomp filter sends to the agent (their entry stops; see Agent+Tracing).
    static let traced: [Syscall] = [.mmap, .brk, .mremap, .madvise, .clone, .fork, .vfork, .clone3, .processMadvise,
                                    // change mappings' flags without changing /proc/PID/maps (MappingFlags.Reading)
                                    .mlock, .munlock, .mlockall, .munlockall, .mlock2, .mseal,
                                    // registrations a restore must make again
                                    .membarrier,
                                    // aio requests, counted so a checkpoint knows none is in flight (AioContexts)
                                    .ioSetup, .ioSubmit, .ioGetevents, .ioPgetevents, .ioDestroy]
}

/// clone(2) flags the tracer reads to tell a thread from a process.
enum CloneFlag {
    static let vm: UInt64 = 0x100
    static let vfork: UInt64 = 0x4000
    static let thread: UInt64 = 0x10000
}
