import Glibc

/// A page-aligned byte buffer reused from call to call: it grows to the largest size asked for and
/// keeps that memory, so a hot path touches already-faulted pages instead of a fresh allocation
/// (which costs a page fault and a zeroed page per 4 KiB). Not thread-safe: one owner at a time.
public final class ScratchBuffer {
    public private(set) var base: UnsafeMutableRawPointer
    public private(set) var capacity: Int

    public init(capacity: Int = 64 << 10) {
        self.capacity = max(4096, capacity)
        base = UnsafeMutableRawPointer.allocate(byteCount: self.capacity, alignment: 4096)
    }

    deinit { base.deallocate() }

    /// Makes room for at least `count` bytes; the contents are not kept when it grows.
    public func reserve(_ count: Int) {
        guard count > capacity else { return }
        base.deallocate()
        capacity = (count + 4095) & ~4095
        base = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 4096)
    }

    public func bytes(_ count: Int) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }
}
