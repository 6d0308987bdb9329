import Glibc
import LegatoSystem

/// PROG as launched: its pid and, in a PID namespace of its own, the namespace's reaper (pid 1 there)
/// with the descriptor that holds the reaper back.
struct ProgramProcess {
    private(set) var pid: pid_t = 0
    private(set) var reaperPID: pid_t = 0
    /// Closed to let the reaper exit once PROG has (not before a checkpoint in flight is decided:
    /// the reaper's exit kills its snapshot child).
    private var holdFD: Int32 = -1

    init() {}

    init(_ spawned: Sys.Spawned) {
        pid = spawned.pid
        reaperPID = spawned.reaperPID
        holdFD = spawned.holdFD
    }

    /// Lets the namespace's reaper exit once PROG has.
    mutating func releaseReaper() {
        if holdFD >= 0 { close(holdFD) }
        holdFD = -1
    }
}
