import LegatoCore
import LegatoSystem

/// The coordinators of each cluster this process talks to, by the first of them (the name every
/// part of a process passes on as "the coordinator"): `--coordinator A,B,C` registers [A, B, C]
/// under A, and a CoordinatorClient given A tries the one that led last, then the others.
/// A coordinator never registered is a cluster of one. Thread-safe.
public enum CoordinatorPeers {
    private final class Table: @unchecked Sendable {
        let lock = Lock()
        var peers: [Endpoint: [Endpoint]] = [:]
        var leaders: [Endpoint: Endpoint] = [:]
    }
    private static let table = Table()

    /// `all` are one cluster's coordinators; returns the name it is known by (the first).
    @discardableResult
    public static func register(_ all: [Endpoint]) -> Endpoint {
        precondition(!all.isEmpty, "a cluster has at least one coordinator")
        table.lock.withLock { table.peers[all[0]] = all }
        return all[0]
    }

    /// The coordinators to try for `cluster`: the last leader first.
    public static func candidates(for cluster: Endpoint) -> [Endpoint] {
        table.lock.withLock {
            let all = table.peers[cluster] ?? [cluster]
            guard let leader = table.leaders[cluster] else { return all }
            return [leader] + all.filter { $0 != leader }
        }
    }

    /// `leader` leads `cluster` now (learned from an answer, or a NOT_LEADER's hint).
    public static func noteLeader(_ leader: Endpoint, of cluster: Endpoint) {
        table.lock.withLock {
            table.leaders[cluster] = leader
            if let all = table.peers[cluster], !all.contains(leader) { table.peers[cluster] = all + [leader] }
        }
    }

    /// Parses "HOST:PORT[,HOST:PORT...]" (nil: not that form).
    public static func parse(_ list: String) -> [Endpoint]? {
        let parts = list.split(separator: ",", omittingEmptySubsequences: false).map { Endpoint(parsing: String($0)) }
        guard !parts.isEmpty, parts.allSatisfy({ $0 != nil }) else { return nil }
        return parts.map { $0! }
    }
}
