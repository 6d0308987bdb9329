import Foundation
import Glibc
import LegatoClients
import LegatoCore
import LegatoSystem
import LegatoWire
import Testing

/// Real programs under `legato run` at an eighth of their footprint: identical output to a plain
/// run, and the stats show pages went to memory nodes and came back within the budget.
@Suite(.serialized) struct RemoteMemoryTests {
    init() throws { try requireAgentCapabilities() }

    @Test func multiThreadedRandomReadWrite() throws {
        let stats = try Legato.compareWithPlainRun([try Workloads.path("randrw"), "64", "4", "20000", "7"], footprintBytes: 64 << 20)
        #expect(stats.faults > 10_000)
    }

    @Test func mmapMunmapMremapChurn() throws {
        try Legato.compareWithPlainRun([try Workloads.path("mapchurn"), "64", "150", "3"], footprintBytes: 64 << 20)
    }

    @Test func discardedMemoryReadsAsZeros() throws {
        try Legato.compareWithPlainRun([try Workloads.path("dontneed"), "64"], footprintBytes: 64 << 20)
    }

    @Test func sequentialScanPrefetches() throws {
        let stats = try Legato.compareWithPlainRun([try Workloads.path("seqscan"), "64", "2"], footprintBytes: 64 << 20)
        #expect(stats.prefetchedPages > stats.fetchedPages / 2, "a sequential scan should be served mostly by prefetch")
    }

    @Test func pythonBuildingObjects() throws {
        try Legato.compareWithPlainRun(["python3", Workloads.script("pyobjects.py"), "300", "build"], footprintBytes: 300 << 20)
    }

    @Test func spreadsPagesOverSeveralMemoryNodes() throws {
        let secret = TestEnvironment.temporaryDirectory("secret") + "/secret"
        try "several-nodes-secret-123\n".write(toFile: secret, atomically: true, encoding: .utf8)
        let nodes = try (0..<3).map { _ in try Legato.MemoryNodeProcess(secretFile: secret) }
        defer { nodes.forEach { $0.stop() } }
        try Legato.compareWithPlainRun([try Workloads.path("randrw"), "64", "2", "20000", "3"], footprintBytes: 64 << 20,
                                       extra: ["--memory", nodes.map { $0.endpoint.description }.joined(separator: ","), "--secret-file", secret])
        let clusterSecret = try ClusterSecret.load(path: secret)
        var used = 0
        for n in nodes {
            let c = try MemoryClient(endpoint: n.endpoint, secret: clusterSecret, token: [UInt8](repeating: 1, count: 32))
            let stats = try JSONSerialization.jsonObject(with: Data(try c.rpc.stats().utf8)) as! [String: Any]
            if (stats["stored_pages"] as? Int ?? 0) > 0 { used += 1 }
            #expect(stats["spaces"] as? Int == 0, "legato run should drop its address space at exit")
        }
        #expect(used >= 2, "pages should be spread over several memory nodes")
    }

    @Test func joinsAClusterThroughItsCoordinator() throws {
        let cluster = try TestCluster(memory: 2, log: 0)
        defer { cluster.down() }
        try Legato.compareWithPlainRun([try Workloads.path("randrw"), "64", "2", "20000", "5"], footprintBytes: 64 << 20,
                                       extra: ["--coordinator", cluster.coordinator.description, "--secret-file", cluster.secretFile])
        var used = 0
        for n in try cluster.status() {
            let c = try MemoryClient(endpoint: Endpoint(parsing: n["address"] as! String)!, secret: cluster.secret, token: [UInt8](repeating: 1, count: 32))
            let stats = try JSONSerialization.jsonObject(with: Data(try c.rpc.stats().utf8)) as! [String: Any]
            if (stats["stored_pages"] as? Int ?? 0) > 0 { used += 1 }
        }
        #expect(used == 2, "the coordinator should have placed slabs on both memory nodes")
    }

    @Test func keepsPagesLocalWhenEveryNodeIsFull() throws {
        let node = try Legato.MemoryNodeProcess(capacity: "8M")
        defer { node.stop() }
        let argv = [try Workloads.path("seqscan"), "48", "2"]
        let plain = try runCommand(argv)
        let (r, stats) = try Legato.run(argv, localMem: 8 << 20, extra: ["--memory", node.endpoint.description, "--secret-file", node.secretFile])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        #expect(r.stdout == plain.stdout)
        #expect(r.stderr.contains("every memory node is full"))
        #expect(stats.storedPages > 0)
        #expect(stats.int("kept_local_pages") > 0, "with nowhere to put them, pages stay local (in PROG or in the agent's buffer)")
    }

    @Test func stopsTheProgramWhenAMemoryNodeDies() throws {
        let node = try Legato.MemoryNodeProcess()
        let dir = TestEnvironment.temporaryDirectory("death")
        let run = try SpawnedCommand([TestEnvironment.legato, "run", "--local-mem", "4M", "--stats-json", dir + "/s.json",
                                      "--memory", node.endpoint.description, "--secret-file", node.secretFile, "--",
                                      try Workloads.path("randrw"), "64", "1", "100000000", "1"])
        // Let pages go remote, then kill the node that holds them.
        usleep(1_500_000)
        node.kill9()
        let r = try run.wait(timeoutSeconds: 60)
        #expect(r.status == 125, "stderr: \(r.stderr)")
        #expect(r.stderr.contains("memory node \(node.endpoint)"), "stderr: \(r.stderr)")
        #expect(r.stderr.contains("pages"))
        #expect(!r.stdout.contains("PASS"))
    }

    /// An agent killed with -9 leaves nothing on its memory node: a run that cannot be restored
    /// asked for an ephemeral space, which goes with the agent's connections.
    @Test func aKilledAgentLeavesNothingOnItsMemoryNode() throws {
        let node = try Legato.MemoryNodeProcess()
        defer { node.stop() }
        let run = try SpawnedCommand([TestEnvironment.legato, "run", "--local-mem", "4M", "--memory", node.endpoint.description,
                                      "--secret-file", node.secretFile, "--", try Workloads.path("randrw"), "64", "1", "100000000", "1"])
        let c = try MemoryClient(endpoint: node.endpoint, secret: try ClusterSecret.load(path: node.secretFile), token: [UInt8](repeating: 1, count: 32))
        defer { c.close() }
        func stats() throws -> [String: Any] { try JSONSerialization.jsonObject(with: Data(try c.rpc.stats().utf8)) as! [String: Any] }
        // Let pages go remote, then kill the agent.
        var live = 0
        for _ in 0..<100 where live == 0 {
            usleep(100_000)
            live = try stats()["live_pages"] as? Int ?? 0
        }
        #expect(live > 0, "pages went to the memory node")
        run.signal(SIGKILL)
        _ = try? run.wait(timeoutSeconds: 10)
        var left = try stats()
        for _ in 0..<100 where (left["spaces"] as? Int ?? 0) > 0 {
            usleep(100_000)
            left = try stats()
        }
        #expect(left["spaces"] as? Int == 0 && left["live_pages"] as? Int == 0, "the killed run's space is gone: \(left)")
    }

    @Test func refusesAWrongClusterSecret() throws {
        let node = try Legato.MemoryNodeProcess()
        defer { node.stop() }
        let wrong = TestEnvironment.temporaryDirectory("wrong") + "/secret"
        try "not-the-right-secret\n".write(toFile: wrong, atomically: true, encoding: .utf8)
        let r = try runCommand([TestEnvironment.legato, "run", "--memory", node.endpoint.description, "--secret-file", wrong, "--", "true"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("secret"), "stderr: \(r.stderr)")
    }
}
