import Foundation
import Glibc
import Testing
import LegatoCore
import LegatoSystem
import LegatoWire

/// Checkpoints through a cluster: pages and context into the run's replicated log on log nodes,
/// the decision in the coordinator's store. Restores after kill -9 of the run and of a log node.
@Suite(.serialized) struct ClusterCheckpointTests {
    init() throws { try requireAgentCapabilities() }

    func clusterOptions(_ c: TestCluster) -> [String] { ["--coordinator", c.coordinator.description, "--secret-file", c.secretFile] }

    func committedEpochs(_ c: TestCluster, stateDir: String) throws -> [Int] {
        let ls = try runCommand([TestEnvironment.legato, "ls", "--json", "--state-dir", stateDir] + clusterOptions(c))
        let d = try JSONSerialization.jsonObject(with: Data(ls.stdout.utf8)) as! [String: Any]
        let procs = d["processes"] as! [[String: Any]]
        return (procs.first?["checkpoints"] as? [[String: Any]] ?? []).map { ($0["epoch"] as! NSNumber).intValue }
    }

    @Test func restoresFromTheLogAfterALogNodeDies() throws {
        let cluster = try TestCluster(memory: 2, log: 3)
        defer { cluster.down() }
        let dir = TestEnvironment.temporaryDirectory("cluster-ckpt")
        let argv = [try Workloads.path("teamwork"), "30", "4", "32", dir + "/data"]
        let plain = try runCommand(argv)
        let run = try NamedRun(name: "teamwork", stateDir: dir + "/state", output: dir + "/out", localMem: "8M",
                                               argv: argv, options: clusterOptions(cluster))
        try run.waitForLines(4)
        let first = try run.checkpoint()
        #expect(first.status == 0, "\(first.stderr)")
        try run.waitForLines(7)
        let second = try run.checkpoint()
        #expect(second.status == 0 && second.stdout.contains("epoch 2 committed"), "\(second.stdout) \(second.stderr)")
        // The pages that lived only on the memory nodes were persisted by those nodes (2PC participants).
        #expect(try memoryNodesSum("persisted_pages", cluster) > 0, "the memory nodes persisted PROG's remote pages into their own logs")
        run.killHard()
        #expect(try committedEpochs(cluster, stateDir: run.stateDir) == [1, 2])
        // One of the three log nodes goes; every segment still has a replica elsewhere.
        cluster.kill9(address: cluster.daemons.first { $0.name.hasPrefix("logd") }!.address)
        // PROG resumes once the index and context are read; its pages stream in from the log nodes.
        // The replay is held back a while here, so PROG's first faults fetch their pages themselves.
        let r = try run.restore(extra: clusterOptions(cluster), environment: ["LEGATO_TEST_REPLAY_DELAY_MS": "1500"])
        #expect(r.status == 0, "restore failed (\(r.status)): \(r.stderr)")
        #expect(try String(contentsOfFile: run.output, encoding: .utf8) == plain.stdout, "output differs from an uninterrupted run")
        #expect(r.stderr.contains("pages to stream in"), "a streamed restore")
        #expect(number(before: " runs fetched ahead by faults", in: r.stderr) > 0, "faults fetched their pages ahead of the replay: \(r.stderr)")
        // The memory nodes still retain checkpoint 2 of the killed run's address space: the pages
        // they persisted come from their DRAM rather than from the participant logs.
        #expect(number(before: " pages retained by memory nodes", in: r.stderr) > 0, "pages read from the memory nodes: \(r.stderr)")
        // Once the restored PROG has exited, the killed run's space is dropped from the memory nodes.
        #expect(r.stderr.contains("address space(s) the earlier run of teamwork left on memory nodes"), "\(r.stderr)")
        // The same checkpoint again, without the delay: every page from the logs now.
        let again = try run.restore(extra: clusterOptions(cluster))
        #expect(again.status == 0, "second restore failed (\(again.status)): \(again.stderr)")
        #expect(try String(contentsOfFile: run.output, encoding: .utf8) == plain.stdout, "the second restore's output differs")
        #expect(again.stderr.contains(" 0 pages retained by memory nodes"), "the second restore came from the logs: \(again.stderr)")
        // Checkpoint 1: the nodes retain checkpoint 2 (not in its chain), so every page comes from the logs.
        let older = try run.restore(extra: clusterOptions(cluster) + ["--epoch", "1"])
        #expect(older.status == 0, "restore of epoch 1 failed (\(older.status)): \(older.stderr)")
        #expect(try String(contentsOfFile: run.output, encoding: .utf8) == plain.stdout, "the restore of epoch 1: output differs")
        #expect(older.stderr.contains(" 0 pages retained by memory nodes"), "epoch 1 came from the logs alone: \(older.stderr)")
        // Every run ended or was restored to its end: no address space is left on any memory node.
        #expect(try memoryNodesSum("spaces", cluster) == 0, "address spaces left on the memory nodes")
    }

    /// A memory node killed just before a restore, before the coordinator's failure detector calls
    /// it dead: the restore leaves it out and replays its share from the log nodes.
    @Test func aRestoreRightAfterAMemoryNodeDied() throws {
        let cluster = try TestCluster(memory: 2, log: 3, deadAfterMillis: 120_000)
        defer { cluster.down() }
        let dir = TestEnvironment.temporaryDirectory("cluster-memdead")
        let argv = [try Workloads.path("teamwork"), "30", "4", "32", dir + "/data"]
        let plain = try runCommand(argv)
        let run = try NamedRun(name: "memdead", stateDir: dir + "/state", output: dir + "/out", localMem: "8M",
                               argv: argv, options: clusterOptions(cluster))
        try run.waitForLines(5)
        let ck = try run.checkpoint()
        #expect(ck.status == 0, "\(ck.stderr)")
        run.killHard()
        let memd = cluster.daemons.first { $0.name.hasPrefix("memd") }!
        cluster.kill9(address: memd.address)
        let r = try run.restore(extra: clusterOptions(cluster))
        #expect(r.status == 0, "restore failed (\(r.status)): \(r.stderr)")
        #expect(r.stderr.contains("memory node \(memd.address) cannot be reached, so it is left out"), "the dead node is left out: \(r.stderr)")
        #expect(try String(contentsOfFile: run.output, encoding: .utf8) == plain.stdout, "output differs from an uninterrupted run")
    }

    /// The coordinator killed and started again on its store (SQLite) while a run goes on: the
    /// nodes and the run reconnect, the next checkpoint commits, and the run restores from it.
    @Test func aRestartedCoordinatorResumesWhereItWas() throws {
        let cluster = try TestCluster(memory: 2, log: 3, deadAfterMillis: 3000)
        defer { cluster.down() }
        let dir = TestEnvironment.temporaryDirectory("cluster-coord-restart")
        let argv = [try Workloads.path("teamwork"), "40", "4", "32", dir + "/data"]
        let plain = try runCommand(argv)
        let run = try NamedRun(name: "coordrestart", stateDir: dir + "/state", output: dir + "/out", localMem: "8M",
                               argv: argv, options: clusterOptions(cluster))
        try run.waitForLines(4)
        #expect(try run.checkpoint().status == 0)
        cluster.kill9(address: cluster.coordinator.description)
        let again = try SpawnedCommand([TestEnvironment.legato, "coord", "--listen", cluster.coordinator.description, "--store", "sqlite:\(cluster.dir)/coordinator.db",
                                        "--secret-file", cluster.secretFile, "--dead-after-ms", "3000"])
        defer { again.signal(SIGKILL); _ = try? again.wait(timeoutSeconds: 10) }
        try cluster.waitUntil("every node alive at the restarted coordinator") { try cluster.status().filter { $0["state"] as? String == "alive" }.count == 5 }
        try run.waitForLines(8)
        let second = try run.checkpoint()
        #expect(second.status == 0 && second.stdout.contains("epoch 2 committed"), "\(second.stdout) \(second.stderr)")
        run.killHard()
        #expect(try committedEpochs(cluster, stateDir: run.stateDir) == [1, 2])
        let r = try run.restore(extra: clusterOptions(cluster))
        #expect(r.status == 0, "restore failed (\(r.status)): \(r.stderr)")
        #expect(try String(contentsOfFile: run.output, encoding: .utf8) == plain.stdout, "output differs from an uninterrupted run")
    }

    /// A counter of the memory nodes' stats, summed over them.
    func memoryNodesSum(_ key: String, _ cluster: TestCluster) throws -> Int {
        var sum = 0
        for d in cluster.daemons where d.name.hasPrefix("memd") {
            let c = try RPCClient(endpoint: Endpoint(parsing: d.address)!, secret: cluster.secret, token: Sys.randomBytes(32))
            defer { c.close() }
            let stats = try JSONSerialization.jsonObject(with: Data(try c.stats().utf8)) as! [String: Any]
            sum += (stats[key] as? Int) ?? 0
        }
        return sum
    }

    /// The integer right before `suffix` in `text` (0 if there is none).
    func number(before suffix: String, in text: String) -> Int {
        guard let r = text.range(of: suffix) else { return 0 }
        return Int(String(text[..<r.lowerBound].reversed().prefix { $0.isNumber }.reversed())) ?? 0
    }

    @Test func aCrashBeforeTheDecisionLeavesThePreviousCheckpoint() throws {
        let cluster = try TestCluster(memory: 1, log: 2)
        defer { cluster.down() }
        let dir = TestEnvironment.temporaryDirectory("cluster-crash")
        let argv = [try Workloads.path("dirtier"), "16", "100", "12"]
        let plain = try runCommand(argv + ["0"])
        let run = try NamedRun(name: "crash", stateDir: dir + "/state", output: dir + "/out", localMem: "8M",
                                               argv: argv + ["200"], options: clusterOptions(cluster))
        try run.waitForLines(2)
        #expect(try run.checkpoint().status == 0)
        try run.waitForLines(4)
        // Prepared (all in the log, synced), then killed before COMMIT reaches the coordinator.
        let crashed = try runCommand([TestEnvironment.legato, "checkpoint", "crash", "--state-dir", run.stateDir, "--crash-at", "prepared"])
        #expect(crashed.status != 0)
        _ = try run.command.wait(timeoutSeconds: 30)
        #expect(try committedEpochs(cluster, stateDir: run.stateDir) == [1], "the prepared epoch is not committed")
        let r = try run.restore(extra: clusterOptions(cluster))
        #expect(r.status == 0, "restore failed (\(r.status)): \(r.stderr)")
        #expect(try String(contentsOfFile: run.output, encoding: .utf8) == plain.stdout, "output differs from an uninterrupted run")
    }

    /// A process tree through the cluster: a multiprocessing Pool mid-work (its workers' pages
    /// partly on the memory nodes, its semaphores shared objects), two checkpoints into the run's
    /// log, kill -9, a restore of the increment from the log nodes and the memory nodes.
    @Test func aProcessTreeThroughTheCluster() throws {
        let cluster = try TestCluster(memory: 2, log: 3)
        defer { cluster.down() }
        let dir = TestEnvironment.temporaryDirectory("cluster-tree")
        let argv = ["python3", Workloads.script("pypoolwork.py"), "200"]
        let plain = try runCommand(argv)
        let run = try NamedRun(name: "pool", stateDir: dir + "/state", output: dir + "/out", localMem: "8M", argv: argv,
                               options: clusterOptions(cluster))
        try run.waitForLines(10)
        let first = try run.checkpoint()
        #expect(first.status == 0, "\(first.stderr)")
        try run.waitForLines(30)
        let second = try run.checkpoint()
        #expect(second.status == 0 && second.stdout.contains("epoch 2 committed"), "\(second.stdout) \(second.stderr)")
        run.killHard()
        #expect(try committedEpochs(cluster, stateDir: run.stateDir) == [1, 2])
        let r = try run.restore(extra: clusterOptions(cluster), localMem: "8M")
        #expect(r.status == 0, "restore failed (\(r.status)): \(r.stderr)")
        let restored = try String(contentsOfFile: run.output, encoding: .utf8)
        #expect(restored == plain.stdout, "output differs from an uninterrupted run: \(firstDifference(restored, plain.stdout))")
        #expect(r.stderr.contains("more process(es) of the tree"), "the workers were restored: \(r.stderr)")
    }
}
