import LegatoClients
import LegatoCore
import LegatoSegmentLog
import LegatoSystem
import LegatoWire

/// A log node's requests (messages in LegatoClients/Messages/LogNodeMessages.swift, layouts in
/// Docs/wire-protocol.md), each answered by one method. Mutations need the token that opened the
/// replica; reads are open to every authenticated peer (recovery reads a dead writer's log).
public final class LogService: RPCService {
    public let store: ReplicaStore
    private let log: Logger
    private let requests = LogService.dispatchTable()

    public init(store: ReplicaStore, log: Logger) {
        self.store = store
        self.log = log
    }

    private static func dispatchTable() -> DispatchTable<LogService> {
        var t = DispatchTable<LogService>()
        t.on(OpenReplica.self) { s in { r, session in try s.store.open(r.key, token: session.token); return NoPayload() } }
        t.onPayload(AppendEntries.self) { s, payload, session in try s.append(payload, session) }
        t.on(SyncReplica.self) { s in { r, session in try s.store.sync(r.key, token: session.token); return NoPayload() } }
        t.on(CloseReplica.self) { s in { r, session in try s.store.close(r.key, token: session.token); return NoPayload() } }
        t.on(FreeReplica.self) { s in { r, session in try s.store.free(r.key, token: session.token); return NoPayload() } }
        t.on(ListReplicas.self) { s in { r, _ in ReplicaList(s.store.list(writer: r.writer)) } }
        t.onPayload(ReadReplica.self) { s, payload, session in try s.read(payload, session) }
        return t
    }

    public func handle(opcode: Opcode, payload: [UInt8], session: Session) throws -> Reply {
        do {
            return try requests.handle(self, opcode: opcode, payload: payload, session: session)
        } catch let e as ReplicaStore.StoreError {
            throw Self.answer(e)
        }
    }

    /// A small append (a large one arrives through `directSink`).
    func append(_ payload: [UInt8], _ session: Session) throws -> Reply {
        var r = WireReader(payload)
        let head = try AppendEntries.Head(from: &r)
        let start = r.offset
        let result = try payload.withUnsafeBytes { raw in
            let entries = UnsafeRawBufferPointer(rebasing: raw[start...])
            do {
                try SegmentFormat.forEachEntry(in: entries, count: head.count) { _, _ in }
            } catch let e as SegmentFormat.FormatError {
                throw WireError.malformed("APPEND_ENTRIES: \(e)")
            }
            return try store.append(head.key, token: session.token, first: head.first, count: head.count, raw: entries)
        }
        return appendReply(result)
    }

    /// The entries go out from the session's read buffer as they lie on disk (no copy per entry).
    func read(_ payload: [UInt8], _ session: Session) throws -> Reply {
        let r = try ReadReplica(decoding: payload)
        let reader = (session.attachment as? ReplicaReader) ?? ReplicaReader(store: store)
        session.attachment = reader
        let request = ReplicaReader.Request(key: r.key, first: r.first, maxEntries: Int(min(r.maxEntries, 1 << 16)),
                                            maxBytes: Int(min(r.maxBytes, WireLimits.maxFramePayload / 2)),
                                            slabs: r.slabs.isEmpty ? nil : Set(r.slabs))
        let (buffer, res) = try reader.read(request, readAhead: r.readAhead)
        let head = ReplicaPage.Head(next: res.next, end: res.end, closed: res.closed, corrupt: res.corruptSkipped, count: res.count)
        return Reply([head.encoded], borrowed: [buffer.bytes(res.start, res.bytes)])
    }

    private static func answer(_ e: ReplicaStore.StoreError) -> ServiceError {
        switch e {
        case .noSuchReplica: return ServiceError(.notFound, e.description)
        case .alreadyExists: return ServiceError(.alreadyExists, e.description)
        case .notOwner: return ServiceError(.notOwner, e.description)
        case .closed, .outOfOrder, .busy, .badEntry: return ServiceError(.badRequest, e.description)
        case .diskFull, .bufferFull: return ServiceError(.capacityExceeded, e.description)
        case .ioError: return ServiceError(.internalError, e.description)
        }
    }

    private func appendReply(_ result: (UInt32, UInt64)) -> Reply {
        Reply([AppendResult(entries: result.0, fileBytes: result.1).encoded])
    }

    // A large append is received into the replica's buffer as it arrives: the entries come in their
    // on-disk form and are checked on the way (AppendSink), never copied again.

    public func directPrefix(for opcode: Opcode) -> Int { opcode == .appendEntries ? AppendEntries.headSize : 0 }

    public func directSink(opcode: Opcode, prefix: [UInt8], count: Int, session: Session) throws -> DirectSink? {
        var r = WireReader(prefix)
        let head = try AppendEntries.Head(from: &r)
        let (k, first, n) = (head.key, head.first, head.count)
        guard n * SegmentFormat.entryHeaderSize <= count else { throw WireError.malformed("APPEND_ENTRIES: \(n) entries in \(count) bytes") }
        do {
            guard let room = try store.beginAppend(k, token: session.token, first: first, count: n, bytes: count) else {
                return nil  // all stored already (a retry): answered the usual way
            }
            return AppendSink(service: self, room: room, first: first, count: n, bytes: count)
        } catch let e as ReplicaStore.StoreError {
            throw Self.answer(e)
        }
    }

    /// One append arriving: each piece is copied into the replica's buffer with non-temporal stores
    /// (the buffer is only read again when it goes to the disk) and checked while hot (EntryCheck).
    private final class AppendSink: DirectSink {
        let service: LogService
        let room: ReplicaStore.AppendRoom
        let bytes: Int
        var filled = 0
        var check: EntryCheck

        init(service: LogService, room: ReplicaStore.AppendRoom, first: UInt32, count: Int, bytes: Int) {
            self.service = service
            self.room = room
            self.bytes = bytes
            check = EntryCheck(first: first, count: count)
        }

        func take(_ piece: UnsafeRawBufferPointer) {
            // The server hands over exactly `bytes`; anything past them is not ours to write.
            let n = min(piece.count, bytes - filled)
            let part = UnsafeRawBufferPointer(rebasing: piece[0..<n])
            Sys.copyNontemporal(to: room.pointer + filled, from: part)
            check.feed(part)
            filled += piece.count
        }

        func finish(received: Bool) throws -> Reply {
            let whole = filled == bytes
            do {
                let counts = try service.store.finishAppend(room, bytes: bytes, received: received && whole, check: check)
                guard !received || whole else {
                    throw ServiceError(.badRequest, "APPEND_ENTRIES: \(filled) bytes arrived for \(bytes)")
                }
                return service.appendReply(counts)
            } catch let e as ReplicaStore.StoreError {
                throw LogService.answer(e)
            }
        }
    }

    public func sessionClosed(_ session: Session) { (session.attachment as? ReplicaReader)?.finish() }

    public func stats() -> String { StatsJSON.encode(statsRecord()) }

    public func statsRecord() -> LogNodeStats {
        let s = store.stats
        return LogNodeStats(replicas: s.replicas, openReplicas: s.openReplicas, bufferedBytes: s.bufferedBytes,
                            bufferedPeakBytes: s.bufferedPeakBytes, appendWaits: s.appendWaits, spareBufferBytes: s.spareBytes,
                            freshBuffers: s.freshBuffers, bufferStorageBytes: s.bufferStorageBytes, diskBytes: s.diskBytes,
                            freeDiskBytes: store.freeDiskBytes, tornTails: s.tornTails, corruptEntries: s.corruptEntries,
                            quarantinedFiles: s.quarantined, flushes: s.flushes, bytesWritten: s.bytesWritten, ioErrors: s.ioErrors)
    }
}
