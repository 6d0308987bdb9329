import Glibc
import LegatoCore
import LegatoSystem

/// The memory node's log-structured page store: segments appended to, a hash index from
/// (address space, vpn) to the newest entry, and a cleaner that compacts the least-live
/// segment when a new one is needed and none may be allocated.
///
/// Capacity: at most `capacity / segmentSize` segments exist. One is kept back for the
/// cleaner, and live pages are held to 90% of the rest so a clean always frees space.
/// A store that would pass that is refused whole (`capacityExceeded`); nothing is dropped.
/// Thread-safe (one lock).
public final class PageStore {
    public struct Limits {
        public var capacityBytes: UInt64
        public var segmentBytes: Int
        public init(capacityBytes: UInt64, segmentBytes: Int = 8 << 20) {
            self.capacityBytes = capacityBytes
            self.segmentBytes = segmentBytes
        }
    }

    public enum StoreError: Error, Equatable, CustomStringConvertible {
        case noSuchSpace(AddressSpaceID)
        case notOwner(AddressSpaceID)
        case capacityExceeded(requested: Int, livePages: Int, limitPages: Int)
        case outOfMemory
        case frozen(AddressSpaceID)
        case notFrozen(AddressSpaceID)
        case notRetained(AddressSpaceID, wanted: UInt32, retained: UInt32)

        public var description: String {
            switch self {
            case .noSuchSpace(let s): return "address space \(s) does not exist here"
            case .notOwner(let s): return "address space \(s) belongs to another client"
            case .capacityExceeded(let n, let live, let limit):
                return "storing \(n) pages would exceed capacity (\(live) of \(limit) pages live)"
            case .outOfMemory: return "mmap of a new segment failed"
            case .frozen(let s): return "address space \(s) is frozen already"
            case .notFrozen(let s): return "address space \(s) is not frozen"
            case .notRetained(let s, let wanted, let retained):
                return "address space \(s) retains " + (retained == 0 ? "no checkpoint" : "checkpoint \(retained)") + ", not \(wanted)"
            }
        }
    }

    private final class Space {
        let owner: [UInt8]
        /// Dropped when its owner's last connection closes (see `detach`).
        var ephemeral = false
        /// When its owner's last connection closed (monotonic ns); nil while the owner is connected.
        var detachedAt: UInt64?
        var index: [UInt64: UInt64] = [:]  // vpn -> (slot << 32 | offset)
        /// While frozen: the version each page had at the freeze, for pages stored or discarded
        /// since (`absent`: it had none). Those entries stay live until the release or commit.
        var frozen: [UInt64: UInt64]?
        /// The committed checkpoint this space retains (0: none): a freeze that was committed, kept
        /// up to date the same way (the version at that checkpoint of every page changed since),
        /// until the next commit replaces it or the space is dropped.
        var retainedEpoch: UInt32 = 0
        var retained: [UInt64: UInt64] = [:]
        init(owner: [UInt8]) { self.owner = owner }

        /// Which maps keep the current version of `vpn` at its next change: the freeze and the
        /// retained checkpoint each keep the first one they see.
        func keepers(_ vpn: UInt64) -> (frozen: Bool, retained: Bool) {
            (frozen != nil && frozen![vpn] == nil, retainedEpoch != 0 && retained[vpn] == nil)
        }
    }

    private static let absent = UInt64.max

    public let limits: Limits
    private let lock = Lock()
    private var spaces: [UInt64: Space] = [:]
    private var segments: [MemorySegment?] = []
    private var freeSlots: [Int] = []
    private var head: MemorySegment?
    /// A populated segment made ahead, outside the lock, for the next head (see prepareSpare).
    private var spare: MemorySegment?
    private var allocated = 0
    private var livePages = 0
    private var nextVersion: UInt64 = 1
    public let maxSegments: Int
    public let livePageLimit: Int

    // counters
    private var storedPages = 0
    private var fetchedPages = 0
    private var missedPages = 0
    private var discardedPages = 0
    private var cleanerRuns = 0
    private var cleanedPages = 0
    private var refusedStores = 0

    public init(limits: Limits) {
        self.limits = limits
        let perSegment = limits.segmentBytes / MemorySegment.entrySize
        maxSegments = max(2, Int(limits.capacityBytes / UInt64(limits.segmentBytes)))
        livePageLimit = (maxSegments - 1) * perSegment * 9 / 10
    }

    /// Space `id`, if `owner` owns it (nil: anyone's, for the node's own reads). Lock held.
    private func space(_ id: UInt64, _ owner: [UInt8]?) throws -> Space {
        guard let s = spaces[id] else { throw StoreError.noSuchSpace(AddressSpaceID(id)) }
        if let owner, s.owner != owner { throw StoreError.notOwner(AddressSpaceID(id)) }
        return s
    }

    /// Throws unless space `id` exists and `owner` owns it.
    public func checkOwner(space id: UInt64, owner: [UInt8]) throws {
        try lock.withLock { _ = try space(id, owner) }
    }

    /// The spaces `owner` owns.
    public func spaces(owner: [UInt8]) -> [UInt64] {
        lock.withLock { spaces.compactMap { $0.value.owner == owner ? $0.key : nil } }
    }

    /// Creates an address space owned by `owner`; creating it again with the same owner is a no-op.
    public func createSpace(_ id: UInt64, owner: [UInt8], ephemeral: Bool = false) throws {
        try lock.withLock {
            if let s = spaces[id] {
                guard s.owner == owner else { throw StoreError.notOwner(AddressSpaceID(id)) }
                return
            }
            let s = Space(owner: owner)
            s.ephemeral = ephemeral
            spaces[id] = s
        }
    }

    /// `owner`'s last connection closed: its ephemeral spaces go now, the others are marked detached
    /// (see `dropDetached`). Returns how many went.
    @discardableResult
    public func detach(owner: [UInt8]) -> Int {
        let now = monotonicNanos()
        return lock.withLock {
            let gone = spaces.filter { $0.value.ephemeral && $0.value.owner == owner }
            for (id, s) in gone { remove(id, s) }
            for s in spaces.values where s.owner == owner { s.detachedAt = now }
            return gone.count
        }
    }

    /// `owner` is connected again: its spaces are no longer detached.
    public func attach(owner: [UInt8]) {
        lock.withLock { for s in spaces.values where s.owner == owner { s.detachedAt = nil } }
    }

    /// Drops the spaces whose owner has had no connection for `seconds`; returns their ids.
    public func dropDetached(olderThan seconds: Double) -> [UInt64] {
        let now = monotonicNanos()
        return lock.withLock {
            let gone = spaces.filter { _, s in s.detachedAt.map { Double(now &- $0) / 1e9 > seconds } ?? false }
            for (id, s) in gone { remove(id, s) }
            return gone.keys.sorted()
        }
    }

    /// Stores `count` pages (vpns[i] -> pages + i*4096) atomically with respect to capacity.
    public func store(space id: UInt64, owner: [UInt8], epoch: UInt32, vpns: UnsafeBufferPointer<UInt64>,
                      pages: UnsafeRawPointer) throws {
        prepareSpare()
        try lock.withLock {
            let s = try space(id, owner)
            // References each page adds: its new version, plus its old one in every map that keeps
            // it now, less the index's reference to the old one.
            var added = 0
            for v in vpns {
                if s.index[v] != nil {
                    let k = s.keepers(v)
                    added += (k.frozen ? 1 : 0) + (k.retained ? 1 : 0)
                } else {
                    added += 1
                }
            }
            if livePages + added > livePageLimit {
                refusedStores += 1
                throw StoreError.capacityExceeded(requested: vpns.count, livePages: livePages, limitPages: livePageLimit)
            }
            var current: MemorySegment?  // the head, asked for once per segment filled (not a retain per page)
            for (i, vpn) in vpns.enumerated() {
                if current == nil || current!.isFull { current = try headWithRoom() }
                let seg = current!
                let off = seg.append(space: id, vpn: vpn, version: nextVersion, epoch: epoch, page: pages + i * Page.size)
                nextVersion &+= 1
                seg.liveEntries += 1
                livePages += 1
                // One lookup for the new location and the old (the old one is kept for a freeze or
                // the retained checkpoint before its reference goes).
                let old = s.index.updateValue(UInt64(seg.slot) << 32 | UInt64(off), forKey: vpn)
                keepOld(s, vpn, old)
                if let old { unref(old) }
            }
            storedPages += vpns.count
        }
    }

    /// `vpn` is about to change (stored or discarded): the freeze and the retained checkpoint keep
    /// its current version (`old`; nil: it had none) if it is the first change they see.
    private func keepOld(_ s: Space, _ vpn: UInt64, _ old: UInt64?) {
        let loc = old ?? PageStore.absent
        let k = s.keepers(vpn)
        if k.frozen {
            s.frozen![vpn] = loc
            if old != nil { ref(loc) }
        }
        if k.retained {
            s.retained[vpn] = loc
            if old != nil { ref(loc) }
        }
    }

    /// Which version of a page a fetch wants.
    public enum Version: Equatable {
        case current
        case frozen                 // as it was at the space's freeze
        case checkpoint(UInt32)     // as it was at this committed checkpoint, which the space retains
    }

    /// Where the pages asked for are: present[i] tells whether vpns[i] is here, and the answer's
    /// `pages` point at the present ones, in order. The memory stays valid while the answer lives
    /// (it holds the segments: an entry is never written over, and a released segment is unmapped
    /// only when nothing holds it), so callers read it without the store's lock.
    public func locate(space id: UInt64, owner: [UInt8]?, vpns: UnsafeBufferPointer<UInt64>,
                       present: UnsafeMutablePointer<UInt8>, version: Version = .current) throws -> LocatedPages {
        try lock.withLock {
            let s = try space(id, owner)
            let kept: [UInt64: UInt64]
            switch version {
            case .current: kept = [:]
            case .frozen:
                guard let f = s.frozen else { throw StoreError.notFrozen(AddressSpaceID(id)) }
                kept = f
            case .checkpoint(let e):
                guard e != 0, s.retainedEpoch == e else { throw StoreError.notRetained(AddressSpaceID(id), wanted: e, retained: s.retainedEpoch) }
                kept = s.retained
            }
            let answer = LocatedPages()
            answer.pages.reserveCapacity(vpns.count)
            for (i, vpn) in vpns.enumerated() {
                let loc = kept.isEmpty ? s.index[vpn] : (kept[vpn] ?? s.index[vpn])
                if let loc, loc != PageStore.absent, let seg = segments[Int(loc >> 32)] {
                    answer.pages.append(UnsafeRawBufferPointer(start: seg.page(at: Int(loc & 0xffff_ffff)), count: Page.size))
                    if answer.segments.last !== seg { answer.segments.append(seg) }
                    present[i] = 1
                } else {
                    present[i] = 0
                }
            }
            fetchedPages += answer.pages.count
            missedPages += vpns.count - answer.pages.count
            return answer
        }
    }

    /// Pages found by `locate`, and the segments that hold them (kept mapped while this lives).
    public final class LocatedPages {
        public fileprivate(set) var pages: [UnsafeRawBufferPointer] = []
        fileprivate var segments: [MemorySegment] = []
        /// How many segments the pages lie in (at most; runs of one segment count once).
        public var segmentCount: Int { segments.count }

        /// Copies the pages to `out`, one after another.
        public func copy(to out: UnsafeMutableRawPointer) {
            for (k, p) in pages.enumerated() { (out + k * Page.size).copyMemory(from: p.baseAddress!, byteCount: Page.size) }
        }
    }

    /// Copies the present pages among `vpns` to `out`, one after another; returns how many.
    public func fetch(space id: UInt64, owner: [UInt8]?, vpns: UnsafeBufferPointer<UInt64>,
                      present: UnsafeMutablePointer<UInt8>, out: UnsafeMutableRawPointer, version: Version = .current) throws -> Int {
        let found = try locate(space: id, owner: owner, vpns: vpns, present: present, version: version)
        found.copy(to: out)
        return found.pages.count
    }

    /// Forgets pages [vpn, vpn+count) of each range; returns how many existed.
    public func discard(space id: UInt64, owner: [UInt8], ranges: [(vpn: UInt64, count: UInt64)]) throws -> Int {
        try lock.withLock {
            let s = try space(id, owner)
            var n = 0
            for r in ranges {
                if r.count > UInt64(s.index.count) {
                    let end = r.vpn &+ r.count
                    for (vpn, loc) in s.index where vpn >= r.vpn && vpn < end {
                        s.index[vpn] = nil
                        forget(s, vpn, loc)
                        n += 1
                    }
                } else {
                    var v = r.vpn
                    for _ in 0..<r.count {
                        if let loc = s.index.removeValue(forKey: v) {
                            forget(s, v, loc)
                            n += 1
                        }
                        v &+= 1
                    }
                }
            }
            discardedPages += n
            return n
        }
    }

    /// A page left the index: its entry dies, unless the freeze or the retained checkpoint keeps it.
    private func forget(_ s: Space, _ vpn: UInt64, _ loc: UInt64) {
        keepOld(s, vpn, loc)
        unref(loc)
    }

    /// Freezes a space (see MemoryClient.freeze).
    public func freeze(space id: UInt64, owner: [UInt8]) throws {
        try lock.withLock {
            let s = try space(id, owner)
            guard s.frozen == nil else { throw StoreError.frozen(AddressSpaceID(id)) }
            s.frozen = [:]
        }
    }

    /// Ends a freeze (its checkpoint aborted): the versions it kept die. Returns how many there were.
    public func release(space id: UInt64, owner: [UInt8]) throws -> Int {
        try lock.withLock {
            let s = try space(id, owner)
            guard let kept = s.frozen else { throw StoreError.notFrozen(AddressSpaceID(id)) }
            s.frozen = nil
            return unrefAll(kept)
        }
    }

    /// Ends a freeze whose checkpoint `epoch` committed: the space now retains that checkpoint (its
    /// versions stay fetchable as `.checkpoint(epoch)`), and the one it retained before dies.
    /// Returns how many old versions died.
    public func commit(space id: UInt64, owner: [UInt8], epoch: UInt32) throws -> Int {
        try lock.withLock {
            let s = try space(id, owner)
            guard let kept = s.frozen else { throw StoreError.notFrozen(AddressSpaceID(id)) }
            guard epoch != 0 else { throw StoreError.notRetained(AddressSpaceID(id), wanted: 0, retained: s.retainedEpoch) }
            let n = unrefAll(s.retained)
            s.retained = kept
            s.retainedEpoch = epoch
            s.frozen = nil
            return n
        }
    }

    /// What a space holds: its retained checkpoint (0: none), whether it is frozen, its pages.
    public func describe(space id: UInt64, owner: [UInt8]) throws -> (retainedEpoch: UInt32, frozen: Bool, pages: Int) {
        try lock.withLock {
            let s = try space(id, owner)
            return (s.retainedEpoch, s.frozen != nil, s.index.count)
        }
    }

    /// Drops an address space and all its pages.
    public func drop(space id: UInt64, owner: [UInt8]) throws {
        try lock.withLock {
            remove(id, try space(id, owner))
        }
    }

    /// Forgets space `id` and every version it refers to. Lock held.
    private func remove(_ id: UInt64, _ s: Space) {
        discardedPages += s.index.count
        _ = unrefAll(s.index)
        _ = unrefAll(s.frozen ?? [:])
        _ = unrefAll(s.retained)
        spaces[id] = nil
    }

    /// Drops the references of a map's entries; returns how many there were.
    private func unrefAll(_ m: [UInt64: UInt64]) -> Int {
        var n = 0
        for (_, loc) in m where loc != PageStore.absent {
            unref(loc)
            n += 1
        }
        return n
    }

    public struct Stats {
        public var spaces: Int, livePages: Int, livePageLimit: Int
        public var segments: Int, maxSegments: Int, segmentBytes: Int
        /// A segment made ahead for the next head (0 or 1); it counts against the capacity too.
        public var spareSegments: Int
        public var storedPages: Int, fetchedPages: Int, missedPages: Int, discardedPages: Int
        public var cleanerRuns: Int, cleanedPages: Int, refusedStores: Int
        /// Spaces that retain a committed checkpoint, and the pages changed since a retained
        /// checkpoint or a freeze, whose old versions (if they had one) are kept (in livePages too).
        public var retainingSpaces: Int, retainedVersions: Int, frozenVersions: Int
        public var usedBytes: UInt64 { UInt64(segments * segmentBytes) }
    }

    public var stats: Stats {
        lock.withLock {
            var retaining = 0, retained = 0, frozen = 0
            for s in spaces.values {
                if s.retainedEpoch != 0 { retaining += 1 }
                retained += s.retained.count   // (O(1): a page that had no version counts too)
                frozen += s.frozen?.count ?? 0
            }
            return Stats(spaces: spaces.count, livePages: livePages, livePageLimit: livePageLimit,
                         segments: allocated, maxSegments: maxSegments, segmentBytes: limits.segmentBytes,
                         spareSegments: spare == nil ? 0 : 1,
                         storedPages: storedPages, fetchedPages: fetchedPages, missedPages: missedPages,
                         discardedPages: discardedPages, cleanerRuns: cleanerRuns, cleanedPages: cleanedPages,
                         refusedStores: refusedStores, retainingSpaces: retaining, retainedVersions: retained,
                         frozenVersions: frozen)
        }
    }

    // MARK: segments and cleaning (lock held)

    // An entry is live while the index, the freeze or the retained checkpoint refers to it; a
    // segment's liveEntries and livePages count those references (one entry may have two).

    private func ref(_ loc: UInt64) {
        guard let seg = segments[Int(loc >> 32)] else { return }
        seg.liveEntries += 1
        livePages += 1
    }

    /// Drops one reference to the entry at `loc`; frees its segment once nothing in it is live.
    private func unref(_ loc: UInt64) {
        livePages -= 1
        guard let seg = segments[Int(loc >> 32)] else { return }
        seg.liveEntries -= 1
        if seg.liveEntries == 0 && seg !== head { release(seg) }
    }

    private func release(_ seg: MemorySegment) {
        segments[seg.slot] = nil
        freeSlots.append(seg.slot)
        allocated -= 1
    }

    private func allocate() throws -> MemorySegment {
        let slot = freeSlots.popLast() ?? segments.count
        guard let seg = spare ?? MemorySegment(slot: slot, size: limits.segmentBytes) else {
            if slot == segments.count { } else { freeSlots.append(slot) }
            throw StoreError.outOfMemory
        }
        spare = nil
        seg.slot = slot
        if slot == segments.count { segments.append(seg) } else { segments[slot] = seg }
        allocated += 1
        return seg
    }

    /// Makes the next head segment ahead of need, without the lock: populating 8 MiB takes a few
    /// milliseconds, and under the lock every fetch waited for it. The spare counts against the
    /// capacity like an allocated segment, so it is made only while one more fits besides the
    /// cleaner's reserve.
    private func prepareSpare() {
        guard lock.withLock({ wantsSpare }) else { return }
        guard let fresh = MemorySegment(slot: -1, size: limits.segmentBytes) else { return }
        lock.withLock { if wantsSpare { spare = fresh } }
        // Not kept (another store made one first): unmapped on return, outside the lock.
    }

    /// No spare yet, and room for one besides the segments in use and the cleaner's reserve. Lock held.
    private var wantsSpare: Bool { spare == nil && allocated + 2 < maxSegments }

    /// The head segment with room for one more entry, allocating or cleaning as needed.
    private func headWithRoom() throws -> MemorySegment {
        if let h = head, !h.isFull { return h }
        if let h = head, h.liveEntries == 0 { release(h) }
        head = nil
        if allocated < maxSegments - 1 {
            head = try allocate()
            return head!
        }
        try clean()
        guard let h = head, !h.isFull else { throw StoreError.capacityExceeded(requested: 1, livePages: livePages, limitPages: livePageLimit) }
        return h
    }

    /// Copies the live entries of the least-live segment into the reserve segment, frees the victim,
    /// and makes the reserve the head.
    private func clean() throws {
        guard let victim = segments.compactMap({ $0 }).min(by: { $0.liveEntries < $1.liveEntries }) else { return }
        let target = try allocate()
        cleanerRuns += 1
        var offset = 0
        while offset < victim.used {
            let h = victim.header(at: offset)
            let loc = UInt64(victim.slot) << 32 | UInt64(offset)
            if let s = spaces[h.space], s.index[h.vpn] == loc || s.frozen?[h.vpn] == loc || s.retained[h.vpn] == loc {
                let newOff = target.append(space: h.space, vpn: h.vpn, version: h.version, epoch: h.epoch, page: victim.page(at: offset))
                let moved = UInt64(target.slot) << 32 | UInt64(newOff)
                if s.index[h.vpn] == loc { s.index[h.vpn] = moved; target.liveEntries += 1 }
                if s.frozen?[h.vpn] == loc { s.frozen![h.vpn] = moved; target.liveEntries += 1 }
                if s.retained[h.vpn] == loc { s.retained[h.vpn] = moved; target.liveEntries += 1 }
                cleanedPages += 1
            }
            offset += MemorySegment.entrySize
        }
        victim.liveEntries = 0
        release(victim)
        head = target
    }
}
