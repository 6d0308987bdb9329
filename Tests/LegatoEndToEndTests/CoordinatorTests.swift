import Foundation
import Glibc
import LegatoClients
import LegatoCore
import LegatoSystem
import LegatoTestSupport
import LegatoWire
import Testing

/// The coordinator as a real daemon, on both of its stores.
@Suite(.serialized) struct CoordinatorTests {
    enum StoreKind: String, CaseIterable { case sqlite, etcd }

    /// Runs `body` against a cluster whose coordinator keeps its state in `kind`.
    func withCluster(_ kind: StoreKind, memory: Int = 2, log: Int = 1, _ body: (TestCluster, String) throws -> Void) throws {
        var etcd: EtcdServer?
        let spec: String
        switch kind {
        case .sqlite: spec = "sqlite:" + TestEnvironment.temporaryDirectory("coord") + "/coordinator.db"
        case .etcd:
            etcd = try EtcdServer()
            spec = etcd!.storeSpec
        }
        defer { etcd?.stop() }
        let cluster = try TestCluster(memory: memory, log: log, store: spec)
        defer { cluster.down() }
        try body(cluster, spec)
    }

    @Test(arguments: StoreKind.allCases)
    func carriesOnAfterARestart(_ kind: StoreKind) throws {
        try withCluster(kind) { cluster, spec in
            let c = try CoordinatorClient(endpoint: cluster.coordinator, secret: cluster.secret)
            let space = UInt64.random(in: 1...UInt64.max)
            let placed = try (0..<8).map { try c.assignSlab(space: space, slab: UInt64($0), slabBytes: 16 << 20).id }
            #expect(Set(placed).count == 2, "slabs should be spread over both memory nodes")
            #expect(try c.assignSlab(space: space, slab: 3, slabBytes: 16 << 20).id == placed[3], "a slab keeps its node")
            try c.beginCheckpoint(name: "job-1", epoch: 1, record: Array("ctx-1".utf8))
            try c.commitCheckpoint(name: "job-1", epoch: 1, record: Array("ctx-1-final".utf8))
            try c.beginCheckpoint(name: "job-1", epoch: 2, record: [])
            c.close()

            // Kill the coordinator; start it again on the same address and store.
            kill(cluster.pid(named: "coord")!, SIGKILL)
            usleep(200_000)
            let restarted = try SpawnedCommand([TestEnvironment.legato, "coord", "--listen", cluster.coordinator.description, "--store", spec,
                                                "--secret-file", cluster.secretFile, "--dead-after-ms", "1000", "--heartbeat-ms", "166"])
            defer {
                restarted.signal(SIGTERM)
                _ = try? restarted.wait(timeoutSeconds: 10)
            }
            #expect(restarted.waitForOutput { _, e in e.contains("listening on") })
            let again = try CoordinatorClient(endpoint: cluster.coordinator, secret: cluster.secret)
            #expect(try again.slabs(space: space).map { $0.node } == placed)
            let ckpts = try again.checkpoints(name: "job-1")
            #expect(ckpts.map { $0.epoch } == [1, 2])
            #expect(ckpts[0].state == .committed && ckpts[0].record == Data("ctx-1-final".utf8))
            #expect(ckpts[1].state == .begun)
            // Nodes heartbeat to the new coordinator and stay alive.
            usleep(1_500_000)
            let nodes = try again.nodes().nodes
            #expect(nodes.count == 3)
            #expect(nodes.allSatisfy { $0.alive }, "\(nodes)")
        }
    }

    @Test(arguments: StoreKind.allCases)
    func declaresSilentNodesDeadAndTellsWatchers(_ kind: StoreKind) throws {
        try withCluster(kind) { cluster, _ in
            let c = try CoordinatorClient(endpoint: cluster.coordinator, secret: cluster.secret)
            let (version, nodes) = try c.nodes()
            let victim = nodes.first { $0.role == .memory }!
            let started = monotonicNanos()
            kill(cluster.pid(of: victim.address)!, SIGKILL)
            // A watcher hears of it without polling.
            var m = try c.waitMembership(after: version, timeoutMillis: 5000)
            while m.nodes.first(where: { $0.id == victim.id })?.alive == true && monotonicNanos() - started < 10_000_000_000 {
                m = try c.waitMembership(after: m.version, timeoutMillis: 5000)
            }
            #expect(m.nodes.first { $0.id == victim.id }?.alive == false)
            let waited = Double(monotonicNanos() - started) / 1e9
            // Silence is counted from the last heartbeat (every 500 ms), not from the kill.
            #expect(waited >= 0.45 && waited < 5, "declared dead after \(waited) s with --dead-after-ms 1000")
            let status = try cluster.status()
            #expect(status.first { $0["address"] as? String == victim.address }?["state"] as? String == "dead")
        }
    }

    @Test func checkpointRecordsFollowTheTwoPhaseRules() throws {
        try withCluster(.sqlite, memory: 1, log: 0) { cluster, _ in
            let c = try CoordinatorClient(endpoint: cluster.coordinator, secret: cluster.secret)
            try c.beginCheckpoint(name: "p", epoch: 5, record: [])
            #expect(throws: RemoteError.self) { try c.beginCheckpoint(name: "p", epoch: 5, record: []) }   // not new
            #expect(throws: RemoteError.self) { try c.beginCheckpoint(name: "p", epoch: 4, record: []) }   // older
            #expect(throws: RemoteError.self) { try c.commitCheckpoint(name: "p", epoch: 9, record: []) }  // never begun
            try c.abortCheckpoint(name: "p", epoch: 5, reason: "a participant failed")
            #expect(throws: RemoteError.self) { try c.commitCheckpoint(name: "p", epoch: 5, record: []) }  // decided already
            #expect(throws: RemoteError.self) { try c.beginCheckpoint(name: "../etc", epoch: 1, record: []) }
            let list = try c.checkpoints(name: "p")
            #expect(list.count == 1 && list[0].state == .aborted && list[0].reason == "a participant failed")
        }
    }

    @Test func statusPrintsTheContractJSON() throws {
        try withCluster(.sqlite, memory: 1, log: 2) { cluster, _ in
            let nodes = try cluster.status()
            #expect(nodes.count == 3)
            for n in nodes {
                for key in ["id", "role", "address", "state", "capacity_bytes", "used_bytes"] { #expect(n[key] != nil, "missing \(key)") }
                #expect(["memory", "log"].contains(n["role"] as? String ?? ""))
                #expect(n["state"] as? String == "alive")
            }
            let human = try runCommand([TestEnvironment.legato, "status", "--coordinator", cluster.coordinator.description, "--secret-file", cluster.secretFile])
            #expect(human.status == 0)
            #expect(human.stdout.contains("3 nodes, 3 alive"))
        }
    }

    /// `status --counters` asks every live node for its STATS answer: each node's own counters, by role.
    @Test func statusShowsEveryNodesCounters() throws {
        try withCluster(.sqlite, memory: 1, log: 1) { cluster, _ in
            let base = [TestEnvironment.legato, "status", "--coordinator", cluster.coordinator.description, "--secret-file", cluster.secretFile]
            let out = try runCommand(base + ["--json", "--counters"])
            #expect(out.status == 0, "\(out.stderr)")
            let doc = try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any]
            let nodes = doc?["nodes"] as? [[String: Any]] ?? []
            #expect(nodes.count == 2)
            for n in nodes {
                let counters = n["counters"] as? [String: Any]
                #expect(counters?["role"] as? String == n["role"] as? String, "counters of \(n)")
                let key = n["role"] as? String == "memory" ? "live_pages" : "buffered_bytes"
                #expect(counters?[key] != nil, "\(key) missing in \(n)")
            }
            let human = try runCommand(base + ["--counters"])
            #expect(human.status == 0)
            #expect(human.stdout.contains("live_pages") && human.stdout.contains("buffered_bytes"), "\(human.stdout)")
        }
    }

    @Test func survivesHostileMessages() throws {
        try withCluster(.sqlite, memory: 1, log: 0) { cluster, _ in
            try barrageOfHostileMessages(cluster.coordinator, secret: cluster.secret,
                                         opcodes: [.registerNode, .heartbeat, .listNodes, .waitMembership, .assignSlab, .listSlabs,
                                                   .beginCheckpoint, .commitCheckpoint, .abortCheckpoint, .listCheckpoints, .dropSlabs, .deleteCheckpoint])
            var w = WireWriter()
            w.u8(9); w.string("x"); w.u64(0); w.string("u")
            #expect(try sendHostile(to: cluster.coordinator, secret: cluster.secret, frame(Opcode.registerNode.rawValue, w.bytes))?.status == .badRequest)
            let nodes = try cluster.status()
            #expect(nodes.count == 1, "junk registered no node")
        }
    }

    /// The coordinator that says it leads (STATS), among the cluster's.
    func leader(of cluster: TestCluster) throws -> (name: String, address: String)? {
        for d in cluster.daemons where d.name.hasPrefix("coord") && kill(d.pid, 0) == 0 {
            let c = try RPCClient(endpoint: Endpoint(parsing: d.address)!, secret: cluster.secret, token: Sys.randomBytes(32))
            defer { c.close() }
            let st = try JSONSerialization.jsonObject(with: Data(try c.stats().utf8)) as! [String: Any]
            if st["leading"] as? Bool == true { return (d.name, d.address) }
        }
        return nil
    }

    /// Two coordinators share etcd and one leads; it is killed mid-run: the other takes over, the
    /// nodes heartbeat to it (none is declared dead), a checkpoint taken after the kill commits
    /// through it, and the run ends as a plain run does.
    @Test func theLeaderKilledWithTwoCoordinatorsOnEtcd() throws {
        try requireAgentCapabilities()
        let etcd = try EtcdServer()
        defer { etcd.stop() }
        let cluster = try TestCluster(memory: 2, log: 3, deadAfterMillis: 3000, store: etcd.storeSpec, coordinators: 2)
        defer { cluster.down() }
        #expect(cluster.coordinators.split(separator: ",").count == 2, "cluster up prints both coordinators: \(cluster.coordinators)")
        let first = try #require(try leader(of: cluster), "one of the two coordinators leads")
        let follower = try #require(cluster.daemons.first { $0.name.hasPrefix("coord") && $0.name != first.name })
        // A follower answers NOT_LEADER, naming the leader.
        let f = try RPCClient(endpoint: Endpoint(parsing: follower.address)!, secret: cluster.secret, token: Sys.randomBytes(32))
        #expect(throws: RemoteError(status: .notLeader, message: first.address, peer: follower.address)) { _ = try f.call(ListNodes()) }
        f.close()

        let dir = TestEnvironment.temporaryDirectory("coord-failover")
        let argv = [try Workloads.path("teamwork"), "30", "4", "32", dir + "/data", "60"]
        let plain = try runCommand(argv)
        try? FileManager.default.removeItem(atPath: dir + "/data")
        let options = ["--coordinator", cluster.coordinators, "--secret-file", cluster.secretFile]
        let run = try NamedRun(name: "failover", stateDir: dir + "/state", output: dir + "/out", localMem: "8M", argv: argv, options: options)
        try run.waitForLines(6)
        kill(cluster.pid(named: first.name)!, SIGKILL)
        // The follower takes over within its lease (3 s), and the checkpoint goes through it.
        let ck = try run.checkpoint()
        #expect(ck.status == 0 && ck.stdout.contains("committed"), "a checkpoint after the leader's death: \(ck.stdout) \(ck.stderr)")
        let r = try run.command.wait(timeoutSeconds: 180)
        #expect(r.status == 0, "the run went on: \(r.stderr)")
        #expect(try String(contentsOfFile: run.output, encoding: .utf8) == plain.stdout, "output differs from a plain run")
        let now = try #require(try leader(of: cluster), "the other coordinator leads")
        #expect(now.name == follower.name)
        // Every node heartbeats to the new leader: none was declared dead.
        usleep(3_500_000)
        let nodes = try cluster.status(coordinators: cluster.coordinators)
        #expect(nodes.count == 5 && nodes.allSatisfy { $0["state"] as? String == "alive" }, "\(nodes)")
        let ls = try runCommand([TestEnvironment.legato, "ls", "--json", "--state-dir", run.stateDir] + options)
        #expect(ls.status == 0 && ls.stdout.contains("\"epoch\""), "the checkpoint is listed through the new leader: \(ls.stdout) \(ls.stderr)")
    }
}
