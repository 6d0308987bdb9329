import Foundation
import Glibc
import Testing
import LegatoImage
import LegatoSystem

/// Checkpoint a named run mid-way, kill -9 it (PROG and `legato run`), restore it, and compare
/// with an uninterrupted plain run. PROG's stdout is a regular file, which the restore reopens at
/// the saved offset: the file must end up exactly as a plain run leaves it.
@Suite(.serialized) struct CheckpointTests {
    init() throws { try requireAgentCapabilities() }

    /// Also the copy-on-write path: every checkpoint of this run keeps its pages in a snapshot child.
    @Test func threadsWithMutexesConditionVariablesFilesAndPipes() throws {
        let dir = TestEnvironment.temporaryDirectory("ckpt-teamwork")
        let argv = [try Workloads.path("teamwork"), "30", "4", "32", dir + "/data"]
        let image = try checkpointKillRestore(argv, name: "teamwork", localMem: "8M", afterLines: 5, dir: dir,
                                              options: ["--snapshot-above", "1"])
        let threads = image["threads"] as! [[String: Any]]
        #expect(threads.count == 6, "main, 4 workers and the pipe reader: \(threads.count)")
        #expect(Set(threads.map { ($0["tid"] as! NSNumber).intValue }).count == 6)
        let fds = image["fds"] as! [[String: Any]]
        let pipeFDs = fds.filter { $0["kind"] as? String == "pipe" && ($0["fd"] as! NSNumber).intValue > 2 }
        #expect(pipeFDs.count == 2, "both ends of the workload's pipe: \(fds)")
        #expect(Set(pipeFDs.map { $0["pipeInode"] as? NSNumber }).count == 1)
        #expect(pipeFDs.contains { !($0["pipeData"] as? String ?? "").isEmpty }, "the pipe held data at the checkpoint")
        #expect(fds.contains { $0["path"] as? String == dir + "/data" && $0["kind"] as? String == "regular" })
    }

    @Test func cProgramWithFPUStateAndMoreMemoryThanItsBudget() throws {
        try checkpointKillRestore([try Workloads.path("progress"), "30", "48", "100"], name: "progress", localMem: "8M", afterLines: 5)
    }

    @Test func incrementalCheckpointsHoldOnlyChangedPages() throws {
        let dir = TestEnvironment.temporaryDirectory("ckpt-incremental")
        let perStep = 200
        let plain = try runCommand([try Workloads.path("dirtier"), "32", String(perStep), "7", "0"])
        // Each step dirties `perStep` pages, prints a line, then sleeps a second: a checkpoint taken
        // just after a line sees exactly the steps printed since the previous one.
        let run = try NamedRun(name: "dirtier", stateDir: dir + "/state", output: dir + "/out", localMem: "8M",
                               argv: [try Workloads.path("dirtier"), "32", String(perStep), "7", "1000"])
        func lines() -> Int { ((try? String(contentsOfFile: run.output, encoding: .utf8)) ?? "").split(separator: "\n").count }
        func pages(_ r: CommandResult) -> Int {
            guard let m = r.stdout.range(of: #"\d+ pages"#, options: .regularExpression) else { return -1 }
            return Int(r.stdout[m].split(separator: " ")[0]) ?? -1
        }
        try run.waitForLines(2)
        let full = try run.checkpoint()
        let before = lines()
        #expect(full.status == 0, "\(full.stderr)")
        #expect(pages(full) >= 32 * 256, "the first checkpoint is full: \(full.stdout)")
        try run.waitForLines(before + 2)
        let increment = try run.checkpoint()
        let steps = lines() - before
        #expect(increment.status == 0, "\(increment.stderr)")
        // The dirtied pages, plus a few of libc's data, the stack and stdio's buffer.
        #expect(pages(increment) >= steps * perStep && pages(increment) <= steps * perStep + 64,
                "\(steps) steps of \(perStep) pages between the checkpoints: \(increment.stdout)")
        let context = try JSONSerialization.jsonObject(with: RecordFile.body(kind: .context, from: dir + "/state/processes/dirtier/epoch-2/context.rec")) as! [String: Any]
        #expect((context["parentEpoch"] as? NSNumber)?.intValue == 1)
        run.killHard()
        // Epoch 2 restores from epoch 1's pages with epoch 2's on top, lazily: PROG resumes first,
        // its faults and a background fill bring the pages back (past the budget, to the memory node).
        let r = try run.restore(extra: ["--stats-json", dir + "/restore.json"])
        #expect(r.status == 0, "restore failed (\(r.status)): \(r.stderr)")
        #expect(try String(contentsOfFile: run.output, encoding: .utf8) == plain.stdout, "output differs from an uninterrupted run")
        let stats = try RunStats(path: dir + "/restore.json")
        #expect(stats.int("restored_by_fault") > 0, "\(stats.raw)")
        #expect(stats.int("restored_by_fault") + stats.int("restored_by_fill") >= 32 * 256, "every page of the area came back: \(stats.raw)")
        #expect(stats.int("stored_pages") > 0, "pages past the 16M budget went to the memory node: \(stats.raw)")
        let resumed = (stats.raw["restore_resume_ms"] as? NSNumber)?.doubleValue ?? 0
        let complete = (stats.raw["restore_complete_ms"] as? NSNumber)?.doubleValue ?? 0
        #expect(resumed > 0 && complete > resumed, "PROG resumed before all its memory was back: \(stats.raw)")
    }

    /// Pages discarded (MADV_DONTNEED) after a checkpoint are zero runs of the next increment: the
    /// restore of that increment must not bring the first checkpoint's content back there.
    @Test func discardedPagesRestoreAsZeros() throws {
        let dir = TestEnvironment.temporaryDirectory("ckpt-discard")
        let argv = [try Workloads.path("dirtier"), "16", "100", "6"]
        let plain = try runCommand(argv + ["0", "300"])
        let run = try NamedRun(name: "discard", stateDir: dir + "/state", output: dir + "/out", localMem: "8M", argv: argv + ["1000", "300"])
        try run.waitForLines(2)
        #expect(try run.checkpoint().status == 0)
        let lines = ((try? String(contentsOfFile: run.output, encoding: .utf8)) ?? "").split(separator: "\n").count
        try run.waitForLines(lines + 1)
        #expect(try run.checkpoint().status == 0)
        run.killHard()
        let index = try JSONSerialization.jsonObject(with: RecordFile.body(kind: .pageIndex, from: dir + "/state/processes/discard/epoch-2/index.rec")) as! [String: Any]
        let zeros = (index["zeros"] as! [[NSNumber]]).reduce(0) { $0 + $1[1].intValue }
        #expect(zeros >= 300, "the 300 pages discarded since epoch 1 are zero runs of epoch 2: \(zeros)")
        let r = try run.restore()
        #expect(r.status == 0, "restore failed (\(r.status)): \(r.stderr)")
        #expect(try String(contentsOfFile: run.output, encoding: .utf8) == plain.stdout, "output differs from an uninterrupted run")
    }

    /// A flipped byte in a checkpoint's pages is found by its checksum: the restore stops and names
    /// the file and the page, and never hands the program the damaged page.
    @Test func aCorruptCheckpointPageIsRefusedAtRestore() throws {
        let dir = TestEnvironment.temporaryDirectory("ckpt-corrupt")
        let argv = [try Workloads.path("dirtier"), "16", "100", "6"]
        let run = try NamedRun(name: "corrupt", stateDir: dir + "/state", output: dir + "/out", localMem: "64M", argv: argv + ["1000"])
        try run.waitForLines(2)
        #expect(try run.checkpoint().status == 0)
        run.killHard()
        let pagesFile = dir + "/state/processes/corrupt/epoch-1/pages.bin"
        let reader = try PagesFileReader(path: pagesFile)
        #expect(reader.pages > 1000, "the checkpoint holds the program's pages: \(reader.pages)")
        // Damage every page past the first few hundred: whichever the restore reads first fails.
        let fd = open(pagesFile, O_RDWR)
        for page in stride(from: 256, to: reader.pages, by: 1) {
            var b: UInt8 = 0
            _ = pread(fd, &b, 1, off_t(PagesFile.headerSize + page * 4096 + 7))
            b ^= 0x80
            _ = pwrite(fd, &b, 1, off_t(PagesFile.headerSize + page * 4096 + 7))
        }
        close(fd)
        let r = try run.restore()
        #expect(r.status != 0, "a restore from a damaged checkpoint must not succeed: \(r.stderr)")
        #expect(r.stderr.contains("pages.bin") && r.stderr.contains("does not match its checksum"), "\(r.stderr)")
    }

    /// PROG exits while its copy-on-write checkpoint is being written (the commit is held back
    /// here): the snapshot child outlives it, the checkpoint commits, and restores to a plain run's end.
    @Test func aCheckpointCommitsAfterPROGHasExited() throws {
        let dir = TestEnvironment.temporaryDirectory("ckpt-exit")
        let argv = [try Workloads.path("dirtier"), "16", "100", "4"]
        let plain = try runCommand(argv + ["0"])
        let run = try NamedRun(name: "exiting", stateDir: dir + "/state", output: dir + "/out", localMem: "64M", argv: argv + ["100"],
                               options: ["--snapshot-above", "1"], environment: ["LEGATO_TEST_COMMIT_DELAY_MS": "1500"])
        try run.waitForLines(2)
        let ck = try run.checkpoint()
        #expect(ck.status == 0 && ck.stdout.contains("copy-on-write"), "checkpoint failed: \(ck.stdout) \(ck.stderr)")
        let exit = try run.command.wait(timeoutSeconds: 60)
        #expect(exit.status == 0, "the run ends as PROG did: \(exit.stderr)")
        #expect(try String(contentsOfFile: run.output, encoding: .utf8) == plain.stdout)
        #expect(exit.stderr.contains("committed"), "committed after PROG's exit: \(exit.stderr)")
        let r = try run.restore()
        #expect(r.status == 0, "restore failed (\(r.status)): \(r.stderr)")
        #expect(try String(contentsOfFile: run.output, encoding: .utf8) == plain.stdout, "output differs from an uninterrupted run")
    }

    /// The agent killed at each step of a checkpoint: before it is durable, once prepared, once
    /// committed but unacknowledged. The newest committed checkpoint restores to a plain run's end.
    @Test(arguments: ["captured", "prepared", "committed"])
    func crashDuringACheckpointLeavesTheLastCommittedOne(_ point: String) throws {
        let dir = TestEnvironment.temporaryDirectory("ckpt-crash-\(point)")
        let argv = [try Workloads.path("dirtier"), "16", "100", "12"]
        let plain = try runCommand(argv + ["0"])
        let run = try NamedRun(name: "crash", stateDir: dir + "/state", output: dir + "/out", localMem: "8M", argv: argv + ["200"])
        try run.waitForLines(2)
        #expect(try run.checkpoint().status == 0)
        try run.waitForLines(4)
        let crashed = try runCommand([TestEnvironment.legato, "checkpoint", "crash", "--state-dir", run.stateDir, "--crash-at", point], timeoutSeconds: 120)
        #expect(crashed.status != 0, "the agent died before answering: \(crashed.stdout)")
        let ended = try run.command.wait(timeoutSeconds: 30)
        #expect(ended.status == 128 + SIGKILL, "legato run was killed: \(ended.status)")
        let ls = try runCommand([TestEnvironment.legato, "ls", "--json", "--state-dir", run.stateDir])
        let d = try JSONSerialization.jsonObject(with: Data(ls.stdout.utf8)) as! [String: Any]
        let epochs = ((d["processes"] as! [[String: Any]]).first?["checkpoints"] as? [[String: Any]] ?? []).map { ($0["epoch"] as! NSNumber).intValue }
        #expect(epochs == (point == "committed" ? [1, 2] : [1]), "committed checkpoints after a crash at \(point): \(epochs)")
        let r = try run.restore()
        #expect(r.status == 0, "restore after a crash at \(point) failed: \(r.stderr)")
        #expect(try String(contentsOfFile: run.output, encoding: .utf8) == plain.stdout, "output differs from an uninterrupted run")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: run.stateDir + "/processes/crash").filter { $0.hasSuffix(".tmp") }
        #expect(leftovers.isEmpty, "a half-written checkpoint is cleaned up: \(leftovers)")
    }

    @Test func checkpointsPeriodically() throws {
        let dir = TestEnvironment.temporaryDirectory("ckpt-periodic")
        let argv = [try Workloads.path("dirtier"), "16", "50", "20"]
        let plain = try runCommand(argv + ["0"])
        let run = try NamedRun(name: "periodic", stateDir: dir + "/state", output: dir + "/out", localMem: "8M",
                               argv: argv + ["150"], options: ["--checkpoint-every", "400ms"])
        try run.waitForLines(14)
        run.killHard()
        let ls = try runCommand([TestEnvironment.legato, "ls", "--json", "--state-dir", run.stateDir])
        let d = try JSONSerialization.jsonObject(with: Data(ls.stdout.utf8)) as! [String: Any]
        let cks = (d["processes"] as! [[String: Any]]).first?["checkpoints"] as? [[String: Any]] ?? []
        #expect(cks.count >= 3, "a checkpoint every 400 ms over about 2 s: \(cks.count)")
        #expect(cks.map { ($0["epoch"] as! NSNumber).intValue } == Array(1...max(1, cks.count)))
        // After the first, each holds only what changed: far less than the 4096 pages of the area.
        for c in cks.dropFirst() { #expect(((c["pages"] as? NSNumber)?.intValue ?? 0) < 2048, "\(c)") }
        let r = try run.restore()
        #expect(r.status == 0, "restore failed: \(r.stderr)")
        #expect(try String(contentsOfFile: run.output, encoding: .utf8) == plain.stdout, "output differs from an uninterrupted run")
    }

    /// Python mid-computation, with a signal pending for the process and one for its main thread
    /// (blocked until the end): the restored run must still deliver both.
    @Test func pythonMidComputation() throws {
        let argv = ["python3", Workloads.script("pyprogress.py"), "30", "pending"]
        let plain = try runCommand(argv)
        #expect(plain.stdout.contains("['SIGUSR1', 'SIGUSR2']"), "the workload's own check: \(plain.stdout)")
        let image = try checkpointKillRestore(argv, name: "python", localMem: "32M", afterLines: 4)
        #expect((image["pendingSignals"] as? [Any])?.count == 1, "SIGUSR1 pending for the process")
        let threads = image["threads"] as! [[String: Any]]
        #expect(threads.contains { ($0["pendingSignals"] as? [Any])?.count == 1 }, "SIGUSR2 pending for the main thread")
    }

    @Test func refusesAnUnsupportedDescriptorAndRunsOn() throws {
        let dir = TestEnvironment.temporaryDirectory("ckpt-socket")
        let argv = ["python3", Workloads.script("pyprogress.py"), "12", "socket"]
        let plain = try runCommand(argv)
        let run = try NamedRun(name: "sock", stateDir: dir + "/state", output: dir + "/out", localMem: "32M", argv: argv)
        try run.waitForLines(2)
        let ck = try run.checkpoint()
        #expect(ck.status != 0)
        #expect(ck.stderr.contains("a netlink socket"), "the refusal names the descriptor's kind: \(ck.stderr)")
        #expect(ck.stderr.contains("fd "), "the refusal names the fd: \(ck.stderr)")
        let r = try run.command.wait(timeoutSeconds: 120)
        #expect(r.status == 0, "the program runs on after a refused checkpoint: \(r.stderr)")
        #expect(try String(contentsOfFile: run.output, encoding: .utf8) == plain.stdout)
        let ls = try runCommand([TestEnvironment.legato, "ls", "--json", "--state-dir", dir + "/state"])
        let d = try JSONSerialization.jsonObject(with: Data(ls.stdout.utf8)) as! [String: Any]
        let procs = d["processes"] as! [[String: Any]]
        #expect(procs.count == 1)
        #expect((procs.first?["checkpoints"] as? [Any])?.isEmpty == true, "a refused checkpoint is not recorded")
        #expect(procs.first?["state"] as? String == "exited")
    }

    @Test func listsRunsAndCheckpointsAsJSON() throws {
        let dir = TestEnvironment.temporaryDirectory("ckpt-ls")
        let run = try NamedRun(name: "lister", stateDir: dir + "/state", output: dir + "/out", localMem: "16M",
                               argv: [try Workloads.path("progress"), "40", "8", "50"])
        try run.waitForLines(2)
        #expect(try run.checkpoint().status == 0)
        #expect(try run.checkpoint().status == 0)
        let ls = try runCommand([TestEnvironment.legato, "ls", "--json", "--state-dir", dir + "/state"])
        let d = try JSONSerialization.jsonObject(with: Data(ls.stdout.utf8)) as! [String: Any]
        let p = (d["processes"] as! [[String: Any]]).first!
        #expect(p["name"] as? String == "lister")
        #expect(p["state"] as? String == "running")
        let cks = p["checkpoints"] as! [[String: Any]]
        #expect(cks.map { ($0["epoch"] as? NSNumber)?.intValue } == [1, 2])
        for c in cks {
            for key in ["epoch", "committed_at", "pause_ms", "pages", "bytes"] { #expect(c[key] != nil, "missing \(key)") }
            #expect(((c["pages"] as? NSNumber)?.intValue ?? 0) > 0)
        }
        _ = try run.command.wait(timeoutSeconds: 120)
    }
}
