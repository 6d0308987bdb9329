import Glibc
import LegatoClients
import LegatoCore
import LegatoSystem

/// One RECOVER_SPACE: this node rebuilds its partition of a dead memory node's pages of one space.
/// The dead node's write-back log is read from the log nodes in parallel (LogReplay: each thread
/// takes every n-th segment from one of its replicas, the log node keeping only the entries of the
/// partition's slabs); of every key asked for, the version with the highest sequence number wins
/// (a later store, or a discard). Then, if the space is logged, the pages are appended to this
/// node's own write-back log before the answer, so a second death loses nothing either.
struct SpaceRecovery {
    let store: PageStore
    let logs: WriteBackLogs
    let coordinator: Endpoint
    let secret: ClusterSecret
    let log: Logger

    /// Threads reading the dead node's log, each from every log node in turn.
    static let replayThreads = 4

    struct Outcome {
        var pages: Int
        var entries: Int
        var seconds: Double
    }

    func run(_ r: RecoverSpace, owner: [UInt8]) throws -> Outcome {
        let started = monotonicNanos()
        try store.createSpace(r.space, owner: owner, ephemeral: r.ephemeral)
        // What this node may hold of those keys is older (their newest version was on the dead
        // node): a key the log does not give back must be missing here, never stale.
        _ = try store.discard(space: r.space, owner: owner, ranges: r.runs.map { ($0.first, $0.count) })
        let wanted = KeyRuns(r.runs)
        let dead = try LogWriter(config: .init(writer: r.deadLog, secret: secret, token: WriteBackLogEntry.token(writer: r.deadLog, secret: secret),
                                               coordinator: coordinator))
        let segments = dead.placement.map {
            LogReplay.SegmentReplicas(writer: r.deadLog, segment: $0.segment, replicas: $0.nodes, epochs: nil, slabs: r.slabs.sorted())
        }
        dead.close()
        let lock = Lock()
        // key -> the highest sequence number applied << 1, | 1 if it was a store (0 a discard)
        var newest: [UInt64: UInt64] = [:]
        var entries = 0
        try LogReplay(secret: secret, threads: Self.replayThreads).run(segments) { [store] _, _, payload in
            let e = try WriteBackLogEntry.parse(payload)
            try lock.withLock {
                entries += 1
                switch e {
                case .pages(let seq, let keys, let data):
                    var take: [UInt64] = [], from: [Int] = []
                    for (k, key) in keys.enumerated() where wanted.contains(key) && seq > (newest[key] ?? 0) >> 1 {
                        newest[key] = seq << 1 | 1
                        if PageTrace.on { PageTrace.note("REPLAY \(String(key, radix: 16)) seq\(seq)") }
                        take.append(key)
                        from.append(k)
                    }
                    guard !take.isEmpty else { return }
                    if take.count == keys.count {
                        try take.withUnsafeBufferPointer { try store.store(space: r.space, owner: owner, epoch: 0, vpns: $0, pages: data.baseAddress!) }
                    } else {
                        for (key, k) in zip(take, from) {
                            try [key].withUnsafeBufferPointer {
                                try store.store(space: r.space, owner: owner, epoch: 0, vpns: $0, pages: data.baseAddress! + k * Page.size)
                            }
                        }
                    }
                case .discard(let seq, let runs):
                    var gone: [(vpn: UInt64, count: UInt64)] = []
                    for run in runs {
                        // Only the keys asked for (a discard's run may span what other nodes hold).
                        for w in wanted.overlapping(run.first, run.count) {
                            for key in w.first..<w.first + w.count where seq > (newest[key] ?? 0) >> 1 {
                                newest[key] = seq << 1
                                gone.append((key, 1))
                            }
                        }
                    }
                    if !gone.isEmpty { _ = try store.discard(space: r.space, owner: owner, ranges: gone) }
                }
            }
        }
        let held = newest.compactMap { $0.value & 1 != 0 ? $0.key : nil }
        let replayed = monotonicNanos()
        if r.logged {
            _ = try logs.rewrite(space: r.space, vpns: held) { keys, present, out in
                try keys.withUnsafeBufferPointer { try store.fetch(space: r.space, owner: owner, vpns: $0, present: present, out: out) }
            }
        }
        let pages = held.count
        let seconds = Double(monotonicNanos() - started) / 1e9
        log.info("recovered \(pages) pages (\(formatSize(UInt64(pages * Page.size)))) of space \(String(r.space, radix: 16)) from \(segments.count) segments of log \(String(r.deadLog, radix: 16)), \(r.slabs.count) slabs, in \(String(format: "%.2f", seconds)) s (replay \(String(format: "%.2f", Double(replayed - started) / 1e9)) s)")
        return Outcome(pages: pages, entries: entries, seconds: seconds)
    }
}

/// Sorted, disjoint runs of keys, asked whether they hold a key.
struct KeyRuns {
    private let firsts: [UInt64]
    private let ends: [UInt64]

    init(_ runs: [PageRun]) {
        var merged: [(UInt64, UInt64)] = []
        for r in runs.sorted(by: { $0.first < $1.first }) {
            let end = r.first &+ r.count
            if let last = merged.last, r.first <= last.1 { merged[merged.count - 1].1 = max(last.1, end) } else { merged.append((r.first, end)) }
        }
        firsts = merged.map { $0.0 }
        ends = merged.map { $0.1 }
    }

    /// The index of the last run starting at or before `key` (nil: none).
    private func runAtOrBefore(_ key: UInt64) -> Int? {
        var lo = 0, hi = firsts.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if firsts[mid] <= key { lo = mid + 1 } else { hi = mid }
        }
        return lo == 0 ? nil : lo - 1
    }

    func contains(_ key: UInt64) -> Bool {
        guard let i = runAtOrBefore(key) else { return false }
        return key < ends[i]
    }

    /// The parts of [first, first+count) inside the runs.
    func overlapping(_ first: UInt64, _ count: UInt64) -> [PageRun] {
        let end = first &+ count
        var out: [PageRun] = []
        var i = runAtOrBefore(first) ?? 0
        while i < firsts.count && firsts[i] < end {
            let a = max(firsts[i], first), b = min(ends[i], end)
            if a < b { out.append(PageRun(first: a, count: b - a)) }
            i += 1
        }
        return out
    }
}
