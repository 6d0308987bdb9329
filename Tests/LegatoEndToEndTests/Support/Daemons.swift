import Foundation
import Glibc
import LegatoCore
import LegatoSystem
import LegatoTestSupport
import LegatoWire
import Testing

/// A cluster started with `legato cluster up` in its own directory.
final class TestCluster {
    let dir: String
    let coordinator: Endpoint
    /// Every coordinator, as `--coordinator` takes them (HOST:PORT[,HOST:PORT...]).
    let coordinators: String
    let secretFile: String
    let secret: ClusterSecret
    private(set) var daemons: [(name: String, pid: pid_t, address: String)]
    /// Small disks (tmpfs mounts) under the log nodes, unmounted by `down`.
    private var mounts: [String] = []

    /// With `logDisk`, each log node's directory is a tmpfs of that size (e.g. "16m"): a disk that fills.
    /// `environment`: for every daemon (`legato cluster up` passes its own on).
    init(memory: Int, log: Int, deadAfterMillis: Int = 1000, store: String? = nil, coordinators: Int = 1, logDisk: String? = nil,
         environment: [String: String] = [:]) throws {
        dir = TestEnvironment.temporaryDirectory("cluster")
        secretFile = dir + "/secret"
        let logDirs = (0..<log).map { [dir] in dir + "/logd-\($0)" }
        let disks = try logDisk.map { try Self.mountDisks(size: $0, at: logDirs) } ?? []
        try "cluster-test-secret-\(UInt64.random(in: 0...UInt64.max))\n".write(toFile: secretFile, atomically: true, encoding: .utf8)
        secret = try ClusterSecret.load(path: secretFile)
        var args = [TestEnvironment.legato, "cluster", "up", "--memory", String(memory), "--log", String(log), "--dir", dir,
                    "--secret-file", secretFile, "--dead-after-ms", String(deadAfterMillis), "--memory-capacity", "256M"]
        if let store { args += ["--store", store] }
        if coordinators > 1 { args += ["--coordinators", String(coordinators)] }
        let r = try runCommand(args, environment: environment, timeoutSeconds: 60)
        let list = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        guard r.status == 0, let ep = Endpoint(parsing: String(list.split(separator: ",").first ?? "")) else {
            for m in disks { _ = runCommandStatus(["umount", "-l", m]) }
            throw TestFailure("cluster up failed (\(r.status)): \(r.stdout) \(r.stderr)")
        }
        mounts = disks
        coordinator = ep
        self.coordinators = list
        daemons = []
        try reloadDaemons()
    }

    /// A tmpfs of `size` on each of `dirs` (all or none).
    private static func mountDisks(size: String, at dirs: [String]) throws -> [String] {
        var mounted: [String] = []
        for d in dirs {
            try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
            guard runCommandStatus(["mount", "-t", "tmpfs", "-o", "size=\(size)", "tmpfs", d]) == 0 else {
                for m in mounted { _ = runCommandStatus(["umount", "-l", m]) }
                throw TestFailure("cannot mount a \(size) tmpfs on \(d)")
            }
            mounted.append(d)
        }
        return mounted
    }

    func reloadDaemons() throws {
        let d = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/cluster.json"))) as! [String: Any]
        daemons = (d["daemons"] as! [[String: Any]]).map { ($0["name"] as! String, ($0["pid"] as! NSNumber).int32Value, $0["address"] as! String) }
    }

    func pid(of address: String) -> pid_t? { daemons.first { $0.address == address }?.pid }
    func pid(named name: String) -> pid_t? { daemons.first { $0.name == name }?.pid }

    func kill9(address: String) {
        if let p = pid(of: address) { kill(p, SIGKILL) }
    }

    /// `legato status --json`, parsed (through `coordinators`, default the first coordinator).
    func status(coordinators: String? = nil) throws -> [[String: Any]] {
        let r = try runCommand([TestEnvironment.legato, "status", "--json", "--coordinator", coordinators ?? coordinator.description, "--secret-file", secretFile])
        guard r.status == 0, let d = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any],
              let nodes = d["nodes"] as? [[String: Any]] else {
            throw TestFailure("status failed: \(r.stdout) \(r.stderr)")
        }
        return nodes
    }

    func waitUntil(timeoutSeconds: Double = 20, _ what: String, _ condition: () throws -> Bool) throws {
        let deadline = monotonicNanos() + UInt64(timeoutSeconds * 1e9)
        while monotonicNanos() < deadline {
            if (try? condition()) == true { return }
            usleep(50_000)
        }
        throw TestFailure("timed out waiting for: \(what)")
    }

    func down() {
        _ = try? runCommand([TestEnvironment.legato, "cluster", "down", "--dir", dir], timeoutSeconds: 60)
        for m in mounts { _ = runCommandStatus(["umount", "-l", m]) }
        mounts.removeAll()
    }
}

/// An etcd server on loopback for the coordinator's etcd store: the one `.ci/run` started
/// (LEGATO_TEST_ETCD=http://HOST:PORT), or one of our own.
final class EtcdServer {
    let endpoint: Endpoint
    private var process: SpawnedCommand?

    init() throws {
        if let url = ProcessInfo.processInfo.environment["LEGATO_TEST_ETCD"], let ep = Endpoint(parsing: url.replacingOccurrences(of: "http://", with: "")) {
            endpoint = ep
            return
        }
        guard access("/usr/bin/etcd", X_OK) == 0 else {
            throw TestFailure("etcd is not installed (Debian's etcd-server); .ci/run installs it")
        }
        let dir = TestEnvironment.temporaryDirectory("etcd")
        let client = try freePort(), peer = try freePort()
        endpoint = Endpoint(host: "127.0.0.1", port: client)
        process = try SpawnedCommand(["/usr/bin/etcd", "--name", "t", "--data-dir", dir,
                                      "--listen-client-urls", "http://127.0.0.1:\(client)", "--advertise-client-urls", "http://127.0.0.1:\(client)",
                                      "--listen-peer-urls", "http://127.0.0.1:\(peer)", "--initial-advertise-peer-urls", "http://127.0.0.1:\(peer)",
                                      "--initial-cluster", "t=http://127.0.0.1:\(peer)"])
        let deadline = monotonicNanos() + 20_000_000_000
        while monotonicNanos() < deadline {
            if (try? HTTPClient.post(host: "127.0.0.1", port: client, path: "/v3/kv/range", json: ["key": "eA=="]))?.status == 200 { return }
            usleep(100_000)
        }
        throw TestFailure("etcd did not start: \(process!.stderrSoFar.suffix(2000))")
    }

    /// A store spec with a prefix of its own, so tests sharing one etcd do not see each other.
    var storeSpec: String { "etcd:http://\(endpoint)/legato-test-\(String(UInt64.random(in: 0...UInt64.max), radix: 16))/" }

    func stop() {
        process?.signal(SIGTERM)
        _ = try? process?.wait(timeoutSeconds: 20)
    }
}

/// Throws garbage of every kind at a daemon's opcodes; it must answer or close, and stay up.
func barrageOfHostileMessages(_ endpoint: Endpoint, secret: ClusterSecret, opcodes: [Opcode]) throws {
    _ = try sendHostile(to: endpoint, secret: secret, authenticate: false, Array("GET / HTTP/1.1\r\n\r\n".utf8))
    _ = try sendHostile(to: endpoint, secret: ClusterSecret(bytes: Array("wrong-secret-0000".utf8)), authenticate: false,
                        [UInt8](repeating: 0, count: 200))
    _ = try sendHostile(to: endpoint, secret: secret, frame(opcodes[0].rawValue, [], length: 1 << 30))
    _ = try sendHostile(to: endpoint, secret: secret, [UInt8](repeating: 0x41, count: 64))
    #expect(try sendHostile(to: endpoint, secret: secret, frame(0x7e, []))?.status == .badRequest)
    var rng = SystemRandomNumberGenerator()
    for op in opcodes {
        // empty, truncated, oversized counts, random junk
        _ = try sendHostile(to: endpoint, secret: secret, frame(op.rawValue, []))
        _ = try sendHostile(to: endpoint, secret: secret, frame(op.rawValue, [UInt8](repeating: 0xff, count: 40)))
        _ = try sendHostile(to: endpoint, secret: secret, Array(frame(op.rawValue, [UInt8](repeating: 1, count: 64)).prefix(30)))
        for _ in 0..<8 {
            let junk = (0..<Int.random(in: 0..<300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            _ = try sendHostile(to: endpoint, secret: secret, frame(op.rawValue, junk))
        }
    }
    // still serving honest clients
    let c = try RPCClient(endpoint: endpoint, secret: secret, token: [UInt8](repeating: 1, count: 32))
    try c.ping()
    c.close()
}
