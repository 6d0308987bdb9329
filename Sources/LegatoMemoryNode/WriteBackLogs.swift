import LegatoClients
import LegatoCore
import LegatoSegmentLog
import LegatoSystem

/// A memory node's write-back logs: for every address space whose stores ask for it (STORE_PAGES
/// with `logged`), a replicated log of its own on R log nodes that each such store is appended to
/// before it is acknowledged — held in the log nodes' memory and written to their disks in large
/// batches, never synced on the store path (RAMCloud's buffered logging). If this node dies, a
/// recovery rebuilds the space's pages on other nodes from it (SpaceRecovery).
///
/// Cleaning: each segment counts the keys whose current version it holds. A closed segment that
/// holds none is freed; when the closed segments hold more than twice the live pages (and 32 MiB),
/// the least-live one's live pages are appended anew from this node's copy, which is the current
/// version, and the segment is freed. The log keeps only what the live pages need: a checkpoint's
/// pages are in the checkpoint logs.
///
/// A space's appends and stores happen under its log's lock, so the log's order is the store's.
/// Thread-safe.
final class WriteBackLogs {
    private final class SpaceLog {
        let writer: LogWriter
        let lock = Lock()
        var nextSeq: UInt64 = 1
        var segmentOf: [UInt64: UInt64] = [:]   // key -> the segment holding its current version
        var live: [UInt64: Int] = [:]           // segment -> keys whose current version it holds
        init(writer: LogWriter) { self.writer = writer }

        /// Pages entries of one store, numbered `seq`: one per run of `keys` in one slab (key i's page
        /// at pages + i * 4096).
        func entries<Keys: RandomAccessCollection<UInt64>>(seq: UInt64, keys: Keys, pages: UnsafeRawPointer) -> [LogEntry] where Keys.Index == Int {
            var out: [LogEntry] = []
            var i = keys.startIndex
            while i < keys.endIndex {
                var j = i + 1
                while j < keys.endIndex && keys[j] >> WriteBackLogEntry.slabShift == keys[i] >> WriteBackLogEntry.slabShift { j += 1 }
                out.append(WriteBackLogEntry.pagesEntry(seq: seq, keys: keys[i..<j], pages: pages + (i - keys.startIndex) * Page.size))
                i = j
            }
            return out
        }

        /// The keys of `entries` (built by `entries` from `keys`) now have their current version
        /// where the append put each entry.
        func appended<Keys: RandomAccessCollection<UInt64>>(_ entries: [LogEntry], at positions: [LogWriter.Position], keys: Keys) where Keys.Index == Int {
            var i = keys.startIndex
            for (e, p) in zip(entries, positions) {
                let n = (e.payload.count - WriteBackLogEntry.headerSize) / (8 + Page.size)
                moved(keys[i..<i + n], to: p.segment)
                i += n
            }
        }

        /// `keys` now have their current version in `segment` (nil: they have none).
        func moved(_ keys: some Sequence<UInt64>, to segment: UInt64?) {
            for k in keys {
                if let old = segment.map({ segmentOf.updateValue($0, forKey: k) }) ?? segmentOf.removeValue(forKey: k) {
                    live[old, default: 1] -= 1
                }
                if let segment { live[segment, default: 0] += 1 }
            }
        }
    }

    struct Counters {
        var loggedPages = 0
        var loggedDiscards = 0
        var freedSegments = 0
        var rewrittenPages = 0
        var refusedAppends = 0
    }

    private let coordinator: Endpoint
    private let secret: ClusterSecret
    private let replicas: Int
    private let segmentBytes: Int
    /// This process's incarnation: a node started again is a new node, with new logs.
    let incarnation: UInt64
    private let lock = Lock()
    private var logs: [UInt64: SpaceLog] = [:]
    private var counters = Counters()
    private let log: Logger

    init(coordinator: Endpoint, secret: ClusterSecret, replicas: Int = 3, segmentBytes: Int = 8 << 20, log: Logger) {
        self.coordinator = coordinator
        self.secret = secret
        self.replicas = replicas
        self.segmentBytes = segmentBytes
        self.log = log
        incarnation = Sys.randomBytes(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
    }

    var stats: Counters { lock.withLock { counters } }

    /// The writer id of `space`'s write-back log here.
    func writerID(space: UInt64) -> UInt64 { WriteBackLogEntry.writer(incarnation: incarnation, space: space) }

    private func spaceLog(_ space: UInt64) throws -> SpaceLog {
        if let l = lock.withLock({ logs[space] }) { return l }
        let writer = writerID(space: space)
        let w = try LogWriter(config: .init(writer: writer, replicas: replicas, segmentBytes: segmentBytes, secret: secret,
                                            token: WriteBackLogEntry.token(writer: writer, secret: secret), coordinator: coordinator))
        w.startMonitoring()
        return lock.withLock {
            if let other = logs[space] {
                w.close()
                return other
            }
            let l = SpaceLog(writer: w)
            logs[space] = l
            return l
        }
    }

    /// The pages could not be logged: nothing was stored.
    struct AppendRefused: Error, CustomStringConvertible {
        let pages: Int
        let why: String
        var description: String { "logging \(pages) pages to the write-back log failed, so they were not stored: \(why)" }
    }

    /// Appends `vpns` (pages at `pages`) to `space`'s log, then `store`s them (both under the log's
    /// lock); a store that throws leaves its entry in the log, which nothing will read (the key's
    /// current version is not in it).
    func store(space: UInt64, vpns: UnsafeBufferPointer<UInt64>, pages: UnsafeRawPointer, store: () throws -> Void) throws {
        let l: SpaceLog
        do { l = try spaceLog(space) } catch {
            lock.withLock { counters.refusedAppends += 1 }
            throw AppendRefused(pages: vpns.count, why: "\(error)")
        }
        try l.lock.withLock {
            let seq = l.nextSeq
            l.nextSeq += 1
            let entries = l.entries(seq: seq, keys: vpns, pages: pages)
            let positions: [LogWriter.Position]
            do { positions = try l.writer.append(entries) } catch {
                lock.withLock { counters.refusedAppends += 1 }
                throw AppendRefused(pages: vpns.count, why: "\(error)")
            }
            try store()
            if PageTrace.on { PageTrace.note("LOG seq\(seq) \(PageTrace.keys(vpns)) at \(positions.map { "\($0.segment):\($0.index)" })") }
            l.appended(entries, at: positions, keys: vpns)
            lock.withLock { counters.loggedPages += vpns.count }
        }
        clean(space, l)
    }

    /// Logs a discard of `space`'s pages (best effort: a discard only frees room, and a log that
    /// misses one is freed with its space).
    func discard(space: UInt64, ranges: [(vpn: UInt64, count: UInt64)]) {
        guard let l = lock.withLock({ logs[space] }) else { return }
        l.lock.withLock {
            let seq = l.nextSeq
            l.nextSeq += 1
            var gone: [UInt64] = []
            for r in ranges {
                if r.count > UInt64(l.segmentOf.count) {
                    gone += l.segmentOf.keys.filter { $0 >= r.vpn && $0 < r.vpn &+ r.count }
                } else {
                    gone += (0..<r.count).map { r.vpn &+ $0 }.filter { l.segmentOf[$0] != nil }
                }
            }
            guard !gone.isEmpty else { return }
            do {
                try l.writer.append([WriteBackLogEntry.discardEntry(seq: seq, runs: ranges.map { ($0.vpn, $0.count) })])
                l.moved(gone, to: nil)
                lock.withLock { counters.loggedDiscards += 1 }
            } catch {
                log.warning("logging a discard of \(gone.count) pages of space \(String(space, radix: 16)): \(error)")
            }
        }
        clean(space, l)
    }

    /// Appends the current version of `vpns` (read by `read`, 256 at a time into a buffer) to
    /// `space`'s log: pages a recovery put here. The log's lock is taken per 256 pages, so stores
    /// go on meanwhile (each chunk reads and appends the current version under the lock: a store
    /// of one of its keys is logged wholly before or after it).
    func rewrite(space: UInt64, vpns: [UInt64], read: (ArraySlice<UInt64>, UnsafeMutablePointer<UInt8>, UnsafeMutableRawPointer) throws -> Int) throws -> Int {
        let l = try spaceLog(space)
        let sorted = vpns.sorted()
        var written = 0
        var at = 0
        while at < sorted.count {
            let chunk = Array(sorted[at..<min(sorted.count, at + 256)])
            at += chunk.count
            written += try l.lock.withLock { try rewriteLocked(l, chunk, read) }
        }
        return written
    }

    /// The sequence number of `space`'s last entry (its log is made if there is none): every
    /// entry appended from now on has a higher one.
    func mark(space: UInt64) throws -> UInt64 {
        let l = try spaceLog(space)
        return l.lock.withLock { l.nextSeq - 1 }
    }

    private func rewriteLocked(_ l: SpaceLog, _ vpns: [UInt64], _ read: (ArraySlice<UInt64>, UnsafeMutablePointer<UInt8>, UnsafeMutableRawPointer) throws -> Int) throws -> Int {
        let chunk = 256
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunk * Page.size, alignment: Page.size)
        let present = UnsafeMutablePointer<UInt8>.allocate(capacity: chunk)
        defer {
            buffer.deallocate()
            present.deallocate()
        }
        let sorted = vpns.sorted()
        var written = 0
        var at = 0
        while at < sorted.count {
            let keys = sorted[at..<min(sorted.count, at + chunk)]
            at += keys.count
            let found = try read(keys, present, buffer)
            var held: [UInt64] = []
            held.reserveCapacity(found)
            for (k, key) in keys.enumerated() where present[k] != 0 { held.append(key) }
            guard !held.isEmpty else { continue }
            let seq = l.nextSeq
            l.nextSeq += 1
            let entries = l.entries(seq: seq, keys: held, pages: buffer)
            if PageTrace.on { PageTrace.note("REWRITE seq\(seq) \(PageTrace.keys(held))") }
            l.appended(entries, at: try l.writer.append(entries), keys: held)
            written += held.count
        }
        return written
    }

    /// The store's reader for `rewrite`: current versions of `space`'s pages.
    var readCurrent: ((UInt64, ArraySlice<UInt64>, UnsafeMutablePointer<UInt8>, UnsafeMutableRawPointer) throws -> Int)?

    /// Frees closed segments with no live key; rewrites the least-live one when the log holds
    /// more than twice its live pages.
    private func clean(_ space: UInt64, _ l: SpaceLog) {
        l.lock.withLock {
            let sizes = l.writer.segmentSizes
            let empty = Set(sizes.filter { $0.closed && (l.live[$0.segment] ?? 0) <= 0 }.map { $0.segment })
            if !empty.isEmpty {
                PageTrace.note("FREE \(empty.sorted())")
                l.writer.free(segments: empty)
                for s in empty { l.live[s] = nil }
                lock.withLock { counters.freedSegments += empty.count }
            }
            let closed = sizes.filter { $0.closed && !empty.contains($0.segment) }
            let closedBytes = closed.reduce(0) { $0 + $1.bytes }
            let liveBytes = l.segmentOf.count * Page.size
            guard closedBytes > 2 * liveBytes && closedBytes > 32 << 20, let read = readCurrent,
                  let victim = closed.min(by: { (l.live[$0.segment] ?? 0) < (l.live[$1.segment] ?? 0) }) else { return }
            let keys = l.segmentOf.compactMap { $0.value == victim.segment ? $0.key : nil }
            do {
                let n = try rewriteLocked(l, keys) { try read(space, $0, $1, $2) }
                l.writer.free(segments: [victim.segment])
                l.live[victim.segment] = nil
                lock.withLock {
                    counters.rewrittenPages += n
                    counters.freedSegments += 1
                }
            } catch {
                log.warning("cleaning segment \(victim.segment) of the write-back log of space \(String(space, radix: 16)): \(error)")
            }
        }
    }

    /// Gives up `space`'s log (the space was dropped, or its owner left: nothing recovers it then).
    func drop(space: UInt64) {
        guard let l = lock.withLock({ logs.removeValue(forKey: space) }) else { return }
        l.lock.withLock {
            l.writer.freeAll()
            l.writer.close()
        }
    }

    /// The logs' size: live keys and payload bytes over every space.
    var totals: (spaces: Int, liveKeys: Int, bytes: Int) {
        let all = lock.withLock { Array(logs.values) }
        var keys = 0, bytes = 0
        for l in all {
            l.lock.withLock {
                keys += l.segmentOf.count
                bytes += l.writer.segmentSizes.reduce(0) { $0 + $1.bytes }
            }
        }
        return (all.count, keys, bytes)
    }
}
