import CShims
import Glibc

/// Launching PROG: the seccomp filter, posix_spawn with its actions, thread names, accept.
extension Sys {
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
    /// Descriptors above 2 that PROG does not keep are closed at its exec. With `setListenPID`, an
    /// environment entry LISTEN_PID is set to PROG's own pid (systemd's socket activation names the
    /// process the descriptors are for).
    public static func spawn(path: String, arguments: [String], environment: [String], filter: SeccompFilter?,
                             newPIDNamespace: Bool, signalMask: sigset_t, ignoredSignals: sigset_t,
                             keepDescriptors: [Int32] = [], setListenPID: Bool = false) throws -> Spawned {
        var cArgs = arguments.map { strdup($0) } + [nil]
        var env = environment
        if setListenPID {
            env.removeAll { $0.hasPrefix("LISTEN_PID=") }
            env.append("LISTEN_PID=" + String(repeating: " ", count: 10))
        }
        var cEnv = env.map { strdup($0) } + [nil]
        let listenPIDEntry = setListenPID ? cEnv[env.count - 1] : nil
        let keep = Array(keepDescriptors.prefix(64))
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
                            keep.withUnsafeBufferPointer { keepPtr in
                                var a = lg_spawn_args(
                                    path: cPath, argv: argv.baseAddress, envp: envp.baseAddress,
                                    filter: filter.map { UnsafeRawPointer($0.program) }, filter_len: filter?.instructionCount ?? 0,
                                    new_pidns: newPIDNamespace ? 1 : 0, sigmask: maskPtr, ignored: ignPtr,
                                    keep_fds: keepPtr.baseAddress, keep_count: Int32(keepPtr.count), listen_pid_env: listenPIDEntry)
                                return lg_spawn(&a, &result)
                            }
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
}
