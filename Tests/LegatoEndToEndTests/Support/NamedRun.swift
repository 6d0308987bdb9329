import Foundation
import Glibc
import Testing
import LegatoImage
import LegatoSystem

/// A named run in the background, its stdout going to `output`.
final class NamedRun {
    let name: String
    let stateDir: String
    let output: String
    let command: SpawnedCommand

    /// `shell`: run first by the shell that execs `legato run` (e.g. `exec 9>&2`: an extra
    /// descriptor inherited, as CI runners and make leave them); `wrapper`: what execs `legato run`
    /// (e.g. `ip netns exec NS`).
    init(name: String, stateDir: String, output: String, localMem: String, argv: [String], options: [String] = [],
         environment: [String: String] = [:], shell: String = "", wrapper: [String] = []) throws {
        self.name = name
        self.stateDir = stateDir
        self.output = output
        let quoted = argv.map { "'\($0)'" }.joined(separator: " ")
        let env = environment.map { "\($0.key)='\($0.value)' " }.joined()
        command = try SpawnedCommand(["sh", "-c", "\(shell)\(shell.isEmpty ? "" : "; ")exec \(wrapper.map { "'\($0)' " }.joined())env \(env)'\(TestEnvironment.legato)' run --name \(name) --state-dir '\(stateDir)' --local-mem \(localMem) \(options.joined(separator: " ")) -- \(quoted) > '\(output)'"])
    }

    /// Waits until PROG has printed at least `lines` lines.
    func waitForLines(_ lines: Int, timeoutSeconds: Double = 60) throws {
        let deadline = monotonicNanos() + UInt64(timeoutSeconds * 1e9)
        while monotonicNanos() < deadline {
            let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
            if text.utf8.split(separator: UInt8(ascii: "\n")).count >= lines { return }  // (bytes: "\r\n" is one Character)
            usleep(20_000)
        }
        throw TestFailure("\(name) did not print \(lines) lines: \(command.stderrSoFar)")
    }

    func checkpoint() throws -> CommandResult {
        try runCommand([TestEnvironment.legato, "checkpoint", name, "--state-dir", stateDir], timeoutSeconds: 120)
    }

    func killHard() {
        command.signal(SIGKILL)
        _ = try? command.wait(timeoutSeconds: 20)
        // Its namespace goes with it; wait until nothing of it answers any more.
        let deadline = monotonicNanos() + 10_000_000_000
        while monotonicNanos() < deadline && access(stateDir + "/processes/\(name)/control.sock", F_OK) == 0,
              (try? Socket.connectUnix(path: stateDir + "/processes/\(name)/control.sock")).map({ close($0); return true }) == true {
            usleep(20_000)
        }
    }

    func restore(extra: [String] = [], localMem: String = "16M", environment: [String: String] = [:]) throws -> CommandResult {
        try runCommand(["sh", "-c", "exec '\(TestEnvironment.legato)' restore \(name) --state-dir '\(stateDir)' --local-mem \(localMem) \(extra.joined(separator: " "))"],
                       environment: environment, timeoutSeconds: 300)
    }
}

/// Runs argv plainly, then as a named run checkpointed after `afterLines` lines of output (and
/// `thenSeconds` more), killed
/// with kill -9 and restored twice from that checkpoint: each time the output must be the plain run's.
/// (`restoresTwice` false: once, for programs whose files the first restore's run deletes, as a
/// compiler's temporary files: a second restore is then refused, naming the file.)
/// Returns the checkpoint's context record (PROG's image) as JSON.
@discardableResult
func checkpointKillRestore(_ argv: [String], name: String, localMem: String, afterLines: Int, thenSeconds: Double = 0,
                           dir: String? = nil, options: [String] = [], restoresTwice: Bool = true) throws -> [String: Any] {
    let dir = dir ?? TestEnvironment.temporaryDirectory("ckpt-\(name)")
    let plain = try runCommand(argv, timeoutSeconds: 300)
    #expect(plain.status == 0, "plain run failed: \(plain.stderr)")
    let run = try NamedRun(name: name, stateDir: dir + "/state", output: dir + "/out", localMem: localMem, argv: argv, options: options)
    try run.waitForLines(afterLines)
    if thenSeconds > 0 { usleep(UInt32(thenSeconds * 1e6)) }
    let ck = try run.checkpoint()
    #expect(ck.status == 0, "checkpoint failed: \(ck.stderr) \(ck.stdout)")
    #expect(ck.stdout.contains("epoch 1 committed"), "\(ck.stdout)")
    if options.contains("--snapshot-above") { #expect(ck.stdout.contains("copy-on-write"), "\(ck.stdout)") }
    usleep(300_000)  // PROG goes on past the checkpoint, writing more
    run.killHard()
    let partial = try String(contentsOfFile: run.output, encoding: .utf8)
    #expect(partial != plain.stdout, "the run should have been interrupted")

    let r = try run.restore(localMem: localMem)
    #expect(r.status == 0, "restore failed (\(r.status)): \(r.stderr)")
    // No fault ever waits for the agent's liveness guard (a lost wake-up).
    for stderr in [run.command.stderrSoFar, r.stderr] { #expect(!stderr.contains(livenessGuardFired), "a fault was lost: \(stderr)") }
    let restored = try String(contentsOfFile: run.output, encoding: .utf8)
    #expect(restored == plain.stdout, "output differs from an uninterrupted run: \(firstDifference(restored, plain.stdout))\n\(r.stderr)")
    guard restoresTwice else { return try contextRecord(dir: dir, name: name) }
    // The same checkpoint restores again to the same end.
    let again = try run.restore(extra: ["--epoch", "1"], localMem: localMem)
    #expect(again.status == 0, "second restore failed: \(again.stderr)")
    #expect(try String(contentsOfFile: run.output, encoding: .utf8) == plain.stdout, "a second restore of the same checkpoint differs")
    return try contextRecord(dir: dir, name: name)
}

/// What the agent logs when its liveness guard had to wake a fault nobody served.
let livenessGuardFired = "have waited for a page for 2 s with nothing on its way"

/// Epoch 1's context record of run `name` under `dir`/state, as JSON.
func contextRecord(dir: String, name: String) throws -> [String: Any] {
    let context = try RecordFile.body(kind: .context, from: dir + "/state/processes/\(name)/epoch-1/context.rec")
    return try JSONSerialization.jsonObject(with: context) as! [String: Any]
}

/// Where two outputs first differ, line by line, for a failure message.
func firstDifference(_ got: String, _ expected: String) -> String {
    let a = got.split(separator: "\n", omittingEmptySubsequences: false), b = expected.split(separator: "\n", omittingEmptySubsequences: false)
    for i in 0..<max(a.count, b.count) where i >= a.count || i >= b.count || a[i] != b[i] {
        return "line \(i + 1): got \(i < a.count ? "\"\(a[i])\"" : "nothing"), expected \(i < b.count ? "\"\(b[i])\"" : "nothing")"
    }
    return "the same"
}
