import Glibc
import LegatoClients
import LegatoCore
import LegatoSystem

/// One RECOVER_SPACE: this node rebuilds its partition of a dead memory node's pages of one space.
/// The dead node's write-back log is read from the log nodes in parallel (LogReplay: each thread
/// takes every n-th segment from one of its replicas, the log node keeping only the entries of the
/// partition's slabs); of every key asked for, the version with the highest sequence number wins
/// (a later store, or a discard). Keys the dead node had itself rebuilt from an earlier dead node's
/// log and not yet logged (its fallbacks) count its entries only after that recovery's mark, and
/// are taken from the earlier log when it has none.
///
/// If the space is logged, the pages go to this node's own write-back log, so a second death loses
/// nothing either: before the answer, or with `logBehind` after it (`logBehind(_:)`, on the
/// caller's thread of choice), the answer then giving the log's mark: until they are logged, a
/// recovery of this node reads the dead node's log for them (the agent keeps it till then).
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
        /// With logBehind: this node's log mark, and the keys still to log.
        var mark: UInt64 = 0
        var unlogged: [UInt64] = []
    }

    func run(_ r: RecoverSpace, owner: [UInt8]) throws -> Outcome {
        let started = monotonicNanos()
        try store.createSpace(r.space, owner: owner, ephemeral: r.ephemeral)
        // What this node may hold of those keys is older (their newest version was on the dead
        // node): a key the log does not give back must be missing here, never stale.
        _ = try store.discard(space: r.space, owner: owner, ranges: r.runs.map { ($0.first, $0.count) })
        let wanted = KeyRuns(r.runs)
        let fallbacks = r.fallbacks.map { (runs: KeyRuns($0.runs), fallback: $0) }.sorted { $0.fallback.after > $1.fallback.after }
        // The newest fallback holding a key is the one that counts for it.
        func fallback(of key: UInt64) -> Int? { fallbacks.firstIndex { $0.runs.contains(key) } }
        var (newest, entries) = try replay(r, owner: owner, log: r.deadLog, wanted: wanted) { key in
            fallback(of: key).map { fallbacks[$0].fallback.after } ?? 0
        }
        for (i, f) in fallbacks.enumerated() {
            var missing: [UInt64] = []
            for run in f.fallback.runs {
                for w in wanted.overlapping(run.first, run.count) {
                    for key in w.first..<w.first + w.count where newest[key] == nil && fallback(of: key) == i { missing.append(key) }
                }
            }
            guard !missing.isEmpty else { continue }
            let (found, n) = try replay(r, owner: owner, log: f.fallback.log, wanted: KeyRuns(Self.runs(missing.sorted()))) { _ in 0 }
            newest.merge(found) { a, _ in a }
            entries += n
        }
        let held = newest.compactMap { $0.value & 1 != 0 ? $0.key : nil }
        let replayed = monotonicNanos()
        var outcome = Outcome(pages: held.count, entries: entries, seconds: 0)
        if r.logged && r.logBehind && r.fallbacks.isEmpty {
            outcome.mark = try logs.mark(space: r.space)
            outcome.unlogged = held
        } else if r.logged {
            _ = try logs.rewrite(space: r.space, vpns: held) { keys, present, out in
                try keys.withUnsafeBufferPointer { try store.fetch(space: r.space, owner: owner, vpns: $0, present: present, out: out) }
            }
        }
        outcome.seconds = Double(monotonicNanos() - started) / 1e9
        let how = outcome.unlogged.isEmpty ? "" : ", to be logged behind"
        log.info("recovered \(held.count) pages (\(formatSize(UInt64(held.count * Page.size)))) of space \(String(r.space, radix: 16)) from log \(String(r.deadLog, radix: 16))\(r.fallbacks.isEmpty ? "" : " and \(r.fallbacks.count) earlier logs"), \(r.slabs.count) slabs, in \(String(format: "%.2f", outcome.seconds)) s (replay \(String(format: "%.2f", Double(replayed - started) / 1e9)) s)\(how)")
        return outcome
    }

    /// Appends the pages a recovery with logBehind left unlogged to this node's write-back log.
    func logBehind(_ r: RecoverSpace, owner: [UInt8], keys: [UInt64]) throws {
        let started = monotonicNanos()
        let n = try logs.rewrite(space: r.space, vpns: keys) { keys, present, out in
            try keys.withUnsafeBufferPointer { try store.fetch(space: r.space, owner: owner, vpns: $0, present: present, out: out) }
        }
        log.info("logged the \(n) pages recovered from log \(String(r.deadLog, radix: 16)) in \(String(format: "%.2f", Double(monotonicNanos() - started) / 1e9)) s")
    }

    /// Replays `log`'s entries of the request's slabs for the keys of `wanted` into the store: the
    /// newest entry per key (an entry of key k counts only above sequence number `after(k)`).
    /// Returns key -> the sequence number applied << 1, | 1 if it was a store (0 a discard), and
    /// the entries read.
    private func replay(_ r: RecoverSpace, owner: [UInt8], log writer: UInt64, wanted: KeyRuns,
                        after: @escaping (UInt64) -> UInt64) throws -> ([UInt64: UInt64], Int) {
        let dead = try LogWriter(config: .init(writer: writer, secret: secret, token: WriteBackLogEntry.token(writer: writer, secret: secret),
                                               coordinator: coordinator))
        let segments = dead.placement.map {
            LogReplay.SegmentReplicas(writer: writer, segment: $0.segment, replicas: $0.nodes, epochs: nil, slabs: r.slabs.sorted())
        }
        dead.close()
        let lock = Lock()
        var newest: [UInt64: UInt64] = [:]
        var entries = 0
        try LogReplay(secret: secret, threads: Self.replayThreads).run(segments) { [store] _, _, payload in
            let e = try WriteBackLogEntry.parse(payload)
            try lock.withLock {
                entries += 1
                switch e {
                case .pages(let seq, let keys, let data):
                    var take: [UInt64] = [], from: [Int] = []
                    for (k, key) in keys.enumerated() where wanted.contains(key) && seq > (newest[key] ?? 0) >> 1 && seq > after(key) {
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
                            for key in w.first..<w.first + w.count where seq > (newest[key] ?? 0) >> 1 && seq > after(key) {
                                newest[key] = seq << 1
                                gone.append((key, 1))
                            }
                        }
                    }
                    if !gone.isEmpty { _ = try store.discard(space: r.space, owner: owner, ranges: gone) }
                }
            }
        }
        return (newest, entries)
    }

    /// Sorted keys as runs of consecutive keys.
    static func runs(_ keys: [UInt64]) -> [PageRun] {
        var out: [PageRun] = []
        for k in keys {
            if let last = out.last, last.first + last.count == k { out[out.count - 1].count += 1 } else { out.append(PageRun(first: k, count: 1)) }
        }
        return out
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
