import Foundation
import LegatoClients
import LegatoCore
import LegatoImage
import LegatoSegmentLog
import LegatoSystem

/// One checkpoint on its way into the run's log.
final class ClusterTransaction: CheckpointTransaction {
    let store: ClusterCheckpointStore
    let epoch: UInt64
    private var record: CommitRecord?

    init(store: ClusterCheckpointStore, epoch: UInt64) {
        self.store = store
        self.epoch = epoch
    }

    /// Phase one: the memory nodes persist the pages that live only on them into their participant
    /// logs while the agent appends the rest of the epoch to the run's log; all synced on return.
    func prepare(staging: CheckpointStaging, image: ProcessImage, pauseMillis: Double) throws {
        let w = try store.log()
        w.startMonitoring()  // re-replicates what a log node's death takes (idempotent)
        let e = UInt32(truncatingIfNeeded: epoch)
        var pending: [FrozenPages.PendingPrepare] = []
        if let src = staging.frozenSource {
            let byNode = Dictionary(grouping: staging.frozen, by: { $0.node }).mapValues { $0.map { (address: $0.address, vpns: $0.keys) } }
            pending = src.startPrepare(name: store.name, epoch: e, byNode: byNode)
        }
        var batch: [LogEntry] = []
        var batchBytes = 0
        var indexRuns: [CheckpointLogEntry.IndexedRun] = []
        var batchRuns: [(entry: Int, address: UInt64, pages: Int)] = []   // the pages entries of `batch`
        func flush() throws {
            if !batch.isEmpty {
                let at = try w.append(batch)
                for r in batchRuns { indexRuns.append(.init(address: r.address, pages: r.pages, segment: at[r.entry].segment, entry: at[r.entry].index)) }
            }
            batch.removeAll(keepingCapacity: true)
            batchRuns.removeAll(keepingCapacity: true)
            batchBytes = 0
        }
        var pages = 0
        func appendRun(_ address: UInt64, _ count: Int, _ data: UnsafeRawPointer) throws {
            batchRuns.append((batch.count, address, count))
            batch.append(.init(epoch: e, slab: address >> 24, payload: CheckpointLogEntry.pages(address: address, count: count, data: data)))
            batchBytes += count * Page.size
            pages += count
            if batchBytes >= 4 << 20 { try flush() }
        }
        do {
            try staging.forEachRun(except: Set(pending.filter { $0.failure == nil }.map { $0.node }), appendRun)
        } catch {
            _ = staging.frozenSource?.finishPrepare(pending)  // no request left unanswered
            throw error
        }
        let result: FrozenPages.PrepareOutcome = staging.frozenSource?.finishPrepare(pending) ?? ([:], [:])
        // A node that could not persist its part: the agent reads those pages and persists them itself.
        for (node, why) in result.failed.sorted(by: { $0.key < $1.key }) {
            store.logger.warning("memory node \(staging.frozenSource!.endpoints[node]) did not persist its pages of epoch \(epoch) (\(why)); the agent persists them")
        }
        try staging.forEachFrozenRun(where: { result.failed[$0] != nil }, appendRun)
        var zeroStart = 0
        while zeroStart < staging.zeroRuns.count {
            let part = staging.zeroRuns[zeroStart..<min(staging.zeroRuns.count, zeroStart + 65536)]
            batch.append(.init(epoch: e, slab: 0, payload: CheckpointLogEntry.zeros(part)))
            zeroStart += part.count
        }
        try flush()
        // The index (every run of the epoch, wherever it lies) and the context, last: a restore reads
        // these two entries, resumes PROG, and lets the pages stream in.
        for f in staging.frozen where result.prepared[f.node] != nil {
            // A run whose keys are consecutive can be fetched from its node while the node retains
            // the checkpoint (a run within one region always is).
            let consecutive = f.keys.indices.allSatisfy { f.keys[$0] == f.keys[0] &+ UInt64($0) }
            indexRuns.append(.init(address: f.address, pages: f.keys.count, node: consecutive ? UInt32(f.node) : CheckpointLogEntry.IndexedRun.noNode,
                                   key: f.keys.first ?? 0))
        }
        let index = CheckpointLogEntry.index(runs: indexRuns, zeros: staging.zeroRuns.map { ($0[0], Int($0[1])) })
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        let ctx = CheckpointLogEntry.context(json: try enc.encode(image))
        let at = try w.append([.init(epoch: e, slab: 0, payload: index), .init(epoch: e, slab: 0, payload: ctx)])
        try w.sync()
        let participantPages = result.prepared.values.reduce(0) { $0 + $1.pages }
        record = CommitRecord(writer: String(store.writerID, radix: 16), parent: image.parentEpoch, pages: pages + participantPages,
                              pauseMs: pauseMillis, committedAt: Date().timeIntervalSince1970,
                              participants: result.prepared.values.map { String($0.writer, radix: 16) }.sorted(),
                              indexAt: [at[0].segment, UInt64(at[0].index)], contextAt: [at[1].segment, UInt64(at[1].index)],
                              space: staging.frozenSource.map { String($0.space, radix: 16) },
                              memoryNodes: staging.frozenSource.map { $0.endpoints.map { $0.description } })
    }

    /// Phase two: the decision in the coordinator's store.
    func commit() throws {
        guard let record else { throw CheckpointStoreError.committedBeforePrepared(name: store.name, epoch: epoch) }
        let r = try record.encoded()
        try store.decide { try $0.commitCheckpoint(name: store.name, epoch: epoch, record: r) }
    }

    func abort(reason: String) {
        try? store.decide { try $0.abortCheckpoint(name: store.name, epoch: epoch, reason: String(reason.prefix(500))) }
    }
}
