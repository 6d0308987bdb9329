import Foundation
import Glibc
import LegatoCore
import LegatoImage
import LegatoTestSupport
import Testing

/// The local checkpoint's files: pages checked page by page, records in checked envelopes, and a
/// typed error for each way a file can be wrong.
@Suite struct LocalCheckpointFilesTests {
    func pages(_ n: Int, seed: UInt8) -> [UInt8] { (0..<n * Page.size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) } }

    func writePages(_ path: String, _ data: [UInt8], runs: [Int]) throws {
        let w = try PagesFileWriter(path: path, epoch: 7)
        var at = 0
        for n in runs {
            try data.withUnsafeBytes { try w.append($0.baseAddress! + at * Page.size, count: n) }
            at += n
        }
        try w.finish()
    }

    func flip(_ path: String, at offset: Int) throws {
        let fd = open(path, O_RDWR)
        defer { close(fd) }
        var b: UInt8 = 0
        #expect(pread(fd, &b, 1, off_t(offset)) == 1)
        b ^= 0x40
        #expect(pwrite(fd, &b, 1, off_t(offset)) == 1)
    }

    func failure(_ body: () throws -> Void) -> PagesFile.FormatError? {
        do { try body() } catch let e as PagesFile.FormatError { return e } catch { Issue.record("unexpected \(error)") }
        return nil
    }

    @Test func pagesComeBackAsWritten() throws {
        let path = TestDirectory.make("pages") + "/pages.bin"
        let data = pages(10, seed: 3)
        try writePages(path, data, runs: [3, 1, 6])
        let r = try PagesFileReader(path: path)
        #expect(r.pages == 10 && r.epoch == 7)
        var out = [UInt8](repeating: 0, count: 10 * Page.size)
        try out.withUnsafeMutableBytes { try r.read(first: 0, count: 10, into: $0.baseAddress!) }
        #expect(out == data)
        var one = [UInt8](repeating: 0, count: Page.size)
        try one.withUnsafeMutableBytes { try r.read(first: 4, count: 1, into: $0.baseAddress!) }
        #expect(one == Array(data[4 * Page.size..<5 * Page.size]))
        #expect(throws: (any Error).self) { try one.withUnsafeMutableBytes { try r.read(first: 10, count: 1, into: $0.baseAddress!) } }
    }

    @Test func aCorruptPageIsRefusedByNumberAndTheOthersStillRead() throws {
        let path = TestDirectory.make("pages") + "/pages.bin"
        try writePages(path, pages(4, seed: 9), runs: [4])
        try flip(path, at: PagesFile.headerSize + 2 * Page.size + 100)
        let r = try PagesFileReader(path: path)
        var out = [UInt8](repeating: 0, count: Page.size)
        #expect(failure { try out.withUnsafeMutableBytes { try r.read(first: 2, count: 1, into: $0.baseAddress!) } } == .pageChecksum(path, page: 2))
        try out.withUnsafeMutableBytes { try r.read(first: 3, count: 1, into: $0.baseAddress!) }
    }

    @Test func everyWayAPagesFileCanBeWrongHasItsError() throws {
        let dir = TestDirectory.make("pages")
        func fresh(_ name: String) throws -> String {
            let p = dir + "/" + name
            try writePages(p, pages(2, seed: 1), runs: [2])
            return p
        }
        let magic = try fresh("magic")
        try flip(magic, at: 0)
        #expect(failure { _ = try PagesFileReader(path: magic) } == .badMagic(magic))
        let version = try fresh("version")
        try flip(version, at: 8)
        #expect(failure { _ = try PagesFileReader(path: version) } == .unsupportedVersion(version, 2 ^ 0x40))
        let header = try fresh("header")
        try flip(header, at: 24)
        #expect(failure { _ = try PagesFileReader(path: header) } == .headerChecksum(header))
        let table = try fresh("table")
        try flip(table, at: PagesFile.headerSize + 2 * Page.size + 1)
        #expect(failure { _ = try PagesFileReader(path: table) } == .tableChecksum(table))
        let short = try fresh("short")
        #expect(truncate(short, 100) == 0)
        #expect(failure { _ = try PagesFileReader(path: short) } == .shortFile(short))
        let cut = try fresh("cut")
        #expect(truncate(cut, off_t(PagesFile.headerSize + Page.size)) == 0)
        #expect(failure { _ = try PagesFileReader(path: cut) } == .truncated(cut, pages: 2, bytes: PagesFile.headerSize + Page.size))
        // A writer that died before finishing left no header: not a pages file.
        let unfinished = dir + "/unfinished"
        do {
            let w = try PagesFileWriter(path: unfinished, epoch: 1)
            try pages(1, seed: 0).withUnsafeBytes { try w.append($0.baseAddress!, count: 1) }
        }
        #expect(failure { _ = try PagesFileReader(path: unfinished) } == .badMagic(unfinished))
    }

    struct Sample: Codable, Equatable {
        var name: String
        var values: [UInt64]
    }

    @Test func recordsRoundTripAndRefuseDamage() throws {
        let dir = TestDirectory.make("records")
        let value = Sample(name: "job", values: [1, 2, 3])
        let path = dir + "/summary.rec"
        try RecordFile.write(value, kind: .summary, to: path)
        #expect(try RecordFile.read(Sample.self, kind: .summary, from: path) == value)

        let good = [UInt8](FileManager.default.contents(atPath: path)!)
        func decode(_ bytes: [UInt8], kind: RecordFile.Kind = .summary) -> RecordFile.FormatError? {
            do { _ = try RecordFile.decode(Sample.self, kind: kind, from: bytes, path: path) } catch let e as RecordFile.FormatError { return e } catch {
                Issue.record("unexpected \(error)")
            }
            return nil
        }
        #expect(decode(good, kind: .context) == .wrongKind(path, expected: .context, found: RecordFile.Kind.summary.rawValue))
        var body = good
        body[RecordFile.headerSize + 3] ^= 1
        #expect(decode(body) == .checksum(path))
        var magic = good
        magic[1] ^= 1
        #expect(decode(magic) == .badMagic(path))
        var version = good
        version[4] = 9
        #expect(decode(version) == .unsupportedVersion(path, 9))
        #expect(decode(Array(good.prefix(10))) == .shortFile(path))
        #expect(decode(Array(good.dropLast())) == .lengthMismatch(path, header: good.count - RecordFile.headerSize, file: good.count - RecordFile.headerSize - 1))
        // A body that passes its checksum but is not the record asked for.
        let other = try RecordFile.encode(["not": "a sample"], kind: .summary)
        if case .badBody = decode(other) {} else { Issue.record("a foreign body must be refused as such") }
    }
}
