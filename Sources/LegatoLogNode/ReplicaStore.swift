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
    let log: Logger
    let lock = Lock()
    var replicas: [Key: Replica] = [:]
    var buffered = 0
    var bufferedPeak = 0
    var closedQueue: [Replica] = []
    /// Storage of written-out replicas, reused by new ones (store lock).
    var spares = SpareBuffers()
    var lastAppendNanos: UInt64 = 0
    var stopping = false
    /// Why the disk refuses writes (ENOSPC, EDQUOT), from the last failed write until a write
    /// succeeds or a freed replica makes room: new replicas and appends are refused meanwhile, so a
    /// writer takes its entries to a log node that can write them out rather than to buffers that
    /// cannot be. Store lock.
    var diskFullBecause: String?

    // counters
    public internal(set) var tornTails = 0
    public internal(set) var corruptEntries = 0
    public internal(set) var quarantinedFiles = 0
    public internal(set) var flushes = 0
    public internal(set) var bytesWritten: UInt64 = 0
    public internal(set) var ioErrors = 0
    public internal(set) var appendWaits = 0
    /// Replicas opened on fresh buffer storage (no spare buffer was free): each costs zeroing it.
    public internal(set) var freshBuffers = 0

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

    func path(_ k: Key) -> String {
        directory + "/replicas/" + hex16(k.writer) + "/" + hex16(k.segment) + ".seg"
    }

    // MARK: writer operations
    //
    // Locking: `lock` guards the catalogue, the buffered-bytes total and the counters; each replica's
    // own lock guards its buffer and file. Order: a replica's lock may be held while `lock` is taken,
    // never the other way round. Disk writes hold only the replica's lock, so other writers go on.

    func lookup(_ k: Key) throws -> Replica {
        guard let r = lock.withLock({ replicas[k] }) else { throw StoreError.noSuchReplica(k) }
        return r
    }

    func adjustBuffered(_ delta: Int) {
        lock.withLock { changeBuffered(by: delta) }
    }

    /// The one place the buffered total changes (store lock held): keeps its peak, and wakes the
    /// flusher when over the budget, appends waiting for room when it went down.
    func changeBuffered(by delta: Int) {
        buffered += delta
        bufferedPeak = max(bufferedPeak, buffered)
        if buffered > bufferLimit || delta < 0 { lock.broadcast() }
    }

    /// Waits (without a replica's lock) until `bytes` more fit under `hardLimit`, or refuses the
    /// append once it has waited `roomTimeoutSeconds` (shorter than a writer's I/O timeout, so that
    /// the writer hears why) or when the node is stopping. Returns whether more than the budget is
    /// buffered then.
    func waitForRoom(_ k: Key, _ bytes: Int) throws -> Bool {
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
            if let why = diskFullBecause { throw StoreError.diskFull(k, why) }
            let r = Replica(key: k, path: path(k), owner: tag)
            let header = SegmentFormat.encodeHeader(writer: k.writer, segment: k.segment,
                                                    created: UInt64(Date().timeIntervalSince1970 * 1e9), ownerTag: tag)
            r.onDisk = false
            if let spare = spares.pop() {
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
            if r.buffer.capacity == 0, let spare = lock.withLock({ spares.pop() }) {
                r.buffer = spare  // its storage was given back while the writer was away (releaseIdleBuffers)
            }
            r.receivingAt = r.buffer.count
            return AppendRoom(replica: r, at: r.buffer.count, pointer: r.buffer.room(bytes))
        }
    }

    /// Whether an append of entries first..<first+n to r needs room: false when they are all stored
    /// already (a retry); throws for an append refused. Replica lock held.
    func admits(_ r: Replica, _ k: Key, _ token: [UInt8], _ first: UInt32, _ n: Int, _ overLimit: Bool) throws -> Bool {
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
        if let why = lock.withLock({ diskFullBecause }) { throw StoreError.diskFull(k, why) }
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

    func storedCounts(_ k: Key) throws -> (UInt32, UInt64) {
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
            if r.onDisk { diskFullBecause = nil }  // room made: the next write tells
            replicas[k] = nil
            closedQueue.removeAll { $0 === r }
        }
    }

    /// Owner and state checks (replica lock held).
    func check(_ r: Replica, _ token: [UInt8], allowClosed: Bool = false) throws {
        guard r.owner == Self.ownerTag(token) else { throw StoreError.notOwner(r.key) }
        if r.closed && !allowClosed { throw StoreError.closed(r.key) }
    }
}
