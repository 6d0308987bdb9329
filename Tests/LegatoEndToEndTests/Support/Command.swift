import Foundation
import Glibc
import LegatoSystem

/// The result of running a command to completion.
struct CommandResult {
    let status: Int32          // exit code, or 128+N if killed by signal N
    let stdout: String
    let stderr: String
}

/// Runs `argv` with a clean signal mask and default dispositions (Swift Testing's threads block
/// SIGTERM; a program started from them would not behave like one started from a shell).
@discardableResult
func runCommand(_ argv: [String], environment: [String: String] = [:], stdin: String? = nil,
                timeoutSeconds: Double = 600) throws -> CommandResult {
    let child = try SpawnedCommand(argv, environment: environment, stdin: stdin)
    return try child.wait(timeoutSeconds: timeoutSeconds)
}

/// A command started in the background; `wait` collects its output.
final class SpawnedCommand {
    let pid: pid_t
    private let outFD: Int32
    private let errFD: Int32
    private var out = [UInt8]()
    private var err = [UInt8]()
    private let lock = Lock()
    private var readersDone = 0

    init(_ argv: [String], environment: [String: String] = [:], stdin: String? = nil) throws {
        var outPipe: [Int32] = [0, 0], errPipe: [Int32] = [0, 0], inPipe: [Int32] = [0, 0]
        guard pipe(&outPipe) == 0, pipe(&errPipe) == 0, pipe(&inPipe) == 0 else { throw SystemError.fromErrno("pipe") }
        for fd in outPipe + errPipe + inPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        // Nothing of the test process leaks into the command (as from a shell).
        withUnsafeMutablePointer(to: &actions) { Sys.spawnClosesFrom(UnsafeMutableRawPointer($0), 3) }
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigdefault(&attr, &all)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attr, 0)
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        var cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        var cArgs = argv.map { strdup($0) } + [nil]
        defer {
            cEnv.forEach { free($0) }
            cArgs.forEach { free($0) }
            posix_spawn_file_actions_destroy(&actions)
            posix_spawnattr_destroy(&attr)
        }
        var p: pid_t = 0
        let rc = posix_spawnp(&p, argv[0], &actions, &attr, &cArgs, &cEnv)
        close(outPipe[1]); close(errPipe[1]); close(inPipe[0])
        guard rc == 0 else {
            close(outPipe[0]); close(errPipe[0]); close(inPipe[1])
            throw SystemError("posix_spawn \(argv[0])", code: rc)
        }
        pid = p
        outFD = outPipe[0]
        errFD = errPipe[0]
        let input = Array((stdin ?? "").utf8)
        let inFD = inPipe[1]
        startThread(name: "stdin") {
            var off = 0
            while off < input.count {
                let n = input.withUnsafeBytes { write(inFD, $0.baseAddress! + off, input.count - off) }
                if n <= 0 { break }
                off += n
            }
            close(inFD)
        }
        startThread(name: "stdout") { [self] in drain(outFD, isErr: false) }
        startThread(name: "stderr") { [self] in drain(errFD, isErr: true) }
    }

    private func drain(_ fd: Int32, isErr: Bool) {
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &buf, buf.count)
            if n <= 0 { break }
            lock.withLock { if isErr { err += buf[0..<n] } else { out += buf[0..<n] } }
        }
        close(fd)
        lock.withLock {
            readersDone += 1
            lock.broadcast()
        }
    }

    /// Output so far (for tests that watch a running command).
    var stderrSoFar: String { lock.withLock { String(decoding: err, as: UTF8.self) } }
    var stdoutSoFar: String { lock.withLock { String(decoding: out, as: UTF8.self) } }

    /// Waits until `predicate` holds for the output so far; false after `timeoutSeconds`.
    func waitForOutput(timeoutSeconds: Double = 20, _ predicate: (String, String) -> Bool) -> Bool {
        let deadline = monotonicNanos() + UInt64(timeoutSeconds * 1e9)
        while monotonicNanos() < deadline {
            if predicate(stdoutSoFar, stderrSoFar) { return true }
            usleep(10_000)
        }
        return false
    }

    func signal(_ sig: Int32) { kill(pid, sig) }

    func wait(timeoutSeconds: Double = 600) throws -> CommandResult {
        let deadline = monotonicNanos() + UInt64(timeoutSeconds * 1e9)
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { break }
            if monotonicNanos() > deadline {
                let where_ = processTreeState(pid)
                kill(pid, SIGKILL)
                waitpid(pid, &status, 0)
                throw TestFailure("command \(pid) timed out after \(timeoutSeconds) s; its processes: \(where_); "
                                  + "its stderr ends: \(String(stderrSoFar.suffix(3000)))")
            }
            usleep(2000)
        }
        // Its output ends when every process holding the pipes has gone; a descendant left behind
        // (a restored PROG the command did not take down) must not hang the test run.
        let outputDeadline = monotonicNanos() + 30_000_000_000
        let drained = lock.withLock { () -> Bool in
            while readersDone < 2 && monotonicNanos() < outputDeadline { lock.wait(seconds: 1) }
            return readersDone == 2
        }
        if !drained {
            throw TestFailure("command \(pid) exited but processes it left keep its output open: \(processTreeState(getpid()))")
        }
        let code: Int32 = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return lock.withLock { CommandResult(status: code, stdout: String(decoding: out, as: UTF8.self), stderr: String(decoding: err, as: UTF8.self)) }
    }
}

/// Every process descended from `root`, with each thread's state and kernel wait channel (what a
/// hung command was doing).
func processTreeState(_ root: pid_t) -> String {
    func read(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
    var parent: [pid_t: pid_t] = [:]
    for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
        guard let p = pid_t(name) else { continue }
        let stat = read("/proc/\(p)/stat")
        guard let close = stat.lastIndex(of: ")") else { continue }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        if fields.count > 1, let pp = pid_t(fields[1]) { parent[p] = pp }
    }
    func descends(_ p: pid_t) -> Bool {
        var q = p
        for _ in 0..<64 {
            if q == root { return true }
            guard let pp = parent[q], pp > 0 else { return false }
            q = pp
        }
        return false
    }
    return parent.keys.filter(descends).sorted().map { p in
        let tasks = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(p)/task")) ?? []).sorted().map { t in
            "\(t):\(read("/proc/\(p)/task/\(t)/comm").trimmingCharacters(in: .whitespacesAndNewlines))/\(read("/proc/\(p)/task/\(t)/wchan"))"
        }
        return "\(p) [\(tasks.joined(separator: " "))]"
    }.joined(separator: "; ")
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
