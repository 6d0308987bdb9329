/// Eviction order: a FIFO of page addresses in install order (LegoOS evicts FIFO too).
/// Entries may go stale (page unmapped or evicted); the evictor skips those.
struct VictimQueue {
    private var ring: [UInt64] = Array(repeating: 0, count: 1024)
    private var head = 0
    private(set) var count = 0

    mutating func push(_ address: UInt64) {
        if count == ring.count { grow() }
        ring[(head + count) & (ring.count - 1)] = address
        count += 1
    }

    mutating func pop() -> UInt64? {
        guard count > 0 else { return nil }
        let a = ring[head]
        head = (head + 1) & (ring.count - 1)
        count -= 1
        return a
    }

    mutating func removeAll() {
        head = 0
        count = 0
    }

    private mutating func grow() {
        var bigger = [UInt64](repeating: 0, count: ring.count * 2)
        for i in 0..<count { bigger[i] = ring[(head + i) & (ring.count - 1)] }
        ring = bigger
        head = 0
    }
}
