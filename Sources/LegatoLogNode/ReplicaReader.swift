import LegatoSystem

/// One session's reads of replicas, with read-ahead: the next page of a closed replica, or the first
/// page of the segment a client says it will ask this node for next, is read (from disk, checked) on a
/// helper thread while the current page goes out on the socket. Disk and network overlap
/// and the checksums of the two pages run on two threads.
///
/// Contract: `read` returns a buffer that stays valid until the next `read` on this reader; calls
/// come from the session's one thread.
final class ReplicaReader {
    struct Request: Equatable {
        var key: ReplicaStore.Key
        var first: UInt32
        var maxEntries: Int
        var maxBytes: Int
        var slabs: Set<UInt64>?
    }

    private let store: ReplicaStore
    private let lock = Lock()
    private var current = ScratchBuffer.take(capacity: 1 << 20)  // the last reply was sent from here
    private var spare = ScratchBuffer.take(capacity: 1 << 20)    // the read-ahead fills this one
    private var ahead: Request?
    private var aheadResult: Result<ReplicaStore.RawRead, Error>?   // nil while the helper runs

    init(store: ReplicaStore) { self.store = store }

    /// (A read-ahead thread holds the reader, so none is running now.)
    deinit {
        ScratchBuffer.recycle(current)
        ScratchBuffer.recycle(spare)
    }

    /// The entries `request` asks for, in the returned buffer; then starts reading what comes next:
    /// the replica's next page, or once this one is done, `readAhead`'s first page (same limits, slabs).
    func read(_ request: Request, readAhead: UInt64?) throws -> (ScratchBuffer, ReplicaStore.RawRead) {
        var result: ReplicaStore.RawRead?
        if let pending = settleReadAhead() {
            // Only a closed replica's page is taken as read ahead: it cannot have changed since.
            if pending.request == request, case .success(let r) = pending.result, r.closed, store.holds(request.key) {
                swap(&current, &spare)
                result = r
            }
        }
        let r = try result ?? store.readRaw(request.key, first: request.first, maxEntries: request.maxEntries,
                                            maxBytes: request.maxBytes, slabs: request.slabs, into: current)
        if !r.end && r.closed {
            var more = request
            more.first = r.next
            start(more)
        } else if r.end, let next = readAhead, next != request.key.segment {
            start(Request(key: .init(writer: request.key.writer, segment: next), first: 0, maxEntries: request.maxEntries,
                          maxBytes: request.maxBytes, slabs: request.slabs))
        }
        return (current, r)
    }

    /// Waits for a read-ahead still running (its buffer is about to be reused) and hands it over.
    private func settleReadAhead() -> (request: Request, result: Result<ReplicaStore.RawRead, Error>)? {
        lock.withLock {
            guard let request = ahead else { return nil }
            while aheadResult == nil { _ = lock.wait() }
            defer {
                ahead = nil
                aheadResult = nil
            }
            return (request, aheadResult!)
        }
    }

    private func start(_ request: Request) {
        lock.withLock {
            ahead = request
            aheadResult = nil
        }
        let buffer = spare
        startThread(name: "read-ahead") { [self] in
            let r = Result { try store.readRaw(request.key, first: request.first, maxEntries: request.maxEntries,
                                               maxBytes: request.maxBytes, slabs: request.slabs, into: buffer) }
            lock.withLock {
                aheadResult = r
                lock.broadcast()
            }
        }
    }

    /// Waits for a read-ahead still running (called when the session ends).
    func finish() { _ = settleReadAhead() }
}
