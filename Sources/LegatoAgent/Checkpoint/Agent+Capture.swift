import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// Taking a checkpoint: freeze, capture the context (registers, signal state, maps, mm fields, fds),
/// copy every page the process has (resident, buffered or remote), thaw.
extension Agent {
    /// Captures PROG as checkpoint `epoch`, an increment of `checkpointBase` if there is one: pages
    /// and zero runs into `staging`, for the store once PROG runs again. PROG runs on whatever
    /// happens. If the checkpoint then does not commit, call forgetAllSaved().
    func capture(name: String, epoch: UInt64) throws -> CheckpointResult {
        guard mm.isManaged, tracer.programStatus == nil else { throw CheckpointRefused(description: "the program is not running") }
        try fetcher.drainAll()
        let started = monotonicNanos()
        var phases = PhaseTimer(since: started)
        try tracer.freeze(serve: loop(until:))
        phases.mark("freeze")
        defer { tracer.thaw() }
        if tracer.programStatus != nil || fatalError != nil { throw CheckpointRefused(description: "the program ended during the checkpoint") }
        let pid = mainPID
        guard let injector = tracer.injectableThread else {
            throw CheckpointRefused(description: "no thread of the program is in a stop fit for injection; try again")
        }
        let fds = try captureFileDescriptors(pid)

        var threads: [ProcessImage.ThreadState] = []
        for t in tracer.programThreads {
            threads.append(try captureThread(t))
        }
        let (sigactions, brk, itimers) = try captureProcessWide(using: injector)
        var mmFields = try readMMFields(pid)
        mmFields.brk = brk
        let vmas = try ProcMaps.read(pid: pid).compactMap { describeVMA($0) }
        if let shm = vmas.first(where: { $0.kind == .shared && !($0.path?.hasPrefix("/") ?? false) }) {
            throw CheckpointRefused(description: "shared anonymous memory at \(describeRange(shm.start, shm.end - shm.start)) (\(shm.path ?? "anonymous")) cannot be checkpointed yet")
        }

        phases.mark("context")
        // Pages written since the last checkpoint: get-and-clear the kernel's written bits (the pages
        // stay dirty for eviction: their memory-node copy, if any, is older).
        for r in mm.table.regions.regions {
            try mm.scan(start: r.start, end: r.end, required: .written, writeProtect: true) { s, e, _ in
                for k in r.index(of: s)..<r.index(of: e) {
                    r.remove(k, .saved)
                    r.insert(k, .dirty)
                }
            }
        }
        // Managed pages: all with content (full), or those changed since the base (incremental, where
        // a changed page without content is a zero run). Then the written pages of file mappings.
        phases.mark("scan")
        let parent = checkpointBase
        var pages = 0
        staging.reset()
        // Many changed resident pages: keep them in a copy-on-write snapshot rather than copy them now.
        // (The walks below read each region's states from a local copy: nothing in them changes any.)
        var changedResident = 0
        let resident = PageState.resident.rawValue, saved = PageState.saved.rawValue
        for r in mm.table.regions.regions {
            let states = r.states
            for b in states where b & resident != 0 && (parent == nil || b & saved == 0) { changedResident += 1 }
        }
        if changedResident >= config.snapshotAbovePages {
            staging.snapshot = try takeSnapshot(using: injector)
            phases.mark("snapshot")
        }
        // Each changed page by where its content is: resident (copied now, or read from the snapshot
        // later), local elsewhere (write-back buffer, restore backing: copied now), only on a memory
        // node (read later from the node's freeze), or nowhere (a zero run).
        func source(_ s: PageState) -> Int {
            if s.contains(.resident) { return 0 }
            if s.contains(.inFlight) || s.contains(.restoring) { return 1 }
            return s.contains(.remote) ? 2 : 3
        }
        var frozenNodes = Set<Int>()
        for r in mm.table.regions.regions {
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
                case 0 where staging.snapshot != nil:
                    staging.addDeferred(r.address(at: i), n)
                case 2:
                    guard let node = pool.location(r.key(at: i)) else {
                        throw LegatoError("page 0x\(String(r.address(at: i), radix: 16)) has no memory node")
                    }
                    staging.addFrozen(node: node, address: r.address(at: i), keys: (0..<n).map { r.key(at: i + $0) })
                    frozenNodes.insert(node)
                case 3:
                    staging.addZeros(r.address(at: i), n)
                case 1:
                    try stageLocalElsewhere(r, i, n)
                default:
                    try readPagesForCheckpoint(r, i, n, into: try staging.reserve(r.address(at: i), n))
                }
                if from != 3 { pages += n }
                i += n
            }
        }
        // The memory nodes keep those pages as they are now until the commit thread has read them
        // (and, where the store has them retain checkpoints, every node keeps this one's versions).
        if store?.retainsOnMemoryNodes == true { frozenNodes.formUnion(pool.liveNodes) }
        staging.frozenNodes = frozenNodes
        for node in frozenNodes.sorted() {
            try fetcher.drain(node: node)
            try pool.freeze(node: node)
        }
        staging.frozenSource = frozenNodes.isEmpty ? nil : pool.frozenSource()
        for r in mm.table.regions.regions { r.markAllSaved() }  // undone by forgetAllSaved() if it does not commit
        phases.mark("pages")
        for v in vmas where v.kind == .file {
            try mm.scan(start: v.start, end: v.end, required: .present, absent: .file, writeProtect: false) { s, e, _ in
                var a = s
                while a < e {
                    let n = Int(min(UInt64(CheckpointStaging.runPages), (e - a) >> Page.shift))
                    try readProcMem(pid, a, n * Page.size, into: try staging.reserve(a, n))
                    pages += n
                    a += UInt64(n * Page.size)
                }
            }
        }

        let image = ProcessImage(name: name, epoch: epoch, pid: namespaceTID(pid), parentEpoch: parent, createdAt: Date().timeIntervalSince1970,
                                 exe: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")) ?? config.program,
                                 cwd: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/cwd")) ?? "/",
                                 umask: readUmask(pid), mm: mmFields, auxv: readAuxv(pid), vmas: vmas, threads: threads,
                                 sigactions: sigactions, fds: fds, rlimits: readRLimits(pid), itimers: itimers,
                                 pendingSignals: try Sys.pendingSignals(pid, shared: true).map { Data($0) })
        phases.mark("files")
        let pause = monotonicNanos() - started
        log.info("checkpoint \(name) epoch \(epoch) pause: \(phases.description)")
        return CheckpointResult(epoch: epoch, parent: parent, pauseNanos: pause, pages: pages, bytes: pages * Page.size, snapshot: staging.snapshot != nil, image: image)
    }

    /// A checkpoint that did not commit: every page counts as changed, the next checkpoint is full.
    func forgetAllSaved() {
        for r in mm.table.regions.regions { r.forgetSaved() }
        checkpointBase = nil
    }

    /// Stages changed pages that are neither resident nor only remote: those of a write-back batch
    /// on its way are kept by reference to the batch (its bytes never change; the commit thread
    /// reads them after the thaw), the others (restore backing) are copied now.
    private func stageLocalElsewhere(_ r: Region, _ i: Int, _ n: Int) throws {
        var k = 0
        while k < n {
            if r.state(i + k).contains(.inFlight), let (b, index) = writeBack.location(of: r.key(at: i + k)) {
                var m = 1
                while k + m < n, r.state(i + k + m).contains(.inFlight), let next = writeBack.location(of: r.key(at: i + k + m)),
                      next.batch === b, next.index == index + m {
                    m += 1
                }
                staging.addBatchRun(address: r.address(at: i + k), count: m, batch: b, index: index)
                k += m
                continue
            }
            var m = 1
            while k + m < n && !(r.state(i + k + m).contains(.inFlight) && writeBack.location(of: r.key(at: i + k + m)) != nil) { m += 1 }
            try readPagesForCheckpoint(r, i + k, m, into: try staging.reserve(r.address(at: i + k), m))
            k += m
        }
    }

    /// The current content of managed pages r[i..<i+n] (all with content), wherever each lives:
    /// resident runs in one read each, buffered pages copied, remote ones in one fetch per node.
    private func readPagesForCheckpoint(_ r: Region, _ i: Int, _ n: Int, into dst: UnsafeMutableRawPointer) throws {
        var remote: [Int: [Int]] = [:]  // node -> offsets in the run
        var k = 0
        while k < n {
            let s = r.state(i + k)
            if s.contains(.resident) {
                var m = 1
                while k + m < n && r.state(i + k + m).contains(.resident) { m += 1 }
                try readProcMem(mainPID, r.address(at: i + k), m * Page.size, into: dst + k * Page.size)
                k += m
                continue
            }
            let key = r.key(at: i + k)
            if s.contains(.inFlight), let page = writeBack.page(key: key) {
                memcpy(dst + k * Page.size, page, Page.size)
            } else if s.contains(.restoring), let backing = restoreBacking, let loc = backing.location(key: key) {
                try backing.read(loc, into: dst + k * Page.size)
            } else {
                guard let node = pool.location(key) else { throw LegatoError("page 0x\(String(r.address(at: i + k), radix: 16)) has no memory node") }
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

    /// Reads PROG's memory (present pages: a missing managed page would fault into our own uffd).
    func readProcMem(_ pid: pid_t, _ address: UInt64, _ length: Int, into dst: UnsafeMutableRawPointer) throws {
        var addr = address, len = UInt64(length)
        if let n = try? Sys.processRead(pid: pid, into: dst, capacity: length, addresses: &addr, lengths: &len, count: 1), n == length { return }
        // process_vm_readv honours protections; /proc/PID/mem reads PROT_NONE pages too.
        let fd = open("/proc/\(pid)/mem", O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw SystemError.fromErrno("open /proc/\(pid)/mem") }
        defer { close(fd) }
        let n = pread(fd, dst, length, off_t(Int64(bitPattern: address)))
        if n != length { throw SystemError("read \(describeRange(address, UInt64(length))) of pid \(pid)", code: n < 0 ? errno : EIO) }
    }

    private func captureThread(_ t: Tracee) throws -> ProcessImage.ThreadState {
        var regs = try Sys.getRegisters(t.tid)
        // A thread stopped inside a restartable syscall: make the restore re-enter it (as the
        // kernel's restart logic would), since the restart is not carried over.
        let ret = Int64(bitPattern: regs.rax)
        if Int64(bitPattern: regs.orig_rax) >= 0 {
            switch ret {
            case -512, -513, -514:  // ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND
                regs.rax = regs.orig_rax
                regs.rip -= 2
            case -516:  // ERESTART_RESTARTBLOCK
                regs.rax = 219  // restart_syscall
                regs.rip -= 2
            default: break
            }
        }
        let xstate = try Sys.getRegisterSet(t.tid, type: Sys.ntX86XState)
        let rseq = try? Sys.rseqConfiguration(t.tid)
        let inj = try Sys.Injection(tid: t.tid, stub: mm.scratch, whileWaiting: { [self] in try? pollOnce(reapStops: false, sleepMillis: 5) })
        defer { tracer.tolerateGone { try inj.cure() } }
        let tidAddressSlot = mm.scratch + 2048
        _ = try inj.syscall(.prctl, 40, tidAddressSlot)  // prctl(PR_GET_TID_ADDRESS, &slot)
        _ = try inj.syscall(.sigaltstack, 0, mm.scratch + 2064)   // sigaltstack(NULL, &old)
        var words = [UInt64](repeating: 0, count: 6)
        try words.withUnsafeMutableBytes { try readProcMem(mainPID, tidAddressSlot, 48, into: $0.baseAddress!) }
        let (head, len) = Sys.robustList(t.tid)
        return ProcessImage.ThreadState(tid: namespaceTID(t.tid), registers: regs.words, xstate: Data(xstate), sigmask: try Sys.signalMask(t.tid),
                                        rseq: rseq.map { .init(address: $0.address, size: $0.size, signature: $0.signature) },
                                        tidAddress: words[0], robustList: head, robustListLength: len,
                                        sigaltstack: [words[2], words[3], words[4]],
                                        pendingSignals: try Sys.pendingSignals(t.tid, shared: false).map { Data($0) })
    }

    /// A thread's id in PROG's own PID namespace (the last NSpid of its status).
    func namespaceTID(_ tid: pid_t) -> Int32 {
        let status = ProcFile.text("/proc/\(tid)/status") ?? ""
        for line in status.split(separator: "\n") where line.hasPrefix("NSpid:") {
            if let last = line.split(whereSeparator: { $0 == "\t" || $0 == " " }).last, let n = Int32(last) { return n }
        }
        return tid
    }

    /// Every signal's disposition (rt_sigaction(sig, NULL, &old) injected), brk, and the interval timers.
    private func captureProcessWide(using t: Tracee) throws -> ([ProcessImage.SigAction], UInt64, [[UInt64]]) {
        let inj = try Sys.Injection(tid: t.tid, stub: mm.scratch, whileWaiting: { [self] in try? pollOnce(reapStops: false, sleepMillis: 5) })
        defer {
            tracer.tolerateGone { try inj.cure() }
            t.pendingSignals.append(contentsOf: inj.deferredSignals)
        }
        var out: [ProcessImage.SigAction] = []
        let slot = mm.scratch + 3072
        for sig in 1..<65 where sig != SIGKILL && sig != SIGSTOP {
            let r = try inj.syscall(.rtSigaction, UInt64(sig), 0, slot, 8)  // rt_sigaction(sig, NULL, &old, 8)
            guard r == 0 else { continue }
            var a = [UInt64](repeating: 0, count: 4)
            try a.withUnsafeMutableBytes { try readProcMem(mainPID, slot, 32, into: $0.baseAddress!) }
            if a[0] != 0 || a[1] != 0 || a[3] != 0 {
                out.append(.init(signal: Int32(sig), handler: a[0], flags: a[1], restorer: a[2], mask: a[3]))
            }
        }
        let brk = try inj.syscall(.brk, 0)
        var timers: [[UInt64]] = []
        for which in 0..<3 {
            guard try inj.syscall(.getitimer, UInt64(which), slot) == 0 else { timers.append([0, 0, 0, 0]); continue }  // getitimer
            var v = [UInt64](repeating: 0, count: 4)
            try v.withUnsafeMutableBytes { try readProcMem(mainPID, slot, 32, into: $0.baseAddress!) }
            timers.append(v)
        }
        return (out, UInt64(bitPattern: brk), timers)
    }

    private func readMMFields(_ pid: pid_t) throws -> ProcessImage.MMFields {
        guard let stat = ProcFile.text("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else {
            throw LegatoError("cannot read /proc/\(pid)/stat")
        }
        // Fields after "(comm)": state is field 3; we index from field 3 = f[0].
        let f = stat[stat.index(after: close)...].split(separator: " ").map { UInt64($0) ?? 0 }
        func field(_ n: Int) -> UInt64 { n - 3 < f.count ? f[n - 3] : 0 }
        return .init(startCode: field(26), endCode: field(27), startData: field(45), endData: field(46), startBrk: field(47), brk: 0,
                     startStack: field(28), argStart: field(48), argEnd: field(49), envStart: field(50), envEnd: field(51))
    }

    private func readAuxv(_ pid: pid_t) -> [UInt64] {
        guard let d = ProcFile.bytes("/proc/\(pid)/auxv") else { return [] }
        return d.withUnsafeBytes { raw in (0..<raw.count / 8).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self) } }
    }

    private func readUmask(_ pid: pid_t) -> UInt32 {
        let status = ProcFile.text("/proc/\(pid)/status") ?? ""
        for line in status.split(separator: "\n") where line.hasPrefix("Umask:") {
            return UInt32(line.dropFirst(6).trimmingCharacters(in: .whitespaces), radix: 8) ?? 0o22
        }
        return 0o22
    }

    private func readRLimits(_ pid: pid_t) -> [ProcessImage.RLimit] {
        (0..<16).compactMap { res in
            Sys.resourceLimit(pid, Int32(res)).map { .init(resource: Int32(res), soft: $0.soft, hard: $0.hard) }
        }
    }

    private func describeVMA(_ m: MapsEntry) -> ProcessImage.VMA? {
        if m.start == mm.scratch { return nil }
        var prot: UInt32 = 0
        let p = Array(m.perms)
        if p[0] == "r" { prot |= 1 }
        if p[1] == "w" { prot |= 2 }
        if p[2] == "x" { prot |= 4 }
        let kind: ProcessImage.VMA.Kind
        switch m.path {
        case "[heap]": kind = .heap
        case "[stack]": kind = .stack
        case "[vdso]": kind = .vdso
        case "[vvar]", "[vvar_vclock]": kind = .vvar
        case "[vsyscall]": kind = .vsyscall
        default:
            if !m.isPrivate { kind = .shared } else { kind = m.inode == 0 ? .anonymous : .file }
        }
        var v = ProcessImage.VMA(start: m.start, end: m.end, prot: prot, kind: kind, path: m.path.isEmpty ? nil : m.path, offset: m.offset)
        if kind == .file, let path = v.path {
            var st = stat()
            if stat(path, &st) == 0 {
                v.inode = UInt64(st.st_ino)
                v.device = String(st.st_dev, radix: 16)
                v.size = UInt64(st.st_size)
                v.mtime = Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9
            }
        }
        return v
    }

    /// The fd table; anything but regular files, pipes, terminals and a few devices refuses the checkpoint.
    private func captureFileDescriptors(_ pid: pid_t) throws -> [ProcessImage.FileDescriptor] {
        let dir = "/proc/\(pid)/fd"
        var out: [ProcessImage.FileDescriptor] = []
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            guard let fd = Int32(name), Int64(fd) != mm.processMadvisePidfd else { continue }  // the agent's own
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: dir + "/" + name) else { continue }
            var flags: UInt32 = 0
            var pos: Int64 = 0
            if let info = ProcFile.text("/proc/\(pid)/fdinfo/\(fd)") {
                for line in info.split(separator: "\n") {
                    if line.hasPrefix("flags:") { flags = UInt32(line.dropFirst(6).trimmingCharacters(in: .whitespaces), radix: 8) ?? 0 }
                    if line.hasPrefix("pos:") { pos = Int64(line.dropFirst(4).trimmingCharacters(in: .whitespaces)) ?? 0 }
                }
            }
            let kind: ProcessImage.FileDescriptor.Kind
            if target == "/dev/null" { kind = .devnull } else if target == "/dev/zero" { kind = .devzero } else if target == "/dev/urandom" || target == "/dev/random" {
                kind = .devurandom
            } else if target.hasPrefix("/dev/pts/") || target.hasPrefix("/dev/tty") || target == "/dev/console" {
                kind = .tty
            } else if target.hasPrefix("pipe:") {
                kind = .pipe
            } else if target.hasPrefix("/") && !target.hasPrefix("/dev/") {
                var st = stat()
                if stat(target, &st) == 0 && st.st_mode & S_IFMT == S_IFREG { kind = .regular } else {
                    throw CheckpointRefused(description: "fd \(fd) is \(target), which is not a regular file; cannot checkpoint it")
                }
            } else {
                throw CheckpointRefused(description: "fd \(fd) is \(target) (\(describeKind(target))); cannot checkpoint it")
            }
            var entry = ProcessImage.FileDescriptor(fd: fd, kind: kind, path: target, flags: flags, offset: pos)
            if kind == .pipe { entry.pipeInode = UInt64(target.dropFirst(6).dropLast()) }
            out.append(entry)
        }
        try capturePipes(pid, &out)
        return out.sorted { $0.fd < $1.fd }
    }

    /// Pipes with both ends in PROG are restored with what they hold; a pipe on fds 0-2 whose other end
    /// is outside becomes `legato restore`'s own; any other pipe leads outside PROG and is refused.
    private func capturePipes(_ pid: pid_t, _ fds: inout [ProcessImage.FileDescriptor]) throws {
        let pipes = Dictionary(grouping: fds.indices.filter { fds[$0].kind == .pipe }, by: { fds[$0].pipeInode ?? 0 })
        for (inode, members) in pipes {
            let readers = members.filter { fds[$0].flags & 3 == 0 }, writers = members.filter { fds[$0].flags & 3 == 1 }
            if readers.isEmpty || writers.isEmpty {
                if let outside = members.first(where: { fds[$0].fd > 2 }) {
                    throw CheckpointRefused(description: "fd \(fds[outside].fd) is pipe:[\(inode)], whose other end is outside the program; cannot checkpoint it")
                }
                continue
            }
            let r = fds[readers[0]].fd
            let peek = open("/proc/\(pid)/fd/\(r)", O_RDONLY | O_NONBLOCK | O_CLOEXEC)
            if peek < 0 { throw SystemError.fromErrno("open the read end of pipe:[\(inode)] (fd \(r) of pid \(pid))") }
            defer { close(peek) }
            fds[readers[0]].pipeData = Data(try Sys.peekPipe(peek, what: "pipe:[\(inode)] (fd \(r) of pid \(pid))"))
        }
    }

    private func describeKind(_ target: String) -> String {
        if target.hasPrefix("socket:") { return "a socket" }
        if target.hasPrefix("anon_inode:[eventpoll]") { return "an epoll set" }
        if target.hasPrefix("anon_inode:") { return "an anonymous inode" }
        if target.hasPrefix("/dev/") { return "a device" }
        return "unsupported"
    }
}

