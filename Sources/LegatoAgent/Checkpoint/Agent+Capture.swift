import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// Taking a checkpoint: freeze, capture the context (ProcessCapture), stage every page changed since
/// the base (resident, buffered or remote), thaw.
extension Agent {
    /// Captures PROG and every process of its tree as checkpoint `epoch`, an increment of the
    /// checkpointer's base if it has one: pages and zero runs into its staging (other processes'
    /// tagged with their pid, TreePages), for the store once the tree runs again. The tree runs on
    /// whatever happens. If the checkpoint then does not commit, call forgetAllSaved().
    func capture(into checkpointer: Checkpointer, epoch: UInt64) throws -> CheckpointResult {
        // A tree that forks and execs all the time is often caught mid-exec: let it run a moment
        // and try again (nothing was staged yet when a transient refusal is thrown).
        var attempts = 0
        while true {
            do { return try captureOnce(into: checkpointer, epoch: epoch) } catch let e as CheckpointRefused where e.transient && attempts < 40 {
                attempts += 1
                let until = monotonicNanos() + 25_000_000
                try loop(until: { monotonicNanos() >= until })
            }
        }
    }

    private func captureOnce(into checkpointer: Checkpointer, epoch: UInt64) throws -> CheckpointResult {
        let name = checkpointer.name, staging = checkpointer.staging
        guard mm.isManaged, tracer.programStatus == nil else { throw CheckpointRefused(description: "the program is not running") }
        let tree = try treeProcesses()
        // smaps is slow to read: read it while the tree runs, and only check in the pause that it holds.
        let early = tree.map { MappingFlags.Reading(pid: $0.pid, tracedCalls: $0.space.tracedMemoryCalls) }
        try fetcher.drainAll()
        // Staging memory for what the pause will likely copy, faulted in while the tree still runs.
        staging.reset()
        try staging.prepare(pages: try expectedCopies(tree, parent: checkpointer.base))
        let started = monotonicNanos()
        var phases = PhaseTimer(since: started)
        try tracer.freeze(tree.map { $0.space }, serve: loop(until:))
        phases.mark("freeze")
        defer { tracer.thaw() }
        if tracer.programStatus != nil || fatalError != nil { throw CheckpointRefused(description: "the program ended during the checkpoint") }
        // The managed pages first, so a helper copies them while the contexts are captured (PauseCopies);
        // PROG's, when it takes a snapshot (which needs its mappings' flags), after its context.
        var pages = 0
        var frozenNodes = Set<Int>()
        let copies = PauseCopies()
        defer { copies.abandon() }
        for p in tree { try noteWrittenPages(p.space) }
        // A snapshot's fork copies PROG's page tables: it pays when many pages changed (Config.snapshotCopyRatio).
        let resident = residentPages(tree[0].space, parent: checkpointer.base)
        let progSnapshot = snapshotPays(changed: resident.changed, all: resident.all)
        for (k, p) in tree.enumerated() where !(k == 0 && progSnapshot) {
            pages += try stageManagedPages(p, parent: checkpointer.base, snapshot: false, notInSnapshot: AddressRanges([]),
                                           frozenNodes: &frozenNodes, copies: copies, into: staging)
        }
        copies.start()
        phases.mark("pages to copy")
        var images: [ProcessImage] = []
        var refusals: [CheckpointRefused] = []
        let treePIDs = Set(tree.map { $0.pid })
        let captures = tree.map { processCapture($0, tree: treePIDs) }
        // Each process's /proc side on a helper thread, while this one (ptrace's) does the rest.
        let reads = ProcessFileReads(captures, early: early, tracedCalls: tree.map { $0.space.tracedMemoryCalls }, aio: tree.map { $0.space.aio })
        defer { reads.wait() }
        let traced = tree.indices.map { k in Result { try captureTraced(tree[k], captures[k]) } }
        let files = reads.wait()
        for (k, p) in tree.enumerated() {
            do {
                images.append(try assembleContext(p, captures[k], traced: try traced[k].get(), files: try files[k].get(),
                                                  name: name, epoch: epoch, parent: checkpointer.base))
            } catch let e as CheckpointRefused where !tree.isEmpty {
                refusals.append(tree.count == 1 ? e : CheckpointRefused(description: "pid \(p.nsPID) (\(p.command)): \(e.description)", transient: e.transient))
            }
        }
        if !refusals.isEmpty {
            throw CheckpointRefused(description: refusals.map { $0.description }.joined(separator: "; "), transient: refusals.allSatisfy { $0.transient })
        }
        if tree.count > 1 { phases.mark("processes") }  // (then the tree's descriptors and shared objects)
        try TreeDescriptors.resolve(&images, pids: tree.map { $0.pid }, kept: config.keptDescriptors)
        try EventDescriptors.checkEpollSets(images, pids: tree.map { $0.pid })
        try UnixSocketDescriptors.checkPeers(images, kept: config.keptDescriptors)
        let objects = try SharedObjects.find(&images, pids: tree.map { $0.pid })
        defer { for o in objects { close(o.fd) } }
        let openFiles = try OpenFiles.find(images, pids: tree.map { $0.pid }, firstID: objects.count)
        defer { for f in openFiles.saved { close(f.fd) } }
        // A member checkpointed before (the same incarnation of its pid) keeps the epoch it started in.
        for k in images.indices.dropFirst() {
            let started = images[k].links?.startTime
            let before = checkpointer.baseMembers[images[k].pid].flatMap { $0.startTime == started ? $0.since : nil }
            images[k].links?.since = before ?? epoch
        }

        phases.mark(tree.count > 1 ? "descriptors" : "context")
        if progSnapshot {
            if let injector = tracer.injectableThread(in: tree[0].space) { staging.snapshot = try takeSnapshot(using: injector) }
            // A fork does not copy MADV_DONTFORK memory and zeroes MADV_WIPEONFORK memory: the snapshot
            // child cannot give those pages, so they are copied in the pause.
            let notInSnapshot = AddressRanges(images[0].vmas.filter { ($0.vmFlags ?? []).contains { $0 == "dc" || $0 == "wf" } }.map { $0.start..<$0.end })
            pages += try stageManagedPages(tree[0], parent: checkpointer.base, snapshot: staging.snapshot != nil, notInSnapshot: notInSnapshot,
                                           frozenNodes: &frozenNodes, copies: copies, into: staging)
            phases.mark(staging.snapshot != nil ? "PROG's snapshot" : "PROG's pages")
        }
        for (k, p) in tree.enumerated() { pages += try stageFileMappingPages(p, vmas: images[k].vmas, copies: copies, into: staging) }
        let copied = copies.pages
        try copies.finish()
        phases.mark("pages (\(copied) copied, from the freeze on, by two threads)")
        pages += try SharedObjects.stage(objects, into: staging)
        pages += try OpenFiles.stage(openFiles.saved, into: staging)
        // The memory nodes keep those pages as they are now until the commit thread has read them
        // (and, where the store has them retain checkpoints, every node keeps this one's versions).
        if checkpointer.retainsOnMemoryNodes { frozenNodes.formUnion(pool.liveNodes) }
        staging.frozenNodes = frozenNodes
        for node in frozenNodes.sorted() {
            try fetcher.drain(node: node)
            do { try pool.freeze(node: node) } catch let f as NodeFailure {
                // This checkpoint is refused; the node's death is dealt with as any other (its pages
                // recovered, or the run stops), and the next checkpoint goes without it.
                _ = memoryNodeUnreachable(node, why: f.underlying)
                throw f
            }
        }
        staging.frozenSource = frozenNodes.isEmpty ? nil : pool.frozenSource()
        for p in tree { for r in p.space.table.regions.regions { r.markAllSaved() } }  // undone by forgetAllSaved() if it does not commit
        phases.mark("files")

        var image = images[0]
        if images.count > 1 { image.members = Array(images.dropFirst()) }
        if !objects.isEmpty { image.sharedObjects = objects.map { $0.object } }
        if !openFiles.saved.isEmpty { image.openFiles = openFiles.saved.map { $0.file } }
        if !openFiles.tooLarge.isEmpty {
            let large = openFiles.tooLarge.map { "\($0.path) (\(formatBytes($0.size)))" }.joined(separator: ", ")
            log.info("checkpoint \(name) epoch \(epoch): \(openFiles.tooLarge.count) open file(s) too large to save with it (a restore finds them as they are then): \(large)")
        }
        let pause = monotonicNanos() - started
        log.info("checkpoint \(name) epoch \(epoch) pause: \(phases.description)\(tree.count > 1 ? " (\(tree.count) processes)" : "")")
        return CheckpointResult(epoch: epoch, parent: checkpointer.base, pauseNanos: pause, pages: pages, bytes: pages * Page.size,
                                snapshot: staging.snapshot != nil, image: image)
    }

    private func processCapture(_ p: TreeProcess, tree: Set<pid_t>) -> ProcessCapture {
        var context = ProcessCapture(pid: p.pid, scratch: p.space.scratch, agentOwnedFD: p.space.processMadvisePidfd, tracer: tracer,
                                     whileWaiting: { [self] in try? pollOnce(reapStops: false, sleepMillis: 5) })
        context.kept = config.keptDescriptors
        context.tree = tree
        return context
    }

    /// What of a frozen process only its tracer can read: threads' registers and state, and what
    /// injected calls ask (ProcessCapture.ProcessWide).
    private struct TracedState {
        var injector: Tracee
        var tracees: [Tracee]
        var threads: [ProcessImage.ThreadState]
        var wide: ProcessCapture.ProcessWide
        var pendingSignals: [Data]
        var seccompFilters: Result<[Data], Error>
    }

    private func captureTraced(_ p: TreeProcess, _ context: ProcessCapture) throws -> TracedState {
        guard let injector = tracer.injectableThread(in: p.space) else {
            throw CheckpointRefused(description: "no thread of the program is in a stop fit for injection; try again", transient: true)
        }
        let tracees = tracer.threads(in: p.space).filter { $0.tgid == p.pid }.sorted { $0.tid < $1.tid }
        return TracedState(injector: injector, tracees: tracees, threads: try tracees.map { try context.thread($0) },
                           wide: try context.processWide(using: injector),
                           pendingSignals: try Sys.pendingSignals(p.pid, shared: true).map { Data($0) },
                           seccompFilters: Result { try context.ownSeccompFilters(threads: tracees.map { $0.tid }) })
    }

    /// Everything of one frozen process but its pages, from what was read of it; refuses
    /// (CheckpointRefused) what cannot be restored.
    private func assembleContext(_ p: TreeProcess, _ context: ProcessCapture, traced: TracedState, files f: ProcessCapture.Files,
                                 name: String, epoch: UInt64, parent: UInt64?) throws -> ProcessImage {
        var refused = f.refused
        var fds = f.fds
        let signals = try context.descriptorSignals(using: traced.injector, fds.filter { $0.locks?.contains { $0.kind == .lease } == true }.map { $0.fd })
        for i in fds.indices { if let sig = signals[fds[i].fd] { fds[i].signal = sig } }
        var mmFields = f.mmFields
        mmFields.brk = traced.wide.brk
        var vmas = f.vmas
        for i in vmas.indices where vmas[i].vmFlags?.contains("gu") == true {
            vmas[i].guardRanges = try p.space.guardRanges(start: vmas[i].start, end: vmas[i].end)
        }
        let children = f.children
        if !children.refused.isEmpty {
            let refusal = "it has " + children.refused.joined(separator: ", ")
            if refused.isEmpty && children.passing { throw CheckpointRefused(description: refusal + "; try again", transient: true) }
            refused.append(refusal)
        }
        let filters: [Data]
        do { filters = try traced.seccompFilters.get() } catch let e as CheckpointRefused { refused.append(e.description); filters = [] }
        if !refused.isEmpty {
            throw CheckpointRefused(description: refused.joined(separator: "; ") + "; cannot checkpoint it yet")
        }
        let wide = traced.wide
        var image = ProcessImage(name: name, epoch: epoch, pid: p.nsPID, parentEpoch: parent, createdAt: Date().timeIntervalSince1970,
                                 exe: f.exe ?? config.program, cwd: f.cwd ?? "/",
                                 umask: f.umask, mm: mmFields, auxv: f.auxv, vmas: vmas, threads: traced.threads,
                                 sigactions: wide.sigactions, fds: fds, rlimits: f.resourceLimits, itimers: wide.itimers,
                                 pendingSignals: traced.pendingSignals, attributes: wide.attributes,
                                 membarrierRegistrations: p.space.membarrierRegistrations.sorted())
        if !wide.posixTimers.isEmpty { image.posixTimers = wide.posixTimers }
        if !f.aioRings.isEmpty { image.aioRings = f.aioRings }
        if !filters.isEmpty { image.seccompFilters = filters }
        if p.tag != 0 { image.links = p.links }
        if !children.zombies.isEmpty {
            image.zombies = children.zombies
        }
        return image
    }

    /// Whether PROG's `changed` resident pages, of `all`, go into a snapshot (Config.snapshotAbovePages, snapshotCopyRatio).
    private func snapshotPays(changed: Int, all: Int) -> Bool {
        changed >= config.snapshotAbovePages && (config.snapshotCopyRatio == 0 || changed * config.snapshotCopyRatio >= all)
    }

    /// About how many resident pages of `tree` a pause now would copy: those changed since `parent`
    /// (all if nil) and those written since (counted from the kernel's written bits, not cleared),
    /// but PROG's if they are enough for a snapshot.
    private func expectedCopies(_ tree: [TreeProcess], parent: UInt64?) throws -> Int {
        var n = 0
        for (k, p) in tree.enumerated() {
            let resident = residentPages(p.space, parent: parent)
            var changed = resident.changed
            if parent != nil {
                for r in p.space.table.regions.regions {
                    try p.space.scan(start: r.start, end: r.end, required: .written, writeProtect: false) { s, e, _ in changed += Int((e - s) >> Page.shift) }
                }
            }
            if k == 0 && snapshotPays(changed: changed, all: resident.all) { continue }
            n += changed
        }
        return n
    }

    /// Gets and clears the kernel's written bits of the process's managed pages: each page written
    /// since the last checkpoint is no longer saved (and stays dirty for eviction: its memory-node
    /// copy, if any, is older).
    private func noteWrittenPages(_ space: AddressSpace) throws {
        for r in space.table.regions.regions {
            try space.scan(start: r.start, end: r.end, required: .written, writeProtect: true) { s, e, _ in
                for k in r.index(of: s)..<r.index(of: e) {
                    r.remove(k, .saved)
                    r.insert(k, .dirty)
                }
            }
        }
    }

    /// Resident managed pages changed since `parent` (all of them if nil), once the written bits
    /// are noted, and all resident ones.
    private func residentPages(_ space: AddressSpace, parent: UInt64?) -> (changed: Int, all: Int) {
        var changed = 0, all = 0
        let resident = PageState.resident.rawValue, saved = PageState.saved.rawValue
        for r in space.table.regions.regions {
            for b in r.states where b & resident != 0 {
                all += 1
                if parent == nil || b & saved == 0 { changed += 1 }
            }
        }
        return (changed, all)
    }

    /// Stages the managed pages of one process changed since `parent` (all with content if nil),
    /// tagged with its pid unless it is PROG; returns how many. With `snapshot`, resident ones not in
    /// `notInSnapshot` are read later from the snapshot child; other resident ones are added to
    /// `copies`, whose destinations hold nothing until it has run.
    private func stageManagedPages(_ p: TreeProcess, parent: UInt64?, snapshot: Bool, notInSnapshot: AddressRanges,
                                   frozenNodes: inout Set<Int>, copies: PauseCopies, into staging: CheckpointStaging) throws -> Int {
        let space = p.space
        @inline(__always) func tagged(_ a: UInt64) -> UInt64 { TreePages.tagged(a, pid: p.tag) }
        // Each changed page by where its content is: resident (copied now, or read from the snapshot
        // later), local elsewhere (write-back buffer, restore backing: copied now), only on a memory
        // node (read later from the node's freeze), or nowhere (a zero run).
        func source(_ s: PageState) -> Int {
            if s.contains(.resident) { return 0 }
            if s.contains(.inFlight) || s.contains(.restoring) { return 1 }
            return s.contains(.remote) ? 2 : 3
        }
        var pages = 0
        for r in space.table.regions.regions {
            let states = r.states  // nothing below changes them
            var i = 0
            while i < r.pageCount {
                let s = PageState(rawValue: states[i])
                let from = source(s)
                guard parent == nil ? from != 3 : !s.contains(.saved) else { i += 1; continue }
                var n = 1
                while n < CheckpointStaging.runPages && i + n < r.pageCount {
                    let t = PageState(rawValue: states[i + n])
                    guard source(t) == from, parent == nil || !t.contains(.saved) else { break }
                    if from == 2 && !pool.sameLocation(r.key(at: i + n), r.key(at: i)) { break }
                    n += 1
                }
                switch from {
                case 0 where snapshot && !notInSnapshot.overlaps(r.address(at: i), n):
                    staging.addDeferred(r.address(at: i), n)
                case 2:
                    guard let node = pool.location(r.key(at: i)) else {
                        throw CaptureError.pageWithoutNode(address: r.address(at: i))
                    }
                    staging.addFrozen(node: node, address: tagged(r.address(at: i)), keys: (0..<n).map { r.key(at: i + $0) })
                    frozenNodes.insert(node)
                case 3:
                    staging.addZeros(tagged(r.address(at: i)), n)
                case 1:
                    try stageLocalElsewhere(r, i, n, pid: p.pid, tag: p.tag, into: staging)
                default:  // resident: copied by PauseCopies
                    copies.add(pid: p.pid, address: r.address(at: i), pages: n, into: try staging.reserve(tagged(r.address(at: i)), n))
                }
                if from != 3 { pages += n }
                i += n
            }
        }
        return pages
    }

    /// Stages the written pages of the process's private file mappings (every checkpoint holds all
    /// of them) into `copies`; returns how many.
    private func stageFileMappingPages(_ p: TreeProcess, vmas: [ProcessImage.VMA], copies: PauseCopies, into staging: CheckpointStaging) throws -> Int {
        var pages = 0
        for v in vmas where v.kind == .file {
            try p.space.scan(start: v.start, end: v.end, required: .present, absent: .file, writeProtect: false) { s, e, _ in
                var a = s
                while a < e {
                    let n = Int(min(UInt64(CheckpointStaging.runPages), (e - a) >> Page.shift))
                    copies.add(pid: p.pid, address: a, pages: n, into: try staging.reserve(TreePages.tagged(a, pid: p.tag), n))
                    pages += n
                    a += UInt64(n * Page.size)
                }
            }
        }
        return pages
    }

    /// A checkpoint that did not commit: every page counts as changed, the next checkpoint is full.
    func forgetAllSaved() {
        for s in spaces.values { for r in s.table.regions.regions { r.forgetSaved() } }
        checkpointer?.base = nil
    }

    /// Stages changed pages that are neither resident nor only remote: those of a write-back batch
    /// on its way are kept by reference to the batch (its bytes never change; the commit thread
    /// reads them after the thaw), the others (restore backing) are copied now.
    private func stageLocalElsewhere(_ r: Region, _ i: Int, _ n: Int, pid: pid_t, tag: Int32, into staging: CheckpointStaging) throws {
        var k = 0
        while k < n {
            if r.state(i + k).contains(.inFlight), let (b, index) = writeBack.location(of: r.key(at: i + k)) {
                var m = 1
                while k + m < n, r.state(i + k + m).contains(.inFlight), let next = writeBack.location(of: r.key(at: i + k + m)),
                      next.batch === b, next.index == index + m {
                    m += 1
                }
                staging.addBatchRun(address: TreePages.tagged(r.address(at: i + k), pid: tag), count: m, batch: b, index: index)
                k += m
                continue
            }
            var m = 1
            while k + m < n && !(r.state(i + k + m).contains(.inFlight) && writeBack.location(of: r.key(at: i + k + m)) != nil) { m += 1 }
            try readPagesForCheckpoint(r, i + k, m, pid: pid, into: try staging.reserve(TreePages.tagged(r.address(at: i + k), pid: tag), m))
            k += m
        }
    }

    /// The current content of managed pages r[i..<i+n] (all with content), wherever each lives:
    /// resident runs in one read each, buffered pages copied, remote ones in one fetch per node.
    private func readPagesForCheckpoint(_ r: Region, _ i: Int, _ n: Int, pid: pid_t, into dst: UnsafeMutableRawPointer) throws {
        var remote: [Int: [Int]] = [:]  // node -> offsets in the run
        var k = 0
        while k < n {
            let s = r.state(i + k)
            if s.contains(.resident) {
                var m = 1
                while k + m < n && r.state(i + k + m).contains(.resident) { m += 1 }
                try Sys.readProcessMemory(pid: pid, address: r.address(at: i + k), length: m * Page.size, into: dst + k * Page.size)
                k += m
                continue
            }
            let key = r.key(at: i + k)
            if s.contains(.inFlight), let page = writeBack.page(key: key) {
                memcpy(dst + k * Page.size, page, Page.size)
            } else if s.contains(.restoring), let backing = restore.backing, let loc = backing.location(key: key) {
                try backing.read(loc, into: dst + k * Page.size)
            } else {
                guard let node = pool.location(key) else { throw CaptureError.pageWithoutNode(address: r.address(at: i + k)) }
                remote[node, default: []].append(k)
            }
            k += 1
        }
        for (node, offsets) in remote {
            let keys = offsets.map { r.key(at: i + $0) }
            let tmp = UnsafeMutableRawPointer.allocate(byteCount: offsets.count * Page.size, alignment: Page.size)
            defer { tmp.deallocate() }
            let present = UnsafeMutablePointer<UInt8>.allocate(capacity: offsets.count)
            defer { present.deallocate() }
            try keys.withUnsafeBufferPointer { try pool.fetch(node: node, keys: $0, present: present, out: tmp) }
            for (j, off) in offsets.enumerated() { memcpy(dst + off * Page.size, tmp + j * Page.size, Page.size) }
        }
    }
}

/// A few address ranges, asked whether a run of pages touches any of them.
struct AddressRanges {
    let ranges: [Range<UInt64>]
    init(_ ranges: [Range<UInt64>]) { self.ranges = ranges }

    func overlaps(_ address: UInt64, _ pages: Int) -> Bool {
        let run = address..<address + UInt64(pages * Page.size)
        return ranges.contains { $0.overlaps(run) }
    }
}
