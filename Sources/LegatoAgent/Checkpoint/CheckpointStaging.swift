import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// Where the pause copies pages to: memory the agent keeps between checkpoints, so the pause is one
/// copy per page and the sink's I/O happens once PROG runs again. Pages that need no copy in the
/// pause are named instead: in a copy-on-write snapshot, in a write-back batch, on a memory node.
///
/// Pages are reserved in runs of at most `runPages`, each contiguous inside one chunk. After the
/// sink has them, `reset` keeps up to `retainedBytes` of chunks (already faulted in) for the next
/// checkpoint and returns the rest.
public final class CheckpointStaging {
    static let chunkBytes = 8 << 20
    static let runPages = 256
    static let retainedBytes = 256 << 20

    private var chunks: [UnsafeMutableRawPointer] = []
    private var chunk = 0          // the chunk being filled
    private var used = 0           // bytes used in it
    private(set) var runs: [(address: UInt64, count: Int, data: UnsafeMutableRawPointer)] = []
    /// Pages that are zero now (discarded, or new and never written), as [address, pages] runs.
    private(set) var zeroRuns: [[UInt64]] = []
    /// Runs that lie in write-back batches on their way to memory nodes (held here until the sink
    /// has read them: a batch's bytes do not change once submitted).
    private(set) var batchRuns: [(address: UInt64, count: Int, batch: WriteBackBatch, index: Int)] = []
    /// Runs to read from `snapshot` (a copy-on-write child) rather than from staging memory.
    private(set) var deferred: [(address: UInt64, count: Int)] = []
    /// The copy-on-write child holding the pause's resident pages (Agent+Snapshot), if one was taken.
    var snapshot: pid_t?
    /// A snapshot's fork is under way (its userfaultfd copies go to `snapshotUffds`).
    var snapshotPending = false
    /// The userfaultfd the kernel made for the snapshot's copy of PROG's mappings: closed once the
    /// snapshot is gone (closing it earlier walks every mapping of the live snapshot).
    var snapshotUffds: [Int32] = []

    /// Ends the snapshot, if any (its exit is reaped by the event loop and ignored there), and
    /// closes its userfaultfd.
    func dropSnapshot() {
        if let pid = snapshot { kill(pid, SIGKILL) }
        snapshot = nil
        // (Off this thread: the snapshot may not be gone yet, and the walk would hold up the event loop.)
        let fds = snapshotUffds
        snapshotUffds = []
        if !fds.isEmpty { DispatchQueue.global(qos: .utility).async { for fd in fds { close(fd) } } }
    }

    /// Runs to read from the memory nodes' freeze, with their keys.
    private(set) var frozen: [(node: Int, address: UInt64, keys: [UInt64])] = []
    /// The memory nodes frozen for this checkpoint (those holding frozen runs, or all of them).
    var frozenNodes: Set<Int> = []
    var frozenSource: FrozenPages?

    func addFrozen(node: Int, address: UInt64, keys: [UInt64]) { frozen.append((node, address, keys)) }

    /// Ends the freezes this checkpoint asked for (on whichever thread finishes it): with
    /// `committedEpoch`, each node retains that checkpoint; else the versions kept are released.
    func endFreezes(committedEpoch: UInt32?) -> [String] {
        guard let src = frozenSource else { return [] }
        frozenSource = nil
        return src.endFreezes(frozenNodes, committedEpoch: committedEpoch)
    }

    func addBatchRun(address: UInt64, count: Int, batch: WriteBackBatch, index: Int) {
        batchRuns.append((address, count, batch, index))
    }

    func addDeferred(_ address: UInt64, _ count: Int) {
        if let last = deferred.last, last.address + UInt64(last.count * Page.size) == address, last.count + count <= CheckpointStaging.runPages {
            deferred[deferred.count - 1].count += count
        } else {
            deferred.append((address, count))
        }
    }

    /// Every run of the checkpoint with its bytes: staged ones from memory, frozen ones read from the
    /// memory nodes (but those of `persistedBy`, which persisted them themselves), deferred ones read
    /// from the snapshot child. Runs on the commit thread.
    func forEachRun(except persistedBy: Set<Int> = [], _ body: (UInt64, Int, UnsafeRawPointer) throws -> Void) throws {
        for run in runs { try body(run.address, run.count, run.data) }
        for b in batchRuns { try body(b.address, b.count, b.batch.page(b.index)) }
        let buf = UnsafeMutableRawPointer.allocate(byteCount: CheckpointStaging.runPages * Page.size, alignment: Page.size)
        defer { buf.deallocate() }
        try forEachFrozenRun(where: { !persistedBy.contains($0) }, buffer: buf, body)
        guard !deferred.isEmpty, let pid = snapshot else { return }
        for d in deferred {
            var addr = d.address, len = UInt64(d.count * Page.size)
            let n = try Sys.processRead(pid: pid, into: buf, capacity: Int(len), addresses: &addr, lengths: &len, count: 1)
            if n != Int(len) { throw SystemError("read \(d.count) pages at 0x\(String(d.address, radix: 16)) of the snapshot pid \(pid)", code: EIO) }
            try body(d.address, d.count, buf)
        }
    }

    /// The frozen runs of the memory nodes `nodes` selects, read from their freezes into `buffer`
    /// (room for `runPages` pages; a fresh one if nil) and handed to body.
    func forEachFrozenRun(where nodes: (Int) -> Bool, buffer: UnsafeMutableRawPointer? = nil,
                          _ body: (UInt64, Int, UnsafeRawPointer) throws -> Void) throws {
        guard let src = frozenSource else { return }
        let buf = buffer ?? UnsafeMutableRawPointer.allocate(byteCount: CheckpointStaging.runPages * Page.size, alignment: Page.size)
        defer { if buffer == nil { buf.deallocate() } }
        for f in frozen where nodes(f.node) {
            try src.read(node: f.node, keys: f.keys, into: buf)
            try body(f.address, f.keys.count, buf)
        }
    }

    func addZeros(_ address: UInt64, _ count: Int) { zeroRuns.appendRun(address, count) }

    deinit { for c in chunks { munmap(c, CheckpointStaging.chunkBytes) } }

    /// Room for `count` (≤ runPages) pages destined for `address`.
    func reserve(_ address: UInt64, _ count: Int) throws -> UnsafeMutableRawPointer {
        precondition(count <= CheckpointStaging.runPages)
        let bytes = count * Page.size
        if chunk < chunks.count && used + bytes > CheckpointStaging.chunkBytes {
            chunk += 1
            used = 0
        }
        if chunk == chunks.count { try addChunk() }
        let p = chunks[chunk] + used
        used += bytes
        runs.append((address, count, p))
        return p
    }

    /// Room for at least `pages` pages in chunks already faulted in, so a pause that stages no more
    /// allocates nothing (a run never spans two chunks: each may leave up to a run unused).
    func prepare(pages: Int) throws {
        let perChunk = CheckpointStaging.chunkBytes / Page.size - CheckpointStaging.runPages
        while chunks.count * perChunk < pages { try addChunk() }
    }

    private func addChunk() throws {
        guard let p = mmap(nil, CheckpointStaging.chunkBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0),
              p != MAP_FAILED else {
            throw SystemError.fromErrno("allocate \(CheckpointStaging.chunkBytes >> 20) MiB for checkpoint staging")
        }
        chunks.append(p)
    }

    /// Empties the staging area (ending its snapshot), keeping some chunks for the next checkpoint.
    func reset() {
        runs.removeAll(keepingCapacity: true)
        zeroRuns.removeAll()
        batchRuns.removeAll()
        deferred.removeAll()
        dropSnapshot()
        frozen.removeAll()
        frozenNodes.removeAll()
        frozenSource = nil
        chunk = 0
        used = 0
        let keep = CheckpointStaging.retainedBytes / CheckpointStaging.chunkBytes
        while chunks.count > keep { munmap(chunks.removeLast(), CheckpointStaging.chunkBytes) }
    }
}
