import Foundation
import Glibc
import Testing

/// A checkpoint holds every process of PROG's tree, taken in one pause: each is restored with its
/// pid, its parent, its process group, its memory and descriptors, the pipes between them connected
/// and holding what they held. Real programs, checkpointed mid-work, killed with kill -9 and
/// restored, compared with plain runs.
@Suite(.serialized) struct TreeCheckpointTests {
    init() throws { try requireAgentCapabilities() }

    /// The members of a checkpoint's tree, from PROG's image.
    func members(_ image: [String: Any]) -> [[String: Any]] { image["members"] as? [[String: Any]] ?? [] }

    func exe(_ member: [String: Any]) -> String { member["exe"] as? String ?? "" }

    @Test func aShellWaitingForItsChild() throws {
        // Caught while bash waits for a sleep: both come back, the sleep goes on sleeping, bash
        // collects its exit status and goes on.
        let script = "echo started; for i in 1 2 3 4 5 6 7 8; do sleep 0.4; echo tick $i; done; echo done"
        let image = try checkpointKillRestore(["bash", "-c", script], name: "shell-child", localMem: "16M", afterLines: 3)
        let m = members(image)
        #expect(m.count == 1 && exe(m[0]).hasSuffix("/sleep"), "the sleep is in the checkpoint: \(m.map(exe))")
        #expect((m.first?["links"] as? [String: Any])?["parent"] as? Int == image["pid"] as? Int, "its parent is PROG")
    }

    @Test func aChildInASessionOfItsOwn() throws {
        // setsid(1) makes bash's child the leader of a new session (and group); its sleeps are in it.
        let script = "echo start; setsid bash -c \"for i in 1 2 3 4 5 6 7 8; do sleep 0.3; echo in session \\$i; done\"; echo end"
        let image = try checkpointKillRestore(["bash", "-c", script], name: "session", localMem: "16M", afterLines: 3)
        let leaders = members(image).filter { m in
            let links = m["links"] as? [String: Any]
            return links?["session"] as? Int == m["pid"] as? Int && links?["processGroup"] as? Int == m["pid"] as? Int
        }
        #expect(leaders.count == 1, "the setsid'd bash leads its session and group: \(members(image).map { $0["links"] ?? "" })")
    }

    @Test func scriptRunningAShellOnAPty() throws {
        // script(1) makes a pty, runs bash on its slave (a session of its own, the pty its
        // controlling terminal) and copies what it prints: caught while bash sleeps, both come back
        // with the pty (its index, termios, the session's terminal), and the output goes on
        // through it (each line ending in \r\n from the line discipline).
        let loop = "for i in $(seq 1 24); do echo step $i; sleep 0.1; done; tty; echo done"
        let image = try checkpointKillRestore(["script", "-q", "-c", loop, "/dev/null"], name: "script-pty", localMem: "16M", afterLines: 6)
        let fds = image["fds"] as? [[String: Any]] ?? []
        #expect(fds.contains { $0["kind"] as? String == "ptyMaster" }, "script's master is in the checkpoint: \(fds.map { $0["kind"] ?? "" })")
        let shell = members(image).first { (($0["links"] as? [String: Any])?["terminal"]) != nil }
        #expect(shell != nil, "bash has the pty for controlling terminal: \(members(image).map { $0["links"] ?? "" })")
    }

    @Test func aPipelineWithDataInItsPipe() throws {
        // seq fills the pipe and blocks; the reader (a subshell of bash) sleeps, then reads it all.
        // Checkpointed while the pipe is full: it comes back holding the same bytes.
        let script = "echo start; seq 1 300000 | (sleep 1; echo reading; sleep 1.5; md5sum); echo end"
        let image = try checkpointKillRestore(["bash", "-c", script], name: "pipeline", localMem: "16M", afterLines: 2)
        let m = members(image)
        #expect(m.contains { exe($0).hasSuffix("/seq") }, "seq is in the checkpoint: \(m.map(exe))")
        let held = ([image] + m).flatMap { ($0["fds"] as? [[String: Any]]) ?? [] }.compactMap { $0["pipeData"] as? String }
        #expect(held.contains { (Data(base64Encoded: $0)?.count ?? 0) >= 4096 }, "the full pipe's bytes are saved with the checkpoint")
    }

    @Test func aPipelineOfStreamingStages() throws {
        // Three stages streaming through two pipes, each a fork of bash.
        let script = "for i in $(seq 1 60); do echo line $i; sleep 0.05; done | while read l; do echo \"got $l\"; done | cat -n"
        let image = try checkpointKillRestore(["bash", "-c", script], name: "stream", localMem: "16M", afterLines: 10)
        #expect(members(image).count >= 2, "every stage is in the checkpoint: \(members(image).map(exe))")
    }

    func sharedObjects(_ image: [String: Any]) -> [[String: Any]] { image["sharedObjects"] as? [[String: Any]] ?? [] }

    @Test func aPythonMultiprocessingPoolMidWork() throws {
        // Two forked workers fed task by task through the pool's pipes, its locks POSIX semaphores
        // in /dev/shm, unlinked once mapped: all of them come back shared.
        let image = try checkpointKillRestore(["python3", Workloads.script("pypoolwork.py"), "150"], name: "pool", localMem: "32M", afterLines: 12)
        #expect(members(image).count >= 2, "both workers are in the checkpoint: \(members(image).map(exe))")
        let objects = sharedObjects(image)
        #expect(objects.contains { $0["kind"] as? String == "unlinkedFile" && ($0["name"] as? String ?? "").hasPrefix("/dev/shm/sem.") },
                "the pool's semaphores are saved: \(objects)")
    }

    @Test func aMultiprocessingManagerOverItsUNIXSocket() throws {
        // multiprocessing.Manager: its server, a child, listens on a UNIX socket path; this
        // process's proxies are connected to it through that name (accepted there).
        let image = try checkpointKillRestore(["python3", Workloads.script("pymanager.py"), "25"], name: "manager", localMem: "64M", afterLines: 6)
        let sockets = ([image] + members(image)).flatMap { ($0["fds"] as? [[String: Any]]) ?? [] }.compactMap { $0["unixSocket"] as? [String: Any] }
        #expect(sockets.contains { $0["backlog"] != nil && $0["name"] != nil }, "the manager's listener is saved: \(sockets)")
        #expect(sockets.contains { $0["peer"] != nil && $0["name"] != nil }, "a connection accepted on its name is saved: \(sockets)")
    }

    @Test func forkedWorkersSharingMemoryAndPipes() throws {
        // sharedwork: MAP_SHARED anonymous memory, a memfd and an unlinked file, mapped before the
        // fork by all; a pipe each way to every worker. It checks every answer against the shared
        // memory it sees itself, and the workers' exit statuses at the end.
        let image = try checkpointKillRestore([try Workloads.path("sharedwork"), "60", "3", "8"], name: "sharedwork", localMem: "16M", afterLines: 8)
        #expect(members(image).count == 3)
        let kinds = Set(sharedObjects(image).compactMap { $0["kind"] as? String })
        #expect(kinds == ["anonymous", "memfd", "unlinkedFile"], "\(sharedObjects(image))")
        // Each object is saved once however many map it: every process maps all three.
        #expect(sharedObjects(image).count == 3)
    }

    @Test func makeBuildingACProjectWithTwoJobs() throws {
        // make -j2: its jobserver pipe, the stdin pipe it gives jobs (its write end closed), two cc
        // drivers with their cc1 and as, temporary files; checkpointed while two jobs compile.
        let dir = TestEnvironment.temporaryDirectory("make-project")
        let made = try runCommand(["sh", Workloads.script("cproject.sh"), dir + "/src", "6", "300"])
        #expect(made.status == 0, "\(made.stderr)")
        let build = "D=\(dir); rm -rf $D/build && cp -r $D/src $D/build && echo building && make -s -j2 -C $D/build && $D/build/prog"
        let image = try checkpointKillRestore(["bash", "-c", build], name: "make", localMem: "32M", afterLines: 1, thenSeconds: 1.5,
                                              restoresTwice: false)
        #expect(members(image).contains { exe($0).hasSuffix("/make") }, "\(members(image).map(exe))")
    }

    @Test func gccCompiling() throws {
        // The gcc driver waiting for cc1 (or as) on temporary files: gcc collects its child's status
        // after the restore and goes on to link.
        let dir = TestEnvironment.temporaryDirectory("gcc")
        let made = try runCommand(["sh", Workloads.script("cproject.sh"), dir + "/src", "4", "300"])
        #expect(made.status == 0, "\(made.stderr)")
        let sources = ["m0", "m1", "m2", "m3", "main"].map { "\(dir)/src/\($0).c" }.joined(separator: " ")
        let script = "echo compiling; gcc -O2 -o \(dir)/prog \(sources) && \(dir)/prog"
        let image = try checkpointKillRestore(["bash", "-c", script], name: "gcc", localMem: "32M", afterLines: 1, thenSeconds: 1,
                                              restoresTwice: false)
        let names = ([image] + members(image)).map(exe)
        #expect(names.contains { $0.hasSuffix("/cc1") || $0.hasSuffix("/as") }, "gcc's compiler or assembler is in the checkpoint: \(names)")
    }
}
