import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// Starts PROG stopped before exec, seizes it, and lets it exec under the seccomp filter.
enum Launcher {
    /// A program that could not be started; `exitCode` follows the shell (127 not found, 126 not runnable).
    struct LaunchError: Error, CustomStringConvertible {
        let description: String
        let exitCode: Int32
    }

    /// PATH lookup as execvp does it.
    static func resolve(_ program: String) throws -> String {
        if program.contains("/") {
            guard access(program, F_OK) == 0 else { throw LaunchError(description: "\(program): no such file", exitCode: 127) }
            guard access(program, X_OK) == 0 else { throw LaunchError(description: "\(program): not executable", exitCode: 126) }
            return program
        }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        var deniedCandidate: String?
        for dir in path.split(separator: ":", omittingEmptySubsequences: false) {
            let candidate = (dir.isEmpty ? "." : String(dir)) + "/" + program
            var st = stat()
            guard stat(candidate, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { continue }
            if access(candidate, X_OK) == 0 { return candidate }
            deniedCandidate = candidate
        }
        if let d = deniedCandidate { throw LaunchError(description: "\(d): not executable", exitCode: 126) }
        throw LaunchError(description: "\(program): command not found", exitCode: 127)
    }

    /// The signal state PROG should start with: the agent's own at startup (mask and ignored signals).
    struct InheritedSignals {
        var mask = sigset_t()
        var ignored = sigset_t()

        static func capture() -> InheritedSignals {
            var s = InheritedSignals()
            sigemptyset(&s.mask)
            sigemptyset(&s.ignored)
            pthread_sigmask(SIG_SETMASK, nil, &s.mask)
            for sig in 1..<65 where sig != SIGKILL && sig != SIGSTOP {
                if Sys.signalIsIgnored(Int32(sig)) { sigaddset(&s.ignored, Int32(sig)) }
            }
            return s
        }
    }

    static let ptraceOptions: Sys.PtraceOptions = [.traceSysGood, .traceFork, .traceVfork, .traceClone, .traceExec,
                                                   .traceSeccomp, .exitKill]

    /// Spawns and seizes PROG; returns once it has exec'd (its exec stop is then pending for the tracer).
    /// PROG gets stdin, stdout, stderr and the `kept` descriptors; what else the agent inherited is
    /// closed at PROG's exec.
    static func launch(path: String, arguments: [String], environment: [String], signals: InheritedSignals,
                       newPIDNamespace: Bool, kept: KeptDescriptors = KeptDescriptors()) throws -> Sys.Spawned {
        let filter = try Sys.SeccompFilter(tracing: Syscall.traced.map { Int32($0.rawValue) })
        let spawned = try Sys.spawn(path: path, arguments: arguments, environment: environment, filter: filter,
                                    newPIDNamespace: newPIDNamespace, signalMask: signals.mask, ignoredSignals: signals.ignored,
                                    keepDescriptors: kept.reasons.keys.sorted(), setListenPID: kept.socketActivation)
        defer { close(spawned.errorFD) }
        do {
            try Sys.ptraceSeize(spawned.pid, options: ptraceOptions)
        } catch {
            kill(spawned.pid, SIGKILL)
            if spawned.reaperPID > 0 { kill(spawned.reaperPID, SIGKILL) }
            close(spawned.releaseFD)
            if spawned.holdFD >= 0 { close(spawned.holdFD) }
            throw LaunchError(description: "cannot trace \(path): \(error)", exitCode: 125)
        }
        var one: UInt8 = 1
        _ = write(spawned.releaseFD, &one, 1)
        close(spawned.releaseFD)
        var report = [Int32](repeating: 0, count: 2)
        let n = report.withUnsafeMutableBytes { read(spawned.errorFD, $0.baseAddress, 8) }
        if n == 8 {
            if spawned.holdFD >= 0 { close(spawned.holdFD) }
            _ = try? Sys.wait(spawned.pid, nohang: false)
            if spawned.reaperPID > 0 { _ = try? Sys.wait(spawned.reaperPID, nohang: false) }
            let stage = ["", "waiting for the agent", "installing the seccomp filter", "exec", "fork", "closing inherited descriptors"][Int(min(5, max(0, report[0])))]
            let code: Int32 = report[1] == ENOENT ? 127 : (report[1] == EACCES || report[1] == ENOEXEC ? 126 : 125)
            throw LaunchError(description: "cannot run \(path): \(stage) failed: \(Errno.name(report[1]))", exitCode: code)
        }
        return spawned
    }
}
