import Foundation
import LegatoImage
import Testing

/// The commit record keeps the keys Docs/on-disk-format.md gives, and records written before some
/// fields existed still read.
@Suite struct CommitRecordTests {
    @Test func keysAreTheDocumentedOnes() throws {
        let r = CommitRecord(writer: "5eed", parent: 3, pages: 10, pauseMs: 1.5, committedAt: 2.0, participants: ["a1"],
                             indexAt: [4, 7], contextAt: [4, 8], space: "99", memoryNodes: ["127.0.0.1:7301"])
        let o = try #require(try JSONSerialization.jsonObject(with: Data(r.encoded())) as? [String: Any])
        #expect(Set(o.keys) == ["writer", "parent", "pages", "pause_ms", "committed_at", "participants", "index_at", "context_at",
                                "space", "memory_nodes"])
        #expect(try CommitRecord.decode(Data(r.encoded())) == r)
        let full = CommitRecord(writer: "5eed", parent: nil, pages: 1, pauseMs: 0, committedAt: 0, participants: [], indexAt: [0, 0],
                                contextAt: [0, 1], space: nil, memoryNodes: nil)
        let f = try #require(try JSONSerialization.jsonObject(with: Data(full.encoded())) as? [String: Any])
        #expect(f["parent"] == nil && f["space"] == nil && f["memory_nodes"] == nil, "absent, not null: \(f)")
    }

    @Test func aRecordFromBeforeIndexesStillReads() throws {
        let old = #"{"writer":"5eed","pages":12,"pause_ms":3.25,"committed_at":1700000000.5}"#
        let r = try CommitRecord.decode(Data(old.utf8))
        #expect(r.pages == 12 && r.pauseMs == 3.25 && r.indexAt == nil && r.participants == nil)
    }
}
