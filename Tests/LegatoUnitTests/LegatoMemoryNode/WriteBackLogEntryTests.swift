import LegatoClients
import LegatoCore
@testable import LegatoMemoryNode
import Testing

/// The write-back log's entries and the key runs a recovery asks for.
struct WriteBackLogEntryTests {
    @Test func pagesAndDiscardsReadBackAsWritten() throws {
        let data = (0..<3 * Page.size).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let keys: [UInt64] = [0x5000, 0x5001, 0x5fff]
        let e = data.withUnsafeBytes { WriteBackLogEntry.pagesEntry(seq: 41, keys: keys, pages: $0.baseAddress!) }
        #expect(e.slab == 5, "filed under the slab of its keys (key >> 12)")
        try e.payload.withUnsafeBytes { p in
            guard case let .pages(seq, back, pages) = try WriteBackLogEntry.parse(p) else { Issue.record("not a pages entry"); return }
            #expect(seq == 41 && back == keys && Array(pages) == data)
        }
        let d = WriteBackLogEntry.discardEntry(seq: 42, runs: [(0x7000, 16), (0x9000, 1)])
        #expect(d.slab == 7)
        try d.payload.withUnsafeBytes { p in
            guard case let .discard(seq, runs) = try WriteBackLogEntry.parse(p) else { Issue.record("not a discard entry"); return }
            #expect(seq == 42 && runs.map { $0.first } == [0x7000, 0x9000] && runs.map { $0.count } == [16, 1])
        }
    }

    @Test func malformedEntriesAreRefused() throws {
        let good = [UInt8](repeating: 0, count: 4096).withUnsafeBytes { WriteBackLogEntry.pagesEntry(seq: 1, keys: [1], pages: $0.baseAddress!) }.payload
        for bad in [Array(good.prefix(10)), Array(good.dropLast()), [9] + Array(good.dropFirst())] {
            #expect(throws: WriteBackLogEntry.Malformed.self) { try bad.withUnsafeBytes { _ = try WriteBackLogEntry.parse($0) } }
        }
    }

    @Test func writersDifferByIncarnationAndSpace() {
        let a = WriteBackLogEntry.writer(incarnation: 1, space: 2)
        #expect(a != WriteBackLogEntry.writer(incarnation: 2, space: 2))
        #expect(a != WriteBackLogEntry.writer(incarnation: 1, space: 3))
        #expect(a != 0)
    }

    @Test func keyRunsMergeAndAnswer() {
        let runs = KeyRuns([PageRun(first: 10, count: 5), PageRun(first: 12, count: 10), PageRun(first: 100, count: 1)])
        #expect(runs.contains(10) && runs.contains(21) && runs.contains(100))
        #expect(!runs.contains(9) && !runs.contains(22) && !runs.contains(99) && !runs.contains(101))
        #expect(runs.overlapping(0, 200) == [PageRun(first: 10, count: 12), PageRun(first: 100, count: 1)])
        #expect(runs.overlapping(20, 81) == [PageRun(first: 20, count: 2), PageRun(first: 100, count: 1)])
        #expect(runs.overlapping(30, 10).isEmpty)
    }
}
