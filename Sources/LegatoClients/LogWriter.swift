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

    public let config: Config
    let log: Logger
    let lock = Lock()
    var nodes: [UInt64: Node] = [:]
    var deadNodes: Set<UInt64> = []
    var clients: [UInt64: LogNodeClient] = [:]
    var segments: [ReplicatedSegment] = []
    var nextSegment: UInt64 = 1
    var warnedFew = false
    /// Why the last OPEN no node took was refused (settleOpens).
    var refusedWhy: String?
    var monitoring = false
    var rng = SystemRandomNumberGenerator()
    public internal(set) var reReplicated = 0

    public init(config: Config) throws {
        self.config = config
        log = LegatoLogging.logger("legato.log")
        try lock.withLock {
            try refreshMembership()
            try discoverExistingSegments()
        }
    }

    deinit { lock.withLock { monitoring = false } }

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

    func openSegment(fitting size: Int) throws -> ReplicatedSegment {
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
            settleOpens(s)
            if segments.last !== s { throw LogError.refused(refusedWhy ?? "no log node would open a segment") }
            try topUp(s)
        }
        return s
    }

    /// Collects the OPEN answers of segment `s`: a node that failed (dropped) or refused it (no
    /// room) holds no replica of it. Returns the nodes that failed. A new segment that no node
    /// would open is given up (nothing of it exists anywhere), and the refusal thrown.
    @discardableResult
    func settleOpens(_ s: ReplicatedSegment) -> [UInt64] {
        defer { s.opening.removeAll() }
        let (failed, refused) = collectRefusals(OpenReplica.self, s.opening)
        s.replicas.removeAll { failed.contains($0) || refused[$0] != nil }
        refusedWhy = refused.values.first
        if s.replicas.isEmpty, refusedWhy != nil, s.count == 0, segments.last === s {
            segments.removeLast()
            nextSegment = s.id
        }
        return failed
    }

    static let requestBytes = 1 << 20

    /// Appends `chunk` to every replica of `s`: in requests of about 1 MiB, every request sent to every
    /// replica before any answer is awaited, so the log nodes take in and store one request while the
    /// next is on its way (one big request would reach the replicas one after the other).
    func appendToReplicas(_ s: ReplicatedSegment, _ chunk: ArraySlice<LogEntry>) throws {
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
        let opened = Set(s.replicas)
        failed += settleOpens(s).filter { !failed.contains($0) }
        // Nodes that refused to open the segment (no room) answer its appends with errors too.
        var refused: [UInt64: String] = [:]
        for id in opened where !s.replicas.contains(id) && !failed.contains(id) { refused[id] = refusedWhy ?? "no room to open the segment" }
        var accepted = Set<UInt64>()
        for (id, req) in pending where !failed.contains(id) {
            do {
                _ = try client(id).finishAppend(req)
                accepted.insert(id)
            } catch let e as RemoteError where refused[id] != nil || e.status == .capacityExceeded {
                // (Once a node refused part of the chunk, it answers the rest out of order.)
                if refused[id] == nil { refused[id] = e.message }
            } catch {
                failed.append(id)
                dropNode(id, "\(error)")
            }
        }
        let took = s.replicas.filter { !failed.contains($0) && refused[$0] == nil }
        let ahead = refused.keys.contains { accepted.contains($0) }  // took part of the chunk, refused the rest
        if took.isEmpty, let why = refused.values.first {
            // No replica took the chunk: the caller's append is refused, and what the log held is
            // intact. A replica may hold part of the chunk past what the writer counts: no entry is
            // appended to this segment again (the node would take a new entry at that index for a
            // retry of the old one); the next append opens a new segment.
            s.replicas.removeAll { failed.contains($0) }
            if s.replicas.isEmpty && s.count > 0 { throw LogError.lost(segment: s.id) }
            if !s.replicas.isEmpty && (s.count > 0 || ahead) { try? closeSegment(s) }
            throw LogError.refused(why)
        }
        // A replica that refused part of the chunk is behind the others: replaced like a failed one.
        failed += refused.keys
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

    /// Sends `op` (OPEN or CLOSE) for `segment` to every node of `ids` without awaiting answers;
    /// returns the requests sent (a node that cannot be sent to is dropped).
    func sendAll<R: ReplicaRequest>(_ op: R.Type, _ ids: [UInt64], segment: UInt64) -> [(node: UInt64, request: UInt32)] {
        var sent: [(node: UInt64, request: UInt32)] = []
        let request = R(key: ReplicaKey(writer: config.writer, segment: segment))
        for id in ids {
            do { sent.append((id, try client(id).start(request))) } catch { dropNode(id, "\(error)") }
        }
        return sent
    }

    /// Collects the answers to requests `sendAll` sent: the nodes that failed (dropped), and those
    /// that refused for room (kept: they may have room later), with why.
    func collectRefusals<R: ReplicaRequest>(_ op: R.Type, _ sent: [(node: UInt64, request: UInt32)]) -> (failed: [UInt64], refused: [UInt64: String]) {
        var failed: [UInt64] = []
        var refused: [UInt64: String] = [:]
        for (id, req) in sent {
            do { try client(id).finish(op, req) } catch let e as RemoteError where e.status == .capacityExceeded {
                refused[id] = e.message
            } catch {
                failed.append(id)
                dropNode(id, "\(error)")
            }
        }
        return (failed, refused)
    }

    /// Collects the answers to requests `sendAll` sent; returns the nodes that refused or failed (dropped).
    func collect<R: ReplicaRequest>(_ op: R.Type, _ sent: [(node: UInt64, request: UInt32)]) -> [UInt64] {
        var failed: [UInt64] = []
        for (id, req) in sent {
            do { try client(id).finish(op, req) } catch {
                failed.append(id)
                dropNode(id, "\(error)")
            }
        }
        return failed
    }

    func closeSegment(_ s: ReplicatedSegment) throws {
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
                        throw LogError.syncFailed(node: nodes[id]?.endpoint.description ?? "\(id)", segment: s.id, e.message)
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

    /// Frees closed segments on every replica (log cleaning) and forgets them; a replica that
    /// cannot be reached keeps its copy (a node that comes back holds what nobody reads).
    public func free(segments ids: Set<UInt64>) {
        lock.withLock {
            for s in segments where ids.contains(s.id) && s.closed {
                for rid in s.replicas { try? client(rid).free(writer: config.writer, segment: s.id) }
            }
            segments.removeAll { ids.contains($0.id) && $0.closed }
        }
    }

    /// Closes the open segment and frees every segment: the log is given up.
    public func freeAll() {
        try? closeOpenSegment()
        free(segments: Set(segmentIDs))
    }

    /// The closed segments and the open one, with the payload bytes each holds.
    public var segmentSizes: [(segment: UInt64, bytes: Int, closed: Bool)] {
        lock.withLock { segments.map { ($0.id, $0.bytes, $0.closed) } }
    }

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
