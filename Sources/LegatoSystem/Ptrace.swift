import CShims
import Glibc

/// ptrace: attaching, resuming and stopping threads, their registers and signal state; waitpid.
extension Sys {
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

    /// The `index`-th seccomp filter of stopped thread `tid` (0: the oldest), as its BPF
    /// instructions (8 bytes each: code, jt, jf, k).
    public static func seccompFilter(_ tid: pid_t, index: Int) throws -> [UInt8] {
        let n = lg_ptrace_seccomp_filter(tid, UInt(index), nil)
        if n < 0 { throw SystemError("PTRACE_SECCOMP_GET_FILTER \(index) of tid \(tid)", code: Int32(-n)) }
        var insns = [UInt8](repeating: 0, count: Int(n) * 8)
        let m = insns.withUnsafeMutableBytes { lg_ptrace_seccomp_filter(tid, UInt(index), $0.baseAddress) }
        if m < 0 { throw SystemError("PTRACE_SECCOMP_GET_FILTER \(index) of tid \(tid)", code: Int32(-m)) }
        return Array(insns.prefix(Int(m) * 8))
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
}
