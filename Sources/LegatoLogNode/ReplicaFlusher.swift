import Foundation
import Glibc
import LegatoCore
import LegatoSegmentLog
import LegatoSystem

/// The flusher thread: writes closed replicas out (fsync'd) and the largest buffers when the budget is
/// passed; sweeps idle buffers into the spare pool and trims it.
extension ReplicaStore {
    // MARK: the flusher

    /// Writes closed replicas out (and fsyncs them), and the largest buffers when the budget is passed.
    func flusherLoop() {
        var lastSweep = monotonicNanos()
        func sweepDue() -> Bool { Double(monotonicNanos() &- lastSweep) / 1e9 > max(0.05, spareIdleSeconds / 2) }
        while true {
            if sweepDue() {  // busy or not: a busy node must not keep a gone writer's buffer either
                lastSweep = monotonicNanos()
                releaseIdleBuffers()
                lock.withLock { if idleLongEnough(since: lastAppendNanos) { spares.trim(keeping: 1) } }
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
    func releaseIdleBuffers() {
        let now = monotonicNanos()
        for r in lock.withLock({ Array(replicas.values) }) {
            r.lock.withLockIfFree {
                guard !r.closed, r.buffer.isEmpty, r.buffer.capacity > 0, r.receivingAt == nil,
                      idleLongEnough(since: r.lastAppendNanos, now: now) else { return }
                recycle(r)
            }
        }
    }

    /// Whether more than `spareIdleSeconds` have passed since `nanos` (monotonic).
    func idleLongEnough(since nanos: UInt64, now: UInt64 = monotonicNanos()) -> Bool {
        Double(now &- nanos) / 1e9 > spareIdleSeconds
    }

    /// Writes the largest buffers out until half the budget is buffered; returns the bytes written.
    func flushLargest() -> Int {
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
}
