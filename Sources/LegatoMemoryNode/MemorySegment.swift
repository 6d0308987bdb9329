import Glibc
import LegatoCore

/// One fixed-size, append-only run of page entries in DRAM (RAMCloud's in-memory segment).
///
/// Entry layout (little-endian, 32-byte header then the page):
///
///     0        8        16        24      28      32             32+4096
///     +--------+--------+---------+-------+-------+--------------+
///     | space  | vpn    | version | epoch | flags | page bytes   |
///     | u64    | u64    | u64     | u32   | u32   | 4096         |
///     +--------+--------+---------+-------+-------+--------------+
///
/// An entry is live while the index points at it; the cleaner copies live entries out and
/// frees the segment.
final class MemorySegment {
    static let headerSize = 32
    static let entrySize = headerSize + Page.size

    var slot: Int  // its index in the store's table (a spare made ahead has none yet: -1)
    let size: Int
    let base: UnsafeMutableRawPointer
    private(set) var used = 0
    var liveEntries = 0

    /// The memory is populated at once: a segment is filled from start to end, and faulting it in
    /// page by page under the store's lock cost a fault exception per 4 KiB stored.
    init?(slot: Int, size: Int) {
        guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_POPULATE, -1, 0),
              p != MAP_FAILED else { return nil }
        self.slot = slot
        self.size = size
        self.base = p
    }

    deinit { munmap(base, size) }

    var capacityEntries: Int { size / MemorySegment.entrySize }
    var entryCount: Int { used / MemorySegment.entrySize }
    var isFull: Bool { used + MemorySegment.entrySize > size }

    /// Appends an entry and returns its offset. The caller checked `isFull`.
    func append(space: UInt64, vpn: UInt64, version: UInt64, epoch: UInt32, page: UnsafeRawPointer) -> Int {
        let offset = used
        let h = base + offset
        h.storeBytes(of: space.littleEndian, toByteOffset: 0, as: UInt64.self)
        h.storeBytes(of: vpn.littleEndian, toByteOffset: 8, as: UInt64.self)
        h.storeBytes(of: version.littleEndian, toByteOffset: 16, as: UInt64.self)
        h.storeBytes(of: epoch.littleEndian, toByteOffset: 24, as: UInt32.self)
        h.storeBytes(of: UInt32(0), toByteOffset: 28, as: UInt32.self)
        memcpy(h + MemorySegment.headerSize, page, Page.size)
        used += MemorySegment.entrySize
        return offset
    }

    func header(at offset: Int) -> (space: UInt64, vpn: UInt64, version: UInt64, epoch: UInt32) {
        let h = UnsafeRawPointer(base + offset)
        return (UInt64(littleEndian: h.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
                UInt64(littleEndian: h.loadUnaligned(fromByteOffset: 8, as: UInt64.self)),
                UInt64(littleEndian: h.loadUnaligned(fromByteOffset: 16, as: UInt64.self)),
                UInt32(littleEndian: h.loadUnaligned(fromByteOffset: 24, as: UInt32.self)))
    }

    func page(at offset: Int) -> UnsafeRawPointer { UnsafeRawPointer(base + offset + MemorySegment.headerSize) }
}
