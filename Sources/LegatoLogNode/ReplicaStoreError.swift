import LegatoSegmentLog

/// Every way a replica operation can be refused (LogService answers each with its wire status).
extension ReplicaStore {
    public enum StoreError: Error, CustomStringConvertible, Equatable {
        case noSuchReplica(Key)
        case alreadyExists(Key)
        case notOwner(Key)
        case closed(Key)
        case outOfOrder(Key, expected: UInt32, got: UInt32)
        case diskFull(Key, String)
        case ioError(Key, String)
        case bufferFull(Key, String)
        case busy(Key)
        case badEntry(Key, String)

        public var description: String {
            switch self {
            case .noSuchReplica(let k): return "no replica of \(k) here"
            case .alreadyExists(let k): return "a replica of \(k) exists already"
            case .notOwner(let k): return "the replica of \(k) belongs to another writer"
            case .closed(let k): return "the replica of \(k) is closed"
            case .outOfOrder(let k, let e, let g): return "append to \(k) starts at entry \(g), expected \(e)"
            case .diskFull(let k, let why): return "disk full storing \(k): \(why)"
            case .ioError(let k, let why): return "I/O error storing \(k): \(why)"
            case .bufferFull(let k, let why): return "buffer full (\(why)): cannot take more of \(k)"
            case .busy(let k): return "an append to \(k) is still arriving"
            case .badEntry(let k, let why): return "append to \(k) refused: \(why)"
            }
        }
    }
}
