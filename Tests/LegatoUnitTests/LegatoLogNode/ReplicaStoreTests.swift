import Foundation
import Glibc
import LegatoCore
@testable import LegatoLogNode
import LegatoSegmentLog
import LegatoTestSupport
import Testing

/// The log node's store on a real directory: formats, buffering, recovery from torn and corrupt files.
@Suite struct ReplicaStoreTests {
    let token = [UInt8](repeating: 7, count: 32)
    let key = ReplicaStore.Key(writer: 0xabc, segment: 3)

    func entries(_ n: Int, from: Int = 0, size: Int = 1000) -> [LogEntry] {
        (from..<from + n).map { (i: Int) -> LogEntry in
            let payload: [UInt8] = (0..<size).map { (k: Int) -> UInt8 in UInt8(truncatingIfNeeded: k &* 31 &+ i) }
            return LogEntry(epoch: UInt32(i % 5), slab: UInt64(i % 3), payload: payload)
        }
    }

    func store(_ dir: String, buffer: Int = 1 << 20) throws -> ReplicaStore {
        try ReplicaStore(directory: dir, bufferLimit: buffer, log: LegatoLogging.logger("test.logd"))
    }

    func readAll(_ s: ReplicaStore, _ k: ReplicaStore.Key, slabs: Set<UInt64>? = nil) throws -> ReplicaStore.ReadResult {
        try s.read(k, first: 0, maxEntries: 1 << 20, maxBytes: 1 << 30, slabs: slabs)
    }

    @Test func segmentHeaderRoundTripsAndRejectsDamage() throws {
        let h = SegmentFormat.encodeHeader(writer: 9, segment: 10, created: 11)
        #expect(try SegmentFormat.decodeHeader(h) == (9, 10, 11))
        var bad = h
        bad[20] ^= 1
        #expect(throws: SegmentFormat.FormatError.headerChecksum) { _ = try SegmentFormat.decodeHeader(bad) }
        var magic = h
        magic[0] = 0
        #expect(throws: SegmentFormat.FormatError.self) { _ = try SegmentFormat.decodeHeader(magic) }
        #expect(throws: SegmentFormat.FormatError.shortHeader) { _ = try SegmentFormat.decodeHeader(Array(h.prefix(10))) }
    }

    /// An append's entries checked as they arrive: pieces of any size, split headers included, give
    /// what one whole piece gives, and every kind of damage is named.
    @Test func checksEntriesArrivingInPiecesOfAnySize() throws {
        let es = entries(9, size: 1000) + [LogEntry(epoch: 1, slab: 2, payload: [])] + entries(3, from: 9, size: 70)
        let raw = LogEntry.encode(es[...], first: 5)
        func check(_ bytes: [UInt8], first: UInt32 = 5, count: Int = es.count, pieces: [Int]) -> Result<[ReplicaStore.EntryRef], EntryCheck.CheckFailure> {
            var c = EntryCheck(first: first, count: count)
            var at = 0, i = 0
            bytes.withUnsafeBytes { b in
                while at < b.count {
                    let n = min(pieces[i % pieces.count], b.count - at)
                    c.feed(UnsafeRawBufferPointer(rebasing: b[at..<at + n]))
                    at += n
                    i += 1
                }
            }
            return c.result(total: bytes.count)
        }
        func offsets(_ r: Result<[ReplicaStore.EntryRef], EntryCheck.CheckFailure>) -> [UInt64]? { try? r.get().map { $0.offset } }
        func failure(_ r: Result<[ReplicaStore.EntryRef], EntryCheck.CheckFailure>) -> String {
            if case .failure(let e) = r { return e.description }
            return "accepted"
        }
        let whole = try check(raw, pieces: [raw.count]).get()
        #expect(whole.count == es.count)
        #expect(whole.map { Int($0.header.index) } == Array(5..<5 + es.count))
        for pieces in [[1], [7], [31, 33], [4096], [1000, 3, 5000], [32]] {
            #expect(offsets(check(raw, pieces: pieces)) == whole.map { $0.offset }, "pieces of \(pieces)")
        }
        var flipped = raw
        flipped[3 * (SegmentFormat.entryHeaderSize + 1000) + SegmentFormat.entryHeaderSize + 500] ^= 1
        #expect(failure(check(flipped, pieces: [17])) == "entry 8 fails its checksum")
        #expect(failure(check(raw, first: 6, pieces: [64])) == "entry 0 carries index 5, not 6")
        var footer = raw
        footer[8] = SegmentFormat.EntryType.footer.rawValue
        #expect(failure(check(footer, pieces: [5])) == "entry 0 has type 2")
        var magic = raw
        magic[SegmentFormat.entryHeaderSize + 1000] ^= 0xff
        #expect(failure(check(magic, pieces: [100])).hasPrefix("entry 1 at byte 1032 has a bad header"))
        #expect(failure(check(raw, count: es.count - 1, pieces: [9])) == "\(SegmentFormat.entryHeaderSize + 70) bytes after the last entry")
        #expect(failure(check(Array(raw.dropLast(10)), pieces: [4096])).hasPrefix("entry 12 at byte"))
        #expect(failure(check(raw, count: es.count + 1, pieces: [4096])).hasPrefix("entry 13 at byte \(raw.count)"))
    }

    @Test func appendsReadsAndSurvivesARestart() throws {
        let dir = TestDirectory.make("replicas")
        var s = try store(dir)
        try s.open(key, token: token)
        let es = entries(50)
        #expect(try s.append(key, token: token, first: 0, entries: Array(es[0..<20])).0 == 20)
        #expect(try s.append(key, token: token, first: 20, entries: Array(es[20...])).0 == 50)
        // a retried append is accepted, an out-of-order one is not
        #expect(try s.append(key, token: token, first: 20, entries: Array(es[20..<30])).0 == 50)
        #expect(throws: ReplicaStore.StoreError.self) { _ = try s.append(key, token: token, first: 60, entries: es) }
        #expect(try readAll(s, key).entries.map { $0.entry } == es)
        #expect(try readAll(s, key, slabs: [1]).entries.map { $0.entry } == es.filter { $0.slab == 1 })
        try s.sync(key, token: token)
        try s.close(key, token: token)
        #expect(throws: ReplicaStore.StoreError.self) { _ = try s.append(key, token: token, first: 50, entries: es) }
        s.shutdown()  // a clean stop writes the closed replica out
        s = try store(dir)
        let r = try readAll(s, key)
        #expect(r.entries.map { $0.entry } == es)
        #expect(r.closed)
        #expect(s.list(writer: key.writer).first?.entries == 50)
    }

    @Test func createsAReplicasFileWhenItIsFirstWrittenOut() throws {
        let dir = TestDirectory.make("replicas-lazy")
        let s = try store(dir)
        defer { s.shutdown() }
        let file = dir + "/replicas/0000000000000abc/0000000000000003.seg"
        try s.open(key, token: token)
        _ = try s.append(key, token: token, first: 0, entries: entries(3))
        #expect(!FileManager.default.fileExists(atPath: file), "an open replica lives in memory until written out")
        try s.sync(key, token: token)
        #expect(FileManager.default.fileExists(atPath: file))
        #expect(try readAll(s, key).entries.count == 3)
        // A writer directory that cannot be made: the sync says what failed, nothing is lost from memory.
        let other = ReplicaStore.Key(writer: 0xdef, segment: 1)
        #expect(FileManager.default.createFile(atPath: dir + "/replicas/0000000000000def", contents: Data()))
        try s.open(other, token: token)
        let es = entries(4)
        _ = try s.append(other, token: token, first: 0, entries: es)
        do {
            try s.sync(other, token: token)
            Issue.record("a sync whose file cannot be created must fail")
        } catch let e as ReplicaStore.StoreError {
            #expect("\(e)".contains("Not a directory") && "\(e)".contains("creating"), "\(e)")
        }
        #expect(try readAll(s, other).entries.map { $0.entry } == es)
    }

    /// Past twice the budget an append waits for room, but what needs none is answered at once: a
    /// retry of stored entries, and a replica whose disk refuses writes. The wait ends in a refusal.
    @Test func waitsForRoomOnlyWhenItNeedsSome() throws {
        let dir = TestDirectory.make("room")
        let s = try store(dir, buffer: 64 << 10)
        defer { s.shutdown() }
        s.roomTimeoutSeconds = 0.5
        // A writer whose directory cannot be made: its buffer cannot go out, and keeps the node over.
        let stuck = ReplicaStore.Key(writer: 0xdef, segment: 1)
        #expect(FileManager.default.createFile(atPath: dir + "/replicas/0000000000000def", contents: Data()))
        try s.open(stuck, token: token)
        let es = entries(200)  // 200 KB against a 64 KiB budget
        _ = try s.append(stuck, token: token, first: 0, entries: es)
        let deadline = Date().addingTimeInterval(5)
        while s.stats.ioErrors == 0 && Date() < deadline { usleep(10_000) }
        #expect(s.stats.ioErrors > 0 && s.stats.bufferedBytes > s.hardLimit)
        func timed(_ body: () throws -> Void) -> (Double, Error?) {
            let t0 = Date()
            do { try body(); return (Date().timeIntervalSince(t0), nil) } catch { return (Date().timeIntervalSince(t0), error) }
        }
        let retry = timed { _ = try s.append(stuck, token: token, first: 0, entries: es) }
        #expect(retry.1 == nil && retry.0 < 0.3, "a retried append is answered at once: \(retry)")
        let refused = timed { _ = try s.append(stuck, token: token, first: 200, entries: entries(1)) }
        #expect(refused.0 < 0.3 && "\(String(describing: refused.1))".contains("refuses writes"), "\(refused)")
        // A healthy replica waits for room the flusher cannot make, then is refused with the reason.
        try s.open(key, token: token)
        let waited = timed { _ = try s.append(key, token: token, first: 0, entries: entries(1)) }
        #expect(waited.0 >= 0.4 && "\(String(describing: waited.1))".contains("has not made room"), "\(waited)")
        #expect(s.stats.appendWaits == 1)
    }

    /// Written-out replicas leave their buffers for new ones (a fresh one costs zeroing on the
    /// receive path), up to the budget, until the node has been idle for a while.
    @Test func keepsSpareBuffersWithinTheBudgetWhileBusy() throws {
        let s = try store(TestDirectory.make("spares"), buffer: 32 << 20)
        defer { s.shutdown() }
        s.spareIdleSeconds = 1
        // Five replicas open at once (as when the disk lags the appends), then all written out.
        let keys = (1...5 as ClosedRange<UInt64>).map { ReplicaStore.Key(writer: 0x5a, segment: $0) }
        for k in keys {
            try s.open(k, token: token)
            _ = try s.append(k, token: token, first: 0, entries: entries(10))
        }
        for k in keys {
            try s.close(k, token: token)
            try s.sync(k, token: token)
        }
        let kept = s.stats.spareBytes
        #expect(kept >= 5 * (9 << 20) && kept <= 64 << 20, "spares after five segments: \(kept) bytes (all fit twice the budget)")
        let deadline = Date().addingTimeInterval(5)
        while s.stats.spareBytes > 9 << 20 + (2 << 20) && Date() < deadline { usleep(50_000) }
        #expect(s.stats.spareBytes <= 9 << 20 + (2 << 20), "an idle node keeps one spare, not \(s.stats.spareBytes) bytes")
    }

    /// While an append's bytes are arriving in a replica's buffer, the replica can be neither
    /// closed nor freed (the buffer is being written to); once the room is let go, both work.
    @Test func aReplicaReceivingAnAppendIsNeitherClosedNorFreed() throws {
        let s = try store(TestDirectory.make("receiving"))
        defer { s.shutdown() }
        try s.open(key, token: token)
        let raw = LogEntry.encode(entries(4)[...], first: 0)
        let room = try #require(try s.beginAppend(key, token: token, first: 0, count: 4, bytes: raw.count))
        #expect(throws: ReplicaStore.StoreError.self) { try s.free(key, token: token) }
        #expect(throws: ReplicaStore.StoreError.self) { try s.close(key, token: token) }
        var check = EntryCheck(first: 0, count: 4)
        raw.withUnsafeBytes { check.feed($0) }
        _ = try s.finishAppend(room, bytes: raw.count, received: false, check: check)
        #expect(try readAll(s, key).entries.isEmpty, "a room let go leaves nothing behind")
        try s.free(key, token: token)
        #expect(s.list(writer: key.writer).isEmpty)
    }

    @Test func anIdleOpenReplicaGivesItsWrittenOutBufferBack() throws {
        let s = try store(TestDirectory.make("idle-open"), buffer: 32 << 20)
        defer { s.shutdown() }
        let busy = ReplicaStore.Key(writer: 0x5b, segment: 2)
        for k in [key, busy] {
            try s.open(k, token: token)
            _ = try s.append(k, token: token, first: 0, entries: entries(3000))  // ~3 MiB: a buffer of 4 MiB or more
            try s.sync(k, token: token)                                          // written out, still open
        }
        let both = s.stats.bufferStorageBytes  // the two buffers are alike
        #expect(both >= 2 * (3 << 20), "two synced open replicas hold their buffers: \(both) bytes")
        s.spareIdleSeconds = 1  // only now: neither may be given back before `both` is read
        // `busy` keeps appending; `key`'s writer went away.
        var next = 3000
        let deadline = Date().addingTimeInterval(8)
        while s.stats.bufferStorageBytes == both && Date() < deadline {
            _ = try s.append(busy, token: token, first: UInt32(next), entries: entries(1, from: next))
            next += 1
            usleep(100_000)
        }
        let held = s.stats.bufferStorageBytes
        #expect(held == both / 2, "only the replica still appended to keeps its buffer: \(held) of \(both) bytes")
        // An append of no entries to the released buffer is answered with the counts (it once
        // trapped on the missing storage), one of no entries carrying bytes is refused.
        #expect(try s.append(key, token: token, first: 3000, entries: []).0 == 3000)
        #expect(throws: ReplicaStore.StoreError.self) {
            _ = try [UInt8](repeating: 1, count: 64).withUnsafeBytes { try s.append(key, token: token, first: 3000, count: 0, raw: $0) }
        }
        // The idle writer comes back: its appends land after what was written out, nothing lost.
        _ = try s.append(key, token: token, first: 3000, entries: entries(10, from: 3000))
        try s.sync(key, token: token)
        let r = try readAll(s, key)
        #expect(r.corruptSkipped == 0)
        #expect(r.entries.map { $0.entry } == entries(3010))
    }

    @Test func onlyTheOpeningWriterMayWrite() throws {
        let s = try store(TestDirectory.make("owner"))
        try s.open(key, token: token)
        let other = [UInt8](repeating: 8, count: 32)
        #expect(throws: ReplicaStore.StoreError.notOwner(key)) { _ = try s.append(key, token: other, first: 0, entries: entries(1)) }
        #expect(throws: ReplicaStore.StoreError.notOwner(key)) { try s.free(key, token: other) }
        #expect(throws: ReplicaStore.StoreError.alreadyExists(key)) {
            _ = try s.append(key, token: token, first: 0, entries: entries(1))
            try s.open(key, token: token)
        }
    }

    @Test func cutsATornTailAtRestart() throws {
        let dir = TestDirectory.make("torn")
        let s = try store(dir)
        try s.open(key, token: token)
        _ = try s.append(key, token: token, first: 0, entries: entries(10))
        try s.sync(key, token: token)
        let path = dir + "/replicas/" + hex16(key.writer) + "/" + hex16(key.segment) + ".seg"
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
        // Cut the last entry in half, as a crash mid-write would.
        #expect(truncate(path, off_t(size - 500)) == 0)
        let again = try store(dir)
        let r = try readAll(again, key)
        #expect(r.entries.map { $0.entry } == Array(entries(10).prefix(9)))
        #expect(again.tornTails == 1)
        #expect(try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int == size - 1032)
    }

    @Test func neverReturnsACorruptEntry() throws {
        let dir = TestDirectory.make("flip")
        let s = try store(dir)
        try s.open(key, token: token)
        _ = try s.append(key, token: token, first: 0, entries: entries(10))
        try s.close(key, token: token)
        try s.sync(key, token: token)
        let path = dir + "/replicas/" + hex16(key.writer) + "/" + hex16(key.segment) + ".seg"
        // Flip one byte inside the payload of entry 4.
        let fd = open(path, O_RDWR)
        let offset = off_t(SegmentFormat.headerSize + 4 * (SegmentFormat.entryHeaderSize + 1000) + SegmentFormat.entryHeaderSize + 10)
        var b: UInt8 = 0
        pread(fd, &b, 1, offset)
        b ^= 0x40
        pwrite(fd, &b, 1, offset)
        close(fd)
        let again = try store(dir)
        let r = try readAll(again, key)
        var expected = entries(10)
        expected.remove(at: 4)
        #expect(r.entries.map { $0.entry } == expected)
        #expect(again.corruptEntries == 1)
        #expect(again.list(writer: key.writer).first?.corrupt == 1)
    }

    @Test func writesBuffersOutWhenTheBudgetIsPassed() throws {
        let dir = TestDirectory.make("budget")
        let s = try store(dir, buffer: 64 << 10)
        try s.open(key, token: token)
        _ = try s.append(key, token: token, first: 0, entries: entries(200))
        // The flusher writes in the background.
        let deadline = Date().addingTimeInterval(5)
        while s.stats.bufferedBytes > 64 << 10 && Date() < deadline { usleep(10_000) }
        #expect(s.stats.flushes > 0)
        #expect(s.stats.bufferedBytes <= 64 << 10)
        #expect(try readAll(s, key).entries.count == 200)
    }
}
