import LegatoClients
import LegatoMetrics

/// The coordinator's STATS as Prometheus samples (`legato_coord_...` at `legato coord --metrics`).
extension CoordinatorStats: MetricsReporting {
    public func report(into r: inout MetricsReport) {
        r.gauge("membership_version", membershipVersion, help: "Changes of membership so far")
        r.gauge("nodes", nodes, help: "Nodes ever registered")
        r.gauge("nodes_alive", alive, help: "Nodes alive now")
        r.gauge("leading", leading ? 1 : 0, help: "1 while this coordinator leads, 0 while it follows")
    }
}
