/// The buffer storage of written-out replicas, kept for new ones so that opening a replica does not
/// cost zeroing a fresh segment's worth of memory. Guarded by the store's lock.
struct SpareBuffers {
    private var buffers: [ReplicaBuffer] = []

    var count: Int { buffers.count }
    var bytes: Int { buffers.reduce(0) { $0 + $1.capacity } }

    /// A spare buffer, emptied, if one is free.
    mutating func pop() -> ReplicaBuffer? {
        guard let spare = buffers.popLast() else { return nil }
        spare.removeAll()
        return spare
    }

    mutating func put(_ b: ReplicaBuffer) { buffers.append(b) }

    /// Gives all but `keeping` spares back to the system (an idle node).
    mutating func trim(keeping: Int) {
        guard buffers.count > keeping else { return }
        buffers.removeLast(buffers.count - keeping)
    }
}
