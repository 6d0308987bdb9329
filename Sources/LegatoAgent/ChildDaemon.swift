import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// A `legato` daemon started as a child of this process (the embedded local cluster): it gets the
/// cluster secret on an inherited pipe, reports its port on another, and exits when we do.
public final class ChildDaemon {
    public let pid: pid_t
    public let endpoint: Endpoint
    public let name: String

    /// Starts `legato <arguments> --listen 127.0.0.1:0 --ready-fd 3 --secret-fd 4 --exit-with <our pid>`.
    public init(name: String, arguments: [String], secret: ClusterSecret, timeoutSeconds: Double = 10) throws {
        self.name = name
        var ready: [Int32] = [0, 0], secretPipe: [Int32] = [0, 0]
        guard pipe(&ready) == 0, pipe(&secretPipe) == 0 else {
            throw SystemError.fromErrno("pipe for the embedded \(name)")
        }
        for fd in ready + secretPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let argv = [exe] + arguments + ["--listen", "127.0.0.1:0", "--ready-fd", "3", "--secret-fd", "4",
                                        "--exit-with", String(getpid())]
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawn_file_actions_adddup2(&actions, ready[1], 3)
        posix_spawn_file_actions_adddup2(&actions, secretPipe[0], 4)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        var defaults = sigset_t()
        sigfillset(&defaults)
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var cArgs = argv.map { strdup($0) } + [nil]
        // An embedded daemon speaks up only for warnings, unless the user asked for more.
        var env = ProcessInfo.processInfo.environment
        if env["LEGATO_LOG"] == nil { env["LEGATO_LOG"] = "warning" }
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
        _ = secret.bytes.withUnsafeBytes { write(secretPipe[1], $0.baseAddress, $0.count) }
        close(secretPipe[1])
        var pfd = pollfd(fd: ready[0], events: Int16(POLLIN), revents: 0)
        var line = [UInt8](repeating: 0, count: 32)
        let n = poll(&pfd, 1, Int32(timeoutSeconds * 1000)) == 1 ? read(ready[0], &line, 31) : -1
        close(ready[0])
        guard n > 0, let port = UInt16(String(decoding: line[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            kill(child, SIGKILL)
            waitpid(child, nil, 0)
            throw LegatoError("the embedded \(name) did not start")
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
