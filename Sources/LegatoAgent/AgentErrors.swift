import Glibc

/// Why the run's remote memory could not be set up.
public enum RemoteMemoryError: Error, CustomStringConvertible, Equatable {
    case noLiveMemoryNode(coordinator: String)
    case unreachable(node: String, String)
    case noWriteBackLog(node: String)
    public var description: String {
        switch self {
        case .noWriteBackLog(let node):
            return "memory node \(node) keeps no write-back log (it was started without --coordinator), so --memory-replication log cannot protect the run's pages there; start it with --coordinator, or run with --memory-replication none"
        case .noLiveMemoryNode(let c): return "the coordinator at \(c) knows no live memory node"
        case .unreachable(let node, let why): return "cannot reach memory node \(node): \(why)"
        }
    }
}

/// Why an address space could not be managed as asked.
public enum AddressSpaceError: Error, CustomStringConvertible, Equatable {
    case missingUffdFeatures(pid: pid_t, features: UInt64)
    case unreadableMaps(pid: pid_t)
    case shortAdvice(tid: pid_t, advised: Int, wanted: Int)
    public var description: String {
        switch self {
        case .missingUffdFeatures(let pid, let f): return "userfaultfd of pid \(pid) lacks features 0x\(String(f, radix: 16))"
        case .unreadableMaps(let pid): return "cannot read /proc/\(pid)/maps"
        case .shortAdvice(let tid, let r, let want): return "process_madvise(MADV_DONTNEED) in tid \(tid) advised \(r) of \(want) bytes"
        }
    }
}
