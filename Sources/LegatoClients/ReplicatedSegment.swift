import Foundation
import LegatoCore
import LegatoSegmentLog
import LegatoSystem
import LegatoWire

extension LogWriter {
    /// One segment of the log and the log nodes holding its replicas.
    final class ReplicatedSegment {
        let id: UInt64
        var replicas: [UInt64]
        var entries: [LogEntry] = []  // kept while open, to re-replicate
        var count: UInt32 = 0
        var bytes = 0
        var closed = false
        var unsynced = false
        var opening: [(node: UInt64, request: UInt32)] = []  // OPEN_REPLICA answers still to collect
        init(id: UInt64, replicas: [UInt64]) {
            self.id = id
            self.replicas = replicas
        }
    }

    public enum LogError: Error, CustomStringConvertible {
        case noLogNodes
        case lost(segment: UInt64)
        case unreadable(segment: UInt64, String)
        case unreadableLog(writer: UInt64, segment: UInt64, String)
        case syncFailed(node: String, segment: UInt64, String)
        /// Every log node that could take the entries refused them for room (a full disk or
        /// buffer); what the log holds is intact, and a later append may find room.
        case refused(String)

        public var description: String {
            switch self {
            case .noLogNodes: return "no live log node to write to"
            case .lost(let s): return "every replica of segment \(s) is gone"
            case .unreadable(let s, let why): return "no replica of segment \(s) could be read: \(why)"
            case .unreadableLog(let w, let s, let why): return "segment \(s) of log \(String(w, radix: 16)) is unreadable: \(why)"
            case .syncFailed(let node, let s, let why): return "log node \(node) could not sync segment \(s): \(why)"
            case .refused(let why): return "the log nodes have no room: \(why)"
            }
        }
    }
}
