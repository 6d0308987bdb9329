import Foundation
import Glibc
import LegatoCore
import LegatoSegmentLog
import LegatoSystem

/// The log node's segment replicas: buffered in memory, written to disk in large batches (when the
/// buffer budget is passed, when a writer asks for sync, when the segment closes), rebuilt from disk
/// at start. Thread-safe (one lock).
///
/// Contract: `append` returns once the entries are in this node's buffer (or on disk): "stored", not
/// durable. `sync` returns once everything appended is on disk and fsync'd. Nothing is acknowledged
/// that is not stored; on a full disk or an I/O error the writer gets the error and reads go on.
public final class ReplicaStore {
    public typealias Key = ReplicaKey

    public enum StoreError: Error, CustomStringConvertible, Equatable {
        case noSuchReplica(Key)
        case alreadyExists(Key)
        case notOwner(Key)
        case closed(Key)
        case outOfOrder(Key, expected: UInt32, got: UInt32)
        case diskFull(Key, String)
        case ioError(Key, String)
        case bufferFull(Key, String)
        case busy(Key)
        case badEntry(Key, String)

        public var description: String {
            switch self {
            case .noSuchReplica(let k): return "no replica of \(k) here"
            case .alreadyExists(let k): return "a replica of \(k) exists already"
            case .notOwner(let k): return "the replica of \(k) belongs to another writer"
            case .closed(let k): return "the replica of \(k) is closed"
            case .outOfOrder(let k, let e, let g): return "append to \(k) starts at entry \(g), expected \(e)"
            case .diskFull(let k, let why): return "disk full storing \(k): \(why)"
            case .ioError(let k, let why): return "I/O error storing \(k): \(why)"
            case .bufferFull(let k, let why): return "buffer full (\(why)): cannot take more of \(k)"
            case .busy(let k): return "an append to \(k) is still arriving"
            case .badEntry(let k, let why): return "append to \(k) refused: \(why)"
            }
        }
    }

    struct EntryRef {
        var offset: UInt64   // file offset of the entry header (>= fileLength: still in the buffer)
        var header: SegmentFormat.EntryHeader
    }

    final class Replica {
        let lock = Lock()
        let key: Key
        let path: String
        var owner: [UInt8]
        var fd: Int32 = -1
        var onDisk = true       // false until the file of a replica opened here is created
        var entries: [EntryRef] = []
        var fileLength: UInt64 = 0
        var syncedLength: UInt64 = 0
        var buffer = ReplicaBuffer()
        var closed = false
        var digest: UInt32 = 0
        var dataBytes: UInt64 = 0
        var corrupt = 0
        var ioError: String?
        var receivingAt: Int?   // an append being received straight into the buffer, at this offset
        var lastAppendNanos = monotonicNanos()
        init(key: Key, path: String, owner: [UInt8]) {
            self.key = key
            self.path = path
            self.owner = owner
        }
        var totalLength: UInt64 { fileLength + UInt64(buffer.count) }
    }

    public let directory: String
    public let bufferLimit: Int
    /// Appends wait while this much is buffered: a writer faster than the disk must not grow the
    /// node's memory without bound (the flusher starts at `bufferLimit`).
    public var hardLimit: Int { bufferLimit > Int.max / 2 ? Int.max : 2 * bufferLimit }
    /// How long an append waits for the flusher to make room before it is refused.
    public var roomTimeoutSeconds = 20.0
    /// Buffers of written-out replicas are kept for new ones, up to `bufferLimit` in all, until the
    /// node has taken no append for this long.
    public var spareIdleSeconds = 10.0
    private let log: Logger
    private let lock = Lock()
    private var replicas: [Key: Replica] = [:]
    private var buffered = 0
    private var bufferedPeak = 0
    private var closedQueue: [Replica] = []
    private var spareBuffers: [ReplicaBuffer] = []  // storage of written-out replicas, reused by new ones
    private var lastAppendNanos: UInt64 = 0
    private var stopping = false

    // counters
    public private(set) var tornTails = 0
    public private(set) var corruptEntries = 0
    public private(set) var quarantinedFiles = 0
    public private(set) var flushes = 0
    public private(set) var bytesWritten: UInt64 = 0
    public private(set) var ioErrors = 0
    public private(set) var appendWaits = 0
    /// Replicas opened on fresh buffer storage (no spare buffer was free): each costs zeroing it.
    public private(set) var freshBuffers = 0

    public init(directory: String, bufferLimit: Int, log: Logger) throws {
        self.directory = directory
        self.bufferLimit = bufferLimit
        self.log = log
        try FileManager.default.createDirectory(atPath: directory + "/replicas", withIntermediateDirectories: true)
        try recover()
        startThread(name: "flusher") { [self] in flusherLoop() }
    }

    static func ownerTag(_ token: [UInt8]) -> [UInt8] {
        Array(Sys.hmacSHA256(key: Array("legato-replica-owner".utf8), data: token).prefix(16))
    }

    private func path(_ k: Key) -> String {
        directory + "/replicas/" + hex16(k.writer) + "/" + hex16(k.segment) + ".seg"
    }

    // MARK: writer operations
    //
    // Locking: `lock` guards the catalogue, the buffered-bytes total and the counters; each replica's
    // own lock guards its buffer and file. Order: a replica's lock may be held while `lock` is taken,
    // never the other way round. Disk writes hold only the replica's lock, so other writers go on.

    private func lookup(_ k: Key) throws -> Replica {
        guard let r = lock.withLock({ replicas[k] }) else { throw StoreError.noSuchReplica(k) }
        return r
    }

    private func adjustBuffered(_ delta: Int) {
        lock.withLock { changeBuffered(by: delta) }
    }

    /// The one place the buffered total changes (store lock held): keeps its peak, and wakes the
    /// flusher when over the budget, appends waiting for room when it went down.
    private func changeBuffered(by delta: Int) {
        buffered += delta
        bufferedPeak = max(bufferedPeak, buffered)
        if buffered > bufferLimit || delta < 0 { lock.broadcast() }
    }

    /// Waits (without a replica's lock) until `bytes` more fit under `hardLimit`, or refuses the
    /// append once it has waited `roomTimeoutSeconds` (shorter than a writer's I/O timeout, so that
    /// the writer hears why) or when the node is stopping. Returns whether more than the budget is
    /// buffered then.
    private func waitForRoom(_ k: Key, _ bytes: Int) throws -> Bool {
        try lock.withLock {
            if stopping { throw StoreError.bufferFull(k, "the log node is stopping") }
            // (At most the budget buffered: the flusher is not at work, and one append may go over.)
            guard buffered > bufferLimit && buffered + bytes > hardLimit else { return buffered > bufferLimit }
            appendWaits += 1
            lock.broadcast()
            let deadline = monotonicNanos() + UInt64(max(0, min(roomTimeoutSeconds, 3600)) * 1e9)
            while buffered > bufferLimit && buffered + bytes > hardLimit {
                if stopping { throw StoreError.bufferFull(k, "the log node is stopping") }
                let now = monotonicNanos()
                if now >= deadline {
                    throw StoreError.bufferFull(k, "\(buffered >> 20) MiB buffered and the disk has not made room in \(Int(roomTimeoutSeconds)) s")
                }
                lock.wait(seconds: min(1, Double(deadline - now) / 1e9))
            }
            return buffered > bufferLimit
        }
    }

    public func open(_ k: Key, token: [UInt8]) throws {
        let tag = Self.ownerTag(token)
        // (A replica's lock is never taken with the store's lock held.)
        if let r = lock.withLock({ replicas[k] }) {
            // Opening again (a retried request) by the same writer is fine while it is empty.
            let ok = r.lock.withLock { r.owner == tag && r.entries.isEmpty && !r.closed }
            guard ok else { throw StoreError.alreadyExists(k) }
            return
        }
        // The file is created when the buffer is first written out (see createFile): an open replica
        // is only "stored" in memory until then, and creating a file on a disk busy with other
        // replicas' writes took 0.3-0.4 ms, half of what an OPEN cost.
        try lock.withLock {
            if replicas[k] != nil { throw StoreError.alreadyExists(k) }
            let r = Replica(key: k, path: path(k), owner: tag)
            let header = SegmentFormat.encodeHeader(writer: k.writer, segment: k.segment,
                                                    created: UInt64(Date().timeIntervalSince1970 * 1e9), ownerTag: tag)
            r.onDisk = false
            if let spare = popSpare() {
                r.buffer = spare
            } else {
                freshBuffers += 1
                r.buffer.reserve(9 << 20)  // a segment and its headers: no regrowth
            }
            header.withUnsafeBytes { r.buffer.append($0) }
            changeBuffered(by: header.count)
            replicas[k] = r
        }
    }

    /// Appends entries starting at index `first` (the replica's entry count: appends are in order;
    /// a retried append of entries already here is accepted). Returns (entries, bytes) after it.
    public func append(_ k: Key, token: [UInt8], first: UInt32, entries: [LogEntry]) throws -> (UInt32, UInt64) {
        let raw = LogEntry.encode(entries[...], first: first)
        return try raw.withUnsafeBytes { try append(k, token: token, first: first, count: entries.count, raw: $0) }
    }

    /// Appends `n` entries already in their on-disk form (header with index and CRC, then payload),
    /// as a writer sends them: each is checked (index in sequence, data type, CRC) before any is taken.
    public func append(_ k: Key, token: [UInt8], first: UInt32, count n: Int, raw: UnsafeRawBufferPointer) throws -> (UInt32, UInt64) {
        guard let room = try beginAppend(k, token: token, first: first, count: n, bytes: raw.count) else {
            return try storedCounts(k)
        }
        if raw.count > 0 { room.pointer.copyMemory(from: raw.baseAddress!, byteCount: raw.count) }
        var check = EntryCheck(first: first, count: n)
        check.feed(raw)
        return try finishAppend(room, bytes: raw.count, received: true, check: check)
    }

    /// Room given out for an append being received: the replica (kept alive while the bytes arrive),
    /// where in its buffer the room starts, and the memory to write them to.
    struct AppendRoom {
        let replica: Replica
        let at: Int
        let pointer: UnsafeMutableRawPointer
    }

    /// An append received in place, step one: room for `bytes` of entries (on-disk form) at the end
    /// of the replica's buffer, where the caller puts them before `finishAppend`. Nil for a retried
    /// append whose entries are all here already (nothing to receive into). One at a time per replica;
    /// the replica cannot be closed or freed until `finishAppend` lets the room go.
    func beginAppend(_ k: Key, token: [UInt8], first: UInt32, count n: Int, bytes: Int) throws -> AppendRoom? {
        let r = try lookup(k)
        guard n > 0 || bytes == 0 else { throw StoreError.badEntry(k, "an append of no entries carries \(bytes) bytes") }
        // What needs no room is answered at once (a retry of what is stored, a refusal); only then
        // does the append wait for room, and everything is checked again after the wait.
        let overLimit = lock.withLock { () -> Bool in
            lastAppendNanos = monotonicNanos()
            return buffered > bufferLimit
        }
        guard try r.lock.withLock({ try admits(r, k, token, first, n, overLimit) }) else { return nil }
        let overAfterWait = try waitForRoom(k, bytes)
        return try r.lock.withLock {
            guard try admits(r, k, token, first, n, overAfterWait) else { return nil }
            if r.buffer.capacity == 0, let spare = lock.withLock({ popSpare() }) {
                r.buffer = spare  // its storage was given back while the writer was away (releaseIdleBuffers)
            }
            r.receivingAt = r.buffer.count
            return AppendRoom(replica: r, at: r.buffer.count, pointer: r.buffer.room(bytes))
        }
    }

    /// Whether an append of entries first..<first+n to r needs room: false when they are all stored
    /// already (a retry); throws for an append refused. Replica lock held.
    private func admits(_ r: Replica, _ k: Key, _ token: [UInt8], _ first: UInt32, _ n: Int, _ overLimit: Bool) throws -> Bool {
        try check(r, token)
        let have = UInt32(r.entries.count)
        if n == 0 {  // nothing to take in: answered with the counts, like a retry
            guard first <= have else { throw StoreError.outOfOrder(k, expected: have, got: first) }
            return false
        }
        if first < have {
            guard first + UInt32(n) <= have else { throw StoreError.outOfOrder(k, expected: have, got: first) }
            return false
        }
        guard first == have else { throw StoreError.outOfOrder(k, expected: have, got: first) }
        guard r.receivingAt == nil else { throw StoreError.busy(k) }
        if r.ioError != nil && overLimit { throw StoreError.bufferFull(k, "the disk refuses writes") }
        return true
    }

    /// Step two: takes in the entries received at the room `beginAppend` gave, as `check` (fed with
    /// all `bytes` of them) found them, or lets the room go if `received` is false. A bad entry
    /// refuses the whole append; nothing of it is kept.
    func finishAppend(_ room: AppendRoom, bytes: Int, received: Bool, check: EntryCheck) throws -> (UInt32, UInt64) {
        let (k, r) = (room.replica.key, room.replica)
        let (result, delta): ((UInt32, UInt64), Int) = try r.lock.withLock {
            guard let at = r.receivingAt, at == room.at else { throw StoreError.busy(k) }
            r.receivingAt = nil
            guard received else { return ((UInt32(r.entries.count), r.totalLength), 0) }
            let refs: [EntryRef]
            switch check.result(total: bytes) {
            case .success(let checked): refs = checked
            case .failure(let e): throw StoreError.badEntry(k, e.description)
            }
            let base = r.totalLength
            r.buffer.adopt(at: at, bytes)
            r.lastAppendNanos = monotonicNanos()
            for var ref in refs {
                ref.offset += base
                r.entries.append(ref)
                r.digest = Sys.crc32c(r.digest, withUnsafeBytes(of: ref.header.crc.littleEndian) { $0 })
                r.dataBytes += UInt64(ref.header.length)
            }
            return ((UInt32(r.entries.count), r.totalLength), bytes)
        }
        adjustBuffered(delta)
        return result
    }

    private func storedCounts(_ k: Key) throws -> (UInt32, UInt64) {
        let r = try lookup(k)
        return r.lock.withLock { (UInt32(r.entries.count), r.totalLength) }
    }

    /// Writes the replica's buffer to disk and fsyncs it.
    public func sync(_ k: Key, token: [UInt8]) throws {
        let r = try lookup(k)
        var written = 0
        defer { adjustBuffered(-written) }
        try r.lock.withLock {
            try check(r, token, allowClosed: true)
            written = try flushLocked(r, fsync: true)
        }
    }

    /// Ends the replica with its footer; it takes no more appends. The footer is "stored" (buffered)
    /// on return; the flusher writes the replica out and fsyncs it right after (`sync` waits for that).
    public func close(_ k: Key, token: [UInt8]) throws {
        let r = try lookup(k)
        let delta: Int = try r.lock.withLock {
            try check(r, token, allowClosed: true)
            if r.closed { return 0 }
            if r.receivingAt != nil { throw StoreError.busy(k) }
            let footer = SegmentFormat.footerPayload(entries: UInt32(r.entries.count), bytes: r.dataBytes, digest: r.digest)
            let before = r.buffer.count
            footer.withUnsafeBytes {
                _ = r.buffer.appendEntry(type: SegmentFormat.EntryType.footer.rawValue, flags: 0, epoch: 0,
                                         slab: 0, index: UInt32(r.entries.count), payload: $0)
            }
            r.closed = true
            return r.buffer.count - before
        }
        lock.withLock {
            changeBuffered(by: delta)
            closedQueue.append(r)
            lock.broadcast()
        }
    }

    public func free(_ k: Key, token: [UInt8]) throws {
        let r = try lookup(k)
        let dropped: Int = try r.lock.withLock {
            guard r.owner == Self.ownerTag(token) else { throw StoreError.notOwner(k) }
            if r.receivingAt != nil { throw StoreError.busy(k) }  // its buffer is being written to
            if r.fd >= 0 { Glibc.close(r.fd) }
            r.fd = -1
            if r.onDisk { unlink(r.path) }
            defer { r.buffer.removeAll() }
            return r.buffer.count
        }
        lock.withLock {
            changeBuffered(by: -dropped)
            replicas[k] = nil
            closedQueue.removeAll { $0 === r }
        }
    }

    /// Owner and state checks (replica lock held).
    private func check(_ r: Replica, _ token: [UInt8], allowClosed: Bool = false) throws {
        guard r.owner == Self.ownerTag(token) else { throw StoreError.notOwner(r.key) }
        if r.closed && !allowClosed { throw StoreError.closed(r.key) }
    }

    // MARK: the flusher

    /// Writes closed replicas out (and fsyncs them), and the largest buffers when the budget is passed.
    private func flusherLoop() {
        var lastSweep = monotonicNanos()
        func sweepDue() -> Bool { Double(monotonicNanos() &- lastSweep) / 1e9 > max(0.05, spareIdleSeconds / 2) }
        while true {
            if sweepDue() {  // busy or not: a busy node must not keep a gone writer's buffer either
                lastSweep = monotonicNanos()
                releaseIdleBuffers()
                lock.withLock { trimIdleSpares() }
            }
            let (closed, over): ([Replica], Bool) = lock.withLock {
                while closedQueue.isEmpty && buffered <= bufferLimit && !stopping && !sweepDue() {
                    lock.wait(seconds: 1)
                }
                if stopping { return ([], false) }
                let c = closedQueue
                closedQueue.removeAll()
                return (c, buffered > bufferLimit)
            }
            if lock.withLock({ stopping }) { return }
            if closed.isEmpty && !over { continue }
            var progress = 0
            for r in closed {
                var written = 0
                r.lock.withLock {
                    do {
                        written = try flushLocked(r, fsync: true)
                        if r.closed && r.buffer.isEmpty && r.fd >= 0 {
                            Glibc.close(r.fd)
                            r.fd = -1
                        }
                    } catch {
                        log.error("writing closed \(r.key): \(error)")
                    }
                }
                adjustBuffered(-written)
                progress += written
            }
            if over { progress += flushLargest() }
            // A disk that refuses writes: do not spin on it (one that is only slow is written on at once).
            if progress == 0 && lock.withLock({ buffered > bufferLimit }) { usleep(50_000) }
        }
    }

    /// The storage of an open replica whose buffer was written out (a sync, or the budget passed) and
    /// which has had no append for `spareIdleSeconds` goes to the spare pool: a writer that never
    /// comes back must not pin a segment's worth of memory. An append later grows a new buffer.
    /// A replica whose lock is held (an append, or a sync waiting on the disk) is not idle: it is
    /// passed over until the next sweep rather than waited for, so the flusher never stalls here.
    private func releaseIdleBuffers() {
        let now = monotonicNanos()
        for r in lock.withLock({ Array(replicas.values) }) {
            r.lock.withLockIfFree {
                guard !r.closed, r.buffer.isEmpty, r.buffer.capacity > 0, r.receivingAt == nil,
                      idleLongEnough(since: r.lastAppendNanos, now: now) else { return }
                recycle(r)
            }
        }
    }

    /// A spare buffer, emptied, if one is free. Store lock held.
    private func popSpare() -> ReplicaBuffer? {
        guard let spare = spareBuffers.popLast() else { return nil }
        spare.removeAll()
        return spare
    }

    /// Whether more than `spareIdleSeconds` have passed since `nanos` (monotonic).
    private func idleLongEnough(since nanos: UInt64, now: UInt64 = monotonicNanos()) -> Bool {
        Double(now &- nanos) / 1e9 > spareIdleSeconds
    }

    /// After `spareIdleSeconds` without appends, spare buffers beyond one go back to the system.
    /// Store lock held.
    private func trimIdleSpares() {
        guard spareBuffers.count > 1, idleLongEnough(since: lastAppendNanos) else { return }
        spareBuffers.removeLast(spareBuffers.count - 1)
    }

    /// Writes the largest buffers out until half the budget is buffered; returns the bytes written.
    private func flushLargest() -> Int {
        let target = bufferLimit / 2
        var total = 0
        let candidates = lock.withLock { Array(replicas.values) }
            .map { r in (r, r.lock.withLock { r.ioError == nil ? r.buffer.count : 0 }) }
            .filter { $0.1 > 0 }
            .sorted { $0.1 > $1.1 }
        for (r, _) in candidates {
            if lock.withLock({ buffered <= target }) { break }
            var written = 0
            r.lock.withLock {
                do { written = try flushLocked(r, fsync: false) } catch { log.error("writing the buffer of \(r.key): \(error)") }
            }
            adjustBuffered(-written)
            total += written
        }
        return total
    }

    /// Stops the flusher and writes every buffer out, fsync'd (a clean shutdown loses nothing).
    public func shutdown() {
        lock.withLock {
            stopping = true
            lock.broadcast()
        }
        for r in lock.withLock({ Array(replicas.values) }) {
            var written = 0
            r.lock.withLock {
                do { written = try flushLocked(r, fsync: true) } catch { log.error("writing \(r.key) at shutdown: \(error)") }
            }
            adjustBuffered(-written)
        }
    }

    // MARK: reads (any authenticated peer: recovery reads another writer's log)

    public func holds(_ k: Key) -> Bool { lock.withLock { replicas[k] != nil } }

    public func list(writer: UInt64) -> [ReplicaInfo] {
        lock.withLock { replicas.values.filter { $0.key.writer == writer } }.sorted { $0.key.segment < $1.key.segment }.map { r in
            r.lock.withLock {
                ReplicaInfo(segment: r.key.segment, entries: UInt32(r.entries.count), bytes: r.dataBytes, closed: r.closed, corrupt: UInt32(r.corrupt))
            }
        }
    }

    public struct ReadResult {
        public var entries: [(index: UInt32, entry: LogEntry)]
        public var next: UInt32
        public var end: Bool        // no entries after `next` (now)
        public var closed: Bool
        public var corruptSkipped: UInt32
    }

    /// What `readRaw` put in its buffer: `count` entries in `bytes` bytes from offset `start`.
    public struct RawRead {
        public var count: Int
        public var start: Int       // offset of the first entry in the buffer
        public var bytes: Int
        public var next: UInt32     // the index to ask for next
        public var end: Bool        // no entries after `next` (now)
        public var closed: Bool
        public var corruptSkipped: UInt32
    }

    /// Entries from index `first` on (only those of `slabs`, if given), at most `maxEntries` and about `maxBytes`,
    /// decoded into values. See `readRaw`.
    public func read(_ k: Key, first: UInt32, maxEntries: Int, maxBytes: Int, slabs: Set<UInt64>?) throws -> ReadResult {
        let buffer = ScratchBuffer()
        let raw = try readRaw(k, first: first, maxEntries: maxEntries, maxBytes: maxBytes, slabs: slabs, into: buffer)
        var out: [(UInt32, LogEntry)] = []
        out.reserveCapacity(raw.count)
        try SegmentFormat.forEachEntry(in: buffer.bytes(raw.start, raw.bytes), count: raw.count) { h, payload in
            out.append((h.index, LogEntry(type: h.type, epoch: h.epoch, slab: h.slab, payload: Array(payload))))
        }
        return ReadResult(entries: out, next: raw.next, end: raw.end, closed: raw.closed, corruptSkipped: raw.corruptSkipped)
    }

    /// Entries from index `first` on, in their on-disk form (32-byte header + payload) back to back
    /// in `out` from the returned `start`, ready to be sent as they are. It looks at most `maxEntries` entries and about
    /// `maxBytes` bytes (at least one entry), keeps those of `slabs` (all if nil), and checks each against
    /// its CRC: one that fails is skipped, logged and counted, never returned. The entries on disk are read
    /// with one pread.
    public func readRaw(_ k: Key, first: UInt32, maxEntries: Int, maxBytes: Int, slabs: Set<UInt64>?,
                        into out: ScratchBuffer) throws -> RawRead {
        let r = try lookup(k)
        return try r.lock.withLock {
            let start = min(Int(first), r.entries.count)
            var end = start, span = 0
            while end < r.entries.count && end - start < max(1, maxEntries) && (span < maxBytes || end == start) {
                span += SegmentFormat.entryHeaderSize + Int(r.entries[end].header.length)
                end += 1
            }
            var diskEnd = start
            while diskEnd < end && r.entries[diskEnd].offset < r.fileLength { diskEnd += 1 }
            func extent(_ ref: EntryRef) -> UInt64 { ref.offset + UInt64(SegmentFormat.entryHeaderSize) + UInt64(ref.header.length) }

            // Load: the disk part (with any gaps a recovery cut out), then the buffered part after it.
            let diskBase = start < diskEnd ? r.entries[start].offset : 0
            let diskLength = start < diskEnd ? Int(extent(r.entries[diskEnd - 1]) - diskBase) : 0
            let memBase = diskEnd < end ? Int(r.entries[diskEnd].offset - r.fileLength) : 0
            let memLength = diskEnd < end ? Int(extent(r.entries[end - 1]) - r.fileLength) - memBase : 0
            // The disk part lands `head` bytes into the buffer (an O_DIRECT read starts on a page).
            var head = Int(diskBase & 4095)
            out.reserve(head + diskLength + memLength + 4096)
            if try diskLength > 0 && !readDiskDirect(r, into: out.base, at: diskBase - UInt64(head), need: head + diskLength) {
                head = 0
                try readDisk(r, into: out.base, at: diskBase, need: diskLength)
            }
            if memLength > 0 { (out.base + head + diskLength).copyMemory(from: r.buffer.base! + memBase, byteCount: memLength) }

            // Check and compact in place: kept entries slide down over skipped ones (the first stays
            // where the read put it: no copy of the whole read for the sake of its offset).
            var kept = 0, written = head
            var skipped: UInt32 = 0
            for i in start..<end {
                let ref = r.entries[i]
                if let s = slabs, !s.contains(ref.header.slab) { continue }
                let at = head + (i < diskEnd ? Int(ref.offset - diskBase) : diskLength + Int(ref.offset - r.fileLength) - memBase)
                let total = SegmentFormat.entryHeaderSize + Int(ref.header.length)
                let ok = SegmentFormat.verify(header: UnsafeRawBufferPointer(start: out.base + at, count: SegmentFormat.entryHeaderSize),
                                              payload: UnsafeRawBufferPointer(start: out.base + at + SegmentFormat.entryHeaderSize,
                                                                              count: Int(ref.header.length)),
                                              claimed: ref.header.crc)
                guard ok else {
                    skipped += 1
                    lock.withLock { corruptEntries += 1 }
                    log.error("entry \(ref.header.index) of \(r.key) fails its checksum; not returned")
                    continue
                }
                if at != written { memmove(out.base + written, out.base + at, total) }
                written += total
                kept += 1
            }
            return RawRead(count: kept, start: head, bytes: written - head, next: UInt32(end), end: end >= r.entries.count,
                           closed: r.closed, corruptSkipped: skipped)
        }
    }

    /// Reads `need` bytes of r's file at offset `at` into `dst` through the page cache (where
    /// O_DIRECT is refused), WILLNEED over the whole span first. Replica lock held.
    private func readDisk(_ r: Replica, into dst: UnsafeMutableRawPointer, at: UInt64, need: Int) throws {
        let fd = r.fd >= 0 ? r.fd : Glibc.open(r.path, O_RDONLY | O_CLOEXEC)
        defer { if r.fd < 0 && fd >= 0 { Glibc.close(fd) } }
        _ = posix_fadvise(fd, off_t(at), off_t(need), POSIX_FADV_WILLNEED)
        try preadFully(r, fd, into: dst, at: at, need: need, asking: need)
    }

    /// preads from `at` until at least `need` bytes are in, asking for `asking` (≥ need) in all.
    private func preadFully(_ r: Replica, _ fd: Int32, into dst: UnsafeMutableRawPointer, at: UInt64, need: Int, asking: Int) throws {
        var done = 0
        while done < need {
            let got = fd < 0 ? -1 : pread(fd, dst + done, asking - done, off_t(at) + off_t(done))
            if got < 0 && errno == EINTR { continue }
            guard got > 0 else {
                let why = got < 0 ? Errno.name(errno) : "end of file"
                log.error("reading \(need) bytes of \(r.key) at \(at): \(why)")
                throw StoreError.ioError(r.key, "reading \(need) bytes at offset \(at): \(why)")
            }
            done += got
        }
    }

    /// Reads as readDisk, with O_DIRECT: `at` is page-aligned, `need` is read rounded up to pages (the
    /// file may end before: at least `need` must come), `dst` page-aligned. False if the file system
    /// refuses O_DIRECT. Measured on a restore of 1 GiB from three log nodes, with the replica
    /// reader's read-ahead thread keeping a request in flight: 0.81-0.91 s against 1.0-1.2 s through
    /// the page cache, and 1.4-1.5 s against 1.7-2.1 s the first time freshly written segments are
    /// read. Replica lock held.
    private func readDiskDirect(_ r: Replica, into dst: UnsafeMutableRawPointer, at: UInt64, need: Int) throws -> Bool {
        let fd = Glibc.open(r.path, O_RDONLY | O_CLOEXEC | 0o40000)  // O_DIRECT
        if fd < 0 && errno == EINVAL { return false }
        guard fd >= 0 else { throw StoreError.ioError(r.key, "open for reading: \(Errno.name(errno))") }
        defer { Glibc.close(fd) }
        try preadFully(r, fd, into: dst, at: at, need: need, asking: (need + 4095) & ~4095)
        return true
    }

    // MARK: writing buffers out

    /// Writes r's buffer at the end of its file (cutting a partial write back to an entry boundary);
    /// returns how many buffered bytes went to the file. Replica lock held.
    private func flushLocked(_ r: Replica, fsync wantSync: Bool) throws -> Int {
        var moved = 0
        if !r.buffer.isEmpty { try createFile(r) }
        if !r.buffer.isEmpty && directWrite(r) {
            moved = r.buffer.count
            r.fileLength += UInt64(moved)
            recycle(r)
            r.ioError = nil
            lock.withLock {
                bytesWritten += UInt64(moved)
                flushes += 1
            }
        }
        if !r.buffer.isEmpty {
            if r.fd < 0 { r.fd = Glibc.open(r.path, O_RDWR | O_CLOEXEC) }
            var done = 0
            var failure: Int32 = 0
            while done < r.buffer.count {
                let n = pwrite(r.fd, r.buffer.base! + done, r.buffer.count - done, off_t(r.fileLength) + off_t(done))
                if n > 0 { done += n; continue }
                if n < 0 && errno == EINTR { continue }
                failure = n < 0 ? errno : ENOSPC
                break
            }
            if failure != 0 {
                // Keep only whole entries on disk; the rest stays buffered (and acknowledged only as such).
                let boundary = lastBoundary(r, upTo: r.fileLength + UInt64(done))
                let kept = Int(boundary - r.fileLength)
                _ = ftruncate(r.fd, off_t(boundary))
                r.buffer.removeFirst(kept)
                r.fileLength = boundary
                adjustBuffered(-kept)
                throw ioFailure(r, failure, "\(Errno.name(failure)) writing \(r.path) at \(boundary)")
            }
            r.fileLength += UInt64(done)
            moved = done
            if r.closed { recycle(r) } else { r.buffer.removeAll() }
            r.ioError = nil
            lock.withLock {
                bytesWritten += UInt64(done)
                flushes += 1
            }
        }
        if wantSync && r.syncedLength < r.fileLength {
            if fdatasync(r.fd) != 0 {
                let e = errno
                throw ioFailure(r, e, "\(Errno.name(e)) syncing \(r.path)")
            }
            r.syncedLength = r.fileLength
        }
        return moved
    }

    /// Creates the file of a replica opened here, before its first write (its directory too).
    /// Replica lock held.
    private func createFile(_ r: Replica) throws {
        guard !r.onDisk else { return }
        let dir = (r.path as NSString).deletingLastPathComponent
        var failure: Int32 = 0, what = dir
        if mkdir(dir, 0o700) != 0 && errno != EEXIST { failure = errno }
        if failure == 0 {
            let fd = Glibc.open(r.path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            if fd >= 0 {
                r.fd = fd
                r.onDisk = true
                return
            }
            failure = errno
            what = r.path
        }
        throw ioFailure(r, failure, "\(Errno.name(failure)) creating \(what)")
    }

    /// Records a failed write, sync or create of r (kept on the replica, counted, logged) and returns
    /// the writer's error: disk full for ENOSPC or EDQUOT, an I/O error otherwise. Replica lock held.
    private func ioFailure(_ r: Replica, _ code: Int32, _ why: String) -> StoreError {
        r.ioError = why
        lock.withLock { ioErrors += 1 }
        log.error("\(why)")
        return code == ENOSPC || code == EDQUOT ? .diskFull(r.key, why) : .ioError(r.key, why)
    }

    /// Writes a closed replica's whole buffer with O_DIRECT straight from its aligned storage (padded
    /// to 4 KiB, then truncated back): a segment goes to the disk without passing through the page
    /// cache, whose copy and allocation cost more CPU than the rest of the append path. Returns false
    /// to fall back to a buffered write (the file end not aligned, a small buffer, a refusal).
    private func directWrite(_ r: Replica) -> Bool {
        let count = r.buffer.count
        guard r.closed, r.fileLength % 4096 == 0, count >= 64 << 10 else { return false }
        let padded = r.buffer.padToPage()
        let dfd = Glibc.open(r.path, O_WRONLY | O_CLOEXEC | 0o40000)  // O_DIRECT
        guard dfd >= 0 else { return false }
        defer { Glibc.close(dfd) }
        var done = 0
        while done < padded {
            let n = pwrite(dfd, r.buffer.base! + done, padded - done, off_t(r.fileLength) + off_t(done))
            if n > 0 { done += n; continue }
            if n < 0 && errno == EINTR { continue }
            if r.fd < 0 { r.fd = Glibc.open(r.path, O_RDWR | O_CLOEXEC) }
            _ = ftruncate(r.fd >= 0 ? r.fd : dfd, off_t(r.fileLength))
            return false
        }
        if r.fd < 0 { r.fd = Glibc.open(r.path, O_RDWR | O_CLOEXEC) }
        return ftruncate(r.fd, off_t(r.fileLength) + off_t(count)) == 0
    }

    /// Gives a written-out replica's buffer storage to the pool (a few are kept); r's buffer is empty after.
    private func recycle(_ r: Replica) {
        let b = r.buffer
        r.buffer = ReplicaBuffer()
        if b.capacity >= 8 << 20 {
            // Kept while spares and buffered bytes together stay within the hold-back limit, twice
            // the budget: a busy node takes them again, and one whose flusher lags keeps fewer. A
            // fresh buffer costs faulting in and zeroing its huge pages on the receive path, and on
            // a VM whose freed memory the host takes back (free page reporting) a host fault per
            // page as well: 19% of both vCPUs in an R=3 run when the pool was capped at the budget.
            // An idle node gives them back (see trimIdleSpares).
            lock.withLock { if (spareBuffers.count + 1) * b.capacity + buffered <= hardLimit { spareBuffers.append(b) } }
        }
    }

    /// The largest entry boundary (or the header end) at or below `offset`.
    private func lastBoundary(_ r: Replica, upTo offset: UInt64) -> UInt64 {
        var b = r.fileLength
        if b == 0 { b = offset >= UInt64(SegmentFormat.headerSize) ? UInt64(SegmentFormat.headerSize) : 0 }
        for e in r.entries where e.offset >= r.fileLength {
            let end = e.offset + UInt64(SegmentFormat.entryHeaderSize) + UInt64(e.header.length)
            if end <= offset { b = end } else { break }
        }
        return b
    }

    // MARK: recovery

    /// Rebuilds the catalogue from the directory: torn tails are cut off, corrupt entries skipped;
    /// files whose header is unreadable are set aside as `.bad`.
    private func recover() throws {
        let root = directory + "/replicas"
        for writerDir in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] {
            guard let writer = UInt64(writerDir, radix: 16) else { continue }
            for name in (try? FileManager.default.contentsOfDirectory(atPath: root + "/" + writerDir)) ?? [] where name.hasSuffix(".seg") {
                guard let segment = UInt64(name.dropLast(4), radix: 16) else { continue }
                let p = root + "/" + writerDir + "/" + name
                do {
                    let r = try load(path: p, key: Key(writer: writer, segment: segment))
                    replicas[r.key] = r
                } catch {
                    quarantinedFiles += 1
                    log.error("setting aside \(p): \(error)")
                    rename(p, p + ".bad")
                }
            }
        }
        if !replicas.isEmpty {
            log.info("recovered \(replicas.count) replicas (\(tornTails) torn tails cut, \(corruptEntries) corrupt entries skipped)")
        }
    }

    private func load(path p: String, key: Key) throws -> Replica {
        let fd = Glibc.open(p, O_RDWR | O_CLOEXEC)
        if fd < 0 { throw SystemError.fromErrno("open \(p)") }
        defer { Glibc.close(fd) }
        var st = stat()
        fstat(fd, &st)
        let size = Int(st.st_size)
        var data = [UInt8](repeating: 0, count: size)
        let n = data.withUnsafeMutableBytes { pread(fd, $0.baseAddress, size, 0) }
        guard n == size else { throw SystemError.fromErrno("read \(p)") }
        let hdr = try SegmentFormat.decodeHeader(data)
        guard hdr.writer == key.writer, hdr.segment == key.segment else {
            throw SegmentFormat.FormatError.identityMismatch(writer: hdr.writer, segment: hdr.segment)
        }
        let r = Replica(key: key, path: p, owner: Array(data[32..<48]))
        var pos = SegmentFormat.headerSize
        var validEnd = pos
        data.withUnsafeBytes { raw in
            while pos + SegmentFormat.entryHeaderSize <= size {
                if let (h, next) = validEntry(raw, at: pos, size: size) {
                    if h.type == SegmentFormat.EntryType.footer.rawValue {
                        r.closed = true
                    } else {
                        r.entries.append(EntryRef(offset: UInt64(pos), header: h))
                        r.digest = Sys.crc32c(r.digest, withUnsafeBytes(of: h.crc.littleEndian) { $0 })
                        r.dataBytes += UInt64(h.length)
                    }
                    pos = next
                    validEnd = next
                    continue
                }
                // Not a valid entry here: a corrupt entry if a valid one follows, else a torn tail.
                var q = pos + 1
                var found = false
                while q + SegmentFormat.entryHeaderSize <= size {
                    if validEntry(raw, at: q, size: size) != nil { found = true; break }
                    q += 1
                }
                if !found { break }
                r.corrupt += 1
                corruptEntries += 1
                log.error("\(p): corrupt entry at offset \(pos), skipped up to \(q)")
                pos = q
            }
        }
        if validEnd < size {
            tornTails += 1
            log.warning("\(p): torn tail of \(size - validEnd) bytes at \(validEnd) cut off")
            _ = ftruncate(fd, off_t(validEnd))
            fdatasync(fd)
        }
        r.fileLength = UInt64(validEnd)
        r.syncedLength = r.fileLength
        if !r.closed { r.fd = Glibc.dup(fd) }
        return r
    }

    private func validEntry(_ raw: UnsafeRawBufferPointer, at pos: Int, size: Int) -> (SegmentFormat.EntryHeader, Int)? {
        guard let h = SegmentFormat.parseEntryHeader(UnsafeRawBufferPointer(rebasing: raw[pos..<pos + SegmentFormat.entryHeaderSize])) else { return nil }
        let end = pos + SegmentFormat.entryHeaderSize + Int(h.length)
        guard end <= size else { return nil }
        let ok = SegmentFormat.verify(header: UnsafeRawBufferPointer(rebasing: raw[pos..<pos + SegmentFormat.entryHeaderSize]),
                                      payload: UnsafeRawBufferPointer(rebasing: raw[pos + SegmentFormat.entryHeaderSize..<end]), claimed: h.crc)
        return ok ? (h, end) : nil
    }

    // MARK: stats

    public struct Stats {
        public var replicas: Int, openReplicas: Int, bufferedBytes: Int, bufferedPeakBytes: Int, appendWaits: Int, spareBytes: Int, freshBuffers: Int
        /// Memory the replicas' buffers hold (capacity, written out or not; spares not included).
        public var bufferStorageBytes: Int
        public var diskBytes: UInt64
        public var tornTails: Int, corruptEntries: Int, quarantined: Int, flushes: Int, bytesWritten: UInt64, ioErrors: Int
    }

    public var stats: Stats {
        let all = lock.withLock { Array(replicas.values) }
        let (open, disk, storage) = all.reduce((0, UInt64(0), 0)) { acc, r in
            r.lock.withLock { (acc.0 + (r.closed ? 0 : 1), acc.1 + r.fileLength, acc.2 + r.buffer.capacity) }
        }
        return lock.withLock {
            Stats(replicas: replicas.count, openReplicas: open, bufferedBytes: buffered, bufferedPeakBytes: bufferedPeak,
                  appendWaits: appendWaits, spareBytes: spareBuffers.reduce(0) { $0 + $1.capacity }, freshBuffers: freshBuffers, bufferStorageBytes: storage, diskBytes: disk, tornTails: tornTails,
                  corruptEntries: corruptEntries, quarantined: quarantinedFiles, flushes: flushes, bytesWritten: bytesWritten, ioErrors: ioErrors)
        }
    }

    /// Free bytes on the file system holding the replicas.
    public var freeDiskBytes: UInt64 {
        var s = statvfs()
        guard statvfs(directory, &s) == 0 else { return 0 }
        return UInt64(s.f_bavail) * UInt64(s.f_frsize)
    }
}

func hex16(_ v: UInt64) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: max(0, 16 - s.count)) + s
}
