import Foundation
import Glibc
import Testing
import LegatoCore
import LegatoSystem
import LegatoWire

/// A memory node killed while it holds pages of a run: with `--memory-replication log` the run goes on and ends as a plain run does, with no restore; its pages are rebuilt
/// on the surviving nodes from the dead node's write-back log on the log nodes.
@Suite(.serialized) struct MemoryNodeRecoveryTests {
    init() throws { try requireAgentCapabilities() }

    func clusterOptions(_ c: TestCluster) -> [String] { ["--coordinator", c.coordinator.description, "--secret-file", c.secretFile] }

    /// A memory node's STATS, parsed.
    func stats(_ address: String, _ cluster: TestCluster) throws -> [String: Any] {
        let c = try RPCClient(endpoint: Endpoint(parsing: address)!, secret: cluster.secret, token: Sys.randomBytes(32))
        defer { c.close() }
        return try JSONSerialization.jsonObject(with: Data(try c.stats().utf8)) as! [String: Any]
    }

    /// The live memory node holding the most pages (nil: none holds any).
    func busiestMemoryNode(_ cluster: TestCluster, except dead: Set<String> = []) throws -> String? {
        var best: (String, Int)?
        for d in cluster.daemons where d.name.hasPrefix("memd") && !dead.contains(d.address) {
            let live = (try stats(d.address, cluster)["live_pages"] as? Int) ?? 0
            if live > (best?.1 ?? 0) { best = (d.address, live) }
        }
        return best?.0
    }

    /// teamwork (`rounds` rounds over 48 MiB) run plainly, then under `legato run --local-mem 8M
    /// --memory-replication replication` on the cluster, once it has printed 8 lines (the caller then
    /// kills nodes); with the path its stats JSON is written to.
    struct TeamworkRun {
        let plain: CommandResult
        let run: SpawnedCommand
        let statsPath: String
    }

    func startTeamwork(_ cluster: TestCluster, name: String, rounds: Int, replication: String) throws -> TeamworkRun {
        let dir = TestEnvironment.temporaryDirectory(name)
        let argv = [try Workloads.path("teamwork"), String(rounds), "4", "48", dir + "/data", "60"]
        let plain = try runCommand(argv)
        try? FileManager.default.removeItem(atPath: dir + "/data")
        let statsPath = dir + "/stats.json"
        let run = try SpawnedCommand([TestEnvironment.legato, "run", "--local-mem", "8M", "--stats-json", statsPath]
                                     + clusterOptions(cluster) + ["--memory-replication", replication, "--"] + argv)
        try waitForLines(run, 8)
        return TeamworkRun(plain: plain, run: run, statsPath: statsPath)
    }

    /// The run went on and ended as the plain run did.
    func expectLikePlain(_ r: CommandResult, _ t: TeamworkRun) {
        #expect(r.status == t.plain.status, "the run did not go on (\(r.status)): \(r.stderr)")
        #expect(r.stdout == t.plain.stdout, "output differs from a plain run: \(r.stderr)")
    }

    /// Waits until the run has printed `lines` lines.
    func waitForLines(_ run: SpawnedCommand, _ lines: Int) throws {
        guard run.waitForOutput(timeoutSeconds: 60, { out, _ in out.split(separator: "\n").count >= lines }) else {
            throw TestFailure("the run did not print \(lines) lines")
        }
    }

    @Test func aMemoryNodeKilledMidRunCostsNothing() throws {
        let cluster = try TestCluster(memory: 3, log: 3, deadAfterMillis: 120_000)
        defer { cluster.down() }
        let t = try startTeamwork(cluster, name: "recovery-one", rounds: 40, replication: "log")
        let victim = try #require(try busiestMemoryNode(cluster), "no memory node holds pages of the run")
        #expect((try stats(victim, cluster)["logged_pages"] as? Int ?? 0) > 0, "the memory node logged the stores it took")
        cluster.kill9(address: victim)
        let r = try t.run.wait(timeoutSeconds: 120)
        expectLikePlain(r, t)
        #expect(r.stderr.contains("memory node \(victim) failed"), "the death was noticed: \(r.stderr)")
        #expect(r.stderr.contains("recovered the"), "the pages were recovered: \(r.stderr)")
        #expect(!r.stderr.contains("liveness guard") && !r.stderr.contains("waking its faults again"), "no fault was forgotten: \(r.stderr)")
        // What the agent says it recovered is what the surviving nodes say they rebuilt.
        let said = r.stderr.components(separatedBy: "recovered the ").dropFirst().first.flatMap { Int($0.prefix { $0.isNumber }) }
        let recovered = cluster.daemons.filter { $0.name.hasPrefix("memd") && $0.address != victim }
            .reduce(0) { $0 + ((try? stats($1.address, cluster)["recovered_pages"] as? Int) ?? 0) }
        #expect(said == recovered, "the agent recovered \(said ?? -1) pages, the surviving nodes rebuilt \(recovered)")
    }

    @Test func twoMemoryNodesKilledOneAfterTheOther() throws {
        let cluster = try TestCluster(memory: 3, log: 3, deadAfterMillis: 120_000)
        defer { cluster.down() }
        let t = try startTeamwork(cluster, name: "recovery-two", rounds: 60, replication: "log")
        let first = try #require(try busiestMemoryNode(cluster))
        cluster.kill9(address: first)
        guard t.run.waitForOutput(timeoutSeconds: 60, { _, err in err.contains("recovered the") }) else {
            throw TestFailure("the first node's pages were not recovered")
        }
        try waitForLines(t.run, 30)
        let second = try #require(try busiestMemoryNode(cluster, except: [first]))
        cluster.kill9(address: second)
        let r = try t.run.wait(timeoutSeconds: 120)
        expectLikePlain(r, t)
        #expect(r.stderr.components(separatedBy: "recovered the").count - 1 == 2, "both deaths were recovered from: \(r.stderr)")
    }

    /// A recovery node answers once the pages are in its memory and logs them behind; killed
    /// before it has logged them (the test holds the logging back), its own recovery reads the
    /// first dead node's log for them, which the agent kept.
    @Test func aRecoveryNodeKilledBeforeItLoggedWhatItRebuilt() throws {
        let cluster = try TestCluster(memory: 3, log: 3, deadAfterMillis: 120_000, environment: ["LEGATO_TEST_LOG_BEHIND_DELAY_MS": "5000"])
        defer { cluster.down() }
        let t = try startTeamwork(cluster, name: "recovery-behind", rounds: 60, replication: "log")
        let first = try #require(try busiestMemoryNode(cluster))
        cluster.kill9(address: first)
        guard t.run.waitForOutput(timeoutSeconds: 60, { _, err in err.contains("recovered the") }) else {
            throw TestFailure("the first node's pages were not recovered")
        }
        let second = try #require(try busiestMemoryNode(cluster, except: [first]))
        cluster.kill9(address: second)
        let r = try t.run.wait(timeoutSeconds: 120)
        expectLikePlain(r, t)
        #expect(r.stderr.components(separatedBy: "recovered the").count - 1 == 2, "both deaths were recovered from: \(r.stderr)")
        #expect(r.stderr.contains("are read from the earlier node's log"), "the second recovery read the first dead node's log: \(r.stderr)")
    }

    @Test func aMemoryNodeAndALogNodeKilledTogether() throws {
        let cluster = try TestCluster(memory: 3, log: 3, deadAfterMillis: 120_000)
        defer { cluster.down() }
        let t = try startTeamwork(cluster, name: "recovery-memlog", rounds: 40, replication: "log")
        let victim = try #require(try busiestMemoryNode(cluster))
        let logd = try #require(cluster.daemons.first { $0.name.hasPrefix("logd") })
        cluster.kill9(address: logd.address)
        cluster.kill9(address: victim)
        let r = try t.run.wait(timeoutSeconds: 120)
        expectLikePlain(r, t)
        #expect(r.stderr.contains("recovered the"), "the pages were recovered from the surviving log replicas: \(r.stderr)")
    }

    /// The recovery nodes are new to the run (they joined after it placed every page): the space
    /// they rebuild must outlive the recovery's connections until the agent has its own (a run that
    /// is not named owns an ephemeral space, which goes with its owner's last connection).
    @Test func recoveredIntoMemoryNodesNewToTheRun() throws {
        let cluster = try TestCluster(memory: 1, log: 3, deadAfterMillis: 120_000)
        defer { cluster.down() }
        let t = try startTeamwork(cluster, name: "recovery-new-nodes", rounds: 40, replication: "log")
        var joined: [SpawnedCommand] = []
        defer { for m in joined { m.signal(SIGKILL); _ = try? m.wait(timeoutSeconds: 10) } }
        for i in 0..<2 {
            joined.append(try SpawnedCommand([TestEnvironment.legato, "memd", "--coordinator", cluster.coordinator.description, "--secret-file", cluster.secretFile,
                                              "--listen", "127.0.0.1:0", "--capacity", "256M", "--dir", cluster.dir + "/joined-\(i)"]))
        }
        try cluster.waitUntil("three memory nodes alive") { try cluster.status().filter { $0["role"] as? String == "memory" && $0["state"] as? String == "alive" }.count == 3 }
        let first = try #require(cluster.daemons.first { $0.name.hasPrefix("memd") })
        cluster.kill9(address: first.address)
        let r = try t.run.wait(timeoutSeconds: 120)
        expectLikePlain(r, t)
        #expect(r.stderr.contains("recovered the"), "the pages were recovered: \(r.stderr)")
    }

    @Test func aMirroredMemoryNodeKilledMidRunCostsNothing() throws {
        let cluster = try TestCluster(memory: 3, log: 3, deadAfterMillis: 120_000)
        defer { cluster.down() }
        let t = try startTeamwork(cluster, name: "recovery-mirror", rounds: 40, replication: "mirror")
        let victim = try #require(try busiestMemoryNode(cluster), "no memory node holds pages of the run")
        #expect((try stats(victim, cluster)["logged_pages"] as? Int ?? 0) == 0, "mirroring logs nothing")
        cluster.kill9(address: victim)
        let r = try t.run.wait(timeoutSeconds: 120)
        expectLikePlain(r, t)
        #expect(r.stderr.contains("memory node \(victim) failed"), "the death was noticed: \(r.stderr)")
        #expect(!r.stderr.contains("liveness guard") && !r.stderr.contains("waking its faults again"), "no fault was forgotten: \(r.stderr)")
        let st = try RunStats(path: t.statsPath)
        #expect(st.int("promoted_pages") > 0, "pages were read from their mirrors: \(r.stderr)")
        #expect(st.int("recovered_pages") == 0, "nothing was replayed")
        #expect(st.int("remirrored_pages") > 0, "pages left with one copy were given a second: \(r.stderr)")
    }

    /// Mirrored, two nodes killed one after the other: the first death's pages get a second copy again
    /// before the second, so the second loses nothing either.
    @Test func twoMirroredMemoryNodesKilledOneAfterTheOther() throws {
        let cluster = try TestCluster(memory: 3, log: 1, deadAfterMillis: 120_000)
        defer { cluster.down() }
        let t = try startTeamwork(cluster, name: "recovery-mirror-two", rounds: 60, replication: "mirror")
        let first = try #require(try busiestMemoryNode(cluster))
        cluster.kill9(address: first)
        guard t.run.waitForOutput(timeoutSeconds: 60, { _, err in err.contains("have a mirror again") }) else {
            throw TestFailure("the pages left with one copy were not mirrored again: \(t.run.stderrSoFar)")
        }
        try waitForLines(t.run, 30)
        let second = try #require(try busiestMemoryNode(cluster, except: [first]))
        cluster.kill9(address: second)
        let r = try t.run.wait(timeoutSeconds: 120)
        expectLikePlain(r, t)
        #expect(r.stderr.components(separatedBy: "are read from their mirrors").count - 1 == 2, "both deaths were survived: \(r.stderr)")
    }

    /// Adaptive: the run mirrors while the memory nodes' free memory is above `--mirror-above` and
    /// logs once it falls below (3 x 256M nodes; 95% is crossed at about 38M used), so a node holds
    /// both kinds when it is killed: its mirrored pages are read from their mirrors, its logged ones
    /// rebuilt from its log, and the run ends as a plain run does.
    @Test func anAdaptiveRunMirrorsThenLogsAndSurvivesADeath() throws {
        let cluster = try TestCluster(memory: 3, log: 3, deadAfterMillis: 120_000)
        defer { cluster.down() }
        let dir = TestEnvironment.temporaryDirectory("recovery-adaptive")
        let argv = [try Workloads.path("teamwork"), "60", "4", "48", dir + "/data", "60"]
        let plain = try runCommand(argv)
        try? FileManager.default.removeItem(atPath: dir + "/data")
        let statsPath = dir + "/stats.json"
        let run = try SpawnedCommand([TestEnvironment.legato, "run", "--local-mem", "8M", "--stats-json", statsPath] + clusterOptions(cluster)
                                     + ["--memory-replication", "adaptive", "--mirror-above", "95", "--"] + argv)
        let t = TeamworkRun(plain: plain, run: run, statsPath: statsPath)
        // Until the free share falls below 95%, stores are mirrored; then they are logged.
        try cluster.waitUntil("the memory nodes logging stores") {
            try cluster.daemons.filter { $0.name.hasPrefix("memd") }.contains { (try stats($0.address, cluster)["logged_pages"] as? Int ?? 0) > 0 }
        }
        try waitForLines(run, 20)
        let victim = try #require(try busiestMemoryNode(cluster), "no memory node holds pages of the run")
        cluster.kill9(address: victim)
        let r = try run.wait(timeoutSeconds: 180)
        expectLikePlain(r, t)
        #expect(r.stderr.contains("memory node \(victim) failed"), "the death was noticed: \(r.stderr)")
        #expect(!r.stderr.contains("liveness guard") && !r.stderr.contains("waking its faults again"), "no fault was forgotten: \(r.stderr)")
        let st = try RunStats(path: statsPath)
        #expect(st.int("mirrored_pages") > 0, "stores were mirrored while memory was plentiful")
        #expect(st.int("mirrored_pages") < st.int("stored_pages"), "stores were logged once it was not")
        #expect(st.int("promoted_pages") + st.int("recovered_pages") > 0, "the dead node's pages were read from mirrors or rebuilt: \(r.stderr)")
    }

    /// The log nodes' disks fill: the memory nodes refuse the stores they cannot log (a store is
    /// acknowledged only once logged), the agent keeps those pages local past its budget and says
    /// why, and the run ends as a plain run does.
    @Test func storesTheLogNodesCannotHoldAreKeptLocal() throws {
        let cluster = try TestCluster(memory: 2, log: 3, deadAfterMillis: 120_000, logDisk: "12m")
        defer { cluster.down() }
        let t = try startTeamwork(cluster, name: "recovery-log-full", rounds: 30, replication: "log")
        let r = try t.run.wait(timeoutSeconds: 180)
        expectLikePlain(r, t)
        #expect(r.stderr.contains("every memory node is full (the last refusal, from memory node"), "the user is told why the budget is passed: \(r.stderr)")
        #expect(r.stderr.contains("write-back log failed"), "the refusal names the write-back log: \(r.stderr)")
        let st = try RunStats(path: t.statsPath)
        #expect(st.int("kept_local_pages") > 0, "pages were kept local")
        #expect(st.int("stored_pages") > 0, "pages were stored while the log had room")
        let memds = cluster.daemons.filter { $0.name.hasPrefix("memd") }
        #expect(try memds.reduce(0) { $0 + ((try stats($1.address, cluster)["refused_log_appends"] as? Int) ?? 0) } > 0, "the memory nodes refused the stores they could not log")
        // A full log node is not a failed one: the memory nodes keep their logs' replicas.
        for d in memds {
            let text = try String(contentsOfFile: cluster.dir + "/\(d.name).log", encoding: .utf8)
            let dropped = text.split(separator: "\n").filter { $0.contains("is gone") || ($0.contains("log node") && $0.contains(" failed: ")) }
            #expect(dropped.isEmpty, "\(d.name) took a full log node for a failed one: \(dropped.prefix(3))")
        }
    }

    /// Without replication, a memory node's death stops the run, as before: never a wrong page.
    @Test func withoutReplicationTheRunStops() throws {
        let cluster = try TestCluster(memory: 2, log: 3, deadAfterMillis: 120_000)
        defer { cluster.down() }
        let t = try startTeamwork(cluster, name: "recovery-none", rounds: 40, replication: "none")
        let victim = try #require(try busiestMemoryNode(cluster))
        #expect((try stats(victim, cluster)["logged_pages"] as? Int ?? 0) == 0, "nothing is logged without replication")
        cluster.kill9(address: victim)
        let r = try t.run.wait(timeoutSeconds: 120)
        #expect(r.status == 125, "the run stops (\(r.status)): \(r.stderr)")
        #expect(r.stderr.contains("memory node \(victim) failed while holding"), "\(r.stderr)")
    }
}
