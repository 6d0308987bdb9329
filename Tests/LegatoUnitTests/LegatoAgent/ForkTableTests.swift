import LegatoCore
import Testing
@testable import LegatoAgent

/// A fork's copy of a page table: what each side reads remotely and stores under afterwards, and
/// when a shared remote copy may go.
@Suite struct ForkTableTests {
    static let base: UInt64 = 0x7f00_0000_0000
    let budget = LocalBudget(pages: 1024)
    let keys = KeyAllocator()
    let parent: PageTable
    let region: Region

    init() {
        parent = PageTable(budget: budget, keys: keys)
        region = parent.regions.add(start: Self.base, end: Self.base + 8 * UInt64(Page.size)).region
        parent.markInstalled(region, 0, 2)                    // pages 0, 1: resident, never stored
        region.insert(2, .remote)                             // page 2: only on a memory node
        parent.markInstalled(region, 3, 1)
        region.insert(3, .remote)                             // page 3: fetched, also on a node
        region.insert(4, [.remote, .fetching])                // page 4: on its way from a node
    }

    func forked(shared: SharedKeys = SharedKeys()) -> PageTable {
        let child = PageTable(budget: budget, keys: keys)
        child.copyForFork(of: parent) { shared.share($0) }
        return child
    }

    @Test func theChildGetsThePagesAndCountsItsResidentOnes() {
        let before = budget.residentPages
        let child = forked()
        let c = child.regions.regions[0]
        #expect(child.regions.regions.count == 1 && c.start == region.start && c.end == region.end)
        #expect(child.residentPages == 3 && budget.residentPages == before + 3)
        #expect(c.state(2) == .remote && c.state(4) == .remote, "an answer on its way is the parent's: the child fetches its own")
        #expect(c.state(5).isEmpty)
        #expect(VictimChoice.pick(10, from: child).count == 3, "its resident pages are victims like any")
    }

    @Test func bothSidesReadTheSharedCopiesAndStoreUnderFreshKeys() {
        let oldKeys = (0..<8).map { region.key(at: $0) }
        let shared = SharedKeys()
        let child = forked(shared: shared)
        let c = child.regions.regions[0]
        for i in [2, 3, 4] {
            #expect(region.key(at: i) == oldKeys[i] && c.key(at: i) == oldKeys[i])
            #expect(shared.isShared(oldKeys[i]))
        }
        #expect(shared.count == 3)
        let storeKeys = Set((0..<8).map { region.storeKey(at: $0) } + (0..<8).map { c.storeKey(at: $0) })
        #expect(storeKeys.count == 16 && storeKeys.isDisjoint(with: oldKeys), "no side ever overwrites what the other reads")
        // A page never stored reads its own key (nothing is shared for it).
        #expect(c.key(at: 0) == c.storeKey(at: 0) && region.key(at: 0) == region.storeKey(at: 0))
    }

    @Test func aSharedCopyGoesOnlyWithItsLastHolder() {
        let shared = SharedKeys()
        let child = forked(shared: shared)
        let c = child.regions.regions[0]
        let key = region.key(at: 2)
        // The parent stores page 2 anew: it lets go of the shared copy, the child still reads it.
        #expect(region.dropInherited(2) == key && region.key(at: 2) == region.storeKey(at: 2))
        #expect(shared.release(key) == false)
        #expect(c.key(at: 2) == key)
        // Then the child lets go too: the copy may be discarded.
        #expect(c.dropInherited(2) == key)
        #expect(shared.release(key) == true)
        // A key never shared is discarded at its one release.
        #expect(shared.release(c.storeKey(at: 7)) == true)
    }

    @Test func aSecondForkSharesTheCopiesOnce() {
        let shared = SharedKeys()
        _ = forked(shared: shared)
        let key = region.key(at: 2)
        let second = forked(shared: shared)
        #expect(second.regions.regions[0].key(at: 2) == key)
        // Three holders: the parent and two children.
        #expect(shared.release(key) == false && shared.release(key) == false && shared.release(key) == true)
    }

    @Test func keysFollowPagesWhenARegionIsSplitOrMoved() {
        _ = forked()
        let key = region.key(at: 3)
        let parts = parent.regions.remove(start: Self.base + 2 * UInt64(Page.size), end: Self.base + 4 * UInt64(Page.size))
        #expect(parts.count == 1 && parts[0].key(at: 1) == key)
        let rest = parent.regions.find(Self.base + 4 * UInt64(Page.size))!
        let found = parent.region(forKey: rest.key(at: 0))
        #expect(found?.region === rest && found?.index == 0, "found by a shared key")
    }
}
