import Foundation
import Glibc
import LegatoCore
import LegatoSegmentLog
import LegatoSystem

/// The store's counters and sizes, for STATS and /metrics.
extension ReplicaStore {
    public struct Stats {
        public var replicas: Int, openReplicas: Int, bufferedBytes: Int, bufferedPeakBytes: Int, appendWaits: Int, spareBytes: Int, freshBuffers: Int
        /// Memory the replicas' buffers hold (capacity, written out or not; spares not included).
        public var bufferStorageBytes: Int
        public var diskBytes: UInt64
        public var tornTails: Int, corruptEntries: Int, quarantined: Int, flushes: Int, bytesWritten: UInt64, ioErrors: Int
    }

    public var stats: Stats {
        let all = lock.withLock { Array(replicas.values) }
        let (open, disk, storage) = all.reduce((0, UInt64(0), 0)) { acc, r in
            r.lock.withLock { (acc.0 + (r.closed ? 0 : 1), acc.1 + r.fileLength, acc.2 + r.buffer.capacity) }
        }
        return lock.withLock {
            Stats(replicas: replicas.count, openReplicas: open, bufferedBytes: buffered, bufferedPeakBytes: bufferedPeak,
                  appendWaits: appendWaits, spareBytes: spares.bytes, freshBuffers: freshBuffers, bufferStorageBytes: storage, diskBytes: disk, tornTails: tornTails,
                  corruptEntries: corruptEntries, quarantined: quarantinedFiles, flushes: flushes, bytesWritten: bytesWritten, ioErrors: ioErrors)
        }
    }

    /// Free bytes on the file system holding the replicas.
    public var freeDiskBytes: UInt64 {
        var s = statvfs()
        guard statvfs(directory, &s) == 0 else { return 0 }
        return UInt64(s.f_bavail) * UInt64(s.f_frsize)
    }
}

func hex16(_ v: UInt64) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: max(0, 16 - s.count)) + s
}
