import Glibc
import LegatoCore
import LegatoSystem

/// A process of the tree forks (a clone without CLONE_VM): the child is managed like its parent,
/// in an address space of its own, within the run's one budget.
///
///     entry stop (seccomp)   the parent's pages are where a child can share them: write-back
///                            batches acknowledged, a restore's pages back; one fork at a time
///                            per process (a second thread forking waits at its entry)
///     userfaultfd FORK event the kernel has copied the page tables and made a userfaultfd for the
///                            child's copy, still registered (UFFD_FEATURE_EVENT_FORK); the agent
///                            copies the page table: resident pages stay resident (shared
///                            copy-on-write by the kernel, counted for each process), remote ones
///                            keep reading the parent's copies, whose keys are now shared
///                            (SharedKeys), and both sides store under fresh keys from then on
///     ptrace fork event      names the child's pid: its address space is attached and polled
///     exit stop              a fork that failed after the copy leaves no address space behind
///
/// No remote page comes back into the parent for a fork, and the child's faults are served from
/// memory nodes like any. The parent's table is not evicted from while its fork is under way
/// (the kernel's copy and the agent's must see the same pages).
extension Agent {
    /// At the entry stop of a fork of `space`'s process by thread `t`.
    func forkEntry(_ t: Tracee, call: Syscall, in space: AddressSpace) throws {
        if let other = space.forkingThread, other != t.tid {
            // The fork event of the userfaultfd does not say whose fork it is: one at a time.
            t.cloneFlags = nil
            t.heldAtForkEntry = true
            return
        }
        space.forkingThread = t.tid
        t.awaitingExit = call
        // Batches on their way: the child could ask a node for a page before the node has it.
        while writeBack.sendingBatches > 0 && fatalError == nil { writeBack.waitForCompletions() }
        // Pages only the agent holds (a batch no node took, a restore not yet back) come in.
        try materialize([.inFlight, .restoring], in: space)
    }

    /// The userfaultfd of `h`'s address space reported a fork: the kernel made `fd` for the child's copy.
    func forked(_ h: FaultHandler, uffd fd: Int32) {
        guard let parent = managedSpaces.first(where: { $0.faults === h }), parent.forkingThread != nil, parent.forkedChild == nil else {
            // No fork of the program's own is under way: the agent's snapshot of a checkpoint, whose
            // copy never runs and is not managed. Closing the descriptor unregisters its mappings,
            // a walk of all of them while the snapshot lives (30 ms for a redis of 1 GiB, in the
            // pause), next to nothing once it is gone: so it is closed with the snapshot.
            if let staging = checkpointer?.staging, staging.snapshotPending { staging.snapshotUffds.append(fd) } else { close(fd) }
            return
        }
        let child = AddressSpace(budget: budget, keys: keys)
        child.table.copyForFork(of: parent.table) { sharedKeys.share($0) }
        parent.forkedChild = (child, fd)
    }

    /// The ptrace fork event of `t`: the child `pid` gets the address space made at the fork event.
    func forkedSpace(parent t: Tracee, child pid: pid_t) -> AddressSpace? {
        guard let parent = t.space, parent.forkingThread == t.tid else { return nil }
        parent.forkingThread = nil
        defer { tracer.releaseHeldForks(in: parent) }
        guard let (child, fd) = parent.forkedChild else {
            log.warning("pid \(parent.pid) forked pid \(pid) without a userfaultfd fork event: the child is not managed")
            return nil
        }
        parent.forkedChild = nil
        do {
            let uffd = Userfaultfd(fd: fd, pid: pid)
            try child.attachFork(pid: pid, uffd: uffd, faults: makeFaultHandler(uffd, table: child.table, pid: pid), parent: parent)
            try trimToChildMappings(child, pid: pid)
        } catch {
            fail("taking over pid \(pid), forked by pid \(parent.pid): \(error)")
            return nil
        }
        spaces[pid] = child
        stats.addressSpaces += 1
        stats.managedForks += 1
        log.debug("pid \(parent.pid) forked pid \(pid): \(child.table.regions.regions.count) regions, \(child.table.residentPages) pages resident, \(sharedKeys.count) remote copies shared")
        return child
    }

    /// The exit stop of a fork: if the kernel copied the address space but the fork failed after,
    /// the copy is gone (its shared keys are let go).
    func forkExit(_ t: Tracee, in space: AddressSpace) {
        guard space.forkingThread == t.tid else { return }
        space.forkingThread = nil
        dropForkedChild(of: space)
        tracer.releaseHeldForks(in: space)
    }

    /// A fork's copy that no process will run (the fork failed, or the parent is gone): its
    /// userfaultfd closed, its shared keys let go, its pages no longer counted.
    func dropForkedChild(of space: AddressSpace) {
        guard let (child, fd) = space.forkedChild else { return }
        space.forkedChild = nil
        close(fd)
        discardRemoteCopies(of: child.table.regions.regions)
        child.reset()
    }

    /// The child's mappings are the parent's but for MADV_DONTFORK ones (not copied) and
    /// MADV_WIPEONFORK ones (empty): its table is made to match.
    private func trimToChildMappings(_ child: AddressSpace, pid: pid_t) throws {
        guard child.usesForkAdvice else { return }
        let maps = try ProcMaps.read(pid: pid)
        let table = child.table
        // Regions without a mapping in the child (MADV_DONTFORK).
        for r in table.regions.regions where !maps.contains(where: { $0.start <= r.start && r.end <= $0.end }) {
            forget(table.regions.remove(start: r.start, end: r.end), in: child)
        }
        // MADV_WIPEONFORK mappings start empty in the child.
        let flags = MappingFlags.Reading(pid: pid, tracedCalls: 0).flags
        for m in maps where flags[m.start]?.contains("wf") == true {
            let parts = table.regions.remove(start: m.start, end: m.end)
            forget(parts, in: child)
            for p in parts { table.regions.insert(Region(start: p.start, end: p.end, keyBase: table.regions.allocateKeys(p.pageCount))) }
        }
    }
}
