import ArgumentParser
import Foundation
import LegatoClients
import LegatoCore
import LegatoSystem
import LegatoWire

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show the cluster's nodes.")

    @Option(help: "The coordinator, HOST:PORT (default: the one `legato cluster up` started).")
    var coordinator: Endpoint?

    @Flag(help: "Print JSON: {\"nodes\":[{\"id\",\"role\",\"address\",\"state\",\"capacity_bytes\",\"used_bytes\"}, ...]}.")
    var json = false

    @Flag(help: "Also ask every live node for its counters (its STATS answer); with --json under \"counters\".")
    var counters = false

    @OptionGroup var secret: SecretOptions

    func run() throws {
        guard let ep = coordinator ?? ClusterCommand.load(ClusterCommand.defaultDirectory()).flatMap({ Endpoint(parsing: $0.coordinator) }) else {
            throw ValidationError("no --coordinator given and no cluster started with `legato cluster up`")
        }
        let clusterSecret = try secret.load()
        let client = try CoordinatorClient(endpoint: ep, secret: clusterSecret)
        let (version, nodes) = try client.nodes()
        var nodeCounters: [UInt64: Result<[String: Any], Error>] = [:]
        if counters {
            for n in nodes where n.alive { nodeCounters[n.id] = Self.counters(of: n.address, secret: clusterSecret) }
        }
        if json {
            let list: [[String: Any]] = nodes.map {
                var n: [String: Any] = ["id": $0.id, "role": $0.role.rawValue, "address": $0.address, "state": $0.alive ? "alive" : "dead",
                                        "capacity_bytes": $0.capacity, "used_bytes": $0.used, "silent_ms": $0.silentMillis]
                switch nodeCounters[$0.id] {
                case .success(let c): n["counters"] = c
                case .failure(let e): n["counters_error"] = "\(e)"
                case nil: break
                }
                return n
            }
            let data = try JSONSerialization.data(withJSONObject: ["coordinator": ep.description, "membership_version": version, "nodes": list],
                                                  options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        let alive = nodes.filter { $0.alive }.count
        print("coordinator \(ep)   \(nodes.count) nodes, \(alive) alive, \(nodes.count - alive) dead   (membership version \(version))")
        print("")
        let header = ["ID", "ROLE", "ADDRESS", "STATE", "USED", "CAPACITY", "LAST HEARD"]
        var rows = [header]
        for n in nodes {
            rows.append([String(n.id), n.role.rawValue, n.address, n.alive ? "alive" : "DEAD", formatSize(n.used), formatSize(n.capacity),
                         n.silentMillis < 1000 ? "\(n.silentMillis) ms ago" : String(format: "%.1f s ago", Double(n.silentMillis) / 1000)])
        }
        let widths = (0..<header.count).map { c in rows.map { $0[c].count }.max()! }
        for r in rows {
            print(r.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }.joined(separator: "  "))
        }
        for n in nodes {
            guard let result = nodeCounters[n.id] else { continue }
            print("")
            switch result {
            case .success(let c):
                print("node \(n.id) (\(n.role.rawValue), \(n.address)):")
                for key in c.keys.sorted() { print("  \(key) \(c[key]!)") }
            case .failure(let e):
                print("node \(n.id) (\(n.role.rawValue), \(n.address)): no counters: \(e)")
            }
        }
    }

    /// A node's STATS answer (a JSON object of counters), asked on a connection of its own.
    static func counters(of address: String, secret: ClusterSecret) -> Result<[String: Any], Error> {
        Result {
            guard let ep = Endpoint(parsing: address) else { throw ValidationError("node address \(address) is not HOST:PORT") }
            let rpc = try RPCClient(endpoint: ep, secret: secret, token: Sys.randomBytes(Handshake.tokenSize), ioTimeoutSeconds: 5)
            defer { rpc.close() }
            let text = try rpc.stats()
            guard let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
                throw LegatoError("STATS answer of \(address) is not a JSON object")
            }
            return object
        }
    }
}
