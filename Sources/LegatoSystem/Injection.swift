import CShims
import Glibc

/// Running a system call inside a stopped tracee (prepare / syscall / cure).
extension Sys {
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
                if state.fault_signal != 0 {
                    throw SystemError("injected \(call) in tid \(tid): the thread faulted (signal \(state.fault_signal))", code: EFAULT)
                }
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
}
