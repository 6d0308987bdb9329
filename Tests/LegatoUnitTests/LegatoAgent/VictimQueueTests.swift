import Testing
@testable import LegatoAgent

/// The agent's eviction queues, without a program under them.
@Suite struct VictimQueueTests {
    @Test func victimsComeOutOldestFirstAcrossGrowth() {
        var q = VictimQueue()
        for a in 0..<3000 { q.push(UInt64(a) << 12) }
        for a in 0..<1000 { #expect(q.pop() == UInt64(a) << 12) }
        for a in 3000..<5000 { q.push(UInt64(a) << 12) }  // wraps, then grows
        var out: [UInt64] = []
        while let a = q.pop() { out.append(a) }
        #expect(out == (1000..<5000).map { UInt64($0) << 12 })
    }

    @Test func passedPagesComeOutMostRecentFirstAndAbsurdRangesAreRefused() {
        var c = ConsumedRanges()
        c.push(0x10000, 0x12000)
        c.push(0x40000, 0x41000)
        c.push(0x1000, 0x1000)  // empty
        // A stream's whole gap to a far address (say, from the heap to the stack) is not "passed".
        c.push(0x5555_0000_0000, 0x7ffc_0000_0000)
        var out: [UInt64] = []
        while let p = c.popPage() { out.append(p) }
        #expect(out == [0x40000, 0x11000, 0x10000])
    }
}
