import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// Copy-on-write snapshots for checkpoints with many changed resident pages: instead of copying
/// them inside the pause, an injected clone (a fork: CLONE_PARENT so the reaper, not PROG, is its
/// parent; CLONE_FILES so it holds no extra references to PROG's files) keeps the frozen image in a
/// child that never runs (it is caught at its first stop). The commit thread reads the pages from
/// it while PROG runs on; the child is killed once the checkpoint is decided. The pause then costs
/// the page-table copy, not the page copy. (CheckpointStaging.dropSnapshot ends it.)
extension Agent {

    /// Forks the frozen PROG through `t`; returns the child's (global) pid, stopped and traced.
    func takeSnapshot(using t: Tracee) throws -> pid_t {
        // The fork's stops are seen between the event loop's polls (up to 1 ms apart: at 5 ms, a
        // fork of 1 GiB came back 5-10 ms late); meanwhile the loop reads the userfaultfd's fork
        // event, which the fork waits for.
        let inj = try Sys.Injection(tid: t.tid, stub: mm.scratch, whileWaiting: { [self] in try? pollOnce(reapStops: false, sleepMillis: 1) })
        let nsPID: Int64
        checkpointer?.staging.snapshotPending = true
        defer { checkpointer?.staging.snapshotPending = false }
        do {
            defer {
                tracer.tolerateGone { try inj.cure() }
                t.pendingSignals.append(contentsOf: inj.deferredSignals)
            }
            nsPID = try inj.syscall(.clone, 0x8000 | 0x400 | UInt64(SIGCHLD), 0, 0, 0, 0)  // clone(CLONE_PARENT|CLONE_FILES|SIGCHLD)
        }
        guard nsPID > 0 else { throw SystemError("fork a snapshot of pid \(mainPID)", code: Int32(-nsPID)) }
        // Its parent is the reaper; find its global pid among the reaper's children.
        let parent = program.reaperPID > 0 ? program.reaperPID : getpid()
        let children = (ProcFile.text("/proc/\(parent)/task/\(parent)/children") ?? "").split(separator: " ").compactMap { pid_t($0) }
        guard let child = children.first(where: { Sys.namespaceTID($0) == Int32(nsPID) }) else {
            throw CaptureError.snapshotNotFound(pid: mainPID, namespacePID: nsPID, parent: parent)
        }
        tracer.untracedChildren.insert(child)
        while true {  // its first stop (auto-attached: a PTRACE_EVENT_STOP)
            guard let (_, st) = try Sys.wait(child, nohang: false) else { throw CaptureError.snapshotNotTraced(child) }
            if st.exited || st.signaled { tracer.untracedChildren.remove(child); throw CaptureError.snapshotDied(child) }
            if st.stopped { break }
        }
        return child
    }
}
