import Foundation
import LegatoClients
import LegatoCore
import LegatoSystem
import LegatoWire

/// A memory node's requests (messages in LegatoClients/Messages/MemoryMessages.swift, layouts in
/// Docs/wire-protocol.md), each answered by one method. Every page request names its address space,
/// and only the client token that created a space may touch it.
public final class MemoryService: RPCService {
    public let store: PageStore
    private let log: Logger
    /// Most segments a fetch answer sent in place may hold (see `fetch`).
    static let maxPinnedSegments = 4
    let participant: CheckpointParticipant?
    /// The write-back logs of logged spaces (needs a coordinator, to find log nodes).
    let writeBackLogs: WriteBackLogs?
    private let coordinator: Endpoint?
    private let secret: ClusterSecret?
    private let requests = MemoryService.dispatchTable()
    private let recoveryLock = Lock()
    private var recoveries = 0, recoveredPages = 0
    /// Recoveries whose pages are being logged behind their answer, by space and dead log.
    private struct LoggingBehind: Hashable {
        let space: UInt64
        let deadLog: UInt64
    }
    private enum LoggingState {
        case running, logged
        case failed(String)
    }
    private var loggingBehind: [LoggingBehind: LoggingState] = [:]

    public init(store: PageStore, log: Logger, coordinator: Endpoint? = nil, secret: ClusterSecret? = nil, logReplicas: Int = 3) {
        self.store = store
        self.log = log
        self.coordinator = coordinator
        self.secret = secret
        if let coordinator, let secret {
            participant = CheckpointParticipant(coordinator: coordinator, secret: secret)
            let logs = WriteBackLogs(coordinator: coordinator, secret: secret, replicas: logReplicas, log: log)
            logs.readCurrent = { [store] space, keys, present, out in
                try keys.withUnsafeBufferPointer { try store.fetch(space: space, owner: nil, vpns: $0, present: present, out: out) }
            }
            writeBackLogs = logs
        } else {
            participant = nil
            writeBackLogs = nil
        }
    }

    private static func dispatchTable() -> DispatchTable<MemoryService> {
        var t = DispatchTable<MemoryService>()
        t.on(CreateSpace.self, MemoryService.createSpace)
        t.onPayload(StorePages.self) { s, payload, session in try s.storePages(payload, session) }
        t.onPayload(FetchPages.self, { s, payload, session in try s.fetch(.fetchPages, payload, session) })
        t.onPayload(FetchFrozen.self, { s, payload, session in try s.fetch(.fetchFrozen, payload, session) })
        t.onPayload(FetchCheckpointed.self, { s, payload, session in try s.fetch(.fetchCheckpointed, payload, session) })
        t.on(DiscardPages.self, MemoryService.discard)
        t.on(DropSpace.self, MemoryService.drop)
        t.on(FreezeSpace.self, MemoryService.freeze)
        t.on(ReleaseSpace.self, MemoryService.release)
        t.on(CommitSpace.self, MemoryService.commit)
        t.on(DescribeSpace.self, MemoryService.describe)
        t.on(PrepareSpace.self, MemoryService.prepare)
        t.on(RecoverSpace.self, MemoryService.recover)
        t.on(AwaitRecoveryLogged.self, MemoryService.awaitLogged)
        return t
    }

    public func handle(opcode: Opcode, payload: [UInt8], session: Session) throws -> Reply {
        countSession(session)
        do {
            return try requests.handle(self, opcode: opcode, payload: payload, session: session)
        } catch let e as PageStore.StoreError {
            switch e {
            case .noSuchSpace: throw ServiceError(.noSuchSpace, e.description)
            case .notOwner:
                log.warning("refused \(opcode.wireName) from \(session.peer): \(e)")
                throw ServiceError(.notOwner, e.description)
            case .capacityExceeded: throw ServiceError(.capacityExceeded, e.description)
            case .outOfMemory: throw ServiceError(.internalError, e.description)
            case .frozen: throw ServiceError(.frozen, e.description)
            case .notFrozen, .notRetained: throw ServiceError(.badRequest, e.description)
            }
        }
    }

    func createSpace(_ r: CreateSpace, _ session: Session) throws -> SpaceCreated {
        try store.createSpace(r.space, owner: session.token, ephemeral: r.ephemeral)
        return SpaceCreated(logWriter: writeBackLogs?.writerID(space: r.space) ?? 0)
    }

    /// The pages are stored from the request's payload where they lie; a logged store is appended
    /// to the space's write-back log first (see WriteBackLogs).
    func storePages(_ payload: [UInt8], _ session: Session) throws -> Reply {
        let r = try StorePages.Located(payload)
        try payload.withUnsafeBytes { raw in
            try r.vpns.withUnsafeBufferPointer { v in
                let pages = raw.baseAddress! + r.pageOffset
                let plain = { try self.store.store(space: r.space, owner: session.token, epoch: 0, vpns: v, pages: pages) }
                guard r.flags.contains(.logged) else { return try plain() }
                guard let logs = writeBackLogs else {
                    throw ServiceError(.badRequest, "this memory node keeps no write-back log: it was started without --coordinator, so it knows no log nodes")
                }
                try store.checkOwner(space: r.space, owner: session.token)
                do { try logs.store(space: r.space, vpns: v, pages: pages, store: plain) } catch let e as WriteBackLogs.AppendRefused {
                    log.warning("refused a store of \(r.vpns.count) pages of space \(String(r.space, radix: 16)): \(e)")
                    throw ServiceError(.capacityExceeded, e.description)
                }
            }
        }
        return .empty
    }

    /// The three fetches: the pages go out from the store's segments, gathered into the send (no copy).
    func fetch(_ opcode: Opcode, _ payload: [UInt8], _ session: Session) throws -> Reply {
        var reader = WireReader(payload)
        let r = try PageFetch(opcode: opcode, from: &reader)
        try reader.expectEnd(opcode.wireName)
        let version: PageStore.Version
        switch r.version {
        case .current: version = .current
        case .frozen: version = .frozen
        case .checkpoint(let e): version = .checkpoint(e)
        }
        var present = [UInt8](repeating: 0, count: r.vpns.count)
        let found = try r.vpns.withUnsafeBufferPointer { v in
            try present.withUnsafeMutableBufferPointer { p in
                try store.locate(space: r.space, owner: session.token, vpns: v, present: p.baseAddress!, version: version)
            }
        }
        // Pinning many segments for a reply a client may be slow to take would hold released
        // ones past --capacity: scattered pages are copied out instead.
        if found.segmentCount > MemoryService.maxPinnedSegments {
            let data = [UInt8](unsafeUninitializedCapacity: found.pages.count * Page.size) { buf, count in
                found.copy(to: UnsafeMutableRawPointer(buf.baseAddress!))
                count = found.pages.count * Page.size
            }
            return Reply([FetchedPages(present: present, pages: data).encoded])
        }
        return Reply([present], borrowed: found.pages, keepAlive: found)
    }

    func discard(_ r: DiscardPages, _ session: Session) throws -> Count64 {
        let ranges = r.runs.map { (vpn: $0.first, count: $0.count) }
        let n = try store.discard(space: r.space, owner: session.token, ranges: ranges)
        writeBackLogs?.discard(space: r.space, ranges: ranges)
        return Count64(UInt64(n))
    }

    func drop(_ r: DropSpace, _ session: Session) throws -> NoPayload {
        try store.drop(space: r.space, owner: session.token)
        writeBackLogs?.drop(space: r.space)
        return NoPayload()
    }

    func recover(_ r: RecoverSpace, _ session: Session) throws -> RecoveredSpace {
        guard let logs = writeBackLogs, let coordinator, let secret else {
            throw ServiceError(.badRequest, "this memory node cannot recover pages: it was started without --coordinator, so it knows no log nodes")
        }
        do {
            let recovery = SpaceRecovery(store: store, logs: logs, coordinator: coordinator, secret: secret, log: log)
            let outcome = try recovery.run(r, owner: session.token)
            let key = LoggingBehind(space: r.space, deadLog: r.deadLog)
            recoveryLock.withLock {
                recoveries += 1
                recoveredPages += outcome.pages
                if !outcome.unlogged.isEmpty { loggingBehind[key] = .running }
            }
            if !outcome.unlogged.isEmpty {
                let owner = session.token
                startThread(name: "log-behind") { [self] in
                    // Tests widen the window in which this node holds pages only the dead log has.
                    if let ms = ProcessInfo.processInfo.environment["LEGATO_TEST_LOG_BEHIND_DELAY_MS"].flatMap({ UInt32($0) }) { usleep(ms * 1000) }
                    var state = LoggingState.logged
                    do { try recovery.logBehind(r, owner: owner, keys: outcome.unlogged) } catch PageStore.StoreError.noSuchSpace {
                        log.info("space \(String(r.space, radix: 16)) went (its owner is done) before what it recovered from log \(String(r.deadLog, radix: 16)) was logged: nothing is left to log")
                    } catch {
                        log.error("logging the pages of space \(String(r.space, radix: 16)) recovered from log \(String(r.deadLog, radix: 16)): \(error)")
                        state = .failed("\(error)")
                    }
                    recoveryLock.withLock {
                        loggingBehind[key] = state
                        recoveryLock.broadcast()
                    }
                }
            }
            return RecoveredSpace(pages: UInt64(outcome.pages), mark: outcome.mark)
        } catch let e as PageStore.StoreError {
            throw e
        } catch {
            log.error("recovering space \(String(r.space, radix: 16)) from log \(String(r.deadLog, radix: 16)): \(error)")
            throw ServiceError(.internalError, "recovering space \(String(r.space, radix: 16)) from log \(String(r.deadLog, radix: 16)): \(error)")
        }
    }

    /// Answers once the recovery from `deadLog` has logged what it rebuilt (see RecoverSpace.logBehind).
    func awaitLogged(_ r: AwaitRecoveryLogged, _ session: Session) throws -> NoPayload {
        let key = LoggingBehind(space: r.space, deadLog: r.deadLog)
        let state: LoggingState? = recoveryLock.withLock {
            while case .running? = loggingBehind[key] { recoveryLock.wait() }
            return loggingBehind.removeValue(forKey: key)
        }
        switch state {
        case nil: throw ServiceError(.notFound, "no recovery of space \(String(r.space, radix: 16)) from log \(String(r.deadLog, radix: 16)) is logging behind here")
        case .failed(let why)?: throw ServiceError(.internalError, "logging the pages of space \(String(r.space, radix: 16)) recovered from log \(String(r.deadLog, radix: 16)) failed: \(why)")
        default: return NoPayload()
        }
    }

    func freeze(_ r: FreezeSpace, _ session: Session) throws -> NoPayload {
        try store.freeze(space: r.space, owner: session.token)
        return NoPayload()
    }

    func release(_ r: ReleaseSpace, _ session: Session) throws -> Count64 {
        Count64(UInt64(try store.release(space: r.space, owner: session.token)))
    }

    func commit(_ r: CommitSpace, _ session: Session) throws -> Count64 {
        Count64(UInt64(try store.commit(space: r.space, owner: session.token, epoch: r.epoch)))
    }

    func describe(_ r: DescribeSpace, _ session: Session) throws -> SpaceDescription {
        let d = try store.describe(space: r.space, owner: session.token)
        return SpaceDescription(retainedEpoch: d.retainedEpoch, frozen: d.frozen, pages: UInt64(d.pages))
    }

    func prepare(_ r: PrepareSpace, _ session: Session) throws -> Count64 {
        guard let participant else {
            throw ServiceError(.badRequest, "this memory node takes no part in checkpoints: it was started without --coordinator")
        }
        let runs = r.runs.map { CheckpointParticipant.Run(address: $0.address, vpns: $0.vpns) }
        do {
            return Count64(UInt64(try participant.prepare(store: store, space: r.space, owner: session.token, epoch: r.epoch,
                                                          writer: r.writer, runs: runs)))
        } catch let e as PageStore.StoreError {
            throw e
        } catch {
            log.error("persisting \(r.pageCount) pages of space \(String(r.space, radix: 16)) for epoch \(r.epoch): \(error)")
            throw ServiceError(.internalError, "persisting \(r.pageCount) pages for epoch \(r.epoch): \(error)")
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
            guard n <= 0 else { return 0 }
            // Nothing recovers a space whose owner is gone (a restore reads the checkpoint logs).
            for space in store.spaces(owner: session.token) { writeBackLogs?.drop(space: space) }
            return store.detach(owner: session.token)
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
        var r = MemoryNodeStats(spaces: s.spaces, livePages: s.livePages, livePageLimit: s.livePageLimit,
                               capacityBytes: store.limits.capacityBytes, usedBytes: s.usedBytes, segments: s.segments,
                               spareSegments: s.spareSegments, maxSegments: s.maxSegments, segmentBytes: s.segmentBytes,
                               storedPages: s.storedPages, fetchedPages: s.fetchedPages, missedPages: s.missedPages,
                               discardedPages: s.discardedPages, cleanerRuns: s.cleanerRuns, cleanedPages: s.cleanedPages,
                               refusedStores: s.refusedStores, retainingSpaces: s.retainingSpaces, retainedVersions: s.retainedVersions,
                               frozenVersions: s.frozenVersions, checkpointParticipant: participant != nil,
                               prepares: participant?.prepares ?? 0, persistedPages: participant?.persistedPages ?? 0)
        if let logs = writeBackLogs {
            let c = logs.stats, t = logs.totals
            r.loggedPages = c.loggedPages
            r.logLiveKeys = t.liveKeys
            r.logBytes = t.bytes
            r.logFreedSegments = c.freedSegments
            r.logRewrittenPages = c.rewrittenPages
            r.refusedLogAppends = c.refusedAppends
        }
        recoveryLock.withLock {
            r.recoveries = recoveries
            r.recoveredPages = recoveredPages
        }
        return r
    }
}
