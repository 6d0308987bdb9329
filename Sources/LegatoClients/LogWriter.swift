import Foundation
import LegatoCore
import LegatoSegmentLog
import LegatoSystem
import LegatoWire

/// A writer's replicated log: a sequence of segments, each kept by R log nodes.
///
/// - An append returns once every replica of the open segment holds it (in its buffer: "stored";
///   `sync` makes it durable on all of them).
/// - Each segment's replicas are chosen by randomization with refinement: a few random candidates,
///   the best by how many of this writer's replicas they hold and their free space; never two
///   replicas on one node; not on the writer's own host when another will do.
/// - A replica that fails is replaced at once (the open segment's entries are kept in memory for
///   that); `ensureReplication` (run by the monitor when the coordinator declares a log node dead)
///   restores R copies of closed segments from a surviving replica.
/// Thread-safe.
public final class LogWriter {
    public struct Config {
        public var writer: UInt64
        public var replicas: Int
        public var segmentBytes: Int
        public var secret: ClusterSecret
        public var token: [UInt8]
        public var coordinator: Endpoint?
        public var logNodes: [Endpoint]
        public var localHost: String?

        public init(writer: UInt64, replicas: Int = 3, segmentBytes: Int = 8 << 20, secret: ClusterSecret, token: [UInt8],
                    coordinator: Endpoint? = nil, logNodes: [Endpoint] = [], localHost: String? = nil) {
            self.writer = writer
            self.replicas = replicas
            self.segmentBytes = segmentBytes
            self.secret = secret
            self.token = token
            self.coordinator = coordinator
            self.logNodes = logNodes
            self.localHost = localHost
        }
    }

    public struct Node: Equatable {
        public let id: UInt64
        public let endpoint: Endpoint
        public var free: UInt64
    }

    final class ReplicatedSegment {
        let id: UInt64
        var replicas: [UInt64]
        var entries: [LogEntry] = []  // kept while open, to re-replicate
        var count: UInt32 = 0
        var bytes = 0
        var closed = false
        var unsynced = false
        var opening: [(node: UInt64, request: UInt32)] = []  // OPEN_REPLICA answers still to collect
        init(id: UInt64, replicas: [UInt64]) {
            self.id = id
            self.replicas = replicas
        }
    }

    public enum LogError: Error, CustomStringConvertible {
        case noLogNodes
        case lost(segment: UInt64)
        case unreadable(segment: UInt64, String)

        public var description: String {
            switch self {
            case .noLogNodes: return "no live log node to write to"
            case .lost(let s): return "every replica of segment \(s) is gone"
            case .unreadable(let s, let why): return "no replica of segment \(s) could be read: \(why)"
            }
        }
    }

    public let config: Config
    private let log: Logger
    private let lock = Lock()
    private var nodes: [UInt64: Node] = [:]
    private var deadNodes: Set<UInt64> = []
    private var clients: [UInt64: LogNodeClient] = [:]
    private var segments: [ReplicatedSegment] = []
    private var nextSegment: UInt64 = 1
    private var warnedFew = false
    private var monitoring = false
    private var rng = SystemRandomNumberGenerator()
    public private(set) var reReplicated = 0

    public init(config: Config) throws {
        self.config = config
        log = LegatoLogging.logger("legato.log")
        try lock.withLock {
            try refreshMembership()
            try discoverExistingSegments()
        }
    }

    deinit { lock.withLock { monitoring = false } }

    // MARK: membership

    private func refreshMembership() throws {
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
    private func discoverExistingSegments() throws {
        var found: [UInt64: (replicas: [UInt64], closed: Bool, count: UInt32)] = [:]
        for n in nodes.values {
            guard let list = try? client(n.id).list(writer: config.writer) else { continue }
            for r in list {
                var f = found[r.segment] ?? ([], r.closed, r.entries)
                f.replicas.append(n.id)
                f.closed = f.closed || r.closed
                f.count = max(f.count, r.entries)
                found[r.segment] = f
            }
        }
        for (id, f) in found.sorted(by: { $0.key < $1.key }) {
            let s = ReplicatedSegment(id: id, replicas: f.replicas)
            s.closed = true  // never append to a segment we did not open: start a new one
            s.count = f.count
            segments.append(s)
            nextSegment = max(nextSegment, id + 1)
        }
    }

    private func client(_ id: UInt64) throws -> LogNodeClient {
        if let c = clients[id] { return c }
        guard let n = nodes[id] else { throw LogError.noLogNodes }
        let c = try LogNodeClient(endpoint: n.endpoint, secret: config.secret, token: config.token)
        clients[id] = c
        return c
    }

    private func dropNode(_ id: UInt64, _ why: String) {
        if nodes[id] != nil { log.warning("log node \(nodes[id]!.endpoint) failed: \(why)") }
        clients[id]?.close()
        clients[id] = nil
        nodes[id] = nil
        deadNodes.insert(id)
    }

    /// R nodes for a segment (fewer, with a warning, when fewer exist), avoiding `excluding`.
    private func chooseNodes(_ count: Int, excluding: Set<UInt64>) -> [UInt64] {
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
        if chosen.count < config.replicas && !warnedFew {
            warnedFew = true
            log.warning("only \(chosen.count) log node(s) available; segments get \(chosen.count) replica(s) instead of \(config.replicas)")
        }
        return chosen
    }

    // MARK: appending

    /// Where an entry went: its segment and its index there.
    public struct Position: Equatable {
        public var segment: UInt64
        public var index: UInt32
        public init(segment: UInt64, index: UInt32) {
            self.segment = segment
            self.index = index
        }
    }

    /// Appends entries to the open segment (opening a new one when it is full). Returns once every
    /// replica holds them, with each entry's position.
    @discardableResult
    public func append(_ entries: [LogEntry]) throws -> [Position] {
        try lock.withLock {
            var positions: [Position] = []
            positions.reserveCapacity(entries.count)
            var rest = entries[...]
            while !rest.isEmpty {
                let seg = try openSegment(fitting: rest.first!.payload.count)
                var room = config.segmentBytes - seg.bytes
                var n = 0
                for e in rest {
                    let size = e.payload.count + SegmentFormat.entryHeaderSize
                    if n > 0 && size > room { break }
                    room -= size
                    n += 1
                }
                let chunk = rest.prefix(n)
                try appendToReplicas(seg, chunk)
                for k in 0..<chunk.count { positions.append(Position(segment: seg.id, index: seg.count + UInt32(k))) }
                seg.entries += chunk
                seg.count += UInt32(chunk.count)
                seg.bytes += chunk.reduce(0) { $0 + $1.payload.count + SegmentFormat.entryHeaderSize }
                seg.unsynced = true
                rest = rest.dropFirst(n)
            }
            return positions
        }
    }

    private func openSegment(fitting size: Int) throws -> ReplicatedSegment {
        if let s = segments.last, !s.closed, s.bytes + size + SegmentFormat.entryHeaderSize <= config.segmentBytes || s.count == 0 {
            return s
        }
        if let s = segments.last, !s.closed { try closeSegment(s) }
        var targets = chooseNodes(config.replicas, excluding: [])
        if targets.isEmpty {
            try refreshMembership()
            targets = chooseNodes(config.replicas, excluding: [])
            guard !targets.isEmpty else { throw LogError.noLogNodes }
        }
        let s = ReplicatedSegment(id: nextSegment, replicas: [])
        nextSegment += 1
        // The OPEN answers are collected after the first append is sent (see settleOpens): a log
        // node handles a connection's requests in order, so the append's bytes flow in while it opens.
        s.opening = sendAll(OpenReplica.self, targets, segment: s.id)
        s.replicas = s.opening.map { $0.node }
        if s.replicas.isEmpty { throw LogError.noLogNodes }
        segments.append(s)
        if s.replicas.count < targets.count {
            let failed = settleOpens(s)
            s.replicas.removeAll { failed.contains($0) }
            try topUp(s)
        }
        return s
    }

    /// Collects the OPEN answers of segment `s`; returns the nodes that refused or failed (dropped).
    private func settleOpens(_ s: ReplicatedSegment) -> [UInt64] {
        defer { s.opening.removeAll() }
        return collect(OpenReplica.self, s.opening)
    }

    static let requestBytes = 1 << 20

    /// Appends `chunk` to every replica of `s`: in requests of about 1 MiB, every request sent to every
    /// replica before any answer is awaited, so the log nodes take in and store one request while the
    /// next is on its way (one big request would reach the replicas one after the other).
    private func appendToReplicas(_ s: ReplicatedSegment, _ chunk: ArraySlice<LogEntry>) throws {
        var failed: [UInt64] = []
        var requests: [[UInt8]] = []
        var first = s.count
        var k = chunk.startIndex
        while k < chunk.endIndex {
            var end = k, bytes = 0
            while end < chunk.endIndex && (end == k || bytes + chunk[end].payload.count <= LogWriter.requestBytes) {
                bytes += chunk[end].payload.count
                end += 1
            }
            requests.append(LogNodeClient.encodeAppend(writer: config.writer, segment: s.id, first: first, entries: chunk[k..<end]))
            first += UInt32(end - k)
            k = end
        }
        var pending: [(UInt64, UInt32)] = []
        for encoded in requests {
            for id in s.replicas where !failed.contains(id) {
                do { pending.append((id, try client(id).startAppend(encoded: encoded))) } catch {
                    failed.append(id)
                    dropNode(id, "\(error)")
                }
            }
        }
        failed += settleOpens(s).filter { !failed.contains($0) }
        for (id, req) in pending where !failed.contains(id) {
            do { _ = try client(id).finishAppend(req) } catch {
                failed.append(id)
                dropNode(id, "\(error)")
            }
        }
        if failed.isEmpty { return }
        s.replicas.removeAll { failed.contains($0) }
        // Replacements get everything so far plus this chunk.
        s.entries += chunk
        s.count += UInt32(chunk.count)
        defer {
            s.entries.removeLast(chunk.count)
            s.count -= UInt32(chunk.count)
        }
        try topUp(s)
    }

    /// Brings segment `s` back to R replicas (or as many as there are nodes) by copying it to new nodes.
    private func topUp(_ s: ReplicatedSegment) throws {
        while s.replicas.count < config.replicas {
            let extra = chooseNodes(1, excluding: Set(s.replicas))
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
            } catch {
                dropNode(id, "\(error)")
            }
        }
    }

    private func readClosed(_ s: ReplicatedSegment) throws -> [LogEntry] {
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

    /// Sends `op` (OPEN or CLOSE) for `segment` to every node of `ids` without awaiting answers;
    /// returns the requests sent (a node that cannot be sent to is dropped).
    private func sendAll<R: ReplicaRequest>(_ op: R.Type, _ ids: [UInt64], segment: UInt64) -> [(node: UInt64, request: UInt32)] {
        var sent: [(node: UInt64, request: UInt32)] = []
        let request = R(key: ReplicaKey(writer: config.writer, segment: segment))
        for id in ids {
            do { sent.append((id, try client(id).start(request))) } catch { dropNode(id, "\(error)") }
        }
        return sent
    }

    /// Collects the answers to requests `sendAll` sent; returns the nodes that refused or failed (dropped).
    private func collect<R: ReplicaRequest>(_ op: R.Type, _ sent: [(node: UInt64, request: UInt32)]) -> [UInt64] {
        var failed: [UInt64] = []
        for (id, req) in sent {
            do { try client(id).finish(op, req) } catch {
                failed.append(id)
                dropNode(id, "\(error)")
            }
        }
        return failed
    }

    private func closeSegment(_ s: ReplicatedSegment) throws {
        let sent = sendAll(CloseReplica.self, s.replicas, segment: s.id)
        let refused = collect(CloseReplica.self, sent)
        let closed = sent.map { $0.node }.filter { !refused.contains($0) }
        let lostAny = closed.count < s.replicas.count
        s.replicas = closed
        if lostAny { try topUp(s) }
        s.closed = true  // still `unsynced`: log nodes write a closed replica out right away, `sync` waits for it
        s.entries.removeAll()
    }

    /// Makes everything appended durable on every replica.
    public func sync() throws {
        try lock.withLock {
            for s in segments where s.unsynced {
                var pending: [(UInt64, UInt32)] = []
                var failed: [UInt64] = []
                for id in s.replicas {
                    do { pending.append((id, try client(id).startSync(writer: config.writer, segment: s.id))) } catch {
                        failed.append(id)
                        dropNode(id, "\(error)")
                    }
                }
                for (id, req) in pending {
                    do { try client(id).finishSync(req) } catch let e as RemoteError {
                        throw LegatoError("log node \(nodes[id]?.endpoint.description ?? "\(id)") could not sync segment \(s.id): \(e.message)")
                    } catch {
                        failed.append(id)
                        dropNode(id, "\(error)")
                    }
                }
                s.replicas.removeAll { failed.contains($0) }
                if !failed.isEmpty { try topUp(s) }
                s.unsynced = false
            }
        }
    }

    /// Closes the open segment (its replicas write it out; `sync` waits until they have).
    public func closeOpenSegment() throws {
        try lock.withLock {
            if let s = segments.last, !s.closed { try closeSegment(s) }
        }
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

    private func holds(_ node: UInt64) -> Bool { lock.withLock { segments.contains { $0.replicas.contains(node) } } }

    // MARK: reading

    public var segmentIDs: [UInt64] { lock.withLock { segments.map { $0.id } } }

    /// Where each segment's replicas are.
    public var placement: [(segment: UInt64, nodes: [Endpoint])] {
        lock.withLock { segments.map { s in (s.id, s.replicas.compactMap { nodes[$0]?.endpoint }) } }
    }

    /// All entries of a segment, from the first replica that can give them whole.
    public func read(segment id: UInt64) throws -> [LogEntry] {
        try lock.withLock {
            guard let s = segments.first(where: { $0.id == id }) else { throw LogError.unreadable(segment: id, "unknown segment") }
            var why = "no replica"
            for rid in s.replicas {
                do {
                    let r = try client(rid).readAll(writer: config.writer, segment: id)
                    if r.corrupt == 0 { return r.entries.map { $0.1 } }
                    why = "\(r.corrupt) corrupt entries on node \(rid)"
                } catch {
                    why = "\(error)"
                }
            }
            throw LogError.unreadable(segment: id, why)
        }
    }

    public func close() {
        lock.withLock {
            monitoring = false
            for c in clients.values { c.close() }
            clients.removeAll()
        }
    }
}
