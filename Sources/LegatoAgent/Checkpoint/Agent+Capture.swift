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
        let started = monotonicNanos()
        var phases = PhaseTimer(since: started)
        try tracer.freeze(tree.map { $0.space }, serve: loop(until:))
        phases.mark("freeze")
        defer { tracer.thaw() }
        if tracer.programStatus != nil || fatalError != nil { throw CheckpointRefused(description: "the program ended during the checkpoint") }
        var images: [ProcessImage] = []
        var refusals: [CheckpointRefused] = []
        let treePIDs = Set(tree.map { $0.pid })
        for (k, p) in tree.enumerated() {
            do {
                images.append(try captureContext(p, tree: treePIDs, early: early[k], name: name, epoch: epoch,
                                                 parent: checkpointer.base))
            } catch let e as CheckpointRefused where !tree.isEmpty {
                refusals.append(tree.count == 1 ? e : CheckpointRefused(description: "pid \(p.nsPID) (\(p.command)): \(e.description)", transient: e.transient))
            }
        }
        if !refusals.isEmpty {
            throw CheckpointRefused(description: refusals.map { $0.description }.joined(separator: "; "), transient: refusals.allSatisfy { $0.transient })
        }
        if tree.count > 1 { phases.mark("processes") }  // (then the tree's descriptors and shared objects)
        try TreeDescriptors.resolve(&images, pids: tree.map { $0.pid }, kept: config.keptDescriptors)
        let objects = try SharedObjects.find(&images, pids: tree.map { $0.pid })
        defer { for o in objects { close(o.fd) } }
        // A member checkpointed before (the same incarnation of its pid) keeps the epoch it started in.
        for k in images.indices.dropFirst() {
            let started = images[k].links?.startTime
            let before = checkpointer.baseMembers[images[k].pid].flatMap { $0.startTime == started ? $0.since : nil }
            images[k].links?.since = before ?? epoch
        }

        phases.mark(tree.count > 1 ? "descriptors" : "context")
        staging.reset()
        var pages = 0
        var frozenNodes = Set<Int>()
        let copies = PauseCopies()
        for (k, p) in tree.enumerated() {
            pages += try stagePages(p, vmas: images[k].vmas, parent: checkpointer.base, snapshotAllowed: k == 0,
                                    frozenNodes: &frozenNodes, copies: copies, into: staging)
            if k == 0 && tree.count > 1 { phases.mark(staging.snapshot != nil ? "PROG's snapshot" : "PROG's pages") }
        }
        let copied = copies.pages
        try copies.run()
        phases.mark(tree.count > 1 ? "pages (\(copied) copied by two threads)" : staging.snapshot != nil ? "snapshot+pages" : "pages")
        pages += try SharedObjects.stage(objects, into: staging)
        // The memory nodes keep those pages as they are now until the commit thread has read them
        // (and, where the store has them retain checkpoints, every node keeps this one's versions).
        if checkpointer.retainsOnMemoryNodes { frozenNodes.formUnion(pool.liveNodes) }
        staging.frozenNodes = frozenNodes
        for node in frozenNodes.sorted() {
            try fetcher.drain(node: node)
            try pool.freeze(node: node)
        }
        staging.frozenSource = frozenNodes.isEmpty ? nil : pool.frozenSource()
        for p in tree { for r in p.space.table.regions.regions { r.markAllSaved() } }  // undone by forgetAllSaved() if it does not commit
        phases.mark("files")

        var image = images[0]
        if images.count > 1 { image.members = Array(images.dropFirst()) }
        if !objects.isEmpty { image.sharedObjects = objects.map { $0.object } }
        let pause = monotonicNanos() - started
        log.info("checkpoint \(name) epoch \(epoch) pause: \(phases.description)\(tree.count > 1 ? " (\(tree.count) processes)" : "")")
        return CheckpointResult(epoch: epoch, parent: checkpointer.base, pauseNanos: pause, pages: pages, bytes: pages * Page.size,
                                snapshot: staging.snapshot != nil, image: image)
    }

    /// Everything of one frozen process but its pages; refuses (CheckpointRefused) what cannot be restored.
    private func captureContext(_ p: TreeProcess, tree: Set<pid_t>, early: MappingFlags.Reading, name: String, epoch: UInt64, parent: UInt64?) throws -> ProcessImage {
        let pid = p.pid, space = p.space
        guard let injector = tracer.injectableThread(in: space) else {
            throw CheckpointRefused(description: "no thread of the program is in a stop fit for injection; try again", transient: true)
        }
        var context = ProcessCapture(pid: pid, scratch: space.scratch, agentOwnedFD: space.processMadvisePidfd, tracer: tracer,
                                     whileWaiting: { [self] in try? pollOnce(reapStops: false, sleepMillis: 5) })
        context.kept = config.keptDescriptors
        context.tree = tree
        var refused: [String] = []
        var fds: [ProcessImage.FileDescriptor] = []
        do { fds = try context.fileDescriptors() } catch let e as CheckpointRefused { refused.append(e.description) }
        let tracees = tracer.threads(in: space).filter { $0.tgid == pid }.sorted { $0.tid < $1.tid }
        let threads = try tracees.map { try context.thread($0) }
        let wide = try context.processWide(using: injector, signalsOf: fds.filter { $0.locks?.contains { $0.kind == .lease } == true }.map { $0.fd })
        for i in fds.indices { if let sig = wide.descriptorSignals[fds[i].fd] { fds[i].signal = sig } }
        var mmFields = try context.mmFields()
        mmFields.brk = wide.brk
        var vmas: [ProcessImage.VMA] = []
        do { vmas = try context.mappings(early: early, tracedCalls: space.tracedMemoryCalls) } catch let e as CheckpointRefused { refused.append(e.description) }
        for i in vmas.indices where vmas[i].vmFlags?.contains("gu") == true {
            vmas[i].guardRanges = try space.guardRanges(start: vmas[i].start, end: vmas[i].end)
        }
        let aio = try AioRings.capture(vmas, pid: pid, contexts: space.aio)
        refused += aio.refused
        let children = context.childrenOutsideTree()
        if !children.refused.isEmpty {
            let refusal = "it has " + children.refused.joined(separator: ", ")
            if refused.isEmpty && children.passing { throw CheckpointRefused(description: refusal + "; try again", transient: true) }
            refused.append(refusal)
        }
        if !refused.isEmpty {
            throw CheckpointRefused(description: refused.joined(separator: "; ") + "; cannot checkpoint it yet")
        }
        var image = ProcessImage(name: name, epoch: epoch, pid: p.nsPID, parentEpoch: parent, createdAt: Date().timeIntervalSince1970,
                                 exe: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")) ?? config.program,
                                 cwd: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/cwd")) ?? "/",
                                 umask: context.umask(), mm: mmFields, auxv: context.auxv(), vmas: vmas, threads: threads,
                                 sigactions: wide.sigactions, fds: fds, rlimits: context.resourceLimits(), itimers: wide.itimers,
                                 pendingSignals: try Sys.pendingSignals(pid, shared: true).map { Data($0) }, attributes: wide.attributes,
                                 membarrierRegistrations: space.membarrierRegistrations.sorted())
        if !wide.posixTimers.isEmpty { image.posixTimers = wide.posixTimers }
        if !aio.rings.isEmpty { image.aioRings = aio.rings }
        let filters = try context.ownSeccompFilters(threads: tracees.map { $0.tid })
        if !filters.isEmpty { image.seccompFilters = filters }
        if p.tag != 0 { image.links = p.links }
        if !children.zombies.isEmpty {
            image.zombies = children.zombies
        }
        return image
    }

    /// Stages the pages of one process changed since `parent` (all with content if nil), tagged
    /// with its pid unless it is PROG; returns how many. PROG's many changed resident pages may go
    /// into a copy-on-write snapshot (`snapshotAllowed`); other resident ones are added to `copies`,
    /// whose destinations hold nothing until the caller runs it.
    private func stagePages(_ p: TreeProcess, vmas: [ProcessImage.VMA], parent: UInt64?, snapshotAllowed: Bool,
                            frozenNodes: inout Set<Int>, copies: PauseCopies, into staging: CheckpointStaging) throws -> Int {
        let space = p.space
        @inline(__always) func tagged(_ a: UInt64) -> UInt64 { TreePages.tagged(a, pid: p.tag) }
        // Pages written since the last checkpoint: get-and-clear the kernel's written bits (the pages
        // stay dirty for eviction: their memory-node copy, if any, is older).
        for r in space.table.regions.regions {
            try space.scan(start: r.start, end: r.end, required: .written, writeProtect: true) { s, e, _ in
                for k in r.index(of: s)..<r.index(of: e) {
                    r.remove(k, .saved)
                    r.insert(k, .dirty)
                }
            }
        }
        // Managed pages: all with content (full), or those changed since the base (incremental, where
        // a changed page without content is a zero run). Then the written pages of file mappings.
        var pages = 0
        // Many changed resident pages: keep them in a copy-on-write snapshot rather than copy them now.
        // (The walks below read each region's states from a local copy: nothing in them changes any.)
        var changedResident = 0
        let resident = PageState.resident.rawValue, saved = PageState.saved.rawValue
        for r in space.table.regions.regions {
            let states = r.states
            for b in states where b & resident != 0 && (parent == nil || b & saved == 0) { changedResident += 1 }
        }
        if snapshotAllowed && changedResident >= config.snapshotAbovePages, let injector = tracer.injectableThread(in: space) {
            staging.snapshot = try takeSnapshot(using: injector)
        }
        // Each changed page by where its content is: resident (copied now, or read from the snapshot
        // later), local elsewhere (write-back buffer, restore backing: copied now), only on a memory
        // node (read later from the node's freeze), or nowhere (a zero run).
        func source(_ s: PageState) -> Int {
            if s.contains(.resident) { return 0 }
            if s.contains(.inFlight) || s.contains(.restoring) { return 1 }
            return s.contains(.remote) ? 2 : 3
        }
        // A fork does not copy MADV_DONTFORK memory and zeroes MADV_WIPEONFORK memory: the snapshot
        // child cannot give those pages, so they are copied in the pause.
        let notInSnapshot = AddressRanges(vmas.filter { ($0.vmFlags ?? []).contains { $0 == "dc" || $0 == "wf" } }.map { $0.start..<$0.end })
        let snapshot = snapshotAllowed && staging.snapshot != nil
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
                default:  // resident: copied once every process is staged (PauseCopies)
                    copies.add(pid: p.pid, address: r.address(at: i), pages: n, into: try staging.reserve(tagged(r.address(at: i)), n))
                }
                if from != 3 { pages += n }
                i += n
            }
        }
        for v in vmas where v.kind == .file {
            try space.scan(start: v.start, end: v.end, required: .present, absent: .file, writeProtect: false) { s, e, _ in
                var a = s
                while a < e {
                    let n = Int(min(UInt64(CheckpointStaging.runPages), (e - a) >> Page.shift))
                    copies.add(pid: p.pid, address: a, pages: n, into: try staging.reserve(tagged(a), n))
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
