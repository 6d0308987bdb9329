import ArgumentParser
import Foundation
import Glibc
import LegatoClients
import LegatoCore
import LegatoSystem

struct ClusterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "Start or stop a coordinator, memory nodes and log nodes on loopback (development, demos, tests).",
        subcommands: [Up.self, Down.self]
    )

    /// What `cluster up` leaves in DIR for `cluster down` and `status`.
    struct State: Codable {
        var coordinator: String
        var secretFile: String
        var daemons: [Daemon]
        struct Daemon: Codable {
            var name: String
            var pid: Int32
            var address: String
            var log: String
        }
    }

    static func defaultDirectory() -> String { defaultStateDirectory() + "/cluster" }

    static func load(_ dir: String) -> State? {
        guard let d = FileManager.default.contents(atPath: dir + "/cluster.json") else { return nil }
        return try? JSONDecoder().decode(State.self, from: d)
    }

    struct Up: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Start a cluster in the background; print its coordinator's address.")

        @Option(help: "Memory nodes to start.")
        var memory: Int = 1
        @Option(help: "Log nodes to start.")
        var log: Int = 3
        @Option(help: "Directory for the cluster's state and logs (default <state dir>/cluster).")
        var dir: String?
        @Option(name: .customLong("memory-capacity"), help: "Capacity of each memory node.")
        var memoryCapacity: ByteSize = ByteSize(bytes: 1 << 30)
        @Option(name: .customLong("dead-after-ms"), help: "Silence after which the coordinator declares a node dead.")
        var deadAfterMillis: UInt32 = 3000
        @Option(help: "The coordinator's store (default sqlite:DIR/coordinator.db).")
        var store: String?
        @Option(help: "Coordinators to start (more than one shares an etcd --store: one leads, the others take over if it dies).")
        var coordinators: Int = 1
        @OptionGroup var secret: SecretOptions

        func validate() throws {
            guard (0...64).contains(memory), (0...64).contains(log) else { throw ValidationError("--memory and --log take 0 to 64") }
            guard (1...9).contains(coordinators) else { throw ValidationError("--coordinators takes 1 to 9") }
            if coordinators > 1 && store?.hasPrefix("etcd:") != true {
                throw ValidationError("--coordinators \(coordinators) needs --store etcd:http://HOST:PORT (they share it; one leads)")
            }
        }

        func run() throws {
            let dir = self.dir ?? ClusterCommand.defaultDirectory()
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            if let old = ClusterCommand.load(dir), old.daemons.contains(where: { kill($0.pid, 0) == 0 }) {
                throw ValidationError("a cluster is already running from \(dir) (coordinator \(old.coordinator)); `legato cluster down --dir \(dir)` first")
            }
            let secretFile = secret.secretFile ?? defaultStateDirectory() + "/cluster.secret"
            let clusterSecret = try secret.load()
            var state = State(coordinator: "", secretFile: secretFile, daemons: [])
            func start(_ name: String, _ args: [String]) throws -> ChildDaemon {
                let d = try ChildDaemon(name: name, arguments: args, secret: .file(secretFile), logFile: dir + "/\(name).log")
                state.daemons.append(.init(name: name, pid: d.pid, address: d.endpoint.description, log: dir + "/\(name).log"))
                return d
            }
            do {
                var coords: [Endpoint] = []
                for i in 0..<coordinators {
                    coords.append(try start(i == 0 ? "coord" : "coord-\(i)", ["coord", "--store", store ?? "sqlite:\(dir)/coordinator.db",
                                                                             "--dead-after-ms", String(deadAfterMillis), "--heartbeat-ms", String(min(1000, max(10, deadAfterMillis / 6)))]).endpoint)
                }
                let coordinatorList = coords.map { $0.description }.joined(separator: ",")
                let coordinator = CoordinatorPeers.register(coords)
                state.coordinator = coordinatorList
                for i in 0..<memory {
                    _ = try start("memd-\(i)", ["memd", "--coordinator", coordinatorList, "--capacity", String(memoryCapacity.bytes),
                                                "--dir", "\(dir)/memd-\(i)", "--name", "memd-\(i)"])
                }
                for i in 0..<log {
                    _ = try start("logd-\(i)", ["logd", "--coordinator", coordinatorList, "--dir", "\(dir)/logd-\(i)"])
                }
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                try enc.encode(state).write(to: URL(fileURLWithPath: dir + "/cluster.json"))
                // Return once every node has registered.
                let client = try CoordinatorClient(endpoint: coordinator, secret: clusterSecret)
                let deadline = monotonicNanos() + 20_000_000_000
                while true {
                    let nodes = try client.nodes().nodes.filter { $0.alive }
                    if nodes.filter({ $0.role == .memory }).count >= memory && nodes.filter({ $0.role == .log }).count >= log { break }
                    if monotonicNanos() > deadline { throw ClusterUpError.nodesDidNotRegister(logs: dir) }
                    usleep(20_000)
                }
                print(coordinatorList)
            } catch {
                for d in state.daemons { kill(d.pid, SIGTERM) }
                throw error
            }
        }
    }

    struct Down: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop the cluster started from DIR.")

        @Option(help: "The cluster's directory (default <state dir>/cluster).")
        var dir: String?

        func run() throws {
            let dir = self.dir ?? ClusterCommand.defaultDirectory()
            guard let state = ClusterCommand.load(dir) else { throw ValidationError("no cluster was started from \(dir)") }
            // Nodes first, the coordinators last (so they do not declare them dead on the way).
            let order = state.daemons.filter { !$0.name.hasPrefix("coord") } + state.daemons.filter { $0.name.hasPrefix("coord") }
            for d in order {
                guard kill(d.pid, 0) == 0, isLegato(d.pid) else { continue }
                kill(d.pid, SIGTERM)
                let deadline = monotonicNanos() + 10_000_000_000
                while kill(d.pid, 0) == 0 && isLegato(d.pid) && monotonicNanos() < deadline { usleep(10_000) }
                if kill(d.pid, 0) == 0 && isLegato(d.pid) { kill(d.pid, SIGKILL) }
            }
            try? FileManager.default.removeItem(atPath: dir + "/cluster.json")
        }

        /// The pid is still one of ours (not reused by something else).
        private func isLegato(_ pid: Int32) -> Bool {
            guard let cmd = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8) else { return false }
            return cmd.contains("legato") && !cmd.isEmpty
        }
    }
}

enum ClusterUpError: Error, CustomStringConvertible {
    case nodesDidNotRegister(logs: String)
    var description: String {
        switch self {
        case .nodesDidNotRegister(let dir): return "the nodes did not all register within 20 s; see the logs in \(dir)"
        }
    }
}
