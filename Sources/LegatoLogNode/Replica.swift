import Foundation
import Glibc
import LegatoCore
import LegatoSegmentLog
import LegatoSystem

/// One segment replica: its catalogue of entries, its buffer and its file (its own lock guards them).
extension ReplicaStore {
    struct EntryRef {
        var offset: UInt64   // file offset of the entry header (>= fileLength: still in the buffer)
        var header: SegmentFormat.EntryHeader
    }

    final class Replica {
        let lock = Lock()
        let key: Key
        let path: String
        var owner: [UInt8]
        var fd: Int32 = -1
        var onDisk = true       // false until the file of a replica opened here is created
        var entries: [EntryRef] = []
        var fileLength: UInt64 = 0
        var syncedLength: UInt64 = 0
        var buffer = ReplicaBuffer()
        var closed = false
        var digest: UInt32 = 0
        var dataBytes: UInt64 = 0
        var corrupt = 0
        var ioError: String?
        var receivingAt: Int?   // an append being received straight into the buffer, at this offset
        var lastAppendNanos = monotonicNanos()
        init(key: Key, path: String, owner: [UInt8]) {
            self.key = key
            self.path = path
            self.owner = owner
        }
        var totalLength: UInt64 { fileLength + UInt64(buffer.count) }
    }
}
