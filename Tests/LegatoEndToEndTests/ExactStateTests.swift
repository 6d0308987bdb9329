import Foundation
import Glibc
import Testing
import LegatoSystem

/// What PROG starts with and what a checkpoint keeps exactly: descriptors inherited from the
/// caller, state programs of Tools/state (set up, checkpointed, killed, restored, checked), and the
/// kinds of state that are refused by name while PROG runs on.
@Suite(.serialized) struct ExactStateTests {
    init() throws { try requireAgentCapabilities() }


    /// PROG's descriptors below 1000: the agent keeps one of its own at 1000 or above (a pidfd for
    /// its injected process_madvise, where the kernel has no PIDFD_SELF), which no checkpoint saves.
    static let listFDs = "import os; print(sorted(int(x) for x in os.listdir('/proc/self/fd') if int(x) < 1000))"

    /// A shell's extra descriptor (fd 9, a pipe to the test: as a CI runner's or make's) is not PROG's;
    /// `--keep-fd 9` gives it to PROG.
    @Test func inheritedDescriptorsAreClosedUnlessKept() throws {
        let legato = TestEnvironment.legato
        let plain = try runCommand(["sh", "-c", "exec 9>&2; exec '\(legato)' run --local-mem 64M -- python3 -c \"\(Self.listFDs)\""])
        #expect(plain.status == 0, "\(plain.stderr)")
        #expect(plain.stdout == "[0, 1, 2, 3]\n", "PROG sees only stdin, stdout, stderr (and listdir's own): \(plain.stdout)")
        let kept = try runCommand(["sh", "-c", "exec 9>&2; exec '\(legato)' run --local-mem 64M --keep-fd 9 -- python3 -c \"\(Self.listFDs)\""])
        #expect(kept.status == 0, "\(kept.stderr)")
        #expect(kept.stdout == "[0, 1, 2, 3, 9]\n", "--keep-fd 9 keeps fd 9: \(kept.stdout)")
        let missing = try runCommand([legato, "run", "--keep-fd", "77", "--", "true"])
        #expect(missing.status == 64, "a --keep-fd of no descriptor is a usage error: \(missing.status) \(missing.stderr)")
        #expect(missing.stderr.contains("--keep-fd 77"), "\(missing.stderr)")
    }

    /// systemd's socket activation: the descriptors LISTEN_FDS names (for legato run's own pid) are
    /// PROG's, and LISTEN_PID is PROG's pid as PROG sees it.
    @Test func socketActivationDescriptorsArePassedOn() throws {
        let legato = TestEnvironment.legato
        let script = "import os; print(os.environ['LISTEN_PID'] == str(os.getpid()), os.environ['LISTEN_FDS'], sorted(int(x) for x in os.listdir('/proc/self/fd') if int(x) < 1000))"
        let r = try runCommand(["sh", "-c", "exec 3</dev/null 4</dev/null 9>&2; LISTEN_FDS=2 LISTEN_PID=$$ exec '\(legato)' run --local-mem 64M -- python3 -c \"\(script)\""])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "True 2 [0, 1, 2, 3, 4, 5]\n", "fds 3 and 4 passed on, 9 closed, LISTEN_PID is PROG's: \(r.stdout)")
        let other = try runCommand(["sh", "-c", "exec 3</dev/null; LISTEN_FDS=1 LISTEN_PID=1 exec '\(legato)' run --local-mem 64M -- python3 -c \"\(Self.listFDs)\""])
        #expect(other.stdout == "[0, 1, 2, 3]\n", "LISTEN_FDS for another process passes nothing on: \(other.stdout)")
    }

    /// PROG, PID 2 of its own PID namespace, reads its own /proc: the processes there are its
    /// namespace's (the reaper and itself), /proc/self is PROG, and the rest of the file system is the host's.
    @Test func theProgramSeesItsOwnProc() throws {
        let script = "import os; print(sorted(int(x) for x in os.listdir('/proc') if x.isdigit()), os.readlink('/proc/self'), os.path.exists('\(TestEnvironment.repositoryRoot)/Package.swift'))"
        let r = try runCommand([TestEnvironment.legato, "run", "--local-mem", "64M", "--", "python3", "-c", script])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "[1, 2] 2 True\n", "\(r.stdout)")
        // The host's /proc is untouched: no proc mount of PROG's leaked out.
        let mounts = (try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? ""
        #expect(mounts.split(separator: "\n").filter { $0.hasPrefix("proc /proc ") }.count == 1, "\(mounts)")
    }

    /// Started with an extra inherited descriptor, a program checkpoints and restores as if it had none.
    @Test func aRunStartedWithAnExtraDescriptorCheckpoints() throws {
        let dir = TestEnvironment.temporaryDirectory("state-extra-fd")
        let argv = ["python3", Workloads.script("pyprogress.py"), "14"]
        let plain = try runCommand(argv)
        let run = try NamedRun(name: "extrafd", stateDir: dir + "/state", output: dir + "/out", localMem: "32M", argv: argv, shell: "exec 9>&2")
        try run.waitForLines(3)
        let ck = try run.checkpoint()
        #expect(ck.status == 0, "the inherited fd 9 is not PROG's, so it does not refuse the checkpoint: \(ck.stderr)")
        run.killHard()
        let r = try run.restore()
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try String(contentsOfFile: run.output, encoding: .utf8) == plain.stdout)
    }

    /// A kept descriptor that leads outside the program is refused with the flag that kept it.
    @Test func aKeptDescriptorLeadingOutsideIsRefusedByName() throws {
        let dir = TestEnvironment.temporaryDirectory("state-kept-fd")
        let argv = ["python3", Workloads.script("pyprogress.py"), "12"]
        let plain = try runCommand(argv)
        let run = try NamedRun(name: "keptfd", stateDir: dir + "/state", output: dir + "/out", localMem: "32M", argv: argv,
                               options: ["--keep-fd", "9"], shell: "exec 9>&2")
        try run.waitForLines(2)
        let ck = try run.checkpoint()
        #expect(ck.status != 0)
        #expect(ck.stderr.contains("fd 9 is pipe:"), "\(ck.stderr)")
        #expect(ck.stderr.contains("--keep-fd 9"), "the refusal names the flag that kept it: \(ck.stderr)")
        let r = try run.command.wait(timeoutSeconds: 120)
        #expect(r.status == 0, "the program runs on: \(r.stderr)")
        #expect(try String(contentsOfFile: run.output, encoding: .utf8) == plain.stdout)
    }

    /// Python mid-computation with a shared anonymous mapping: it is saved with the checkpoint
    /// and mapped again where it was.
    @Test func pythonWithSharedAnonymousMemory() throws {
        let image = try checkpointKillRestore(["python3", Workloads.script("pyprogress.py"), "30", "shm"], name: "shm", localMem: "32M", afterLines: 4)
        let objects = image["sharedObjects"] as? [[String: Any]] ?? []
        #expect(objects.count == 1 && objects.first?["kind"] as? String == "anonymous", "\(objects)")
    }

    /// A memfd mapped shared, whose descriptor python's mmap keeps: one object, mapping and
    /// descriptor, its content carried across the restore.
    @Test func pythonWithAMappedMemfd() throws {
        let image = try checkpointKillRestore(["python3", Workloads.script("pyprogress.py"), "30", "memfd"], name: "memfd", localMem: "32M", afterLines: 4)
        let objects = image["sharedObjects"] as? [[String: Any]] ?? []
        #expect(objects.count == 1 && objects.first?["name"] as? String == "/memfd:pyprogress", "\(objects)")
        let fds = image["fds"] as? [[String: Any]] ?? []
        #expect(fds.contains { $0["kind"] as? String == "memfd" && $0["object"] as? Int == 0 }, "the descriptor is the mapping's object: \(fds)")
    }

    /// State with no exact restore yet is refused by name; the program runs on and ends as a plain run does.
    @Test(arguments: [("aio-inflight", "with 1 request(s) in flight"), ("epoll-moved", "added as fd 4, which fd 4 no longer is"),
                      ("iouring", "fd 3 is anon_inode:[io_uring] (an io_uring instance"), ("mlock", "locked memory (mlock)"), ("mseal", "sealed memory (mseal)"),
                      ("fifo-outside", "trigger.outside-fifo, which pid \(getpid())"), ("pidfd-outside", "fd 3 is anon_inode:[pidfd], a pidfd of pid"),
                      ("pty-unread", "(the pty /dev/pts/"), ("pty-unread", "bytes of output its master has not read yet"), ("device", "fd 3 is /dev/full (a device)"),
                      ("rights-unkept", "with anon_inode:[eventfd] in flight (SCM_RIGHTS), which no process of the program holds")])
    func stateWithoutAnExactRestoreIsRefused(_ mode: String, _ named: String) throws {
        let dir = TestEnvironment.temporaryDirectory("refuse-\(mode)")
        let program = try Workloads.stateProgram("statecheck")
        let trigger = dir + "/trigger"
        var held: Int32 = -1  // fifo-outside: the FIFO's other holder is this process
        defer { if held >= 0 { close(held) } }
        if mode == "fifo-outside" {
            #expect(mkfifo(trigger + ".outside-fifo", 0o600) == 0)
            held = open(trigger + ".outside-fifo", O_RDWR | O_NONBLOCK | O_CLOEXEC)
        }
        let run = try NamedRun(name: "refuse-\(mode)", stateDir: dir + "/state", output: dir + "/out", localMem: "32M",
                               argv: [program, mode, trigger])
        try run.waitForLines(1)
        let ck = try run.checkpoint()
        #expect(ck.status != 0, "\(ck.stdout)")
        #expect(ck.stderr.contains(named), "the refusal names \(named): \(ck.stderr)")
        _ = FileManager.default.createFile(atPath: trigger, contents: nil)
        let r = try run.command.wait(timeoutSeconds: 60)
        #expect(r.status == 0, "the program runs on: \(r.stderr)")
        #expect(try String(contentsOfFile: run.output, encoding: .utf8) == "ready\ndone\n")
    }

    /// Started under a seccomp filter of its own (as in a container), `legato run` checkpoints: a
    /// filter PROG inherited is not one PROG installed, and the restore, started the same way, has it.
    @Test func aRunUnderAnInheritedSeccompFilterCheckpoints() throws {
        let dir = TestEnvironment.temporaryDirectory("inherited-seccomp")
        let wrapper = try Workloads.stateProgram("withseccomp")
        let argv = ["python3", Workloads.script("pyprogress.py"), "12"]
        let plain = try runCommand(argv)
        let quoted = argv.map { "'\($0)'" }.joined(separator: " ")
        let state = dir + "/state", out = dir + "/out"
        let run = try SpawnedCommand(["sh", "-c", "exec '\(wrapper)' '\(TestEnvironment.legato)' run --name seccomp --state-dir '\(state)' --local-mem 32M -- \(quoted) > '\(out)'"])
        let deadline = monotonicNanos() + 60_000_000_000
        while ((try? String(contentsOfFile: out, encoding: .utf8)) ?? "").split(separator: "\n").count < 3 && monotonicNanos() < deadline { usleep(20_000) }
        let ck = try runCommand([TestEnvironment.legato, "checkpoint", "seccomp", "--state-dir", state], timeoutSeconds: 120)
        #expect(ck.status == 0, "\(ck.stderr)")
        run.signal(SIGKILL)
        _ = try? run.wait(timeoutSeconds: 20)
        usleep(300_000)
        let r = try runCommand([wrapper, TestEnvironment.legato, "restore", "seccomp", "--state-dir", state, "--local-mem", "16M"], timeoutSeconds: 120)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try String(contentsOfFile: out, encoding: .utf8) == plain.stdout)
    }

    /// Each state program: set up, checkpointed (the advice one through a copy-on-write snapshot,
    /// which a fork would give without its dontfork and wipeonfork pages), killed, restored; then it
    /// checks its state and must print what a plain run prints: PASS.
    @Test(arguments: [("advice", ["--snapshot-above", "1"]), ("fdflags", []), ("attrs", []), ("locks", []), ("membarrier", []),
                      ("guard", ["--snapshot-above", "1"]), ("unlinked", []), ("zombies", []), ("timers", []), ("sysv", []), ("seccomp", []), ("loginuid", []), ("lease", []), ("aio", []), ("events", []), ("unix", []), ("inet", []), ("tcp", []), ("dirs", []), ("memfd", []), ("ghost", []), ("fifo", []), ("pidfd", []), ("inotify", []), ("pty", []), ("restarts", []), ("unix-named", []), ("unix-rights", []), ("unix-dgram", [])])
    func stateComesBackExactly(_ mode: String, _ options: [String]) throws {
        let (plain, run, r) = try checkpointKillRestoreState(mode, options: options)
        #expect(plain.stdout == "ready\nPASS \(mode)\n", "a plain run passes: \(plain.stdout) \(plain.stderr)")
        let restored = try String(contentsOfFile: run.output, encoding: .utf8)
        #expect(r.status == 0, "the restored program checked its state (\(restored)): \(r.stderr)")
        #expect(restored == plain.stdout)
    }

    /// statecheck `mode` run plainly (triggered from the start), then under `legato run` with
    /// `options`: checkpointed once it is ready, killed with kill -9, `afterKill` given the
    /// trigger's path (the run "went on"), triggered, and restored with `restoreOptions`.
    func checkpointKillRestoreState(_ mode: String, options: [String] = [], restoreOptions: [String] = [],
                                    afterKill: (String) throws -> Void = { _ in }) throws -> (plain: CommandResult, run: NamedRun, restored: CommandResult) {
        let dir = TestEnvironment.temporaryDirectory("state-\(mode)")
        let program = try Workloads.stateProgram("statecheck")
        let plainTrigger = dir + "/plain-trigger"
        _ = FileManager.default.createFile(atPath: plainTrigger, contents: nil)
        let plain = try runCommand([program, mode, plainTrigger])
        let trigger = dir + "/trigger"
        let run = try NamedRun(name: "state-\(mode)", stateDir: dir + "/state", output: dir + "/out", localMem: "32M",
                               argv: [program, mode, trigger], options: options)
        try run.waitForLines(1)
        let ck = try run.checkpoint()
        #expect(ck.status == 0, "\(ck.stderr)")
        run.killHard()
        try afterKill(trigger)
        _ = FileManager.default.createFile(atPath: trigger, contents: nil)
        return (plain, run, try run.restore(extra: restoreOptions))
    }

    /// Files the program holds open change after the checkpoint (the run went on: one rewritten,
    /// one deleted, one appended to): the restore puts each back as it was, and the program finds
    /// them so (statecheck openfiles); the one left alone is not touched.
    @Test func openFilesComeBackAsAtTheCheckpoint() throws {
        var trigger = ""
        let (plain, run, r) = try checkpointKillRestoreState("openfiles") { t in
            trigger = t
            try Data("rewritten after the checkpoint".utf8).write(to: URL(fileURLWithPath: t + ".scratch"))
            try FileManager.default.removeItem(atPath: t + ".input")
            let log = try FileHandle(forWritingTo: URL(fileURLWithPath: t + ".log"))
            try log.seekToEnd()
            try log.write(contentsOf: Data("written after the checkpoint\n".utf8))
            try log.close()
        }
        #expect(plain.stdout == "ready\nPASS openfiles\n", "a plain run passes: \(plain.stdout) \(plain.stderr)")
        #expect(r.status == 0, "the restored program checked its files: \(r.stderr)")
        #expect(try String(contentsOfFile: run.output, encoding: .utf8) == plain.stdout)
        for (file, why) in [(".scratch", "changed"), (".input", "gone"), (".log", "changed")] {
            #expect(r.stderr.contains("\(trigger)\(file) (\(why))"), "the restore says it put \(file) back: \(r.stderr)")
        }
        #expect(!r.stderr.contains(trigger + ".same"), "the file left alone is not put back: \(r.stderr)")
    }

    /// `legato restore --tcp-close`: the connections come back reset (both ends of one between two
    /// of the program's sockets fail), the listener listens; a plain run's connection goes on.
    @Test func tcpConnectionsComeBackResetWithTcpClose() throws {
        let (plain, run, r) = try checkpointKillRestoreState("tcp-closed", restoreOptions: ["--tcp-close"])
        #expect(plain.stdout.hasPrefix("ready\nFAIL tcp-closed: the client end was not closed"), "a plain run's connection goes on: \(plain.stdout)")
        #expect(r.status == 0, "the restored program found its connection reset: \(r.stderr)")
        #expect(try String(contentsOfFile: run.output, encoding: .utf8) == "ready\nPASS tcp-closed\n")
    }
}
