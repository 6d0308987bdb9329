import Foundation
import Glibc
import LegatoSystem
import Testing

/// A cluster on the test bed (Tools/testbed): the coordinator, two memory nodes and three log
/// nodes each on a host of its own, and processor hosts for the runs.
@Suite(.serialized) struct TestBedTests {
    init() throws { try requireAgentCapabilities() }

    func waitFor(_ what: String, seconds: Double = 30, _ condition: () throws -> Bool) throws {
        let deadline = monotonicNanos() + UInt64(seconds * 1e9)
        while monotonicNanos() < deadline {
            if try condition() { return }
            usleep(100_000)
        }
        throw TestFailure("timed out waiting for \(what)")
    }

    @Test func aRunRestoredOnAnotherHostAfterItsHostAndAMemoryNodeDied() throws {
        // A run on host p1 is checkpointed into the cluster; then p1 dies (every process on it,
        // kill -9) and so does the host of one memory node, before the coordinator has noticed;
        // the run is restored on host p2, from a state directory of its own: the coordinator's
        // record, the log nodes' segments and the live memory node's DRAM bring it back.
        let dir = TestEnvironment.temporaryDirectory("testbed")
        let bed = try TestBed(hosts: ["coord", "mem1", "mem2", "log1", "log2", "log3", "p1", "p2"], dir: dir)
        let secret = dir + "/secret"
        try "testbed-secret-\(UInt64.random(in: 0...UInt64.max))\n".write(toFile: secret, atomically: true, encoding: .utf8)
        let coordinator = try bed.address("coord") + ":7300"
        var daemons: [SpawnedCommand] = []
        defer { for d in daemons { d.signal(SIGKILL); _ = try? d.wait(timeoutSeconds: 10) } }
        daemons.append(try bed.start("coord", [TestEnvironment.legato, "coord", "--listen", coordinator, "--store", "sqlite:\(dir)/coord.db",
                                               "--secret-file", secret, "--dead-after-ms", "60000"], name: "coord"))
        let cluster = ["--coordinator", coordinator, "--secret-file", secret]
        try waitFor("the coordinator to listen") { try runCommand([TestEnvironment.legato, "status"] + cluster).status == 0 }
        for m in ["mem1", "mem2"] {
            daemons.append(try bed.start(m, [TestEnvironment.legato, "memd", "--listen", try bed.address(m) + ":7301", "--coordinator", coordinator,
                                             "--capacity", "256M", "--dir", "\(dir)/\(m)", "--secret-file", secret], name: m))
        }
        for l in ["log1", "log2", "log3"] {
            daemons.append(try bed.start(l, [TestEnvironment.legato, "logd", "--listen", try bed.address(l) + ":7302", "--coordinator", coordinator,
                                             "--dir", "\(dir)/\(l)", "--secret-file", secret], name: l))
        }
        try waitFor("five nodes alive") {
            let s = try runCommand([TestEnvironment.legato, "status", "--json"] + cluster)
            guard s.status == 0, let d = try? JSONSerialization.jsonObject(with: Data(s.stdout.utf8)) as? [String: Any],
                  let nodes = d["nodes"] as? [[String: Any]] else { return false }
            return nodes.filter({ $0["state"] as? String == "alive" }).count == 5
        }

        let argv = [try Workloads.path("teamwork"), "30", "4", "32", dir + "/data"]
        let plain = try runCommand(argv)
        let run = try NamedRun(name: "bed", stateDir: dir + "/p1-state", output: dir + "/out", localMem: "8M", argv: argv,
                               options: cluster, wrapper: bed.on("p1", []))
        try run.waitForLines(5)
        let ck = try run.checkpoint()
        #expect(ck.status == 0, "\(ck.stderr)")
        try bed.kill("p1")
        try bed.kill("mem1")
        _ = try? run.command.wait(timeoutSeconds: 20)
        let r = try runCommand(bed.on("p2", [TestEnvironment.legato, "restore", "bed", "--state-dir", dir + "/p2-state", "--local-mem", "8M"] + cluster),
                               timeoutSeconds: 300)
        #expect(r.status == 0, "the restore on p2 failed (\(r.status)): \(r.stderr)")
        #expect(r.stderr.contains("memory node \(try bed.address("mem1")):7301 cannot be reached, so it is left out"), "the dead memory node is left out: \(r.stderr)")
        #expect(try String(contentsOfFile: run.output, encoding: .utf8) == plain.stdout, "output differs from an uninterrupted run")
    }

    /// A memory node's host is cut off for good mid-run: its connections go quiet, with no reset.
    /// The coordinator declares it dead, the agent takes its word, rebuilds the node's pages on the
    /// others from its write-back log, and the run ends as a plain run does, without waiting out an
    /// I/O timeout.
    @Test func aMemoryNodeCutOffIsRecoveredOnTheCoordinatorsWord() throws {
        let dir = TestEnvironment.temporaryDirectory("testbed-cut")
        let bed = try TestBed(hosts: ["coord", "mem1", "mem2", "mem3", "log1", "log2", "log3", "p1"], dir: dir)
        let secret = dir + "/secret"
        try "testbed-secret-\(UInt64.random(in: 0...UInt64.max))\n".write(toFile: secret, atomically: true, encoding: .utf8)
        let coordinator = try bed.address("coord") + ":7300"
        var daemons: [SpawnedCommand] = []
        defer { for d in daemons { d.signal(SIGKILL); _ = try? d.wait(timeoutSeconds: 10) } }
        daemons.append(try bed.start("coord", [TestEnvironment.legato, "coord", "--listen", coordinator, "--store", "sqlite:\(dir)/coord.db",
                                               "--secret-file", secret, "--dead-after-ms", "1500", "--heartbeat-ms", "250"], name: "coord"))
        let cluster = ["--coordinator", coordinator, "--secret-file", secret]
        try waitFor("the coordinator to listen") { try runCommand([TestEnvironment.legato, "status"] + cluster).status == 0 }
        let memories = ["mem1", "mem2", "mem3"]
        for m in memories {
            daemons.append(try bed.start(m, [TestEnvironment.legato, "memd", "--listen", try bed.address(m) + ":7301", "--coordinator", coordinator,
                                             "--capacity", "256M", "--dir", "\(dir)/\(m)", "--secret-file", secret], name: m))
        }
        for l in ["log1", "log2", "log3"] {
            daemons.append(try bed.start(l, [TestEnvironment.legato, "logd", "--listen", try bed.address(l) + ":7302", "--coordinator", coordinator,
                                             "--dir", "\(dir)/\(l)", "--secret-file", secret], name: l))
        }
        try waitFor("six nodes alive") {
            let s = try runCommand([TestEnvironment.legato, "status", "--json"] + cluster)
            guard s.status == 0, let d = try? JSONSerialization.jsonObject(with: Data(s.stdout.utf8)) as? [String: Any],
                  let nodes = d["nodes"] as? [[String: Any]] else { return false }
            return nodes.filter({ $0["state"] as? String == "alive" }).count == 6
        }
        let argv = [try Workloads.path("teamwork"), "40", "4", "48", dir + "/data", "60"]
        let plain = try runCommand(argv)
        try? FileManager.default.removeItem(atPath: dir + "/data")
        let run = try NamedRun(name: "cut", stateDir: dir + "/p1-state", output: dir + "/out", localMem: "8M", argv: argv,
                               options: cluster, wrapper: bed.on("p1", []))
        try run.waitForLines(8)
        // The memory node holding the most of the run goes quiet.
        let s = try runCommand([TestEnvironment.legato, "status", "--json"] + cluster)
        let nodes = (try JSONSerialization.jsonObject(with: Data(s.stdout.utf8)) as! [String: Any])["nodes"] as! [[String: Any]]
        let busiest = nodes.filter { $0["role"] as? String == "memory" }.max { ($0["used_bytes"] as? Int ?? 0) < ($1["used_bytes"] as? Int ?? 0) }!
        let address = busiest["address"] as! String
        let host = try memories.first { try bed.address($0) + ":7301" == address }!
        try bed.cut(host)
        let r = try run.command.wait(timeoutSeconds: 180)
        #expect(r.status == 0, "the run went on (\(r.status)): \(r.stderr)")
        #expect(try String(contentsOfFile: run.output, encoding: .utf8) == plain.stdout, "output differs from a plain run")
        #expect(r.stderr.contains("memory node \(address) failed (the coordinator declared it dead)"), "the coordinator's word was taken: \(r.stderr)")
        #expect(r.stderr.contains("recovered the"), "its pages were rebuilt from the log: \(r.stderr)")
    }

    /// Tools/chaos 20: memory nodes, log nodes, the leading coordinator and the agent killed at
    /// random times (and memory nodes' hosts cut off a while) under checkpointing runs of randrw and
    /// a python program; every run ends as a plain run does, and no committed checkpoint is lost.
    @Test func chaosTwentyRounds() throws {
        let dir = TestEnvironment.temporaryDirectory("chaos")
        let r = try runCommand([TestEnvironment.repositoryRoot + "/Tools/chaos", "20", "--dir", dir, "--legato", TestEnvironment.legato],
                               timeoutSeconds: 2400)
        let summary = r.stdout.split(separator: "\n").last.map(String.init) ?? ""
        #expect(r.status == 0, "chaos failed: \(r.stdout) \(r.stderr.suffix(3000))")
        #expect(summary.contains("verifications passed 20") && summary.hasSuffix("committed checkpoints lost 0"), "\(r.stdout)")
        for kind in ["memd", "logd", "coord", "agent", "cut"] {
            #expect(!summary.contains("\(kind) 0,") && !summary.contains("\(kind) 0 "), "every kind of failure happened: \(summary)")
        }
        #expect(!summary.contains("restores 0"), "a killed run was restored: \(summary)")
    }
}
