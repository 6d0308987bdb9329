import Foundation
import LegatoCore
import LegatoSegmentLog
import LegatoSystem
import LegatoWire

/// Keeping R copies after log nodes fail: an open segment's lost replica is replaced at once from
/// the entries kept in memory; closed segments are copied from a surviving replica when the
/// monitor hears that a log node died.
extension LogWriter {
    /// Brings segment `s` back to R replicas (or as many as there are nodes) by copying it to new nodes.
    /// A node that refuses the copy (no room, or a replica of it there already: one left behind) is
    /// passed over for this segment, not dropped.
    func topUp(_ s: ReplicatedSegment) throws {
        var passedOver = Set<UInt64>()
        while s.replicas.count < config.replicas {
            let extra = chooseNodes(1, excluding: Set(s.replicas).union(passedOver))
            guard let id = extra.first else {
                if s.replicas.isEmpty { throw LogError.lost(segment: s.id) }
                return
            }
            do {
                let data: [LogEntry]
                if s.closed { data = try readClosed(s) } else { data = s.entries }
                let c = try client(id)
                try c.open(writer: config.writer, segment: s.id)
                var first: UInt32 = 0
                var k = 0
                while k < data.count {
                    var n = 0, bytes = 0
                    while k + n < data.count && (n == 0 || bytes + data[k + n].payload.count < 4 << 20) {
                        bytes += data[k + n].payload.count
                        n += 1
                    }
                    _ = try c.append(writer: config.writer, segment: s.id, first: first, entries: data[k..<k + n])
                    first += UInt32(n)
                    k += n
                }
                if s.closed { try c.close(writer: config.writer, segment: s.id) } else { try c.sync(writer: config.writer, segment: s.id) }
                s.replicas.append(id)
                reReplicated += 1
                log.info("segment \(s.id) of writer \(String(config.writer, radix: 16)) copied to log node \(nodes[id]?.endpoint.description ?? "\(id)")")
            } catch let e as LogError {
                throw e
            } catch let e as RemoteError where e.status == .capacityExceeded || e.status == .alreadyExists {
                passedOver.insert(id)
            } catch {
                dropNode(id, "\(error)")
            }
        }
    }

    func readClosed(_ s: ReplicatedSegment) throws -> [LogEntry] {
        var why = "no replica left"
        for id in s.replicas {
            do {
                let r = try client(id).readAll(writer: config.writer, segment: s.id)
                if r.corrupt == 0 && r.entries.count == Int(s.count) { return r.entries.map { $0.1 } }
                why = "replica on node \(id) has \(r.corrupt) corrupt entries"
            } catch {
                why = "\(error)"
            }
        }
        throw LogError.unreadable(segment: s.id, why)
    }

    // MARK: replication after failures

    /// Restores R replicas of every segment that lost one to a dead log node. Returns how many copies were made.
    @discardableResult
    public func ensureReplication() throws -> Int {
        try lock.withLock {
            try refreshMembership()
            let before = reReplicated
            for s in segments {
                let lost = s.replicas.filter { nodes[$0] == nil }
                if !lost.isEmpty {
                    s.replicas.removeAll { lost.contains($0) }
                    for id in lost { clients[id]?.close(); clients[id] = nil }
                }
                if s.replicas.count < config.replicas { try topUp(s) }
            }
            return reReplicated - before
        }
    }

    /// Watches the coordinator and re-replicates when a log node dies.
    public func startMonitoring() {
        guard let c = config.coordinator else { return }
        let already = lock.withLock { () -> Bool in
            defer { monitoring = true }
            return monitoring
        }
        if already { return }
        startThread(name: "log-monitor") { [weak self] in
            var known: UInt64 = 0
            var client: CoordinatorClient?
            while let me = self, me.lock.withLock({ me.monitoring }) {
                do {
                    if client == nil { client = try CoordinatorClient(endpoint: c, secret: me.config.secret) }
                    let m = try client!.waitMembership(after: known, timeoutMillis: 1000)
                    if m.version != known {
                        known = m.version
                        let deadHolders = m.nodes.filter { n in !n.alive && n.role == .log && me.holds(n.id) }
                        if !deadHolders.isEmpty { try me.ensureReplication() }
                    }
                } catch {
                    me.log.warning("log monitor: \(error)")
                    client?.close()
                    client = nil
                    usleep(200_000)
                }
            }
        }
    }

    public func stopMonitoring() { lock.withLock { monitoring = false } }

    func holds(_ node: UInt64) -> Bool { lock.withLock { segments.contains { $0.replicas.contains(node) } } }
}
