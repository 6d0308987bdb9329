// The only Swift file that calls CShims. Everything above it uses these typed wrappers.
// Each wrapper throws SystemError naming what was attempted; EINTR is retried in C.
import CShims
import Glibc

public typealias Registers = user_regs_struct

public enum Sys {
    // MARK: ptrace

    public struct PtraceOptions: OptionSet, Sendable {
        public let rawValue: UInt64
        public init(rawValue: UInt64) { self.rawValue = rawValue }
        public static let traceSysGood = PtraceOptions(rawValue: 1)
        public static let traceFork = PtraceOptions(rawValue: 1 << 1)
        public static let traceVfork = PtraceOptions(rawValue: 1 << 2)
        public static let traceClone = PtraceOptions(rawValue: 1 << 3)
        public static let traceExec = PtraceOptions(rawValue: 1 << 4)
        public static let traceVforkDone = PtraceOptions(rawValue: 1 << 5)
        public static let traceExit = PtraceOptions(rawValue: 1 << 6)
        public static let traceSeccomp = PtraceOptions(rawValue: 1 << 7)
        public static let exitKill = PtraceOptions(rawValue: 1 << 20)
    }

    /// ptrace event numbers (status >> 16 of a ptrace-event stop).
    public enum PtraceEvent: Int32 {
        case fork = 1, vfork = 2, clone = 3, exec = 4, vforkDone = 5, exit = 6, seccomp = 7, stop = 128
    }

    private static let PTRACE_CONT: Int32 = 7
    private static let PTRACE_SINGLESTEP: Int32 = 9
    private static let PTRACE_DETACH: Int32 = 17
    private static let PTRACE_SYSCALL: Int32 = 24
    private static let PTRACE_SETOPTIONS: Int32 = 0x4200
    private static let PTRACE_SEIZE: Int32 = 0x4206
    private static let PTRACE_INTERRUPT: Int32 = 0x4207
    private static let PTRACE_LISTEN: Int32 = 0x4208
    private static let PTRACE_PEEKDATA: Int32 = 2
    private static let PTRACE_POKEDATA: Int32 = 5
    private static let PTRACE_GETFPREGS: Int32 = 14

    @inline(__always)
    private static func ptrace(_ what: String, _ req: Int32, _ tid: pid_t, _ addr: UInt64 = 0, _ data: UInt64 = 0) throws -> Int {
        let r = lg_ptrace(req, tid, addr, data)
        if r < 0 && req != PTRACE_PEEKDATA { throw SystemError("\(what) of tid \(tid)", code: Int32(-r)) }
        return r
    }

    public static func ptraceSeize(_ pid: pid_t, options: PtraceOptions) throws {
        _ = try ptrace("PTRACE_SEIZE", PTRACE_SEIZE, pid, 0, options.rawValue)
    }

    public static func ptraceInterrupt(_ tid: pid_t) throws {
        _ = try ptrace("PTRACE_INTERRUPT", PTRACE_INTERRUPT, tid)
    }

    /// Resumes a stopped tracee, delivering `signal` (0 for none).
    public static func ptraceCont(_ tid: pid_t, signal: Int32 = 0) throws {
        _ = try ptrace("PTRACE_CONT", PTRACE_CONT, tid, 0, UInt64(signal))
    }

    /// Resumes to the next syscall entry/exit stop.
    public static func ptraceSyscall(_ tid: pid_t, signal: Int32 = 0) throws {
        _ = try ptrace("PTRACE_SYSCALL", PTRACE_SYSCALL, tid, 0, UInt64(signal))
    }

    public static func ptraceListen(_ tid: pid_t) throws {
        _ = try ptrace("PTRACE_LISTEN", PTRACE_LISTEN, tid)
    }

    public static func ptraceDetach(_ tid: pid_t, signal: Int32 = 0) throws {
        _ = try ptrace("PTRACE_DETACH", PTRACE_DETACH, tid, 0, UInt64(signal))
    }

    public static func ptraceSingleStep(_ tid: pid_t) throws {
        _ = try ptrace("PTRACE_SINGLESTEP", PTRACE_SINGLESTEP, tid)
    }

    public static func getRegisters(_ tid: pid_t) throws -> Registers {
        var regs = Registers()
        let r = lg_ptrace_getregs(tid, &regs)
        if r < 0 { throw SystemError("PTRACE_GETREGS of tid \(tid)", code: -r) }
        return regs
    }

    public static func setRegisters(_ tid: pid_t, _ regs: Registers) throws {
        var copy = regs
        let r = lg_ptrace_setregs(tid, &copy)
        if r < 0 { throw SystemError("PTRACE_SETREGS of tid \(tid)", code: -r) }
    }

    /// The signal behind a stop, or nil in a group-stop (PTRACE_GETSIGINFO fails with EINVAL there).
    public static func stopSignalInfo(_ tid: pid_t) throws -> (signo: Int32, code: Int32, sender: pid_t)? {
        var signo: Int32 = 0, code: Int32 = 0, sender: Int32 = 0
        let r = lg_ptrace_getsiginfo(tid, &signo, &code, &sender)
        if r == -EINVAL { return nil }
        if r < 0 { throw SystemError("PTRACE_GETSIGINFO of tid \(tid)", code: -r) }
        return (signo, code, sender)
    }

    public static func eventMessage(_ tid: pid_t) throws -> UInt64 {
        var msg: UInt64 = 0
        let r = lg_ptrace_geteventmsg(tid, &msg)
        if r < 0 { throw SystemError("PTRACE_GETEVENTMSG of tid \(tid)", code: -r) }
        return msg
    }

    public static let ntX86XState: Int32 = 0x202

    /// A register set (PTRACE_GETREGSET), e.g. the XSAVE area (NT_X86_XSTATE).
    public static func getRegisterSet(_ tid: pid_t, type: Int32, maxBytes: Int = 16384) throws -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: maxBytes)
        let r = buf.withUnsafeMutableBytes { lg_ptrace_getregset(tid, type, $0.baseAddress, UInt64(maxBytes)) }
        if r < 0 { throw SystemError("PTRACE_GETREGSET 0x\(String(type, radix: 16)) of tid \(tid)", code: Int32(-r)) }
        return Array(buf.prefix(Int(r)))
    }

    public static func setRegisterSet(_ tid: pid_t, type: Int32, _ data: [UInt8]) throws {
        let r = data.withUnsafeBytes { lg_ptrace_setregset(tid, type, $0.baseAddress, UInt64($0.count)) }
        if r < 0 { throw SystemError("PTRACE_SETREGSET 0x\(String(type, radix: 16)) of tid \(tid)", code: -r) }
    }

    public static func signalMask(_ tid: pid_t) throws -> UInt64 {
        var m: UInt64 = 0
        let r = lg_ptrace_getsigmask(tid, &m)
        if r < 0 { throw SystemError("PTRACE_GETSIGMASK of tid \(tid)", code: -r) }
        return m
    }

    public static func setSignalMask(_ tid: pid_t, _ mask: UInt64) throws {
        let r = lg_ptrace_setsigmask(tid, mask)
        if r < 0 { throw SystemError("PTRACE_SETSIGMASK of tid \(tid)", code: -r) }
    }

    /// The thread's rseq registration (address, size, signature), nil when it has none.
    public static func rseqConfiguration(_ tid: pid_t) throws -> (address: UInt64, size: UInt32, signature: UInt32)? {
        var a: UInt64 = 0, n: UInt32 = 0, sig: UInt32 = 0
        let r = lg_ptrace_get_rseq(tid, &a, &n, &sig)
        if r < 0 { throw SystemError("PTRACE_GET_RSEQ_CONFIGURATION of tid \(tid)", code: -r) }
        return a == 0 ? nil : (a, n, sig)
    }

    /// The signals pending for thread `tid` (or, `shared`, for its whole process) as raw 128-byte
    /// siginfo records, oldest first, left queued.
    public static func pendingSignals(_ tid: pid_t, shared: Bool) throws -> [[UInt8]] {
        var buf = [UInt8](repeating: 0, count: 128 * 64)
        let n = buf.withUnsafeMutableBytes { lg_ptrace_peek_siginfo(tid, shared ? 1 : 0, $0.baseAddress, 64) }
        if n < 0 { throw SystemError("PTRACE_PEEKSIGINFO\(shared ? " (shared)" : "") tid \(tid)", code: -n) }
        return (0..<Int(n)).map { Array(buf[$0 * 128..<($0 + 1) * 128]) }
    }

    public static func robustList(_ tid: pid_t) -> (head: UInt64, length: UInt64) {
        var h: UInt64 = 0, l: UInt64 = 0
        return lg_get_robust_list(tid, &h, &l) == 0 ? (h, l) : (0, 0)
    }

    public static func resourceLimit(_ pid: pid_t, _ resource: Int32) -> (soft: UInt64, hard: UInt64)? {
        var c: UInt64 = 0, m: UInt64 = 0
        return lg_prlimit(pid, resource, nil, nil, &c, &m) == 0 ? (c, m) : nil
    }

    public static func setResourceLimit(_ pid: pid_t, _ resource: Int32, soft: UInt64, hard: UInt64) throws {
        var c = soft, m = hard, oc: UInt64 = 0, om: UInt64 = 0
        let r = lg_prlimit(pid, resource, &c, &m, &oc, &om)
        if r < 0 { throw SystemError("prlimit \(resource) of pid \(pid)", code: -r) }
    }

    public static func pokeData(_ tid: pid_t, address: UInt64, word: UInt64) throws {
        _ = try ptrace("PTRACE_POKEDATA 0x\(String(address, radix: 16))", PTRACE_POKEDATA, tid, address, word)
    }

    // MARK: wait

    public struct WaitStatus: Equatable, CustomStringConvertible {
        public let raw: Int32
        public init(raw: Int32) { self.raw = raw }
        public var exited: Bool { raw & 0x7f == 0 }
        public var exitCode: Int32 { (raw >> 8) & 0xff }
        public var signaled: Bool { raw & 0x7f != 0 && raw & 0x7f != 0x7f }
        public var terminationSignal: Int32 { raw & 0x7f }
        public var stopped: Bool { raw & 0xff == 0x7f }
        public var stopSignal: Int32 { (raw >> 8) & 0xff }
        /// The ptrace event of a ptrace-event stop (0 when none).
        public var event: Int32 { (raw >> 16) & 0xffff }
        public var description: String {
            if exited { return "exited \(exitCode)" }
            if signaled { return "killed by signal \(terminationSignal)" }
            if stopped { return "stopped sig \(stopSignal) event \(event)" }
            return "status 0x\(String(raw, radix: 16))"
        }
    }

    /// waitpid(pid, __WALL [| WNOHANG]); nil when nothing changed (WNOHANG) or no children (ECHILD).
    public static func wait(_ pid: pid_t = -1, nohang: Bool) throws -> (pid: pid_t, status: WaitStatus)? {
        var status: Int32 = 0
        let r = lg_waitpid(pid, &status, LG_WALL | (nohang ? LG_WNOHANG : 0))
        if r == -ECHILD { return nil }
        if r < 0 { throw SystemError("waitpid(\(pid))", code: -r) }
        if r == 0 { return nil }
        return (r, WaitStatus(raw: status))
    }

    // MARK: syscall injection

    /// Runs syscalls inside a ptrace-stopped thread (CRIU compel's prepare / syscall / cure).
    /// `whileWaiting` runs repeatedly while an injected call is in flight.
    public final class Injection {
        private var state = lg_inject()
        public let tid: pid_t
        private var waitHook: (() -> Void)?
        private var cured = false

        /// prepare: saves the thread's registers. With `stub` 0 a `syscall; int3` stub is poked at RIP.
        public init(tid: pid_t, stub: UInt64, whileWaiting: (() -> Void)? = nil) throws {
            self.tid = tid
            self.waitHook = whileWaiting
            let r = lg_inject_prepare(&state, tid, stub)
            if r < 0 { throw SystemError("inject prepare in tid \(tid)", code: -r) }
        }

        public var savedRegisters: Registers { state.saved }

        /// Runs `call` in the thread; returns its raw result (a negative errno on failure).
        public func syscall(_ call: Syscall, _ args: UInt64...) throws -> Int64 {
            let nr = call.rawValue
            var a: [UInt64] = args + Array(repeating: 0, count: max(0, 6 - args.count))
            var ret: Int64 = 0
            let r: Int32
            if let hook = waitHook {
                let box = HookBox(hook)
                let ctx = Unmanaged.passRetained(box).toOpaque()
                defer { Unmanaged<HookBox>.fromOpaque(ctx).release() }
                state.hook = { ctx in Unmanaged<HookBox>.fromOpaque(ctx!).takeUnretainedValue().run() }
                state.hook_ctx = ctx
                r = lg_inject_syscall(&state, nr, &a, &ret)
                state.hook = nil
                state.hook_ctx = nil
            } else {
                r = lg_inject_syscall(&state, nr, &a, &ret)
            }
            if r < 0 {
                if state.exited != 0 { throw InjectionTargetDied(tid: tid, status: WaitStatus(raw: state.exit_status)) }
                throw SystemError("injected \(call) in tid \(tid)", code: -r)
            }
            return ret
        }

        /// Signals that arrived while injecting; the caller delivers them when it resumes the thread.
        public var deferredSignals: [Int32] {
            withUnsafeBytes(of: state.deferred_signals) { raw in
                Array(raw.bindMemory(to: Int32.self).prefix(Int(state.deferred_count)))
            }
        }

        /// cure: puts the thread's registers (and the poked word) back.
        public func cure() throws {
            guard !cured else { return }
            cured = true
            let r = lg_inject_cure(&state)
            if r < 0 { throw SystemError("inject cure in tid \(tid)", code: -r) }
        }

        private final class HookBox {
            let body: () -> Void
            init(_ body: @escaping () -> Void) { self.body = body }
            func run() { body() }
        }
    }

    public struct InjectionTargetDied: Error, CustomStringConvertible {
        public let tid: pid_t
        public let status: WaitStatus
        public var description: String { "tid \(tid) died during syscall injection (\(status))" }
    }

    public static let injectionStubWord: UInt64 = LG_INJECT_STUB_WORD

    // MARK: userfaultfd

    public static func uffdAPI(_ fd: Int32, features: UInt64) throws -> (features: UInt64, ioctls: UInt64) {
        var f: UInt64 = 0, i: UInt64 = 0
        let r = lg_uffd_api(fd, features, &f, &i)
        if r < 0 { throw SystemError("UFFDIO_API features 0x\(String(features, radix: 16))", code: -r) }
        return (f, i)
    }

    public static func uffdRegister(_ fd: Int32, start: UInt64, length: UInt64, mode: UInt64, pid: pid_t) throws {
        var ioctls: UInt64 = 0
        let r = lg_uffd_register(fd, start, length, mode, &ioctls)
        if r < 0 { throw SystemError("UFFDIO_REGISTER \(describeRange(start, length)) in pid \(pid)", code: -r) }
    }

    public static func uffdUnregister(_ fd: Int32, start: UInt64, length: UInt64) -> Int32 {
        -lg_uffd_unregister(fd, start, length)
    }

    /// UFFDIO_COPY; returns 0 or the errno (EEXIST, EAGAIN, ENOENT are the caller's to interpret).
    @inline(__always)
    public static func uffdCopy(_ fd: Int32, to dst: UInt64, from src: UnsafeRawPointer, length: UInt64,
                                writeProtect: Bool, wake: Bool = true) -> (errno: Int32, copied: Int64) {
        var copied: Int64 = 0
        var mode: UInt64 = 0
        if writeProtect { mode |= UInt64(UFFDIO_COPY_MODE_WP) }
        if !wake { mode |= UInt64(UFFDIO_COPY_MODE_DONTWAKE) }
        let r = lg_uffd_copy(fd, dst, src, length, mode, &copied)
        return (-r, copied)
    }

    public static func uffdWake(_ fd: Int32, start: UInt64, length: UInt64) -> Int32 {
        -lg_uffd_wake(fd, start, length)
    }

    public static func uffdWriteProtect(_ fd: Int32, start: UInt64, length: UInt64, protect: Bool, pid: pid_t) throws {
        let r = lg_uffd_writeprotect(fd, start, length, protect ? UInt64(UFFDIO_WRITEPROTECT_MODE_WP) : 0)
        if r < 0 { throw SystemError("UFFDIO_WRITEPROTECT \(describeRange(start, length)) in pid \(pid)", code: -r) }
    }

    public typealias UffdEvent = lg_uffd_event

    public enum UffdEventKind: UInt32 {
        case pageFault = 1, fork = 2, remap = 3, remove = 4, unmap = 5, other = 99
    }

    /// Reads pending uffd messages into `buffer`; returns how many (0 when none are pending).
    public static func uffdReadEvents(_ fd: Int32, into buffer: UnsafeMutablePointer<UffdEvent>, max: Int) throws -> Int {
        let r = lg_uffd_read_events(fd, buffer, Int32(max))
        if r < 0 { throw SystemError("read(userfaultfd)", code: -r) }
        return Int(r)
    }

    public static let uffdPageFaultFlagWrite: UInt32 = UInt32(UFFD_PAGEFAULT_FLAG_WRITE)
    public static let uffdPageFaultFlagWP: UInt32 = UInt32(UFFD_PAGEFAULT_FLAG_WP)
    public static let uffdRegisterMissing: UInt64 = UInt64(UFFDIO_REGISTER_MODE_MISSING)
    public static let uffdRegisterWP: UInt64 = UInt64(UFFDIO_REGISTER_MODE_WP)

    public struct UffdFeatures: OptionSet, Sendable {
        public let rawValue: UInt64
        public init(rawValue: UInt64) { self.rawValue = rawValue }
        public static let eventFork = UffdFeatures(rawValue: UInt64(UFFD_FEATURE_EVENT_FORK))
        public static let eventRemap = UffdFeatures(rawValue: UInt64(UFFD_FEATURE_EVENT_REMAP))
        public static let eventRemove = UffdFeatures(rawValue: UInt64(UFFD_FEATURE_EVENT_REMOVE))
        public static let eventUnmap = UffdFeatures(rawValue: UInt64(UFFD_FEATURE_EVENT_UNMAP))
        public static let threadID = UffdFeatures(rawValue: UInt64(UFFD_FEATURE_THREAD_ID))
        public static let wpUnpopulated = UffdFeatures(rawValue: UInt64(UFFD_FEATURE_WP_UNPOPULATED))
        public static let wpAsync = UffdFeatures(rawValue: UInt64(UFFD_FEATURE_WP_ASYNC))
        public static let pageFaultFlagWP = UffdFeatures(rawValue: UInt64(UFFD_FEATURE_PAGEFAULT_FLAG_WP))
    }

    // MARK: PAGEMAP_SCAN

    public typealias PageRegion = page_region

    public struct PageCategory: OptionSet, Sendable {
        public let rawValue: UInt64
        public init(rawValue: UInt64) { self.rawValue = rawValue }
        public static let wpAllowed = PageCategory(rawValue: UInt64(PAGE_IS_WPALLOWED))
        public static let written = PageCategory(rawValue: UInt64(PAGE_IS_WRITTEN))
        public static let file = PageCategory(rawValue: UInt64(PAGE_IS_FILE))
        public static let present = PageCategory(rawValue: UInt64(PAGE_IS_PRESENT))
        public static let swapped = PageCategory(rawValue: UInt64(PAGE_IS_SWAPPED))
        public static let pfnZero = PageCategory(rawValue: UInt64(PAGE_IS_PFNZERO))
    }

    public struct ScanFlags: OptionSet, Sendable {
        public let rawValue: UInt64
        public init(rawValue: UInt64) { self.rawValue = rawValue }
        public static let writeProtectMatching = ScanFlags(rawValue: UInt64(PM_SCAN_WP_MATCHING))
        public static let checkWPAsync = ScanFlags(rawValue: UInt64(PM_SCAN_CHECK_WPASYNC))
    }

    /// One PAGEMAP_SCAN call: pages with every `required` category and none of `absent`; returns
    /// the regions found and where the walk ended.
    public static func pagemapScan(fd: Int32, pid: pid_t, start: UInt64, end: UInt64, flags: ScanFlags,
                                   required: PageCategory, absent: PageCategory = [], anyOf: PageCategory = [], returned: PageCategory,
                                   into vec: UnsafeMutablePointer<PageRegion>, capacity: Int,
                                   maxPages: UInt64 = 0) throws -> (count: Int, walkEnd: UInt64) {
        var walkEnd: UInt64 = 0
        let r = lg_pagemap_scan(fd, start, end, flags.rawValue, required.rawValue | absent.rawValue, absent.rawValue, anyOf.rawValue,
                                returned.rawValue, vec, UInt64(capacity), maxPages, &walkEnd)
        if r < 0 {
            throw SystemError("PAGEMAP_SCAN [0x\(String(start, radix: 16))-0x\(String(end, radix: 16))) in pid \(pid)", code: -r)
        }
        return (Int(r), walkEnd)
    }

    // MARK: process memory

    /// Reads the ranges of `pid` back to back into `buffer`; returns bytes read (may be short).
    public static func processRead(pid: pid_t, into buffer: UnsafeMutableRawPointer, capacity: Int,
                                   addresses: UnsafePointer<UInt64>, lengths: UnsafePointer<UInt64>, count: Int) throws -> Int {
        let r = lg_process_vm_read(pid, buffer, UInt64(capacity), addresses, lengths, Int32(count))
        if r < 0 { throw SystemError("process_vm_readv of \(count) ranges in pid \(pid)", code: Int32(-r)) }
        return Int(r)
    }

    /// Reads `length` bytes of process `pid`'s memory at `address`: process_vm_readv, and where that
    /// is refused (it honours protections) /proc/PID/mem, which reads PROT_NONE pages too. Only
    /// present pages: a missing page of a userfaultfd range would fault into its handler.
    public static func readProcessMemory(pid: pid_t, address: UInt64, length: Int, into dst: UnsafeMutableRawPointer) throws {
        var addr = address, len = UInt64(length)
        if let n = try? processRead(pid: pid, into: dst, capacity: length, addresses: &addr, lengths: &len, count: 1), n == length { return }
        let fd = open("/proc/\(pid)/mem", O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw SystemError.fromErrno("open /proc/\(pid)/mem") }
        defer { close(fd) }
        let n = Sys.retryingEINTR { pread(fd, dst, length, off_t(Int64(bitPattern: address))) }
        if n != length { throw SystemError("read \(describeRange(address, UInt64(length))) of pid \(pid)", code: n < 0 ? errno : EIO) }
    }

    /// A thread's id in its own (innermost) PID namespace: the last NSpid of its status.
    public static func namespaceTID(_ tid: pid_t) -> Int32 {
        let status = ProcFile.text("/proc/\(tid)/status") ?? ""
        for line in status.split(separator: "\n") where line.hasPrefix("NSpid:") {
            if let last = line.split(whereSeparator: { $0 == "\t" || $0 == " " }).last, let n = Int32(last) { return n }
        }
        return tid
    }

    public static func processWrite(pid: pid_t, from buffer: UnsafeRawPointer, length: Int, to address: UInt64) throws {
        let r = lg_process_vm_write(pid, buffer, UInt64(length), address)
        if r < 0 { throw SystemError("process_vm_writev \(describeRange(address, UInt64(length))) in pid \(pid)", code: Int32(-r)) }
        if r != length { throw SystemError("process_vm_writev \(describeRange(address, UInt64(length))) in pid \(pid) wrote \(r)", code: EFAULT) }
    }

    public static func pidfdOpen(_ pid: pid_t) throws -> Int32 {
        let r = lg_pidfd_open(pid)
        if r < 0 { throw SystemError("pidfd_open(\(pid))", code: -r) }
        return r
    }

    public static func pidfdGetFD(pidfd: Int32, targetFD: Int32, pid: pid_t) throws -> Int32 {
        let r = lg_pidfd_getfd(pidfd, targetFD)
        if r < 0 { throw SystemError("pidfd_getfd(fd \(targetFD) of pid \(pid))", code: -r) }
        return r
    }

    // MARK: signals

    /// A non-blocking signalfd for SIGCHLD; blocks SIGCHLD in the calling thread.
    public static func sigchldFD() throws -> Int32 {
        let r = lg_sigchld_fd()
        if r < 0 { throw SystemError("signalfd(SIGCHLD)", code: -r) }
        return r
    }

    /// A non-blocking signalfd for `signals` (block them first).
    public static func signalFD(_ signals: [Int32]) throws -> Int32 {
        let r = signals.withUnsafeBufferPointer { lg_signal_fd($0.baseAddress, Int32($0.count)) }
        if r < 0 { throw SystemError("signalfd", code: -r) }
        return r
    }

    /// The next pending signal of a signalfd, if any.
    public static func readSignalFD(_ fd: Int32) -> (signo: Int32, code: Int32, sender: pid_t)? {
        var s: Int32 = 0, c: Int32 = 0, p: Int32 = 0
        return lg_signal_fd_read(fd, &s, &c, &p) == 1 ? (s, c, p) : nil
    }

    public static func eventFD() throws -> Int32 {
        let r = lg_eventfd()
        if r < 0 { throw SystemError("eventfd", code: -r) }
        return r
    }

    /// What the pipe behind `fd` holds, copied without consuming it (at most `capacity` bytes).
    public static func peekPipe(_ fd: Int32, capacity: Int = 1 << 20, what: String) throws -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: capacity)
        let n = buf.withUnsafeMutableBytes { lg_pipe_peek(fd, $0.baseAddress, UInt64(capacity)) }
        if n < 0 { throw SystemError("copy the contents of \(what)", code: Int32(-n)) }
        return Array(buf[0..<Int(n)])
    }

    public static func tgkill(_ tgid: pid_t, _ tid: pid_t, _ sig: Int32) { _ = lg_tgkill(tgid, tid, sig) }

    public static func drainSignalFD(_ fd: Int32) { _ = lg_signalfd_drain(fd) }

    public static func blockSignalInThisThread(_ sig: Int32) { _ = lg_block_signal(sig) }

    public static func threadID() -> pid_t { lg_thread_id() }

    // MARK: seccomp and spawn

    /// A BPF filter returning SECCOMP_RET_TRACE for `syscalls`, built before fork.
    public final class SeccompFilter {
        public let program: UnsafeMutableRawPointer
        public let instructionCount: UInt32
        public init(tracing syscalls: [Int32]) throws {
            var prog: UnsafeMutableRawPointer?
            var len: UInt32 = 0
            let r = syscalls.withUnsafeBufferPointer { lg_seccomp_build_trace_filter($0.baseAddress, Int32($0.count), &prog, &len) }
            guard r == 0, let p = prog else { throw SystemError("building the seccomp filter", code: r < 0 ? -r : EINVAL) }
            program = p
            instructionCount = len
        }
        deinit { free(program) }
    }

    public struct Spawned {
        public let pid: pid_t
        public let reaperPID: pid_t
        public let releaseFD: Int32
        public let errorFD: Int32
        /// With a reaper: it exits (ending the namespace) only once PROG has and this is closed; else -1.
        public let holdFD: Int32
    }

    /// Forks PROG (optionally as PID 2 of a new PID namespace) stopped before exec until released.
    public static func spawn(path: String, arguments: [String], environment: [String], filter: SeccompFilter?,
                             newPIDNamespace: Bool, signalMask: sigset_t, ignoredSignals: sigset_t) throws -> Spawned {
        var cArgs = arguments.map { strdup($0) } + [nil]
        var cEnv = environment.map { strdup($0) } + [nil]
        defer {
            cArgs.forEach { free($0) }
            cEnv.forEach { free($0) }
        }
        var mask = signalMask
        var ignored = ignoredSignals
        var result = lg_spawn_result()
        let r: Int32 = path.withCString { cPath in
            cArgs.withUnsafeMutableBufferPointer { argv in
                cEnv.withUnsafeMutableBufferPointer { envp in
                    withUnsafePointer(to: &mask) { maskPtr in
                        withUnsafePointer(to: &ignored) { ignPtr in
                            var a = lg_spawn_args(
                                path: cPath, argv: argv.baseAddress, envp: envp.baseAddress,
                                filter: filter.map { UnsafeRawPointer($0.program) }, filter_len: filter?.instructionCount ?? 0,
                                new_pidns: newPIDNamespace ? 1 : 0, sigmask: maskPtr, ignored: ignPtr)
                            return lg_spawn(&a, &result)
                        }
                    }
                }
            }
        }
        if r < 0 { throw SystemError("starting \(path)", code: -r) }
        return Spawned(pid: result.prog_pid, reaperPID: result.reaper_pid, releaseFD: result.release_fd, errorFD: result.error_fd, holdFD: result.hold_fd)
    }

    // MARK: misc

    /// Makes a posix_spawn close every descriptor from `fd` on in the child.
    public static func spawnClosesFrom(_ actions: UnsafeMutableRawPointer, _ fd: Int32) { _ = lg_spawn_close_from(actions, fd) }

    public static func signalIsIgnored(_ sig: Int32) -> Bool { lg_signal_is_ignored(sig) != 0 }

    public static func setThreadName(_ name: String) { name.withCString { lg_set_thread_name($0) } }

    /// accept4(SOCK_CLOEXEC); returns the fd or -errno.
    public static func accept(_ fd: Int32, _ storage: inout sockaddr_storage, _ len: inout socklen_t) -> Int32 {
        withUnsafeMutablePointer(to: &storage) { lg_accept(fd, UnsafeMutableRawPointer($0), &len) }
    }

    // MARK: crypto

    public static func hmacSHA256(key: [UInt8], data: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        _ = lg_hmac_sha256(key, key.count, data, data.count, &out)
        return out
    }

    public static func randomBytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        if lg_random_bytes(&out, count) != 0 {
            for i in 0..<count { out[i] = UInt8.random(in: 0...255) }
        }
        return out
    }

    public static func crc32c(_ crc: UInt32 = 0, _ data: UnsafeRawBufferPointer) -> UInt32 {
        lg_crc32c(crc, data.baseAddress, data.count)
    }

    /// Copies `source` to `destination` with non-temporal stores (lg_copy_nontemporal): for bulk data
    /// kept in memory but not read again soon.
    public static func copyNontemporal(to destination: UnsafeMutableRawPointer, from source: UnsafeRawBufferPointer) {
        if source.count > 0 { lg_copy_nontemporal(destination, source.baseAddress, source.count) }
    }
}
