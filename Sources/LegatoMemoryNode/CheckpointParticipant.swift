import LegatoClients
import LegatoCore
import LegatoImage
import LegatoSegmentLog
import LegatoSystem

/// A memory node's part in a checkpoint's two-phase commit: at PREPARE it persists the frozen
/// versions of the pages an agent names (those of PROG's pages that live only here) into a
/// replicated log of its own, so they never travel through the agent. Needs the cluster's
/// coordinator (to find log nodes); without one the node is no participant and the agent
/// persists those pages itself.
final class CheckpointParticipant {
    struct Run {
        var address: UInt64
        var vpns: [UInt64]
    }

    private let coordinator: Endpoint
    private let secret: ClusterSecret
    private let lock = Lock()
    private var logs: [UInt64: LogWriter] = [:]
    private(set) var persistedPages = 0
    private(set) var prepares = 0

    init(coordinator: Endpoint, secret: ClusterSecret) {
        self.coordinator = coordinator
        self.secret = secret
    }

    deinit { for w in logs.values { w.close() } }

    private func log(_ writer: UInt64) throws -> LogWriter {
        if let w = lock.withLock({ logs[writer] }) { return w }
        let w = try LogWriter(config: .init(writer: writer, secret: secret,
                                            token: CheckpointLogEntry.participantToken(writer: writer, secret: secret),
                                            coordinator: coordinator))
        w.startMonitoring()
        return lock.withLock {
            if let other = logs[writer] {
                w.close()
                return other
            }
            logs[writer] = w
            return w
        }
    }

    /// Appends the frozen version of every page of `runs` (space `space`, owned by `owner`) to log
    /// `writer` as entries of `epoch`, synced on return: PREPARED. Returns the pages persisted.
    func prepare(store: PageStore, space: UInt64, owner: [UInt8], epoch: UInt32, writer: UInt64, runs: [Run]) throws -> Int {
        let w = try log(writer)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 256 * Page.size, alignment: Page.size)
        defer { buffer.deallocate() }
        var batch: [LogEntry] = []
        var batchBytes = 0
        var pages = 0
        for run in runs {
            var at = 0
            while at < run.vpns.count {
                let n = min(256, run.vpns.count - at)
                var present = [UInt8](repeating: 0, count: n)
                let found = try run.vpns[at..<at + n].withUnsafeBufferPointer { v in
                    try present.withUnsafeMutableBufferPointer { p in
                        try store.fetch(space: space, owner: owner, vpns: v, present: p.baseAddress!, out: buffer, version: .frozen)
                    }
                }
                guard found == n else {
                    throw ParticipantError.pagesMissing(n - found, address: run.address + UInt64(at * Page.size))
                }
                let address = run.address + UInt64(at * Page.size)
                batch.append(.init(epoch: epoch, slab: address >> 24, payload: CheckpointLogEntry.pages(address: address, count: n, data: buffer)))
                batchBytes += n * Page.size
                pages += n
                at += n
                if batchBytes >= 4 << 20 {
                    try w.append(batch)
                    batch.removeAll(keepingCapacity: true)
                    batchBytes = 0
                }
            }
        }
        if !batch.isEmpty { try w.append(batch) }
        try w.sync()
        lock.withLock {
            persistedPages += pages
            prepares += 1
        }
        return pages
    }
}

public enum ParticipantError: Error, CustomStringConvertible, Equatable {
    /// Pages a PREPARE_SPACE named that the frozen space does not hold.
    case pagesMissing(Int, address: UInt64)
    public var description: String {
        switch self {
        case .pagesMissing(let n, let a): return "\(n) of the pages at 0x\(String(a, radix: 16)) are not here"
        }
    }
}
