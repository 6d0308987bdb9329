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

    public func bytes(_ count: Int) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }
    public func bytes(_ offset: Int, _ count: Int) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base + offset, count: count) }
}
