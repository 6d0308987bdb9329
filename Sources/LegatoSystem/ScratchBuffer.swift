import Glibc

/// A page-aligned byte buffer reused from call to call: it grows to the largest size asked for and
/// keeps that memory, so a hot path touches already-faulted pages instead of a fresh allocation
/// (which costs a page fault and a zeroed page per 4 KiB). Not thread-safe: one owner at a time.
public final class ScratchBuffer {
    public private(set) var base: UnsafeMutableRawPointer
    public private(set) var capacity: Int

    public init(capacity: Int = 64 << 10) {
        (base, self.capacity) = Self.allocate(max(4096, capacity))
    }

    deinit { base.deallocate() }

    /// Makes room for at least `count` bytes; the contents are not kept when it grows.
    public func reserve(_ count: Int) {
        guard count > capacity else { return }
        base.deallocate()
        (base, capacity) = Self.allocate(count)
    }

    static let hugePage = 2 << 20

    /// At least `count` bytes, page-aligned (free with deallocate()), and the capacity given. From
    /// 2 MiB on, the memory is 2 MiB-aligned and asks for huge pages: an O_DIRECT read into it
    /// then goes to the disk in large requests (a request holds at most max_segments physically
    /// contiguous pieces: 254 here, 1 MiB of scattered 4 KiB pages), and it costs fewer faults.
    public static func allocate(_ count: Int) -> (UnsafeMutableRawPointer, Int) {
        guard count >= hugePage else {
            let n = (count + 4095) & ~4095
            return (UnsafeMutableRawPointer.allocate(byteCount: n, alignment: 4096), n)
        }
        let n = (count + hugePage - 1) & ~(hugePage - 1)
        let p = UnsafeMutableRawPointer.allocate(byteCount: n, alignment: hugePage)
        _ = madvise(p, n, MADV_HUGEPAGE)
        return (p, n)
    }

    // MARK: a process-wide pool

    private static let poolLock = Lock()
    nonisolated(unsafe) private static var pool: [ScratchBuffer] = []
    nonisolated(unsafe) private static var pooledBytes = 0
    /// At most this much memory is kept in the pool; a buffer given back beyond it is freed.
    public static let poolLimit = 256 << 20

    /// A buffer from the pool (already faulted in by an earlier owner), else a new one: for owners
    /// that come and go often — a session's or a client's receive buffer — whose fresh megabytes
    /// would otherwise be zeroed by the kernel each time (seen as three quarters of a recovery's
    /// replay spent in clear_page). Give it back with `recycle`.
    public static func take(capacity: Int) -> ScratchBuffer {
        let found: ScratchBuffer? = poolLock.withLock {
            // The smallest that fits, else the largest (it grows once).
            let i = pool.indices.filter { pool[$0].capacity >= capacity }.min { pool[$0].capacity < pool[$1].capacity }
                ?? pool.indices.max { pool[$0].capacity < pool[$1].capacity }
            guard let i else { return nil }
            pooledBytes -= pool[i].capacity
            return pool.remove(at: i)
        }
        guard let b = found else { return ScratchBuffer(capacity: capacity) }
        b.reserve(capacity)
        return b
    }

    /// Puts `count` buffers of `capacity` bytes in the pool, their pages touched now: a daemon that
    /// will read logs at once in a recovery (a log node's sessions, a memory node's replay clients)
    /// does not pay for fresh memory then. In this VM a fresh page costs far more than its zeroing
    /// (the host backs it at first touch): before this, three quarters of a recovery's replay was
    /// clear_page under the reads' first writes into new buffers.
    public static func prewarm(count: Int, capacity: Int) {
        for _ in 0..<count {
            let b = ScratchBuffer(capacity: capacity)
            memset(b.base, 0, b.capacity)
            recycle(b)
        }
    }

    /// Gives `buffer` back to the pool; its owner must not use it again.
    public static func recycle(_ buffer: ScratchBuffer) {
        poolLock.withLock {
            guard pooledBytes + buffer.capacity <= poolLimit, !pool.contains(where: { $0 === buffer }) else { return }
            pool.append(buffer)
            pooledBytes += buffer.capacity
        }
    }

    public func bytes(_ count: Int) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }
    public func bytes(_ offset: Int, _ count: Int) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base + offset, count: count) }
}
