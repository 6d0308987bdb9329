import Foundation
import LegatoCore
import LegatoCoordinator
import LegatoLog
import LegatoSystem

/// Checkpoints of a named run on a cluster: pages, zero runs and the context go into the run's own
/// replicated log (a LogWriter whose id and token derive from the name and the cluster secret, so a
/// restore anywhere in the cluster finds it), and the coordinator's store holds the decision:
///
///     BEGIN(name, e) at the coordinator -> pause -> entries of epoch e appended to R log nodes, synced
///     (PREPARED) -> COMMIT(name, e, record) in the coordinator's store (restorable from here)
///
/// The commit record is JSON: {"writer", "parent", "pages", "pause_ms", "committed_at"}. Log entries
/// carry the epoch in their header; their payload starts with a kind byte (see Docs/on-disk-format.md).
public final class ClusterCheckpointStore: CheckpointStore {
    enum Kind: UInt8 {
        case pages = 1     // [kind, 0, 0, 0, count u32, address u64] + count pages
        case zeros = 2     // [kind, 0, 0, 0, runs u32] + runs x [address u64, count u64]
        case context = 3   // [kind, 0 x 7] + the ProcessImage as JSON
    }

    public let name: String
    public let writerID: UInt64
    private let coordinatorEndpoint: Endpoint
    private let secret: ClusterSecret
    private var coordinator: CoordinatorClient
    private var writer: LogWriter?

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
        let all = try coordinator.checkpoints(name: name).filter { $0.name == name }
        let epoch = (all.map { $0.epoch }.max() ?? 0) + 1
        try coordinator.beginCheckpoint(name: name, epoch: epoch, record: [])
        return ClusterTransaction(store: self, epoch: epoch)
    }

    public func committed() throws -> [CheckpointSummary] {
        try coordinator.checkpoints(name: name).filter { $0.name == name && $0.state == .committed }.sorted { $0.epoch < $1.epoch }.map { r in
            let d = (try? JSONSerialization.jsonObject(with: r.record) as? [String: Any]) ?? [:]
            return CheckpointSummary(epoch: r.epoch, committedAt: r.decidedAt ?? 0, pauseMillis: (d["pause_ms"] as? NSNumber)?.doubleValue ?? 0,
                                     pages: (d["pages"] as? NSNumber)?.intValue ?? 0, parent: (d["parent"] as? NSNumber)?.uint64Value)
        }
    }

    /// Every named run with a checkpoint record on the coordinator.
    public static func names(coordinator: Endpoint, secret: ClusterSecret) throws -> [String] {
        let c = try CoordinatorClient(endpoint: coordinator, secret: secret)
        defer { c.close() }
        return Array(Set(try c.checkpoints().map { $0.name })).sorted()
    }

    public func load(epoch: UInt64) throws -> RestoreSource {
        let summaries = try committed()
        guard summaries.contains(where: { $0.epoch == epoch }) else {
            throw LegatoError("no committed checkpoint \(epoch) of \(name) on the coordinator at \(coordinatorEndpoint)")
        }
        // The chain: the checkpoint and its parents down to a full one.
        var chain: [UInt64] = []
        var next: UInt64? = epoch
        while let e = next {
            guard let s = summaries.first(where: { $0.epoch == e }), !chain.contains(e) else {
                throw LegatoError("checkpoint \(epoch) of \(name) builds on \(e), which is not committed")
            }
            chain.insert(e, at: 0)
            next = s.parent
        }
        let wanted = Set(chain.map { UInt32(truncatingIfNeeded: $0) })
        var builders: [UInt32: LayerBuilder] = [:]
        var image: ProcessImage?
        let w = try log()
        for (segment, _) in w.placement {
            for entry in try w.read(segment: segment) where wanted.contains(entry.epoch) {
                let b = builders[entry.epoch] ?? LayerBuilder(epoch: UInt64(entry.epoch))
                builders[entry.epoch] = b
                if try b.add(entry.payload), UInt64(entry.epoch) == epoch {
                    image = try JSONDecoder().decode(ProcessImage.self, from: Data(entry.payload.dropFirst(8)))
                }
            }
        }
        guard let image else { throw LegatoError("checkpoint \(epoch) of \(name) is committed but its context is not in the log") }
        guard image.version == ProcessImage.version else { throw LegatoError("checkpoint \(epoch) has format version \(image.version)") }
        return RestoreSource(image: image, layers: chain.map { (builders[UInt32(truncatingIfNeeded: $0)] ?? LayerBuilder(epoch: $0)).layer })
    }

    /// One epoch's entries gathered from the log.
    final class LayerBuilder {
        let epoch: UInt64
        var runs: [(UInt64, Int)] = []
        var zeros: [(UInt64, Int)] = []
        var data = Data()

        init(epoch: UInt64) { self.epoch = epoch }

        /// Adds an entry; true if it was the context.
        func add(_ p: [UInt8]) throws -> Bool {
            guard p.count >= 8, let kind = Kind(rawValue: p[0]) else { throw LegatoError("checkpoint log entry of epoch \(epoch) has an unknown kind") }
            func u64(_ at: Int) -> UInt64 { p.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt64.self) } }
            let n = Int(p.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self) })
            switch kind {
            case .pages:
                guard p.count == 16 + n * Page.size else { throw LegatoError("checkpoint log entry of epoch \(epoch): \(n) pages in \(p.count) bytes") }
                runs.append((u64(8), n))
                data.append(contentsOf: p[16...])
            case .zeros:
                guard p.count == 8 + n * 16 else { throw LegatoError("checkpoint log entry of epoch \(epoch): \(n) zero runs in \(p.count) bytes") }
                for k in 0..<n { zeros.append((u64(8 + k * 16), Int(u64(16 + k * 16)))) }
            case .context:
                return true
            }
            return false
        }

        var layer: RestoreSource.Layer { .init(epoch: epoch, pageRuns: runs, zeroRuns: zeros, pages: .memory(data)) }
    }

    fileprivate func decide(_ body: (CoordinatorClient) throws -> Void) throws {
        do { try body(coordinator) } catch {
            // One retry on a fresh connection: the coordinator may have restarted.
            coordinator.close()
            coordinator = try CoordinatorClient(endpoint: coordinatorEndpoint, secret: secret)
            try body(coordinator)
        }
    }
}

/// One checkpoint on its way into the run's log.
final class ClusterTransaction: CheckpointTransaction {
    let store: ClusterCheckpointStore
    let epoch: UInt64
    private var record: [String: Any] = [:]

    init(store: ClusterCheckpointStore, epoch: UInt64) {
        self.store = store
        self.epoch = epoch
    }

    /// Phase one: every entry of the epoch appended to R log nodes and synced.
    func prepare(staging: CheckpointStaging, image: ProcessImage, pauseMillis: Double) throws {
        let w = try store.log()
        w.startMonitoring()  // re-replicates what a log node's death takes (idempotent)
        let e = UInt32(truncatingIfNeeded: epoch)
        var batch: [ReplicaStore.Entry] = []
        var batchBytes = 0
        func flush() throws {
            if !batch.isEmpty { try w.append(batch) }
            batch.removeAll(keepingCapacity: true)
            batchBytes = 0
        }
        var pages = 0
        try staging.forEachRun { address, count, data in
            var p = [UInt8](repeating: 0, count: 16)
            p[0] = ClusterCheckpointStore.Kind.pages.rawValue
            withUnsafeBytes(of: UInt32(count).littleEndian) { p.replaceSubrange(4..<8, with: $0) }
            withUnsafeBytes(of: address.littleEndian) { p.replaceSubrange(8..<16, with: $0) }
            p.append(contentsOf: UnsafeRawBufferPointer(start: data, count: count * Page.size))
            batch.append(.init(epoch: e, slab: address >> 24, payload: p))
            batchBytes += p.count
            pages += count
            if batchBytes >= 4 << 20 { try flush() }
        }
        var zeroStart = 0
        while zeroStart < staging.zeroRuns.count {
            let part = staging.zeroRuns[zeroStart..<min(staging.zeroRuns.count, zeroStart + 65536)]
            var p = [UInt8](repeating: 0, count: 8)
            p[0] = ClusterCheckpointStore.Kind.zeros.rawValue
            withUnsafeBytes(of: UInt32(part.count).littleEndian) { p.replaceSubrange(4..<8, with: $0) }
            for r in part {
                withUnsafeBytes(of: r[0].littleEndian) { p.append(contentsOf: $0) }
                withUnsafeBytes(of: r[1].littleEndian) { p.append(contentsOf: $0) }
            }
            batch.append(.init(epoch: e, slab: 0, payload: p))
            zeroStart += part.count
        }
        var ctx = [UInt8](repeating: 0, count: 8)
        ctx[0] = ClusterCheckpointStore.Kind.context.rawValue
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        ctx.append(contentsOf: try enc.encode(image))
        batch.append(.init(epoch: e, slab: 0, payload: ctx))
        try flush()
        try w.sync()
        record = ["writer": store.writerID, "pages": pages, "pause_ms": pauseMillis, "committed_at": Date().timeIntervalSince1970]
        if let p = image.parentEpoch { record["parent"] = p }
    }

    /// Phase two: the decision in the coordinator's store.
    func commit() throws {
        let r = Array(try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys]))
        try store.decide { try $0.commitCheckpoint(name: store.name, epoch: epoch, record: r) }
    }

    func abort(reason: String) {
        try? store.decide { try $0.abortCheckpoint(name: store.name, epoch: epoch, reason: String(reason.prefix(500))) }
    }
}
