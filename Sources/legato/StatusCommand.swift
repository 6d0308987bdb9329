import ArgumentParser
import Foundation
import LegatoCoordinator
import LegatoCore

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show the cluster's nodes.")

    @Option(help: "The coordinator, HOST:PORT (default: the one `legato cluster up` started).")
    var coordinator: Endpoint?

    @Flag(help: "Print JSON: {\"nodes\":[{\"id\",\"role\",\"address\",\"state\",\"capacity_bytes\",\"used_bytes\"}, ...]}.")
    var json = false

    @OptionGroup var secret: SecretOptions

    func run() throws {
        guard let ep = coordinator ?? ClusterCommand.load(ClusterCommand.defaultDirectory()).flatMap({ Endpoint(parsing: $0.coordinator) }) else {
            throw ValidationError("no --coordinator given and no cluster started with `legato cluster up`")
        }
        let client = try CoordinatorClient(endpoint: ep, secret: try secret.load())
        let (version, nodes) = try client.nodes()
        if json {
            let list: [[String: Any]] = nodes.map {
                ["id": $0.id, "role": $0.role.rawValue, "address": $0.address, "state": $0.alive ? "alive" : "dead",
                 "capacity_bytes": $0.capacity, "used_bytes": $0.used, "silent_ms": $0.silentMillis]
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
    }
}
