import LegatoCore
import Testing
@testable import LegatoAgent

/// The eviction's choice of victims on a page table, without a program under it.
@Suite struct VictimChoiceTests {
    static let base: UInt64 = 0x7f00_0000_0000
    let table = PageTable(budget: LocalBudget(pages: 1024))
    let region: Region

    init() {
        region = table.regions.add(start: Self.base, end: Self.base + 32 * UInt64(Page.size)).region
        table.markInstalled(region, 0, 10)  // pages 0..<10 installed in order
    }

    func page(_ i: Int) -> UInt64 { Self.base + UInt64(i * Page.size) }

    /// What the evictor does with the pages it picked.
    func evict(_ addresses: [UInt64]) {
        for a in addresses { region.remove(region.index(of: a), .resident) }
    }

    @Test func pagesAStreamPassedGoFirstMostRecentFirstThenTheOldest() {
        table.consumed.push(page(5), page(8))
        let first = VictimChoice.pick(5, from: table)
        #expect(first == [page(7), page(6), page(5), page(0), page(1)])
        evict(first)
        #expect(VictimChoice.pick(3, from: table) == [page(2), page(3), page(4)])
    }

    @Test func pagesNoLongerResidentAreSkipped() {
        region.remove(0, .resident)
        region.remove(1, .resident)
        #expect(VictimChoice.pick(2, from: table) == [page(2), page(3)])
    }

    @Test func aFIFORunDryIsRebuiltFromTheResidentPages() {
        let all = VictimChoice.pick(100, from: table)
        #expect(all == (0..<10).map(page), "every resident page once, oldest first")
        // Nothing was evicted: the next round finds the FIFO empty and rebuilds it from the table.
        #expect(VictimChoice.pick(3, from: table) == [page(0), page(1), page(2)])
        evict((0..<10).map(page))
        #expect(VictimChoice.pick(3, from: table).isEmpty)
    }
}
