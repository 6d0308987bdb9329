import Glibc
import LegatoSegmentLog
import LegatoSystem

/// The in-memory tail of an open replica: entries appended in their on-disk form into page-aligned
/// storage, so a closed segment goes to the disk with O_DIRECT straight from here (no bounce copy),
/// and an entry's header is written in place (no temporary array per entry). Guarded by its
/// replica's lock.
final class ReplicaBuffer {
    private(set) var base: UnsafeMutableRawPointer?
    private(set) var capacity: Int
    private(set) var count = 0

    init(capacity: Int = 0) {
        self.capacity = 0
        reserve(capacity)
    }

    deinit { base?.deallocate() }

    var isEmpty: Bool { count == 0 }
    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    /// Room for `n` bytes in all (kept contents); capacity stays a multiple of 4 KiB.
    func reserve(_ n: Int) {
        guard n > capacity else { return }
        // Huge pages from 2 MiB on (see ScratchBuffer): fewer faults receiving, and the O_DIRECT
        // write of a closed segment goes out in large requests.
        let (fresh, grown) = ScratchBuffer.allocate(max(n, capacity * 2))
        if let base, count > 0 { fresh.copyMemory(from: base, byteCount: count) }
        base?.deallocate()
        base = fresh
        capacity = grown
    }

    func append(_ raw: UnsafeRawBufferPointer) {
        reserve(count + raw.count)
        if raw.count > 0 { (base! + count).copyMemory(from: raw.baseAddress!, byteCount: raw.count) }
        count += raw.count
    }

    /// Appends one entry (header + payload); returns its CRC.
    @discardableResult
    func appendEntry(type: UInt8, flags: UInt8, epoch: UInt32, slab: UInt64, index: UInt32, payload: UnsafeRawBufferPointer) -> UInt32 {
        reserve(count + SegmentFormat.entryHeaderSize + payload.count)
        let at = base! + count
        let crc = SegmentFormat.writeEntryHeader(at: at, type: type, flags: flags, epoch: epoch, slab: slab, index: index, payload: payload)
        if payload.count > 0 { (at + SegmentFormat.entryHeaderSize).copyMemory(from: payload.baseAddress!, byteCount: payload.count) }
        count += SegmentFormat.entryHeaderSize + payload.count
        return crc
    }

    /// Makes room for `n` more bytes after the end and returns where they go; they become part of
    /// the buffer with `adopt`.
    func room(_ n: Int) -> UnsafeMutableRawPointer {
        reserve(count + n)
        return base! + count
    }

    /// Takes `n` bytes written at offset `at` (given out by `room`) into the buffer, moving them down
    /// to the end if the buffer was written out meanwhile.
    func adopt(at: Int, _ n: Int) {
        if at != count { memmove(base! + count, base! + at, n) }
        count += n
    }

    func removeFirst(_ n: Int) {
        guard n > 0 else { return }
        if n < count { memmove(base!, base! + n, count - n) }
        count -= min(n, count)
    }

    func removeAll() { count = 0 }

    /// Zeroes the bytes from the end up to the next 4 KiB boundary and returns that padded length:
    /// what an O_DIRECT write of the whole buffer takes.
    func padToPage() -> Int {
        let padded = (count + 4095) & ~4095
        reserve(padded)
        if padded > count { memset(base! + count, 0, padded - count) }
        return padded
    }
}
