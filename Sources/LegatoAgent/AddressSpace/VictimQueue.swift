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

/// Ranges of pages sequential streams have moved past, most recent last (drop-behind victims).
struct ConsumedRanges {
    private var ranges: [(start: UInt64, end: UInt64)] = []
    static let limit = 4096

    /// Longest range taken: a stream passes a few read-ahead windows between two faults.
    static let maxRange: UInt64 = 1 << 30

    mutating func push(_ start: UInt64, _ end: UInt64) {
        guard end > start, end - start <= ConsumedRanges.maxRange else { return }
        if ranges.count == ConsumedRanges.limit { ranges.removeFirst(ConsumedRanges.limit / 2) }
        ranges.append((start, end))
    }

    /// The most recently passed page not yet handed out.
    mutating func popPage() -> UInt64? {
        while let last = ranges.last {
            if last.end <= last.start {
                ranges.removeLast()
                continue
            }
            let page = last.end - 4096
            ranges[ranges.count - 1].end = page
            return page
        }
        return nil
    }

    mutating func removeAll() { ranges.removeAll() }
}
