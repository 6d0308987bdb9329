import Testing
import LegatoCore
@testable import LegatoMemoryNode

@Suite struct PageStoreTests {
    let owner = [UInt8](repeating: 1, count: 32)
    let other = [UInt8](repeating: 2, count: 32)

    func page(_ seed: UInt64) -> [UInt8] {
        (0..<Page.size).map { UInt8(truncatingIfNeeded: seed &* 31 &+ UInt64($0)) }
    }

    func store(_ s: PageStore, _ space: UInt64, _ vpns: [UInt64], seed: UInt64 = 0, owner o: [UInt8]? = nil) throws {
        let data = vpns.flatMap { page($0 &+ seed) }
        try vpns.withUnsafeBufferPointer { v in
            try data.withUnsafeBytes { try s.store(space: space, owner: o ?? owner, epoch: 0, vpns: v, pages: $0.baseAddress!) }
        }
    }

    func fetch(_ s: PageStore, _ space: UInt64, _ vpns: [UInt64], owner o: [UInt8]? = nil, frozen: Bool = false,
               version: PageStore.Version? = nil) throws -> [[UInt8]?] {
        var present = [UInt8](repeating: 9, count: vpns.count)
        var out = [UInt8](repeating: 0, count: vpns.count * Page.size)
        let found = try vpns.withUnsafeBufferPointer { v in
            try out.withUnsafeMutableBytes {
                try s.fetch(space: space, owner: o ?? owner, vpns: v, present: &present, out: $0.baseAddress!, version: version ?? (frozen ? .frozen : .current))
            }
        }
        var k = 0
        return vpns.indices.map { i in
            guard present[i] == 1 else { return nil }
            defer { k += 1 }
            return Array(out[k * Page.size..<(k + 1) * Page.size])
        }.also { #expect($0.compactMap { $0 }.count == found) }
    }

    @Test func storesFetchesOverwritesAndDiscards() throws {
        let s = PageStore(limits: .init(capacityBytes: 64 << 20, segmentBytes: 1 << 20))
        try s.createSpace(7, owner: owner)
        try store(s, 7, [1, 2, 3])
        var got = try fetch(s, 7, [3, 1, 9])
        #expect(got[0] == page(3) && got[1] == page(1) && got[2] == nil)
        try store(s, 7, [1], seed: 100)
        #expect(try fetch(s, 7, [1])[0] == page(101))
        #expect(s.stats.livePages == 3)
        #expect(try s.discard(space: 7, owner: owner, ranges: [(2, 5)]) == 2)
        got = try fetch(s, 7, [1, 2, 3])
        #expect(got[0] == page(101) && got[1] == nil && got[2] == nil)
        try s.drop(space: 7, owner: owner)
        #expect(s.stats.livePages == 0)
        #expect(throws: PageStore.StoreError.noSuchSpace(AddressSpaceID(7))) { _ = try fetch(s, 7, [1]) }
    }

    /// A fetch answer is sent from the segments without a copy: pages located before their
    /// segment is released (overwritten everywhere, then cleaned or dropped) still read as located.
    @Test func locatedPagesOutliveTheirSegment() throws {
        let s = PageStore(limits: .init(capacityBytes: 4 << 20, segmentBytes: 1 << 20))
        try s.createSpace(7, owner: owner)
        let perSegment = (1 << 20) / MemorySegment.entrySize
        try store(s, 7, Array(0..<UInt64(perSegment)))
        var present = [UInt8](repeating: 0, count: 3)
        let wanted: [UInt64] = [0, 5, UInt64(perSegment - 1)]
        let located = try wanted.withUnsafeBufferPointer { try s.locate(space: 7, owner: owner, vpns: $0, present: &present) }
        #expect(present == [1, 1, 1] && located.pages.count == 3)
        // Overwrite every page of the first segment, then drop the space: the segment is released.
        try store(s, 7, Array(0..<UInt64(perSegment)), seed: 1000)
        try s.drop(space: 7, owner: owner)
        #expect(s.stats.livePages == 0)
        for (k, vpn) in wanted.enumerated() {
            #expect(Array(located.pages[k]) == page(vpn), "page \(vpn) changed under a located answer")
        }
    }

    @Test func aFreezeKeepsEveryPageAsItWas() throws {
        let s = PageStore(limits: .init(capacityBytes: 8 << 20, segmentBytes: 1 << 20))
        try s.createSpace(7, owner: owner)
        try store(s, 7, Array(1...100))
        try s.freeze(space: 7, owner: owner)
        #expect(throws: PageStore.StoreError.self) { try s.freeze(space: 7, owner: owner) }
        #expect(throws: PageStore.StoreError.self) { try s.freeze(space: 7, owner: other) }
        // Overwritten many times over (the cleaner moves segments meanwhile), discarded, and new.
        // (Each round also adds a page that stays, so segments do not simply empty out.)
        for round in 1...30 { try store(s, 7, Array(1...60) + [UInt64(1000 + round)], seed: UInt64(round) * 1000) }
        _ = try s.discard(space: 7, owner: owner, ranges: [(vpn: 61, count: 20)])
        try store(s, 7, [500])
        #expect(s.stats.cleanerRuns > 0)
        let then = try fetch(s, 7, [1, 60, 61, 90, 500], frozen: true)
        #expect(then[0] == page(1) && then[1] == page(60) && then[2] == page(61) && then[3] == page(90) && then[4] == nil)
        let now = try fetch(s, 7, [1, 61, 90, 500])
        #expect(now[0] == page(1 + 30000) && now[1] == nil && now[2] == page(90) && now[3] == page(500))
        #expect(try s.release(space: 7, owner: owner) == 80, "60 overwritten and 20 discarded versions kept")
        #expect(s.stats.livePages == 100 - 20 + 1 + 30)
        #expect(throws: PageStore.StoreError.self) { try fetch(s, 7, [1], frozen: true) }
    }

    @Test func aCommittedFreezeIsRetainedUntilTheNextCommit() throws {
        let s = PageStore(limits: .init(capacityBytes: 8 << 20, segmentBytes: 1 << 20))
        try s.createSpace(7, owner: owner)
        try store(s, 7, Array(1...100))
        #expect(throws: PageStore.StoreError.self) { try fetch(s, 7, [1], version: .checkpoint(1)) }
        try s.freeze(space: 7, owner: owner)
        try store(s, 7, Array(1...10), seed: 1000)   // while the checkpoint commits
        #expect(s.stats.frozenVersions == 10)
        #expect(try s.commit(space: 7, owner: owner, epoch: 1) == 0)
        #expect(try s.describe(space: 7, owner: owner).retainedEpoch == 1)
        #expect(s.stats.retainingSpaces == 1 && s.stats.retainedVersions == 10 && s.stats.frozenVersions == 0)
        #expect(try fetch(s, 7, [1, 50], version: .checkpoint(1)) == [page(1), page(50)])
        #expect(throws: PageStore.StoreError.self) { try fetch(s, 7, [1], version: .checkpoint(2)) }
        #expect(throws: PageStore.StoreError.self) { try fetch(s, 7, [1], owner: other, version: .checkpoint(1)) }

        // Overwritten over and over (the cleaner moves segments meanwhile) and discarded: checkpoint 1
        // still reads as it was.
        for round in 1...30 { try store(s, 7, Array(1...60) + [UInt64(1000 + round)], seed: UInt64(round) * 2000) }
        _ = try s.discard(space: 7, owner: owner, ranges: [(vpn: 61, count: 20)])
        #expect(s.stats.cleanerRuns > 0)
        #expect(try fetch(s, 7, [1, 60, 61, 90, 1001], version: .checkpoint(1)) == [page(1), page(60), page(61), page(90), nil])
        #expect(try fetch(s, 7, [1, 61])[0] == page(1 + 60000))

        // An aborted checkpoint (a freeze released) leaves the retained one as it is, still kept up to date.
        try s.freeze(space: 7, owner: owner)
        try store(s, 7, [90], seed: 5000)
        _ = try s.release(space: 7, owner: owner)
        #expect(try fetch(s, 7, [90], version: .checkpoint(1))[0] == page(90))
        #expect(try fetch(s, 7, [90])[0] == page(5090))

        // The next commit replaces it: the versions only checkpoint 1 needed die.
        try s.freeze(space: 7, owner: owner)
        try store(s, 7, [1], seed: 9000)
        #expect(try s.commit(space: 7, owner: owner, epoch: 2) == 60 + 20 + 1, "1-60 overwritten, 61-80 discarded, 90 overwritten")
        #expect(try fetch(s, 7, [1, 90, 1001], version: .checkpoint(2)) == [page(1 + 60000), page(5090), page(1001 + 2000)])
        #expect(throws: PageStore.StoreError.self) { try fetch(s, 7, [1], version: .checkpoint(1)) }
        #expect(s.stats.livePages == 80 + 30 + 1, "the pages now (1-60, 81-100, the 30 added) and one old version of page 1")
        try s.drop(space: 7, owner: owner)
        #expect(s.stats.livePages == 0)
        #expect(s.stats.segments <= 1)
    }

    @Test func keepsAddressSpacesApart() throws {
        let s = PageStore(limits: .init(capacityBytes: 16 << 20, segmentBytes: 1 << 20))
        try s.createSpace(1, owner: owner)
        try store(s, 1, [10])
        #expect(throws: PageStore.StoreError.notOwner(AddressSpaceID(1))) { _ = try fetch(s, 1, [10], owner: other) }
        #expect(throws: PageStore.StoreError.notOwner(AddressSpaceID(1))) { try store(s, 1, [10], owner: other) }
        #expect(throws: PageStore.StoreError.notOwner(AddressSpaceID(1))) { try s.drop(space: 1, owner: other) }
        #expect(throws: PageStore.StoreError.notOwner(AddressSpaceID(1))) { try s.createSpace(1, owner: other) }
        #expect(try fetch(s, 1, [10])[0] == page(10))
    }

    @Test func refusesWholeStoresOverCapacityAndLosesNothing() throws {
        // 4 segments of 256K: 3 usable for data, 90% of them live at most.
        let s = PageStore(limits: .init(capacityBytes: 1 << 20, segmentBytes: 256 << 10))
        try s.createSpace(1, owner: owner)
        let limit = s.livePageLimit
        try store(s, 1, Array(0..<UInt64(limit)))
        #expect(throws: PageStore.StoreError.self) { try store(s, 1, [UInt64(limit), UInt64(limit) + 1]) }
        // Overwrites of live pages still fit (the cleaner reclaims the dead versions).
        for round in 0..<5 { try store(s, 1, Array(0..<UInt64(limit)), seed: UInt64(round) * 1000) }
        #expect(s.stats.cleanerRuns > 0)
        let all = try fetch(s, 1, Array(0..<UInt64(limit)))
        for (i, p) in all.enumerated() { #expect(p == page(UInt64(i) + 4000)) }
        #expect(s.stats.segments + s.stats.spareSegments <= s.maxSegments)
    }

    /// The next head segment is made ahead (outside the lock), kept within the capacity, and used.
    @Test func makesTheNextSegmentAheadWithinTheCapacity() throws {
        let s = PageStore(limits: .init(capacityBytes: 4 << 20, segmentBytes: 256 << 10))  // 16 segments
        try s.createSpace(1, owner: owner)
        let perSegment = (256 << 10) / MemorySegment.entrySize
        try store(s, 1, [0])  // the spare made first became the head
        #expect(s.stats.segments == 1 && s.stats.spareSegments == 0)
        try store(s, 1, [1])
        #expect(s.stats.segments == 1 && s.stats.spareSegments == 1)
        try store(s, 1, Array(2..<UInt64(perSegment + 1)))  // fills the head, goes on in the spare
        #expect(s.stats.segments == 2 && s.stats.spareSegments == 0)
        try store(s, 1, [UInt64(perSegment + 1)])
        #expect(s.stats.spareSegments == 1, "a new spare once the last one became the head")
        for (i, p) in try fetch(s, 1, Array(0...UInt64(perSegment + 1))).enumerated() { #expect(p == page(UInt64(i))) }
        // With room for only two segments (head and the cleaner's reserve), none is made ahead.
        let small = PageStore(limits: .init(capacityBytes: 512 << 10, segmentBytes: 256 << 10))
        try small.createSpace(1, owner: owner)
        try store(small, 1, [0, 1, 2])
        #expect(small.stats.spareSegments == 0)
    }

    @Test func releasesSegmentsOnceEmpty() throws {
        let s = PageStore(limits: .init(capacityBytes: 8 << 20, segmentBytes: 256 << 10))
        try s.createSpace(1, owner: owner)
        try store(s, 1, Array(0..<300))
        #expect(s.stats.segments >= 5)
        try s.drop(space: 1, owner: owner)
        #expect(s.stats.segments <= 1)
    }
}

extension Array {
    func also(_ body: (Self) -> Void) -> Self {
        body(self)
        return self
    }
}
