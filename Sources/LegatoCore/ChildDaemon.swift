import Foundation
import Glibc
import LegatoSystem

/// A `legato` daemon started by this process. Embedded (the default cluster of `legato run`): it
/// gets the cluster secret on an inherited pipe and exits when we do. Detached (`legato cluster up`):
/// it runs in its own session, logs to a file and outlives us. Either way it reports its port on a
/// pipe once it listens.
public final class ChildDaemon {
    public let pid: pid_t
    public let endpoint: Endpoint
    public let name: String

    public enum SecretSource {
        case pipe(ClusterSecret)
        case file(String)
    }

    /// Starts `legato <arguments> --listen LISTEN --ready-fd 3` plus `--secret-fd 4 --exit-with <our pid>`
    /// (embedded) or `--secret-file FILE` with output to `logFile` in a new session (detached).
    public init(name: String, arguments: [String], secret: SecretSource, listen: String = "127.0.0.1:0",
                logFile: String? = nil, timeoutSeconds: Double = 10) throws {
        self.name = name
        var ready: [Int32] = [0, 0], secretPipe: [Int32] = [0, 0]
        guard pipe(&ready) == 0, pipe(&secretPipe) == 0 else {
            throw SystemError.fromErrno("pipe for the embedded \(name)")
        }
        for fd in ready + secretPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var argv = [exe] + arguments + ["--listen", listen, "--ready-fd", "3"]
        switch secret {
        case .pipe: argv += ["--secret-fd", "4"]
        case .file(let f): argv += ["--secret-file", f]
        }
        if logFile == nil { argv += ["--exit-with", String(getpid())] }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawn_file_actions_adddup2(&actions, ready[1], 3)
        posix_spawn_file_actions_adddup2(&actions, secretPipe[0], 4)
        if let log = logFile {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        var defaults = sigset_t()
        sigfillset(&defaults)
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | (logFile != nil ? 0x80 : 0)))  // 0x80: POSIX_SPAWN_SETSID
        var cArgs = argv.map { strdup($0) } + [nil]
        // An embedded daemon speaks up only for warnings, unless the user asked for more.
        var env = ProcessInfo.processInfo.environment
        if env["LEGATO_LOG"] == nil && logFile == nil { env["LEGATO_LOG"] = "warning" }
        var cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            cArgs.forEach { free($0) }
            cEnv.forEach { free($0) }
            posix_spawn_file_actions_destroy(&actions)
            posix_spawnattr_destroy(&attr)
        }
        var child: pid_t = 0
        let rc = posix_spawn(&child, exe, &actions, &attr, &cArgs, &cEnv)
        close(ready[1])
        close(secretPipe[0])
        guard rc == 0 else {
            close(ready[0]); close(secretPipe[1])
            throw SystemError("starting the embedded \(name) (\(exe))", code: rc)
        }
        pid = child
        if case .pipe(let s) = secret { _ = s.bytes.withUnsafeBytes { write(secretPipe[1], $0.baseAddress, $0.count) } }
        close(secretPipe[1])
        var pfd = pollfd(fd: ready[0], events: Int16(POLLIN), revents: 0)
        var line = [UInt8](repeating: 0, count: 32)
        let n = poll(&pfd, 1, Int32(timeoutSeconds * 1000)) == 1 ? read(ready[0], &line, 31) : -1
        close(ready[0])
        guard n > 0, let port = UInt16(String(decoding: line[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            kill(child, SIGKILL)
            waitpid(child, nil, 0)
            throw ChildDaemonError.didNotStart(name)
        }
        endpoint = Endpoint(host: "127.0.0.1", port: port)
    }

    /// SIGTERM, then wait (SIGKILL after `graceSeconds`).
    public func stop(graceSeconds: Double = 5) {
        kill(pid, SIGTERM)
        let deadline = monotonicNanos() + UInt64(graceSeconds * 1e9)
        while monotonicNanos() < deadline {
            if waitpid(pid, nil, WNOHANG) == pid { return }
            usleep(2000)
        }
        kill(pid, SIGKILL)
        waitpid(pid, nil, 0)
    }
}

public enum ChildDaemonError: Error, CustomStringConvertible, Equatable {
    case didNotStart(String)
    public var description: String {
        switch self {
        case .didNotStart(let name): return "the embedded \(name) did not start"
        }
    }
}
