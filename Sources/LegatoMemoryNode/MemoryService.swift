import LegatoClients
import LegatoCore
import LegatoSystem
import LegatoWire

/// Requests a memory node answers (payload layouts; all integers little-endian):
///
///     CREATE_SPACE   u64 space [, u8 flags]  (bit 0: ephemeral, dropped with the creating token's
///                    last connection)
///     STORE_PAGES    u64 space, u32 epoch, u32 n, n × u64 vpn, n × 4096 page bytes
///     FETCH_PAGES    u64 space, u32 n, n × u64 vpn
///                    -> n × u8 present, then 4096 bytes for each present page, in order
///     DISCARD_PAGES  u64 space, u32 n, n × (u64 vpn, u64 pages)  -> u64 discarded
///     DROP_SPACE     u64 space
///     FREEZE_SPACE   u64 space                 (one freeze per space at a time)
///     FETCH_FROZEN   as FETCH_PAGES: each page as it was when the space was frozen
///     RELEASE_SPACE  u64 space  -> u64 old versions released (the freeze's checkpoint aborted)
///     COMMIT_SPACE   u64 space, u32 epoch  -> u64 old versions released
///                    (the freeze's checkpoint `epoch` committed: the space retains it in place of
///                    the one it retained before)
///     FETCH_CHECKPOINTED  u64 space, u32 epoch, u32 n, n × u64 vpn  -> as FETCH_PAGES: each page
///                    as it was at checkpoint `epoch`, which the space must retain
///     DESCRIBE_SPACE u64 space  -> u32 retained epoch (0: none), u8 frozen, u64 pages
///     PREPARE_SPACE  u64 space, u32 epoch, u64 log writer, u32 n, n × (u64 address, u32 pages),
///                    then Σpages × u64 vpn  -> u64 pages persisted
///                    (the frozen versions of those pages appended to log `writer` and synced:
///                    this node's PREPARED in a checkpoint; needs --coordinator)
///
/// Every page request names its address space, and only the client token that created a
/// space may touch it.
public final class MemoryService: RPCService {
    public let store: PageStore
    private let log: Logger
    /// Most segments a fetch answer sent in place may hold (see FETCH_PAGES).
    static let maxPinnedSegments = 4
    let participant: CheckpointParticipant?

    public init(store: PageStore, log: Logger, coordinator: Endpoint? = nil, secret: ClusterSecret? = nil) {
        self.store = store
        self.log = log
        if let coordinator, let secret { participant = CheckpointParticipant(coordinator: coordinator, secret: secret) } else { participant = nil }
    }

    public func handle(opcode: Opcode, payload: [UInt8], session: Session) throws -> Reply {
        countSession(session)
        var r = WireReader(payload)
        do {
            switch opcode {
            case .createSpace:
                let space = try r.u64("space")
                let flags = r.remaining > 0 ? try r.u8("flags") : 0
                try r.expectEnd("CREATE_SPACE")
                guard flags & ~1 == 0 else { throw WireError.malformed("CREATE_SPACE flags 0x\(String(flags, radix: 16))") }
                try store.createSpace(space, owner: session.token, ephemeral: flags & 1 != 0)
                return .empty

            case .storePages:
                let space = try r.u64("space")
                let epoch = try r.u32("epoch")
                let n = try r.count(itemSize: 8 + Page.size, limit: WireLimits.maxPagesPerRequest, "page count")
                let vpnOffset = try r.skip(n * 8, "vpns")
                let pageOffset = try r.skip(n * Page.size, "pages")
                try r.expectEnd("STORE_PAGES")
                try payload.withUnsafeBytes { raw in
                    let vpns = readVPNs(raw, at: vpnOffset, count: n)
                    try vpns.withUnsafeBufferPointer { v in
                        try store.store(space: space, owner: session.token, epoch: epoch, vpns: v, pages: raw.baseAddress! + pageOffset)
                    }
                }
                return .empty

            case .fetchPages, .fetchFrozen, .fetchCheckpointed:
                let space = try r.u64("space")
                let version: PageStore.Version, what: String
                switch opcode {
                case .fetchFrozen: (version, what) = (.frozen, "FETCH_FROZEN")
                case .fetchCheckpointed: (version, what) = (.checkpoint(try r.u32("epoch")), "FETCH_CHECKPOINTED")
                default: (version, what) = (.current, "FETCH_PAGES")
                }
                let n = try r.count(itemSize: 8, limit: WireLimits.maxPagesPerRequest, "page count")
                let vpnOffset = try r.skip(n * 8, "vpns")
                try r.expectEnd(what)
                let vpns = payload.withUnsafeBytes { readVPNs($0, at: vpnOffset, count: n) }
                var present = [UInt8](repeating: 0, count: n)
                // The pages go out from the store's segments, gathered into the send (no copy here).
                let found = try vpns.withUnsafeBufferPointer { v in
                    try present.withUnsafeMutableBufferPointer { p in
                        try store.locate(space: space, owner: session.token, vpns: v, present: p.baseAddress!, version: version)
                    }
                }
                // Pinning many segments for a reply a client may be slow to take would hold released
                // ones past --capacity: scattered pages are copied out instead.
                if found.segmentCount > MemoryService.maxPinnedSegments {
                    let data = [UInt8](unsafeUninitializedCapacity: found.pages.count * Page.size) { buf, count in
                        found.copy(to: UnsafeMutableRawPointer(buf.baseAddress!))
                        count = found.pages.count * Page.size
                    }
                    return Reply([present, data])
                }
                return Reply([present], borrowed: found.pages, keepAlive: found)

            case .discardPages:
                let space = try r.u64("space")
                let n = try r.count(itemSize: 16, limit: WireLimits.maxRangesPerRequest, "range count")
                var ranges: [(vpn: UInt64, count: UInt64)] = []
                ranges.reserveCapacity(n)
                for _ in 0..<n {
                    let vpn = try r.u64("range vpn"), count = try r.u64("range length")
                    guard count <= 1 << 36 else { throw WireError.malformed("discard range of \(count) pages") }
                    ranges.append((vpn, count))
                }
                try r.expectEnd("DISCARD_PAGES")
                let discarded = try store.discard(space: space, owner: session.token, ranges: ranges)
                var w = WireWriter()
                w.u64(UInt64(discarded))
                return Reply([w.bytes])

            case .freezeSpace:
                let space = try r.u64("space")
                try r.expectEnd("FREEZE_SPACE")
                try store.freeze(space: space, owner: session.token)
                return .empty

            case .releaseSpace:
                let space = try r.u64("space")
                try r.expectEnd("RELEASE_SPACE")
                var w = WireWriter()
                w.u64(UInt64(try store.release(space: space, owner: session.token)))
                return Reply([w.bytes])

            case .commitSpace:
                let space = try r.u64("space"), epoch = try r.u32("epoch")
                try r.expectEnd("COMMIT_SPACE")
                var w = WireWriter()
                w.u64(UInt64(try store.commit(space: space, owner: session.token, epoch: epoch)))
                return Reply([w.bytes])

            case .describeSpace:
                let space = try r.u64("space")
                try r.expectEnd("DESCRIBE_SPACE")
                let d = try store.describe(space: space, owner: session.token)
                var w = WireWriter()
                w.u32(d.retainedEpoch)
                w.u8(d.frozen ? 1 : 0)
                w.u64(UInt64(d.pages))
                return Reply([w.bytes])

            case .prepareSpace:
                let space = try r.u64("space"), epoch = try r.u32("epoch"), writer = try r.u64("log writer")
                let n = try r.count(itemSize: 12, limit: WireLimits.maxRangesPerRequest, "run count")
                var shapes: [(UInt64, Int)] = []
                var total = 0
                for _ in 0..<n {
                    let address = try r.u64("run address"), pages = Int(try r.u32("run pages"))
                    guard address % UInt64(Page.size) == 0, pages > 0, total + pages <= WireLimits.maxPagesPerRequest * 64 else {
                        throw WireError.malformed("PREPARE_SPACE run of \(pages) pages at 0x\(String(address, radix: 16))")
                    }
                    shapes.append((address, pages))
                    total += pages
                }
                let vpnOffset = try r.skip(total * 8, "vpns")
                try r.expectEnd("PREPARE_SPACE")
                guard let participant else {
                    throw ServiceError(.badRequest, "this memory node takes no part in checkpoints: it was started without --coordinator")
                }
                let vpns = payload.withUnsafeBytes { readVPNs($0, at: vpnOffset, count: total) }
                var runs: [CheckpointParticipant.Run] = []
                var at = 0
                for (address, pages) in shapes {
                    runs.append(.init(address: address, vpns: Array(vpns[at..<at + pages])))
                    at += pages
                }
                let persisted: Int
                do {
                    persisted = try participant.prepare(store: store, space: space, owner: session.token, epoch: epoch, writer: writer, runs: runs)
                } catch let e as PageStore.StoreError {
                    throw e
                } catch {
                    log.error("persisting \(total) pages of space \(String(space, radix: 16)) for epoch \(epoch): \(error)")
                    throw ServiceError(.internalError, "persisting \(total) pages for epoch \(epoch): \(error)")
                }
                var w = WireWriter()
                w.u64(UInt64(persisted))
                return Reply([w.bytes])

            case .dropSpace:
                let space = try r.u64("space")
                try r.expectEnd("DROP_SPACE")
                try store.drop(space: space, owner: session.token)
                return .empty

            default:
                throw WireError.unknownOpcode(opcode.rawValue)
            }
        } catch let e as PageStore.StoreError {
            switch e {
            case .noSuchSpace: throw ServiceError(.noSuchSpace, e.description)
            case .notOwner:
                log.warning("refused \(opcode) from \(session.peer): \(e)")
                throw ServiceError(.notOwner, e.description)
            case .capacityExceeded: throw ServiceError(.capacityExceeded, e.description)
            case .outOfMemory: throw ServiceError(.internalError, e.description)
            case .frozen: throw ServiceError(.frozen, e.description)
            case .notFrozen, .notRetained: throw ServiceError(.badRequest, e.description)
            }
        }
    }

    /// Connections per client token that have made a request, so that a token's ephemeral spaces
    /// go when its last one closes.
    private let sessionsLock = Lock()
    private var sessionsByToken: [[UInt8]: Int] = [:]
    private final class Counted {}

    private func countSession(_ session: Session) {
        guard session.attachment == nil else { return }
        session.attachment = Counted()
        // The store hears of a token's first and last connection under the count's lock, in the
        // order they happened.
        sessionsLock.withLock {
            sessionsByToken[session.token, default: 0] += 1
            if sessionsByToken[session.token] == 1 { store.attach(owner: session.token) }
        }
    }

    public func sessionClosed(_ session: Session) {
        guard session.attachment is Counted else { return }
        let dropped = sessionsLock.withLock { () -> Int in
            let n = (sessionsByToken[session.token] ?? 1) - 1
            sessionsByToken[session.token] = n > 0 ? n : nil
            return n <= 0 ? store.detach(owner: session.token) : 0
        }
        if dropped > 0 { log.info("dropped \(dropped) address space(s) of a client whose last connection closed (\(session.peer))") }
    }

    /// Drops the address spaces whose owner has had no connection for `seconds` (a checkpointable
    /// run killed and never restored): their checkpoints stay in the logs, where a restore finds them.
    public func dropAbandonedSpaces(olderThan seconds: Double) {
        let gone = store.dropDetached(olderThan: seconds)
        guard !gone.isEmpty else { return }
        let ids = gone.map { String($0, radix: 16) }.joined(separator: ", ")
        log.info("dropped \(gone.count) address space(s) whose owner has been gone for over \(Int(seconds)) s: \(ids)")
    }

    public func stats() -> String { StatsJSON.encode(statsRecord()) }

    public func statsRecord() -> MemoryNodeStats {
        let s = store.stats
        return MemoryNodeStats(spaces: s.spaces, livePages: s.livePages, livePageLimit: s.livePageLimit,
                               capacityBytes: store.limits.capacityBytes, usedBytes: s.usedBytes, segments: s.segments,
                               spareSegments: s.spareSegments, maxSegments: s.maxSegments, segmentBytes: s.segmentBytes,
                               storedPages: s.storedPages, fetchedPages: s.fetchedPages, missedPages: s.missedPages,
                               discardedPages: s.discardedPages, cleanerRuns: s.cleanerRuns, cleanedPages: s.cleanedPages,
                               refusedStores: s.refusedStores, retainingSpaces: s.retainingSpaces, retainedVersions: s.retainedVersions,
                               frozenVersions: s.frozenVersions, checkpointParticipant: participant != nil,
                               prepares: participant?.prepares ?? 0, persistedPages: participant?.persistedPages ?? 0)
    }

    private func readVPNs(_ raw: UnsafeRawBufferPointer, at offset: Int, count: Int) -> [UInt64] {
        (0..<count).map { UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: offset + $0 * 8, as: UInt64.self)) }
    }
}
