import Foundation
import LegatoCore
import LegatoSegmentLog
import LegatoSystem
import LegatoWire

/// Where a writer's replicas go: the log nodes it knows (from the coordinator or its list), a
/// connection to each, and the choice of R nodes for a new segment (randomization with refinement).
extension LogWriter {
    // MARK: membership

    func refreshMembership() throws {
        if let c = config.coordinator {
            let client = try CoordinatorClient(endpoint: c, secret: config.secret, ioTimeoutSeconds: 10)
            defer { client.close() }
            var fresh: [UInt64: Node] = [:]
            for n in try client.nodes().nodes where n.role == .log {
                guard let ep = Endpoint(parsing: n.address) else { continue }
                if n.alive { fresh[n.id] = Node(id: n.id, endpoint: ep, free: n.capacity > n.used ? n.capacity - n.used : 0) } else { deadNodes.insert(n.id) }
            }
            nodes = fresh
        } else if nodes.isEmpty {
            for (i, ep) in config.logNodes.enumerated() { nodes[UInt64(i + 1)] = Node(id: UInt64(i + 1), endpoint: ep, free: 1 << 40) }
        }
        for id in deadNodes { nodes[id] = nil }
    }

    /// Learns the segments this writer already has (a writer that starts again continues its log).
    func discoverExistingSegments() throws {
        var found: [UInt64: (replicas: [(id: UInt64, entries: UInt32, closed: Bool)], closed: Bool, count: UInt32)] = [:]
        for n in nodes.values {
            guard let list = try? client(n.id).list(writer: config.writer) else { continue }
            for r in list {
                var f = found[r.segment] ?? ([], r.closed, r.entries)
                f.replicas.append((n.id, r.entries, r.closed))
                f.closed = f.closed || r.closed
                f.count = max(f.count, r.entries)
                found[r.segment] = f
            }
        }
        for (id, f) in found.sorted(by: { $0.key < $1.key }) {
            // An open replica with fewer entries than another is a copy the writer was still making
            // when it stopped (a replacement for a failed log node): it lacks entries the others
            // acknowledged, so it is not read.
            let complete = f.replicas.filter { $0.closed || $0.entries == f.count }.map { $0.id }
            let s = ReplicatedSegment(id: id, replicas: complete)
            s.closed = true  // never append to a segment we did not open: start a new one
            s.count = f.count
            segments.append(s)
            nextSegment = max(nextSegment, id + 1)
        }
    }

    func client(_ id: UInt64) throws -> LogNodeClient {
        if let c = clients[id] { return c }
        guard let n = nodes[id] else { throw LogError.noLogNodes }
        let c = try LogNodeClient(endpoint: n.endpoint, secret: config.secret, token: config.token)
        clients[id] = c
        return c
    }

    func dropNode(_ id: UInt64, _ why: String) {
        if nodes[id] != nil { log.warning("log node \(nodes[id]!.endpoint) failed: \(why)") }
        clients[id]?.close()
        clients[id] = nil
        nodes[id] = nil
        deadNodes.insert(id)
    }

    /// R nodes for a segment (fewer, with a warning, when fewer exist), avoiding `excluding`.
    func chooseNodes(_ count: Int, excluding: Set<UInt64>) -> [UInt64] {
        var chosen: [UInt64] = []
        let hosted = Dictionary(segments.flatMap { s in s.replicas.map { ($0, 1) } }, uniquingKeysWith: +)
        for _ in 0..<count {
            let candidates = nodes.values.filter { !excluding.contains($0.id) && !chosen.contains($0.id) }
            guard !candidates.isEmpty else { break }
            let sample = (0..<min(3, candidates.count)).map { _ in candidates.randomElement(using: &rng)! }
            let best = sample.min { a, b in
                let ar = a.endpoint.host == config.localHost && candidates.contains { $0.endpoint.host != config.localHost }
                let br = b.endpoint.host == config.localHost && candidates.contains { $0.endpoint.host != config.localHost }
                if ar != br { return !ar }
                let ha = hosted[a.id] ?? 0, hb = hosted[b.id] ?? 0
                if ha != hb { return ha < hb }
                return a.free > b.free
            }!
            chosen.append(best.id)
        }
        if chosen.count < count && nodes.count < config.replicas && !warnedFew {
            warnedFew = true
            log.warning("only \(nodes.count) live log node(s); segments get \(nodes.count) replica(s) instead of \(config.replicas)")
        }
        return chosen
    }
}
