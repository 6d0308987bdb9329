import Foundation
import Glibc
import LegatoCore
import LegatoSegmentLog
import LegatoSystem

/// Writing a replica's buffer to its file (buffered or O_DIRECT), creating the file, I/O failures,
/// and recycling a written-out buffer.
extension ReplicaStore {
    // MARK: writing buffers out

    /// Writes r's buffer at the end of its file (cutting a partial write back to an entry boundary);
    /// returns how many buffered bytes went to the file. Replica lock held.
    func flushLocked(_ r: Replica, fsync wantSync: Bool) throws -> Int {
        var moved = 0
        if !r.buffer.isEmpty { try createFile(r) }
        if !r.buffer.isEmpty && directWrite(r) {
            moved = r.buffer.count
            r.fileLength += UInt64(moved)
            recycle(r)
            r.ioError = nil
            lock.withLock {
                bytesWritten += UInt64(moved)
                flushes += 1
                diskFullBecause = nil
            }
        }
        if !r.buffer.isEmpty {
            if r.fd < 0 { r.fd = Glibc.open(r.path, O_RDWR | O_CLOEXEC) }
            let (done, failure) = Sys.pwriteAsMuch(r.fd, r.buffer.base!, count: r.buffer.count, at: Int(r.fileLength))
            if failure != 0 {
                // Keep only whole entries on disk; the rest stays buffered (and acknowledged only as such).
                let boundary = lastBoundary(r, upTo: r.fileLength + UInt64(done))
                let kept = Int(boundary - r.fileLength)
                _ = ftruncate(r.fd, off_t(boundary))
                r.buffer.removeFirst(kept)
                r.fileLength = boundary
                adjustBuffered(-kept)
                throw ioFailure(r, failure, "\(Errno.name(failure)) writing \(r.path) at \(boundary)")
            }
            r.fileLength += UInt64(done)
            moved = done
            if r.closed { recycle(r) } else { r.buffer.removeAll() }
            r.ioError = nil
            lock.withLock {
                bytesWritten += UInt64(done)
                flushes += 1
                diskFullBecause = nil
            }
        }
        if wantSync && r.syncedLength < r.fileLength {
            if fdatasync(r.fd) != 0 {
                let e = errno
                throw ioFailure(r, e, "\(Errno.name(e)) syncing \(r.path)")
            }
            r.syncedLength = r.fileLength
        }
        return moved
    }

    /// Creates the file of a replica opened here, before its first write (its directory too).
    /// Replica lock held.
    func createFile(_ r: Replica) throws {
        guard !r.onDisk else { return }
        let dir = (r.path as NSString).deletingLastPathComponent
        var failure: Int32 = 0, what = dir
        if mkdir(dir, 0o700) != 0 && errno != EEXIST { failure = errno }
        if failure == 0 {
            let fd = Glibc.open(r.path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            if fd >= 0 {
                r.fd = fd
                r.onDisk = true
                return
            }
            failure = errno
            what = r.path
        }
        throw ioFailure(r, failure, "\(Errno.name(failure)) creating \(what)")
    }

    /// Records a failed write, sync or create of r (kept on the replica, counted, logged) and returns
    /// the writer's error: disk full for ENOSPC or EDQUOT, an I/O error otherwise. Replica lock held.
    func ioFailure(_ r: Replica, _ code: Int32, _ why: String) -> StoreError {
        r.ioError = why
        let full = code == ENOSPC || code == EDQUOT
        let first = lock.withLock { () -> Bool in
            ioErrors += 1
            defer { if full { diskFullBecause = why } }
            return full && diskFullBecause == nil
        }
        log.error("\(why)")
        if first { log.warning("the disk is full: refusing new replicas and appends until a write succeeds or a replica is freed") }
        return full ? .diskFull(r.key, why) : .ioError(r.key, why)
    }

    /// Writes a closed replica's whole buffer with O_DIRECT straight from its aligned storage (padded
    /// to 4 KiB, then truncated back): a segment goes to the disk without passing through the page
    /// cache, whose copy and allocation cost more CPU than the rest of the append path. Returns false
    /// to fall back to a buffered write (the file end not aligned, a small buffer, a refusal).
    func directWrite(_ r: Replica) -> Bool {
        let count = r.buffer.count
        guard r.closed, r.fileLength % 4096 == 0, count >= 64 << 10 else { return false }
        let padded = r.buffer.padToPage()
        let dfd = Glibc.open(r.path, O_WRONLY | O_CLOEXEC | 0o40000)  // O_DIRECT
        guard dfd >= 0 else { return false }
        defer { Glibc.close(dfd) }
        guard Sys.pwriteAsMuch(dfd, r.buffer.base!, count: padded, at: Int(r.fileLength)).error == 0 else {
            if r.fd < 0 { r.fd = Glibc.open(r.path, O_RDWR | O_CLOEXEC) }
            _ = ftruncate(r.fd >= 0 ? r.fd : dfd, off_t(r.fileLength))
            return false
        }
        if r.fd < 0 { r.fd = Glibc.open(r.path, O_RDWR | O_CLOEXEC) }
        return ftruncate(r.fd, off_t(r.fileLength) + off_t(count)) == 0
    }

    /// Gives a written-out replica's buffer storage to the pool (a few are kept); r's buffer is empty after.
    func recycle(_ r: Replica) {
        let b = r.buffer
        r.buffer = ReplicaBuffer()
        if b.capacity >= 8 << 20 {
            // Kept while spares and buffered bytes together stay within the hold-back limit, twice
            // the budget: a busy node takes them again, and one whose flusher lags keeps fewer. A
            // fresh buffer costs faulting in and zeroing its huge pages on the receive path, and on
            // a VM whose freed memory the host takes back (free page reporting) a host fault per
            // page as well: 19% of both vCPUs in an R=3 run when the pool was capped at the budget.
            // An idle node gives them back (see SpareBuffers.trim).
            lock.withLock { if (spares.count + 1) * b.capacity + buffered <= hardLimit { spares.put(b) } }
        }
    }

    /// The largest entry boundary (or the header end) at or below `offset`.
    func lastBoundary(_ r: Replica, upTo offset: UInt64) -> UInt64 {
        var b = r.fileLength
        if b == 0 { b = offset >= UInt64(SegmentFormat.headerSize) ? UInt64(SegmentFormat.headerSize) : 0 }
        for e in r.entries where e.offset >= r.fileLength {
            let end = e.offset + UInt64(SegmentFormat.entryHeaderSize) + UInt64(e.header.length)
            if end <= offset { b = end } else { break }
        }
        return b
    }
}
