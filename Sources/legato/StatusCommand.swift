import ArgumentParser
import Foundation
import LegatoClients
import LegatoCore
import LegatoSystem
import LegatoWire

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show the cluster's nodes.")

    @Option(help: "The coordinator, HOST:PORT (default: the one `legato cluster up` started).")
    var coordinator: CoordinatorOption?

    @Flag(help: "Print JSON: {\"nodes\":[{\"id\",\"role\",\"address\",\"state\",\"capacity_bytes\",\"used_bytes\"}, ...]}.")
    var json = false

    @Flag(help: "Also ask every live node for its counters (its STATS answer); with --json under \"counters\".")
    var counters = false

    @OptionGroup var secret: SecretOptions

    func run() throws {
        guard let ep = coordinator?.endpoint ?? ClusterCommand.load(ClusterCommand.defaultDirectory()).flatMap({ CoordinatorPeers.parse($0.coordinator).map { CoordinatorPeers.register($0) } }) else {
            throw ValidationError("no --coordinator given and no cluster started with `legato cluster up`")
        }
        let clusterSecret = try secret.load()
        let client = try CoordinatorClient(endpoint: ep, secret: clusterSecret)
        let (version, nodes) = try client.nodes()
        var nodeCounters: [UInt64: Result<NodeCounters, Error>] = [:]
        if counters {
            for n in nodes where n.alive { nodeCounters[n.id] = Self.counters(of: n, secret: clusterSecret) }
        }
        if json {
            let report = StatusReport(coordinator: client.endpoint.description, membershipVersion: version, nodes: nodes.map { n in
                var r = NodeReport(id: n.id, role: n.role.rawValue, address: n.address, state: n.alive ? "alive" : "dead",
                                   capacityBytes: n.capacity, usedBytes: n.used, silentMs: n.silentMillis)
                switch nodeCounters[n.id] {
                case .success(let c): r.counters = c
                case .failure(let e): r.countersError = "\(e)"
                case nil: break
                }
                return r
            })
            let e = JSONEncoder()
            e.keyEncodingStrategy = .convertToSnakeCase
            e.outputFormatting = [.sortedKeys]
            print(String(decoding: try e.encode(report), as: UTF8.self))
            return
        }
        let alive = nodes.filter { $0.alive }.count
        print("coordinator \(client.endpoint)   \(nodes.count) nodes, \(alive) alive, \(nodes.count - alive) dead   (membership version \(version))")
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
                for (key, value) in c.fields { print("  \(key) \(value)") }
            case .failure(let e):
                print("node \(n.id) (\(n.role.rawValue), \(n.address)): no counters: \(e)")
            }
        }
    }

    /// A node's STATS answer, read as its role's record, asked on a connection of its own.
    static func counters(of node: NodeStatus, secret: ClusterSecret) -> Result<NodeCounters, Error> {
        Result {
            guard let ep = Endpoint(parsing: node.address) else { throw ValidationError("node address \(node.address) is not HOST:PORT") }
            let rpc = try RPCClient(endpoint: ep, secret: secret, token: Sys.randomBytes(Handshake.tokenSize), ioTimeoutSeconds: 5)
            defer { rpc.close() }
            let text = try rpc.stats()
            switch node.role {
            case .memory: return .memory(try StatsJSON.decode(MemoryNodeStats.self, from: text))
            case .log: return .log(try StatsJSON.decode(LogNodeStats.self, from: text))
            }
        }
    }
}

/// What `legato status --json` prints: `{"coordinator", "membership_version", "nodes": [{"id", "role",
/// "address", "state", "capacity_bytes", "used_bytes", "silent_ms", "counters" (with --counters)}]}`.
struct StatusReport: Encodable {
    var coordinator: String
    var membershipVersion: UInt64
    var nodes: [NodeReport]
}

struct NodeReport: Encodable {
    var id: UInt64
    var role: String
    var address: String
    var state: String
    var capacityBytes: UInt64
    var usedBytes: UInt64
    var silentMs: UInt64
    /// The node's STATS record, as it answers it.
    var counters: NodeCounters?
    var countersError: String?
}

/// A node's STATS record, encoded as the record itself.
enum NodeCounters: Encodable {
    case memory(MemoryNodeStats)
    case log(LogNodeStats)

    func encode(to encoder: Encoder) throws {
        switch self {
        case .memory(let m): try m.encode(to: encoder)
        case .log(let l): try l.encode(to: encoder)
        }
    }

    /// Its fields by name, as STATS names them, for the human listing.
    var fields: [(String, String)] {
        let json: String
        switch self {
        case .memory(let m): json = StatsJSON.encode(m)
        case .log(let l): json = StatsJSON.encode(l)
        }
        let object = (try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]) ?? [:]
        return object.keys.sorted().map { ($0, "\(object[$0]!)") }
    }
}
