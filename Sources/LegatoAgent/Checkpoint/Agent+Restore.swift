import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// Restoring: the checkpoint's executable is started (traced, in a fresh PID namespace, so PROG is
/// PID 2 again) and stopped right after its exec. Through injected syscalls its address space is
/// replaced by the checkpoint's — every mapping at its original address, the vDSO moved to where it
/// was, the file mappings' written pages, the mm fields, signal handlers, files, cwd, umask, limits, the
/// thread's rseq/robust-list/tid-address — and the registers are set. Then the agent takes its
/// userfaultfd as after any exec, and PROG goes on from the checkpoint while its anonymous memory
/// comes back lazily (RestoreBacking: faults first, a background fill for the rest).
extension Agent {
    func restoreAddressSpace(_ t: Tracee, from source: RestoreSource) throws {
        let pid = t.tid
        let image = source.image
        guard let leader = image.threads.first(where: { $0.tid == image.pid }) else {
            throw RestoreError.mainThreadMissing(name: image.name, epoch: image.epoch, pid: image.pid)
        }
        let restoredPID = Sys.namespaceTID(pid)
        guard restoredPID == image.pid else {
            throw RestoreError.pidMismatch(name: image.name, epoch: image.epoch, checkpointed: image.pid, restored: restoredPID)
        }
        let putBack = try putOpenFilesBack(image, from: source)
        if !putBack.isEmpty {
            log.info("restore: \(putBack.count) file(s) put back as they were at checkpoint \(image.epoch): \(putBack.joined(separator: ", "))")
        }
        try checkFilesUnchanged(image, saved: image)
        let current = try ProcMaps.read(pid: pid)
        let hole = try findHole(size: Agent.scratchBytes, avoiding: image.vmas.map { ($0.start, $0.end) } + current.map { ($0.start, $0.end) })
        try makeScratch(pid, at: hole, in: mm)
        let calls = try RestoreCalls(tid: pid, scratch: mm.scratch, context: "restoring \(image.name)")

        var marks = PhaseTimer(since: createdAt)
        marks.mark("exec")
        // 1. Everything of the fresh exec goes, but the scratch area (and the vsyscall page).
        for m in current where m.start != mm.scratch && m.path != "[vsyscall]" {
            _ = try calls.call("munmap \(describeRange(m.start, m.end - m.start))", .munmap, m.start, m.end - m.start)
        }
        // 2. The tree's shared objects (made in PROG), then the checkpoint's mappings, each at its address.
        let members = image.members ?? []
        let sockets = image.fds.contains { [.unixSocket, .ptyMaster, .ptySlave].contains($0.kind) }  // (pairs are made as a tree's are)
        let tree = members.isEmpty && (image.sharedObjects ?? []).isEmpty && (image.zombies ?? []).isEmpty && !sockets ? nil : TreeRestore(images: [image] + members)
        if let tree { try makeSharedObjects(image, pid: pid, calls, source, tree) }
        var noneTaken: [Int: Int64] = [:]
        for v in image.vmas {
            try restoreMapping(v, image, calls) { try self.objectDescriptor($0, calls, tree!, prog: image.pid, member: false, taken: &noneTaken) }
        }
        try restoreAioRings(image, calls)
        marks.mark("mappings")
        // 3. Pages of file mappings now; the others wait in `backing` for the regions.
        let backing = try placePages(pid, source)
        marks.mark("pages")
        // 4. mm fields (brk, arg/env areas, auxv). The exe link is already right: we exec'd the same file.
        try setMMFields(image, calls, exeFD: nil)
        // 5. Signal handlers and interval timers. Every signal stays blocked in PROG until its
        //    threads get their own masks (the threads created below inherit this one), so the
        //    pending signals queued at the end are not delivered while we inject.
        let allSignals = try calls.args.bytes(withUnsafeBytes(of: UInt64.max) { Array($0) })
        _ = try calls.call("rt_sigprocmask(SIG_SETMASK, all)", .rtSigprocmask, 2, allSignals, 0, 8)
        calls.args.reset()
        for a in image.sigactions {
            let act = try calls.args.bytes([a.handler, a.flags, a.restorer, a.mask].withUnsafeBytes { Array($0) })
            _ = try calls.call("rt_sigaction(\(a.signal))", .rtSigaction, UInt64(a.signal), act, 0, 8)
            calls.args.reset()
        }
        try restoreIntervalTimers(image, calls)
        // 6. Files and pipes (a tree's: each open file description once, see TreeRestore).
        try restoreFileDescriptors(image, calls, tree: tree)
        // 7. cwd, umask, limits, attributes, membarrier registrations.
        try restoreProcessSettings(image, pid: pid, calls)
        // 8. The other threads, each with its own tid, then the main thread's own state.
        let others = try image.threads.filter { $0.tid != image.pid }.map { try restoreThread($0, image, calls) }
        try restorePosixTimers(image, calls)  // (after the threads: a timer may signal one)
        try restoreThreadState(leader, of: t, calls)
        // 8b. The rest of the tree, each process forked from its restored parent (Agent+RestoreTree),
        //     and the children that had exited; then the signals that were pending.
        var restored: [RestoredMember] = []
        if let tree {
            try restoreChildren(of: image, pid: pid, calls: calls, scratch: mm.scratch, source, tree, into: &restored)
            try finishTerminals(restored)
            try finishSharedObjects(image, tree)
            try closeParked(tree, prog: image, progCalls: calls, members: restored)
            marks.mark("tree")
        }
        try finishPidfds(image, progCalls: calls, members: restored, tree)
        if !restore.pairsWithRights.isEmpty {
            let hosts = Dictionary(uniqueKeysWithValues: [(image.pid, pid)] + restored.map { ($0.image.pid, $0.leader.tid) })
            try finishInFlight(hostPID: hosts, root: "/proc/\(pid)/root")
        }
        try finishDatagramConnects()  // (every socket of the tree is back)
        try finishConnections()
        closeFifos()
        try queuePendingSignals(image, calls)
        try calls.inj.cure()
        try setThreadRegisters(leader, of: t)

        marks.mark("state")
        // 9. From here PROG is a managed process like any other.
        try takeUserfaultfd(pid, into: mm)
        mm.membarrierRegistrations = Set(image.membarrierRegistrations ?? [])
        mm.aio = AioRings.contexts(of: image.aioRings)
        try manageExistingMappings(pid, in: mm)
        marks.mark("uffd")
        try writeUnmanagedPages(pid, backing.bindKeys(mm.table.regions), backing)
        marks.mark("bind")
        restore.backing = backing.bound > 0 ? backing : nil
        restore.backing?.startReadAhead()
        for m in restored { try takeOver(m) }
        // Last, once nothing more is injected: a filter could refuse what the restore injects.
        try installSeccompFilters(image, tid: pid, scratch: mm.scratch)
        for m in restored { try installSeccompFilters(m.image, tid: m.leader.tid, scratch: m.space.scratch) }
        for o in others { tracer.resume(o) }
        for m in restored {
            for o in m.threads { tracer.resume(o) }
            tracer.resume(m.leader)
        }
        stats.restoreResumeNanos = monotonicNanos() - createdAt
        stats.restoreReadMillis = source.readMillis
        source.startStreaming?()
        restore.releaseEarlierSpaces = source.releaseEarlierSpaces
        log.info("restore timing: \(marks.description)")
        if !restored.isEmpty { log.info("restored \(restored.count) more process(es) of the tree: \(restored.map { "pid \($0.image.pid)" }.joined(separator: ", "))") }
        log.info("restored \(image.name) epoch \(image.epoch) into pid \(pid): \(image.threads.count) thread(s), \(image.vmas.count) mappings, \(source.pageCount) pages in \(source.layers.count) layer(s), \(backing.bound) to come lazily")
    }

    /// The mm fields (code, data, brk, stack, arg and env areas, auxv) as they were, in one
    /// PR_SET_MM_MAP; with `exeFD` (a descriptor in the process) its executable link too.
    func setMMFields(_ image: ProcessImage, _ calls: RestoreCalls, exeFD: Int32?) throws {
        let m = image.mm
        var map: [UInt64] = [m.startCode, m.endCode, m.startData, m.endData, m.startBrk, m.brk, m.startStack, m.argStart, m.argEnd,
                             m.envStart, m.envEnd]
        map.append(try calls.args.bytes(image.auxv.withUnsafeBytes { Array($0) }))
        map.append(UInt64(image.auxv.count * 8) | UInt64(UInt32(bitPattern: exeFD ?? -1)) << 32)  // exe_fd -1: unchanged
        _ = try calls.call("prctl(PR_SET_MM_MAP)", .prctl, 35, 14, try calls.args.bytes(map.withUnsafeBytes { Array($0) }), 104)
        calls.args.reset()
    }

    /// The seccomp filters the process installed itself, oldest first, on all its threads at once
    /// (SECCOMP_FILTER_FLAG_TSYNC: they were created under the same filters, the agent's).
    func installSeccompFilters(_ image: ProcessImage, tid: pid_t, scratch: UInt64) throws {
        let filters = image.seccompFilters ?? []
        guard !filters.isEmpty else { return }
        let calls = try RestoreCalls(tid: tid, scratch: scratch, context: "restoring \(image.name) pid \(image.pid)")
        for (k, f) in filters.enumerated() {
            let insns = try calls.args.bytes(Array(f))
            var prog = [UInt8](repeating: 0, count: 16)  // struct sock_fprog: len, (pad), filter
            prog.withUnsafeMutableBytes { p in
                p.storeBytes(of: UInt16(f.count / 8), as: UInt16.self)
                p.storeBytes(of: insns, toByteOffset: 8, as: UInt64.self)
            }
            let what = "seccomp(SECCOMP_SET_MODE_FILTER, TSYNC) of its filter \(k + 1) of \(filters.count)"
            let r = try calls.call(what, .seccomp, 1, 1, try calls.args.bytes(prog))
            guard r == 0 else { throw SystemError("\(calls.context): \(what): thread \(r) cannot take it", code: EBUSY) }
            calls.args.reset()
        }
        try calls.inj.cure()
    }

    /// POSIX timers with their ids (PR_TIMER_CREATE_RESTORE_IDS: timer_create takes the id it is
    /// handed), clocks, notification and the time they had left, re-armed relative to now.
    func restorePosixTimers(_ image: ProcessImage, _ calls: RestoreCalls) throws {
        let timers = image.posixTimers ?? []
        guard !timers.isEmpty else { return }
        _ = try calls.call("prctl(PR_TIMER_CREATE_RESTORE_IDS, on)", .prctl, 77, 1, 0, 0, 0)
        for t in timers.reversed() {  // (/proc lists the newest first: made oldest first, they list as before)
            var event = [UInt8](repeating: 0, count: 64)  // struct sigevent: value, signo, notify, tid
            event.withUnsafeMutableBytes { p in
                p.storeBytes(of: t.value, toByteOffset: 0, as: UInt64.self)
                p.storeBytes(of: t.signal, toByteOffset: 8, as: Int32.self)
                p.storeBytes(of: t.notify, toByteOffset: 12, as: Int32.self)
                p.storeBytes(of: t.thread, toByteOffset: 16, as: Int32.self)
            }
            let eventAddress = try calls.args.bytes(event)
            let idAddress = try calls.args.bytes(withUnsafeBytes(of: t.id) { Array($0) })
            _ = try calls.call("timer_create(id \(t.id), clock \(t.clock))", .timerCreate, UInt64(t.clock), eventAddress, idAddress)
            var got: Int32 = -1
            try withUnsafeMutableBytes(of: &got) { try Sys.readProcessMemory(pid: calls.tid, address: idAddress, length: 4, into: $0.baseAddress!) }
            guard got == t.id else { throw RestoreError.timerNotRestored(name: image.name, id: t.id, got: got) }
            if t.setting.count == 4 && (t.setting[2] != 0 || t.setting[3] != 0) {
                let setting = try calls.args.bytes(t.setting.withUnsafeBytes { Array($0) })
                _ = try calls.call("timer_settime(\(t.id))", .timerSettime, UInt64(t.id), 0, setting, 0)
            }
            calls.args.reset()
        }
        _ = try calls.call("prctl(PR_TIMER_CREATE_RESTORE_IDS, off)", .prctl, 77, 0, 0, 0, 0)
    }

    /// The interval timers (setitimer) that were armed.
    func restoreIntervalTimers(_ image: ProcessImage, _ calls: RestoreCalls) throws {
        for (which, v) in image.itimers.enumerated() where v.count == 4 && (v[2] != 0 || v[3] != 0) {
            _ = try calls.call("setitimer(\(which))", .setitimer, UInt64(which), try calls.args.bytes(v.withUnsafeBytes { Array($0) }), 0)
            calls.args.reset()
        }
    }

    /// cwd, umask, resource limits, the prctl attributes and membarrier registrations of process
    /// `pid`, injected through `calls`.
    func restoreProcessSettings(_ image: ProcessImage, pid: pid_t, _ calls: RestoreCalls) throws {
        _ = try calls.call("chdir \(image.cwd)", .chdir, try calls.args.string(image.cwd))
        calls.args.reset()
        _ = try calls.call("umask", .umask, UInt64(image.umask))
        for l in image.rlimits { try? Sys.setResourceLimit(pid, l.resource, soft: l.soft, hard: l.hard) }
        if let a = image.attributes { try restoreAttributes(a, pid: pid, calls) }
        for cmd in image.membarrierRegistrations ?? [] {
            _ = try calls.call("membarrier(register 0x\(String(cmd, radix: 16)))", .membarrier, cmd, 0, 0)
        }
    }

    /// The signals that were pending: the process's with rt_sigqueueinfo, each thread's with
    /// rt_tgsigqueueinfo, their siginfo as it was (PROG sends them to itself, which Linux allows
    /// for any si_code).
    /// The process-wide prctl settings, personality and oom_score_adj as they were.
    func restoreAttributes(_ a: ProcessImage.Attributes, pid: pid_t, _ calls: RestoreCalls) throws {
        _ = try calls.call("personality(0x\(String(a.personality, radix: 16)))", .personality, a.personality)
        _ = try calls.call("prctl(PR_SET_CHILD_SUBREAPER, \(a.childSubreaper))", .prctl, 36, a.childSubreaper ? 1 : 0)
        _ = try calls.call("prctl(PR_SET_DUMPABLE, \(a.dumpable))", .prctl, 4, UInt64(a.dumpable))
        try ProcFile.write("/proc/\(pid)/oom_score_adj", "\(a.oomScoreAdj)\n")
        // The login uid, where it differs: only the process itself may write it (and it needs
        // CAP_AUDIT_CONTROL, or the uid unset and not locked by audit=loginuid_immutable).
        let current = ProcFile.text("/proc/\(pid)/loginuid").flatMap { UInt32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        if let uid = a.loginuid, let current, uid != current {
            let path = "/proc/self/loginuid"
            let fd = try calls.call("open \(path)", .open, try calls.args.string(path), UInt64(O_WRONLY | O_CLOEXEC), 0)
            let text = Array("\(uid)".utf8)
            let r = try calls.callResult(.write, UInt64(fd), try calls.args.bytes(text), UInt64(text.count))
            calls.args.reset()
            _ = try calls.call("close", .close, UInt64(fd))
            if r < 0 { throw RestoreError.loginuidNotRestored(uid: uid, current: current, errno: Int32(-r)) }
        }
    }

    func queuePendingSignals(_ image: ProcessImage, _ calls: RestoreCalls) throws {
        func signo(_ info: Data) -> UInt64 { UInt64(info.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }) }
        for info in image.pendingSignals ?? [] where info.count == 128 {
            let p = try calls.args.bytes(Array(info))
            _ = try calls.call("rt_sigqueueinfo(\(signo(info)))", .rtSigqueueinfo, UInt64(image.pid), signo(info), p)
            calls.args.reset()
        }
        for t in image.threads {
            for info in t.pendingSignals ?? [] where info.count == 128 {
                let p = try calls.args.bytes(Array(info))
                _ = try calls.call("rt_tgsigqueueinfo(\(signo(info)) to \(t.tid))", .rtTgsigqueueinfo, UInt64(image.pid), UInt64(t.tid), signo(info), p)
                calls.args.reset()
            }
        }
    }

    /// `object`: the descriptor, in the process, of a shared object (for a mapping that maps one).
    func restoreMapping(_ v: ProcessImage.VMA, _ image: ProcessImage, _ calls: RestoreCalls, object: (Int) throws -> SharedMapping) throws {
        if AioRings.isRing(v) { return }  // made with its context once every mapping is back (restoreAioRings)
        if let id = v.object {
            let len = v.end - v.start
            switch try object(id) {
            case .descriptor(let fd):
                let noReserve: UInt64 = (v.vmFlags ?? []).contains("nr") ? 0x4000 : 0
                let flags: UInt64 = (v.kind == .shared ? 0x11 : 0x12) | noReserve  // MAP_SHARED or MAP_PRIVATE, MAP_FIXED
                _ = try calls.call("mmap \(v.path ?? "shared object \(id)") at \(describeRange(v.start, len))", .mmap, v.start, len, UInt64(v.prot), flags, fd, v.offset)
            case .segment(let shmid):
                let flags: UInt64 = (v.prot & 2 == 0 ? 0o10000 : 0) | (v.prot & 4 != 0 ? 0o100000 : 0)  // SHM_RDONLY, SHM_EXEC
                let at = try calls.call("shmat(\(shmid)) at \(describeRange(v.start, len))", .shmat, UInt64(shmid), v.start, flags)
                guard UInt64(at) == v.start else { throw RestoreError.segmentNotRestored(name: v.path ?? "", shmid: shmid, got: -1) }
            }
        } else {
            try mapAgain(v, image, calls)
        }
        try restoreAdvice(v, calls)
    }

    /// The mapping's madvise advice, and the name of a named anonymous mapping (PR_SET_VMA_ANON_NAME).
    private func restoreAdvice(_ v: ProcessImage.VMA, _ calls: RestoreCalls) throws {
        switch v.kind {
        case .vdso, .vvar, .vsyscall: return  // the kernel's own, with its own flags
        default: break
        }
        let len = v.end - v.start
        for f in v.vmFlags ?? [] {
            guard let advice = MappingFlags.restored[f], advice != 0 else { continue }
            _ = try calls.call("madvise(\(describeRange(v.start, len)), \(f))", .madvise, v.start, len, advice)
        }
        for r in v.guardRanges ?? [] where r.count == 2 && r[1] > r[0] {
            _ = try calls.call("madvise(\(describeRange(r[0], r[1] - r[0])), MADV_GUARD_INSTALL)", .madvise, r[0], r[1] - r[0], 102)
        }
        if let path = v.path, path.hasPrefix("[anon:"), path.hasSuffix("]") {
            let name = String(path.dropFirst(6).dropLast())
            _ = try calls.call("prctl(PR_SET_VMA_ANON_NAME, \(describeRange(v.start, len)), \(name))", .prctl,
                               0x5356_4d41, 0, v.start, len, try calls.args.string(name))  // PR_SET_VMA, PR_SET_VMA_ANON_NAME
            calls.args.reset()
        }
    }

    private func mapAgain(_ v: ProcessImage.VMA, _ image: ProcessImage, _ calls: RestoreCalls) throws {
        let len = v.end - v.start
        let noReserve: UInt64 = (v.vmFlags ?? []).contains("nr") ? 0x4000 : 0  // MAP_NORESERVE
        switch v.kind {
        case .vsyscall, .vvar:
            return
        case .vdso:
            let vvar = image.vmas.filter { $0.kind == .vvar && $0.end <= v.start }.map { $0.start }.min() ?? v.start
            _ = try calls.call("arch_prctl(ARCH_MAP_VDSO_64, 0x\(String(vvar, radix: 16)))", .archPrctl, 0x2003, vvar)
        case .file:
            let fd = try calls.call("open \(v.path ?? "")", .open, try calls.args.string(v.path ?? ""), 0, 0)  // O_RDONLY
            _ = try calls.call("mmap \(v.path ?? "") at \(describeRange(v.start, len))", .mmap, v.start, len, UInt64(v.prot), 0x12 | noReserve, UInt64(fd), v.offset)  // MAP_PRIVATE|MAP_FIXED
            _ = try calls.call("close", .close, UInt64(fd))
            calls.args.reset()
        case .anonymous, .heap, .stack:
            let flags: UInt64 = 0x32 | (v.kind == .stack ? 0x100 : 0) | noReserve  // MAP_PRIVATE|MAP_FIXED|MAP_ANONYMOUS [|MAP_GROWSDOWN]
            _ = try calls.call("mmap anonymous \(describeRange(v.start, len))", .mmap, v.start, len, UInt64(v.prot), flags, UInt64(bitPattern: -1), 0)
        case .shared:
            // A shared file mapping: the file holds its pages; map it again.
            guard let p = v.path, p.hasPrefix("/") else {
                throw RestoreError.sharedAnonymous(name: image.name, epoch: image.epoch, range: describeRange(v.start, len))
            }
            // Opened for writing if the mapping may be made writable ("mw"), as it was.
            let mayWrite = v.vmFlags.map { $0.contains("mw") } ?? (v.prot & 2 != 0)
            let fd = try calls.call("open \(p)", .open, try calls.args.string(p), mayWrite ? 2 : 0, 0)  // O_RDWR or O_RDONLY
            _ = try calls.call("mmap shared \(p) at \(describeRange(v.start, len))", .mmap, v.start, len, UInt64(v.prot), 0x11, UInt64(fd), v.offset)  // MAP_SHARED|MAP_FIXED
            _ = try calls.call("close", .close, UInt64(fd))
            calls.args.reset()
        }
    }

    /// A checkpoint maps files by path: they must still be the files it saw.
    /// (Files `saved` — PROG's image — holds with their content are as they were already.)
    func checkFilesUnchanged(_ image: ProcessImage, saved: ProcessImage) throws {
        var checked = Set((saved.openFiles ?? []).map { $0.path })
        for v in image.vmas where v.kind == .file && v.object == nil {
            guard let path = v.path, checked.insert(path).inserted else { continue }
            var st = stat()
            guard stat(path, &st) == 0 else { throw RestoreError.fileGone(name: image.name, path: path) }
            let mtime = Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9
            if let size = v.size, size != UInt64(st.st_size) || (v.mtime.map { abs($0 - mtime) > 1e-6 } ?? false) {
                throw RestoreError.fileChanged(name: image.name, path: path, epoch: image.epoch)
            }
        }
    }

    /// Sorts the layers' pages, oldest first, into what each page of the checkpoint's mappings holds:
    /// pages of file mappings (only the newest layer's: each checkpoint holds all of them) are
    /// written now through /proc/PID/mem; pages of anonymous mappings are left to `backing`, which
    /// serves them lazily once the regions exist (a later layer's page or zero run replaces an
    /// earlier one's).
    func placePages(_ pid: pid_t, _ source: RestoreSource) throws -> RestoreBacking {
        let image = source.image
        let backing = try RestoreBacking(layers: source.layers,
                                         areas: image.vmas.filter { [.anonymous, .heap, .stack].contains($0.kind) }.map { ($0.start, $0.end) })
        let files = image.vmas.filter { $0.kind == .file }.sorted { $0.start < $1.start }
        func fileMapping(_ a: UInt64) -> Bool {
            var lo = 0, hi = files.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if files[mid].end <= a { lo = mid + 1 } else { hi = mid }
            }
            return lo < files.count && files[lo].start <= a
        }
        let mem = try RestoredPageWriter(pid: pid, backing: backing)
        let newestEpoch = source.layers.last?.epoch
        // The file mappings' pages are written before PROG runs: a streamed layer brings their runs
        // in one round rather than one fault-like fetch after another.
        for (n, layer) in source.layers.enumerated() where layer.epoch == newestEpoch {
            backing.prefetch(layer: n, runs: layer.pageRuns.indices.filter { backing.area(layer.pageRuns[$0].0) == nil && fileMapping(layer.pageRuns[$0].0) })
        }
        for (n, layer) in source.layers.enumerated() {
            let newest = layer.epoch == newestEpoch  // (an epoch may come in several layers, disjoint)
            var index: Int64 = 0
            for (address, count) in layer.pageRuns {
                var k = 0
                while k < count {
                    let a = address + UInt64(k * Page.size)
                    if let area = backing.area(a) {
                        // The part of the run inside this mapping, slot by slot.
                        let first = Int((a - area.start) >> Page.shift)
                        let m = min(count - k, area.slots.count - first)
                        for j in 0..<m { area.slots[first + j] = RestoreBacking.Location(layer: n, page: index + Int64(k + j)).slot }
                        k += m
                    } else {
                        if newest && fileMapping(a) { try mem.write(a, .init(layer: n, page: index + Int64(k))) }
                        k += 1
                    }
                }
                index += Int64(count)
            }
            for (address, count) in layer.zeroRuns {
                var k = 0
                while k < count {
                    let a = address + UInt64(k * Page.size)
                    guard let area = backing.area(a) else { k += 1; continue }
                    let first = Int((a - area.start) >> Page.shift)
                    let m = min(count - k, area.slots.count - first)
                    for j in 0..<m { area.slots[first + j] = 0 }
                    k += m
                }
            }
        }
        // The kernel writes a thread's rseq area when it is registered, before the regions are
        // managed: a missing page would become a zero page there. Those pages go in now.
        for t in image.threads {
            guard let r = t.rseq, r.address != 0 else { continue }
            var a = Page.alignDown(r.address)
            while a < r.address + UInt64(max(r.size, 32)) {
                if let area = backing.area(a) {
                    let i = Int((a - area.start) >> Page.shift)
                    if let loc = RestoreBacking.Location(slot: area.slots[i]) { try mem.write(a, loc) }
                    area.slots[i] = 0
                }
                a += Page.size.u64
            }
        }
        return backing
    }

    /// The backing's pages that no managed region holds (a mapping the uffd refused): written now.
    func writeUnmanagedPages(_ pid: pid_t, _ pages: [(UInt64, RestoreBacking.Location)], _ backing: RestoreBacking) throws {
        guard !pages.isEmpty else { return }
        let mem = try RestoredPageWriter(pid: pid, backing: backing)
        for (a, loc) in pages { try mem.write(a, loc) }
        log.info("restore: \(pages.count) pages outside managed memory written at once")
    }

    /// An address range of `size` bytes clear of every range given (in the usual user-space area).
    private func findHole(size: UInt64, avoiding ranges: [(UInt64, UInt64)]) throws -> UInt64 {
        let sorted = ranges.sorted { $0.0 < $1.0 }
        var candidate: UInt64 = 0x10_0000_0000  // 64 GiB: above a non-PIE executable's usual place
        for (s, e) in sorted {
            if e <= candidate { continue }
            if s >= candidate + size { break }
            candidate = Page.alignUp(e)
        }
        guard candidate + size < 0x7fff_0000_0000 else { throw RestoreError.noScratchRoom }
        return candidate
    }
}

/// Injected syscalls into one stopped thread of the process being restored; a failure names the call.
final class RestoreCalls {
    let inj: Sys.Injection
    var args: ScratchArguments
    let tid: pid_t
    let context: String

    init(tid: pid_t, scratch: UInt64, context: String) throws {
        inj = try Sys.Injection(tid: tid, stub: scratch, whileWaiting: nil)
        args = ScratchArguments(pid: tid, base: scratch + 4096, size: Int(Agent.scratchBytes) - 4096)
        self.tid = tid
        self.context = context
    }

    /// The call's result; a -errno result throws.
    func call(_ what: String, _ call: Syscall, _ a: UInt64...) throws -> Int64 {
        let p = a + Array(repeating: 0, count: 6 - a.count)
        let r = try inj.syscall(call, p[0], p[1], p[2], p[3], p[4], p[5])
        if r < 0 && r > -4096 { throw SystemError("\(context): \(what) in tid \(tid)", code: Int32(-r)) }
        return r
    }

    /// The call's raw result (-errno on failure), for callers that tell failures apart.
    func callResult(_ call: Syscall, _ a: UInt64...) throws -> Int64 {
        let p = a + Array(repeating: 0, count: 6 - a.count)
        return try inj.syscall(call, p[0], p[1], p[2], p[3], p[4], p[5])
    }
}

/// Small arguments (paths, structs) written into the scratch area for injected syscalls.
struct ScratchArguments {
    let pid: pid_t
    let base: UInt64
    let size: Int
    private var used = 0

    init(pid: pid_t, base: UInt64, size: Int) {
        self.pid = pid
        self.base = base
        self.size = size
    }

    mutating func reset() { used = 0 }

    mutating func bytes(_ b: [UInt8]) throws -> UInt64 {
        let aligned = (used + 15) & ~15
        guard aligned + b.count <= size else { throw RestoreError.argumentsTooLarge(b.count) }
        let addr = base + UInt64(aligned)
        if !b.isEmpty { try b.withUnsafeBytes { try Sys.processWrite(pid: pid, from: $0.baseAddress!, length: $0.count, to: addr) } }
        used = aligned + b.count
        return addr
    }

    mutating func string(_ s: String) throws -> UInt64 { try bytes(Array(s.utf8) + [0]) }
}

/// Writes restored pages straight into PROG through /proc/PID/mem (which writes read-only mappings
/// too); only for pages outside managed memory, or before the uffd is registered.
final class RestoredPageWriter {
    let pid: pid_t
    let backing: RestoreBacking
    private let mem: Int32
    private let page = UnsafeMutableRawPointer.allocate(byteCount: Page.size, alignment: Page.size)

    init(pid: pid_t, backing: RestoreBacking) throws {
        self.pid = pid
        self.backing = backing
        mem = open("/proc/\(pid)/mem", O_RDWR | O_CLOEXEC)
        if mem < 0 {
            page.deallocate()
            throw SystemError.fromErrno("open /proc/\(pid)/mem")
        }
    }

    deinit {
        close(mem)
        page.deallocate()
    }

    func write(_ address: UInt64, _ loc: RestoreBacking.Location) throws {
        try backing.read(loc, into: page)
        guard pwrite(mem, page, Page.size, off_t(Int64(bitPattern: address))) == Page.size else {
            throw SystemError.fromErrno("write \(describeRange(address, Page.size.u64)) of pid \(pid)")
        }
    }
}
