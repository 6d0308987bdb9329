import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// Restoring the rest of a process tree, once PROG's own state is back and before anything runs:
/// each member is forked from its restored parent by an injected clone3 that asks for its pid
/// (set_tid), so parent/child links and pids are as they were, and is caught at its first stop.
/// Then, by injection into it, as for PROG: its parent's mappings go and its own come back (its
/// pages written at once), its mm fields with its executable, signal handlers, descriptors (those an
/// earlier process holds taken from there: TreeRestore), cwd, umask, limits, process group, its own
/// children, its threads, registers. It is managed like any process from then on.
extension Agent {
    /// A member of the tree restored and stopped, to be taken over and resumed with PROG.
    struct RestoredMember {
        let image: ProcessImage
        let leader: Tracee
        let threads: [Tracee]
        let space: AddressSpace
    }

    /// Restores every member whose parent is the restored process `parent` (injected into through
    /// `calls`), depth first, into `out`.
    func restoreChildren(of parent: ProcessImage, pid parentPID: pid_t, calls: RestoreCalls, scratch: UInt64,
                         _ source: RestoreSource, _ tree: TreeRestore, into out: inout [RestoredMember]) throws {
        for m in source.image.members ?? [] where m.links?.parent == parent.pid {
            try restoreMember(m, parentPID: parentPID, parentCalls: calls, scratch: scratch, source, tree, into: &out)
        }
        let zombies = parent.zombies ?? []
        for z in zombies { try restoreZombie(z, of: parent, parentPID: parentPID, parentCalls: calls, scratch: scratch) }
        // Their exits signalled the parent now; what it had pending at the checkpoint is queued after.
        let signals = Set(zombies.map { $0.exitSignal }.filter { $0 > 0 && $0 < 65 })
        if !signals.isEmpty {
            let set = signals.reduce(UInt64(0)) { $0 | 1 << UInt64($1 - 1) }
            let setAddress = try calls.args.bytes(withUnsafeBytes(of: set) { Array($0) })
            let noWait = try calls.args.bytes([UInt8](repeating: 0, count: 16))
            for _ in signals { _ = try calls.callResult(.rtSigtimedwait, setAddress, 0, noWait, 8) }
            calls.args.reset()
        }
    }

    /// Forks a child of the restored process `parentPID` (injected into through `parentCalls`) with
    /// the pid `pid` (clone3 set_tid) and `exitSignal`; returns it (as the agent sees it) at its
    /// first stop: it is auto-attached.
    private func forkChild(pid wanted: Int32, exitSignal: Int32, name: String, parentPID: pid_t, parentCalls: RestoreCalls) throws -> pid_t {
        let pidArray = try parentCalls.args.bytes(withUnsafeBytes(of: wanted) { Array($0) })
        let cloneArgs: [UInt64] = [0, 0, 0, 0, UInt64(exitSignal), 0, 0, 0, pidArray, 1, 0]
        let ptr = try parentCalls.args.bytes(cloneArgs.withUnsafeBytes { Array($0) })
        let got = try parentCalls.call("clone3 process \(wanted)", .clone3, ptr, UInt64(cloneArgs.count * 8))
        parentCalls.args.reset()
        guard got == Int64(wanted) else { throw RestoreError.processNotRestored(name: name, pid: wanted, "came back from clone3 as \(got)") }
        guard let pid = ProcFile.children(of: parentPID).first(where: { Sys.namespaceTID($0) == wanted }) else {
            throw RestoreError.processNotRestored(name: name, pid: wanted, "is not a child of pid \(Sys.namespaceTID(parentPID))")
        }
        while true {  // its first stop (auto-attached: a PTRACE_EVENT_STOP)
            guard let (_, st) = try Sys.wait(pid, nohang: false) else { throw RestoreError.processNotRestored(name: name, pid: wanted, "is not traced") }
            if st.exited || st.signaled { throw RestoreError.processNotRestored(name: name, pid: wanted, "died at birth") }
            if st.stopped { return pid }
        }
    }

    /// A child that had exited, its status not collected: forked with its pid, it exits at once as
    /// it did (exit_group with its code, or killed by its signal, without a core), and the agent
    /// lets its parent have it.
    private func restoreZombie(_ z: ProcessImage.Zombie, of parent: ProcessImage, parentPID: pid_t, parentCalls: RestoreCalls, scratch: UInt64) throws {
        let name = "\(parent.name) pid \(z.pid) (\(z.command), exited)"
        let pid = try forkChild(pid: z.pid, exitSignal: z.exitSignal, name: parent.name, parentPID: parentPID, parentCalls: parentCalls)
        let calls = try RestoreCalls(tid: pid, scratch: scratch, context: "restoring \(name)")
        let status = Sys.WaitStatus(raw: z.status)
        if status.exited {
            do {
                _ = try calls.call("exit_group(\(status.exitCode))", .exitGroup, UInt64(status.exitCode))
                throw RestoreError.processNotRestored(name: parent.name, pid: z.pid, "did not exit")
            } catch is Sys.InjectionTargetDied {}
        } else {
            let sig = status.terminationSignal
            try Sys.setResourceLimit(pid, 4, soft: 0, hard: 0)  // RLIMIT_CORE: it died without a core
            let act = try calls.args.bytes([UInt64](repeating: 0, count: 4).withUnsafeBytes { Array($0) })  // SIG_DFL
            _ = try calls.call("rt_sigaction(\(sig), SIG_DFL)", .rtSigaction, UInt64(sig), act, 0, 8)
            calls.args.reset()
            try calls.inj.cure()
            try Sys.setSignalMask(pid, 0)
            kill(pid, sig)
            try Sys.ptraceCont(pid)  // (it stays stopped until resumed: then the signal's stop comes)
            while true {
                guard let (_, st) = try Sys.wait(pid, nohang: false) else { break }
                if st.exited || st.signaled { break }
                try Sys.ptraceCont(pid, signal: st.stopped && st.event == 0 && st.stopSignal == sig ? sig : 0)
            }
        }
    }

    private func restoreMember(_ image: ProcessImage, parentPID: pid_t, parentCalls: RestoreCalls, scratch: UInt64,
                               _ source: RestoreSource, _ tree: TreeRestore, into out: inout [RestoredMember]) throws {
        guard let links = image.links else { throw RestoreError.processNotRestored(name: image.name, pid: image.pid, "has no place in the tree") }
        guard let leader = image.threads.first(where: { $0.tid == image.pid }) else {
            throw RestoreError.mainThreadMissing(name: image.name, epoch: image.epoch, pid: image.pid)
        }
        try checkFilesUnchanged(image, saved: source.image)
        // 1. A fork of its parent, with its pid.
        let pid = try forkChild(pid: image.pid, exitSignal: links.exitSignal, name: image.name, parentPID: parentPID, parentCalls: parentCalls)
        let space = AddressSpace(budget: budget, keys: keys)
        space.scratch = scratch
        spaces[pid] = space
        let t = Tracee(tid: pid, tgid: pid, space: space, classified: true)
        tracer.add(t)
        let calls = try RestoreCalls(tid: pid, scratch: scratch, context: "restoring \(image.name) pid \(image.pid)")

        // 2. Its parent's mappings go (but the scratch area), its own come back with their pages.
        //    First the rseq registration the fork copied: with its area unmapped, every return to
        //    user space would fault.
        if let r = try Sys.rseqConfiguration(pid) {
            _ = try calls.call("rseq unregister", .rseq, r.address, UInt64(r.size), 1, UInt64(r.signature))  // RSEQ_FLAG_UNREGISTER
        }
        for m in try ProcMaps.read(pid: pid) where m.start != scratch && m.path != "[vsyscall]" {
            _ = try calls.call("munmap \(describeRange(m.start, m.end - m.start))", .munmap, m.start, m.end - m.start)
        }
        var taken: [Int: Int64] = [:]  // shared objects' fds taken from PROG (closed with the fork's in step 5)
        for v in image.vmas {
            try restoreMapping(v, image, calls) { try self.objectDescriptor($0, calls, tree, prog: source.image.pid, member: true, taken: &taken) }
        }
        try restoreAioRings(image, calls)
        let own = RestoreSource(image: image, layers: TreePages.view(source.layers, member: image.pid, since: links.since))
        let backing = try placePages(pid, own)
        try writeUnmanagedPages(pid, backing.bindKeys(RegionTable()), backing)
        // 3. mm fields, with its own executable if the fork left another (a fork that did not
        //    exec keeps its parent's, which its own mappings map: the kernel refuses to replace it).
        if sameFile(image.exe, "/proc/\(pid)/exe") {
            try setMMFields(image, calls, exeFD: nil)
        } else {
            let exeFD = try calls.call("open \(image.exe)", .open, try calls.args.string(image.exe), UInt64(O_RDONLY | O_CLOEXEC), 0)
            calls.args.reset()
            try setMMFields(image, calls, exeFD: Int32(exeFD))
            _ = try calls.call("close", .close, UInt64(exeFD))
        }
        // 4. Signals blocked while it is rebuilt; its handlers (the fork left its parent's: every
        //    other signal goes back to its default), interval timers.
        let allSignals = try calls.args.bytes(withUnsafeBytes(of: UInt64.max) { Array($0) })
        _ = try calls.call("rt_sigprocmask(SIG_SETMASK, all)", .rtSigprocmask, 2, allSignals, 0, 8)
        calls.args.reset()
        let handled = Dictionary(image.sigactions.map { ($0.signal, $0) }, uniquingKeysWith: { a, _ in a })
        for sig in Int32(1)..<65 where sig != SIGKILL && sig != SIGSTOP {
            let a = handled[sig] ?? ProcessImage.SigAction(signal: sig, handler: 0, flags: 0, restorer: 0, mask: 0)
            let act = try calls.args.bytes([a.handler, a.flags, a.restorer, a.mask].withUnsafeBytes { Array($0) })
            _ = try calls.callResult(.rtSigaction, UInt64(sig), act, 0, 8)  // (a few signals refuse a handler: ignored)
            calls.args.reset()
        }
        try restoreIntervalTimers(image, calls)
        // 5. Its descriptors: none of what the fork copied stays; each comes from where it is now.
        _ = try calls.call("close_range(0, ~0)", .closeRange, 0, UInt64(UInt32.max), 0)
        try restoreFileDescriptors(image, calls, tree: tree, member: true)
        // 6. cwd, umask, limits, attributes, its process group.
        try restoreProcessSettings(image, pid: pid, calls)
        // A session of its own (setsid makes it the leader of a group of its own too); then its group.
        let leadsSession = links.session == image.pid
        if leadsSession {
            _ = try calls.call("setsid", .setsid)
            if let terminal = links.terminal { try takeTerminal(terminal, image, calls, tree) }
        }
        let parentGroup = ProcFile.statFields(parentPID).flatMap { pid_t($0[2]) }.map { Sys.namespaceTID($0) }
        if links.processGroup != 0 && links.processGroup != parentGroup && !(leadsSession && links.processGroup == image.pid) {
            _ = try calls.call("setpgid(0, \(links.processGroup))", .setpgid, 0, UInt64(links.processGroup == image.pid ? 0 : links.processGroup))
        }
        // 7. Its own children, then its threads and its own state.
        try restoreChildren(of: image, pid: pid, calls: calls, scratch: scratch, source, tree, into: &out)
        let others = try image.threads.filter { $0.tid != image.pid }.map { try restoreThread($0, image, calls, space: space) }
        try restorePosixTimers(image, calls)
        try restoreThreadState(leader, of: t, calls)
        try queuePendingSignals(image, calls)
        try calls.inj.cure()
        try setThreadRegisters(leader, of: t)
        out.append(RestoredMember(image: image, leader: t, threads: others, space: space))
    }

    /// Whether two paths name the same file (device and inode).
    private func sameFile(_ a: String, _ b: String) -> Bool {
        var sa = stat(), sb = stat()
        return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino
    }

    /// Closes the descriptors processes kept for others during a tree's restore (`calls` for PROG,
    /// injected afresh into each member).
    func closeParked(_ tree: TreeRestore, prog: ProcessImage, progCalls: RestoreCalls, members: [RestoredMember]) throws {
        for fd in tree.parked[prog.pid] ?? [] { _ = try progCalls.call("close kept fd \(fd)", .close, UInt64(fd)) }
        for m in members {
            guard let fds = tree.parked[m.image.pid], !fds.isEmpty else { continue }
            let calls = try RestoreCalls(tid: m.leader.tid, scratch: m.space.scratch, context: "restoring \(m.image.name) pid \(m.image.pid)")
            for fd in fds { _ = try calls.call("close kept fd \(fd)", .close, UInt64(fd)) }
            try calls.inj.cure()
        }
    }

    /// A restored member becomes a managed process: its userfaultfd, its mappings registered (its
    /// pages, written at once, count as resident and dirty), then it and its threads go on.
    func takeOver(_ m: RestoredMember) throws {
        try takeUserfaultfd(m.leader.tid, into: m.space)
        m.space.membarrierRegistrations = Set(m.image.membarrierRegistrations ?? [])
        m.space.aio = AioRings.contexts(of: m.image.aioRings)
        try manageExistingMappings(m.leader.tid, in: m.space)
        stats.addressSpaces += 1
    }
}
