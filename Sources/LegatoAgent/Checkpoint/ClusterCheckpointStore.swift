import Foundation
import LegatoClients
import LegatoCore
import LegatoImage
import LegatoSegmentLog
import LegatoSystem

/// Checkpoints of a named run on a cluster, committed in two phases. The participants are the agent
/// and every memory node holding pages of PROG that live only there:
///
///     BEGIN(name, e) at the coordinator -> pause (the memory nodes freeze PROG's space)
///     PREPARE: each memory node appends the frozen versions of the pages named to it to its own
///              participant log and syncs (PREPARE_SPACE); meanwhile the agent appends the pages it
///              copied, the zero runs and the context to the run's log, synced
///     COMMIT(name, e, record) in the coordinator's store (restorable from here), then the freezes end
///     (any failure before: ABORT in the store, freezes end, the previous checkpoint stays)
///
/// A memory node that cannot take part (no coordinator of its own, an error) has its pages read and
/// persisted by the agent instead. The run's log and the participant logs are LogWriters whose ids
/// and tokens derive from the name, the node and the cluster secret, so a restore anywhere in the
/// cluster finds them. The commit record is JSON: {"writer", "parent", "pages", "pause_ms",
/// "committed_at", "participants": [hex writer ids]}. Log entries carry the epoch in their header;
/// their payload starts with a kind byte (see Docs/on-disk-format.md).
public final class ClusterCheckpointStore: CheckpointStore {
    typealias Kind = CheckpointLogEntry.Kind

    public let name: String
    public let writerID: UInt64
    private let coordinatorEndpoint: Endpoint
    private let secret: ClusterSecret
    private var coordinator: CoordinatorClient
    private var writer: LogWriter?
    let logger = LegatoLogging.logger("legato.checkpoint")
    /// How long the last `load` took to read the logs (for a streamed restore: the index and context).
    public private(set) var readMillis: Double = 0

    public init(name: String, coordinator: Endpoint, secret: ClusterSecret) throws {
        self.name = name
        self.coordinatorEndpoint = coordinator
        self.secret = secret
        self.coordinator = try CoordinatorClient(endpoint: coordinator, secret: secret)
        writerID = ClusterCheckpointStore.writerID(name: name)
    }

    deinit {
        writer?.close()
        coordinator.close()
    }

    /// The log writer id of a named run (FNV-1a of the name, top bit set: apart from node writers).
    public static func writerID(name: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in "legato-process:\(name)".utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h | (1 << 63)
    }

    /// The run's log, opened on first use (it finds the segments earlier sessions wrote).
    func log() throws -> LogWriter {
        if let w = writer { return w }
        let token = Sys.hmacSHA256(key: secret.bytes, data: Array("legato checkpoint log \(writerID)".utf8))
        let w = try LogWriter(config: .init(writer: writerID, secret: secret, token: token, coordinator: coordinatorEndpoint))
        writer = w
        return w
    }

    public func begin() throws -> CheckpointTransaction {
        let epoch = try withCoordinator { c in
            let all = try c.checkpoints(name: name).filter { $0.name == name }
            let epoch = (all.map { $0.epoch }.max() ?? 0) + 1
            try c.beginCheckpoint(name: name, epoch: epoch, record: [])
            return epoch
        }
        return ClusterTransaction(store: self, epoch: epoch)
    }

    public func committed() throws -> [CheckpointSummary] { try committedRecords().map { $0.summary } }

    public var retainsOnMemoryNodes: Bool { true }

    /// The credential a named run's agent uses on memory nodes (derived from the name and the
    /// cluster secret): a restore of the run can then read the spaces its earlier incarnation left.
    public static func agentToken(name: String, secret: ClusterSecret) -> [UInt8] {
        Sys.hmacSHA256(key: secret.bytes, data: Array("legato agent \(name)".utf8))
    }

    /// A committed checkpoint on the coordinator, with its record (nil if it does not decode).
    private struct CommittedRecord {
        var epoch: UInt64
        var decidedAt: Double
        var record: CommitRecord?

        var summary: CheckpointSummary {
            CheckpointSummary(epoch: epoch, committedAt: decidedAt, pauseMillis: record?.pauseMs ?? 0, pages: record?.pages ?? 0,
                              parent: record?.parent)
        }

        static func position(_ a: [UInt64]?) -> LogWriter.Position? {
            guard let a, a.count == 2, a[1] <= UInt64(UInt32.max) else { return nil }
            return .init(segment: a[0], index: UInt32(a[1]))
        }

        /// Where the epoch's index and context entries are in the run's log.
        var indexAt: LogWriter.Position? { Self.position(record?.indexAt) }
        var contextAt: LogWriter.Position? { Self.position(record?.contextAt) }
    }

    /// The run's committed checkpoints, oldest first (one request to the coordinator).
    private func committedRecords() throws -> [CommittedRecord] {
        try withCoordinator { try $0.checkpoints(name: name) }.filter { $0.name == name && $0.state == .committed }.sorted { $0.epoch < $1.epoch }.map { r in
            CommittedRecord(epoch: r.epoch, decidedAt: r.decidedAt ?? 0, record: try? CommitRecord.decode(r.record))
        }
    }

    /// Every named run with a checkpoint record on the coordinator.
    public static func names(coordinator: Endpoint, secret: ClusterSecret) throws -> [String] {
        let c = try CoordinatorClient(endpoint: coordinator, secret: secret)
        defer { c.close() }
        return Array(Set(try c.checkpoints().map { $0.name })).sorted()
    }

    public func load(epoch: UInt64) throws -> RestoreSource {
        let committed = Dictionary(try committedRecords().map { ($0.epoch, $0) }, uniquingKeysWith: { a, _ in a })
        guard committed[epoch] != nil else {
            throw CheckpointStoreError.noSuchCheckpoint(name: name, epoch: epoch, place: "on the coordinator at \(coordinatorEndpoint)")
        }
        // The chain: the checkpoint and its parents down to a full one.
        var chain: [UInt64] = []
        var next: UInt64? = epoch
        while let e = next {
            guard let r = committed[e], !chain.contains(e) else {
                throw CheckpointStoreError.parentNotCommitted(name: name, epoch: epoch, parent: e)
            }
            chain.insert(e, at: 0)
            next = r.summary.parent
        }
        let records = chain.map { committed[$0]! }
        if let streaming = try loadStreaming(epoch: epoch, records: records) { return streaming }
        let wanted = Set(chain.map { UInt32(truncatingIfNeeded: $0) })
        var image: ProcessImage?
        // The run's log, then the memory nodes' participant logs, read in parallel.
        let segments = try ownSegments(epochs: wanted) + participantSegments(try participants(records))
        let started = monotonicNanos()
        // Each reading thread builds layers of its own (no lock, no copy but the one into them); a
        // chain's layers are then ordered by epoch, and within an epoch their pages are disjoint.
        let replay = LogReplay(secret: secret)
        final class Builders { var byEpoch: [UInt32: CheckpointLayerBuilder] = [:]; var image: ProcessImage? }
        let perThread = (0..<replay.threads).map { _ in Builders() }
        try replay.run(segments) { t, e, payload in
            let mine = perThread[t]
            let b = mine.byEpoch[e] ?? CheckpointLayerBuilder(epoch: UInt64(e))
            mine.byEpoch[e] = b
            if try b.add(payload), UInt64(e) == epoch {
                mine.image = try Self.image(context: payload, epoch: epoch)
            }
        }
        image = perThread.compactMap { $0.image }.first
        let bytes = perThread.reduce(0) { $0 + $1.byEpoch.values.reduce(0) { $0 + $1.data.count } }
        let ms = Double(monotonicNanos() - started) / 1e6
        logger.info("read checkpoint \(epoch) of \(name): \(segments.count) segments, \(bytes >> 20) MiB from the log nodes in \(Int(ms)) ms")
        readMillis = ms
        guard let image else { throw CheckpointStoreError.contextMissing(name: name, epoch: epoch, "committed, but its context is not in the log") }
        let layers = chain.flatMap { e in perThread.compactMap { $0.byEpoch[UInt32(truncatingIfNeeded: e)]?.layer } }
        return RestoreSource(image: image, layers: layers)
    }

    /// The lazy restore, for checkpoints whose records locate their index and context entries: reads
    /// those few entries, then replays the logs on threads of its own into the layers while the
    /// restored PROG runs (a page it needs first is fetched ahead of the replay). Nil for a chain
    /// written before indexes existed.
    private func loadStreaming(epoch: UInt64, records: [CommittedRecord]) throws -> RestoreSource? {
        guard let contextAt = records.last?.contextAt, records.allSatisfy({ $0.indexAt != nil }) else { return nil }
        let started = monotonicNanos()
        let w = try log()
        let reader = EntryReader(writer: writerID, placement: Dictionary(w.placement.map { ($0.segment, $0.nodes) }, uniquingKeysWith: { a, _ in a }),
                                 secret: secret)
        var image: ProcessImage?
        try reader.visit(contextAt) { p in
            guard p.first == Kind.context.rawValue else { throw CheckpointStoreError.contextMissing(name: self.name, epoch: epoch, "the entry at segment \(contextAt.segment) #\(contextAt.index) is no context") }
            image = try Self.image(context: p, epoch: epoch)
        }
        guard let image else { throw CheckpointStoreError.contextMissing(name: name, epoch: epoch, "no context at segment \(contextAt.segment) #\(contextAt.index)") }
        var layers: [RestoreSource.Layer] = []
        var streams: [UInt32: StreamedPages] = [:]
        let chain = Set(records.map { UInt32(truncatingIfNeeded: $0.epoch) })
        let retained = RetainedPages(secret: secret, token: Self.agentToken(name: name, secret: secret))
        var fromMemory: [RetainedPages.Run] = []
        var memoryEpochs: [UInt64: Set<UInt32>] = [:]   // participant log -> epochs read from memory nodes instead
        for record in records {
            let e = record.epoch
            var index: (runs: [CheckpointLogEntry.IndexedRun], zeros: [(UInt64, Int)])?
            try reader.visit(record.indexAt!) { index = try CheckpointLogEntry.parseIndex($0) }
            let runs = index!.runs
            let e32 = UInt32(truncatingIfNeeded: e)
            let stream = try StreamedPages(epoch: e32, runs: runs)
            // The participant runs memory nodes still retain: fetched from their DRAM, not replayed.
            var memoryRun: [Int: RetainedPages.Run] = [:]
            for (node, source) in retainedSources(record, runs: runs, chain: chain, retained) {
                memoryEpochs[node.writer, default: []].insert(e32)
                for (i, r) in runs.enumerated() where r.segment == .max && r.node == node.index {
                    memoryRun[i] = .init(source: source, key: r.key, pages: r.pages) { [stream] p in stream.deliver(address: r.address, count: r.pages, data: p) }
                }
            }
            fromMemory += memoryRun.keys.sorted().map { memoryRun[$0]! }
            stream.fetchable = { i in runs[i].segment != .max || memoryRun[i] != nil }
            stream.fetchRuns = { [reader, retained] wanted in
                var positions: [LogWriter.Position] = []
                for i in wanted {
                    if let m = memoryRun[i] { try retained.read(m) } else { positions.append(.init(segment: runs[i].segment, index: runs[i].entry)) }
                }
                if !positions.isEmpty { try reader.visitAll(positions) { p in try Self.deliver(p, to: stream) } }
            }
            streams[e32] = stream
            layers.append(.init(epoch: e, pageRuns: runs.map { ($0.address, $0.pages) }, zeroRuns: index!.zeros, pages: .streamed(stream)))
        }
        // The replay: the run's log and the participant logs, but for what memory nodes retain (read
        // from there on a thread of its own; from the participant logs after all if that fails).
        var replayed = try participants(records)
        for (w, epochs) in memoryEpochs { replayed[w]?.subtract(epochs) }
        let segments = try ownSegments(epochs: Set(streams.keys)) + participantSegments(replayed.filter { !$0.value.isEmpty })
        let fallback = memoryEpochs
        readMillis = Double(monotonicNanos() - started) / 1e6
        let replay = LogReplay(secret: secret)
        let log = logger
        let name = self.name
        // Tests hold the replay back to make PROG's faults fetch their pages ahead of it.
        let delay = ProcessInfo.processInfo.environment["LEGATO_TEST_REPLAY_DELAY_MS"].flatMap { UInt32($0) } ?? 0
        let once = Lock()
        var replayRequested = false
        var running = fromMemory.isEmpty ? 1 : 2
        var firstFailure: Error?
        let t0 = monotonicNanos()
        let finished: (Error?) -> Void = { failure in
            let last = once.withLock { () -> Bool in
                if firstFailure == nil { firstFailure = failure }
                running -= 1
                return running == 0
            }
            guard last else { return }
            for s in streams.values { s.replayFinished(error: firstFailure) }
            let fetched = streams.values.reduce(0) { $0 + $1.fetchedByReader }
            log.info("replayed checkpoint \(epoch) of \(name) from \(segments.count) segments and \(retained.fetchedPages) pages retained by memory nodes in \(Int(Double(monotonicNanos() - t0) / 1e6)) ms (\(fetched) runs fetched ahead by faults)")
        }
        let deliverAll: (Int, UInt32, UnsafeRawBufferPointer) throws -> Void = { _, e, p in if let s = streams[e] { try Self.deliver(p, to: s) } }
        let start: () -> Void = { [self] in
            guard once.withLock({ defer { replayRequested = true }; return !replayRequested }) else { return }
            for s in streams.values { s.replayStarting() }
            startThread(name: "log-replay") {
                if delay > 0 { usleep(delay * 1000) }
                var failure: Error?
                do { try replay.run(segments, visit: deliverAll) } catch {
                    failure = error
                    log.error("replaying checkpoint \(epoch) of \(name) from the log nodes: \(error)")
                }
                finished(failure)
            }
            guard !fromMemory.isEmpty else { return }
            startThread(name: "retained-fetch") {
                if delay > 0 { usleep(delay * 1000) }
                var failure: Error?
                do { try retained.readAll(fromMemory) } catch {
                    log.warning("reading checkpoint \(epoch) of \(name) from the memory nodes that retain it: \(error); replaying their logs instead")
                    do { try LogReplay(secret: self.secret).run(try self.participantSegments(fallback), visit: deliverAll) } catch {
                        failure = error
                        log.error("replaying checkpoint \(epoch) of \(name) from the participant logs: \(error)")
                    }
                }
                finished(failure)
            }
        }
        logger.info("checkpoint \(epoch) of \(name): index and context read in \(Int(readMillis)) ms; \(layers.reduce(0) { $0 + $1.pageRuns.reduce(0) { $0 + $1.1 } }) pages to stream in")
        for s in streams.values { s.startReplay = start }
        var source = RestoreSource(image: image, layers: layers)
        source.startStreaming = start
        source.releaseEarlierSpaces = { [log] in
            let n = retained.dropSeenSpaces()
            if n > 0 { log.info("dropped \(n) address space(s) the earlier run of \(name) left on memory nodes") }
        }
        return source
    }

    /// The process image of a context entry, in the format this build restores.
    static func image(context p: UnsafeRawBufferPointer, epoch: UInt64) throws -> ProcessImage {
        let image = try JSONDecoder().decode(ProcessImage.self, from: Data(p[8...]))
        guard image.version == ProcessImage.version else { throw CheckpointStoreError.unsupportedVersion(epoch: epoch, version: image.version) }
        return image
    }

    /// A pages entry to the stream of its epoch (other kinds are not pages).
    static func deliver(_ p: UnsafeRawBufferPointer, to stream: StreamedPages) throws {
        guard let run = try CheckpointLogEntry.parsePages(p) else { return }
        stream.deliver(address: run.address, count: run.count, data: run.data.baseAddress!)
    }

    /// The segments of the run's own log, to read for entries of `epochs`.
    private func ownSegments(epochs: Set<UInt32>) throws -> [LogReplay.SegmentReplicas] {
        try log().placement.map { LogReplay.SegmentReplicas(writer: writerID, segment: $0.segment, replicas: $0.nodes, epochs: epochs) }
    }

    /// The segments of participant logs, each to read for the epochs given with it.
    private func participantSegments(_ epochsByWriter: [UInt64: Set<UInt32>]) throws -> [LogReplay.SegmentReplicas] {
        var segments: [LogReplay.SegmentReplicas] = []
        for (writer, named) in epochsByWriter {
            let p = try LogWriter(config: .init(writer: writer, secret: secret,
                                                token: CheckpointLogEntry.participantToken(writer: writer, secret: secret),
                                                coordinator: coordinatorEndpoint))
            segments += p.placement.map { LogReplay.SegmentReplicas(writer: writer, segment: $0.segment, replicas: $0.nodes, epochs: named) }
            p.close()
        }
        return segments
    }

    /// The memory nodes of `record` that retain a checkpoint its participant runs can be read from
    /// (see RetainedPages), with their participant log. None if a participant run names no node
    /// (its log could then not be left out of the replay).
    private func retainedSources(_ record: CommittedRecord, runs: [CheckpointLogEntry.IndexedRun], chain: Set<UInt32>,
                                 _ retained: RetainedPages) -> [(node: (index: UInt32, writer: UInt64), source: RetainedPages.Source)] {
        guard let spaceHex = record.record?.space, let space = UInt64(spaceHex, radix: 16),
              let nodes = record.record?.memoryNodes else { return [] }
        let participantRuns = runs.filter { $0.segment == .max }
        guard participantRuns.allSatisfy({ $0.node != CheckpointLogEntry.IndexedRun.noNode && Int($0.node) < nodes.count }) else { return [] }
        let epoch = UInt32(truncatingIfNeeded: record.epoch)
        return Set(participantRuns.map { $0.node }).sorted().compactMap { k in
            guard let ep = Endpoint(parsing: nodes[Int(k)]),
                  let s = retained.source(endpoint: ep, space: space, epoch: epoch, chain: chain) else { return nil }
            return ((k, CheckpointLogEntry.participantWriter(name: name, node: nodes[Int(k)])), s)
        }
    }

    /// The participant logs named by `records`, each with the epochs it holds pages of.
    private func participants(_ records: [CommittedRecord]) throws -> [UInt64: Set<UInt32>] {
        var out: [UInt64: Set<UInt32>] = [:]
        for r in records {
            for hex in r.record?.participants ?? [] {
                guard let writer = UInt64(hex, radix: 16) else { throw CheckpointStoreError.badParticipant(name: name, epoch: r.epoch, log: hex) }
                out[writer, default: []].insert(UInt32(truncatingIfNeeded: r.epoch))
            }
        }
        return out
    }

    /// `body` with the coordinator, once more on a fresh connection if it fails: the coordinator
    /// may have restarted (its store keeps the records), which closed the old connection.
    func withCoordinator<T>(_ body: (CoordinatorClient) throws -> T) throws -> T {
        do { return try body(coordinator) } catch {
            coordinator.close()
            coordinator = try CoordinatorClient(endpoint: coordinatorEndpoint, secret: secret)
            return try body(coordinator)
        }
    }

    func decide(_ body: (CoordinatorClient) throws -> Void) throws { try withCoordinator(body) }
}
