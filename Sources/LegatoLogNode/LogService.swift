import LegatoClients
import LegatoCore
import LegatoSegmentLog
import LegatoSystem
import LegatoWire

/// Requests a log node answers (integers little-endian; a replica is named by (u64 writer, u64 segment)):
///
///     OPEN_REPLICA   u64 writer, u64 segment
///     APPEND_ENTRIES u64 writer, u64 segment, u32 first index, u32 n,
///                    n entries as on disk (32-byte header with index first+i and CRC, payload)
///                    -> u32 entries, u64 file bytes
///     SYNC_REPLICA   u64 writer, u64 segment
///     CLOSE_REPLICA  u64 writer, u64 segment
///     FREE_REPLICA   u64 writer, u64 segment
///     LIST_REPLICAS  u64 writer -> u32 n, n × (u64 segment, u32 entries, u64 payload bytes, u8 closed, u32 corrupt)
///     READ_REPLICA   u64 writer, u64 segment, u32 first, u32 max entries, u32 max bytes, u32 k, k × u64 slab,
///                    [u64 segment this client reads next from this node: read ahead]
///                    -> u32 next, u8 end, u8 closed, u32 corrupt entries skipped, u32 n,
///                       n entries as on disk (32-byte entry header + payload; each checked against its CRC)
///
/// Mutations need the token that opened the replica; reads are open to every authenticated peer
/// (recovery reads a dead writer's log).
public final class LogService: RPCService {
    public let store: ReplicaStore
    private let log: Logger

    public init(store: ReplicaStore, log: Logger) {
        self.store = store
        self.log = log
    }

    public func handle(opcode: Opcode, payload: [UInt8], session: Session) throws -> Reply {
        var r = WireReader(payload)
        func key() throws -> ReplicaStore.Key { ReplicaStore.Key(writer: try r.u64("writer"), segment: try r.u64("segment")) }
        do {
            switch opcode {
            case .openReplica:
                let k = try key()
                try r.expectEnd("OPEN_REPLICA")
                try store.open(k, token: session.token)
                return .empty
            case .appendEntries:
                // A small append (a large one arrives through directSink).
                let (k, first, n) = try appendPrefix(&r)
                let start = r.offset
                _ = try r.skip(r.remaining, "entries")
                let result = try payload.withUnsafeBytes { raw in
                    let entries = UnsafeRawBufferPointer(rebasing: raw[start...])
                    do {
                        try SegmentFormat.forEachEntry(in: entries, count: n) { _, _ in }
                    } catch let e as SegmentFormat.FormatError {
                        throw WireError.malformed("APPEND_ENTRIES: \(e)")
                    }
                    return try store.append(k, token: session.token, first: first, count: n, raw: entries)
                }
                return appendReply(result)
            case .syncReplica, .closeReplica, .freeReplica:
                let k = try key()
                try r.expectEnd("\(opcode)")
                switch opcode {
                case .syncReplica: try store.sync(k, token: session.token)
                case .closeReplica: try store.close(k, token: session.token)
                default: try store.free(k, token: session.token)
                }
                return .empty
            case .listReplicas:
                let writer = try r.u64("writer")
                try r.expectEnd("LIST_REPLICAS")
                let list = store.list(writer: writer)
                var w = WireWriter()
                w.u32(UInt32(list.count))
                for i in list {
                    w.u64(i.segment)
                    w.u32(i.entries)
                    w.u64(i.bytes)
                    w.u8(i.closed ? 1 : 0)
                    w.u32(i.corrupt)
                }
                return Reply([w.bytes])
            case .readReplica:
                let k = try key()
                let first = try r.u32("first"), maxEntries = try r.u32("max entries"), maxBytes = try r.u32("max bytes")
                let ns = try r.count(itemSize: 8, limit: 1 << 20, "slab count")
                let slabs: Set<UInt64>? = ns == 0 ? nil : Set(try (0..<ns).map { _ in try r.u64("slab") })
                let readAhead: UInt64? = r.remaining >= 8 ? try r.u64("read-ahead segment") : nil
                try r.expectEnd("READ_REPLICA")
                // The entries go out from the session's read buffer as they lie on disk (no copy per entry).
                let reader = (session.attachment as? ReplicaReader) ?? ReplicaReader(store: store)
                session.attachment = reader
                let request = ReplicaReader.Request(key: k, first: first, maxEntries: Int(min(maxEntries, 1 << 16)),
                                                    maxBytes: Int(min(maxBytes, WireLimits.maxFramePayload / 2)), slabs: slabs)
                let (buffer, res) = try reader.read(request, readAhead: readAhead)
                var w = WireWriter(capacity: 16)
                w.u32(res.next)
                w.u8(res.end ? 1 : 0)
                w.u8(res.closed ? 1 : 0)
                w.u32(res.corruptSkipped)
                w.u32(UInt32(res.count))
                return Reply([w.bytes], borrowed: [buffer.bytes(res.start, res.bytes)])
            default:
                throw WireError.unknownOpcode(opcode.rawValue)
            }
        } catch let e as ReplicaStore.StoreError {
            throw Self.answer(e)
        }
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

    private func appendPrefix(_ r: inout WireReader) throws -> (ReplicaStore.Key, UInt32, Int) {
        let k = ReplicaStore.Key(writer: try r.u64("writer"), segment: try r.u64("segment"))
        let first = try r.u32("first index")
        let n = Int(try r.u32("entry count"))
        guard n <= WireLimits.maxEntriesPerRequest else { throw WireError.malformed("APPEND_ENTRIES of \(n) entries") }
        return (k, first, n)
    }

    private func appendReply(_ result: (UInt32, UInt64)) -> Reply {
        var w = WireWriter()
        w.u32(result.0)
        w.u64(result.1)
        return Reply([w.bytes])
    }

    // A large append is received into the replica's buffer as it arrives: the entries come in their
    // on-disk form and are checked on the way (AppendSink), never copied again.

    public func directPrefix(for opcode: Opcode) -> Int { opcode == .appendEntries ? 24 : 0 }

    public func directSink(opcode: Opcode, prefix: [UInt8], count: Int, session: Session) throws -> DirectSink? {
        var r = WireReader(prefix)
        let (k, first, n) = try appendPrefix(&r)
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
