import LegatoCore
import LegatoWire

// The memory node's requests (Docs/wire-protocol.md, "Memory node"). Page requests name their
// address space; only the client token that created a space may touch it.

/// CREATE_SPACE: `ephemeral` spaces are dropped with the creating token's last connection. The
/// answer names the node's write-back log for the space (see StorePages.Flags.logged).
public struct CreateSpace: WireRequest, Equatable {
    public typealias Response = SpaceCreated
    public static let opcode = Opcode.createSpace
    public var space: UInt64
    public var ephemeral: Bool
    public init(space: UInt64, ephemeral: Bool) {
        self.space = space
        self.ephemeral = ephemeral
    }
    public func encode(to w: inout WireWriter) {
        w.u64(space)
        if ephemeral { w.u8(1) }
    }
    public init(from r: inout WireReader) throws {
        space = try r.u64("space")
        let flags = r.remaining > 0 ? try r.u8("flags") : 0
        guard flags & ~1 == 0 else { throw WireError.malformed("CREATE_SPACE flags 0x\(String(flags, radix: 16))") }
        ephemeral = flags & 1 != 0
    }
}

/// CREATE_SPACE's answer: the writer id of the log this node appends the space's logged stores to
/// (0: the node keeps no such log, having no coordinator to find log nodes through).
public struct SpaceCreated: WireMessage, Equatable {
    public var logWriter: UInt64
    public init(logWriter: UInt64) { self.logWriter = logWriter }
    public func encode(to w: inout WireWriter) { w.u64(logWriter) }
    public init(from r: inout WireReader) throws { logWriter = try r.u64("log writer") }
}

/// STORE_PAGES: `vpns.count` pages, page i at `pages[i * 4096...]`. On the hot path the client
/// sends `head` and gathers the keys and pages from where they lie; the node reads them in place
/// through `Located`. With `flags.logged` the node appends the pages to its write-back log for the
/// space (on log nodes, in their memory) before it answers, so they outlive the node.
public struct StorePages: WireRequest, Equatable {
    public typealias Response = NoPayload
    public static let opcode = Opcode.storePages
    public struct Flags: OptionSet, Equatable, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// Appended to the node's write-back log before the answer.
        public static let logged = Flags(rawValue: 1)
        public static let known: Flags = [.logged]
    }
    public var space: UInt64
    public var flags: Flags
    public var vpns: [UInt64]
    public var pages: [UInt8]
    public init(space: UInt64, flags: Flags, vpns: [UInt64], pages: [UInt8]) {
        precondition(pages.count == vpns.count * Page.size)
        self.space = space
        self.flags = flags
        self.vpns = vpns
        self.pages = pages
    }

    public static func head(space: UInt64, flags: Flags, count: Int) -> [UInt8] {
        var w = WireWriter(capacity: 16)
        w.u64(space)
        w.u32(flags.rawValue)
        w.u32(UInt32(count))
        return w.bytes
    }

    /// Where a request's parts lie in its payload (checked against its limits).
    public struct Located {
        public var space: UInt64
        public var flags: Flags
        public var vpns: [UInt64]
        public var pageOffset: Int

        public init(_ payload: [UInt8]) throws {
            var r = WireReader(payload)
            space = try r.u64("space")
            flags = try StorePages.flags(&r)
            let n = try r.count(itemSize: 8 + Page.size, limit: WireLimits.maxPagesPerRequest, "page count")
            vpns = try r.u64Array(n, "vpns")
            pageOffset = try r.skip(n * Page.size, "pages")
            try r.expectEnd("STORE_PAGES")
        }
    }

    public func encode(to w: inout WireWriter) {
        w.raw(Self.head(space: space, flags: flags, count: vpns.count))
        for v in vpns { w.u64(v) }
        w.raw(pages)
    }
    public init(from r: inout WireReader) throws {
        space = try r.u64("space")
        flags = try StorePages.flags(&r)
        let n = try r.count(itemSize: 8 + Page.size, limit: WireLimits.maxPagesPerRequest, "page count")
        vpns = try r.u64Array(n, "vpns")
        pages = try r.raw(n * Page.size, "pages")
    }

    static func flags(_ r: inout WireReader) throws -> Flags {
        let f = Flags(rawValue: try r.u32("flags"))
        guard f.isSubset(of: .known) else { throw WireError.malformed("STORE_PAGES flags 0x\(String(f.rawValue, radix: 16))") }
        return f
    }
}

/// Which version of its pages a fetch asks for.
public enum PageVersion: Equatable, Sendable {
    case current                // FETCH_PAGES
    case frozen                 // FETCH_FROZEN: as the pages were when the space was frozen
    case checkpoint(UInt32)     // FETCH_CHECKPOINTED: as they were at this retained checkpoint

    public var opcode: Opcode {
        switch self {
        case .current: return .fetchPages
        case .frozen: return .fetchFrozen
        case .checkpoint: return .fetchCheckpointed
        }
    }
}

/// FETCH_PAGES, FETCH_FROZEN and FETCH_CHECKPOINTED: one layout, the version chosen by the opcode
/// (and an epoch for a checkpoint). The client sends `head` and gathers the keys from where they lie.
public struct PageFetch: Equatable {
    public var space: UInt64
    public var version: PageVersion
    public var vpns: [UInt64]
    public init(space: UInt64, version: PageVersion, vpns: [UInt64]) {
        self.space = space
        self.version = version
        self.vpns = vpns
    }

    public static func head(space: UInt64, version: PageVersion, count: Int) -> [UInt8] {
        var w = WireWriter(capacity: 16)
        w.u64(space)
        if case .checkpoint(let e) = version { w.u32(e) }
        w.u32(UInt32(count))
        return w.bytes
    }

    public func encode(to w: inout WireWriter) {
        w.raw(Self.head(space: space, version: version, count: vpns.count))
        for v in vpns { w.u64(v) }
    }

    /// Decodes the request `opcode` (one of the three fetches).
    public init(opcode: Opcode, from r: inout WireReader) throws {
        space = try r.u64("space")
        switch opcode {
        case .fetchFrozen: version = .frozen
        case .fetchCheckpointed: version = .checkpoint(try r.u32("epoch"))
        default: version = .current
        }
        let n = try r.count(itemSize: 8, limit: WireLimits.maxPagesPerRequest, "page count")
        vpns = try r.u64Array(n, "vpns")
    }
}

public struct FetchPages: WireRequest, Equatable {
    public typealias Response = FetchedPages
    public static let opcode = Opcode.fetchPages
    public var fetch: PageFetch
    public init(space: UInt64, vpns: [UInt64]) { fetch = PageFetch(space: space, version: .current, vpns: vpns) }
    public func encode(to w: inout WireWriter) { fetch.encode(to: &w) }
    public init(from r: inout WireReader) throws { fetch = try PageFetch(opcode: Self.opcode, from: &r) }
}

public struct FetchFrozen: WireRequest, Equatable {
    public typealias Response = FetchedPages
    public static let opcode = Opcode.fetchFrozen
    public var fetch: PageFetch
    public init(space: UInt64, vpns: [UInt64]) { fetch = PageFetch(space: space, version: .frozen, vpns: vpns) }
    public func encode(to w: inout WireWriter) { fetch.encode(to: &w) }
    public init(from r: inout WireReader) throws { fetch = try PageFetch(opcode: Self.opcode, from: &r) }
}

public struct FetchCheckpointed: WireRequest, Equatable {
    public typealias Response = FetchedPages
    public static let opcode = Opcode.fetchCheckpointed
    public var fetch: PageFetch
    public init(space: UInt64, epoch: UInt32, vpns: [UInt64]) { fetch = PageFetch(space: space, version: .checkpoint(epoch), vpns: vpns) }
    public func encode(to w: inout WireWriter) { fetch.encode(to: &w) }
    public init(from r: inout WireReader) throws { fetch = try PageFetch(opcode: Self.opcode, from: &r) }
}

/// A fetch's answer: a presence byte per page asked for, then the present pages in order. The node
/// sends the pages from its segments in place, and the client receives them into the faulting
/// program's buffers; `check` is the one rule both follow.
public struct FetchedPages: WireMessage, Equatable {
    public var present: [UInt8]
    public var pages: [UInt8]
    public init(present: [UInt8], pages: [UInt8]) {
        self.present = present
        self.pages = pages
    }

    /// Checks an answer of `length` bytes to a fetch of `asked` pages whose presence bytes are
    /// `present`; returns how many pages follow them.
    public static func check(length: Int, asked: Int, present: UnsafeBufferPointer<UInt8>) throws -> Int {
        var found = 0
        for p in present {
            guard p <= 1 else { throw WireError.malformed("presence byte \(p)") }
            found += Int(p)
        }
        guard found * Page.size == length - asked else {
            throw WireError.malformed("FETCH_PAGES reply holds \((length - asked) / Page.size) pages, presence says \(found)")
        }
        return found
    }

    /// Checks that an answer of `length` bytes can answer a fetch of `asked` pages at all.
    public static func checkLength(_ length: Int, asked: Int) throws {
        guard length >= asked, (length - asked) % Page.size == 0 else {
            throw WireError.malformed("FETCH_PAGES reply of \(length) bytes for \(asked) pages")
        }
    }

    public func encode(to w: inout WireWriter) {
        w.raw(present)
        w.raw(pages)
    }
    /// Only a whole payload can be decoded: the number of pages asked is not in the answer.
    public init(from r: inout WireReader) throws {
        throw WireError.malformed("a fetch answer decodes only with the count it answers (FetchedPages(decoding:asked:))")
    }
    public init(decoding bytes: [UInt8], asked: Int) throws {
        try Self.checkLength(bytes.count, asked: asked)
        present = Array(bytes[0..<asked])
        _ = try present.withUnsafeBufferPointer { try Self.check(length: bytes.count, asked: asked, present: $0) }
        pages = Array(bytes[asked...])
    }
}

/// A run of pages: `count` keys from `first`.
public struct PageRun: Equatable, Sendable {
    public var first: UInt64
    public var count: UInt64
    public init(first: UInt64, count: UInt64) {
        self.first = first
        self.count = count
    }
}

/// DISCARD_PAGES: answers with the number of pages discarded.
public struct DiscardPages: WireRequest, Equatable {
    public typealias Response = Count64
    public static let opcode = Opcode.discardPages
    public var space: UInt64
    public var runs: [PageRun]
    public init(space: UInt64, runs: [PageRun]) {
        self.space = space
        self.runs = runs
    }
    public func encode(to w: inout WireWriter) {
        w.u64(space)
        w.u32(UInt32(runs.count))
        for r in runs {
            w.u64(r.first)
            w.u64(r.count)
        }
    }
    public init(from r: inout WireReader) throws {
        space = try r.u64("space")
        let n = try r.count(itemSize: 16, limit: WireLimits.maxRangesPerRequest, "range count")
        runs = []
        runs.reserveCapacity(n)
        for _ in 0..<n {
            let first = try r.u64("range vpn"), count = try r.u64("range length")
            guard count <= 1 << 36 else { throw WireError.malformed("discard range of \(count) pages") }
            runs.append(PageRun(first: first, count: count))
        }
    }
}

/// The requests that name only a space: DROP_SPACE, FREEZE_SPACE, RELEASE_SPACE, DESCRIBE_SPACE.
public protocol SpaceRequest: WireRequest {
    var space: UInt64 { get }
    init(space: UInt64)
}

extension SpaceRequest {
    public func encode(to w: inout WireWriter) { w.u64(space) }
    public init(from r: inout WireReader) throws { self.init(space: try r.u64("space")) }
}

public struct DropSpace: SpaceRequest, Equatable {
    public typealias Response = NoPayload
    public static let opcode = Opcode.dropSpace
    public var space: UInt64
    public init(space: UInt64) { self.space = space }
}

/// FREEZE_SPACE: until a RELEASE_SPACE or COMMIT_SPACE, FETCH_FROZEN returns each page as it is now.
public struct FreezeSpace: SpaceRequest, Equatable {
    public typealias Response = NoPayload
    public static let opcode = Opcode.freezeSpace
    public var space: UInt64
    public init(space: UInt64) { self.space = space }
}

/// RELEASE_SPACE: ends a freeze whose checkpoint aborted; answers the old versions released.
public struct ReleaseSpace: SpaceRequest, Equatable {
    public typealias Response = Count64
    public static let opcode = Opcode.releaseSpace
    public var space: UInt64
    public init(space: UInt64) { self.space = space }
}

public struct DescribeSpace: SpaceRequest, Equatable {
    public typealias Response = SpaceDescription
    public static let opcode = Opcode.describeSpace
    public var space: UInt64
    public init(space: UInt64) { self.space = space }
}

/// The checkpoint a space retains (0: none), whether it is frozen, and how many pages it holds.
public struct SpaceDescription: WireMessage, Equatable {
    public var retainedEpoch: UInt32
    public var frozen: Bool
    public var pages: UInt64
    public init(retainedEpoch: UInt32, frozen: Bool, pages: UInt64) {
        self.retainedEpoch = retainedEpoch
        self.frozen = frozen
        self.pages = pages
    }
    public func encode(to w: inout WireWriter) {
        w.u32(retainedEpoch)
        w.u8(frozen ? 1 : 0)
        w.u64(pages)
    }
    public init(from r: inout WireReader) throws {
        retainedEpoch = try r.u32("retained epoch")
        frozen = try r.bool("frozen")
        pages = try r.u64("pages")
    }
}

/// COMMIT_SPACE: ends a freeze whose checkpoint `epoch` committed; answers the old versions released.
public struct CommitSpace: WireRequest, Equatable {
    public typealias Response = Count64
    public static let opcode = Opcode.commitSpace
    public var space: UInt64
    public var epoch: UInt32
    public init(space: UInt64, epoch: UInt32) {
        self.space = space
        self.epoch = epoch
    }
    public func encode(to w: inout WireWriter) {
        w.u64(space)
        w.u32(epoch)
    }
    public init(from r: inout WireReader) throws {
        space = try r.u64("space")
        epoch = try r.u32("epoch")
    }
}

/// PREPARE_SPACE: the frozen versions of `runs` appended to log `writer` as entries of `epoch` and
/// synced (the node's PREPARED); answers the pages persisted.
public struct PrepareSpace: WireRequest, Equatable {
    public typealias Response = Count64
    public static let opcode = Opcode.prepareSpace
    /// Pages at consecutive addresses from `address`, stored under `vpns`.
    public struct Run: Equatable, Sendable {
        public var address: UInt64
        public var vpns: [UInt64]
        public init(address: UInt64, vpns: [UInt64]) {
            self.address = address
            self.vpns = vpns
        }
    }
    public static let maxPages = WireLimits.maxPagesPerRequest * 64

    public var space: UInt64
    public var epoch: UInt32
    public var writer: UInt64
    public var runs: [Run]
    public init(space: UInt64, epoch: UInt32, writer: UInt64, runs: [Run]) {
        self.space = space
        self.epoch = epoch
        self.writer = writer
        self.runs = runs
    }
    public var pageCount: Int { runs.reduce(0) { $0 + $1.vpns.count } }

    public func encode(to w: inout WireWriter) {
        w.u64(space)
        w.u32(epoch)
        w.u64(writer)
        w.u32(UInt32(runs.count))
        for r in runs {
            w.u64(r.address)
            w.u32(UInt32(r.vpns.count))
        }
        for r in runs { for v in r.vpns { w.u64(v) } }
    }
    public init(from r: inout WireReader) throws {
        space = try r.u64("space")
        epoch = try r.u32("epoch")
        writer = try r.u64("log writer")
        let n = try r.count(itemSize: 12, limit: WireLimits.maxRangesPerRequest, "run count")
        var shapes: [(UInt64, Int)] = []
        var total = 0
        for _ in 0..<n {
            let address = try r.u64("run address"), pages = Int(try r.u32("run pages"))
            guard address % UInt64(Page.size) == 0, pages > 0, total + pages <= Self.maxPages else {
                throw WireError.malformed("PREPARE_SPACE run of \(pages) pages at 0x\(String(address, radix: 16))")
            }
            shapes.append((address, pages))
            total += pages
        }
        runs = try shapes.map { Run(address: $0.0, vpns: try r.u64Array($0.1, "vpns")) }
    }
}

/// RECOVER_SPACE: rebuild, on this node, the pages of `space` a dead memory node held: the newest
/// version of each key of `runs` found in the entries of `slabs` of the dead node's write-back log
/// (`deadLog`, read from the log nodes in parallel). The space is created for the asking token if it
/// does not exist here; with `logged`, the recovered pages are appended to this node's own
/// write-back log before the answer. Answers the pages recovered.
/// An earlier recovery's log that a recovery reads too: the dead node whose log is being recovered
/// had rebuilt `runs` from `log` and had not yet logged them all in its own (it logged behind).
/// Of those keys, the dead node's own entries count only after sequence number `after` (its
/// log's mark at that recovery); a key with none there is taken from `log`.
public struct RecoveryFallback: Equatable, Sendable {
    public var log: UInt64
    public var after: UInt64
    public var runs: [PageRun]
    public init(log: UInt64, after: UInt64, runs: [PageRun]) {
        self.log = log
        self.after = after
        self.runs = runs
    }
}

public struct RecoverSpace: WireRequest, Equatable {
    public typealias Response = RecoveredSpace
    public static let opcode = Opcode.recoverSpace
    public var space: UInt64
    public var ephemeral: Bool
    public var logged: Bool
    /// With `logged`: answer once the pages are here, and log them behind (AWAIT_RECOVERY_LOGGED
    /// says when that is done).
    public var logBehind: Bool
    public var deadLog: UInt64
    public var slabs: [UInt64]
    public var runs: [PageRun]
    public var fallbacks: [RecoveryFallback]
    public init(space: UInt64, ephemeral: Bool, logged: Bool, logBehind: Bool = false, deadLog: UInt64, slabs: [UInt64], runs: [PageRun],
                fallbacks: [RecoveryFallback] = []) {
        self.space = space
        self.ephemeral = ephemeral
        self.logged = logged
        self.logBehind = logBehind
        self.deadLog = deadLog
        self.slabs = slabs
        self.runs = runs
        self.fallbacks = fallbacks
    }
    public func encode(to w: inout WireWriter) {
        w.u64(space)
        w.u8((ephemeral ? 1 : 0) | (logged ? 2 : 0) | (logBehind ? 4 : 0))
        w.u64(deadLog)
        w.u32(UInt32(slabs.count))
        for s in slabs { w.u64(s) }
        Self.encode(runs, to: &w)
        w.u32(UInt32(fallbacks.count))
        for f in fallbacks {
            w.u64(f.log)
            w.u64(f.after)
            Self.encode(f.runs, to: &w)
        }
    }
    static func encode(_ runs: [PageRun], to w: inout WireWriter) {
        w.u32(UInt32(runs.count))
        for r in runs {
            w.u64(r.first)
            w.u64(r.count)
        }
    }
    static func decodeRuns(_ r: inout WireReader) throws -> [PageRun] {
        let n = try r.count(itemSize: 16, limit: WireLimits.maxRangesPerRequest * 16, "run count")
        return try (0..<n).map { _ in
            let first = try r.u64("run first key"), count = try r.u64("run length")
            guard count > 0, count <= 1 << 36 else { throw WireError.malformed("RECOVER_SPACE run of \(count) keys") }
            return PageRun(first: first, count: count)
        }
    }
    public init(from r: inout WireReader) throws {
        space = try r.u64("space")
        let flags = try r.u8("flags")
        guard flags & ~7 == 0 else { throw WireError.malformed("RECOVER_SPACE flags 0x\(String(flags, radix: 16))") }
        ephemeral = flags & 1 != 0
        logged = flags & 2 != 0
        logBehind = flags & 4 != 0
        deadLog = try r.u64("dead log")
        guard deadLog != 0 else { throw WireError.malformed("RECOVER_SPACE of log writer 0") }
        let k = try r.count(itemSize: 8, limit: WireLimits.maxRangesPerRequest, "slab count")
        slabs = try r.u64Array(k, "slabs")
        runs = try Self.decodeRuns(&r)
        let f = try r.count(itemSize: 20, limit: 64, "fallback count")
        fallbacks = try (0..<f).map { _ in
            let log = try r.u64("fallback log"), after = try r.u64("fallback mark")
            guard log != 0 else { throw WireError.malformed("RECOVER_SPACE fallback to log writer 0") }
            return RecoveryFallback(log: log, after: after, runs: try Self.decodeRuns(&r))
        }
    }
}

/// RECOVER_SPACE's answer: how many keys came back, and the mark of the recovery node's log for
/// them (its entries of those keys after `mark` are newer than the dead node's log; 0 if the space
/// is not logged).
public struct RecoveredSpace: WireMessage, Equatable {
    public var pages: UInt64
    public var mark: UInt64
    public init(pages: UInt64, mark: UInt64) {
        self.pages = pages
        self.mark = mark
    }
    public func encode(to w: inout WireWriter) {
        w.u64(pages)
        w.u64(mark)
    }
    public init(from r: inout WireReader) throws {
        pages = try r.u64("recovered pages")
        mark = try r.u64("log mark")
    }
}

/// Waits until the pages a RECOVER_SPACE with logBehind rebuilt from `deadLog` are all in this
/// node's write-back log; `internalError` if logging them failed, `notFound` if no such recovery
/// is known here.
public struct AwaitRecoveryLogged: WireRequest, Equatable {
    public typealias Response = NoPayload
    public static let opcode = Opcode.awaitRecoveryLogged
    public var space: UInt64
    public var deadLog: UInt64
    public init(space: UInt64, deadLog: UInt64) {
        self.space = space
        self.deadLog = deadLog
    }
    public func encode(to w: inout WireWriter) {
        w.u64(space)
        w.u64(deadLog)
    }
    public init(from r: inout WireReader) throws {
        space = try r.u64("space")
        deadLog = try r.u64("dead log")
    }
}
