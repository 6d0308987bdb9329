import LegatoCore
import LegatoSystem

/// Pages evicted dirty, waiting to be acknowledged by their memory node. The buffer is the
/// newest copy of each page until then: faults on these pages are served from it.
final class WriteBackBatch {
    let id: UInt64
    var node: Int
    /// Mirrored: the second node the batch is stored on (nil: one copy).
    var mirror: Int?
    let keys: [UInt64]
    let buffer: UnsafeMutableRawPointer
    /// The page table of the address space the pages belong to (their `inFlight` bits).
    weak var table: PageTable?

    private let buffers: BatchBuffers

    init(id: UInt64, node: Int, keys: [UInt64], table: PageTable, buffers: BatchBuffers) {
        self.id = id
        self.table = table
        self.node = node
        self.keys = keys
        self.buffers = buffers
        buffer = buffers.take(pages: keys.count)
    }

    deinit { buffers.give(buffer, pages: keys.count) }

    @inline(__always) func page(_ i: Int) -> UnsafeMutableRawPointer { buffer + i * Page.size }
    var bytes: Int { keys.count * Page.size }
}

/// Buffers of batches stored and let go, kept for the next ones: a fresh buffer faults in every page
/// as the eviction's process_vm_readv fills it (zeroing it first), inside the freeze. Sizes go by
/// powers of two from 64 pages to a full batch (an eviction's last batch is usually small), a few of
/// each kept; larger batches get storage of their own. Thread-safe (a batch is let go on whichever
/// thread drops it last).
final class BatchBuffers: @unchecked Sendable {
    static let pages = 1024  // what an eviction puts in one batch
    static let smallest = 64
    static let keptPerSize = 8
    private let lock = Lock()
    private var free: [Int: [UnsafeMutableRawPointer]] = [:]  // by pages

    deinit {
        for (_, list) in free { for p in list { p.deallocate() } }
    }

    /// The pages of the buffer a batch of `count` pages uses (nil: one of its own).
    static func size(for count: Int) -> Int? {
        guard count <= pages else { return nil }
        var n = smallest
        while n < count { n *= 2 }
        return n
    }

    func take(pages count: Int) -> UnsafeMutableRawPointer {
        let pooled = Self.size(for: count)
        if let n = pooled, let p = lock.withLock({ free[n]?.popLast() }) { return p }
        return UnsafeMutableRawPointer.allocate(byteCount: (pooled ?? max(1, count)) * Page.size, alignment: Page.size)
    }

    func give(_ p: UnsafeMutableRawPointer, pages count: Int) {
        guard let n = Self.size(for: count) else { return p.deallocate() }
        let keep = lock.withLock { () -> Bool in
            guard free[n, default: []].count < Self.keptPerSize else { return false }
            free[n, default: []].append(p)
            return true
        }
        if !keep { p.deallocate() }
    }
}
