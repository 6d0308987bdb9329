import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// What a checkpoint records of a frozen process besides its pages: every thread's registers and
/// signal state (through injected syscalls), signal dispositions, brk and interval timers, the
/// mm fields, auxv, umask, resource limits, the mappings and the descriptor table. Refuses, by name,
/// what it cannot restore exactly.
struct ProcessCapture {
    let pid: pid_t
    /// Scratch memory mapped in the process for injected calls' arguments.
    let scratch: UInt64
    /// A descriptor the agent keeps in the process (not the program's own), or -1.
    let agentOwnedFD: Int64
    let tracer: Tracer
    /// Runs while an injected call is waiting (other threads' stops must be served).
    let whileWaiting: () -> Void
    /// The descriptors PROG kept from what `legato run` inherited (named in refusals).
    var kept = KeptDescriptors()
    /// The processes of the tree being checkpointed with it (their children are not refused).
    var tree: Set<pid_t> = []

    /// The syscall a thread stopped with ERESTART_RESTARTBLOCK was in: poll, nanosleep,
    /// clock_nanosleep or futex, whose arguments are still in its registers — also when it was in
    /// restart_syscall already (an earlier stop or signal, at which the tracer noted the call:
    /// Tracee.restartingCall); restart_syscall (219) itself where it cannot be told.
    static func restartedCall(_ regs: Registers, noted: UInt64?) -> UInt64 {
        guard regs.orig_rax == 219 else { return regs.orig_rax }
        return noted ?? 219
    }

    func thread(_ t: Tracee) throws -> ProcessImage.ThreadState {
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
                // The kernel would go on through restart_syscall and the thread's restart block,
                // which a restored thread does not have (it would return EINTR): the sleep itself
                // is entered again, with its arguments (a relative timeout starts over).
                regs.rax = Self.restartedCall(regs, noted: t.restartingCall)
                regs.rip -= 2
            default: break
            }
        }
        let xstate = try Sys.getRegisterSet(t.tid, type: Sys.ntX86XState)
        let rseq = try? Sys.rseqConfiguration(t.tid)
        let inj = try Sys.Injection(tid: t.tid, stub: scratch, whileWaiting: whileWaiting)
        defer { tracer.tolerateGone { try inj.cure() } }
        let tidAddressSlot = scratch + 2048
        _ = try inj.syscall(.prctl, 40, tidAddressSlot)  // prctl(PR_GET_TID_ADDRESS, &slot)
        _ = try inj.syscall(.sigaltstack, 0, scratch + 2064)   // sigaltstack(NULL, &old)
        let deathSignalSlot = scratch + 2112
        let deathSignal = try inj.syscall(.prctl, 2, deathSignalSlot) == 0 ? deathSignalSlot : nil  // PR_GET_PDEATHSIG
        let slack = try inj.syscall(.prctl, 30)  // PR_GET_TIMERSLACK
        var words = [UInt64](repeating: 0, count: 6)
        try words.withUnsafeMutableBytes { try Sys.readProcessMemory(pid: pid, address: tidAddressSlot, length: 48, into: $0.baseAddress!) }
        let (head, len) = Sys.robustList(t.tid)
        return ProcessImage.ThreadState(tid: Sys.namespaceTID(t.tid), registers: regs.words, xstate: Data(xstate), sigmask: try Sys.signalMask(t.tid),
                                        rseq: rseq.map { .init(address: $0.address, size: $0.size, signature: $0.signature) },
                                        tidAddress: words[0], robustList: head, robustListLength: len,
                                        sigaltstack: [words[2], words[3], words[4]],
                                        name: ProcFile.text("/proc/\(t.tid)/comm").map { String($0.dropLast($0.hasSuffix("\n") ? 1 : 0)) },
                                        parentDeathSignal: try deathSignal.map { slot in
                                            var v: Int32 = 0
                                            try withUnsafeMutableBytes(of: &v) { try Sys.readProcessMemory(pid: pid, address: slot, length: 4, into: $0.baseAddress!) }
                                            return v
                                        },
                                        timerSlackNanos: slack > 0 ? UInt64(slack) : nil,
                                        noNewPrivileges: statusField("NoNewPrivs", of: t.tid) == "1",
                                        pendingSignals: try Sys.pendingSignals(t.tid, shared: false).map { Data($0) })
    }

    /// What one injection reads for the whole process.
    struct ProcessWide {
        var sigactions: [ProcessImage.SigAction]
        var brk: UInt64
        var itimers: [[UInt64]]
        var attributes: ProcessImage.Attributes
        var posixTimers: [ProcessImage.PosixTimer]
    }

    /// Every signal's disposition, brk, the interval timers and the prctl attributes, by injection;
    /// the attributes /proc shows from there.
    func processWide(using t: Tracee) throws -> ProcessWide {
        let inj = try Sys.Injection(tid: t.tid, stub: scratch, whileWaiting: whileWaiting)
        defer {
            tracer.tolerateGone { try inj.cure() }
            t.pendingSignals.append(contentsOf: inj.deferredSignals)
        }
        var out: [ProcessImage.SigAction] = []
        let slot = scratch + 3072
        // Only the signals with a handler or ignored (status' SigCgt, SigIgn) and SIGCHLD (whose
        // SA_NOCLDSTOP/SA_NOCLDWAIT count even with the default action) are asked: for any other,
        // the default action's flags and mask change nothing.
        let caught = (UInt64(statusField("SigCgt") ?? "", radix: 16) ?? UInt64.max) | (UInt64(statusField("SigIgn") ?? "", radix: 16) ?? UInt64.max)
        for sig in 1..<65 where sig != SIGKILL && sig != SIGSTOP && (sig == SIGCHLD || caught & (1 << UInt64(sig - 1)) != 0) {
            let r = try inj.syscall(.rtSigaction, UInt64(sig), 0, slot, 8)  // rt_sigaction(sig, NULL, &old, 8)
            guard r == 0 else { continue }
            var a = [UInt64](repeating: 0, count: 4)
            try a.withUnsafeMutableBytes { try Sys.readProcessMemory(pid: pid, address: slot, length: 32, into: $0.baseAddress!) }
            if a[0] != 0 || a[1] != 0 || a[3] != 0 {
                out.append(.init(signal: Int32(sig), handler: a[0], flags: a[1], restorer: a[2], mask: a[3]))
            }
        }
        let brk = try inj.syscall(.brk, 0)
        var timers: [[UInt64]] = []
        for which in 0..<3 {
            guard try inj.syscall(.getitimer, UInt64(which), slot) == 0 else { timers.append([0, 0, 0, 0]); continue }  // getitimer
            var v = [UInt64](repeating: 0, count: 4)
            try v.withUnsafeMutableBytes { try Sys.readProcessMemory(pid: pid, address: slot, length: 32, into: $0.baseAddress!) }
            timers.append(v)
        }
        func prctlInt(_ option: UInt64) throws -> Int32 {  // options that write an int through arg2
            guard try inj.syscall(.prctl, option, slot) == 0 else { return 0 }
            var v: Int32 = 0
            try withUnsafeMutableBytes(of: &v) { try Sys.readProcessMemory(pid: pid, address: slot, length: 4, into: $0.baseAddress!) }
            return v
        }
        let attributes = ProcessImage.Attributes(
            personality: UInt64(ProcFile.text("/proc/\(pid)/personality")?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "0", radix: 16) ?? 0,
            oomScoreAdj: Int32(ProcFile.text("/proc/\(pid)/oom_score_adj")?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "0") ?? 0,
            childSubreaper: try prctlInt(37) != 0,          // PR_GET_CHILD_SUBREAPER
            dumpable: Int32(clamping: try inj.syscall(.prctl, 3)),   // PR_GET_DUMPABLE
            loginuid: ProcFile.text("/proc/\(pid)/loginuid").flatMap { UInt32($0.trimmingCharacters(in: .whitespacesAndNewlines)) })
        var posix: [ProcessImage.PosixTimer] = []
        for var t in Self.posixTimers(ProcFile.text("/proc/\(pid)/timers") ?? "") {
            let r = try inj.syscall(.timerGettime, UInt64(t.id), slot)
            guard r == 0 else { throw SystemError("timer_gettime(\(t.id)) in pid \(pid)", code: Int32(-r)) }
            var v = [UInt64](repeating: 0, count: 4)
            try v.withUnsafeMutableBytes { try Sys.readProcessMemory(pid: pid, address: slot, length: 32, into: $0.baseAddress!) }
            t.setting = v
            posix.append(t)
        }
        return ProcessWide(sigactions: out, brk: UInt64(bitPattern: brk), itimers: timers, attributes: attributes, posixTimers: posix)
    }

    /// F_GETSIG of each of `descriptors` (a lease's break signal), where not 0, by injection.
    func descriptorSignals(using t: Tracee, _ descriptors: [Int32]) throws -> [Int32: Int32] {
        guard !descriptors.isEmpty else { return [:] }
        let inj = try Sys.Injection(tid: t.tid, stub: scratch, whileWaiting: whileWaiting)
        defer {
            tracer.tolerateGone { try inj.cure() }
            t.pendingSignals.append(contentsOf: inj.deferredSignals)
        }
        var signals: [Int32: Int32] = [:]
        for fd in descriptors {
            let sig = try inj.syscall(.fcntl, UInt64(fd), 11)  // F_GETSIG
            if sig > 0 { signals[fd] = Int32(sig) }
        }
        return signals
    }

    /// What of a frozen process is read from /proc and from its memory, with no ptrace (so any
    /// thread may read it while the tracer's injects), and why any of it cannot be kept.
    struct Files {
        var fds: [ProcessImage.FileDescriptor] = []
        var vmas: [ProcessImage.VMA] = []
        var aioRings: [ProcessImage.AioRing] = []
        var mmFields: ProcessImage.MMFields
        var auxv: [UInt64]
        var umask: UInt32
        var resourceLimits: [ProcessImage.RLimit]
        var children: (zombies: [ProcessImage.Zombie], refused: [String], passing: Bool)
        var exe: String?
        var cwd: String?
        var refused: [String] = []
    }

    /// `early`: smaps read before the pause (see mappings); `tracedCalls`, `aio`: the address
    /// space's, read on the tracer's thread before.
    /// `sockets`: every UNIX socket, by inode (Sys.unixSockets), read once for the pause.
    func files(early: MappingFlags.Reading, tracedCalls: UInt64, aio: AioContexts, sockets: Result<[UInt64: UnixSocketInfo], Error>) throws -> Files {
        var f = Files(mmFields: try mmFields(), auxv: auxv(), umask: umask(), resourceLimits: resourceLimits(), children: childrenOutsideTree(),
                      exe: try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe"),
                      cwd: try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/cwd"))
        do { f.fds = try fileDescriptors(sockets: sockets) } catch let e as CheckpointRefused { f.refused.append(e.description) }
        do { f.vmas = try mappings(early: early, tracedCalls: tracedCalls) } catch let e as CheckpointRefused { f.refused.append(e.description) }
        let rings = try AioRings.capture(f.vmas, pid: pid, contexts: aio)
        f.aioRings = rings.rings
        f.refused += rings.refused
        return f
    }

    /// The timers /proc/PID/timers lists (their settings still to be read):
    /// "ID: 0", "signal: 14/00000000deadbeef", "notify: signal/tid.812", "ClockID: 1" per timer; the
    /// pid or tid is as the agent's /proc sees it.
    static func posixTimers(_ text: String) -> [ProcessImage.PosixTimer] {
        var out: [ProcessImage.PosixTimer] = []
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { continue }
            switch parts[0] {
            case "ID":
                out.append(.init(id: Int32(parts[1]) ?? 0, clock: 0, notify: 0, signal: 0, value: 0, thread: 0, setting: []))
            case "signal" where !out.isEmpty:
                let f = parts[1].split(separator: "/")
                out[out.count - 1].signal = Int32(f.first ?? "") ?? 0
                out[out.count - 1].value = f.count > 1 ? UInt64(f[1], radix: 16) ?? 0 : 0
            case "notify" where !out.isEmpty:
                // "signal/pid.N", "none/pid.N", "signal/tid.N" (SIGEV_THREAD_ID)
                let f = parts[1].split(separator: "/")
                let how = f.first.map(String.init) ?? "signal"
                let target = f.count > 1 ? f[1].split(separator: ".") : []
                let byThread = target.first == "tid"
                out[out.count - 1].notify = (how == "none" ? 1 : how == "thread" ? 2 : 0) | (byThread ? 4 : 0)
                if byThread, target.count > 1, let tid = pid_t(target[1]) { out[out.count - 1].thread = Sys.namespaceTID(tid) }
            case "ClockID" where !out.isEmpty:
                out[out.count - 1].clock = Int32(parts[1]) ?? 0
            default: continue
            }
        }
        return out
    }

    /// The seccomp filters the agent's own process runs under (inherited from whatever started it).
    static let inheritedSeccompFilters = ProcFile.statusField("self", "Seccomp_filters").flatMap { Int($0) } ?? 0

    /// A field of /proc/PID/status of the process, or of its thread `tid`.
    func statusField(_ name: String, of tid: pid_t? = nil) -> String? { ProcFile.statusField("\(tid ?? pid)", name) }

    /// The seccomp filters the process installed itself, oldest first: those beyond what `legato
    /// run` inherited (a container's, a systemd unit's: a restore started the same way has them)
    /// and the agent's own. Its threads must all run under the same ones (else refused by name).
    func ownSeccompFilters(threads: [pid_t]) throws -> [Data] {
        func count(_ tid: pid_t) -> Int { statusField("Seccomp_filters", of: tid).flatMap { Int($0) } ?? 0 }
        let own = count(pid) - Self.inheritedSeccompFilters - 1
        guard own > 0 else { return [] }
        if let other = threads.first(where: { count($0) != count(pid) }) {
            throw CheckpointRefused(description: "thread \(Sys.namespaceTID(other)) runs under other seccomp filters than the process's \(own)")
        }
        let first = count(pid) - own  // (index 0 is the oldest filter)
        return try (first..<count(pid)).map { Data(try Sys.seccompFilter(pid, index: $0)) }
    }

    /// The process's children outside the tree: those that exited with their status not collected
    /// yet (zombies, saved), and the others, named: live ones the agent has not taken over yet (a
    /// fork a moment ago: `passing`), and zombies a restore cannot make again (a core dumped).
    func childrenOutsideTree() -> (zombies: [ProcessImage.Zombie], refused: [String], passing: Bool) {
        let children = ProcFile.children(of: pid).filter { !tree.contains($0) }.sorted()
        var zombies: [ProcessImage.Zombie] = [], refused: [String] = []
        var passing = true
        for child in children {
            let comm = ProcFile.text("/proc/\(child)/comm")?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
            let name = "pid \(Sys.namespaceTID(child)) (\(comm))"
            // stat: state is f[0], exit_signal f[35], exit_code (a wait status) f[49].
            guard let f = ProcFile.statFields(child), f.count > 49 else { refused.append("\(name), a child that went away"); continue }
            guard f[0] == "Z" else { refused.append("\(name), a child not taken over yet"); continue }
            guard let status = Int32(f[49]), let exitSignal = Int32(f[35]) else { refused.append("\(name), an exited child"); passing = false; continue }
            if status & 0x80 != 0 {
                refused.append("\(name), a child that dumped core, its status not yet collected")
                passing = false
                continue
            }
            zombies.append(.init(pid: Sys.namespaceTID(child), command: comm, status: status, exitSignal: exitSignal))
        }
        return (zombies, refused, passing && !refused.isEmpty)
    }

    func mmFields() throws -> ProcessImage.MMFields {
        guard let stat = ProcFile.text("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else {
            throw CaptureError.unreadableProcFile("/proc/\(pid)/stat")
        }
        // Fields after "(comm)": state is field 3; we index from field 3 = f[0].
        let f = stat[stat.index(after: close)...].split(separator: " ").map { UInt64($0) ?? 0 }
        func field(_ n: Int) -> UInt64 { n - 3 < f.count ? f[n - 3] : 0 }
        return .init(startCode: field(26), endCode: field(27), startData: field(45), endData: field(46), startBrk: field(47), brk: 0,
                     startStack: field(28), argStart: field(48), argEnd: field(49), envStart: field(50), envEnd: field(51))
    }

    func auxv() -> [UInt64] {
        guard let d = ProcFile.bytes("/proc/\(pid)/auxv") else { return [] }
        return d.withUnsafeBytes { raw in (0..<raw.count / 8).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self) } }
    }

    func umask() -> UInt32 {
        statusField("Umask").flatMap { UInt32($0, radix: 8) } ?? 0o22
    }

    func resourceLimits() -> [ProcessImage.RLimit] {
        (0..<16).compactMap { res in
            Sys.resourceLimit(pid, Int32(res)).map { .init(resource: Int32(res), soft: $0.soft, hard: $0.hard) }
        }
    }

    /// Every mapping of the process (but the agent's scratch area) with its flags; refuses, naming
    /// each, the mappings a restore cannot bring back exactly.
    /// `early`: smaps read before the pause, used if it still holds (else smaps is read again now).
    func mappings(early: MappingFlags.Reading?, tracedCalls: UInt64) throws -> [ProcessImage.VMA] {
        guard let mapsText = ProcFile.text("/proc/\(pid)/maps") else { throw AddressSpaceError.unreadableMaps(pid: pid) }
        let flags: [UInt64: [String]]
        if let early, early.holds(mapsText: mapsText, tracedCalls: tracedCalls) {
            flags = early.flags
        } else {
            flags = MappingFlags.Reading(pid: pid, tracedCalls: tracedCalls).flags
        }
        var out: [ProcessImage.VMA] = []
        var refused: [String] = []
        for m in ProcMaps.parse(mapsText) {
            guard var v = vma(m) else { continue }
            v.vmFlags = flags[v.start]
            if let why = Self.unrestorable(v) { refused.append("\(why) at \(describeRange(v.start, v.end - v.start))") }
            out.append(v)
        }
        if !refused.isEmpty {
            throw CheckpointRefused(description: "it maps " + refused.joined(separator: "; "))
        }
        return out
    }

    /// Why mapping `v` has no exact restore (nil: it has one). A mapping of something unlinked
    /// ("(deleted)") is brought back as a shared object (SharedObjects) but SysV shared memory
    /// and the aio ring (AioRings).
    static func unrestorable(_ v: ProcessImage.VMA) -> String? {
        switch v.kind {
        case .vdso, .vvar, .vsyscall: return nil
        default: break
        }
        if SharedObjects.kind(of: v) != nil { return nil }  // saved with the checkpoint (SharedObjects)
        if let path = v.path, path.hasSuffix(" (deleted)") {
            let file = String(path.dropLast(" (deleted)".count))
            if file == "/dev/zero" { return "shared anonymous memory (\(path))" }
            if file.hasPrefix("/SYSV") { return "SysV shared memory (\(path))" }
            if file.hasPrefix("/memfd:") { return "a memfd (\(path))" }
            if file == "/[aio]" { return v.kind == .shared ? nil : "an aio ring (\(path)) mapped privately" }  // AioRings
            return "the unlinked file \(file)"
        }
        if v.kind == .shared && !(v.path?.hasPrefix("/") ?? false) { return "shared anonymous memory (\(v.path ?? "anonymous"))" }
        if v.kind == .shared, let path = v.path, path.hasPrefix("/dev/") { return "a shared mapping of the device \(path)" }
        return v.vmFlags.flatMap(MappingFlags.refusal)
    }

    func vma(_ m: MapsEntry) -> ProcessImage.VMA? {
        if m.start == scratch { return nil }
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
    func fileDescriptors(sockets: Result<[UInt64: UnixSocketInfo], Error>) throws -> [ProcessImage.FileDescriptor] {
        let dir = "/proc/\(pid)/fd"
        var out: [ProcessImage.FileDescriptor] = []
        var refused: [String] = []
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            guard let fd = Int32(name), Int64(fd) != agentOwnedFD else { continue }  // the agent's own
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: dir + "/" + name) else { continue }
            var flags: UInt32 = 0
            var pos: Int64 = 0
            var locks: [ProcessImage.FileLock] = []
            let fdinfo = ProcFile.text("/proc/\(pid)/fdinfo/\(fd)")
            if let info = fdinfo {
                for line in info.split(separator: "\n") {
                    if line.hasPrefix("flags:") { flags = UInt32(line.dropFirst(6).trimmingCharacters(in: .whitespaces), radix: 8) ?? 0 }
                    if line.hasPrefix("pos:") { pos = Int64(line.dropFirst(4).trimmingCharacters(in: .whitespaces)) ?? 0 }
                    if line.hasPrefix("lock:") {
                        do {
                            if let l = try ProcessImage.FileLock.parse(line, fd: fd) { locks.append(l) }
                        } catch let e as CheckpointRefused {
                            refused.append(e.description)
                        }
                    }
                }
            }
            let kind: ProcessImage.FileDescriptor.Kind
            var unixSocket: ProcessImage.UnixSocketState?
            var inetSocket: ProcessImage.InetSocketState?
            var pidfdTarget: Int32?
            var inotifyWatches: [ProcessImage.InotifyWatch]?
            var ptyIndex: Int32?
            if target == "/dev/null" { kind = .devnull } else if target == "/dev/zero" { kind = .devzero } else if target == "/dev/urandom" || target == "/dev/random" {
                kind = .devurandom
            } else if target == "/dev/ptmx" || target == "/dev/pts/ptmx" {
                kind = .ptyMaster
                ptyIndex = fdinfo.flatMap { PtyDescriptors.masterIndex(fdinfo: $0) }
                guard ptyIndex != nil else { throw SystemError("read the pty master at fd \(fd) of pid \(pid): its fdinfo has no tty-index", code: EINVAL) }
            } else if target.hasPrefix("/dev/pts/") || target.hasPrefix("/dev/tty") || target == "/dev/console" {
                kind = .tty  // (a pty's slave whose master the tree holds becomes a ptySlave: PtyDescriptors)
                if target.hasPrefix("/dev/pts/") { ptyIndex = Int32(target.dropFirst("/dev/pts/".count)) }
            } else if target.hasPrefix("pipe:") {
                kind = .pipe
            } else if let event = EventDescriptors.kind(of: target) {
                kind = event
            } else if target == "anon_inode:inotify" || target == "anon_inode:[inotify]" {
                kind = .inotify
                do {
                    inotifyWatches = try InotifyDescriptors.read(fd: fd, pid: pid, fdinfo: fdinfo ?? "") { describe(fd, $0) }
                } catch let e as CheckpointRefused {
                    refused.append(e.description)
                    continue
                }
            } else if target == "anon_inode:[pidfd]" {
                kind = .pidfd
                do {
                    pidfdTarget = try pidfdProcess(fd, fdinfo: fdinfo ?? "", path: target)
                } catch let e as CheckpointRefused {
                    refused.append(e.description)
                    continue
                }
            } else if target.hasPrefix("socket:["), let inode = UInt64(target.dropFirst(8).dropLast()), let info = try sockets.get()[inode] {
                kind = .unixSocket
                do {
                    unixSocket = try UnixSocketDescriptors.read(fd: fd, pid: pid, info: info, table: try sockets.get(), tree: tree) { describe(fd, $0) }
                } catch let e as CheckpointRefused {
                    refused.append(e.description)
                    continue
                }
            } else if target.hasPrefix("socket:["), let inode = UInt64(target.dropFirst(8).dropLast()) {
                kind = .inetSocket
                do {
                    inetSocket = try InetSocketDescriptors.read(fd: fd, pid: pid, inode: inode) { describe(fd, $0) }
                } catch let e as CheckpointRefused {
                    refused.append(e.description)
                    continue
                }
            } else if target.hasPrefix("/") && target.hasSuffix(SharedObjects.deletedSuffix) {
                // A memfd, or a ghost: a file or directory unlinked while open (saved as a shared object).
                let opened = openedType(fd)
                if target.hasPrefix("/memfd:") && opened == S_IFREG { kind = .memfd } else if opened == S_IFREG || opened == S_IFDIR { kind = .unlinked } else {
                    refused.append(describe(fd, "\(target) (\(opened == S_IFIFO ? "a FIFO" : opened == S_IFSOCK ? "a socket file" : "a device") unlinked while open, which cannot be made again)"))
                    continue
                }
            } else if target.hasPrefix("/") && flags & 0o10000000 != 0 {  // O_PATH: a place, whatever is there
                kind = .path
            } else if target.hasPrefix("/") && !target.hasPrefix("/dev/") {
                let opened = openedType(fd)
                if opened == S_IFREG { kind = .regular } else if opened == S_IFDIR { kind = .directory } else if opened == S_IFIFO { kind = .fifo } else {
                    refused.append(describe(fd, "\(target), which is not a regular file, a directory or a FIFO"))
                    continue
                }
            } else {
                refused.append(describe(fd, "\(target) (\(describeKind(target)))"))
                continue
            }
            var entry = ProcessImage.FileDescriptor(fd: fd, kind: kind, path: target, flags: flags, offset: pos)
            entry.unixSocket = unixSocket
            entry.inetSocket = inetSocket
            entry.pidfdTarget = pidfdTarget
            entry.inotify = inotifyWatches
            entry.ptyIndex = ptyIndex
            if !locks.isEmpty {
                guard kind == .regular else {
                    refused.append(describe(fd, "\(target), locked (only regular files' locks are taken again)"))
                    continue
                }
                entry.locks = locks
            }
            if kind == .pipe { entry.pipeInode = UInt64(target.dropFirst(6).dropLast()) }
            if kind == .fifo {
                var st = stat()
                if stat("/proc/\(pid)/fd/\(fd)", &st) == 0 { entry.pipeInode = UInt64(st.st_ino) }
            }
            if EventDescriptors.kind(of: target) != nil { try EventDescriptors.read(&entry, fdinfo: fdinfo ?? "", pid: pid) }
            out.append(entry)
        }
        try Self.markDuplicates(&out, pid: pid, among: Self.dupKinds)
        if !refused.isEmpty {
            throw CheckpointRefused(description: refused.sorted().joined(separator: "; ") + "; cannot checkpoint \(refused.count == 1 ? "it" : "them")")
        }
        return out.sorted { $0.fd < $1.fd }
    }

    /// Files that are one open file description under several numbers (a dup, `2>&1`): each but the
    /// lowest is restored as a dup of it, so they share the offset again. (Pipes are grouped by their
    /// inode; ttys stay what `legato restore` has, but for a pty's slaves: PtyDescriptors.)
    static func markDuplicates(_ fds: inout [ProcessImage.FileDescriptor], pid: pid_t, among kinds: Set<ProcessImage.FileDescriptor.Kind>) throws {
        let files = fds.indices.filter { kinds.contains(fds[$0].kind) }.sorted { fds[$0].fd < fds[$1].fd }
        for (k, i) in files.enumerated() {
            for j in files[..<k] where fds[j].dupOf == nil && fds[j].path == fds[i].path {
                if try Sys.sameOpenFile(pid: pid, fds[j].fd, fds[i].fd) {
                    fds[i].dupOf = fds[j].fd
                    break
                }
            }
        }
    }

    static let dupKinds: Set<ProcessImage.FileDescriptor.Kind> = [.regular, .directory, .path, .devnull, .devzero, .devurandom, .eventfd, .timerfd, .signalfd,
                                                                   .epoll, .unixSocket, .inetSocket, .fifo, .memfd, .unlinked, .pidfd, .inotify, .ptyMaster]

    /// The pid (or tid) in PROG's namespace that pidfd `fd` refers to (fdinfo's `Pid:` as the agent
    /// sees it, `NSpid:`'s last); refused unless it is a live process or thread of the tree.
    private func pidfdProcess(_ fd: Int32, fdinfo: String, path: String) throws -> Int32 {
        var host: pid_t?, inner: Int32?
        for line in fdinfo.split(separator: "\n") {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if words.first == "Pid:", words.count > 1 { host = pid_t(words[1]) }
            if words.first == "NSpid:", let last = words.last { inner = Int32(last) }
        }
        guard let host else { throw SystemError("read the pidfd at fd \(fd) of pid \(pid): its fdinfo has no Pid", code: EINVAL) }
        guard host > 0, let inner else { throw CheckpointRefused(description: describe(fd, "\(path), a pidfd of a process that has exited (no exact restore)")) }
        // (A thread's pidfd names its tid: the tree's processes' threads are in /proc/PID/task.)
        guard tree.contains(host) || tree.contains(where: { access("/proc/\($0)/task/\(host)", F_OK) == 0 }) || host == pid else {
            let command = ProcFile.text("/proc/\(host)/comm")?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
            throw CheckpointRefused(description: describe(fd, "\(path), a pidfd of pid \(host) (\(command)), which is outside the program"))
        }
        return inner
    }

    /// The file type (S_IFREG, S_IFDIR...) of what fd `fd` is open on; 0 if it cannot be seen.
    private func openedType(_ fd: Int32) -> mode_t {
        var st = stat()
        return stat("/proc/\(pid)/fd/\(fd)", &st) == 0 ? st.st_mode & S_IFMT : 0
    }

    /// "fd 5 is WHAT", with the flag that kept it if PROG inherited it from `legato run`.
    private func describe(_ fd: Int32, _ what: String) -> String { kept.describe(fd, what) }

    private func describeKind(_ target: String) -> String {
        if target.hasPrefix("socket:") { return "a socket of a kind that is not kept" }
        if target.hasPrefix("anon_inode:[io_uring]") { return "an io_uring instance, which is not kept" }
        if target.hasPrefix("anon_inode:[fanotify]") { return "a fanotify instance, which is not kept" }
        if target.hasPrefix("anon_inode:") { return "an anonymous inode" }
        if target.hasPrefix("/dev/") { return "a device" }
        return "unsupported"
    }
}
